"""A critic-bound rollout, scaled out: the inline critic against the overlapped critic and Ray critic pools.

One RELC batch (SentimentControl, ``--num-envs`` completions of up to ``--max-new-tokens`` tokens, temperature 1,
the same seed every time) is played by the same policy with the same critic in each arm; only where the critic
runs changes:

- ``inline``: in the env's process, on the step the episodes end (generation waits);
- ``overlap``: in a background thread while the other episodes generate (``overlap_feedback=True``);
- ``pool-1``, ``pool-2``: a :class:`~criticgym.distributed.pool.CriticPool` of 1 or 2 Ray actors (generation waits
  while the actors critique their parts of the call);
- ``pool-2+overlap``: both.

Two critics, each measured in all arms of one run (ratios against ``inline`` in that run):

- ``llm-tiny``: the LLM critic (packaged sentiment template, up to 96 answer tokens) on ``tiny``: compute-bound,
  on the same cores as the policy;
- ``server``: a stand-in for a critic behind a server on other hardware (vLLM on a GPU): each call waits
  ``--latency`` seconds plus ``--per-item`` seconds per completion (a sleep: no local compute), then returns the
  lexicon critic's spans.

Every arm reaches the same rewards (checked: the inline run's returns are the reference). Also measured: the
policy alone (sparse reward: the generation time the overlap can hide) and each critic's time for the whole batch
in one call, the two numbers that decide how many critic actors a rollout worker needs (docs/SCALING.md).

    python benchmarks/bench_scaleout.py --out benchmarks/results/scaleout_cpu.md
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from criticgym.critics import LexiconCritic, LLMCritic, LocalBackend
from criticgym.envs import TextGenVectorEnv
from criticgym.rollout import RolloutEngine, SamplingParams, load_policy
from criticgym.sources import play
from criticgym.wrappers import RewardMixVector, SparseExtrinsicRewardVector

ARMS = ("inline", "overlap", "pool-1", "pool-2", "pool-2+overlap")


class ServerCritic:
    """The lexicon critic behind a fixed latency: what a remote server's answer costs this machine (a wait)."""

    def __init__(self, latency: float, per_item: float) -> None:
        self.latency, self.per_item, self.lexicon = latency, per_item, LexiconCritic()

    def critique(self, prompts, completions, extrinsic=None):
        time.sleep(self.latency + self.per_item * len(completions))
        return self.lexicon.critique(prompts, completions, extrinsic)


def build_critic(name: str, args) -> object:
    if name == "server":
        return ServerCritic(args.latency, args.per_item)
    return LLMCritic(LocalBackend("tiny", batch_size=32), template="sentiment")


class Counted:
    """Counts a critic's calls (in this process)."""

    def __init__(self, critic) -> None:
        self.critic, self.calls = critic, 0

    def critique(self, prompts, completions, extrinsic=None):
        self.calls += 1
        return self.critic.critique(prompts, completions, extrinsic)


def play_once(engine, tokenizer, critic, args, overlap: bool, reward: str = "relc"):
    """One batch, a fresh env (no critique cache carried over); returns (seconds, batch)."""
    base = TextGenVectorEnv(
        args.num_envs, "sentiment", model=tokenizer, max_new_tokens=args.max_new_tokens, autoreset_mode="disabled"
    )
    if reward == "sparse":
        envs = SparseExtrinsicRewardVector(base, "vader")
    else:
        envs = RewardMixVector(base, "vader", critic, cache_size=0, overlap=overlap)
    start = time.perf_counter()
    batch = play(engine, envs, seed=args.seed, sampling=SamplingParams(temperature=1.0))
    seconds = time.perf_counter() - start
    envs.close()
    return seconds, batch


