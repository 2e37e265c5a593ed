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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from criticgym import flops
from criticgym.critics.feedback import ANNOTATORS
from criticgym.errors import ConfigError, Interrupted
from criticgym.selfevolve.config import SelfConfig
from criticgym.selfevolve.loop import Solver, keep_mask
from criticgym.selfevolve.objective import fine_tune
from criticgym.selfevolve.records import annotated_records, model_answer_records, read_records, write_records
from criticgym.utils.files import load_checkpoint, save_atomically
from criticgym.utils.plots import pyplot
from criticgym.utils.runfolder import differences, refuse_other_settings, run_folder
from criticgym.utils.training import autocast, freeze_lower_layers


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


def right_answers(annotator, prompts: list[str], answers: list[str], gold: list) -> list[bool]:
    """Which answers the task's annotator judges correct: the truth that SELF's own filter never reads."""
    from criticgym.critics.feedback import judgement

    references = None if all(g is None for g in gold) else gold
    return [judgement(f) is True for f in annotator.feedback(prompts, answers, references)]


def evaluate(solver: Solver, problems: list, annotator) -> dict[str, Any]:
    """Held-out accuracy of the greedy answer, and of the answer after one self-refinement (by the annotator).

    Also the precision and recall of the model's judgements against the program, and how refinements move answers.
    """
    prompts, gold = [p.text for p in problems], [p.reference for p in problems]
    final, trace = solver.solve(prompts, refine=True)
    right = right_answers(annotator, prompts, trace["answer"], gold)
    refined_right = right_answers(annotator, prompts, final, gold)
    judged = np.array([j is True for j in trace["judged_correct"]])
    truth = np.array(right)
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


@dataclass
class _Problems:
    """A run's problems: meta-skill, gold question-answer, every round's (a seeded order of the train split), test."""

    meta: list
    qa: list
    ordered: list
    test: list

    def of_round(self, stage: int, per_round: int) -> list:
        """Round ``stage``'s problems: the stage-th block from the end, the same for any record counts and rounds."""
        end = len(self.ordered) - (stage - 1) * per_round
        return self.ordered[end - per_round : end]


def _problems(cfg: SelfConfig, task, tokenizer) -> _Problems:
    from criticgym.envs.tasks import task_prompts

    train = list(task_prompts(task, "train", tokenizer))
    test = list(task_prompts(task, "test", tokenizer))[: cfg.eval_problems]
    order = np.random.default_rng(cfg.seed).permutation(len(train))
    needed = cfg.meta_records + cfg.qa_records + cfg.rounds * cfg.prompts_per_round
    if needed > len(train):
        raise ConfigError(f"The settings need {needed} train problems but {cfg.env} has {len(train)}; use fewer.")
    pick = [train[i] for i in order]
    end = cfg.meta_records + cfg.qa_records
    return _Problems(pick[: cfg.meta_records], pick[cfg.meta_records : end], pick, test)


def _stage_zero_data(cfg: SelfConfig, annotator, problems: _Problems, solver: Solver, out: Path, device) -> list:
    """Meta-skill records (annotated, read from --meta-data, or none) and the gold question-answer records.

    A task with gold answers has its annotator critique right and corrupted ones; one without (sentiment) has it
    critique the model's own sampled answers, as the SELF paper's annotator does.
    """
    if cfg.qa_records and any(p.reference is None for p in problems.qa):
        raise ConfigError(f"{cfg.env} has no gold answers for question-answer records; use --qa-records 0.")
    qa = [{"prompt": p.text, "response": p.reference} for p in problems.qa]
    if not cfg.meta_skill:
        meta = []
    elif cfg.meta_data:
        meta = read_records(cfg.meta_data)
    elif problems.meta and problems.meta[0].reference is None:
        prompts = [p.text for p in problems.meta]
        with autocast(cfg.precision, device):
            answers = solver.answer(prompts, temperature=cfg.temperature, seed=cfg.seed)
        meta = model_answer_records(annotator, prompts, answers)
    else:
        meta = annotated_records(annotator, problems.meta, cfg.seed)
    write_records(out / "meta_skill.jsonl", meta + qa)
    return meta + qa


