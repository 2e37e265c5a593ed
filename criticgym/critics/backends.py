"""LLM backends: one interface over a local transformers model and an OpenAI-compatible HTTP server.

Both offer ``generate(prompts) -> texts`` (greedy) and ``next_token_logprobs(prompts, candidates) -> (N, C)``
(the log-probability of each candidate string's first token as the next token; judges read soft labels from it).

The HTTP backend speaks ``/v1/chat/completions`` or ``/v1/completions`` as served by vLLM, llama.cpp's server,
Ollama and hosted APIs. It bounds everything: a timeout per request, a concurrency limit, and a fixed number of
retries with exponential backoff on 429, 5xx, time-outs, dropped connections and unreadable bodies. The API key
is read from an environment variable and never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from criticgym import flops
from criticgym.errors import ConfigError, CriticGymError, require
from criticgym.rewards import DEFAULT_MODEL
from criticgym.specs import OpenAIServer, Policy, parse_model

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class BackendError(CriticGymError):
    """A backend failed after its retries, or answered something that cannot be used."""


class LocalBackend:
    """A transformers causal LM, generating greedily in batches through the rollout engine.

    Args:
        model: a name for :func:`~criticgym.rollout.load_policy` or a ``(model, tokenizer)`` pair.
        device: where it runs.
        chat: wrap each prompt in the tokenizer's chat template as a user message (when it has one).
        batch_size: prompts per forward pass.
    """

    def __init__(
        self,
        model: str | tuple[PreTrainedModel, PreTrainedTokenizerBase] = DEFAULT_MODEL,
        device: str = "cpu",
        chat: bool = True,
        batch_size: int = 16,
    ) -> None:
        from criticgym.rollout import RolloutEngine, load_policy

        self.model, self.tokenizer = load_policy(model, device=device) if isinstance(model, str) else model
        flops.track(self.model)
        self.engine = RolloutEngine(self.model, self.tokenizer)
        self.chat = chat and getattr(self.tokenizer, "chat_template", None) is not None
        self.batch_size = batch_size

    def _format(self, prompt: str) -> list[int]:
        if self.chat:
            messages = [{"role": "user", "content": prompt}]
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        # a completion-style prompt starts as the model's training texts did: with BOS where the tokenizer adds one
        # (Gemma); SmolLM2's adds none
        return self.tokenizer(prompt)["input_ids"]

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 128) -> list[str]:
        """Greedy completions, decoded without special tokens."""
        from criticgym.rollout import GREEDY

        texts: list[str] = []
        for i in range(0, len(prompts), self.batch_size):
            encoded = [self._format(p) for p in prompts[i : i + self.batch_size]]
            batch = self.engine.generate(encoded, max_new_tokens=max_new_tokens, sampling=GREEDY)
            texts += self.tokenizer.batch_decode(
                [row[: int(n)] for row, n in zip(batch.completion_ids, batch.lengths, strict=True)],
                skip_special_tokens=True,
            )
        return texts

    def next_token_logprobs(self, prompts: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """Log-probabilities of each candidate's first token, from one forward pass per batch."""
        import torch

        from criticgym.rollout import left_pad

        first = [self.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in candidates]
        rows = []
        for i in range(0, len(prompts), self.batch_size):
            ids, mask = left_pad(
                [self._format(p) for p in prompts[i : i + self.batch_size]], self.engine.pad_id, self.engine.device
            )
            with torch.no_grad():
                logits = (
                    self.model(
                        input_ids=ids,
                        attention_mask=mask,
                        position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                        logits_to_keep=1,
                    )
                    .logits[:, -1]
                    .float()
                )
            rows.append(logits.log_softmax(-1)[:, first].cpu().numpy())
        return np.concatenate(rows).astype(np.float64)


def make_backend(spec: Any, chat: bool = True) -> Any:
    """A backend from a model (:func:`criticgym.specs.parse_model`): a server's client, else a :class:`LocalBackend`.

    Objects pass through. The server form, ``openai:<model>@<url>`` (:class:`~criticgym.specs.OpenAIServer`), is what
    the command line takes wherever a model is named (``--critic-model``, ``--judge-model``), e.g.
    ``openai:Qwen2.5-7B-Instruct@http://127.0.0.1:8000``; its key is read from ``$OPENAI_API_KEY``. The policy
    (``self``) is the caller's to resolve: registration gives it as a ``(model, tokenizer)`` pair.

    Example:
        >>> make_backend("openai:smollm2@http://127.0.0.1:8080", chat=False)
        OpenAIBackend(base_url='http://127.0.0.1:8080/v1', model='smollm2', chat=False)
    """
    model = parse_model(spec)
    if isinstance(model, OpenAIServer):
        return OpenAIBackend(model.url, model.model, chat=chat)
    if isinstance(model, Policy):
        raise ConfigError(
            "'self' is the policy, which only the env or the run holds: name it where a judge is made "
            "(judge_model='label:self' with gym.make's policy=, or in criticgym train), or pass (model, tokenizer)."
        )
    return LocalBackend(model, chat=chat) if isinstance(model, str | tuple) else model  # a name, (model, tokenizer)


