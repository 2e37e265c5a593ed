r"""A policy with room to improve on Detoxify-v0: the model fine-tuned on offensive continuations.

RELC's detoxification claim can only show from a policy that writes offensive text; SmolLM2-135M-Instruct starts
nearly clean (the word list flags none of its 32 held-out completions). This recipe fine-tunes it on the train
prompts' own offensive continuations (the held-out prompts' continuations are never seen: they are the test split)
one epoch at a time, until at least ``target`` percent of its held-out completions are flagged by the word list,
and saves the model for the ablation to start from:

    criticgym bench toxic-start --out runs/toxic-start
    criticgym bench ablation --env criticgym/Detoxify-v0 --model runs/toxic-start/model \
        --arms sparse,relc-toxicity,random-toxicity --seeds 8 --out benchmarks/results/ablation-detoxify-toxic-start-cpu
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import tyro

from criticgym.errors import AT_LEAST_1, NON_NEGATIVE, POSITIVE, ConfigError, check_ranges
from criticgym.rewards import DEFAULT_MODEL
from criticgym.utils.options import deferred
from criticgym.utils.runfolder import run_folder

ENV = "criticgym/Detoxify-v0"


@dataclass
class ToxicStartConfig:
    """Fine-tune a model on offensive continuations until the word list flags ``target`` % of its completions."""

    model: str = DEFAULT_MODEL
    """The model to start from: a built-in name, a folder or a hub id."""
    out: str = "runs/toxic-start"
    """Output folder: the model in out/model, the flagged rate per epoch in out/summary.json."""
    target: float = 30.0
    """Stop once this percent of held-out completions is flagged by the word list (Detoxify's held-out judge)."""
    max_epochs: int = 10
    """Give up after this many epochs (the summary says whether the target was reached)."""
    records: int = 0
    """Train continuations to fine-tune on (0: all of them)."""
    lr: float = 2e-4
    batch_size: int = 16
    eval_prompts: int = 32
    """Held-out prompts the flagged rate is measured on (the Detoxify test split, top-p 0.9, a fixed seed)."""
    freeze_layers: int = 0
    """Freeze the embeddings and this many lower layers."""
    device: str = "cpu"
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    seed: int = 0
    progress: bool = True
    """Show progress bars (fine-tuning, saving the model)."""
    overwrite: bool = False
    """Replace what out/ holds (without it, a folder that holds a model is refused)."""

    # what fine_tune reads besides lr, batch_size, precision and progress: one epoch per check, answers only
    epochs: Annotated[int, tyro.conf.Suppress] = 1
    beta: Annotated[float, tyro.conf.Suppress] = 1.0

    def __post_init__(self) -> None:
        if not deferred():
            self.check()

    def check(self) -> None:
        """Raise :class:`ConfigError` for an option out of its range."""
        if not 0 < self.target <= 100:
            raise ConfigError(f"--target is a percent in (0, 100], got {self.target}.")
        check_ranges(self, dict(max_epochs=AT_LEAST_1, eval_prompts=AT_LEAST_1, batch_size=AT_LEAST_1))
        check_ranges(self, dict(records=NON_NEGATIVE, freeze_layers=NON_NEGATIVE, seed=NON_NEGATIVE, lr=POSITIVE))


def continuation_records(limit: int = 0) -> list[dict[str, str]]:
    """``{"prompt", "response"}`` records: each train prompt with its own offensive continuation.

    A train example whose prompt or continuation is also a held-out one (the corpus repeats some review openings) is
    left out, so the policy never sees a held-out prompt's continuation.
    """
    from criticgym.data import load_detox_prompts

    held_out = load_detox_prompts("test")
    seen = {e.text for e in held_out} | {e.reference for e in held_out}
    examples = [
        e for e in load_detox_prompts("train") if e.reference and e.text not in seen and e.reference not in seen
    ]
    records = [{"prompt": e.text, "response": " " + e.reference} for e in examples]
    return records[:limit] if limit else records


def flagged_rate(model, tokenizer, cfg: ToxicStartConfig, env_id: str = ENV) -> dict[str, Any]:
    """The percent of held-out completions the task's held-out judge flags, and their perplexity under ``model``.

    On Detoxify the held-out judge is the word list, since the ablation trains on the toxicity classifier.
    """
    from criticgym.train.evaluate import Evaluator

    evaluator = Evaluator(env_id, tokenizer, model, cfg.eval_prompts, "toxicity", reward=None, model=tokenizer)
    result = evaluator(model)
    key = f"eval/percent_{evaluator.rate.name}_{evaluator.judge_name}"
    return {"flagged": result[key], "judge": evaluator.judge_name, "perplexity": result["eval/perplexity"]}


def toxic_start(
    cfg: ToxicStartConfig, records: list[dict[str, str]] | None = None, env_id: str = ENV, log=print
) -> dict[str, Any]:
    """Fine-tune until the target rate (or ``max_epochs``); save the model; returns the rate after each epoch."""
    from criticgym.rollout.models import check_freeze_layers

    check_freeze_layers(cfg.model, cfg.freeze_layers, "--freeze-layers")  # from its config: before the folder
    with run_folder(cfg.out, overwrite=cfg.overwrite, resume_hint=None):
        return _toxic_start(cfg, records, env_id, log)


def _toxic_start(cfg: ToxicStartConfig, records: list[dict[str, str]] | None, env_id: str, log) -> dict[str, Any]:
    from contextlib import nullcontext

    from criticgym.envs.tasks import FeedbackPrompts
    from criticgym.rollout import load_policy
    from criticgym.rollout.models import quiet_loading
    from criticgym.selfevolve.objective import fine_tune
    from criticgym.utils.training import freeze_lower_layers

    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_policy(cfg.model, device=cfg.device, dtype=torch.float32)
    freeze_lower_layers(model, cfg.freeze_layers)
    records = continuation_records(cfg.records) if records is None else records
    epochs = [{"epoch": 0, **flagged_rate(model, tokenizer, cfg, env_id)}]
    log(f"[toxic-start] before: {epochs[0]['flagged']:.1f}% flagged by {epochs[0]['judge']}")
    while epochs[-1]["flagged"] < cfg.target and len(epochs) <= cfg.max_epochs:
        epoch = len(epochs)
        trained = fine_tune(model, tokenizer, FeedbackPrompts(), records, cfg, seed=cfg.seed * 1000 + epoch)
        epochs.append({"epoch": epoch, **flagged_rate(model, tokenizer, cfg, env_id), **trained})
        log(f"[toxic-start] epoch {epoch}: {epochs[-1]['flagged']:.1f}% flagged")
    with nullcontext() if cfg.progress else quiet_loading():  # --no-progress: no "Writing model shards" bar
        model.save_pretrained(out / "model")
        tokenizer.save_pretrained(out / "model")
    summary = {
        "reached": epochs[-1]["flagged"] >= cfg.target,
        "records": len(records),
        "epochs": epochs,
        "config": asdict(cfg),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