def _round(
    cfg: SelfConfig, stage: int, solver: Solver, annotator, problems: _Problems, earlier: list, out: Path, device
):
    """Self-evolution round ``stage``: answer, judge, keep, and the data it fine-tunes on; with the round's counts."""
    chosen = problems.of_round(stage, cfg.prompts_per_round)
    prompts, gold = [p.text for p in chosen], [p.reference for p in chosen]
    with autocast(cfg.precision, device):
        final, trace = solver.solve(
            prompts, refine=cfg.filter == "self", temperature=cfg.temperature, seed=cfg.seed * 1000 + stage
        )
    program = right_answers(annotator, prompts, final, gold)  # the truth: SELF's own filter never reads it
    kept = keep_mask(cfg.filter, trace, program)
    if cfg.replay is not None and cfg.replay < len(earlier):
        replayed = np.random.default_rng(cfg.seed * 1000 + stage).choice(len(earlier), cfg.replay, replace=False)
        earlier = [earlier[i] for i in sorted(replayed)]
    data = earlier + [{"prompt": p, "response": a} for p, a, k in zip(prompts, final, kept, strict=True) if k]
    _write_samples(out / f"samples-round-{stage}.md", prompts, trace, final, kept, program)
    row = {
        "round/kept": int(sum(kept)),
        "round/kept_correct": int(sum(k and c for k, c in zip(kept, program, strict=True))),
        "round/correct": int(sum(program)),
    }
    return data, row


def _train_stage(cfg: SelfConfig, stage: int, solver: Solver, annotator, problems, stage_zero: list, out: Path):
    """Stage 0 fine-tunes on the meta-skill data, stage t > 0 on round t's; its row, with the FLOPs it spent.

    The FLOPs live in the checkpointed history, so a resumed run reports the compute of every stage.
    """
    model = solver.engine.model
    row: dict[str, Any] = {"stage": stage}
    data = stage_zero
    flops.take()
    with flops.phase("policy"):
        if stage > 0:
            data, counts = _round(cfg, stage, solver, annotator, problems, stage_zero, out, model.device)
            row |= counts
        row |= fine_tune(model, solver.tokenizer, solver.layout, data, cfg, seed=cfg.seed * 1000 + stage)
    return row | {"perf/train_flops": sum(flops.take().values())}


# What a resumed SELF run may change: where and how it runs, and how many rounds
RESUMABLE = ("out", "resume", "overwrite", "progress", "rounds")


def resume_state(cfg: SelfConfig) -> dict[str, Any] | None:
    """The checkpoint a run continues from (None: a new run), its settings checked against ``cfg``'s."""
    out = Path(cfg.out)
    if not cfg.resume or not (out / "checkpoint.pt").exists():
        return None
    start_over = "Start it over with --overwrite, or give this run another --out."
    state = load_checkpoint(out / "checkpoint.pt", ("model", "history", "stage"), start_over)
    if (out / "config.json").exists():
        saved = json.loads((out / "config.json").read_text())
        changed = differences(saved, asdict(cfg), asdict(SelfConfig()), ignored=RESUMABLE)
        refuse_other_settings(f"The SELF run in {out}", changed, start_over)
    return state


def self_evolve(cfg: SelfConfig, log=print) -> dict[str, Any]:
    """Meta-skill learning, then ``cfg.rounds`` self-evolution rounds; evaluated after each stage. Resumable.

    The run holds ``cfg.out`` (:func:`~criticgym.utils.runfolder.run_folder`): it continues the run there with
    ``resume`` (the default) and the same settings, and replaces it only with ``overwrite``.
    """
    from criticgym.rollout.models import check_freeze_layers

    task, annotator = _task_pieces(cfg)
    check_freeze_layers(cfg.model, cfg.freeze_layers, "--freeze-layers")  # from its config: before the folder
    resume = cfg.resume and not cfg.overwrite
    with run_folder(cfg.out, resume=resume, overwrite=cfg.overwrite, resume_hint="continue it with --resume"):
        return _self_evolve(cfg if resume == cfg.resume else replace(cfg, resume=False), task, annotator, log)


