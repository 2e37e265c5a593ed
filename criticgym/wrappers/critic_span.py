"""Critic span-intrinsic rewards (RELC): a critic names good and bad spans; the tokens inside them are rewarded.

A critic can judge a completion only once it exists, so the dense part is paid in hindsight (the contract in
DESIGN.md): at the episode's last step the scalar reward grows by ``scale * sum(r_in)`` (so the episode return
stays the sum of the step rewards), and ``info["token_rewards"]`` holds the reward each step *should* have had:
what the wrapped env paid on that step plus ``scale * r_in_t``. Learners write that vector back onto the
episode's steps before computing advantages.

Spans become token rewards through character offsets of the generated tokens
(:mod:`criticgym.critics.offsets`), never by matching token strings.
"""

from __future__ import annotations

import contextvars
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from criticgym.critics.base import Critic, Critique, as_critic, checked_critiques
from criticgym.critics.offsets import span_token_rewards, token_char_offsets
from criticgym.critics.scorers import Scorer
from criticgym.errors import ConfigError
from criticgym.wrappers.sparse import RewindableVectorWrapper, SparseExtrinsicReward, SparseExtrinsicRewardVector

STAT_KEYS = ("critic_called", "critic_cached", "critic_spans", "critic_unlocated", "critic_parse_failed")


class SpanRewarder:
    """The mechanism shared by the single and vector wrappers: critique a batch, turn spans into token rewards.

    Args:
        critic: a :class:`~criticgym.critics.base.Critic` or a function of the same shape.
        tokenizer: the env's tokenizer (for character offsets of the generated tokens).
        positive_value: reward of a token inside a good span (RELC: 0.5 for sentiment and summarization).
        negative_value: reward of a token inside a bad span (RELC: -0.5).
        gate: call the critic only when the extrinsic score is below this (None: always).
        cache_size: critiques of identical (prompt, completion) pairs kept (0: no cache).
    """

    def __init__(
        self,
        critic: Critic | Callable[..., Sequence[Critique]],
        tokenizer: Any,
        positive_value: float = 0.5,
        negative_value: float = -0.5,
        gate: float | None = None,
        cache_size: int = 4096,
    ) -> None:
        if cache_size < 0:
            raise ConfigError(f"cache_size must be >= 0, got {cache_size}.")
        self.critic = as_critic(critic)
        self.tokenizer = tokenizer
        self.positive_value, self.negative_value = float(positive_value), float(negative_value)
        self.gate = gate
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], Critique] = OrderedDict()
        self.last_latency = 0.0  # seconds of the last critic call

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        completion_ids: Sequence[np.ndarray],
        extrinsic: Sequence[float | None],
    ) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
        """Per-token intrinsic rewards (unscaled) and statistics for each finished episode."""
        n = len(completions)
        critiques: list[Critique | None] = [None] * n
        stats: list[dict[str, Any]] = [{**dict.fromkeys(STAT_KEYS, 0), "critique": None} for _ in range(n)]
        wanted = [i for i in range(n) if self.gate is None or extrinsic[i] is None or extrinsic[i] < self.gate]
        missing = []
        for i in wanted:
            cached = self._cache.get((prompts[i], completions[i]))
            if cached is not None:
                self._cache.move_to_end((prompts[i], completions[i]))
                critiques[i], stats[i]["critic_cached"] = cached, 1
            else:
                missing.append(i)
        self.last_latency = 0.0
        if missing:  # one batched call for every episode that needs a fresh critique
            start = time.perf_counter()
            scores = [extrinsic[i] for i in missing]
            fresh = self.critic.critique(
                [prompts[i] for i in missing],
                [completions[i] for i in missing],
                None if any(s is None for s in scores) else scores,
            )
            fresh = checked_critiques(fresh, [completions[i] for i in missing], self.critic)
            self.last_latency = time.perf_counter() - start
            for i, critique in zip(missing, fresh, strict=True):
                critiques[i], stats[i]["critic_called"] = critique, 1
                if self.cache_size:
                    self._cache[(prompts[i], completions[i])] = critique
                    if len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        rewards = []
        for i, critique in enumerate(critiques):
            text, offsets = token_char_offsets(self.tokenizer, completion_ids[i])
            if critique is None:  # gated off: no intrinsic reward
                rewards.append(np.zeros(len(offsets)))
                continue
            if text != completions[i]:  # the critic read other text than the tokens decode to: trust nothing
                raise ConfigError("The completion text does not match its token ids; pass the env's own info.")
            rewards.append(span_token_rewards(critique.spans, offsets, self.positive_value, self.negative_value))
            stats[i]["critique"] = critique
            stats[i].update(
                critic_spans=len(critique.spans),
                critic_unlocated=critique.unlocated,
                critic_parse_failed=int(critique.parse_failed),
            )
        return rewards, stats


