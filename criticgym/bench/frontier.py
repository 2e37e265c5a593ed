"""``criticgym bench frontier``: every feedback family on one task, served and judged on the same held-out prompts.

Each arm trains (PPO on a reward spec, distilled RLAIF, SELF) or not (the untrained policy, best-of-N, RAIN), then
serves the held-out prompts; every held-out judge scores the completions, and the FLOPs spent to train and per
served completion are metered. Each (arm, seed) is cached in ``runs/<arm>/seed-<s>/frontier.json``, so a stopped
frontier resumes; :func:`criticgym.bench.costs.report` writes the table, the plot and every record.
"""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache, partial
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

from criticgym.bench.costs import SEARCH_ARMS, inference_flops, report, training_flops
from criticgym.errors import AT_LEAST_1, NON_NEGATIVE, POSITIVE, ConfigError, check_ranges
from criticgym.rewards import DEFAULT_MODEL
from criticgym.search.rain import RAINConfig
from criticgym.train import TrainConfig, check_model
from criticgym.train.config import HOW
from criticgym.train.export import drop_weights
from criticgym.utils.files import load_checkpoint, write_text_atomically
from criticgym.utils.options import deferred, parsed
from criticgym.utils.runfolder import differences, each_kept, refuse_other_settings, run_folder

OTHER_ARMS = ("untrained", "distilled", "self")


def family(arm: str) -> str:
    """The feedback family of an arm, for the table."""
    named = {"untrained": "none", "self": "feedback in words (SELF)", "distilled": "AI judge (RLAIF)"}
    if arm in SEARCH_ARMS or arm in named:
        return named.get(arm, "inference-time search")
    if arm.startswith("rlaif"):
        return "AI judge (RLAIF)"
    return "critic spans (RELC)" if arm.startswith(("relc", "random")) else "sparse score"


def learns_from(cfg: FrontierConfig, arm: str) -> str:
    """What an arm trains or searches on, so that the table shows which held-out judge each arm has seen."""
    from criticgym.bench.ablation import arm_reward
    from criticgym.envs import get_task
    from criticgym.registration import ENV_IDS
    from criticgym.rewards import Relc, Sparse

    task = get_task(ENV_IDS.get(cfg.train.env, cfg.train.env))
    if arm in SEARCH_ARMS:
        return f"{cfg.search_evaluator} (search)"
    named = {
        "untrained": "nothing",
        "self": f"the {getattr(task.feedback, 'annotator', None)} annotator, then its own judgement",
        "distilled": f"a reward model of {cfg.judge_model}'s preferences",
    }
    if arm in named:
        return named[arm]
    spec = arm_reward(arm, cfg.critic_model, cfg.judge_model)
    if not isinstance(spec, Sparse | Relc):
        return str(spec.judge_model)
    scorer = spec.scorer or (task.scorer if isinstance(task.scorer, str) else getattr(task.scorer, "__name__", "score"))
    if isinstance(spec, Sparse):
        return scorer
    critic = spec.critic or task.critic
    critic = f"{critic} ({spec.critic_model})" if critic in ("llm", "label") else critic
    return f"{scorer} + {critic} spans"


def _frontier_defaults():
    from criticgym.bench.ablation import _ablation_defaults

    return replace(_ablation_defaults(), out="runs/frontier")