_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIBackend:
    """A client for an OpenAI-compatible server (vLLM, llama.cpp server, Ollama, hosted APIs).

    Args:
        base_url: the server's root, e.g. ``"http://127.0.0.1:8000"`` (``/v1`` is added when missing).
        model: the model name the server expects.
        api_key_env: environment variable that holds the API key (no key is sent when it is unset).
        chat: use ``/v1/chat/completions``; ``False`` uses ``/v1/completions``.
        timeout: seconds per request (connect, read, write).
        max_retries: retries after the first attempt, on 429, 5xx, time-outs and broken or unreadable answers.
        backoff: the first retry waits this many seconds, doubling each time (or what ``Retry-After`` asks, capped
            at ``max_backoff``).
        max_backoff: the longest wait between two attempts.
        concurrency: requests in flight at once.
        top_logprobs: how many next-token alternatives to ask for in :meth:`next_token_logprobs`.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        chat: bool = True,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        concurrency: int = 4,
        top_logprobs: int = 20,
    ) -> None:
        httpx = require("httpx", "httpx", "The OpenAI-compatible backend")
        if max_retries < 0 or concurrency < 1 or timeout <= 0:
            raise ConfigError("max_retries must be >= 0, concurrency >= 1 and timeout > 0.")
        root = base_url.rstrip("/")
        self.base_url = root if root.endswith("/v1") else root + "/v1"
        self.model, self.chat = model, chat
        self.timeout, self.max_retries, self.backoff, self.max_backoff = timeout, max_retries, backoff, max_backoff
        self.concurrency, self.top_logprobs = concurrency, top_logprobs
        self.api_key_env = api_key_env
        self._client = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=concurrency))
        self._httpx = httpx

    def __repr__(self) -> str:
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r}, chat={self.chat})"

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_client", "_httpx")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        import httpx

        self._httpx = httpx
        self._client = httpx.Client(timeout=self.timeout, limits=httpx.Limits(max_connections=self.concurrency))

    # -- requests ----------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.base_url}/{path}"
        problem = ""
        for attempt in range(self.max_retries + 1):
            wait = min(self.backoff * 2**attempt, self.max_backoff)
            try:
                response = self._client.post(url, json=payload, headers=self._headers())
            except self._httpx.TimeoutException:
                problem = f"no answer within {self.timeout} s"
            except self._httpx.TransportError as exc:
                problem = f"connection failed ({type(exc).__name__})"
            else:
                if response.status_code == 200:
                    try:
                        body = response.json()
                    except ValueError:
                        problem = "the answer was not JSON"
                    else:
                        if isinstance(body, dict):
                            return body
                        problem = "the answer was not a JSON object"
                elif response.status_code in _RETRY_STATUS:
                    problem = f"HTTP {response.status_code}"
                    retry_after = response.headers.get("retry-after", "")
                    if retry_after.replace(".", "", 1).isdigit():
                        wait = min(float(retry_after), self.max_backoff)
                else:  # 4xx other than the transient ones: retrying cannot help
                    raise BackendError(
                        f"{url} refused the request: HTTP {response.status_code}. Check the model name, the "
                        f"payload and the key in ${self.api_key_env}."
                    )
            if attempt < self.max_retries:
                time.sleep(wait)
        raise BackendError(f"{url} failed after {self.max_retries + 1} attempts: {problem}.")

    def _map(self, fn, items: Sequence[Any]) -> list[Any]:
        if self.concurrency == 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(fn, items))

    def _request(self, prompt: str, max_tokens: int, logprobs: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, "temperature": 0.0}
        if self.chat:
            payload["messages"] = [{"role": "user", "content": prompt}]
            if logprobs:
                payload.update(logprobs=True, top_logprobs=self.top_logprobs)
            return self._post("chat/completions", payload)
        payload["prompt"] = prompt
        if logprobs:
            payload["logprobs"] = self.top_logprobs
        return self._post("completions", payload)

    # -- the backend interface ---------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 128) -> list[str]:
        """Greedy completions, ``concurrency`` requests at a time."""

        def one(prompt: str) -> str:
            body = self._request(prompt, max_new_tokens, logprobs=False)
            try:
                choice = body["choices"][0]
                text = choice["message"]["content"] if self.chat else choice["text"]
            except (KeyError, IndexError, TypeError) as exc:
                raise BackendError(f"{self.base_url} answered without choices[0] text: {str(body)[:200]}") from exc
            return text if isinstance(text, str) else ""

        return self._map(one, list(prompts))

    def next_token_logprobs(self, prompts: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """Candidate log-probabilities from the server's ``top_logprobs`` of the first generated token.

        A candidate missing from the top alternatives gets -inf. A server that returns no log-probabilities at all
        raises :class:`BackendError`.
        """

        def one(prompt: str) -> np.ndarray:
            body = self._request(prompt, 1, logprobs=True)
            top = _first_token_alternatives(body, self.chat)
            if top is None:
                raise BackendError(
                    f"{self.base_url} returned no log-probabilities. Serve a model that supports them "
                    "(vLLM: --max-logprobs; llama.cpp server: n_probs) or use a LocalBackend."
                )
            out = np.full(len(candidates), -np.inf)
            for j, candidate in enumerate(candidates):
                for token, logprob in top.items():
                    if token.strip() == candidate.strip():
                        out[j] = max(out[j], float(logprob))
            return out

        return np.stack(self._map(one, list(prompts))) if prompts else np.zeros((0, len(candidates)))


def _first_token_alternatives(body: dict[str, Any], chat: bool) -> dict[str, float] | None:
    try:
        logprobs = body["choices"][0]["logprobs"]
        if chat:
            return {alt["token"]: alt["logprob"] for alt in logprobs["content"][0]["top_logprobs"]}
        return dict(logprobs["top_logprobs"][0])
    except (KeyError, IndexError, TypeError):
        return None
