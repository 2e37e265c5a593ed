"""Feedback in words: a critique of an answer that ends in a judgement, and a refined answer (SELF).

A feedback source has two batched methods:

- ``feedback(prompts, answers, references=None) -> list[str]``: feedback text whose last line is
  ``Judgement: correct`` or ``Judgement: incorrect`` (read back with :func:`judgement`);
- ``refine(prompts, answers, feedbacks, references=None) -> list[str]``: an improved answer.

Two kinds exist. :class:`ArithmeticAnnotator` is a program that checks an arithmetic solution step by step against
the gold one and writes what a careful teacher would (it stands in for the strong LLM annotator of the SELF paper).
:class:`ModelFeedback` asks a language model, through any backend (the policy itself, a local model, or a server
behind :class:`~criticgym.critics.backends.OpenAIBackend`), with the task's prompts
(:class:`~criticgym.envs.tasks.FeedbackPrompts`).
"""

from __future__ import annotations

import re
from string import Template
from typing import Any

from criticgym.critics.protocols import FeedbackWriter
from criticgym.data.arithmetic import Step, parse_answer, parse_steps
from criticgym.errors import ConfigError
from criticgym.specs import FeedbackModel, ProgramAnnotator, parse_feedback

CORRECT, INCORRECT = "Judgement: correct", "Judgement: incorrect"
_JUDGEMENT = re.compile(r"judge?ment\s*:\s*(correct|incorrect|right|wrong)", re.IGNORECASE)


def judgement(feedback: str) -> bool | None:
    r"""The last judgement a feedback text states: True (correct), False (incorrect) or None (none found).

    Example:
        >>> judgement("Step 1 is right.\\nJudgement: correct"), judgement("Judgement: incorrect"), judgement("ok")
        (True, False, None)
    """
    found = _JUDGEMENT.findall(feedback)
    return found[-1].lower() in ("correct", "right") if found else None


def _need_references(references, n: int, who: str) -> list[str]:
    if references is None or len(references) != n or any(r is None for r in references):
        raise ConfigError(f"{who} checks answers against the gold solution: pass one reference per answer.")
    return list(references)


class ArithmeticAnnotator:
    r"""A program that writes step-by-step feedback on an arithmetic solution, and the corrected solution.

    Each step of the answer is compared with the gold step at the same place: a miscalculation says what the
    result really is; a step that computes something else says what it should compute; missing and extra steps
    are named; the final answer is checked last. The judgement is ``correct`` when the final answer equals the
    gold answer. The refinement is the gold solution.

    Example:
        >>> gold = "7 + 5 = 12\\n12 * 3 = 36\\nAnswer: 36"
        >>> print(ArithmeticAnnotator().feedback([""], ["7 + 5 = 12\\n12 * 3 = 35\\nAnswer: 35"], [gold])[0])
        Step 1 (7 + 5 = 12) is right.
        Step 2 is wrong: 12 * 3 = 36, not 35.
        The answer 35 is wrong; it should be 36.
        Judgement: incorrect
    """

    name = "program"

    def feedback(self, prompts, answers, references=None) -> list[str]:
        """Feedback on each answer, ending in a judgement."""
        references = _need_references(references, len(answers), "The arithmetic annotator")
        return [self.check(a, r) for a, r in zip(answers, references, strict=True)]

    def refine(self, prompts, answers, feedbacks, references=None) -> list[str]:
        """The gold solution."""
        return _need_references(references, len(answers), "The arithmetic annotator")

    @staticmethod
    def check(answer: str, reference: str) -> str:
        """Feedback on one answer against one gold solution."""
        gold, steps = parse_steps(reference), parse_steps(answer)
        lines = []
        for i, step in enumerate(steps):
            if i >= len(gold):
                lines.append(f"Step {i + 1} ({step}) is not needed: the problem has {len(gold)} steps.")
            elif step.result != step.true_result:
                lines.append(f"Step {i + 1} is wrong: {Step(*step[:3], step.true_result)}, not {step.result}.")
            elif step[:3] != gold[i][:3]:
                want = f"{gold[i].left} {gold[i].op} {gold[i].right}"
                lines.append(f"Step {i + 1} computes the wrong thing: it should compute {want}.")
            else:
                lines.append(f"Step {i + 1} ({step}) is right.")
        for i in range(len(steps), len(gold)):
            lines.append(f"Step {i + 1} is missing: {gold[i]}.")
        given, expected = parse_answer(answer), parse_answer(reference)
        if given is None:
            lines.append(f"There is no answer line; it should be: Answer: {expected}.")
        elif given != expected:
            lines.append(f"The answer {given} is wrong; it should be {expected}.")
        else:
            lines.append(f"The answer {given} is right.")
        lines.append(CORRECT if given == expected else INCORRECT)
        return "\n".join(lines)