def _self_evolve(cfg: SelfConfig, task, annotator, log) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from criticgym.rollout import load_policy

    out = Path(cfg.out)
    state = resume_state(cfg)  # before the model loads: a run that cannot continue fails at once
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_policy(cfg.model, device=cfg.device, dtype=torch.float32)  # trained: never bfloat16
    freeze_lower_layers(model, cfg.freeze_layers)
    problems = _problems(cfg, task, tokenizer)
    solver = Solver(model, tokenizer, task.feedback, cfg.max_new_tokens or task.max_new_tokens, cfg.feedback_tokens)
    flops.take()
    with flops.phase("policy"):
        stage_zero = _stage_zero_data(cfg, annotator, problems, solver, out, model.device)
    stage_zero_flops = sum(flops.take().values())  # charged to stage 0, which trains on this data

    checkpoint = out / "checkpoint.pt"
    history: list[dict[str, Any]] = []
    done = -1  # the last finished stage: -1 none, 0 meta-skill learning, t round t
    if state is not None:
        model.load_state_dict(state["model"])
        history, done = state["history"], state["stage"]
        log(f"Resumed from {checkpoint} after stage {done}.")
    elif cfg.base_eval:
        with autocast(cfg.precision, model.device):
            history.append({"stage": -1, **_eval_row(solver, problems.test, annotator, out, "base")})
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    bar = tqdm(range(done + 1, cfg.rounds + 1), disable=not cfg.progress, desc="self-evolve", unit="stage")
    try:
        _stages(cfg, bar, solver, annotator, problems, stage_zero, stage_zero_flops, history, checkpoint, log)
    except KeyboardInterrupt:
        finished = [row["stage"] for row in history if row.get("stage", -1) >= 0]
        where = f"after stage {finished[-1]}" if finished else "before its first stage finished"
        raise Interrupted(
            f"interrupted {where} of {cfg.out}; the same command (it resumes by default) continues from the last "
            "checkpoint."
        ) from None
    _write_metrics(out / "metrics.csv", history)
    _plot(history, out / "curves.png")
    return {"history": history, "model": model, "tokenizer": tokenizer, "out": out}


def _stages(cfg, bar, solver, annotator, problems, stage_zero, stage_zero_flops, history, checkpoint, log) -> None:
    """Stage after stage, each evaluated and checkpointed."""
    model, out = solver.engine.model, checkpoint.parent
    for stage in bar:
        start = time.perf_counter()
        row = _train_stage(cfg, stage, solver, annotator, problems, stage_zero, out)
        row["perf/train_flops"] += stage_zero_flops if stage == 0 else 0.0
        row["seconds"] = time.perf_counter() - start
        with autocast(cfg.precision, model.device):
            row |= _eval_row(solver, problems.test, annotator, out, f"stage-{stage}")
        flops.take()  # evaluation is not training compute
        history.append(row)
        save_atomically({"model": model.state_dict(), "history": history, "stage": stage}, checkpoint)
        bar.set_postfix(accuracy=f"{row['eval/accuracy']:.3f}", refined=f"{row['eval/accuracy_refined']:.3f}")
        log(
            f"[self-evolve] stage {stage}: accuracy {row['eval/accuracy']:.3f}, with self-refinement "
            f"{row['eval/accuracy_refined']:.3f}, trained on {row['train_tokens']} tokens"
        )


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
    plt = pyplot()

    stages = [row["stage"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(stages, [row["eval/accuracy"] for row in history], marker="o", label="answer")
    ax.plot(stages, [row["eval/accuracy_refined"] for row in history], marker="s", label="with self-refinement")
    ax.set(xlabel="stage (-1 base, 0 meta-skills, then rounds)", ylabel="held-out accuracy", title="SELF")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
