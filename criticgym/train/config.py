"""A training run's settings (:class:`TrainConfig`, the options of ``criticgym train``) and how two runs differ."""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from typing import Any, Literal

from criticgym.algos import ALGORITHMS
from criticgym.algos.grpo import GRPOConfig
from criticgym.algos.ppo import PPOConfig
from criticgym.algos.reinforce import ReinforceConfig
from criticgym.errors import (
    AT_LEAST_1,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    SHARE,
    ConfigError,
    check_ranges,
)
from criticgym.rewards import (
    DEFAULT_MODEL,
    FORMS,
    OPTIONS,
    SPECS,
    Relc,
    RewardOption,
    RlaifPairwise,
    as_dict,
    from_dict,
    options_of,
    reward_spec,
    spec_name,
)
from criticgym.utils.options import deferred

# The algorithms on the command line: the names registered when this module is imported (train() takes any
# name registered later too)
AgentName = Literal[tuple(ALGORITHMS)]  # type: ignore[valid-type]


@dataclass
class TrainConfig:
    """A training run.

    Every field is a ``criticgym train`` option (``--num-envs`` for ``num_envs``, ``--ppo.lr`` for the PPO learning
    rate).
    """

    env: str = "criticgym/SentimentControl-v0"
    """A registered criticgym id."""
    reward: RewardOption = field(default_factory=Relc)
    """The reward set-up: --reward FORM (sparse, relc, relc-<critic>, random, random-<critic>, rlaif-direct,
    rlaif-pairwise) with its own options anywhere on the line (criticgym train relc --help lists RELC's)."""
    agent: AgentName = "ppo"
    """The algorithm (criticgym.algos.ALGORITHMS): ppo (options --ppo.*), reinforce with a value baseline or rloo
    (options --reinforce.*), grpo (options --grpo.*). In Python also its config: agent=GRPOConfig(k=4)."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    reinforce: ReinforceConfig = field(default_factory=ReinforceConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    model: str = DEFAULT_MODEL
    """Built-in name, local folder or hub id."""
    lora_r: int = 0
    """LoRA rank (0: train every weight). With LoRA the reference model is the base with the adapter off."""
    lora_alpha: float = 16.0
    """LoRA's alpha (the adapter's update is scaled by alpha / r)."""
    lora_targets: str = "all-linear"
    """Modules that get an adapter: all-linear, or comma-separated names such as q_proj,v_proj."""
    device: str = "cpu"
    """cpu, cuda or auto."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Forward passes under bfloat16 autocast (auto: on a CUDA device with bfloat16); weights stay float32."""
    iterations: int = 20
    """Agent iterations (one batch each)."""
    num_envs: int = 16
    """Completions per iteration."""
    max_new_tokens: int | None = None
    """Completion budget (None: the task's)."""
    seed: int = 0
    """The run's seed."""
    eval_every: int = 5
    """Evaluate every N iterations (0: only first and last)."""
    eval_prompts: int = 32
    """Held-out prompts per evaluation."""
    checkpoint_every: int = 5
    """Checkpoint every N iterations."""
    out: str = "runs/criticgym"
    """Output folder."""
    merged_policy: bool = False
    """With LoRA, also write out/policy-merged: the base with the adapter merged in (out/policy holds the adapter)."""
    resume: bool = False
    """Continue the run in out/ from its checkpoint; an error when there is none, or when the run's settings differ."""
    resume_if_any: bool = False
    """Continue from out/checkpoint.pt when there is one (with the same settings), else start a new run there."""
    overwrite: bool = False
    """Delete the run that out/ holds and start a new one there (without it, a folder that holds a run is refused)."""
    progress: bool = True
    """Show a progress bar."""
    workers: int = 0
    """Rollout workers as Ray actors, each playing num_envs / workers rows (0: this process plays; criticgym[ray])."""
    ray_address: str | None = None
    """The Ray cluster to join (None: start a local one) when workers or critic_actors are set."""
    worker_gpus: float | None = None
    """GPUs per rollout worker: 1 on a cluster with a GPU each (None: on CUDA the workers share one GPU)."""
    critic_actors: int = 0
    """Serve RELC's span critic from this many Ray actors, shared by every env (0: in each env's process)."""
    overlap_feedback: bool = False
    """Run the reward's expensive call (RELC's critic, the scorer, a direct judge) in a thread while the other
    episodes of the batch generate: the same rewards, less waiting."""
    engine: Literal["builtin", "vllm"] = "builtin"
    """What samples the rollouts: our KV-cached engine, or vLLM (criticgym[vllm]; the policy's weights, or its LoRA
    adapter alone, are synced to it every iteration; the tokens are replayed through the env). Evaluation and
    search keep the built-in engine."""

    def __post_init__(self) -> None:
        if isinstance(self.reward, dict):  # read back from config.json
            self.reward = from_dict(self.reward)
        self.reward = reward_spec(self.reward)
        if self.reward is None:
            raise ConfigError("A training run needs a reward: sparse, relc, rlaif-direct or rlaif-pairwise.")
        if not isinstance(self.agent, str):  # an agent's config object: its algorithm's name, and its options there
            name = agent_name_of(self.agent)
            self.agent, config = name, self.agent
            setattr(self, ALGORITHMS[name].options, config)
        if self.agent not in ALGORITHMS:
            raise ConfigError(
                f"Unknown agent {self.agent!r}; use one of {sorted(ALGORITHMS)}, or register yours "
                "(criticgym.algos.register_algorithm)."
            )
        for f in fields(self):  # an agent's options, read back from config.json
            if f.name != "reward" and isinstance(getattr(self, f.name), dict):
                setattr(self, f.name, type(f.default_factory())(**getattr(self, f.name)))  # type: ignore[misc]
        self.model = absolute_if_path(self.model)
        paths = {k: absolute_if_path(getattr(self.reward, k)) for k in PATH_OPTIONS if hasattr(self.reward, k)}
        self.reward = replace(self.reward, **paths)
        if not deferred():  # criticgym train checks once tyro has parsed (utils.options.parsed)
            self.check()

    def check(self) -> None:
        """Raise :class:`ConfigError` for an option out of its range or options that do not go together."""
        check_ranges(self, RANGES)
        check_ranges(self.ppo, PPO_RANGES, "--ppo.")
        check_ranges(self.reinforce, REINFORCE_RANGES, "--reinforce.")
        if self.overwrite and (self.resume or self.resume_if_any):
            raise ConfigError("--overwrite starts the run over; --resume continues it. Give one of them.")
        if self.engine == "vllm" and self.workers:
            raise ConfigError(
                "--engine vllm samples every row in this process; drop --workers (or use the builtin engine)."
            )
        if isinstance(self.reward, RlaifPairwise) and self.num_envs % 2:
            raise ConfigError(
                f"rlaif-pairwise pairs sub-envs 2i and 2i+1, so num_envs must be even; got {self.num_envs}."
            )
        if self.critic_actors and not isinstance(self.reward, Relc):
            raise ConfigError(f"critic_actors serves RELC's span critic; the {self.reward.kind} reward has none.")

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> TrainConfig:
        """The config a run's ``config.json`` (or checkpoint) holds, written by this or an older version."""
        return cls(**upgraded(config))

    def to_dict(self) -> dict[str, Any]:
        """The run's settings as plain data (``config.json``, checkpoints, Ray workers).

        Objects in the reward set-up are written by import path (:func:`criticgym.rewards.as_dict`).
        """
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "reward"}
        plain = {k: asdict(v) if is_dataclass(v) else v for k, v in values.items()}
        return plain | {"reward": as_dict(self.reward)}

    @property
    def scorer(self) -> str | None:
        """The task score's scorer (None: the task's), also what held-out evaluation reports."""
        return getattr(self.reward, "scorer", None)

    @property
    def agent_config(self) -> Any:
        """The chosen agent's config, with what its name fixes (``agent="rloo"``: REINFORCE's, ``baseline="rloo"``)."""
        algorithm = ALGORITHMS[self.agent]
        return replace(getattr(self, algorithm.options), **algorithm.preset)