@dataclass
class FrontierConfig:
    """Every feedback family on one task, the same policy and prompts, judged by a model none of them used.

    Every ``criticgym train`` option applies to the training arms (``--out`` is the frontier's folder; ``--seed``
    is set per run).
    """

    arms: str = "untrained,sparse,relc-lexicon,relc-label,rlaif-direct,rlaif-pairwise,distilled,self,best-of-n,rain"
    """Comma-separated arms: untrained, any reward arm of the ablation, distilled (a reward model trained on the
    judge's preferences), self (SELF rounds on the task's feedback spec), best-of-n and rain (search, no training)."""
    seeds: int = 5
    """Seeds per arm (first_seed..first_seed+seeds-1): training, sampling and search draw from them."""
    first_seed: int = 0
    """The first seed: two folders (two machines or cores) can run seeds 0-3 and 4-7 of one frontier side by side;
    a report reads several folders' records (benchmarks/horizon.py)."""
    seeds_of: str = ""
    """Per-arm seed counts over --seeds, comma-separated arm=count (self=5: an arm whose seeds are dear runs fewer)."""
    judges: str = "label:gemma3-270m,sentiment-classifier,vader"
    """Held-out judges (label:<model> or scorer names), the independent one first: no arm trains or searches on it."""
    judge_model: str = "label:self"
    """The RLAIF and distilled arms' judge."""
    critic_model: str = DEFAULT_MODEL
    """The model of the RELC arms' llm and label critics."""
    search_evaluator: str = "vader"
    """What best-of-N and RAIN optimize."""
    n: int = 16
    """Best-of-N's samples per prompt."""
    rain: RAINConfig = field(default_factory=lambda: RAINConfig(searches=10))
    prompts: int = 32
    """Held-out prompts every arm serves (the same ones for every arm and seed)."""
    prompts_of: str = ""
    """Per-arm prompt counts, comma-separated arm=count (rain=64: a dear search serves the first 64 of the same list;
    it is paired with the other arms on those)."""
    difference: float | None = None
    """A paired difference to plan for: the report adds the seeds and prompts that would detect it."""
    pairs: int = 128
    """Preference pairs the distilled arm labels."""
    self_rounds: int = 2
    """SELF's rounds (after its meta-skill stage), on prompts_per_round = train.num_envs * train.iterations."""
    train: Annotated[TrainConfig, tyro.conf.arg(name="")] = field(default_factory=_frontier_defaults)

    def __post_init__(self) -> None:
        if not deferred():
            self.check()

    def check(self) -> None:
        """Raise :class:`ConfigError` for an option out of its range."""
        check_ranges(self, dict(seeds=AT_LEAST_1, prompts=AT_LEAST_1, n=AT_LEAST_1, pairs=AT_LEAST_1))
        check_ranges(self, dict(self_rounds=NON_NEGATIVE, first_seed=NON_NEGATIVE, difference=POSITIVE))
        if not self.judge_list:
            raise ConfigError("--judges needs at least one held-out judge.")

    @property
    def arm_list(self) -> list[str]:
        """The arms, each checked."""
        from criticgym.bench.ablation import arm_reward

        arms = [a.strip() for a in self.arms.split(",") if a.strip()]
        for arm in arms:
            if arm not in SEARCH_ARMS + OTHER_ARMS:
                arm_reward(arm)  # a reward arm's name, or an error listing the forms
        return arms

    @property
    def arm_seeds(self) -> dict[str, int]:
        """Each arm's seed count: --seeds, or its --seeds-of."""
        return self._per_arm("seeds-of", self.seeds_of, self.seeds, "self=5")

    @property
    def arm_prompts(self) -> dict[str, int]:
        """Each arm's held-out prompts: --prompts, or its --prompts-of (the first ones of --prompts' list)."""
        return self._per_arm("prompts-of", self.prompts_of, self.prompts, "rain=64")

    def _per_arm(self, option: str, text: str, default: int, example: str) -> dict[str, int]:
        counts = dict.fromkeys(self.arm_list, default)
        for item in (i.strip() for i in text.split(",") if i.strip()):
            arm, _, count = (part.strip() for part in item.partition("="))
            if arm not in counts or not count.isdigit() or int(count) < 1:
                raise ConfigError(
                    f"--{option} {item!r}: write arm=count, an arm of --arms ({', '.join(counts)}) and a count of "
                    f"at least 1, e.g. --{option} {example}."
                )
            counts[arm] = int(count)
        return counts

    @property
    def judge_list(self) -> list[str]:
        """The held-out judges, independent first."""
        return [j.strip() for j in self.judges.split(",") if j.strip()]


def judge_texts(name: str, task, prompts: list[str], completions: list[str]) -> list[float]:
    """A held-out judge's scores: a label-word judge's rating in [-1, 1], or a scorer's score."""
    return list(_held_out_judge(name, task.name)(prompts, completions))


@lru_cache(maxsize=8)
def _held_out_judge(name: str, task_name: str):
    """A judge's scoring function, built once per run rather than per record (a label-word judge loads a model)."""
    from criticgym.critics import as_scorer
    from criticgym.critics.scorers import score_texts
    from criticgym.registration import make_judge
    from criticgym.specs import LabelJudge, parse_judge

    if isinstance(parse_judge(name), LabelJudge):
        return make_judge(name, task_name, pairwise=False).rate
    scorer = as_scorer(name)
    return lambda prompts, completions: score_texts(scorer, prompts, completions)


