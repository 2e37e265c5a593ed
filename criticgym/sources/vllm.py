"""Batches whose tokens another engine sampled (vLLM), replayed through the vector env token by token.

The env sees exactly what :func:`~criticgym.sources.play` shows it: a reset, then one column of tokens per step, and
it decides the ends and pays the rewards (critics, judges, hindsight vectors: the same wrappers). The learner's
log-probs, values and reference log-probs come from one forward pass over the replayed tokens
(:meth:`~criticgym.rollout.RolloutEngine.replay`), and the sampler's own log-probs travel beside them in
``RolloutBatch.sampler_logprobs``: their gap is the training/inference mismatch an agent can correct for
(``tis_cap``).

Example (needs vLLM: ``make test-vllm``)::

    envs = criticgym.make_vec("criticgym/Words-v0", num_envs=4, model="tiny-vllm", autoreset_mode="disabled")
    source = VLLMRollouts(envs, VLLMSampler("tiny-vllm"))
    batch = source.play(engine, seed=0, sampling=SamplingParams(temperature=0.9))
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from criticgym.errors import ConfigError
from criticgym.rollout import RolloutBatch, RolloutEngine, SamplingParams, left_pad
from criticgym.sources.base import Recorder, check_no_autoreset, reset_prompts, row_seed


def replay(
    engine: RolloutEngine,
    envs: Any,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    sampler_logprobs: Sequence[Sequence[float]] | None = None,
    *,
    sampling: SamplingParams = SamplingParams(),
) -> RolloutBatch:
    """Step ``envs`` (just reset, with ``prompts`` as its observation) through ``completions``, one column a step.

    A row's episode lasts as long as the env says: a completion longer than its episode is cut at the env's end; one
    that stops before the env ends it is an error (the sampler and the env disagree on the stop set or the budget).
    """
    rows, budget = len(completions), envs.unwrapped.max_new_tokens
    recorder = Recorder(envs, rows, budget)
    done = np.zeros(rows, dtype=bool)
    lengths = np.zeros(rows, dtype=np.int64)
    steps = 0
    for t in range(budget):
        short = [r for r in np.flatnonzero(~done) if t >= len(completions[r])]
        if short:
            r = short[0]
            raise ConfigError(
                f"The sampler ended row {r} after {len(completions[r])} tokens, but the env did not end its episode "
                f"there (its EOS tokens {list(envs.unwrapped.eos_token_ids)}, budget {budget}). Sample with the "
                "env's stop tokens and budget."
            )
        column = [completions[r][t] if not done[r] else engine.pad_id for r in range(rows)]
        active = ~done
        ended = recorder.step(t, torch.tensor(column), torch.from_numpy(active))
        lengths += active
        done |= np.asarray(ended, dtype=bool)
        steps = t + 1
        if done.all():
            break
    prompt_ids, prompt_mask = left_pad([list(p) for p in prompts], engine.pad_id, engine.device)
    completion_ids = torch.full((rows, steps), engine.pad_id, dtype=torch.long)
    completion_mask = (torch.arange(steps)[None, :] < torch.from_numpy(lengths)[:, None]).long()
    sampled = torch.zeros((rows, steps), dtype=torch.float32)
    for r, n in enumerate(lengths):
        completion_ids[r, :n] = torch.as_tensor(completions[r][:n])
        if sampler_logprobs is not None:
            sampled[r, :n] = torch.as_tensor(sampler_logprobs[r][:n], dtype=torch.float32)
    batch = engine.replay(
        prompt_ids,
        prompt_mask,
        completion_ids.to(engine.device),
        completion_mask.to(engine.device),
        sampling=sampling,
    )
    return batch._replace(
        rewards=torch.as_tensor(recorder.rewards[:, :steps]),
        infos=recorder.infos,
        env_seconds=recorder.seconds,
        sampler_logprobs=sampled.to(engine.device) if sampler_logprobs is not None else None,
    )


class VLLMRollouts:
    """A rollout source whose tokens vLLM samples, replayed through a vector env in this process (:func:`replay`).

    Each :meth:`play` first syncs the learner's current weights to vLLM (:meth:`VLLMSampler.sync`), then samples
    the env's prompts with the batch's sampling settings, one seed per row (:func:`~criticgym.sources.row_seed`),
    the env's EOS set as stop tokens and its budget. ``perf`` holds the last batch's timings.

    Args:
        envs: a vector env made with ``autoreset_mode="disabled"``.
        sampler: a :class:`~criticgym.rollout.vllm.VLLMSampler` on the policy's model.
    """

    def __init__(self, envs: Any, sampler) -> None:
        check_no_autoreset(envs)
        self.envs, self.sampler = envs, sampler
        self.perf: dict[str, float] = {}

    @property
    def num_envs(self) -> int:
        """Completions per batch."""
        return self.envs.num_envs

    def play(
        self,
        engine: RolloutEngine,
        seed: int,
        sampling: SamplingParams = SamplingParams(),
        options: dict[str, Any] | None = None,
    ) -> RolloutBatch:
        """One batch: sync the weights, reset, sample with vLLM, replay through the env."""
        sync_s = self.sampler.sync(engine.model)
        prompts = reset_prompts(self.envs, seed, options)
        start = time.perf_counter()
        sampled = self.sampler.sample(
            prompts,
            self.envs.unwrapped.max_new_tokens,
            seeds=[row_seed(seed, r) for r in range(len(prompts))],
            stop_ids=self.envs.unwrapped.eos_token_ids,
            sampling=sampling,
        )
        sample_s = time.perf_counter() - start
        batch = replay(engine, self.envs, prompts, sampled.tokens, sampled.logprobs, sampling=sampling)
        self.perf = {"perf/weight_sync_s": sync_s, "perf/vllm_sample_s": sample_s}
        return batch

    def close(self) -> None:
        """Close the env (its reward wrappers stop their threads)."""
        self.envs.close()
