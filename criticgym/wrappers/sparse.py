"""Sparse extrinsic reward: a scorer's judgement of the whole completion, paid at its last token."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv, VectorWrapper

from criticgym.critics.protocols import Scorer
from criticgym.critics.scorers import as_scorer, score_texts
from criticgym.rewards import EXTRINSIC_REWARD, UNSCORED
from criticgym.wrappers.overlap import Ended, RewardCalls, put_row


def score_episodes(scorer: Scorer, episodes: Sequence[tuple]) -> np.ndarray:
    """The sparse reward's core, shared by the single and the vector env: one scorer call for finished episodes.

    Each episode is ``(prompt, completion, reference or None, completion_ids)``.
    """
    prompts, completions, refs, ids = (list(column) for column in zip(*episodes, strict=True))
    references = None if all(r is None for r in refs) else refs
    return np.asarray(score_texts(scorer, prompts, completions, references, ids), dtype=np.float64)


class SparseExtrinsicReward(gym.Wrapper):
    """Adds ``scale * scorer(prompt, completion)`` to the reward of each episode's last step.

    The score is also reported as ``info["extrinsic_reward"]`` on that step; every step before it carries
    ``info["unscored"] = True``, so an episode that a ``TimeLimit`` outside cuts short says it was never scored.

    Args:
        env: a criticgym text-generation env (its final info carries ``prompt`` and ``completion``).
        scorer: a built-in scorer name, a :class:`~criticgym.critics.scorers.Scorer`, or a function.
        scale: multiplies the score (RELC's ``alpha1``).

    Example:
        >>> from criticgym.envs import TextGenEnv
        >>> env = SparseExtrinsicReward(TextGenEnv("sentiment"), scorer="vader")
        >>> _ = env.reset(seed=0, options={"prompt": "What a wonderful"})
        >>> _, reward, terminated, _, info = env.step(env.unwrapped.eos_token_id)
        >>> round(reward, 4) == round(info["extrinsic_reward"], 4) and reward > 0
        True
    """

    def __init__(self, env: gym.Env, scorer: str | Scorer | Callable[..., Sequence[float]], scale: float = 1.0) -> None:
        super().__init__(env)
        self.scorer = as_scorer(scorer)
        self.scale = float(scale)

    def step(self, action):
        """Step, and score the completion if the episode ended."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            episode = (info["prompt"], info["completion"], info.get("reference"), info["completion_ids"])
            (score,) = score_episodes(self.scorer, [episode])
            info[EXTRINSIC_REWARD] = float(score)
            reward = float(reward) + self.scale * float(score)
        else:
            info[UNSCORED] = True
        return obs, reward, terminated, truncated, info


class RewindableVectorWrapper(VectorWrapper):
    """A vector reward wrapper whose snapshots hold the inner env's and its own per-row state.

    ``get_state(rows)`` returns one ``(inner, own)`` pair per row, ``set_state(states, rows)`` restores them (also
    into other rows: branches). Subclasses with per-episode state override :meth:`_own_state` and
    :meth:`_set_own_state`; stateless wrappers keep ``None``.
    """

    def get_state(self, rows: Sequence[int] | None = None) -> tuple[tuple[Any, Any], ...]:
        """Snapshots of ``rows`` (every sub-env when not given) through this wrapper."""
        rows = range(self.num_envs) if rows is None else [int(r) for r in rows]
        return tuple(zip(self.env.get_state(rows), (self._own_state(r) for r in rows), strict=True))

    def set_state(self, states: Sequence[tuple[Any, Any]], rows: Sequence[int] | None = None):
        """Restore :meth:`get_state`'s snapshots into ``rows``; returns the observation."""
        rows = range(self.num_envs) if rows is None else [int(r) for r in rows]
        observation = self.env.set_state([inner for inner, _ in states], rows)
        for row, (_, own) in zip(rows, states, strict=True):
            self._set_own_state(row, own)
        return observation

    def _own_state(self, row: int) -> Any:
        return None

    def _set_own_state(self, row: int, state: Any) -> None:
        pass


class SparseExtrinsicRewardVector(RewindableVectorWrapper):
    """The vector version: every episode that ends in a step is scored in **one** batched scorer call.

    ``info["extrinsic_reward"]`` (with its ``_extrinsic_reward`` mask) holds the scores of those episodes.
    ``overlap=True`` (``autoreset_mode="disabled"`` only) runs the scorer (or a direct judge) in a background
    thread while the other episodes keep generating, and pays a finished episode on a later idle step
    (:mod:`criticgym.wrappers.overlap`).
    """

    def __init__(
        self,
        env: VectorEnv,
        scorer: str | Scorer | Callable[..., Sequence[float]],
        scale: float = 1.0,
        overlap: bool = False,
    ) -> None:
        super().__init__(env)
        self.scorer = as_scorer(scorer)
        self.scale = float(scale)
        self.calls = RewardCalls(env, self._score, overlap, "overlap")

    def _own_state(self, row: int) -> bool:
        return self.calls.snapshot(row)

    def _set_own_state(self, row: int, state: bool) -> None:
        self.calls.restore(row, state)

    def reset(self, *, seed=None, options=None):
        """Reset (dropping the scores still to come of the sub-envs that restart)."""
        mask = (options or {}).get("reset_mask")
        self.calls.reset(range(self.num_envs) if mask is None else np.flatnonzero(mask))
        return self.env.reset(seed=seed, options=options)

    def step(self, actions):
        """Step every sub-env, then score all episodes that just ended together (or hand them to the thread)."""
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        ended = []
        for i in np.flatnonzero(np.logical_or(terminated, truncated)):
            reference = info["reference"][i] if "reference" in info else None
            episode = (info["prompt"][i], info["completion"][i], reference, info["completion_ids"][i])
            ended.append(self.calls.ended(i, episode))
        paid = self.calls.step(ended)
        if paid:
            rewards, info = np.array(rewards, dtype=np.float64), dict(info)
        for episode, score in paid:
            rewards[episode.row] += self.scale * score
            put_row(info, EXTRINSIC_REWARD, episode.row, float(score), self.num_envs)
        return obs, rewards, terminated, truncated, info

    def close(self, **kwargs):
        """Stop the scorer's thread, then close the env."""
        self.calls.close()
        return super().close(**kwargs)

    def _score(self, ended: list[Ended]) -> np.ndarray:
        """One scorer call for these episodes."""
        return score_episodes(self.scorer, [e.data for e in ended])


def _set_rows(info: dict[str, Any], key: str, rows: np.ndarray, values: np.ndarray, n: int) -> dict[str, Any]:
    """Add a per-row entry to a Gymnasium vector info dict (values plus ``_key`` mask)."""
    column = np.zeros(n, dtype=np.float64)
    mask = np.zeros(n, dtype=bool)
    column[rows], mask[rows] = values, True
    return {**info, key: column, f"_{key}": mask}