def best(repeats: int, *args, **kwargs):
    """The fastest of ``repeats`` :func:`play_once` calls."""
    return min((play_once(*args, **kwargs) for _ in range(repeats)), key=lambda r: r[0])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="smollm2-135m")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--critics", default="server,llm-tiny")
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--per-item", type=float, default=0.02)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    from criticgym.distributed.actors import init_ray
    from criticgym.distributed.pool import CriticPool

    init_ray()
    model, tokenizer = load_policy(args.policy)
    engine = RolloutEngine(model, tokenizer)
    play_once(engine, tokenizer, None, args, False, reward="sparse")  # warm-up
    alone, batch = best(args.repeats, engine, tokenizer, None, args, False, reward="sparse")
    lengths = batch.completion_mask.sum(1)
    results = {
        "command": "python benchmarks/bench_scaleout.py " + " ".join(argv if argv is not None else []),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU",
        "args": {k: str(v) for k, v in vars(args).items()},
        "policy_alone_s": alone,
        "completion_tokens": int(lengths.sum()),
        "distinct_end_steps": len(set(lengths.tolist())),
        "critics": {},
    }
    print(json.dumps({k: v for k, v in results.items() if k != "critics"}), flush=True)
    texts = tokenizer.batch_decode(batch.completion_ids, skip_special_tokens=True)
    for name in args.critics.split(","):
        whole = build_critic(name, args)
        whole.critique([""] * len(texts), texts)  # warm-up
        start = time.perf_counter()
        whole.critique([""] * len(texts), texts)
        rows = {"whole_batch_call_s": time.perf_counter() - start, "arms": {}}
        pools = {n: CriticPool(lambda name=name: build_critic(name, args), actors=n) for n in (1, 2)}
        for pool in pools.values():
            pool.critique([""] * 2, texts[:2])  # start the actors and load their critics
        reference = None
        for arm in ARMS:
            critic = Counted(pools[int(arm[5])] if arm.startswith("pool") else whole)
            overlap = arm.endswith("overlap")
            seconds, played = best(args.repeats, engine, tokenizer, critic, args, overlap)
            returns = played.rewards.sum(1)
            reference = returns if reference is None else reference
            rows["arms"][arm] = {
                "seconds": seconds,
                "critic_calls": critic.calls // args.repeats,
                "same_returns": bool(torch.allclose(returns, reference, atol=1e-5)),
            }
            print(name, arm, json.dumps(rows["arms"][arm]), flush=True)
        for pool in pools.values():
            pool.close()
        results["critics"][name] = rows
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report(results))
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    return results


def report(results: dict) -> str:
    a = results["args"]
    lines = [
        "# A critic-bound rollout, scaled out",
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {results['machine']}.",
        "",
        f"One batch: policy `{a['policy']}`, {a['num_envs']} completions of up to {a['max_new_tokens']} tokens on "
        f"SentimentControl (temperature 1, seed {a['seed']}; {results['completion_tokens']} tokens, episodes ending "
        f"on {results['distinct_end_steps']} different steps), RELC with the critic below and VADER as the score; "
        f"best of {a['repeats']}. The policy alone (sparse reward) takes {results['policy_alone_s']:.2f} s: the "
        "most that overlapping can hide.",
        "",
        "| critic | whole batch in one call | arm | seconds per batch | vs inline | critic calls | same returns |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for name, rows in results["critics"].items():
        inline = rows["arms"]["inline"]["seconds"]
        for arm, r in rows["arms"].items():
            lines.append(
                f"| {name} | {rows['whole_batch_call_s']:.2f} s | {arm} | {r['seconds']:.2f} | "
                f"{inline / r['seconds']:.2f}x | {r['critic_calls']} | {'yes' if r['same_returns'] else 'NO'} |"
            )
    lines += [
        "",
        f"`server`: each call sleeps {a['latency']} s + {a['per_item']} s per completion, then the lexicon critic "
        "answers (a remote critic's cost to this machine is waiting). `llm-tiny`: the LLM critic on `tiny`, "
        "computing on the same cores as the policy. Critic calls: how many calls one batch made (pool calls are "
        "split across the actors).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
