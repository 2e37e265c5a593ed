"""LLMCritic: a language model that reads the policy's text and names its good and bad spans (RELC)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from string import Template

from criticgym.critics.backends import make_backend
from criticgym.critics.base import Critique, Span
from criticgym.critics.protocols import LLMBackend
from criticgym.critics.spans import header_sign, locate, parse_answer
from criticgym.errors import ConfigError
from criticgym.rewards import DEFAULT_MODEL

TEMPLATES = ("sentiment", "detoxify", "summarize")


def load_template(name_or_path: str | Path) -> Template:
    """A packaged critic prompt (``"sentiment"``, ``"detoxify"``, ``"summarize"``), your own file, or the text itself.

    Templates use ``$prompt``, ``$completion`` and ``$score_line`` (empty, or the extrinsic score), and ``$$``
    for a dollar sign. A string that contains ``$completion`` is taken as the template's text.
    """
    if str(name_or_path) in TEMPLATES:
        text = resources.files("criticgym.critics").joinpath("prompts", f"{name_or_path}.txt").read_text("utf-8")
    elif isinstance(name_or_path, str) and "$completion" in name_or_path:
        text = name_or_path
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(
                f"No critic template {name_or_path!r}: use one of {TEMPLATES}, a path to a text file, or a template "
                "text with $completion."
            )
        text = path.read_text("utf-8")
    template = Template(text)
    if "completion" not in template.get_identifiers():
        raise ConfigError(f"The critic template {name_or_path!r} must contain $completion.")
    return template


class LLMCritic:
    """Asks an LLM backend for the spans of each completion, and locates them by character offsets.

    Each answer is parsed leniently (see :mod:`criticgym.critics.spans`): an unreadable answer yields no spans
    and ``parse_failed=True``; a named span that is not in the completion is dropped and counted in
    ``unlocated``. Neither ever raises.

    Args:
        backend: an :class:`~criticgym.critics.backends.LLMBackend`, or a model name for a local one.
        template: a packaged template name, a path to your own, or its text (a task's ``critic_template``).
        max_new_tokens: length of the critic's answer.
        include_score: put the extrinsic score in the prompt (RELC does for summarization: the task's
            ``critic_sees_score``).
        default_sign: sign of spans listed before any "Positive/Negative spans" header. When not given: the sign
            of the header the template ends with, if it ends with one (RELC's sentiment prompt ends with
            "Identified Positive Text Span:", so the answer starts with positive spans), else -1.
    """

    def __init__(
        self,
        backend: LLMBackend | str = DEFAULT_MODEL,
        template: str | Path = "sentiment",
        max_new_tokens: int = 96,
        include_score: bool = False,
        default_sign: int | None = None,
    ) -> None:
        self.backend = make_backend(backend)
        self.template = load_template(template)
        self.max_new_tokens = max_new_tokens
        self.include_score = include_score
        if default_sign is None:
            last_line = self.template.template.rstrip().rsplit("\n", 1)[-1]
            default_sign = header_sign(last_line) or -1
        self.default_sign = default_sign

    def build_prompt(self, prompt: str, completion: str, score: float | None = None) -> str:
        """The critic's prompt for one completion."""
        score_line = f"Its automatic quality score is {score:.2f}." if self.include_score and score is not None else ""
        return self.template.safe_substitute(prompt=prompt, completion=completion, score_line=score_line)

    def critique(self, prompts, completions, extrinsic=None) -> list[Critique]:
        """One backend call for the whole batch, then parsing and locating."""
        scores = list(extrinsic) if extrinsic is not None else [None] * len(completions)
        queries = [self.build_prompt(p, c, s) for p, c, s in zip(prompts, completions, scores, strict=True)]
        answers = self.backend.generate(queries, max_new_tokens=self.max_new_tokens)
        return [self.read(answer, completion) for answer, completion in zip(answers, completions, strict=True)]

    def read(self, answer: str, completion: str) -> Critique:
        """Parse one answer and locate its spans in ``completion``."""
        parsed = parse_answer(answer, self.default_sign)
        spans, unlocated, after = [], 0, {1: 0, -1: 0}
        for named in parsed.spans:
            where = locate(named.text, completion, after[named.sign])
            if where is None:
                unlocated += 1
                continue
            after[named.sign] = where[1]
            label = named.label or ("positive" if named.sign > 0 else "negative")
            spans.append(Span(where[0], where[1], float(named.sign), label))
        return Critique(tuple(spans), raw=answer, unlocated=unlocated, parse_failed=not parsed.ok)
