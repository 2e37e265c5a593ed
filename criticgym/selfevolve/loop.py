"""SELF's loop, once: answer, critique in words, refine where the critique says wrong, critique the refinement.

:class:`Solver` runs it in batches on one model (the self-evolution rounds, held-out evaluation with
self-refinement); :func:`keep_mask` is the round's filter. A solver is also a
:class:`~criticgym.critics.protocols.FeedbackWriter`, so the same model's critiques can drive the env's feedback
episodes (:class:`~criticgym.wrappers.feedback.LanguageFeedback`, where the policy writes each turn token by token).
"""

from __future__ import annotations

from typing import Any

from criticgym.critics.feedback import cut_at_judgement, judgement
from criticgym.errors import ConfigError


class Solver:
    """Answers, critiques and refinements from one model, in batches (critiques and refinements greedy)."""

    def __init__(self, model, tokenizer, layout, max_new_tokens: int, feedback_tokens: int, batch_size: int = 64):
        from criticgym.rollout import RolloutEngine

        self.engine, self.tokenizer, self.layout = RolloutEngine(model, tokenizer), tokenizer, layout
        self.max_new_tokens, self.feedback_tokens, self.batch_size = max_new_tokens, feedback_tokens, batch_size
        # a critique ends with its verdict: stop there (when each verdict word is one token of this tokenizer)
        verdicts = [tokenizer(f" {w}", add_special_tokens=False)["input_ids"] for w in ("correct", "incorrect")]
        self.verdict_ids = [ids[0] for ids in verdicts] if all(len(ids) == 1 for ids in verdicts) else []

    def _generate(
        self, contexts: list[str], budget: int, temperature: float = 0.0, seed: int | None = None, stop_ids=()
    ) -> list[str]:
        """Completions of ``contexts``: greedy at temperature 0, else sampled."""
        from criticgym.rollout import GREEDY, SamplingParams

        sampling = SamplingParams(temperature=temperature) if temperature > 0 else GREEDY
        texts: list[str] = []
        for i in range(0, len(contexts), self.batch_size):
            chunk = contexts[i : i + self.batch_size]
            seeded = None if seed is None else seed + i
            batch = self.engine.generate(
                chunk, max_new_tokens=budget, sampling=sampling, seed=seeded, stop_ids=stop_ids
            )
            rows = [row[: int(n)] for row, n in zip(batch.completion_ids, batch.lengths, strict=True)]
            texts += self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        return texts

    def answer(self, prompts: list[str], temperature: float = 0.0, seed: int | None = None) -> list[str]:
        """Answers: greedy at temperature 0, else sampled."""
        if temperature <= 0:
            return [t.strip() for t in self._generate(prompts, self.max_new_tokens)]
        texts = self._generate(prompts, self.max_new_tokens, temperature, seed)
        return [t.strip() for t in texts]

    def feedback(self, prompts: list[str], answers: list[str], references=None) -> list[str]:
        """The model's own feedback, cut after its judgement (references unused: SELF never reads the answer key)."""
        contexts = [self.layout.critique_context(p, a) for p, a in zip(prompts, answers, strict=True)]
        texts = self._generate(contexts, self.feedback_tokens, stop_ids=self.verdict_ids)
        return [cut_at_judgement(t) for t in texts]

    def refine(self, prompts: list[str], answers: list[str], feedback: list[str], references=None) -> list[str]:
        """The model's refined answers (references unused)."""
        contexts = [self.layout.refine_context(p, a, f) for p, a, f in zip(prompts, answers, feedback, strict=True)]
        return [t.strip() for t in self._generate(contexts, self.feedback_tokens)]

    def solve(self, prompts: list[str], refine: bool, temperature: float = 0.0, seed: int | None = None):
        """Answer; with ``refine``, critique and refine where the model judges its answer incorrect.

        Returns the final answers and the trace: ``answer``, ``feedback``, ``judged_correct`` and, for refined rows,
        ``refinement``, ``refinement_feedback`` and ``refinement_judged_correct``.
        """
        answers = self.answer(prompts, temperature, seed)
        trace: dict[str, list[Any]] = {"answer": answers}
        if not refine:
            return answers, trace
        feedback = self.feedback(prompts, answers)
        judged = [judgement(f) for f in feedback]
        trace |= {"feedback": feedback, "judged_correct": judged}
        redo = [i for i, j in enumerate(judged) if j is not True]
        final = list(answers)
        refined = self.refine([prompts[i] for i in redo], [answers[i] for i in redo], [feedback[i] for i in redo])
        second = self.feedback([prompts[i] for i in redo], refined)
        trace["refinement"] = [None] * len(prompts)
        trace["refinement_feedback"] = [None] * len(prompts)
        trace["refinement_judged_correct"] = [None] * len(prompts)
        for i, text, f in zip(redo, refined, second, strict=True):
            final[i] = text
            trace["refinement"][i], trace["refinement_feedback"][i] = text, f
            trace["refinement_judged_correct"][i] = judgement(f)
        return final, trace


def keep_mask(filter: str, trace: dict[str, list[Any]], program_correct: list[bool]) -> list[bool]:
    """Which final answers a round trains on.

    ``"self"``: the model's last own judgement says correct (its first one for answers it did not refine);
    ``"none"``: all; ``"program"``: the annotator's check says correct.
    """
    if filter == "none":
        return [True] * len(program_correct)
    if filter == "program":
        return list(program_correct)
    if filter != "self":
        raise ConfigError(f"Unknown filter {filter!r}; use self, none or program.")
    last = [
        second if first is not True else True
        for first, second in zip(trace["judged_correct"], trace["refinement_judged_correct"], strict=True)
    ]
    return [j is True for j in last]
