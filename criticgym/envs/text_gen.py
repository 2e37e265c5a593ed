"""TextGenEnv: one episode is one completion; an action is the next token."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from criticgym.envs.core import EpisodeBatch, EpisodeState
from criticgym.envs.tasks import TaskSpec
from criticgym.errors import InvalidActionError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_ROW = np.array([0])


class TextGenEnv(gym.Env):
    """Text generation as a Markov decision process.

    - State: the prompt plus the tokens generated so far.
    - Action: the next token id, ``Discrete(vocab_size)``.
    - Observation: ``{"input_ids": (W,) int64, "attention_mask": (W,) int8}``, left-aligned and padded to the
      fixed width ``W = max_prompt_tokens + max_new_tokens``.
    - Reward: 0 on every step. Rewards come from the wrappers in :mod:`criticgym.wrappers`.
    - Termination: the EOS token (``terminated``); the token budget (``truncated``). The budget is the episode
      limit: an outer ``TimeLimit`` shorter than it (``gym.make(..., max_episode_steps=n)``) cuts the completion
      before it is scored (the reward wrappers' ``info["unscored"]``); ``criticgym.make`` refuses one.
    - Info: ``n_tokens`` on every step; at the last step also ``prompt``, ``completion`` (text),
      ``completion_ids``, ``prompt_index`` and, for tasks with one, ``reference``.

    Args:
        task: a task name (``"sentiment"``, ``"detoxify"``, ``"summarize"``) or a :class:`TaskSpec`.
        model: the model whose tokenizer defines the vocabulary (a name for ``load_tokenizer``), or a tokenizer.
        split: ``"train"`` or ``"test"`` prompts.
        max_new_tokens: completion budget (the task's when not given).
        max_prompt_tokens: longest accepted prompt (the task's when not given).
        render_mode: ``"ansi"`` or ``None``.

    Example:
        >>> env = TextGenEnv("sentiment", model="tiny")
        >>> obs, info = env.reset(seed=0, options={"prompt": "The film is"})
        >>> obs, reward, terminated, truncated, info = env.step(env.unwrapped.eos_token_id)
        >>> terminated, info["completion"]
        (True, '')
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        task: str | TaskSpec = "sentiment",
        model: str | PreTrainedTokenizerBase = "tiny",
        split: str = "train",
        max_new_tokens: int | None = None,
        max_prompt_tokens: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        if render_mode not in (None, "ansi"):
            # stable-baselines3's make_vec_env asks every env for "rgb_array": accept it, render nothing
            gym.logger.warn(f"TextGenEnv renders only in 'ansi' mode; render_mode={render_mode!r} renders nothing.")
        self.render_mode = render_mode
        self.episodes = EpisodeBatch(1, task, model, split, max_new_tokens, max_prompt_tokens)
        self.action_space = spaces.Discrete(self.episodes.vocab_size)
        self.observation_space = self.episodes.observation_space()

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer that defines the actions."""
        return self.episodes.tokenizer

    @property
    def task(self) -> TaskSpec:
        """The task this env serves."""
        return self.episodes.task

    @property
    def max_new_tokens(self) -> int:
        """Completion budget."""
        return self.episodes.max_new_tokens

    @property
    def eos_token_id(self) -> int:
        """The tokenizer's EOS token, which ends an episode."""
        return int(self.episodes.eos_ids[0])

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """Every token that ends an episode (:func:`criticgym.rollout.eos_token_ids`, shared with the engine)."""
        return tuple(int(t) for t in self.episodes.eos_ids)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start a completion: of ``options["prompt"]`` when given, else of a prompt drawn from the task."""
        super().reset(seed=seed)
        prompt = (options or {}).get("prompt")
        self.episodes.start(_ROW, self.np_random, None if prompt is None else [prompt])
        return self.episodes.observation(0), {"n_tokens": 0, "prompt": self.episodes.prompt[0].text}

    def step(self, action):
        """Append one token."""
        if np.ndim(action) > 1 or np.size(action) != 1:
            raise InvalidActionError(
                f"A TextGenEnv action is one token id, got an array of shape {np.shape(action)}; a batch of actions "
                "goes to the vector env (gym.make_vec)."
            )
        tokens = self.episodes.check_actions(np.reshape(action, (1,)), _ROW)
        terminated, truncated = self.episodes.advance(_ROW, tokens)
        info: dict[str, Any] = {"n_tokens": int(self.episodes.length[0] - self.episodes.prompt_len[0])}
        if terminated[0] or truncated[0]:
            info.update(self.episodes.final_info(_ROW)[0])
        return self.episodes.observation(0), 0.0, bool(terminated[0]), bool(truncated[0]), info

    def get_state(self) -> EpisodeState:
        """A snapshot of the episode that :meth:`set_state` restores (search methods rewind with it)."""
        return self.episodes.get_state(0)

    def set_state(self, state: EpisodeState) -> dict[str, np.ndarray]:
        """Restore a snapshot; returns the observation of the restored state."""
        self.episodes.set_state(0, state)
        return self.episodes.observation(0)

    def render(self) -> str | None:
        """The prompt and the completion so far, as text (``render_mode="ansi"``)."""
        if self.render_mode != "ansi":
            gym.logger.warn("render() needs render_mode='ansi'; make the env with it.")
            return None
        return self.episodes.render_row(0)
