"""SELF: a model learns to critique and refine its answers, then evolves on the answers its own feedback accepts.

Lu et al. 2023 (arXiv 2310.00533). Two stages:

1. **Meta-skill learning.** Records ``(prompt p, response r, feedback f, refinement r')`` written by an annotator
   teach the model to critique and to refine, with the objective
   ``log P(f | p, r) + log P(r' | p, r, f) + beta * log P(r' | p)``. One sequence ``p r f r'`` (laid out by the
   task's :class:`~criticgym.envs.tasks.FeedbackPrompts`) carries the first two terms; ``p r'`` the third. Gold
   question-answer records (``p, r'``) train the third term alone.
2. **Self-evolution rounds.** The model answers new prompts, critiques its answer, refines it when its own
   judgement says ``incorrect`` and critiques the refinement; an answer is kept only when the model's own last
   judgement says ``correct`` (no annotator in the loop). It is then fine-tuned on the kept answers mixed with the
   meta-skill data. Each round is checkpointed; a killed run resumes from the last finished round.

At inference the model may refine once: answer, critique, and refine when it judges its answer incorrect.

The filter is pluggable, for the baselines of the paper's table: ``"self"`` (SELF), ``"none"`` (plain
self-training on every answer, no feedback) and ``"program"`` (the task's annotator keeps the right answers: the
upper bound of any filter).

    criticgym self-evolve --env criticgym/Arithmetic-v0 --model smollm2-135m --rounds 2 --out runs/self

Records are JSONL (``{"prompt", "response", "feedback", "refinement"}``, or ``{"prompt", "response"}`` for
question-answer records); ``--meta-data FILE`` trains on your own.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from criticgym.agents.base import autocast
from criticgym.critics.feedback import ANNOTATORS, judgement
from criticgym.data.arithmetic import Step, format_solution, parse_steps
from criticgym.errors import ConfigError

FEEDBACK, REFINEMENT, ANSWER = 1, 2, 3  # the loss terms a target token belongs to


@dataclass
class SelfConfig:
    """Options of ``criticgym self-evolve``."""

    env: str = "criticgym/Arithmetic-v0"
    """A task whose spec has feedback prompts and a program annotator."""
    model: str = "smollm2-135m"
    """Policy: a built-in name, a local folder or a Hugging Face id."""
    out: str = "runs/self"
    """Output folder: checkpoint, metrics.csv, samples per round, curves.png."""
    rounds: int = 2
    """Self-evolution rounds after meta-skill learning."""
    filter: Literal["self", "none", "program"] = "self"
    """Which answers a round keeps: the model's own judgement (SELF), all (self-training), the annotator's."""
    meta_skill: bool = True
    """Learn the meta-skills first (False: gold question-answer records only, the paper's M0 baseline)."""
    seed: int = 0
    """Seeds problem choice, sampling and minibatch order."""
    device: str = "cpu"
    """cpu, cuda or auto."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Forward passes under bfloat16 autocast (auto: on a CUDA device with bfloat16); weights stay float32."""
    meta_records: int = 512
    """Meta-skill records the annotator writes (on train problems)."""
    qa_records: int = 512
    """Gold question-answer records (other train problems)."""
    prompts_per_round: int = 256
    """New train problems each round answers (never the ones above)."""
    eval_problems: int = 200
    """Held-out test problems for accuracy."""
    beta: float = 1.0
    """Weight of ``log P(r' | p)`` in the meta-skill objective."""
    lr: float = 5e-5
    """AdamW learning rate (a fresh optimizer each stage)."""
    epochs: int = 2
    """Passes over each stage's data."""
    batch_size: int = 16
    """Sequences per update."""
    freeze_layers: int = 0
    """Freeze the embeddings and this many lower layers."""
    temperature: float = 0.7
    """Sampling temperature of answers during evolution (critiques and refinements are greedy)."""
    max_new_tokens: int | None = None
    """Budget of an answer (None: the task's)."""
    feedback_tokens: int = 96
    """Budget of a critique and of a refinement."""
    replay: int | None = None
    """Earlier records (meta-skill and question-answer) mixed into each round's data: all of them (None, as in the
    paper) or a random sample of this many (cheaper rounds; the rest is not forgotten in one round)."""
    base_eval: bool = True
    """Evaluate the untrained model first (stage -1). Evaluation is greedy, so this row is the same for every seed."""
    meta_data: str | None = None
    """A JSONL file of your own records (replaces the annotator's meta-skill records)."""
    progress: bool = True
    """Show progress bars."""
    resume: bool = True
    """Continue from out/checkpoint.pt when it exists."""

    def __post_init__(self) -> None:
        for name in ("rounds", "meta_records", "qa_records", "prompts_per_round", "eval_problems", "epochs"):
            if getattr(self, name) < 0 or (name in ("epochs", "eval_problems") and getattr(self, name) < 1):
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}.")
        if self.replay is not None and self.replay < 0:
            raise ConfigError(f"--replay must be at least 0 (or left unset for all records), got {self.replay}.")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}.")


