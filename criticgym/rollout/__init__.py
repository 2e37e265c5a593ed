"""The rollout core: model loading, a decoder with explicit (forkable, croppable) state, batched KV-cached sampling.

Imports only the package's errors and its FLOP meter (criticgym.flops).
"""

from criticgym.rollout.decoder import Decoder, DecodeState
from criticgym.rollout.engine import (
    RolloutBatch,
    RolloutEngine,
    join_batches,
    left_pad,
    score_completions,
    sequence_logprobs,
)
from criticgym.rollout.models import BUILTIN_MODELS, cache_dir, eos_token_ids, load_policy, load_tokenizer
from criticgym.rollout.sampling import GREEDY, SamplingParams, filter_logits, sample_from_logits, sample_next

__all__ = [
    "BUILTIN_MODELS",
    "GREEDY",
    "DecodeState",
    "Decoder",
    "RolloutBatch",
    "RolloutEngine",
    "SamplingParams",
    "cache_dir",
    "eos_token_ids",
    "filter_logits",
    "join_batches",
    "left_pad",
    "load_policy",
    "load_tokenizer",
    "sample_from_logits",
    "sample_next",
    "score_completions",
    "sequence_logprobs",
]