class CriticSpanReward(gym.Wrapper):
    """Dense rewards from a span critic, paid in hindsight at the last step.

    At an episode's last step ``info`` gains ``intrinsic_rewards`` (T,) (unscaled ``r_in``), ``token_rewards``
    (T,) (the hindsight vector; its sum is the episode return), ``critique`` (the :class:`Critique` or None when
    gated off), ``critic_latency_s`` and the counters ``critic_called``, ``critic_cached``, ``critic_spans``,
    ``critic_unlocated``, ``critic_parse_failed``.

    Args:
        env: a criticgym env (its final info carries the prompt, completion and completion ids).
        critic: the span critic.
        scale: RELC's ``alpha2``.
        positive_value, negative_value, gate, cache_size: see :class:`SpanRewarder`.

    Example:
        >>> from criticgym.critics import LexiconCritic
        >>> from criticgym.envs import TextGenEnv
        >>> env = CriticSpanReward(TextGenEnv("sentiment", max_new_tokens=2), LexiconCritic())
        >>> _ = env.reset(options={"prompt": "It was"})
        >>> _ = env.step(env.unwrapped.tokenizer(" a")["input_ids"][0])
        >>> _, reward, _, truncated, info = env.step(env.unwrapped.tokenizer(" joy")["input_ids"][0])
        >>> info["completion"], info["token_rewards"].tolist(), reward
        (' a joy', [0.0, 0.5], 0.5)
    """

    def __init__(
        self,
        env: gym.Env,
        critic: Critic | Callable[..., Sequence[Critique]],
        scale: float = 1.0,
        positive_value: float = 0.5,
        negative_value: float = -0.5,
        gate: float | None = None,
        cache_size: int = 4096,
    ) -> None:
        super().__init__(env)
        self.rewarder = SpanRewarder(critic, env.unwrapped.tokenizer, positive_value, negative_value, gate, cache_size)
        self.scale = float(scale)
        self._paid: list[float] = []  # what the wrapped env paid on each step of the current episode

    def reset(self, **kwargs):
        """Start an episode."""
        self._paid = []
        return self.env.reset(**kwargs)

    def get_state(self) -> tuple[Any, tuple[float, ...]]:
        """A snapshot of the episode through this wrapper: the inner env's state and the step rewards it paid.

        Call it on a ``gym.make`` env as ``env.get_wrapper_attr("get_state")()``.
        """
        return self.env.get_wrapper_attr("get_state")(), tuple(self._paid)

    def set_state(self, state: tuple[Any, tuple[float, ...]]):
        """Rewind to :meth:`get_state`'s snapshot; returns the observation. The abandoned branch leaves nothing."""
        inner, paid = state
        observation = self.env.get_wrapper_attr("set_state")(inner)
        self._paid = list(paid)
        return observation

    def step(self, action):
        """Step; at the episode's end, critique it and pay the dense part."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._paid.append(float(reward))
        if terminated or truncated:
            ids = info["completion_ids"]
            (r_in,), (stats,) = self.rewarder(
                [info["prompt"]], [info["completion"]], [ids], [info.get("extrinsic_reward")]
            )
            base = np.asarray(info.get("token_rewards", self._paid[-len(ids) :]), dtype=np.float64)
            info = {
                **info,
                **stats,
                "intrinsic_rewards": r_in,
                "token_rewards": base + self.scale * r_in,
                "critic_latency_s": self.rewarder.last_latency,
            }
            reward = float(reward) + self.scale * float(r_in.sum())
        return obs, reward, terminated, truncated, info


@dataclass
class _Ended:
    """An episode that ended and awaits its critique: what the critic reads and what its payment builds on."""

    row: int
    episode: int  # the row's reset count when it ended: a critique for an episode since reset is dropped
    prompt: str
    completion: str
    ids: np.ndarray
    extrinsic: float | None
    base: np.ndarray  # the step rewards the wrapped env paid (or its hindsight vector)


class CriticSpanRewardVector(RewindableVectorWrapper):
    """The vector version: the episodes that end together are critiqued in **one** batched critic call.

    ``info`` gains, for those sub-envs (with ``_key`` masks), ``intrinsic_rewards`` and ``token_rewards`` (object
    arrays of per-episode vectors), ``critic_latency_s`` (the critic call's seconds) and the counters of
    :class:`CriticSpanReward`.

    ``overlap=True`` (``autoreset_mode="disabled"`` only) takes the critic off the generation path: it runs in a
    background thread while the other episodes keep generating, and the episodes that end while it is busy go in
    its next call, as one batch. A finished sub-env idles until its critique is back and is paid on that idle step
    (its scalar reward and the info above, as a pairwise judge's late reward is); on the step the last episode
    ends, the wrapper waits for every critique. Rewards and hindsight vectors are those of ``overlap=False``; only
    the step that carries them moves. A critic that fails raises on the step that collects its call.
    """

    def __init__(
        self,
        env: VectorEnv,
        critic: Critic | Callable[..., Sequence[Critique]],
        scale: float = 1.0,
        positive_value: float = 0.5,
        negative_value: float = -0.5,
        gate: float | None = None,
        cache_size: int = 4096,
        overlap: bool = False,
    ) -> None:
        super().__init__(env)
        if overlap and env.metadata.get("autoreset_mode") != AutoresetMode.DISABLED:
            raise ConfigError(
                "overlap=True pays a finished episode on a later idle step, which only autoreset_mode='disabled' "
                "has; make the env with autoreset_mode='disabled' (as play() needs) or set overlap=False."
            )
        self.rewarder = SpanRewarder(critic, env.unwrapped.tokenizer, positive_value, negative_value, gate, cache_size)
        self.scale = float(scale)
        self.overlap = overlap
        self._paid: list[list[float]] = [[] for _ in range(self.num_envs)]
        self._ended = np.zeros(self.num_envs, dtype=bool)  # ended on the last step
        self._finished = np.zeros(self.num_envs, dtype=bool)  # ended since the row's reset
        self._episode = np.zeros(self.num_envs, dtype=np.int64)
        self._waiting: list[_Ended] = []  # overlap: ended, not yet sent to the critic
        self._running: tuple[list[_Ended], Future] | None = None  # overlap: the call in flight
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="criticgym-critic") if overlap else None

    def _pending(self, row: int) -> bool:
        queued = self._waiting + (self._running[0] if self._running else [])
        return any(e.row == row and e.episode == self._episode[row] for e in queued)

    def _own_state(self, row: int) -> tuple[tuple[float, ...], bool, bool]:
        if self._pending(row):
            raise ConfigError(
                f"Sub-env {row} has a critique in flight, so its snapshot would miss the reward; take snapshots "
                "before an episode ends, or make the env with critic_overlap=False."
            )
        return tuple(self._paid[row]), bool(self._ended[row]), bool(self._finished[row])

    def _set_own_state(self, row: int, state: tuple[tuple[float, ...], bool, bool]) -> None:
        self._paid[row], self._ended[row], self._finished[row] = list(state[0]), state[1], state[2]
        self._episode[row] += 1  # a critique still in flight for this row belongs to the abandoned branch

    def reset(self, *, seed=None, options=None):
        """Reset, forgetting the step rewards (and any critique in flight) of the sub-envs that restart."""
        if self._running is not None:  # let the call finish: nothing else touches the tokenizer meanwhile
            wait([self._running[1]])
        mask = (options or {}).get("reset_mask")
        for row in range(self.num_envs) if mask is None else np.flatnonzero(mask):
            self._paid[row] = []
            self._ended[row] = self._finished[row] = False
            self._episode[row] += 1
        self._waiting = [e for e in self._waiting if e.episode == self._episode[e.row]]
        return self.env.reset(seed=seed, options=options)

    def step(self, actions):
        """Step every sub-env, then critique the episodes that just ended together (or hand them to the thread)."""
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        for row in range(self.num_envs):
            if self._ended[row]:  # the step after an end resets (next_step mode) or idles (disabled mode)
                self._paid[row] = []
            else:
                self._paid[row].append(float(rewards[row]))
        self._ended = np.logical_or(terminated, truncated)
        self._finished |= self._ended
        extrinsic = info.get("extrinsic_reward")
        ended = []
        for i in np.flatnonzero(self._ended):
            n = len(info["completion_ids"][i])
            prior = info["token_rewards"][i] if "token_rewards" in info and info["_token_rewards"][i] else None
            base = np.asarray(prior if prior is not None else self._paid[i][-n:], dtype=np.float64)
            score = float(extrinsic[i]) if extrinsic is not None else None
            prompt, completion, ids = info["prompt"][i], info["completion"][i], info["completion_ids"][i]
            ended.append(_Ended(int(i), int(self._episode[i]), prompt, completion, ids, score, base))
        if not self.overlap:
            rewards, info = self._pay(ended, self._critique(ended), rewards, info)
            return obs, rewards, terminated, truncated, info
        self._waiting += ended
        calls = []
        if self._running is not None and (self._finished.all() or self._running[1].done()):
            calls.append(self._collect())
        if self._waiting and self._running is None:  # everything that ended meanwhile, in one call
            batch, self._waiting = self._waiting, []
            call = contextvars.copy_context().run  # the thread charges its FLOPs to this step's phase
            self._running = (batch, self._thread.submit(call, self._critique, batch))
        if self._finished.all() and self._running is not None:  # the last episode ended: wait for the rest
            calls.append(self._collect())
        for batch, critiqued in calls:
            rewards, info = self._pay(batch, critiqued, rewards, info)
        return obs, rewards, terminated, truncated, info

    def _collect(self) -> tuple[list[_Ended], tuple]:
        """The call in flight and its result (waiting for it; its exception, if it raised)."""
        batch, future = self._running
        self._running = None
        return batch, future.result()

    def close(self, **kwargs):
        """Stop the critic thread, then close the env."""
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        return super().close(**kwargs)

    def _critique(self, ended: list[_Ended]) -> tuple[list[np.ndarray], list[dict[str, Any]], float]:
        """One critic call for these episodes: unscaled token rewards, statistics, the call's seconds."""
        if not ended:
            return [], [], 0.0
        prompts, completions = [e.prompt for e in ended], [e.completion for e in ended]
        r_in, stats = self.rewarder(prompts, completions, [e.ids for e in ended], [e.extrinsic for e in ended])
        return r_in, stats, self.rewarder.last_latency

    def _pay(self, ended: list[_Ended], critiqued, rewards, info):
        """Add the dense part of these episodes to this step's rewards and info (episodes since reset dropped)."""
        r_in, stats, latency = critiqued
        keep = [k for k, e in enumerate(ended) if e.episode == self._episode[e.row]]
        if not keep:
            return rewards, info
        rewards = np.array(rewards, dtype=np.float64)
        info = dict(info)
        for k in keep:
            e = ended[k]
            rewards[e.row] += self.scale * float(r_in[k].sum())
            row = {
                "token_rewards": e.base + self.scale * r_in[k],
                "intrinsic_rewards": r_in[k],
                "critique": stats[k]["critique"],
                "critic_latency_s": latency,
                **{key: stats[k][key] for key in STAT_KEYS},
            }
            for key, value in row.items():
                _put(info, key, e.row, value, self.num_envs)
        return rewards, info


def _put(info: dict[str, Any], key: str, row: int, value: Any, n: int) -> None:
    """Set sub-env ``row``'s entry of a vector info column (and its ``_key`` mask), keeping the other rows'."""
    if key not in info:
        if isinstance(value, np.ndarray) or value is None or isinstance(value, Critique):
            info[key] = np.empty(n, dtype=object)
        else:
            info[key] = np.zeros(n, dtype=np.int64 if isinstance(value, int) else np.float64)
        info[f"_{key}"] = np.zeros(n, dtype=bool)
    else:  # the wrapped env's column (or this step's earlier payment): copy before writing
        info[key], info[f"_{key}"] = info[key].copy(), info[f"_{key}"].copy()
    info[key][row] = value
    info[f"_{key}"][row] = True


class RewardMix(CriticSpanReward):
    """RELC's reward ``r_t = alpha1 * r_ex * [t == T] + alpha2 * r_in_t``: a scorer plus a span critic.

    The scorer's raw score is handed to the critic (for gating, and for critics that read it).

    Args:
        env: a criticgym env without reward wrappers.
        scorer: the extrinsic scorer (name, object or function).
        critic: the span critic.
        alpha1: weight of the extrinsic score.
        alpha2: weight of the intrinsic span rewards.
        **kwargs: ``positive_value``, ``negative_value``, ``gate``, ``cache_size``.
    """

    def __init__(
        self,
        env: gym.Env,
        scorer: str | Scorer | Callable[..., Sequence[float]],
        critic: Critic | Callable[..., Sequence[Critique]],
        alpha1: float = 1.0,
        alpha2: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(SparseExtrinsicReward(env, scorer, scale=alpha1), critic, scale=alpha2, **kwargs)


class RewardMixVector(CriticSpanRewardVector):
    """The vector version of :class:`RewardMix`."""

    def __init__(
        self,
        env: VectorEnv,
        scorer: str | Scorer | Callable[..., Sequence[float]],
        critic: Critic | Callable[..., Sequence[Critique]],
        alpha1: float = 1.0,
        alpha2: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(SparseExtrinsicRewardVector(env, scorer, scale=alpha1), critic, scale=alpha2, **kwargs)