# -- records and the objective ------------------------------------------------------------------------------


def corrupt(solution: str, rng: np.random.Generator) -> str:
    r"""A plausible wrong solution: a step miscalculated or misread and the rest computed from it, or stopped early.

    The final answer always differs from the gold one, and every later division stays exact.

    Example:
        >>> print(corrupt("7 + 5 = 12\n12 * 3 = 36\nAnswer: 36", np.random.default_rng(1)))
        7 + 7 = 14
        14 * 3 = 42
        Answer: 42
    """
    steps = parse_steps(solution)
    for _ in range(20):
        wrong = _corrupt_once(steps, rng)
        if wrong is not None and wrong[-1].result != steps[-1].result:
            return format_solution(wrong, wrong[-1].result)
    last = steps[-1]  # the draws kept the answer: miscalculate the last step
    return format_solution([*steps[:-1], last._replace(result=last.result + 1)], last.result + 1)


def _corrupt_once(steps: list[Step], rng: np.random.Generator) -> list[Step] | None:
    k = int(rng.integers(len(steps)))
    kind = rng.choice(["miscalculate", "misread", "stop early"] if len(steps) > 1 else ["miscalculate", "misread"])
    if kind == "stop early":
        return steps[: k + 1] if k + 1 < len(steps) else steps[:-1]
    out, value = list(steps[:k]), steps[k].left
    for i, step in enumerate(steps[k:]):
        right = step.right
        if i == 0 and kind == "misread":
            right = right + int(rng.choice([-2, -1, 1, 2])) if step.op in "+-" else right + 1
        if step.op == "/" and (right == 0 or (value % right and not (i == 0 and kind == "miscalculate"))):
            return None
        result = Step(value, step.op, right, 0).true_result
        if i == 0 and kind == "miscalculate":
            result += int(rng.choice([-10, -2, -1, 1, 2, 10]))
        out.append(Step(value, step.op, right, result))
        value = result
    return out


def annotated_records(task, annotator, problems: list, seed: int) -> list[dict[str, str]]:
    """Meta-skill records: responses (a third right, the rest corrupted), the annotator's feedback and refinement."""
    rng = np.random.default_rng(seed)
    prompts = [p.text for p in problems]
    gold = [p.reference for p in problems]
    responses = [g if rng.random() < 1 / 3 else corrupt(g, rng) for g in gold]
    feedback = annotator.critique(prompts, responses, gold)
    refined = annotator.refine(prompts, responses, feedback, gold)
    return [
        {"prompt": p, "response": r, "feedback": f, "refinement": r2}
        for p, r, f, r2 in zip(prompts, responses, feedback, refined, strict=True)
    ]


def encode(tokenizer, layout, record: dict[str, str], beta: float) -> list[tuple[list[int], list[int], float]]:
    """The training sequences of one record: ``(ids, term of each token (0: context), weight of the sequence)``.

    A meta-skill record gives ``p r f r'`` (feedback and refinement terms) and ``p r'`` (the answer term, weight
    ``beta``); a question-answer record gives ``p r`` (the answer term, weight 1). Pieces are tokenized one by one,
    as generation sees them, and every target ends with EOS except the feedback (a critique ends at its judgement).
    """

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    eos = [tokenizer.eos_token_id]
    if "feedback" not in record:
        prompt, answer = ids(record["prompt"]), ids(record["response"]) + eos
        return [(prompt + answer, [0] * len(prompt) + [ANSWER] * len(answer), 1.0)]
    context = ids(layout.critique_context(record["prompt"], record["response"]))
    feedback, glue = ids(record["feedback"]), ids(layout.refine)
    refinement = ids(record["refinement"]) + eos
    both = context + feedback + glue + refinement
    terms = [0] * len(context) + [FEEDBACK] * len(feedback) + [0] * len(glue) + [REFINEMENT] * len(refinement)
    prompt = ids(record["prompt"])
    return [(both, terms, 1.0), (prompt + refinement, [0] * len(prompt) + [ANSWER] * len(refinement), beta)]


