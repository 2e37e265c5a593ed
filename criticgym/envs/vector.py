"""TextGenVectorEnv: N text-generation episodes stepped together over arrays, in one process.

Autoreset follows Gymnasium (``metadata["autoreset_mode"]``):

- ``"next_step"`` (default, Gymnasium's default): the step that ends an episode returns its last observation
  and its final info; the *next* step resets that sub-env (its action is ignored, reward 0, not done) and
  returns the new prompt.
- ``"disabled"``: a finished sub-env waits, frozen, until ``reset()`` (optionally with
  ``options={"reset_mask": mask}``). Stepping it is allowed and does nothing: its action is ignored, its reward
  is 0 and it does not report an end again. This is the mode the rollout engine drives: one completion per
  sub-env per reset, no prompt consumed by a reset nobody asked for.

Info keys follow Gymnasium's vector convention (an array per key plus a boolean ``_key`` mask):
``n_tokens`` on every step, and ``prompt``, ``completion``, ``completion_ids``, ``prompt_index`` (and
``reference``) for the sub-envs whose episode ended on this step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from criticgym.envs.core import EpisodeBatch, EpisodeState
from criticgym.envs.tasks import TaskSpec
from criticgym.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_MODES = {
    "next_step": AutoresetMode.NEXT_STEP,
    "disabled": AutoresetMode.DISABLED,
    AutoresetMode.NEXT_STEP: AutoresetMode.NEXT_STEP,
    AutoresetMode.DISABLED: AutoresetMode.DISABLED,
}


class TextGenVectorEnv(VectorEnv):
    """A native batched :class:`TextGenEnv`.

    Args:
        num_envs: number of sub-envs (the batch size).
        task, model, split, max_new_tokens, max_prompt_tokens, render_mode: as for :class:`TextGenEnv`.
        autoreset_mode: ``"next_step"`` or ``"disabled"`` (or the :class:`AutoresetMode` values).

    Example:
        >>> envs = TextGenVectorEnv(num_envs=4, task="sentiment", autoreset_mode="disabled")
        >>> obs, info = envs.reset(seed=0)
        >>> obs["input_ids"].shape
        (4, 36)
    """

    def __init__(
        self,
        num_envs: int = 1,
        task: str | TaskSpec = "sentiment",
        model: str | PreTrainedTokenizerBase = "tiny",
        split: str = "train",
        max_new_tokens: int | None = None,
        max_prompt_tokens: int | None = None,
        autoreset_mode: str | AutoresetMode = "next_step",
        render_mode: str | None = None,
    ) -> None:
        if autoreset_mode not in _MODES:
            raise ConfigError(f"autoreset_mode must be 'next_step' or 'disabled', got {autoreset_mode!r}.")
        if render_mode not in (None, "ansi"):
            raise ConfigError(f"render_mode must be 'ansi' or None, got {render_mode!r}.")
        self.episodes = EpisodeBatch(num_envs, task, model, split, max_new_tokens, max_prompt_tokens)
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.metadata = {"render_modes": ["ansi"], "autoreset_mode": _MODES[autoreset_mode]}
        self.single_action_space = spaces.Discrete(self.episodes.vocab_size)
        self.single_observation_space = self.episodes.observation_space()
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._all = np.arange(num_envs)
        self._pending_reset = np.zeros(num_envs, dtype=bool)  # next_step mode: reset on the next step

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer that defines the actions."""
        return self.episodes.tokenizer

    @property
    def max_new_tokens(self) -> int:
        """Completion budget."""
        return self.episodes.max_new_tokens

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """The tokens that end an episode (:func:`criticgym.rollout.eos_token_ids`, shared with the engine)."""
        return tuple(int(t) for t in self.episodes.eos_ids)

    @property
    def autoreset_mode(self) -> AutoresetMode:
        """How finished sub-envs restart."""
        return self.metadata["autoreset_mode"]

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Reset every sub-env, or those in ``options["reset_mask"]``.

        ``options["prompt"]`` gives the prompts: one string for all, or one per sub-env being reset.
        ``options["group_size"] = k`` draws one task prompt per group of ``k`` consecutive sub-envs being reset
        (k completions of each prompt, as RLOO and pairwise preferences need). ``options["prompt_index"]`` names
        the task's prompts by index instead, one per sub-env being reset (no draw).
        """
        if isinstance(seed, list):
            seed = seed[0]
        super().reset(seed=seed)
        options = options or {}
        rows = self._all
        if "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], dtype=bool)
            if mask.shape != (self.num_envs,):
                raise ConfigError(f"reset_mask must be a boolean array of shape ({self.num_envs},).")
            rows = np.flatnonzero(mask)
        prompts = options.get("prompt")
        if isinstance(prompts, str):
            prompts = [prompts] * len(rows)
        self.episodes.start(rows, self.np_random, prompts, options.get("group_size", 1), options.get("prompt_index"))
        self._pending_reset[rows] = False
        n_tokens = self.episodes.length - self.episodes.prompt_len
        return self.episodes.observation(self._all), {"n_tokens": n_tokens, "_n_tokens": np.ones(self.num_envs, bool)}

    def step(self, actions):
        """Append one token to every running sub-env."""
        n = self.num_envs
        rewards = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        actions = self.episodes.check_actions(actions, self._all)

        restarted = np.zeros(n, dtype=bool)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP and self._pending_reset.any():
            restarted = self._pending_reset.copy()
            self.episodes.start(np.flatnonzero(restarted), self.np_random)
            self._pending_reset[:] = False
        # Restarted rows, and finished rows in disabled mode, ignore their action this step.
        rows = np.flatnonzero(~self.episodes.done & ~restarted)
        if len(rows):
            term, trunc = self.episodes.advance(rows, actions[rows].astype(np.int64))
            terminated[rows], truncated[rows] = term, trunc

        info: dict[str, Any] = {
            "n_tokens": self.episodes.length - self.episodes.prompt_len,
            "_n_tokens": np.ones(n, dtype=bool),
        }
        ended = np.flatnonzero(terminated | truncated)
        if len(ended):
            self._add_final_info(info, ended)
            if self.autoreset_mode == AutoresetMode.NEXT_STEP:
                self._pending_reset[ended] = True
        return self.episodes.observation(self._all), rewards, terminated, truncated, info

    def get_state(self, rows: Sequence[int] | None = None) -> tuple[EpisodeState, ...]:
        """Snapshots of the episodes of ``rows`` (all sub-envs when not given), for :meth:`set_state`."""
        return tuple(self.episodes.get_state(int(r)) for r in (self._all if rows is None else rows))

    def set_state(self, states: Sequence[EpisodeState], rows: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """Restore snapshots into ``rows`` (all sub-envs when not given); returns the whole observation.

        A snapshot may go to another row than the one it came from (k branches of one episode).
        """
        rows = self._all if rows is None else np.asarray(rows, dtype=np.int64)
        if len(states) != len(rows):
            raise ConfigError(f"set_state() got {len(states)} states for {len(rows)} rows; give one per row.")
        for row, state in zip(rows, states, strict=True):
            self.episodes.set_state(int(row), state)
            self._pending_reset[row] = False
        return self.episodes.observation(self._all)

    def _add_final_info(self, info: dict[str, Any], ended: np.ndarray) -> None:
        for row, row_info in zip(ended, self.episodes.final_info(ended), strict=True):
            for key, value in row_info.items():
                if key not in info:
                    info[key] = np.empty(self.num_envs, dtype=object if not isinstance(value, int) else np.int64)
                    info[f"_{key}"] = np.zeros(self.num_envs, dtype=bool)
                info[key][row] = value
                info[f"_{key}"][row] = True

    def render(self) -> tuple[str, ...] | None:
        """Each sub-env's prompt and completion so far (``render_mode="ansi"``)."""
        if self.render_mode is None:
            return None
        return tuple(self.episodes.render_row(row) for row in range(self.num_envs))
