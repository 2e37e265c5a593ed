"""Direct and distilled RLAIF with REINFORCE on SentimentControl (Lee et al. 2023; PAPERS.md section 2).

1. **Direct RLAIF**: REINFORCE with a value baseline (temperature 0.9, KL 0.05 to the initial policy, as RLAIF)
   on ``reward="rlaif-direct"``. The default judge, ``label:smollm2-135m``, reads the log-probability gap of
   " positive" over " negative" after a completion-style question (a question a 135M model can answer); a plain
   model name asks the chat judge for a 0-9 rating instead.
2. **Distilled RLAIF**: the same judge labels pairs of completions (soft labels: the sigmoid of the gap
   difference; a chat judge is asked in both orders), a reward model trains on them, and REINFORCE trains on the
   reward model through the sparse reward wrapper.

Both runs report the task's held-out score (the sentiment classifier) before and after, so they compare with
``criticgym train`` runs on other rewards.

    python examples/rlaif_reinforce.py                                   # smollm2-135m as policy and judge
    python examples/rlaif_reinforce.py --judge smollm2-135m              # the chat judge (rates 0-9, "1" or "2")
    python examples/rlaif_reinforce.py --label-judge lexicon             # distil a lexicon judge instead
    python examples/rlaif_reinforce.py --policy tiny --judge label:tiny --iterations 1 --pairs 8   # a smoke run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from criticgym.algos.reinforce import ReinforceConfig
from criticgym.critics.judge import make_judge
from criticgym.distill.fit import train_reward_model
from criticgym.distill.pairs import label_pairs, write_jsonl
from criticgym.envs import get_task
from criticgym.rewards import DEFAULT_MODEL, RewardSpec, RlaifDirect, Sparse
from criticgym.train import TrainConfig, train

ENV = "criticgym/SentimentControl-v0"


def reinforce(args, out: Path, reward: RewardSpec) -> dict:
    """Train REINFORCE (value baseline) on a reward set-up; held-out task score before and after."""
    cfg = TrainConfig(
        env=ENV,
        agent="reinforce",
        model=args.policy,
        iterations=args.iterations,
        num_envs=args.num_envs,
        reinforce=ReinforceConfig(lr=args.lr),
        eval_every=0,
        eval_prompts=args.eval_prompts,
        out=str(out),
        progress=not args.quiet,
        reward=reward,
    )
    result = train(cfg)
    first, last = result["evals"][0], result["evals"][-1]
    return {"score_before": first["eval/score"], "score_after": last["eval/score"], "out": str(out)}


def main(argv: list[str] | None = None) -> dict:
    """Run direct RLAIF, then label, distil and train on the reward model; returns the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default=DEFAULT_MODEL)
    parser.add_argument("--judge", default=f"label:{DEFAULT_MODEL}", help="the judge (direct and pairwise)")
    parser.add_argument("--label-judge", default=None, help="the pairwise judge for distillation (--judge)")
    parser.add_argument("--pairs", type=int, default=128, help="preference pairs to label")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--eval-prompts", type=int, default=32)
    parser.add_argument("--out", default="runs/rlaif")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)

    direct = reinforce(args, out / "direct", RlaifDirect(judge_model=args.judge))

    task = get_task("sentiment")
    judge = make_judge(args.label_judge or args.judge, task.preamble, label_words=task.label_words)
    records = label_pairs(ENV, args.policy, judge, prompts=args.pairs, temperature=1.0)
    write_jsonl(out / "prefs.jsonl", records)
    model, metrics = train_reward_model(records, "minilm")
    model.save(out / "reward-model")
    distilled = reinforce(args, out / "distilled", Sparse(scorer=str(out / "reward-model")))

    summary = {"direct": direct, "distilled": distilled, "reward_model": metrics}
    summary["reward_model"].pop("loss_curve")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