# Every numeric option's range, checked when a config is built (before any model loads)
RANGES = dict(
    iterations=AT_LEAST_1,
    num_envs=AT_LEAST_1,
    seed=NON_NEGATIVE,
    eval_every=NON_NEGATIVE,
    eval_prompts=AT_LEAST_1,
    checkpoint_every=AT_LEAST_1,
    max_new_tokens=AT_LEAST_1,
    lora_r=NON_NEGATIVE,
    lora_alpha=POSITIVE,
    workers=NON_NEGATIVE,
    critic_actors=NON_NEGATIVE,
    worker_gpus=NON_NEGATIVE,
)
SAMPLING_RANGES = dict(
    lr=POSITIVE, kl_coef=NON_NEGATIVE, vf_coef=NON_NEGATIVE, max_grad_norm=POSITIVE, temperature=POSITIVE
)
SAMPLING_RANGES |= dict(top_p=SHARE, tis_cap=NON_NEGATIVE)
PPO_RANGES = SAMPLING_RANGES | dict(
    epochs=AT_LEAST_1,
    minibatch_size=AT_LEAST_1,
    gamma=FRACTION,
    lam=FRACTION,
    clip=POSITIVE,
    value_clip=POSITIVE,
    kl_target=POSITIVE,
    kl_horizon=AT_LEAST_1,
    freeze_layers=NON_NEGATIVE,
)
REINFORCE_RANGES = SAMPLING_RANGES | dict(k=AT_LEAST_1)
# Reward options that may name a local file or folder: stored absolute, so that a run is evaluated from anywhere
PATH_OPTIONS = ("scorer", "critic_model", "judge_model")


