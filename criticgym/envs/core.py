"""The state of B text-generation episodes as fixed-width arrays: the one mechanism behind both envs.

Row layout (left-aligned): ``ids[b, :prompt_len[b]]`` is the prompt, ``ids[b, prompt_len[b]:length[b]]`` the
completion so far, the rest is padding; ``mask`` is 1 on the first ``length[b]`` positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces

from criticgym.envs.tasks import Prompt, TaskSpec, get_task, task_prompts
from criticgym.errors import ConfigError, InvalidActionError, PromptTooLongError
from criticgym.rollout.models import eos_token_ids

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class EpisodeState:
    """A snapshot of one episode, for rewinding (``get_state`` / ``set_state``)."""

    ids: np.ndarray  # (W,) int64
    prompt_len: int
    length: int
    done: bool
    prompt: Prompt
    prompt_index: int


def draw_prompts(rng: np.random.Generator, n_prompts: int, n_rows: int, group_size: int = 1) -> np.ndarray:
    """Indices of the prompts that ``n_rows`` episodes start from: one draw per group of ``group_size`` rows.

    The draw a vector env's reset makes; a batch split across workers draws it whole and takes its rows.
    """
    if group_size < 1 or n_rows % group_size:
        raise ConfigError(
            f"group_size={group_size} must be at least 1 and divide the {n_rows} environments being reset."
        )
    return np.repeat(rng.integers(n_prompts, size=n_rows // group_size), group_size)


def resolve_tokenizer(model: str | PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """A tokenizer from a model name (built-in, folder, hub id) or an already loaded tokenizer."""
    if isinstance(model, str):
        from criticgym.rollout.models import load_tokenizer

        return load_tokenizer(model)
    if not callable(getattr(model, "batch_decode", None)):
        raise ConfigError(f"model must be a model name or a transformers tokenizer, got {type(model).__name__}.")
    return model


def _size(name: str, value: int | None, default: int) -> int:
    """An explicit size (0 and negatives rejected, not replaced by the default) or the task's default."""
    if value is None:
        return int(default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer (or None for the task's default), got {value!r}.")
    return int(value)


class EpisodeBatch:
    """B episodes of one task, advanced one token column at a time."""

    def __init__(
        self,
        num_rows: int,
        task: str | TaskSpec,
        model: str | PreTrainedTokenizerBase = "tiny",
        split: str = "train",
        max_new_tokens: int | None = None,
        max_prompt_tokens: int | None = None,
    ) -> None:
        if num_rows < 1:
            raise ConfigError(f"num_envs must be at least 1, got {num_rows}.")
        self.task = get_task(task)
        self.max_new_tokens = _size("max_new_tokens", max_new_tokens, self.task.max_new_tokens)
        self.max_prompt_tokens = _size("max_prompt_tokens", max_prompt_tokens, self.task.max_prompt_tokens)
        self.tokenizer = resolve_tokenizer(model)
        self.split = split
        self.prompts = task_prompts(self.task, split, self.tokenizer, self.max_prompt_tokens)
        self.width = self.max_prompt_tokens + self.max_new_tokens
        self.vocab_size = len(self.tokenizer)
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        )
        self.eos_ids = np.array(eos_token_ids(self.tokenizer), dtype=np.int64)  # the engine's definition

        self.ids = np.full((num_rows, self.width), self.pad_id, dtype=np.int64)
        self.mask = np.zeros((num_rows, self.width), dtype=np.int8)
        self.prompt_len = np.zeros(num_rows, dtype=np.int64)
        self.length = np.zeros(num_rows, dtype=np.int64)
        self.done = np.ones(num_rows, dtype=bool)  # no episode has started
        self.started = np.zeros(num_rows, dtype=bool)
        self.prompt: list[Prompt] = [Prompt((), "")] * num_rows
        self.prompt_index = np.full(num_rows, -1, dtype=np.int64)

    # -- spaces ------------------------------------------------------------------------------------------

    def observation_space(self) -> spaces.Dict:
        """Token ids and attention mask, each a fixed-width vector."""
        return spaces.Dict(
            {
                "input_ids": spaces.Box(0, self.vocab_size - 1, shape=(self.width,), dtype=np.int64),
                "attention_mask": spaces.Box(0, 1, shape=(self.width,), dtype=np.int8),
            }
        )

    # -- episode life ------------------------------------------------------------------------------------

    def encode_prompt(self, text: str) -> Prompt:
        """A user-given prompt, checked against the width of the observation."""
        if not isinstance(text, str) or not text:
            raise ConfigError(f"A prompt must be a non-empty string, got {text!r}.")
        ids = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) > self.max_prompt_tokens:
            raise PromptTooLongError(
                f"The prompt has {len(ids)} tokens but this env accepts at most {self.max_prompt_tokens}. "
                f"Shorten it, or make the env with max_prompt_tokens={len(ids)} (or more)."
            )
        return Prompt(ids, text)

    def start(
        self,
        rows: np.ndarray,
        rng: np.random.Generator,
        prompts: list[str] | None = None,
        group_size: int = 1,
        indices: Sequence[int] | None = None,
    ) -> None:
        """Begin new episodes on ``rows``.

        Their prompts: the given texts, the task's prompts at ``indices``, or prompts drawn from the task with
        ``rng`` (:func:`draw_prompts`). With ``group_size=k``, each drawn prompt goes to ``k`` consecutive rows.
        """
        if prompts is not None:
            if len(prompts) != len(rows):
                raise ConfigError(f"Got {len(prompts)} prompts for {len(rows)} environments; give one per environment.")
            chosen = [self.encode_prompt(p) for p in prompts]
            indices = np.full(len(rows), -1)
        else:
            if indices is None:
                indices = draw_prompts(rng, len(self.prompts), len(rows), group_size)
            indices = np.asarray(indices, dtype=np.int64)
            n = len(self.prompts)
            if indices.shape != (len(rows),) or indices.min(initial=0) < 0 or indices.max(initial=0) >= n:
                raise ConfigError(
                    f"prompt_index needs one index in [0, {len(self.prompts)}) per environment being reset "
                    f"({len(rows)}); got {indices.tolist()}."
                )
            chosen = [self.prompts[i] for i in indices]
        self.ids[rows] = self.pad_id
        self.mask[rows] = 0
        for row, prompt, index in zip(rows, chosen, indices, strict=True):
            n = len(prompt.ids)
            self.ids[row, :n] = prompt.ids
            self.mask[row, :n] = 1
            self.prompt_len[row] = self.length[row] = n
            self.prompt[row] = prompt
            self.prompt_index[row] = index
        self.done[rows] = False
        self.started[rows] = True

    def check_actions(self, actions: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Validate token ids before they touch the state."""
        actions = np.asarray(actions)
        integral = np.issubdtype(actions.dtype, np.integer) or (
            np.issubdtype(actions.dtype, np.floating) and bool(np.all(np.mod(actions, 1) == 0))
        )
        if actions.shape != rows.shape or not integral:
            raise InvalidActionError(
                f"Actions must be {len(rows)} integer token ids, got an array of shape {actions.shape} "
                f"and dtype {actions.dtype}."
            )
        bad = (actions < 0) | (actions >= self.vocab_size)
        if bad.any():
            raise InvalidActionError(
                f"Action {actions[bad][0]} is outside the vocabulary [0, {self.vocab_size}); a policy whose output "
                "layer is wider than the tokenizer must mask the extra logits."
            )
        return actions.astype(np.int64)

    def advance(self, rows: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Append one token to each of ``rows``; return their (terminated, truncated) flags."""
        not_started = ~self.started[rows]
        if not_started.any():
            raise InvalidActionError("step() was called before reset(); call reset() first.")
        finished = self.done[rows]
        if finished.any():
            raise InvalidActionError("step() was called on a finished episode; call reset() first.")
        self.ids[rows, self.length[rows]] = tokens
        self.mask[rows, self.length[rows]] = 1
        self.length[rows] += 1
        terminated = np.isin(tokens, self.eos_ids)
        truncated = ~terminated & (self.length[rows] - self.prompt_len[rows] >= self.max_new_tokens)
        self.done[rows] = terminated | truncated
        return terminated, truncated

    # -- reading the state -------------------------------------------------------------------------------

    def observation(self, rows: np.ndarray | int) -> dict[str, np.ndarray]:
        """Copies of the rows' token ids and masks (one row -> 1-D arrays)."""
        return {"input_ids": self.ids[rows].copy(), "attention_mask": self.mask[rows].copy()}

    def completion_ids(self, row: int) -> np.ndarray:
        """The tokens generated so far in ``row``."""
        return self.ids[row, self.prompt_len[row] : self.length[row]].copy()

    def completion_texts(self, rows: np.ndarray) -> list[str]:
        """Decoded completions (special tokens such as EOS dropped), one batched decode."""
        return self.tokenizer.batch_decode([self.completion_ids(r) for r in rows], skip_special_tokens=True)

    def final_info(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """What a finished episode reports: its prompt, completion and reference, as text and ids."""
        texts = self.completion_texts(rows)
        infos = []
        for row, text in zip(rows, texts, strict=True):
            info = {
                "prompt": self.prompt[row].text,
                "completion": text,
                "completion_ids": self.completion_ids(row),
                "prompt_index": int(self.prompt_index[row]),
            }
            if self.prompt[row].reference is not None:
                info["reference"] = self.prompt[row].reference
            infos.append(info)
        return infos

    def get_state(self, row: int) -> EpisodeState:
        """Snapshot one row."""
        return EpisodeState(
            ids=self.ids[row, : self.length[row]].copy(),
            prompt_len=int(self.prompt_len[row]),
            length=int(self.length[row]),
            done=bool(self.done[row]),
            prompt=self.prompt[row],
            prompt_index=int(self.prompt_index[row]),
        )

    def set_state(self, row: int, state: EpisodeState) -> None:
        """Restore one row from a snapshot taken on an env of the same width."""
        if not isinstance(state, EpisodeState):
            raise ConfigError(f"set_state() takes what get_state() returned, got {type(state).__name__}.")
        if state.length > self.width:
            raise ConfigError(f"The state holds {state.length} tokens but this env is {self.width} wide.")
        self.ids[row] = self.pad_id
        self.mask[row] = 0
        self.ids[row, : state.length] = state.ids
        self.mask[row, : state.length] = 1
        self.prompt_len[row], self.length[row], self.done[row] = state.prompt_len, state.length, state.done
        self.prompt[row], self.prompt_index[row] = state.prompt, state.prompt_index
        self.started[row] = True

    def render_row(self, row: int) -> str:
        """``prompt⟦completion⟧`` (the brackets close when the episode has ended)."""
        completion = self.completion_texts(np.array([row]))[0]
        return f"{self.prompt[row].text}⟦{completion}{'⟧' if self.done[row] else ''}"
