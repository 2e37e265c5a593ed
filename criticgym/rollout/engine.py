"""Batched, KV-cached sampling from a causal language model.

The engine knows nothing of envs or rewards. It turns a batch of prompts into a :class:`RolloutBatch` of
completions with the log-probabilities of the sampled tokens (and, on request, value-head values and
reference-model log-probabilities): :meth:`RolloutEngine.generate` from texts, :meth:`RolloutEngine.run` from
token arrays with a per-step hook that decides when rows end. :func:`criticgym.sources.play` drives a criticgym
vector env through that hook and adds the env's rewards and infos to the batch.

Example:
    >>> from criticgym.rollout import RolloutEngine, load_policy
    >>> model, tokenizer = load_policy("tiny")
    >>> engine = RolloutEngine(model, tokenizer)
    >>> batch = engine.generate(["The movie was", "I think"], max_new_tokens=5, seed=0)
    >>> tuple(batch.completion_ids.shape), tuple(batch.logprobs.shape)
    ((2, 5), (2, 5))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from criticgym.errors import ConfigError, PromptTooLongError
from criticgym.rollout.decoder import Decoder, DecodeState, choose_forward, left_pad
from criticgym.rollout.llama import expects_forward
from criticgym.rollout.models import eos_token_ids
from criticgym.rollout.sampling import SamplingParams, filter_logits, row_uniforms, sample_next

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class RolloutBatch(NamedTuple):
    """One batch of completions. Padding: prompts on the left, completions on the right."""

    prompt_ids: torch.Tensor  # (B, P) long, left-padded with the pad id
    prompt_mask: torch.Tensor  # (B, P) long, 1 on prompt tokens
    completion_ids: torch.Tensor  # (B, T) long, right-padded with the pad id
    completion_mask: torch.Tensor  # (B, T) long, 1 on generated tokens (a final EOS included)
    logprobs: torch.Tensor  # (B, T) float32, log p(token) under the sampling distribution (0 on padding)
    values: torch.Tensor | None = None  # (B, T) float32, value-head output for the state before each token
    ref_logprobs: torch.Tensor | None = None  # (B, T) float32, the same tokens under the reference model
    # Filled by whoever drives an env (criticgym.sources.play), None from the engine alone:
    rewards: torch.Tensor | None = None  # (B, T) float32, env reward of each step
    infos: list[dict[str, Any]] | None = None  # per row, the env's info at that episode's last step
    env_seconds: float = 0.0  # wall time spent inside envs.step (env bookkeeping and reward wrappers)
    # Filled when another engine sampled the tokens (vLLM): the log-probs it reported; ``logprobs`` are then the
    # learner's own, re-scored (:meth:`RolloutEngine.replay`)
    sampler_logprobs: torch.Tensor | None = None  # (B, T) float32

    @property
    def lengths(self) -> torch.Tensor:
        """Number of generated tokens per row, shape (B,)."""
        return self.completion_mask.sum(dim=1)

    def to(self, device: str | torch.device) -> RolloutBatch:
        """A copy with every tensor on ``device``."""
        return RolloutBatch(*(v.to(device) if isinstance(v, torch.Tensor) else v for v in self))


def join_batches(batches: Sequence[RolloutBatch], pad_id: int) -> RolloutBatch:
    """One batch of the rows of ``batches``, in order: prompts re-padded on the left, completions on the right.

    Fields that are None in the batches stay None; ``env_seconds`` is the longest (the parts ran side by side).
    """
    if not batches:
        raise ConfigError("join_batches() needs at least one batch.")
    width = max(b.prompt_ids.size(1) for b in batches)
    steps = max(b.completion_ids.size(1) for b in batches)

    def cat(field: str, value: float, left: bool = False) -> torch.Tensor | None:
        parts = [getattr(b, field) for b in batches]
        if any(p is None for p in parts):
            return None
        size = width if left else steps
        pad = [(size - p.size(1), 0) if left else (0, size - p.size(1)) for p in parts]
        return torch.cat([torch.nn.functional.pad(p, w, value=value) for p, w in zip(parts, pad, strict=True)])

    infos = None if any(b.infos is None for b in batches) else [i for b in batches for i in b.infos]
    return RolloutBatch(
        prompt_ids=cat("prompt_ids", pad_id, left=True),
        prompt_mask=cat("prompt_mask", 0, left=True),
        completion_ids=cat("completion_ids", pad_id),
        completion_mask=cat("completion_mask", 0),
        logprobs=cat("logprobs", 0.0),
        values=cat("values", 0.0),
        ref_logprobs=cat("ref_logprobs", 0.0),
        rewards=cat("rewards", 0.0),
        infos=infos,
        env_seconds=max(b.env_seconds for b in batches),
    )


StepHook = Callable[[int, torch.Tensor, torch.Tensor], Any]
"""``on_step(t, tokens, active) -> ended``: column t's tokens (B,), the rows still running before it (B,) bool,
and the rows that end with it (B,) bool (array-like)."""


def score_completions(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    sampling: SamplingParams = SamplingParams(),
    return_hidden: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities of the completion tokens in one forward pass over whole sequences.

    Vocabulary logits are computed only at the T positions that predict completion tokens, not at every prompt
    position. They are those of the distribution ``sampling`` draws from: tempered (``scoring_temperature``) and,
    with its ``top_k`` / ``top_p``, filtered (the scored token always kept), so that a policy-gradient ratio
    compares like with like.

    Returns:
        ``(logprobs, hidden)``: (B, T) float32 log-probs, zero where ``completion_mask`` is 0, and, when
        ``return_hidden``, the last hidden state (B, T, H) of the position that predicted each token (else None).
    """
    steps = completion_ids.size(1)
    if steps == 0:
        empty = completion_ids.new_zeros((completion_ids.size(0), 0), dtype=torch.float32)
        return empty, (empty.new_zeros((*empty.shape, model.config.hidden_size)) if return_hidden else None)
    # Position i predicts token i + 1: completion token j is predicted at P - 1 + j. The final token predicts
    # nothing scored, so it is not fed: the last T positions of the rest are exactly the T predicting positions
    # (causal attention: dropping a later token changes no earlier position).
    ids = torch.cat([prompt_ids, completion_ids[:, :-1]], dim=1)  # (B, P + T - 1)
    mask = torch.cat([prompt_mask, completion_mask[:, :-1]], dim=1)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    fast = None if expects_forward(model) else choose_forward(model, "auto")
    if fast is not None and not torch.is_grad_enabled():  # no gradients wanted: the packed path, as in decoding
        fast.refresh()
        logits, last_hidden = fast(ids, mask, positions, fast.new_cache(ids.size(0), ids.size(1)), steps)
        hidden_states = (last_hidden,)
    elif fast is not None:  # an update: frozen layers packed and kept per sequence, the rest with autograd
        logits, last_hidden = fast.train_forward(ids, mask, positions, steps)
        hidden_states = (last_hidden,)
    else:
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            logits_to_keep=steps,
            output_hidden_states=return_hidden,
            use_cache=False,
        )
        logits, hidden_states = out.logits, out.hidden_states
    logits = logits.float()  # (B, T, V)
    if sampling.scoring_temperature != 1.0:
        logits = logits / sampling.scoring_temperature
    if sampling.top_k or sampling.top_p < 1.0:
        with torch.no_grad():
            dropped = filter_logits(logits.detach(), sampling.top_k, sampling.top_p, keep=completion_ids).isinf()
        logits = logits.masked_fill(dropped, float("-inf"))
    logprobs = torch.gather(logits.log_softmax(dim=-1), 2, completion_ids.unsqueeze(-1)).squeeze(-1)
    hidden = hidden_states[-1][:, -steps:] if return_hidden else None
    return logprobs * completion_mask, hidden


