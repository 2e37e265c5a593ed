"""What a span critic returns, and the protocol every critic follows.

A critic reads finished completions and points at the parts that earned or lost reward: spans given as
character offsets into the completion, each with a signed value and a label. Critics are batched:
``critique(prompts, completions, extrinsic=None) -> list[Critique]``. A plain function of the same shape works
too (see :func:`as_critic`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from criticgym.critics.protocols import Critic
from criticgym.errors import ConfigError, CriticGymError, name_of


@dataclass(frozen=True)
class Span:
    """A stretch ``completion[start:end]`` that the critic judged good (value > 0) or bad (value < 0)."""

    start: int
    end: int
    value: float
    label: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ConfigError(f"A span needs 0 <= start <= end, got ({self.start}, {self.end}).")


@dataclass(frozen=True)
class Critique:
    """One completion's critique.

    Attributes:
        spans: the located spans, offsets into the completion.
        raw: the critic's own text (an LLM's answer), or ``""``.
        unlocated: spans the critic named that could not be found in the completion (dropped).
        parse_failed: the critic's answer could not be read at all (no spans were taken from it).
    """

    spans: tuple[Span, ...] = ()
    raw: str = ""
    unlocated: int = 0
    parse_failed: bool = False

    def text_of(self, completion: str) -> list[str]:
        """The text of each span (for display)."""
        return [completion[s.start : s.end] for s in self.spans]


class FunctionCritic:
    """Adapts ``fn(prompts, completions[, extrinsic]) -> list[Critique]`` to the :class:`Critic` protocol."""

    def __init__(self, fn: Callable[..., Sequence[Critique]]) -> None:
        self.fn = fn
        params = inspect.signature(fn).parameters
        self.takes_extrinsic = "extrinsic" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
        )

    def critique(self, prompts, completions, extrinsic=None) -> list[Critique]:
        """Call the function (its result is validated by :func:`checked_critiques`)."""
        if self.takes_extrinsic:
            return self.fn(prompts, completions, extrinsic=extrinsic)
        return self.fn(prompts, completions)

    def __repr__(self) -> str:
        return f"FunctionCritic({name_of(self.fn)})"


def as_critic(critic: Critic | Callable[..., Sequence[Critique]]) -> Critic:
    """A :class:`Critic` as it is, or a wrapped function."""
    if callable(getattr(critic, "critique", None)):
        return critic  # type: ignore[return-value]
    if callable(critic):
        return FunctionCritic(critic)
    raise ConfigError(
        f"A critic must have critique(prompts, completions, extrinsic=None) or be such a function; "
        f"got {type(critic).__name__}."
    )


def checked_critiques(critiques: object, completions: Sequence[str], who: object) -> list[Critique]:
    """Validate a critic's output: one Critique per completion, spans inside it with finite real values.

    A fault never becomes a silent reward; every message names the critic (the user's function, for a wrapped one).
    """
    who = name_of(who)
    if isinstance(critiques, (str, bytes, Critique)) or not hasattr(critiques, "__iter__"):
        raise CriticGymError(
            f"Critic {who} returned {type(critiques).__name__}, not a list of Critique (one per completion)."
        )
    out = list(critiques)  # type: ignore[call-overload]
    if len(out) != len(completions):
        raise CriticGymError(f"Critic {who} returned {len(out)} critiques for {len(completions)} completions.")
    for critique, completion in zip(out, completions, strict=True):
        if not isinstance(critique, Critique):
            raise CriticGymError(f"Critic {who} returned a {type(critique).__name__}, not a Critique.")
        for span in critique.spans:
            value = span.value
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise CriticGymError(
                    f"Critic {who} returned a span with value {value!r}; a span's value must be a finite number "
                    "(its sign says good or bad)."
                )
            if span.end > len(completion):
                raise CriticGymError(
                    f"Critic {who} returned a span ({span.start}, {span.end}) beyond its completion "
                    f"of {len(completion)} characters."
                )
    return out


__all__ = ["Critic", "Critique", "FunctionCritic", "Span", "as_critic", "checked_critiques"]