def serve(
    cfg: FrontierConfig, model, tokenizer, method: str, seed: int, prompts: int | None = None
) -> tuple[list[str], list[str], float]:
    """The held-out prompts, one served completion each (vanilla, best-of-N or RAIN), and FLOPs per completion.

    ``prompts``: how many, the first ones of the list (``--prompts`` by default).
    """
    from tqdm.auto import tqdm

    from criticgym import flops
    from criticgym.search import compare
    from criticgym.search.values import make_value

    search = compare.SearchConfig(
        env=cfg.train.env,
        prompts=prompts or cfg.prompts,
        max_new_tokens=cfg.train.max_new_tokens,
        n=cfg.n,
        rain=cfg.rain,
        evaluator=cfg.search_evaluator,
        progress=False,
    )
    ids, prompts, envs = compare.held_out_prompts(search, tokenizer, 0)  # the same prompts for every arm and seed
    budget, eos = envs.unwrapped.max_new_tokens, tuple(envs.unwrapped.eos_token_ids)
    task = envs.unwrapped.episodes.task
    evaluator = make_value(cfg.search_evaluator, model, tokenizer, task.self_evaluation, task.label_words)
    flops.track(model)
    flops.take()
    with flops.phase("inference"), tqdm(disable=True) as bar:  # no bar inside the frontier's own log
        if method == "rain":
            rows = compare.rain_rows(search, model, tokenizer, evaluator, ids, prompts, seed, budget, eos, bar)
        else:
            rows = compare.sampled_rows(
                search, method, model, tokenizer, evaluator, ids, prompts, seed, budget, eos, bar
            )
    return prompts, [r[0] for r in rows], inference_flops(flops.take(), len(rows))


def _policy_after(run: TrainConfig, log) -> tuple[Any, Any, list[dict[str, Any]]]:
    """Train (or resume) a run, then its final policy and its history."""
    from criticgym.rollout import load_policy
    from criticgym.train import train

    history = train(run, log=log)["history"]
    fix = f"Delete {run.out} and run the frontier again."
    state = load_checkpoint(Path(run.out) / "checkpoint.pt", ("agent",), fix, map_location=run.device)
    model, tokenizer = load_policy(run.model, device=run.device)
    model.load_state_dict(state["agent"]["model"])
    return model, tokenizer, history


def _run_config(cfg: FrontierConfig, reward, seed: int, folder: Path) -> TrainConfig:
    run = dict(resume=False, resume_if_any=True, overwrite=False, eval_every=0)
    return replace(cfg.train, reward=reward, seed=seed, out=str(folder), **run)


def _distilled_policy(cfg: FrontierConfig, seed: int, folder: Path, log):
    """Distilled RLAIF: the judge labels pairs once, a reward model fits them, PPO trains on it (sparse)."""
    from criticgym import flops
    from criticgym.distill.fit import train_reward_model
    from criticgym.distill.pairs import label_pairs
    from criticgym.registration import ENV_IDS, make_judge
    from criticgym.rewards import Sparse

    rm_folder = folder / "reward-model"
    flops.take()
    if not (rm_folder / "reward_model.json").exists():
        task = ENV_IDS.get(cfg.train.env, cfg.train.env)
        with flops.phase("reward"):  # label:self is the initial policy, which labels before any training
            judge = make_judge(cfg.judge_model, task, pairwise=True, policy=cfg.train.model)
            records = label_pairs(cfg.train.env, cfg.train.model, judge, prompts=cfg.pairs, seed=seed)
            reward_model, _ = train_reward_model(records, "minilm", seed=seed, log=log)
        reward_model.save(rm_folder)
        labelling = sum(flops.take().values())
        (folder / "labelling_flops.json").write_text(json.dumps(labelling))
    labelling = json.loads((folder / "labelling_flops.json").read_text())
    run = _run_config(cfg, Sparse(scorer=str(rm_folder)), seed, folder / "run")
    model, tokenizer, history = _policy_after(run, log)
    return model, tokenizer, training_flops(history) + labelling


def _self_policy(cfg: FrontierConfig, seed: int, folder: Path, log):
    """SELF on the task's feedback spec: meta-skills from the annotator, then rounds filtered by its own judgement."""
    from criticgym.selfevolve.driver import SelfConfig, self_evolve

    per_round = cfg.train.num_envs * cfg.train.iterations  # as many answers per round as a training run samples
    self_cfg = SelfConfig(
        env=cfg.train.env,
        model=cfg.train.model,
        out=str(folder / "self"),
        rounds=cfg.self_rounds,
        meta_records=per_round,
        qa_records=0,
        prompts_per_round=per_round,
        eval_problems=cfg.prompts,
        base_eval=False,  # the untrained arm is the frontier's own base; SELF's greedy base row would repeat per seed
        freeze_layers=cfg.train.ppo.freeze_layers,
        seed=seed,
        device=cfg.train.device,
        progress=False,
    )
    result = self_evolve(self_cfg, log=log)
    return result["model"], result["tokenizer"], training_flops(result["history"])


