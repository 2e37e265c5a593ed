"""AI-preference rewards (RLAIF): a judge's direct score, or its soft preference between sibling completions.

- direct (:class:`DirectJudgeReward`, :class:`DirectJudgeRewardVector`): the judge rates each finished
  completion (:class:`~criticgym.critics.judge.DigitJudge`, a score in [-1, 1]) and the rating is paid at its last
  token, exactly like a sparse extrinsic score.
- pairwise (:class:`PairwisePreferenceReward`, vector env only): sub-envs ``2i`` and ``2i + 1`` are siblings that
  complete the same prompt. When both have ended, the judge (:class:`~criticgym.critics.judge.PairwiseJudge`) gives
  ``p = P(2i better than 2i + 1)`` (``prefer``, both orders averaged), and each sibling gets its centered
  preference over the other, ``scale * (2p - 1)`` and ``scale * (1 - 2p)``. The sibling that ends first cannot
  be paid on its own last step (its sibling is still writing), so on the step the pair is judged:

  - the scalar rewards carry both shares: the sibling that ends on that step on its last step, the sibling that
    ended earlier on that idle step after its end (a finished sub-env waits, frozen, in ``"disabled"``
    autoreset mode). A row's scalar rewards from one reset to the next therefore sum to its return, whatever
    learner reads them; the rollout engine credits such a late reward to the row's last token;
  - ``info["token_rewards"]`` holds both siblings' per-token vectors (the preference on the last token), the
    same hindsight channel RELC's dense rewards use.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from criticgym.critics.protocols import DirectJudge, PreferenceJudge, check_role
from criticgym.critics.scorers import checked_scores
from criticgym.errors import ConfigError
from criticgym.rewards import TOKEN_REWARDS
from criticgym.wrappers.sparse import (
    RewindableVectorWrapper,
    SparseExtrinsicReward,
    SparseExtrinsicRewardVector,
    _set_rows,
)


class JudgeRating:
    """A direct judge's ``rate`` as a scorer."""

    def __init__(self, judge: DirectJudge) -> None:
        check_role(judge, DirectJudge, "Direct RLAIF")
        self.judge = judge

    def score(self, prompts, completions, references=None):
        """The judge's ratings (references unused)."""
        return self.judge.rate(prompts, completions)


class DirectJudgeReward(SparseExtrinsicReward):
    """Direct RLAIF on a single env: the judge's rating of the completion, paid at its last token.

    Pairwise preferences compare sibling episodes, so they exist on the vector env only
    (:class:`PairwisePreferenceReward`).

    Args:
        env: a criticgym text-generation env.
        judge: a :class:`~criticgym.critics.protocols.DirectJudge` (e.g. :class:`~criticgym.critics.judge.DigitJudge`).
        scale: multiplies the rating.
    """

    def __init__(self, env: gym.Env, judge: DirectJudge, scale: float = 1.0) -> None:
        super().__init__(env, JudgeRating(judge), scale)
        self.judge = judge


class DirectJudgeRewardVector(SparseExtrinsicRewardVector):
    """Direct RLAIF on the vector env: each finished row's rating, paid at its last token.

    Args:
        env: a criticgym vector env.
        judge: a :class:`~criticgym.critics.protocols.DirectJudge`.
        scale: multiplies the rating.
        overlap: rate in a background thread while the other episodes generate (:mod:`criticgym.wrappers.overlap`).
    """

    def __init__(self, env: VectorEnv, judge: DirectJudge, scale: float = 1.0, overlap: bool = False) -> None:
        super().__init__(env, JudgeRating(judge), scale, overlap=overlap)
        self.judge = judge


