"""The ``criticgym`` command line.

criticgym demo [--model smollm2-135m] [--env criticgym/SentimentControl-v0] [--num-envs 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time


def demo(args: argparse.Namespace) -> int:
    """Sample completions through the engine and the vector env, and show their rewards."""
    import criticgym
    from criticgym.rollout import RolloutEngine, load_policy

    print(f"Loading {args.model} (the first run converts it once and caches it) ...", flush=True)
    model, tokenizer = load_policy(args.model, device=args.device)
    engine = RolloutEngine(model, tokenizer)
    envs = criticgym.make_vec(args.env, num_envs=args.num_envs, model=args.model, autoreset_mode="disabled")
    print(f"Scoring with the {args.env} default reward (the first run trains and caches a classifier) ...", flush=True)
    start = time.perf_counter()
    batch = engine.rollout(envs, seed=args.seed, temperature=args.temperature, top_p=0.9)
    seconds = time.perf_counter() - start
    tokens = int(batch.completion_mask.sum())
    print(f"\n{args.num_envs} completions, {tokens} tokens in {seconds:.1f} s ({tokens / seconds:.0f} tokens/s)\n")
    for info in batch.infos:
        print(f"[{info['extrinsic_reward']:+.3f}] {info['prompt']}\033[1m{info['completion']}\033[0m")
    rewards = batch.rewards.sum(dim=1)
    print(f"\nmean reward {rewards.mean():+.3f} (min {rewards.min():+.3f}, max {rewards.max():+.3f})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``criticgym`` command."""
    parser = argparse.ArgumentParser(prog="criticgym", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="sample completions with the engine and score them")
    p.add_argument("--model", default="smollm2-135m", help="built-in name, local folder or hub id")
    p.add_argument("--env", default="criticgym/SentimentControl-v0", help="a registered criticgym id")
    p.add_argument("--num-envs", type=int, default=8, help="completions sampled at once")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.set_defaults(func=demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
