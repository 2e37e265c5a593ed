"""The options of ``criticgym self-evolve`` (:class:`SelfConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from criticgym.errors import ConfigError
from criticgym.rewards import DEFAULT_MODEL
from criticgym.utils.options import deferred


@dataclass
class SelfConfig:
    """Options of ``criticgym self-evolve``."""

    env: str = "criticgym/Arithmetic-v0"
    """A task whose spec has feedback prompts and a program annotator."""
    model: str = DEFAULT_MODEL
    """Policy: a built-in name, a local folder or a Hugging Face id."""
    out: str = "runs/self"
    """Output folder: checkpoint, metrics.csv, samples per round, curves.png."""
    rounds: int = 2
    """Self-evolution rounds after meta-skill learning."""
    filter: Literal["self", "none", "program"] = "self"
    """Which answers a round keeps: the model's own judgement (SELF), all (self-training), the annotator's."""
    meta_skill: bool = True
    """Learn the meta-skills first (False: gold question-answer records only, the paper's M0 baseline)."""
    seed: int = 0
    """Seeds problem choice, sampling and minibatch order."""
    device: str = "cpu"
    """cpu, cuda or auto."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Forward passes under bfloat16 autocast (auto: on a CUDA device with bfloat16); weights stay float32."""
    meta_records: int = 512
    """Meta-skill records the annotator writes (on train problems)."""
    qa_records: int = 512
    """Gold question-answer records (other train problems)."""
    prompts_per_round: int = 256
    """New train problems each round answers (never the ones above)."""
    eval_problems: int = 200
    """Held-out test problems for accuracy."""
    beta: float = 1.0
    """Weight of ``log P(r' | p)`` in the meta-skill objective."""
    lr: float = 5e-5
    """AdamW learning rate (a fresh optimizer each stage)."""
    epochs: int = 2
    """Passes over each stage's data."""
    batch_size: int = 16
    """Sequences per update."""
    freeze_layers: int = 0
    """Freeze the embeddings and this many lower layers."""
    temperature: float = 0.7
    """Sampling temperature of answers during evolution (critiques and refinements are greedy)."""
    max_new_tokens: int | None = None
    """Budget of an answer (None: the task's)."""
    feedback_tokens: int = 96
    """Budget of a critique and of a refinement."""
    replay: int | None = None
    """Earlier records (meta-skill and question-answer) mixed into each round's data: all of them (None, as in the
    paper) or a random sample of this many (cheaper rounds; the rest is not forgotten in one round)."""
    base_eval: bool = True
    """Evaluate the untrained model first (stage -1). Evaluation is greedy, so this row is the same for every seed."""
    meta_data: str | None = None
    """A JSONL file of your own records (replaces the annotator's meta-skill records)."""
    progress: bool = True
    """Show progress bars."""
    resume: bool = True
    """Continue from out/checkpoint.pt when it exists (with the same settings; it may run more rounds)."""
    overwrite: bool = False
    """Delete the run that out/ holds and start over (implies --no-resume)."""

    def __post_init__(self) -> None:
        if not deferred():
            self.check()

    def check(self) -> None:
        """Raise :class:`ConfigError` for an option out of its range."""
        for name in ("rounds", "meta_records", "qa_records", "prompts_per_round", "eval_problems", "epochs"):
            if getattr(self, name) < 0 or (name in ("epochs", "eval_problems") and getattr(self, name) < 1):
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}.")
        if self.replay is not None and self.replay < 0:
            raise ConfigError(f"--replay must be at least 0 (or left unset for all records), got {self.replay}.")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}.")