def collate(sequences: list[tuple[list[int], list[int], float]], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask, the term of each position and the weight of each sequence."""
    width = max(len(s[0]) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    terms = torch.zeros((len(sequences), width), dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, (seq, term, _) in enumerate(sequences):
        ids[i, : len(seq)], terms[i, : len(seq)], mask[i, : len(seq)] = torch.tensor(seq), torch.tensor(term), 1
    weights = torch.tensor([s[2] for s in sequences], dtype=torch.float32)
    return {"ids": ids.to(device), "mask": mask.to(device), "terms": terms.to(device), "weights": weights.to(device)}


def self_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Minus the SELF objective: per term, the weighted mean negative log-likelihood of its target tokens, summed.

    Returns the loss and each term's mean NLL (``nll/feedback``, ``nll/refinement``, ``nll/answer``; nan when the
    batch has none of it). The answer term's weight is ``beta`` on meta-skill sequences, 1 on question-answer ones.
    """
    logits = model(input_ids=batch["ids"], attention_mask=batch["mask"]).logits[:, :-1].float()
    targets, terms = batch["ids"][:, 1:], batch["terms"][:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    weight = batch["weights"][:, None].expand_as(nll)
    loss, stats = nll.new_zeros(()), {}
    for term, name in ((FEEDBACK, "feedback"), (REFINEMENT, "refinement"), (ANSWER, "answer")):
        chosen = terms == term
        if chosen.any():
            loss = loss + (nll * weight)[chosen].sum() / chosen.sum()
            stats[f"nll/{name}"] = float(nll[chosen].detach().mean())
        else:
            stats[f"nll/{name}"] = float("nan")
    return loss, stats


def length_grouped_batches(lengths: list[int], batch_size: int, generator: torch.Generator, group: int = 8):
    """One epoch of minibatches (lists of indices) of similar lengths, so that little of a batch is padding.

    Shuffles, cuts the order into groups of ``group`` batches, sorts each group by length, splits it into batches
    and shuffles the batches (the scheme of Hugging Face's ``group_by_length``). Every index appears once.
    """
    order = torch.randperm(len(lengths), generator=generator).tolist()
    batches = []
    for start in range(0, len(order), batch_size * group):
        chunk = sorted(order[start : start + batch_size * group], key=lambda i: -lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def fine_tune(model, tokenizer, layout, records: list[dict[str, str]], cfg: SelfConfig, seed: int, log=None):
    """Train on records (meta-skill and question-answer mixed) for ``cfg.epochs``; returns token counts and NLLs."""
    from tqdm.auto import tqdm

    sequences = [s for r in records for s in encode(tokenizer, layout, r, cfg.beta)]
    if not sequences:
        return {"train_tokens": 0, "target_tokens": 0}
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    generator = torch.Generator().manual_seed(seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    tokens = targets = 0
    stats: dict[str, list[float]] = {}
    model.train()
    steps = cfg.epochs * -(-len(sequences) // cfg.batch_size)
    bar = tqdm(total=steps, disable=not cfg.progress, desc="fine-tune", unit="step", leave=False)
    for _ in range(cfg.epochs):
        for chunk in length_grouped_batches([len(s[0]) for s in sequences], cfg.batch_size, generator):
            batch = collate([sequences[i] for i in chunk], pad, device)
            with autocast(cfg.precision, device):
                loss, terms = self_loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            tokens += int(batch["mask"].sum())
            targets += int((batch["terms"] > 0).sum())
            for key, value in terms.items():
                stats.setdefault(key, []).append(value)
            bar.update()
    bar.close()
    model.eval()
    means = {k: float(np.mean([x for x in v if not np.isnan(x)] or [np.nan])) for k, v in stats.items()}
    return {"train_tokens": tokens, "target_tokens": targets, **means}  # nan: a term no batch had


# -- generation: answer, critique, refine -------------------------------------------------------------------


class Solver:
    """Answers, critiques and refinements from one model, in batches (critiques and refinements greedy)."""

    def __init__(self, model, tokenizer, layout, max_new_tokens: int, feedback_tokens: int, batch_size: int = 64):
        from criticgym.rollout import RolloutEngine

        self.engine, self.tokenizer, self.layout = RolloutEngine(model, tokenizer), tokenizer, layout
        self.max_new_tokens, self.feedback_tokens, self.batch_size = max_new_tokens, feedback_tokens, batch_size
        # a critique ends with its verdict: stop there (when each verdict word is one token of this tokenizer)
        verdicts = [tokenizer(f" {w}", add_special_tokens=False)["input_ids"] for w in ("correct", "incorrect")]
        self.verdict_ids = [ids[0] for ids in verdicts] if all(len(ids) == 1 for ids in verdicts) else []

    def _generate(self, contexts: list[str], budget: int, seed: int | None = None, **sampling) -> list[str]:
        texts: list[str] = []
        for i in range(0, len(contexts), self.batch_size):
            chunk = contexts[i : i + self.batch_size]
            batch = self.engine.generate(
                chunk, max_new_tokens=budget, seed=None if seed is None else seed + i, **sampling
            )
            rows = [row[: int(n)] for row, n in zip(batch.completion_ids, batch.lengths, strict=True)]
            texts += self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        return texts

    def answer(self, prompts: list[str], temperature: float = 0.0, seed: int | None = None) -> list[str]:
        """Answers: greedy at temperature 0, else sampled."""
        if temperature <= 0:
            return [t.strip() for t in self._generate(prompts, self.max_new_tokens, greedy=True)]
        texts = self._generate(prompts, self.max_new_tokens, temperature=temperature, seed=seed)
        return [t.strip() for t in texts]

    def critique(self, prompts: list[str], answers: list[str]) -> list[str]:
        """The model's own feedback, cut after its judgement."""
        from criticgym.critics.feedback import cut_at_judgement

        contexts = [self.layout.critique_context(p, a) for p, a in zip(prompts, answers, strict=True)]
        texts = self._generate(contexts, self.feedback_tokens, greedy=True, stop_ids=self.verdict_ids)
        return [cut_at_judgement(t) for t in texts]

    def refine(self, prompts: list[str], answers: list[str], feedback: list[str]) -> list[str]:
        """The model's refined answers."""
        contexts = [self.layout.refine_context(p, a, f) for p, a, f in zip(prompts, answers, feedback, strict=True)]
        return [t.strip() for t in self._generate(contexts, self.feedback_tokens, greedy=True)]

    def solve(self, prompts: list[str], refine: bool, temperature: float = 0.0, seed: int | None = None):
        """Answer; with ``refine``, critique and refine where the model judges its answer incorrect.

        Returns the final answers and the trace: ``answer``, ``feedback``, ``judged_correct`` and, for refined rows,
        ``refinement``, ``refinement_feedback`` and ``refinement_judged_correct``.
        """
        answers = self.answer(prompts, temperature, seed)
        trace: dict[str, list[Any]] = {"answer": answers}
        if not refine:
            return answers, trace
        feedback = self.critique(prompts, answers)
        judged = [judgement(f) for f in feedback]
        trace |= {"feedback": feedback, "judged_correct": judged}
        redo = [i for i, j in enumerate(judged) if j is not True]
        final = list(answers)
        refined = self.refine([prompts[i] for i in redo], [answers[i] for i in redo], [feedback[i] for i in redo])
        second = self.critique([prompts[i] for i in redo], refined)
        trace["refinement"] = [None] * len(prompts)
        trace["refinement_feedback"] = [None] * len(prompts)
        trace["refinement_judged_correct"] = [None] * len(prompts)
        for i, text, f in zip(redo, refined, second, strict=True):
            final[i] = text
            trace["refinement"][i], trace["refinement_feedback"][i] = text, f
            trace["refinement_judged_correct"][i] = judgement(f)
        return final, trace


def keep_mask(filter: str, trace: dict[str, list[Any]], program_correct: list[bool]) -> list[bool]:
    """Which final answers a round trains on.

    ``"self"``: the model's last own judgement says correct (its first one for answers it did not refine);
    ``"none"``: all; ``"program"``: the annotator's check says correct.
    """
    if filter == "none":
        return [True] * len(program_correct)
    if filter == "program":
        return list(program_correct)
    if filter != "self":
        raise ConfigError(f"Unknown filter {filter!r}; use self, none or program.")
    last = [
        second if first is not True else True
        for first, second in zip(trace["judged_correct"], trace["refinement_judged_correct"], strict=True)
    ]
    return [j is True for j in last]


# -- the driver ---------------------------------------------------------------------------------------------


def _task_pieces(cfg: SelfConfig):
    from criticgym.envs import get_task
    from criticgym.registration import ENV_IDS

    task = get_task(ENV_IDS.get(cfg.env, cfg.env))
    if task.feedback is None:
        raise ConfigError(f"{cfg.env} has no feedback prompts; SELF needs a task with TaskSpec.feedback.")
    if task.feedback.annotator not in ANNOTATORS:
        raise ConfigError(
            f"{cfg.env} has no program annotator; bring meta-skill records with --meta-data (annotators: "
            f"{sorted(ANNOTATORS)})."
        )
    return task, ANNOTATORS[task.feedback.annotator]()


def read_records(path: str | Path) -> list[dict[str, str]]:
    """Records from a JSONL file, checked: each has prompt and response, and feedback with refinement or neither."""
    records = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        keys = set(record)
        if not {"prompt", "response"} <= keys or ("feedback" in keys) != ("refinement" in keys):
            raise ConfigError(
                f"{path}:{n}: a record needs prompt and response, plus feedback and refinement for a meta-skill "
                f"record; got {sorted(keys)}."
            )
        records.append({k: str(record[k]) for k in ("prompt", "response", "feedback", "refinement") if k in record})
    return records


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    """JSONL, one record per line."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def evaluate(solver: Solver, problems: list, annotator) -> dict[str, Any]:
    """Held-out accuracy of the greedy answer, and of the answer after one self-refinement.

    Also the precision and recall of the model's judgements against the program, and how refinements move answers.
    """
    from criticgym.critics.scorers import ExactAnswer

    prompts, gold = [p.text for p in problems], [p.reference for p in problems]
    final, trace = solver.solve(prompts, refine=True)
    right = ExactAnswer().score(prompts, trace["answer"], gold)
    refined_right = ExactAnswer().score(prompts, final, gold)
    judged = np.array([j is True for j in trace["judged_correct"]])
    truth = np.array(right) == 1.0
    refined_rows = [i for i, r in enumerate(trace["refinement"]) if r is not None]
    return {
        "eval/accuracy": float(np.mean(right)),
        "eval/accuracy_refined": float(np.mean(refined_right)),
        "eval/judge_precision": float(truth[judged].mean()) if judged.any() else float("nan"),
        "eval/judge_recall": float(judged[truth].mean()) if truth.any() else float("nan"),
        "eval/judged_correct": float(judged.mean()),
        "eval/refined": len(refined_rows),
        "eval/wrong_to_right": sum(1 for i in refined_rows if not right[i] and refined_right[i]),
        "eval/right_to_wrong": sum(1 for i in refined_rows if right[i] and not refined_right[i]),
        "samples": [
            {"prompt": prompts[i], "answer": trace["answer"][i], "feedback": trace["feedback"][i], "final": final[i]}
            for i in range(min(4, len(prompts)))
        ],
    }


def self_evolve(cfg: SelfConfig, log=print) -> dict[str, Any]:
    """Meta-skill learning, then ``cfg.rounds`` self-evolution rounds; evaluated after each stage. Resumable."""
    from tqdm.auto import tqdm

    from criticgym.agents.base import freeze_lower_layers
    from criticgym.agents.train import save_atomically
    from criticgym.critics.scorers import ExactAnswer
    from criticgym.envs.tasks import task_prompts
    from criticgym.rollout import load_policy

    task, annotator = _task_pieces(cfg)
    layout = task.feedback
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_policy(cfg.model, device=cfg.device, dtype=torch.float32)  # trained: never bfloat16
    freeze_lower_layers(model, cfg.freeze_layers)
    train = list(task_prompts(task, "train", tokenizer))
    test = list(task_prompts(task, "test", tokenizer))[: cfg.eval_problems]
    order = np.random.default_rng(cfg.seed).permutation(len(train))
    needed = cfg.meta_records + cfg.qa_records + cfg.rounds * cfg.prompts_per_round
    if needed > len(train):
        raise ConfigError(f"The settings need {needed} train problems but {cfg.env} has {len(train)}; use fewer.")
    pick = [train[i] for i in order]
    meta_problems, qa_problems = pick[: cfg.meta_records], pick[cfg.meta_records : cfg.meta_records + cfg.qa_records]
    solver = Solver(model, tokenizer, layout, cfg.max_new_tokens or task.max_new_tokens, cfg.feedback_tokens)

    qa = [{"prompt": p.text, "response": p.reference} for p in qa_problems]
    if not cfg.meta_skill:
        meta = []
    elif cfg.meta_data:
        meta = read_records(cfg.meta_data)
    else:
        meta = annotated_records(task, annotator, meta_problems, cfg.seed)
    write_records(out / "meta_skill.jsonl", meta + qa)

    checkpoint = out / "checkpoint.pt"
    history: list[dict[str, Any]] = []
    done = -1  # the last finished stage: -1 none, 0 meta-skill learning, t round t
    if cfg.resume and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        history, done = state["history"], state["stage"]
        log(f"Resumed from {checkpoint} after stage {done}.")
    elif cfg.base_eval:
        with autocast(cfg.precision, model.device):
            history.append({"stage": -1, **_eval_row(solver, test, annotator, out, "base")})
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    bar = tqdm(range(done + 1, cfg.rounds + 1), disable=not cfg.progress, desc="self-evolve", unit="stage")
    for stage in bar:
        start = time.perf_counter()
        row: dict[str, Any] = {"stage": stage}
        if stage == 0:
            data = meta + qa
        else:
            # the stage-th block from the end: the same problems for any record counts and any number of rounds
            end = len(pick) - (stage - 1) * cfg.prompts_per_round
            problems = pick[end - cfg.prompts_per_round : end]
            prompts, gold = [p.text for p in problems], [p.reference for p in problems]
            with autocast(cfg.precision, model.device):
                final, trace = solver.solve(
                    prompts, refine=cfg.filter == "self", temperature=cfg.temperature, seed=cfg.seed * 1000 + stage
                )
            program = [s == 1.0 for s in ExactAnswer().score(prompts, final, gold)]  # the truth: SELF never reads it
            kept = keep_mask(cfg.filter, trace, program)
            earlier = meta + qa
            if cfg.replay is not None and cfg.replay < len(earlier):
                chosen = np.random.default_rng(cfg.seed * 1000 + stage).choice(len(earlier), cfg.replay, replace=False)
                earlier = [earlier[i] for i in sorted(chosen)]
            data = earlier + [{"prompt": p, "response": a} for p, a, k in zip(prompts, final, kept, strict=True) if k]
            row |= {
                "round/kept": int(sum(kept)),
                "round/kept_correct": int(sum(k and c for k, c in zip(kept, program, strict=True))),
                "round/correct": int(sum(program)),
            }
            _write_samples(out / f"samples-round-{stage}.md", prompts, trace, final, kept, program)
        row |= fine_tune(model, tokenizer, layout, data, cfg, seed=cfg.seed * 1000 + stage)
        row["seconds"] = time.perf_counter() - start
        with autocast(cfg.precision, model.device):
            row |= _eval_row(solver, test, annotator, out, f"stage-{stage}")
        history.append(row)
        save_atomically({"model": model.state_dict(), "history": history, "stage": stage}, checkpoint)
        bar.set_postfix(accuracy=f"{row['eval/accuracy']:.3f}", refined=f"{row['eval/accuracy_refined']:.3f}")
        log(
            f"[self-evolve] stage {stage}: accuracy {row['eval/accuracy']:.3f}, with self-refinement "
            f"{row['eval/accuracy_refined']:.3f}, trained on {row['train_tokens']} tokens"
        )
    _write_metrics(out / "metrics.csv", history)
    _plot(history, out / "curves.png")
    return {"history": history, "model": model, "tokenizer": tokenizer, "out": out}


def _eval_row(solver, test, annotator, out: Path, name: str) -> dict[str, Any]:
    result = evaluate(solver, test, annotator)
    samples = result.pop("samples")
    (out / f"eval-{name}.json").write_text(json.dumps({**result, "samples": samples}, indent=2) + "\n")
    return result


def _write_samples(path: Path, prompts, trace, final, kept, program) -> None:
    lines = []
    for i in range(min(8, len(prompts))):
        lines += [f"## {i + 1}", "", "```", prompts[i] + trace["answer"][i], "```", ""]
        if "feedback" in trace:
            lines += ["Own feedback:", "", "```", trace["feedback"][i], "```", ""]
        if trace.get("refinement") and trace["refinement"][i] is not None:
            lines += ["Refinement:", "", "```", trace["refinement"][i], "```", ""]
        lines += [f"Kept: {kept[i]}; the program says {'right' if program[i] else 'wrong'}.", ""]
    path.write_text("\n".join(lines))


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    import csv

    keys = list(dict.fromkeys(k for row in history for k in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def _plot(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [row["stage"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(stages, [row["eval/accuracy"] for row in history], marker="o", label="answer")
    ax.plot(stages, [row["eval/accuracy_refined"] for row in history], marker="s", label="with self-refinement")
    ax.set(xlabel="stage (-1 base, 0 meta-skills, then rounds)", ylabel="held-out accuracy", title="SELF")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
