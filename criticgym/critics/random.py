"""The random-span ablation: as many marked tokens as a real critic, at random places."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from criticgym.critics.base import Critique, Span, as_critic
from criticgym.critics.offsets import tokens_in_span
from criticgym.critics.protocols import Critic

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class RandomCritic:
    """Asks ``critic`` for its spans, counts the tokens they cover, and marks as many tokens at random.

    The values of the marked tokens are the real critic's, shuffled. RELC's ablation: if dense rewards help
    only because they are dense, random spans would help as much.

    Tokens are those of the tokenizer's encoding of the completion text, which for text the policy generated
    is almost always the generated tokens.

    Args:
        critic: the critic whose span budget to copy.
        tokenizer: the policy's tokenizer.
        seed: seeds the placement. The draws for a completion depend only on ``(seed, prompt, completion)``, not
            on what was critiqued before, so the critic keeps no state: a resumed run, a cache hit and a fresh
            call all give the same spans.
    """

    def __init__(self, critic: Critic, tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> None:
        self.critic = as_critic(critic)
        self.tokenizer = tokenizer
        self.seed = int(seed)

    def _rng(self, prompt: str, completion: str) -> np.random.Generator:
        digest = hashlib.blake2b(f"{prompt}\x00{completion}".encode("utf-8", "surrogatepass"), digest_size=16)
        return np.random.default_rng([self.seed & 0xFFFFFFFF, *np.frombuffer(digest.digest(), dtype=np.uint32)])

    def critique(self, prompts, completions, extrinsic=None) -> list[Critique]:
        """Random spans with the real critic's token budget."""
        real = self.critic.critique(prompts, completions, extrinsic)
        encoded = self.tokenizer(list(completions), add_special_tokens=False, return_offsets_mapping=True)
        out = []
        for prompt, completion, critique, offsets in zip(
            prompts, completions, real, encoded["offset_mapping"], strict=True
        ):
            rng = self._rng(prompt, completion)
            offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
            values = [
                s.value for s in critique.spans for _ in range(int(tokens_in_span(offsets, s.start, s.end).sum()))
            ]
            candidates = np.flatnonzero(offsets[:, 1] > offsets[:, 0])
            n = min(len(values), len(candidates))
            chosen = np.sort(rng.choice(candidates, size=n, replace=False)) if n else []
            shuffled = rng.permutation(values)[:n] if n else []
            spans = tuple(
                Span(int(offsets[i, 0]), int(offsets[i, 1]), float(v), "random")
                for i, v in zip(chosen, shuffled, strict=True)
            )
            out.append(
                Critique(spans, raw=critique.raw, unlocated=critique.unlocated, parse_failed=critique.parse_failed)
            )
        return out
