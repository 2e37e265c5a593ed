"""Held-out evaluation of a policy on a task's test split (``criticgym eval``, and every ``eval_every`` in training).

The numbers compare across runs whatever they trained on: ``eval/score`` is the task's own scorer, and the task's
held-out judge (:attr:`~criticgym.envs.TaskSpec.judges`, never the training scorer when the task has another) gives
its rate, e.g. ``eval/percent_positive_vader``. Perplexity is that of the samples under the reference model (the
initial policy in training).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import criticgym


class Evaluator:
    """Samples ``prompts`` held-out completions (top-p 0.9, a fixed seed: the same prompts every time) and scores them.

    Args:
        env_id: a registered criticgym id.
        tokenizer: the policy's tokenizer.
        ref_model: the model perplexity is measured under (None: no perplexity).
        prompts: held-out prompts per evaluation.
        training_scorer: the scorer the policy trains on (the held-out judge differs from it where it can).
        **env_kwargs: the env's options (reward set-up, ``max_new_tokens``, ...), as in training.
    """

    def __init__(
        self, env_id: str, tokenizer, ref_model=None, prompts: int = 32, training_scorer=None, **env_kwargs: Any
    ) -> None:
        from criticgym.critics import as_scorer

        env_kwargs = {"autoreset_mode": "disabled", **env_kwargs, "split": "test"}
        self.envs = criticgym.make_vec(env_id, num_envs=prompts, **env_kwargs)
        self.tokenizer, self.ref_model = tokenizer, ref_model
        task = self.envs.unwrapped.episodes.task
        self.scorer = as_scorer(task.scorer)
        self.judge_name = task.held_out_judge(training_scorer if isinstance(training_scorer, str) else None)
        self.judge = as_scorer(self.judge_name) if self.judge_name is not None else None
        self.rate = task.rate

    @torch.no_grad()
    def __call__(self, model, iteration: int = 0) -> dict[str, Any]:
        """Evaluate ``model``: ``eval/*`` metrics, the iteration, each prompt's score and the first 8 samples."""
        from criticgym.algos.base import token_rewards
        from criticgym.critics.scorers import score_texts
        from criticgym.rollout import RolloutEngine, SamplingParams
        from criticgym.sources import play

        engine = RolloutEngine(model, self.tokenizer, ref_model=self.ref_model)
        batch = play(engine, self.envs, seed=12345, sampling=SamplingParams(top_p=0.9))  # the table's "top-p 0.9"

        prompts = [info["prompt"] for info in batch.infos]
        completions = [info["completion"] for info in batch.infos]
        returns = token_rewards(batch).sum(1)
        mask = batch.completion_mask.float()
        references = [info.get("reference") for info in batch.infos]
        ids = [info["completion_ids"] for info in batch.infos]
        references = None if None in references else references
        scores = score_texts(self.scorer, prompts, completions, references, ids)
        result: dict[str, Any] = {
            "iteration": iteration,
            "prompts": len(prompts),
            "eval/reward": float(returns.mean()),
            "eval/score": float(np.mean(scores)),
        }
        if batch.ref_logprobs is not None:
            nll = -(batch.ref_logprobs * mask).sum() / mask.sum().clamp(min=1)
            result["eval/perplexity"] = float(torch.exp(nll))
        result["eval/distinct_1"] = distinct_n(completions, 1)
        result["eval/distinct_2"] = distinct_n(completions, 2)
        if self.judge is not None and self.rate is not None:
            judged = score_texts(self.judge, prompts, completions, references, ids)
            result[f"eval/percent_{self.rate.name}_{self.judge_name}"] = self.rate(judged)
        result["scores"] = [float(s) for s in scores]  # each prompt's, for what a comparison can resolve
        result["samples"] = [
            {"prompt": p, "completion": c, "reward": float(r)}
            for p, c, r in zip(prompts, completions, returns, strict=True)
        ][:8]
        return result


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the texts' words (0 when there are none)."""
    grams = [tuple(words[i : i + n]) for t in texts for words in [t.split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0