def check_agent_options(cfg: TrainConfig, argv: list[str]) -> None:
    """Refuse options typed for an agent the run does not use (``--agent ppo --grpo.k 8``): they would do nothing."""
    chosen = ALGORITHMS[cfg.agent].options
    for name in {a.options for a in ALGORITHMS.values()} - {chosen}:
        typed = [a.split("=")[0] for a in argv if a.startswith(f"--{name}.")]
        if typed:
            users = sorted(n for n, a in ALGORITHMS.items() if a.options == name)
            raise ConfigError(
                f"{typed[0]} is an option of {' and '.join(users)}, but the agent is {cfg.agent} (whose options are "
                f"--{chosen}.*): add --agent {users[0]}, or drop the --{name}.* options."
            )


def agent_name_of(config: Any) -> str:
    """The registered algorithm an agent config stands for.

    The one whose ``TrainConfig`` field holds the config's type and whose preset it meets: a ``ReinforceConfig`` with
    ``baseline="rloo"`` is ``rloo``, any other ``reinforce``.
    """
    import typing

    hints = typing.get_type_hints(TrainConfig)
    names = [
        name
        for name, algorithm in ALGORITHMS.items()
        if hints.get(algorithm.options) is type(config)
        and all(getattr(config, k, None) == v for k, v in algorithm.preset.items())
    ]
    if not names:
        raise ConfigError(
            f"agent={config!r}: give an algorithm's name ({', '.join(sorted(ALGORITHMS))}) or its config "
            "(PPOConfig, ReinforceConfig, GRPOConfig, or the config of an algorithm you registered)."
        )
    return max(names, key=lambda name: len(ALGORITHMS[name].preset))


def absolute_if_path(value: Any) -> Any:
    """``value`` as an absolute path when it names an existing local file or folder (``./rm``, ``runs/x/model``)."""
    import os

    if not isinstance(value, str) or not ("/" in value or value.startswith(".")) or os.path.isabs(value):
        return value
    return os.path.abspath(value) if os.path.exists(value) else value


