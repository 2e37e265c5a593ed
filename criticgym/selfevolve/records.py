"""Meta-skill records: an annotator's feedback and refinements of plausible wrong answers, and their JSONL files.

A record is ``{"prompt", "response", "feedback", "refinement"}`` (meta-skill) or ``{"prompt", "response"}``
(question-answer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from criticgym.data.arithmetic import Step, format_solution, parse_steps
from criticgym.errors import ConfigError


def corrupt(solution: str, rng: np.random.Generator) -> str:
    r"""A plausible wrong solution: a step miscalculated or misread and the rest computed from it, or stopped early.

    The final answer always differs from the gold one, and every later division stays exact.

    Example:
        >>> print(corrupt("7 + 5 = 12\n12 * 3 = 36\nAnswer: 36", np.random.default_rng(1)))
        7 + 7 = 14
        14 * 3 = 42
        Answer: 42
    """
    steps = parse_steps(solution)
    for _ in range(20):
        wrong = _corrupt_once(steps, rng)
        if wrong is not None and wrong[-1].result != steps[-1].result:
            return format_solution(wrong, wrong[-1].result)
    last = steps[-1]  # the draws kept the answer: miscalculate the last step
    return format_solution([*steps[:-1], last._replace(result=last.result + 1)], last.result + 1)


def _corrupt_once(steps: list[Step], rng: np.random.Generator) -> list[Step] | None:
    k = int(rng.integers(len(steps)))
    kind = rng.choice(["miscalculate", "misread", "stop early"] if len(steps) > 1 else ["miscalculate", "misread"])
    if kind == "stop early":
        return steps[: k + 1] if k + 1 < len(steps) else steps[:-1]
    out, value = list(steps[:k]), steps[k].left
    for i, step in enumerate(steps[k:]):
        right = step.right
        if i == 0 and kind == "misread":
            right = right + int(rng.choice([-2, -1, 1, 2])) if step.op in "+-" else right + 1
        if step.op == "/" and (right == 0 or (value % right and not (i == 0 and kind == "miscalculate"))):
            return None
        result = Step(value, step.op, right, 0).true_result
        if i == 0 and kind == "miscalculate":
            result += int(rng.choice([-10, -2, -1, 1, 2, 10]))
        out.append(Step(value, step.op, right, result))
        value = result
    return out


def model_answer_records(annotator, prompts: list[str], answers: list[str], references=None) -> list[dict[str, str]]:
    """Meta-skill records of answers: the annotator's feedback on each, and its refinement.

    A task without gold answers (``references`` None) annotates the model's own answers this way.
    """
    feedback = annotator.feedback(prompts, answers, references)
    refined = annotator.refine(prompts, answers, feedback, references)
    return [
        {"prompt": p, "response": r, "feedback": f, "refinement": r2}
        for p, r, f, r2 in zip(prompts, answers, feedback, refined, strict=True)
    ]


def annotated_records(annotator, problems: list, seed: int) -> list[dict[str, str]]:
    """Meta-skill records: responses (a third right, the rest corrupted), the annotator's feedback and refinement."""
    rng = np.random.default_rng(seed)
    gold = [p.reference for p in problems]
    responses = [g if rng.random() < 1 / 3 else corrupt(g, rng) for g in gold]
    return model_answer_records(annotator, [p.text for p in problems], responses, gold)


def read_records(path: str | Path) -> list[dict[str, str]]:
    """Records from a JSONL file, checked: each has prompt and response, and feedback with refinement or neither."""
    records = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        keys = set(record)
        if not {"prompt", "response"} <= keys or ("feedback" in keys) != ("refinement" in keys):
            raise ConfigError(
                f"{path}:{n}: a record needs prompt and response, plus feedback and refinement for a meta-skill "
                f"record; got {sorted(keys)}."
            )
        records.append({k: str(record[k]) for k in ("prompt", "response", "feedback", "refinement") if k in record})
    return records


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    """JSONL, one record per line."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