class SentimentAnnotator:
    """Feedback in words on a review that should stay positive, written from the lexicon critic's spans.

    Every span the :class:`~criticgym.critics.lexicon.LexiconCritic` marks negative is named (``'dull' reads
    negative``); the judgement is correct when there is none. The refinement drops the negative spans, a program's
    minimal edit (a model's refinement can do better; this one needs no model).

    Example:
        >>> annotator = SentimentAnnotator()
        >>> print(annotator.feedback(["The film was"], [" dull and slow, but the cast is wonderful"])[0])
        'dull' reads negative; the review should stay positive.
        'wonderful' reads positive: keep it.
        Judgement: incorrect
        >>> annotator.refine(["The film was"], [" dull and slow, but the cast is wonderful"], [""])
        [' and slow, but the cast is wonderful']
    """

    name = "program"

    def __init__(self, critic: Any = None) -> None:
        from criticgym.critics.lexicon import LexiconCritic

        self.critic = critic if critic is not None else LexiconCritic()

    def feedback(self, prompts, answers, references=None) -> list[str]:
        """Feedback naming the negative (and positive) spans of each answer, ending in a judgement."""
        out = []
        for answer, critique in zip(answers, self.critic.critique(prompts, answers), strict=True):
            bad = [answer[s.start : s.end] for s in critique.spans if s.value < 0]
            good = [answer[s.start : s.end] for s in critique.spans if s.value > 0]
            lines = [f"'{word}' reads negative; the review should stay positive." for word in bad]
            lines += [f"'{word}' reads positive: keep it." for word in good]
            if not critique.spans:
                lines.append("No word in it is negative or positive.")
            out.append("\n".join([*lines, INCORRECT if bad else CORRECT]))
        return out

    def refine(self, prompts, answers, feedbacks, references=None) -> list[str]:
        """Each answer without its negative spans (whitespace tidied)."""
        out = []
        for answer, critique in zip(answers, self.critic.critique(prompts, answers), strict=True):
            text = answer
            for span in sorted((s for s in critique.spans if s.value < 0), key=lambda s: -s.start):
                text = text[: span.start] + text[span.end :]
            out.append(re.sub(r"  +", " ", text).rstrip())
        return out


class ModelFeedback:
    """Feedback and refinements written by a language model, prompted with the task's feedback prompts.

    Args:
        backend: anything with ``generate(prompts, max_new_tokens) -> texts`` (a criticgym backend).
        prompts: the task's :class:`~criticgym.envs.tasks.FeedbackPrompts`.
        max_new_tokens: budget of a critique and of a refinement.
    """

    def __init__(self, backend: Any, prompts: Any, max_new_tokens: int = 64) -> None:
        self.backend, self.prompts, self.max_new_tokens = backend, prompts, max_new_tokens
        self.name = f"model:{getattr(backend, 'name', type(backend).__name__)}"

    def feedback(self, prompts, answers, references=None) -> list[str]:
        """The model's feedback on each answer."""
        contexts = [self.prompts.critique_context(p, a) for p, a in zip(prompts, answers, strict=True)]
        return [cut_at_judgement(t) for t in self.backend.generate(contexts, self.max_new_tokens)]

    def refine(self, prompts, answers, feedbacks, references=None) -> list[str]:
        """The model's refined answers."""
        contexts = [self.prompts.refine_context(p, a, f) for p, a, f in zip(prompts, answers, feedbacks, strict=True)]
        return [t.strip() for t in self.backend.generate(contexts, self.max_new_tokens)]


ANNOTATORS = {"arithmetic": ArithmeticAnnotator, "sentiment": SentimentAnnotator}


class _CritiqueNamed:
    """A feedback writer from before #35: its ``critique`` is now ``feedback`` (``critique`` is a span critic's)."""

    def __init__(self, writer: Any) -> None:
        self.writer, self.name = writer, getattr(writer, "name", type(writer).__name__)

    def feedback(self, prompts, answers, references=None) -> list[str]:
        """The writer's ``critique``."""
        return self.writer.critique(prompts, answers, references)

    def refine(self, prompts, answers, feedbacks, references=None) -> list[str]:
        """The writer's ``refine``."""
        return self.writer.refine(prompts, answers, feedbacks, references)


def as_feedback_writer(writer: Any) -> Any:
    """A feedback writer as it is; one whose method is still named ``critique`` works, with a warning, until 1.0."""
    if not hasattr(writer, "feedback") and callable(getattr(writer, "critique", None)) and hasattr(writer, "refine"):
        import warnings

        warnings.warn(
            f"{type(writer).__name__}.critique: a feedback writer's method is now feedback(prompts, answers, "
            "references) (critique is a span critic's); rename it, the old name goes in 1.0.",
            DeprecationWarning,
            stacklevel=3,
        )
        return _CritiqueNamed(writer)
    return writer


def make_feedback(source: Any, layout: Any) -> Any:
    """A feedback writer from its name or typed value (:func:`criticgym.specs.parse_feedback`), or a writer object.

    :class:`~criticgym.specs.ProgramAnnotator` (``"program"``): the task's annotator;
    :class:`~criticgym.specs.FeedbackModel` (``"model:<name>"``): that model, completion-style, through a backend.
    """
    spec = parse_feedback(source)
    if not isinstance(spec, ProgramAnnotator | FeedbackModel):
        return as_feedback_writer(spec)
    if layout is None:
        raise ConfigError("This task has no feedback prompts (TaskSpec.feedback); give it some to use feedback.")
    if isinstance(spec, ProgramAnnotator):
        if layout.annotator not in ANNOTATORS:
            raise ConfigError("This task has no program annotator; use feedback='model:<name>' or a source object.")
        return ANNOTATORS[layout.annotator]()
    from criticgym.critics.backends import make_backend

    return ModelFeedback(make_backend(spec.model, chat=False), layout)


def cut_at_judgement(text: str) -> str:
    """A generated critique up to the end of its first judgement line (what a model writes after it is noise)."""
    found = _JUDGEMENT.search(text)
    return (text[: found.end()] if found else text).strip()


def render(template: str, **fields: str) -> str:
    """``$name`` substitution that fails clearly on a missing field."""
    try:
        return Template(template).substitute(fields)
    except KeyError as exc:
        raise ConfigError(f"The feedback template needs ${exc.args[0]}; it has {sorted(fields)}.") from exc


__all__ = [
    "CORRECT",
    "INCORRECT",
    "ANNOTATORS",
    "ArithmeticAnnotator",
    "FeedbackWriter",
    "as_feedback_writer",
    "ModelFeedback",
    "SentimentAnnotator",
    "cut_at_judgement",
    "judgement",
    "make_feedback",
    "render",
]
