"""Language feedback inside an episode (SELF): answer, then feedback in words, then a refined answer.

:class:`LanguageFeedback` wraps a single :class:`~criticgym.envs.TextGenEnv`. The policy writes its answer; when
that turn ends, a feedback source critiques it, and the episode goes on from a new observation, the task's
refinement context (prompt, answer, feedback; :class:`~criticgym.envs.tasks.FeedbackPrompts`), in which the policy
writes its refined answer. The episode ends with the refinement. The feedback reaches the policy through the
observation and ``info["feedback"]``.

The last step's info describes the episode as a reward wrapper outside expects it: ``prompt`` and ``reference`` are
the original ones, ``completion`` and ``completion_ids`` the refinement; ``answer`` and ``feedback`` are added. So
``SparseExtrinsicReward`` around it scores the refined answer. The step that ends the answer turn pays 0 and
reports ``turn="feedback"`` with the answer and the feedback.

``gym.make("criticgym/Arithmetic-v0", feedback="program")`` builds it with the task's program annotator (or give
any feedback source: a :class:`~criticgym.critics.feedback.ModelFeedback` around the policy or an LLM server).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from criticgym.critics.protocols import FeedbackWriter, check_role
from criticgym.errors import ConfigError, PromptTooLongError


@dataclass(frozen=True)
class FeedbackState:
    """A snapshot of a feedback episode: the inner env's and the turn's."""

    inner: Any
    turn: str
    prompt: str
    reference: str | None
    answer: str | None
    feedback: str | None


class LanguageFeedback(gym.Wrapper):
    """Two turns per episode: the answer, then (after feedback in words) its refinement.

    Args:
        env: a single criticgym env (its observation must be wide enough for the refinement context: make it with
            a larger ``max_prompt_tokens``; ``gym.make(..., feedback=...)`` does).
        source: a feedback writer (``feedback`` and ``refine`` methods, :mod:`criticgym.critics.feedback`).
        layout: the task's feedback prompts (the task's when not given).
    """

    def __init__(self, env: gym.Env, source: FeedbackWriter, layout: Any = None) -> None:
        super().__init__(env)
        from criticgym.critics.feedback import as_feedback_writer

        source = as_feedback_writer(source)
        check_role(source, FeedbackWriter, "Language feedback")
        self.source = source
        self.layout = layout or env.unwrapped.task.feedback
        if self.layout is None:
            raise ConfigError(f"Task {env.unwrapped.task.name!r} has no feedback prompts; give its TaskSpec some.")
        self._turn, self._prompt, self._reference = "answer", "", None
        self._answer: str | None = None
        self._feedback: str | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode at its answer turn."""
        observation, info = self.env.reset(seed=seed, options=options)
        prompt = self.env.unwrapped.episodes.prompt[0]
        self._turn, self._prompt, self._reference = "answer", prompt.text, prompt.reference
        self._answer = self._feedback = None
        return observation, {**info, "turn": "answer"}

    def step(self, action):
        """Append a token; at the end of the answer, critique it and open the refinement turn."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        if not (terminated or truncated):
            return observation, reward, False, False, {**info, "turn": self._turn}
        if self._turn == "answer":
            self._answer = info["completion"]
            references = [self._reference] if self._reference is not None else None
            self._feedback = self.source.feedback([self._prompt], [self._answer], references)[0]
            context = self.layout.refine_context(self._prompt, self._answer, self._feedback)
            try:
                observation, _ = self.env.reset(options={"prompt": context})
            except PromptTooLongError as exc:
                raise PromptTooLongError(
                    f"The refinement context does not fit the observation: {exc} Feedback episodes need room for "
                    "prompt, answer and feedback; gym.make(..., feedback=...) sizes it with feedback_tokens."
                ) from exc
            self._turn = "refinement"
            turn = {"turn": "feedback", "answer": self._answer, "feedback": self._feedback}
            return observation, 0.0, False, False, {"n_tokens": info["n_tokens"], **turn}
        info = {**info, "prompt": self._prompt, "answer": self._answer, "feedback": self._feedback, "turn": "end"}
        info.pop("reference", None)
        if self._reference is not None:
            info["reference"] = self._reference
        return observation, reward, terminated, truncated, info

    def get_state(self) -> FeedbackState:
        """A snapshot of the episode (the inner env's and the turn's)."""
        inner = self.env.get_wrapper_attr("get_state")()
        return FeedbackState(inner, self._turn, self._prompt, self._reference, self._answer, self._feedback)

    def set_state(self, state: FeedbackState):
        """Restore :meth:`get_state`'s snapshot; returns the observation."""
        if not isinstance(state, FeedbackState):
            raise ConfigError(f"set_state() takes what get_state() returned, got {type(state).__name__}.")
        observation = self.env.get_wrapper_attr("set_state")(state.inner)
        self._turn, self._prompt, self._reference = state.turn, state.prompt, state.reference
        self._answer, self._feedback = state.answer, state.feedback
        return observation