def reference_perplexity(reference, tokenizer, prompt_ids: list[list[int]], completions: list[str]) -> float:
    """Perplexity of completions (their text, tokenized again) after their prompts under ``reference``.

    exp of the mean negative log-likelihood over every completion token, in one forward pass.
    """
    import torch

    from criticgym.rollout import RolloutEngine
    from criticgym.rollout.decoder import left_pad
    from criticgym.rollout.engine import sequence_logprobs

    engine = RolloutEngine(reference, tokenizer)
    encoded = [tokenizer.encode(text, add_special_tokens=False) for text in completions]
    prompts, prompt_mask = left_pad(prompt_ids, engine.pad_id, engine.device)
    ids = torch.full((len(encoded), max([1, *map(len, encoded)])), engine.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, tokens in enumerate(encoded):
        ids[row, : len(tokens)], mask[row, : len(tokens)] = torch.as_tensor(tokens, dtype=torch.long), 1
    ids, mask = ids.to(engine.device), mask.to(engine.device)
    with torch.no_grad():
        logprobs = sequence_logprobs(reference, prompts, prompt_mask, ids, mask)
    return float(torch.exp(-(logprobs * mask).sum() / mask.sum().clamp(min=1)))


def _fill_perplexity(cfg: FrontierConfig, out: Path, records: list[dict[str, Any]]) -> None:
    """Give every record its completions' perplexity under the initial policy, and save it.

    A unit measures its own (:func:`run_arm`); this fills records written before it did.
    """
    missing = [r for r in records if "perplexity" not in r]
    if not missing:
        return
    from criticgym import flops
    from criticgym.rollout import load_policy

    reference, tokenizer = load_policy(cfg.train.model, device=cfg.train.device)
    for record in missing:
        record["perplexity"] = record_perplexity(cfg, record, reference, tokenizer)
        path = out / "runs" / record["arm"] / f"seed-{record['seed']}" / "frontier.json"
        write_text_atomically(path, json.dumps(record, indent=1))
    flops.take()  # measuring is not any arm's cost


def record_perplexity(cfg: FrontierConfig, record: dict[str, Any], reference, tokenizer) -> float:
    """:func:`reference_perplexity` of a record's completions after the held-out prompts it served."""
    from criticgym.search import compare

    served = record["completions"]
    search = compare.SearchConfig(
        env=cfg.train.env, prompts=len(served), max_new_tokens=cfg.train.max_new_tokens, progress=False
    )
    ids, prompts, _ = compare.held_out_prompts(search, tokenizer, 0)  # each arm serves the first ones
    if [c["prompt"] for c in served] != prompts:
        raise ConfigError(
            f"The record of {record['arm']}, seed {record['seed']} served other prompts than --prompts "
            f"{cfg.prompts} of {cfg.train.env} gives; run the frontier with the options it was run with."
        )
    return reference_perplexity(reference, tokenizer, ids, [c["completion"] for c in served])


# What no arm's result depends on: where and how it runs, and what the arms set per run
NOT_SETTINGS = HOW + ("reward", "seed", "eval_every", "checkpoint_every", "workers", "critic_actors")


def arm_settings(cfg: FrontierConfig, arm: str) -> dict[str, Any]:
    """The settings an arm's record depends on: the prompts and judges, and what it trains or searches with."""
    run = {k: v for k, v in asdict(cfg.train).items() if k not in NOT_SETTINGS}
    trains = arm not in SEARCH_ARMS + ("untrained",)
    served = {k: run[k] for k in ("env", "max_new_tokens") if run[k] is not None}  # what the prompts' env depends on
    settings = {"prompts": cfg.arm_prompts[arm], "judges": cfg.judges, "train": run if trains else served}
    settings["train"]["model"] = run["model"]
    own = {"best-of-n": ("n", "search_evaluator"), "rain": ("rain", "search_evaluator"), "untrained": ()}
    own |= {"distilled": ("judge_model", "pairs"), "self": ("self_rounds",)}
    for name in own.get(arm, ("critic_model", "judge_model")):
        value = getattr(cfg, name)
        settings[name] = asdict(value) if name == "rain" else value
    return settings


def check_arm(cfg: FrontierConfig, arm: str, seed: int, folder: Path, log) -> None:
    """Refuse (or, with --overwrite, delete) an arm's result, finished or not, made with other settings."""
    path = folder / "settings.json"
    if not path.exists():
        return  # not started, or made before settings were stored: kept as it is
    changed = differences(json.loads(path.read_text()), arm_settings(cfg, arm))
    if changed and cfg.train.overwrite:
        log(f"[frontier] {arm}, seed {seed}: made with other settings ({'; '.join(changed)}), run again")
        shutil.rmtree(folder)
        return
    refuse_other_settings(
        f"The {arm} arm of seed {seed} ({folder})",
        changed,
        "Run it again with --overwrite (it replaces what other settings made), or give the frontier another --out.",
    )


def run_arm(cfg: FrontierConfig, arm: str, seed: int, out: Path, log=print) -> dict[str, Any]:
    """One (arm, seed): train (or not), serve the held-out prompts, judge them; cached in ``frontier.json``."""
    from criticgym import flops
    from criticgym.bench.ablation import arm_reward
    from criticgym.envs import get_task
    from criticgym.registration import ENV_IDS
    from criticgym.rollout import load_policy

    folder = out / "runs" / arm / f"seed-{seed}"
    done = folder / "frontier.json"
    check_arm(cfg, arm, seed, folder, log)
    if done.exists():
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomically(folder / "settings.json", json.dumps(arm_settings(cfg, arm), indent=1))
    log(f"[frontier] {arm}, seed {seed}")
    if arm in SEARCH_ARMS + ("untrained",):
        (model, tokenizer), train_flops = load_policy(cfg.train.model, device=cfg.train.device), 0.0
    elif arm == "distilled":
        model, tokenizer, train_flops = _distilled_policy(cfg, seed, folder, log)
    elif arm == "self":
        model, tokenizer, train_flops = _self_policy(cfg, seed, folder, log)
    else:
        spec = arm_reward(arm, cfg.critic_model, cfg.judge_model)
        model, tokenizer, history = _policy_after(_run_config(cfg, spec, seed, folder / "run"), log)
        train_flops = training_flops(history)
    method = arm if arm in SEARCH_ARMS else "vanilla"
    prompts, completions, per_completion = serve(cfg, model, tokenizer, method, seed, cfg.arm_prompts[arm])
    task = get_task(ENV_IDS.get(cfg.train.env, cfg.train.env))
    judged = {name: judge_texts(name, task, prompts, completions) for name in cfg.judge_list}
    record = {
        "arm": arm,
        "family": family(arm),
        "learns_from": learns_from(cfg, arm),
        "seed": seed,
        "train_flops": train_flops,
        "inference_flops": per_completion,
        "scores": {name: float(np.mean(values)) for name, values in judged.items()},
        "per_prompt": {name: [float(v) for v in values] for name, values in judged.items()},
        "completions": [{"prompt": p, "completion": c} for p, c in zip(prompts, completions, strict=True)],
    }
    untouched = arm in SEARCH_ARMS + ("untrained",)  # the policy served is the initial one
    reference = model if untouched else load_policy(cfg.train.model, device=cfg.train.device)[0]
    record["perplexity"] = record_perplexity(cfg, record, reference, tokenizer)
    flops.take()  # measuring is not the arm's cost
    write_text_atomically(done, json.dumps(record, indent=1))
    for run in ("run", "self"):  # served and judged: a PPO run's or SELF's weights are not needed
        drop_weights(folder / run)
    return record


def frontier(argv: list[str], log=print) -> dict[str, Any]:
    """``criticgym bench frontier``: run (or resume) every arm and seed, then :func:`report`."""
    cfg = parsed(FrontierConfig, argv, "criticgym bench frontier")
    if cfg.train.lora_r:
        raise ConfigError("The frontier serves full-weight policies; drop --lora-r.")
    arm_seeds, _ = cfg.arm_seeds, cfg.arm_prompts  # a wrong --seeds-of or --prompts-of fails before anything runs
    if any(arm not in SEARCH_ARMS + ("untrained",) for arm in arm_seeds):  # an arm that trains freezes layers
        check_model(cfg.train)  # the trained arms' and SELF's --ppo.freeze-layers, before the folder
    with run_folder(cfg.train.out, resume=True):  # finished arms are kept, stale ones refused (or replaced)
        return _frontier(cfg, arm_seeds, argv, log)


def _frontier(cfg: FrontierConfig, arm_seeds: dict[str, int], argv: list[str], log) -> dict[str, Any]:
    out = Path(cfg.train.out)
    first = cfg.first_seed
    pairs = [(arm, seed) for arm, seeds in arm_seeds.items() for seed in range(first, first + seeds)]
    records = each_kept([partial(run_arm, cfg, arm, seed, out, log) for arm, seed in pairs], out)
    for record in records:  # records written before the field existed
        record.setdefault("learns_from", learns_from(cfg, record["arm"]))
    _fill_perplexity(cfg, out, records)
    command = "criticgym bench frontier " + shlex.join(argv)
    return report(records, cfg.judge_list, out, command, log, difference=cfg.difference)
