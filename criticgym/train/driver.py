"""The training driver behind ``criticgym train`` and ``criticgym demo``.

It builds the env, the policy and the agent from a :class:`TrainConfig`, then loops: one agent iteration, a CSV
row of metrics, a progress bar with live reward and KL, an evaluation on held-out prompts every ``eval_every``
iterations, and an atomic checkpoint every ``checkpoint_every``; metrics also go to TensorBoard
(``out/tensorboard``) when the ``tensorboard`` package is installed. ``resume=True`` continues from the last
checkpoint exactly as an uninterrupted run would (agents draw every random number from the seed and the
iteration). At the end it writes ``curves.png`` (reward and KL), ``samples.md`` and ``policy/``, the trained policy as
a Hugging Face folder (:mod:`criticgym.train.export`).

    criticgym train --env criticgym/SentimentControl-v0 --agent ppo --model smollm2-135m --iterations 30 \
        --out runs/sentiment --reward relc-lexicon
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from criticgym import flops
from criticgym.errors import ConfigError, Interrupted
from criticgym.rewards import unnamed as unnamed_objects
from criticgym.train.build import (
    build_agent,
    build_evaluator,
    build_policy,
    check_model,
    critic_pool,
    frozen_copy,
    initial_policy,
    rollout_source,
)
from criticgym.train.config import (
    HOW,
    RESUMABLE,
    TrainConfig,
    check_agent_options,
    check_reward_last,
    config_changes,
    reward_args,
)
from criticgym.train.export import save_policy
from criticgym.train.report import append_csv, plot_curves, tensorboard, write_csv, write_samples
from criticgym.utils.files import load_checkpoint, save_atomically
from criticgym.utils.options import parsed
from criticgym.utils.runfolder import refuse_other_settings, run_folder


def resume_state(cfg: TrainConfig) -> dict[str, Any] | None:
    """The checkpoint a run continues from (None: a new run), checked against the run's settings.

    ``resume`` needs a checkpoint in ``out``; ``resume_if_any`` takes one when it is there. Either way the checkpoint's
    run must have the same settings as ``cfg`` in everything that changes its numbers (it may run longer).
    """
    checkpoint = Path(cfg.out) / "checkpoint.pt"
    if not (cfg.resume or cfg.resume_if_any):
        return None
    if not checkpoint.exists():
        if cfg.resume_if_any:
            return None
        raise ConfigError(
            f"--resume: there is no run to resume in {cfg.out} (no checkpoint.pt). Drop --resume to start one there, "
            "or use --resume-if-any to continue a run when there is one and start it otherwise."
        )
    state = load_checkpoint(checkpoint, ("agent", "history", "evals"), START_OVER)
    saved = state.get("config")
    if saved is None and (checkpoint.parent / "config.json").exists():  # written before checkpoints held it
        saved = json.loads((checkpoint.parent / "config.json").read_text())
    unnamed = unnamed_objects(cfg.reward)
    if unnamed:
        raise ConfigError(
            f"{cfg.out}: cannot resume with a reward set-up holding objects criticgym cannot name: "
            f"{', '.join(unnamed)}; it could not check that they are those the run started with. Use a function, "
            "class or instance defined at the top of a module, or register it by name "
            "(criticgym.registration.register_critic / register_judge / register_scorer)."
        )
    refuse_other_settings(
        f"The run in {cfg.out}",
        config_changes(saved or {}, cfg.to_dict(), ignored=HOW + RESUMABLE),
        "Resuming would continue it under settings it did not start with. Give this run another --out, or start "
        f"it over in {cfg.out} with --overwrite instead of --resume.",
    )
    return state


START_OVER = "Start the run over with --overwrite (it deletes the folder's run), or give this run another --out."


def train(cfg: TrainConfig, log=print) -> dict[str, Any]:
    """Run (or resume) a training run; returns ``{"history", "evals", "out"}``.

    The run holds its folder (:func:`~criticgym.utils.runfolder.run_folder`): a folder that holds a run is continued
    only with ``resume`` or ``resume_if_any``, replaced only with ``overwrite``, and never written by two processes.
    """
    resuming = cfg.resume or cfg.resume_if_any
    check_model(cfg)  # from the model's config: before the folder is taken
    with run_folder(cfg.out, resume=resuming, overwrite=cfg.overwrite, resume_hint="continue it with --resume"):
        return _train(cfg, log)


def _train(cfg: TrainConfig, log) -> dict[str, Any]:
    from tqdm.auto import tqdm

    out, checkpoint = Path(cfg.out), Path(cfg.out) / "checkpoint.pt"
    state = resume_state(cfg)  # before anything is built: a run that cannot resume fails at once
    model, tokenizer = build_policy(cfg)
    policy = initial_policy(model, tokenizer)  # what label:self judges with
    pool = critic_pool(cfg)
    shared = {"critic": pool} if pool is not None else {}  # what every env gets besides env_kwargs(cfg)
    source = rollout_source(cfg, {**shared, "policy": policy})
    agent = build_agent(cfg, model, tokenizer, source)
    reference = agent.ref_model if agent.ref_model is not None else frozen_copy(model)  # perplexity's model
    evaluate = build_evaluator(cfg, tokenizer, reference, policy, pool)
    history, evals = ([], []) if state is None else (state["history"], state["evals"])
    if state is not None:
        agent.load_state_dict(state["agent"])
        log(f"Resumed from {checkpoint} at iteration {agent.iteration}.")
    else:
        log(f"Evaluating the initial policy on {cfg.eval_prompts} held-out prompts ...")
        with agent.autocast():
            evals.append(evaluate(model, 0))
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    write_csv(out / "metrics.csv", history)

    board = tensorboard(out)
    where = {"iteration": agent.iteration, "saved": agent.iteration if state is not None else 0}
    try:
        _loop(cfg, agent, evaluate, model, history, evals, board, checkpoint, tqdm, where)
    except KeyboardInterrupt:
        raise Interrupted(interrupted_message(cfg, where["iteration"], where["saved"])) from None
    for closes in (board, source, pool):  # the env stops its feedback thread; workers stop
        if closes is not None:
            closes.close()
    save_policy(model, tokenizer, out, merged=cfg.merged_policy)  # out/policy: from_pretrained takes it
    write_samples(out / "samples.md", evals)
    adaptive = getattr(agent.config, "adaptive_kl", False)
    plot_curves(history, evals, out / "curves.png", agent.config.kl_target if adaptive else None)
    return {"history": history, "evals": evals, "out": out}


def interrupted_message(cfg: TrainConfig, iteration: int, saved_at: int) -> str:
    """What Ctrl-C says: where the run stopped, what its checkpoint holds, and how to continue."""
    again = "the same command" if cfg.resume or cfg.resume_if_any else "the same command with --resume"
    if not saved_at:
        return (
            f"interrupted at iteration {iteration} of {cfg.iterations}, before the first checkpoint; nothing to "
            f"continue in {cfg.out}: run it again with --overwrite."
        )
    return (
        f"interrupted at iteration {iteration} of {cfg.iterations}; {cfg.out}/checkpoint.pt holds iteration "
        f"{saved_at}, and {again} continues from there exactly as an uninterrupted run would."
    )


def _loop(cfg, agent, evaluate, model, history, evals, board, checkpoint, tqdm, where: dict[str, int]) -> None:
    """The iterations from ``agent.iteration`` on; ``where`` follows the running iteration and the last checkpoint."""
    bar = tqdm(range(agent.iteration, cfg.iterations), disable=not cfg.progress, desc="train", unit="it")
    for _ in bar:
        where["iteration"] = agent.iteration + 1
        metrics = iterate(agent)
        history.append(metrics)
        append_csv(checkpoint.parent / "metrics.csv", metrics)
        if board is not None:
            for key, value in metrics.items():
                board.add_scalar(key, value, metrics["iteration"])
        bar.set_postfix(reward=f"{metrics['charts/episodic_return']:+.3f}", kl=f"{metrics['charts/kl']:.2f}")
        done = agent.iteration == cfg.iterations
        if done or (cfg.eval_every and agent.iteration % cfg.eval_every == 0):
            with agent.autocast():
                evals.append(evaluate(model, agent.iteration))
        if done or agent.iteration % cfg.checkpoint_every == 0:
            saved = {"agent": agent.state_dict(), "history": history, "evals": evals, "config": cfg.to_dict()}
            save_atomically(saved, checkpoint)
            where["saved"] = agent.iteration


def iterate(agent) -> dict[str, float]:
    """One agent iteration and its metrics, with the FLOPs it spent on the policy and on the reward."""
    flops.take()  # what set-up and evaluation spent is not training compute
    with flops.phase("policy"):
        metrics = {"iteration": agent.iteration + 1, **agent.iterate()}
    spent = flops.take()
    return metrics | {"perf/policy_flops": spent.get("policy", 0.0), "perf/reward_flops": spent.get("reward", 0.0)}


def config_from_args(argv: list[str] | None = None, default: TrainConfig | None = None, prog: str = "criticgym train"):
    """Parse ``criticgym train`` options into a :class:`TrainConfig` (``default``: the values options start from)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = reward_args(argv, prog)  # --reward FORM and its options, anywhere: tyro's subcommand, last
    check_reward_last(argv, prog)
    cfg = parsed(TrainConfig, argv, prog, default=default, description="Train a policy on a criticgym env.")
    check_agent_options(cfg, argv)
    return cfg