def sequence_logprobs(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    sampling: SamplingParams = SamplingParams(),
) -> torch.Tensor:
    """Log-probabilities of the completion tokens, (B, T), in one forward pass (see :func:`score_completions`)."""
    return score_completions(model, prompt_ids, prompt_mask, completion_ids, completion_mask, sampling)[0]


class RolloutEngine:
    """Batched KV-cached sampler over a transformers causal LM.

    Args:
        model: the policy, any ``AutoModelForCausalLM``.
        tokenizer: its tokenizer (prompts given as text are encoded with it).
        ref_model: optional frozen reference model; when given, batches carry ``ref_logprobs``.
        value_head: optional module mapping the last hidden state (..., H) to values (..., 1); when given,
            batches carry ``values``.
        device: where generation runs; the model's device when not given.
        share_prefill: prefill identical prompts once and repeat their cache (False: prefill every row).
        path: the decoder's forward: ``"auto"`` (the fast Llama path where the model allows it, else
            transformers'), ``"fast"`` or ``"hf"`` (see :class:`~criticgym.rollout.decoder.Decoder`).
        compile: compile the fast path's one-token step (static shapes; CUDA graphs on CUDA).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        ref_model: PreTrainedModel | None = None,
        value_head: torch.nn.Module | None = None,
        device: str | torch.device | None = None,
        share_prefill: bool = True,
        path: str = "auto",
        compile: bool | str = False,
    ) -> None:
        self.model = model
        self.share_prefill = share_prefill
        self.tokenizer = tokenizer
        self.ref_model = ref_model
        self.value_head = value_head
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = torch.as_tensor(eos_token_ids(tokenizer, model.generation_config), device=self.device)
        self.decoder = Decoder(model, self.pad_id, hidden=value_head is not None, path=path, compile=compile)
        self.context = getattr(model.config, "max_position_embeddings", None)

    # -- public API --------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        *,
        max_new_tokens: int = 20,
        sampling: SamplingParams = SamplingParams(),
        seed: int | Sequence[int] | None = None,
        stop_ids: Sequence[int] = (),
    ) -> RolloutBatch:
        """Sample one completion per prompt; each row stops at EOS or after ``max_new_tokens`` tokens.

        Args:
            prompts: texts (encoded with the tokenizer, no special tokens added) or token-id lists.
            max_new_tokens: token budget per completion.
            sampling: how tokens are drawn (temperature, top-k, top-p, greedy, min_new_tokens).
            seed: seeds the sampler; the same seed gives the same completions. One seed per prompt gives each
                row a random stream of its own: a row's completion then does not depend on the other rows.
            stop_ids: more tokens that end a row, kept in its completion (e.g. the last word of a judgement).

        The batch's ``logprobs`` are those of the distribution each token was drawn from: tempered, filtered by
        top-k and top-p, and renormalized (:func:`score_completions` with the same settings gives them again).
        """
        if not len(prompts):
            raise ConfigError("generate() needs at least one prompt.")
        if isinstance(prompts[0], str):
            encoded = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        else:
            encoded = [list(p) for p in prompts]
        prompt_ids, prompt_mask = left_pad(encoded, self.pad_id, self.device)
        return self.run(
            prompt_ids,
            prompt_mask,
            max_new_tokens,
            sampling=sampling,
            seed=seed,
            eos_ids=[*self.eos_ids.tolist(), *stop_ids] if stop_ids else None,
        )

    def score(
        self, batch: RolloutBatch, model: PreTrainedModel | None = None, sampling: SamplingParams = SamplingParams()
    ) -> torch.Tensor:
        """Re-score a batch's completions under ``model`` (the policy when not given) in one forward pass.

        The log-probs are those of the distribution ``sampling`` draws from (tempered, filtered).
        """
        return sequence_logprobs(
            model if model is not None else self.model,
            batch.prompt_ids,
            batch.prompt_mask,
            batch.completion_ids,
            batch.completion_mask,
            sampling,
        )

    def _reference_logprobs(self, batch: RolloutBatch, sampling: SamplingParams) -> torch.Tensor:
        """The reference model's log-probs of a batch: its tempered distribution, unfiltered (the KL's other side)."""
        return self.score(batch, self.ref_model, SamplingParams(temperature=sampling.scoring_temperature))

    def prefill(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, new_tokens: int = 0) -> DecodeState:
        """Prefill left-padded prompts, running identical ones once, with cache room for ``new_tokens`` more.

        RLOO's k copies of a prompt and pairwise siblings share one prefill; the cache is then repeated.
        """
        capacity = prompt_ids.size(1) + new_tokens
        rows = torch.cat([prompt_ids, prompt_mask], dim=1)
        unique, inverse = torch.unique(rows, dim=0, return_inverse=True)
        if not self.share_prefill or len(unique) == len(rows):
            return self.decoder.prefill(prompt_ids, prompt_mask, capacity=capacity)
        first = torch.full((len(unique),), len(rows), dtype=torch.long, device=rows.device)
        first.scatter_reduce_(0, inverse, torch.arange(len(rows), device=rows.device), reduce="amin")
        shared = self.decoder.prefill(prompt_ids[first], prompt_mask[first], capacity=capacity)
        return shared.select(inverse)

    @torch.no_grad()
    def replay(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        *,
        sampling: SamplingParams = SamplingParams(),
    ) -> RolloutBatch:
        """The batch :meth:`run` returns for tokens sampled elsewhere (by vLLM), in one forward pass.

        Log-probs of the filtered distribution the tokens were drawn from, the value head's values and the
        reference model's log-probs, as the decode loop records them (equal up to float rounding: a test checks it).
        """
        want_values = self.value_head is not None
        logprobs, hidden = score_completions(
            self.model,
            prompt_ids,
            prompt_mask,
            completion_ids,
            completion_mask,
            sampling,
            return_hidden=want_values,
        )
        values = self._value(hidden) if want_values else None
        lengths = completion_mask.sum(dim=1)
        batch = self._batch(prompt_ids, prompt_mask, completion_ids, logprobs.float(), values, lengths)
        if self.ref_model is not None:
            batch = batch._replace(ref_logprobs=self._reference_logprobs(batch, sampling))
        return batch

    # -- the decoding loop -------------------------------------------------------------------------------

    @torch.no_grad()
    def run(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        max_new_tokens: int,
        *,
        sampling: SamplingParams = SamplingParams(),
        seed: int | Sequence[int] | None = None,
        eos_ids: Sequence[int] | None = None,
        on_step: StepHook | None = None,
    ) -> RolloutBatch:
        """The decode loop over left-padded prompts (B, P): one sampled column per step, the KV cache reused.

        ``sampling`` and ``seed`` as in :meth:`generate`. ``eos_ids`` replaces the model's EOS tokens (they are masked
        out before ``sampling.min_new_tokens``). ``on_step(t, tokens, active)`` is called with each column (finished
        rows hold the pad id) and returns which rows end with it, a (B,) bool array; without it a row ends at EOS.
        That is how a caller lets something else (an env, a search) decide the ends; it is also the only way in which
        anything beyond the model reaches this loop. Every row ends after ``max_new_tokens`` tokens.
        """
        eos = self.eos_ids if eos_ids is None else torch.as_tensor(list(eos_ids), device=self.device)
        batch_size, width = prompt_ids.shape
        self._check_run(width, max_new_tokens)
        generator, uniforms = self._random_draws(seed, sampling.greedy, batch_size, max_new_tokens)
        want_values = self.value_head is not None

        completion, logprobs, values, done, lengths = self._buffers(batch_size, max_new_tokens, want_values)

        state = self.prefill(prompt_ids, prompt_mask, max_new_tokens)
        steps = 0
        for t in range(max_new_tokens):
            logits = state.logits  # (B, V): the distribution of token t (this loop owns the state: no copy)
            if t < sampling.min_new_tokens:
                logits[:, eos] = float("-inf")
            uniform = uniforms[:, t] if uniforms is not None else None
            tokens, step_logprobs = sample_next(logits, sampling, generator, uniform)
            if want_values:
                values[:, t] = self._value(state.hidden)
            tokens = tokens.masked_fill(done, self.pad_id)  # finished rows emit padding
            active = ~done
            completion[:, t] = tokens
            logprobs[:, t] = step_logprobs * active
            lengths += active.long()
            steps = t + 1
            if on_step is not None:
                done |= torch.as_tensor(np.asarray(on_step(t, tokens, active), dtype=bool), device=self.device)
            else:
                done |= torch.isin(tokens, eos)
            if bool(done.all()) or t == max_new_tokens - 1:
                break
            state = self.decoder.step(state, tokens)  # one column with the KV cache

        values = values[:, :steps] if want_values else None
        batch = self._batch(prompt_ids, prompt_mask, completion[:, :steps], logprobs[:, :steps], values, lengths)
        if self.ref_model is not None:
            batch = batch._replace(ref_logprobs=self._reference_logprobs(batch, sampling))
        return batch

    def _buffers(self, batch_size: int, max_new_tokens: int, want_values: bool):
        """The rollout's columns (filled one per step): tokens, log-probs, values; rows done, their lengths."""
        shape, device = (batch_size, max_new_tokens), self.device
        completion = torch.full(shape, self.pad_id, dtype=torch.long, device=device)
        logprobs = torch.zeros(shape, dtype=torch.float32, device=device)
        values = torch.zeros(shape, dtype=torch.float32, device=device) if want_values else None
        done = torch.zeros(batch_size, dtype=torch.bool, device=device)
        return completion, logprobs, values, done, torch.zeros(batch_size, dtype=torch.long, device=device)

    def _value(self, hidden: torch.Tensor) -> torch.Tensor:
        """The value head's estimate of each row's state (float32, whatever the head's dtype)."""
        head_dtype = next(self.value_head.parameters()).dtype
        return self.value_head(hidden.to(head_dtype)).squeeze(-1).float()

    def _check_run(self, width: int, max_new_tokens: int) -> None:
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
        if self.context is not None and width + max_new_tokens > self.context:
            raise PromptTooLongError(
                f"A prompt of {width} tokens plus {max_new_tokens} new tokens exceeds the model's context of "
                f"{self.context} tokens. Shorten the prompt or lower max_new_tokens."
            )

    def _random_draws(self, seed, greedy: bool, batch_size: int, max_new_tokens: int):
        """The sampler's randomness: one generator for an int seed, a row's own uniforms for one seed per row."""
        if seed is None or greedy:
            return None, None
        if isinstance(seed, int | np.integer):
            return torch.Generator(device=self.device).manual_seed(int(seed)), None
        return None, row_uniforms(seed, batch_size, max_new_tokens).to(self.device)

    def _batch(self, prompt_ids, prompt_mask, completion, logprobs, values, lengths) -> RolloutBatch:
        """The loop's columns as a batch: completions right-padded, their mask from each row's length."""
        steps = completion.shape[1]
        completion_mask = (torch.arange(steps, device=self.device)[None, :] < lengths[:, None]).long()
        return RolloutBatch(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            completion_ids=completion,
            completion_mask=completion_mask,
            logprobs=logprobs,
            values=values * completion_mask if values is not None else None,
        )
