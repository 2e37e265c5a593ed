"""A span critic served by a pool of Ray actors (``pip install criticgym[ray]``).

An expensive critic (an LLM, a classifier on a GPU) then lives once per actor, wherever Ray places it, instead of
once in every process that steps an env; rollout workers share one pool. A batch is split into one contiguous part
per actor, the parts are critiqued at the same time, and the answers are joined in order, so the pool returns what
the critic itself would (except for a critic that draws random numbers: ``random`` draws per actor). An actor that
dies is rebuilt and its part critiqued again; when no restarts are left the error is raised, never a guess.

Example (not run here: it starts Ray)::

    from criticgym.critics import LexiconCritic
    from criticgym.distributed.pool import CriticPool

    pool = CriticPool(LexiconCritic, actors=2)
    envs = criticgym.make_vec("criticgym/SentimentControl-v0", num_envs=16, reward="relc", critic=pool)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from criticgym.critics.base import Critique, as_critic, checked_critiques
from criticgym.critics.protocols import Critic
from criticgym.distributed.actors import Actors, init_ray


class _Served:
    """The actor: one critic, built inside the actor's process."""

    def __init__(self, make: Callable[[], Critic]) -> None:
        self.critic = as_critic(make())

    def critique(self, prompts, completions, extrinsic=None) -> list[Critique]:
        return self.critic.critique(prompts, completions, extrinsic)


class CriticPool:
    """A :class:`~criticgym.critics.base.Critic` whose calls run on ``actors`` Ray actors.

    Args:
        make: builds the critic in each actor (a class or a function with no arguments; it is pickled, the critic
            it returns is not).
        actors: how many actors.
        address: the Ray cluster to join (None: the running one, else a new local one).
        restarts: how many dead actors may be replaced in all.
        options: ``ray.remote`` options of each actor, e.g. ``num_gpus=1``.
    """

    def __init__(
        self,
        make: Callable[[], Critic],
        actors: int = 2,
        address: str | None = None,
        restarts: int = 3,
        **options: Any,
    ) -> None:
        init_ray(address)
        options.setdefault("num_cpus", 0)  # a critic mostly waits for its batch; do not hold a CPU slot
        self.actors = Actors(_Served, [(make,)] * actors, restarts=restarts, **options)

    def critique(
        self, prompts: Sequence[str], completions: Sequence[str], extrinsic: Sequence[float] | None = None
    ) -> list[Critique]:
        """One critique per completion, the batch split across the actors."""
        parts = [p for p in np.array_split(np.arange(len(completions)), len(self.actors)) if len(p)]

        def call(handle, i):
            rows = parts[i].tolist()
            scores = None if extrinsic is None else [extrinsic[r] for r in rows]
            return handle.critique.remote([prompts[r] for r in rows], [completions[r] for r in rows], scores)

        out = [c for part in self.actors.map(call, len(parts)) for c in part]
        return checked_critiques(out, completions, self)

    def __repr__(self) -> str:
        return f"CriticPool({len(self.actors)} actors)"

    def close(self) -> None:
        """Kill the actors."""
        self.actors.close()
