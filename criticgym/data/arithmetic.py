"""Multi-step arithmetic problems generated from a seed: a verifiable task for learning from language feedback.

A problem is a chain of operations on a starting number ("Start with 7, add 5, multiply by 3, then subtract 4.");
its solution writes one step per line and ends with the answer::

    7 + 5 = 12
    12 * 3 = 36
    36 - 4 = 32
    Answer: 32

The level is the number of operations (1 to 4). Results stay between 0 and 999; a divisor always divides.
The splits are fixed: train and test are drawn from different seeds, and a test problem never repeats a train
problem's text.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from criticgym.data.corpora import Example
from criticgym.errors import ConfigError

OPS = {"+": "add", "-": "subtract", "*": "multiply by", "/": "divide by"}
LEVELS = (1, 2, 3, 4)
SIZES = {"train": 4000, "test": 400}
STEP = re.compile(r"(-?\d+)\s*([-+*/x×])\s*(-?\d+)\s*=\s*(-?\d+)")
ANSWER = re.compile(r"answer\s*(?:is)?\s*[:=]?\s*(-?\d+)", re.IGNORECASE)


class Step(NamedTuple):
    """One line of a solution: ``left op right = result``."""

    left: int
    op: str
    right: int
    result: int

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right} = {self.result}"

    @property
    def true_result(self) -> int:
        """What ``left op right`` really is."""
        return apply(self.left, self.op, self.right)


def apply(left: int, op: str, right: int) -> int:
    """``left op right`` on integers (``/`` is exact in generated problems; elsewhere it floors)."""
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if op == "/":
        return left // right if right else 0
    raise ConfigError(f"Unknown operation {op!r}; use one of {sorted(OPS)}.")


class Problem(NamedTuple):
    """A generated problem: its question, the steps of its solution and the level."""

    question: str
    steps: tuple[Step, ...]
    level: int

    @property
    def answer(self) -> int:
        """The final result."""
        return self.steps[-1].result

    @property
    def solution(self) -> str:
        """One step per line, then ``Answer: N``."""
        return format_solution(self.steps, self.answer)


def format_solution(steps: tuple[Step, ...] | list[Step], answer: int | None) -> str:
    """Lines ``a op b = c`` and a last line ``Answer: N``."""
    lines = [str(s) for s in steps]
    if answer is not None:
        lines.append(f"Answer: {answer}")
    return "\n".join(lines)


def parse_steps(text: str) -> list[Step]:
    """The ``a op b = c`` lines of a solution, in order (``x`` and ``×`` read as ``*``)."""
    steps = []
    for left, op, right, result in STEP.findall(text):
        op = "*" if op in "x×" else op
        steps.append(Step(int(left), op, int(right), int(result)))
    return steps


def parse_answer(text: str) -> int | None:
    """The number after the last ``Answer:`` (None when there is none)."""
    found = ANSWER.findall(text)
    return int(found[-1]) if found else None


def make_problem(rng: np.random.Generator, level: int) -> Problem:
    """A random chain of ``level`` operations whose every result lies in [0, 999]."""
    if level not in LEVELS:
        raise ConfigError(f"level must be one of {LEVELS}, got {level}.")
    value = int(rng.integers(2, 51))
    start, steps, words = value, [], []
    while len(steps) < level:
        op = str(rng.choice(list(OPS)))
        if op == "+":
            right = int(rng.integers(1, 31))
        elif op == "-":
            if value < 2:
                continue
            right = int(rng.integers(1, min(value, 30) + 1))
        elif op == "*":
            right = int(rng.integers(2, 10))
        else:
            divisors = [d for d in range(2, 10) if value % d == 0]
            if not divisors:
                continue
            right = int(rng.choice(divisors))
        result = apply(value, op, right)
        if not 0 <= result <= 999:
            continue
        steps.append(Step(value, op, right, result))
        words.append(f"{OPS[op]} {right}")
        value = result
    chain = words[0] if level == 1 else ", ".join(words[:-1]) + ", then " + words[-1]
    return Problem(f"Start with {start}, {chain}.", tuple(steps), level)


@lru_cache(maxsize=2)
def _problems(which: str) -> tuple[Problem, ...]:
    rng = np.random.default_rng({"train": 0, "test": 1}[which])
    seen = {p.question for p in _problems("train")} if which == "test" else set()
    out: list[Problem] = []
    for _ in range(100 * SIZES[which]):  # about 3,000 distinct level-1 problems exist: the loop ends
        problem = make_problem(rng, LEVELS[len(out) % len(LEVELS)])
        if problem.question not in seen:
            seen.add(problem.question)
            out.append(problem)
            if len(out) == SIZES[which]:
                return tuple(out)
    raise RuntimeError(f"Could not draw {SIZES[which]} distinct {which} problems.")


def load_arithmetic(which: str = "train") -> list[Example]:
    """Arithmetic problems: ``text`` is the question, ``reference`` the gold solution, ``label`` the level.

    4,000 train and 400 test problems, levels 1-4 in turn; the same on every machine.

    Example:
        >>> load_arithmetic("test")[0].text
        'Start with 17, subtract 5.'
    """
    if which not in SIZES:
        raise ConfigError(f"Unknown split {which!r}; use one of {tuple(SIZES)}.")
    return [Example(p.question, p.level, p.solution) for p in _problems(which)]


def problem_of(example: Example) -> Problem:
    """The :class:`Problem` behind an example of :func:`load_arithmetic` (its steps are read from the reference)."""
    if example.reference is None:
        raise ConfigError("An arithmetic example needs its gold solution as the reference.")
    steps = tuple(parse_steps(example.reference))
    return Problem(example.text, steps, len(steps))