class PairwisePreferenceReward(RewindableVectorWrapper):
    """Pairwise RLAIF on the vector env (see the module docstring).

    The env must not autoreset (``autoreset_mode="disabled"``), ``num_envs`` must be even, and every reset gives
    siblings the same prompt: without ``options["prompt"]`` it draws one prompt per pair (``group_size=2``, or any
    even group size you pass); with given prompts, siblings' prompts must match. ``info`` gains ``preference`` (the
    probability that this sub-env's completion beats its sibling's) and ``token_rewards`` for both siblings on the
    step the pair is judged.

    Args:
        env: a criticgym vector env.
        judge: a :class:`~criticgym.critics.protocols.PreferenceJudge` (e.g.
            :class:`~criticgym.critics.judge.PairwiseJudge`).
        scale: multiplies the reward.
    """

    def __init__(self, env: VectorEnv, judge: PreferenceJudge, scale: float = 1.0) -> None:
        check_role(judge, PreferenceJudge, "Pairwise RLAIF")
        super().__init__(env)
        self.judge, self.scale = judge, float(scale)
        if self.num_envs % 2:
            raise ConfigError(f"Pairwise RLAIF pairs sub-envs 2i and 2i+1: num_envs must be even, got {self.num_envs}.")
        if env.metadata.get("autoreset_mode") != AutoresetMode.DISABLED:
            raise ConfigError(
                "Pairwise RLAIF keeps a finished sub-env waiting for its sibling; make the env with "
                "autoreset_mode='disabled'."
            )
        self._final: list[dict[str, Any] | None] = [None] * self.num_envs
        self._paid: list[list[float]] = [[] for _ in range(self.num_envs)]
        self._judged = np.zeros(self.num_envs, dtype=bool)

    def _own_state(self, row: int) -> Any:
        final = None if self._final[row] is None else dict(self._final[row])
        return final, tuple(self._paid[row]), bool(self._judged[row])

    def _set_own_state(self, row: int, state: Any) -> None:
        final, paid, judged = state
        self._final[row] = None if final is None else dict(final)
        self._paid[row], self._judged[row] = list(paid), judged

    def reset(self, *, seed=None, options=None):
        """Reset; siblings always share a prompt."""
        options = dict(options or {})
        mask = np.ones(self.num_envs, dtype=bool)
        if "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], dtype=bool)
            if mask.shape != (self.num_envs,) or (mask[0::2] != mask[1::2]).any():
                raise ConfigError("In pairwise RLAIF a reset_mask must reset both siblings (2i and 2i+1) together.")
        prompts = options.get("prompt")
        if prompts is None:
            options["group_size"] = options.get("group_size", 2)
            if options["group_size"] % 2:
                raise ConfigError(f"In pairwise RLAIF group_size must be even, got {options['group_size']}.")
        elif not isinstance(prompts, str) and list(prompts[0::2]) != list(prompts[1::2]):
            raise ConfigError("In pairwise RLAIF siblings (2i and 2i+1) must get the same prompt.")
        for row in np.flatnonzero(mask):
            self._final[row], self._paid[row], self._judged[row] = None, [], False
        return self.env.reset(seed=seed, options=options)

    def step(self, actions):
        """Step; judge every pair whose second sibling just ended, in one batched call (both orders)."""
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        ended = np.logical_or(terminated, truncated)
        for row in range(self.num_envs):
            if self._final[row] is None:
                self._paid[row].append(float(rewards[row]))
        for row in np.flatnonzero(ended):
            self._final[row] = {key: info[key][row] for key in ("prompt", "completion", "completion_ids")}
        first = np.arange(0, self.num_envs, 2)
        ready = [
            a for a in first if self._final[a] is not None and self._final[a + 1] is not None and not self._judged[a]
        ]
        if not ready:
            return obs, rewards, terminated, truncated, info
        a_rows, b_rows = np.asarray(ready), np.asarray(ready) + 1
        p = checked_scores(
            self.judge.prefer(
                [self._final[a]["prompt"] for a in a_rows],
                [self._final[a]["completion"] for a in a_rows],
                [self._final[b]["completion"] for b in b_rows],
            ),
            len(ready),
            self.judge,
        )
        rows = np.concatenate([a_rows, b_rows])
        preference = np.concatenate([p, 1.0 - p])
        pay = self.scale * (2.0 * preference - 1.0)
        rewards = np.array(rewards, dtype=np.float64)
        vectors = np.empty(self.num_envs, dtype=object)
        for row, value in zip(rows, pay, strict=True):
            n = len(self._final[row]["completion_ids"])
            vector = np.asarray(self._paid[row][-n:], dtype=np.float64).copy()
            vector[-1] += value
            vectors[row] = vector
            rewards[row] += value  # on its last step, or on this idle step after it (the first sibling to end)
            self._judged[row] = True
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[rows] = True
        info = {**info, TOKEN_REWARDS: vectors, f"_{TOKEN_REWARDS}": mask}
        info = _set_rows(info, "preference", rows, preference, self.num_envs)
        return obs, rewards, terminated, truncated, info
