"""Rewards off the generation path: a vector reward wrapper's expensive call, run in a background thread.

A reward wrapper hands :class:`RewardCalls` the episodes that ended on a step. Synchronously (the default), the
wrapper's batched call runs at once and the wrapper pays them on that step. With ``overlap=True`` the call runs in
a thread while the other episodes keep generating; episodes that end while it is busy wait and form its next call,
one batch. Each episode is then paid on the step its answer is collected: a later step on which its sub-env idles
(in ``autoreset_mode="disabled"`` a finished sub-env waits for the next reset), at the latest the step on which the
last episode ends, which waits for every call. Rewards and infos are those of the synchronous call; only the step
that carries them moves, and :func:`~criticgym.sources.play` credits a late reward to the row's last token. A call
that raises raises on the step that collects it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from criticgym.errors import ConfigError


@dataclass
class Ended:
    """An episode awaiting its feedback: its row, the row's reset count when it ended, what the call reads."""

    row: int
    episode: int
    data: Any


class RewardCalls:
    """Runs a wrapper's batched ``call(episodes)`` now or in a background thread, and says what to pay when.

    Args:
        env: the wrapped vector env (checked for ``autoreset_mode="disabled"`` when overlapping).
        call: the wrapper's batched call: one result per :class:`Ended` it is given, in order.
        overlap: run calls in a thread while generation continues.
        what: the option's name, for errors.
    """

    def __init__(self, env: VectorEnv, call: Callable[[list[Ended]], Sequence[Any]], overlap: bool, what: str):
        if overlap and env.metadata.get("autoreset_mode") != AutoresetMode.DISABLED:
            raise ConfigError(
                f"{what} pays a finished episode on a later idle step, which only autoreset_mode='disabled' has; "
                f"make the env with autoreset_mode='disabled' (as play() needs) or turn {what} off."
            )
        self.call, self.overlap, self.what = call, overlap, what
        self.finished = np.zeros(env.num_envs, dtype=bool)  # ended since the row's reset
        self.episode = np.zeros(env.num_envs, dtype=np.int64)  # resets (and rewinds) per row
        self.waiting: list[Ended] = []  # ended, not yet sent
        self.running: tuple[list[Ended], Future] | None = None  # the call in flight
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="criticgym-feedback") if overlap else None

    def ended(self, row: int, data: Any) -> Ended:
        """The record of row ``row``'s episode that just ended."""
        return Ended(int(row), int(self.episode[row]), data)

    def current(self, episode: Ended) -> bool:
        """Whether that episode is still the row's (not reset or rewound since it ended)."""
        return episode.episode == self.episode[episode.row]

    def step(self, ended: list[Ended]) -> list[tuple[Ended, Any]]:
        """Take this step's ended episodes; return what to pay on this step, as (episode, result) pairs.

        Answers for episodes reset or rewound since they ended are dropped here.
        """
        for episode in ended:
            self.finished[episode.row] = True
        if not self.overlap:
            return self._current(ended, self.call(ended)) if ended else []
        self.waiting += ended
        collected: list[tuple[Ended, Any]] = []
        last = bool(self.finished.all())  # nothing generates any more: wait for every call
        if self.running is not None and (last or self.running[1].done()):
            collected += self._collect()
        if self.waiting and self.running is None:  # everything that ended meanwhile, in one call
            batch, self.waiting = self.waiting, []
            run = contextvars.copy_context().run  # the thread charges its FLOPs to this step's phase
            self.running = (batch, self.thread.submit(run, self.call, batch))
        if last and self.running is not None:
            collected += self._collect()
        return collected

    def _collect(self) -> list[tuple[Ended, Any]]:
        batch, future = self.running
        self.running = None
        return self._current(batch, future.result())

    def _current(self, batch: list[Ended], results: Sequence[Any]) -> list[tuple[Ended, Any]]:
        return [(e, r) for e, r in zip(batch, results, strict=True) if self.current(e)]

    def reset(self, rows) -> None:
        """The rows restart: their episodes' answers, still to come, are dropped."""
        if self.running is not None:  # let the call finish: it reads the env's tokenizer
            wait([self.running[1]])
        for row in rows:
            self.finished[row] = False
            self.episode[row] += 1
        self.waiting = [e for e in self.waiting if self.current(e)]

    def snapshot(self, row: int) -> bool:
        """The row's own state for a snapshot; an error while its answer is still to come."""
        queued = self.waiting + (self.running[0] if self.running else [])
        if any(e.row == row and self.current(e) for e in queued):
            raise ConfigError(
                f"Sub-env {row} has feedback in flight, so a snapshot would miss its reward; take snapshots before "
                f"an episode ends, or turn {self.what} off."
            )
        return bool(self.finished[row])

    def restore(self, row: int, finished: bool) -> None:
        """Rewind the row to a snapshot; an answer still in flight belongs to the abandoned branch."""
        self.finished[row] = finished
        self.episode[row] += 1

    def close(self) -> None:
        """Stop the thread (after its call)."""
        if self.thread is not None:
            self.thread.shutdown(wait=True)


def put_row(info: dict[str, Any], key: str, row: int, value: Any, n: int) -> None:
    """Set sub-env ``row``'s entry of a vector info column and its ``_key`` mask, keeping the other rows'.

    ``info`` is the wrapper's own copy; a column it got from the wrapped env is copied before the write.
    """
    if key not in info:
        numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if numeric:
            info[key] = np.zeros(n, dtype=np.int64 if isinstance(value, (int, np.integer)) else np.float64)
        else:
            info[key] = np.empty(n, dtype=object)
        info[f"_{key}"] = np.zeros(n, dtype=bool)
    else:
        info[key], info[f"_{key}"] = info[key].copy(), info[f"_{key}"].copy()
    info[key][row] = value
    info[f"_{key}"][row] = True
