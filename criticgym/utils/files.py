"""Files written atomically: a killed run never leaves a half-written checkpoint or dataset under its final name."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def save_atomically(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename."""
    import torch

    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_text_atomically(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records, one JSON object per line, atomically; returns how many."""
    lines = [json.dumps(record, ensure_ascii=False) + "\n" for record in records]
    write_text_atomically(path, "".join(lines))
    return len(lines)
