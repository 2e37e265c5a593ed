"""The trained policy as a Hugging Face folder, beside the run's ``checkpoint.pt``.

``out/policy`` is what ``save_pretrained`` writes (the model or, for a LoRA policy, its adapter) with the tokenizer,
so ``transformers.AutoModelForCausalLM.from_pretrained``, ``criticgym eval --model out/policy``, vLLM or a hub upload
take it. A LoRA adapter's folder names its base (``adapter_config.json``) and loads with peft installed;
``merged=True`` also writes ``out/policy-merged``, the base with the adapter merged in, a plain model folder.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

POLICY = "policy"
"""The folder of the trained policy inside a run's folder."""
MERGED = "policy-merged"
"""The folder of a LoRA policy's merged copy inside a run's folder."""


def save_policy(model, tokenizer, out: str | Path, merged: bool = False) -> list[Path]:
    """Write ``out/policy`` (and, for a LoRA policy with ``merged``, ``out/policy-merged``); returns the folders.

    Each folder is written beside its final name, then renamed over it: a killed run never leaves half a folder.
    """
    from criticgym.algos.lora import is_lora

    out = Path(out)
    folders = [_save(model, tokenizer, out / POLICY)]
    if merged and is_lora(model):
        plain = copy.deepcopy(model).merge_and_unload()  # a copy: the live policy keeps its adapter
        folders.append(_save(plain, tokenizer, out / MERGED))
    return folders


def _save(model, tokenizer, folder: Path) -> Path:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old)
    else:
        os.replace(tmp, folder)
    return folder


def drop_weights(run: str | Path) -> None:
    """Delete a finished run's weights (``checkpoint.pt``, ``policy/``, ``policy-merged/``); its records stay."""
    run = Path(run)
    (run / "checkpoint.pt").unlink(missing_ok=True)
    for name in (POLICY, MERGED):
        shutil.rmtree(run / name, ignore_errors=True)