def env_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The options of the env a config trains on (reward set-up, model, budget)."""
    reward = cfg.reward
    if isinstance(reward, Relc) and reward.critic_seed is None:  # the random critic draws from the run's seed
        reward = replace(reward, critic_seed=cfg.seed)
    kwargs: dict[str, Any] = {"reward": reward, "model": cfg.model, "autoreset_mode": "disabled"}
    if cfg.overlap_feedback:
        kwargs["overlap_feedback"] = True
    if cfg.max_new_tokens is not None:
        kwargs["max_new_tokens"] = cfg.max_new_tokens
    return kwargs


def upgraded(config: dict[str, Any]) -> dict[str, Any]:
    """A saved run config in today's form: older versions kept the reward's options beside it, flat."""
    if not isinstance(config.get("reward"), str):
        return config
    rest = {k: v for k, v in config.items() if k not in OPTIONS}
    kind = config["reward"]
    options = {k: v for k, v in config.items() if k in OPTIONS and k in options_of(SPECS[kind])}
    return {**rest, "reward": as_dict(reward_spec(kind, **options))}


# How and where a run runs, not what it computes: never a reason to refuse a finished or resumed run.
HOW = (
    "out",
    "resume",
    "resume_if_any",
    "overwrite",
    "progress",
    "ray_address",
    "overlap_feedback",
    "worker_gpus",
    "merged_policy",
)
# What a resumed run may change besides: its length and bookkeeping, and how its batches are played or critiqued
# (workers and critic actors give the same batch).
RESUMABLE = ("iterations", "eval_every", "checkpoint_every", "workers", "critic_actors")


def relevant(config: dict[str, Any]) -> dict[str, Any]:
    """A run config without what its reward set-up does not use (critic actors serve RELC's critic only)."""
    if upgraded(config).get("reward", {}).get("kind") == "relc":
        return config
    return {k: v for k, v in config.items() if k != "critic_actors"}


def config_changes(
    old: dict[str, Any], new: dict[str, Any], defaults: dict[str, Any] | None = None, ignored: tuple[str, ...] = HOW
) -> list[str]:
    """The settings in which two run configs differ, as ``key (old -> new)`` (a key missing from ``old``: its default).

    Keys in ``ignored`` are skipped; two reward set-ups of different kinds differ in one line,
    ``reward ('sparse' -> 'relc-lexicon')``, and two of one kind in their options (``reward.alpha2 (1.0 -> 0.5)``).
    """
    old, new = upgraded(old), upgraded(new)
    defaults = TrainConfig().to_dict() if defaults is None else defaults
    changed = []
    for key, value in relevant(new).items():
        if key in ignored:
            continue
        before = old.get(key, defaults.get(key))
        if key == "reward" and before.get("kind") != value.get("kind"):
            changed.append(f"reward ({spec_name(from_dict(before))!r} -> {spec_name(from_dict(value))!r})")
        elif isinstance(value, dict) and isinstance(before, dict):
            changed += [f"{key}.{c}" for c in config_changes(before, value, defaults.get(key, {}), ())]
        elif before != value:
            changed.append(f"{key} ({before!r} -> {value!r})")
    return changed


def option_flags(cls: type, prefix: str = "--") -> dict[str, bool]:
    """The command-line flags of a dataclass of options (nested: ``--ppo.lr``), each: whether it takes no value."""
    import typing
    from dataclasses import fields, is_dataclass

    hints = typing.get_type_hints(cls)
    flags: dict[str, bool] = {}
    for f in fields(cls):
        if f.name in ("kind", "reward"):
            continue
        name = f.name.replace("_", "-")
        if is_dataclass(hints[f.name]):
            flags |= option_flags(hints[f.name], f"{prefix}{name}.")
        elif hints[f.name] is bool:
            flags |= {f"{prefix}{name}": True, f"{prefix}no-{name}": True}
        else:
            flags[f"{prefix}{name}"] = False
    return flags


def reward_args(argv: list[str], prog: str, config: type | None = None) -> list[str]:
    """A command line whose reward is written ``--reward FORM``, in tyro's form: the reward subcommand, last.

    ``criticgym train --reward relc-lexicon --alpha2 0.5 --iterations 30`` becomes ``criticgym train --iterations 30
    relc --critic lexicon --alpha2 0.5``: the run's options (those of ``config``, :class:`TrainConfig` by default),
    then the form's kind and the critic it names, then the reward's options, wherever they were written. A line
    without ``--reward`` (the subcommand form) is returned as it is.
    """
    where = [i for i, a in enumerate(argv) if a == "--reward" or a.startswith("--reward=")]
    if not where:
        return argv
    example = f"{prog} --reward relc-lexicon --alpha2 0.5 (forms: {', '.join(FORMS)})"
    i = where[0]
    if len(where) > 1 or (argv[i] == "--reward" and i + 1 == len(argv)):
        raise ConfigError(f"Give the reward once, as --reward FORM with its options: {example}.")
    form = argv[i].partition("=")[2] if "=" in argv[i] else argv[i + 1]
    rest = argv[:i] + argv[i + 1 + ("=" not in argv[i]) :]
    spec = reward_spec(form)  # an unknown form: the error lists every form
    ours = option_flags(config or TrainConfig)
    owners = {flag for cls in SPECS.values() for flag in option_flags(cls)}
    run: list[str] = []
    options: list[str] = []
    j = 0
    while j < len(rest):
        token, name = rest[j], rest[j].split("=")[0]
        if token in SPECS:
            raise ConfigError(
                f"The reward is given twice, as --reward {form} and as the subcommand {token}: {example}."
            )
        width = 1 + (name in owners or (name in ours and not ours[name])) * ("=" not in token)
        (options if name in owners else run).extend(rest[j : j + width])
        j += width
    critic = getattr(spec, "critic", None)
    if critic is not None and "--critic" in (o.split("=")[0] for o in options):
        raise ConfigError(
            f"--reward {form} names the critic {critic}; drop --critic, or write --reward relc --critic ..."
        )
    return [*run, spec.kind, *(["--critic", str(critic)] if critic is not None else []), *options]


def check_reward_last(argv: list[str], prog: str, config: type | None = None) -> None:
    """Refuse, with the command line that works, options written on the wrong side of the reward subcommand.

    The reward set-up's subcommand comes last (``criticgym train --iterations 2 relc --critic lexicon``; what
    ``--reward relc-lexicon`` becomes, :func:`reward_args`): an option of the run after it, or an option of another
    reward, would otherwise end in tyro's list of every option.
    """
    ours = option_flags(config or TrainConfig)
    owners: dict[str, list[str]] = {}  # a flag's reward kinds: --scorer is sparse's and relc's
    for owner, spec in SPECS.items():
        for flag in option_flags(spec):
            owners.setdefault(flag, []).append(owner)
    run, reward, kind, i = [], [], None, 0
    while i < len(argv):
        token, name = argv[i], argv[i].split("=")[0]
        takes_value = name in ours and not ours[name] and "=" not in token
        if kind is None and token in SPECS:
            kind = token
        elif name in ours and token not in ("-h", "--help"):
            run += argv[i : i + 1 + takes_value]
            i += 1 + takes_value
            continue
        elif name in owners and kind is not None and kind not in owners[name]:
            raise ConfigError(
                f"{name} is an option of the {' and '.join(owners[name])} reward, not of {kind} (whose options are "
                f"{', '.join(option_flags(SPECS[kind])) or 'none'}): {prog} ... {owners[name][0]} {name} ..."
            )
        else:
            reward.append(token)
        i += 1
    if kind is not None and argv != run + [kind] + reward:
        raise ConfigError(
            "The reward subcommand comes last, after the run's options, followed by its own options only: "
            f"{prog} {shlex.join(run + [kind] + reward)} (or write it --reward FORM, with its options anywhere)"
        )
