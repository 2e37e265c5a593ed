"""Files written atomically: a killed run never leaves a half-written checkpoint or dataset under its final name.

A write that fails (a full disk, Ctrl-C) removes its temporary file and leaves the previous version intact; a full
disk ends in :class:`~criticgym.errors.DiskFullError`. :func:`load_checkpoint` turns an unreadable checkpoint into
one :class:`~criticgym.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from criticgym.errors import CheckpointError, DiskFullError


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` means that the disk is full (torch's zip writer says so as ``unexpected pos``)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(error, RuntimeError) and "unexpected pos" in str(error)


def _replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if disk_full(error):
            raise DiskFullError(
                f"No space left on the device to write {path}"
                f"{'; its previous version is intact' if path.exists() else ''}. Free some space and run the same "
                "command again (a run continues from its last checkpoint with --resume).",
            ) from error
        raise


def save_atomically(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename."""
    import torch

    _replace_atomically(Path(path), lambda tmp: torch.save(obj, tmp))


def write_text_atomically(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def load_checkpoint(path: str | Path, keys: tuple[str, ...], fix: str, map_location: Any = None) -> dict[str, Any]:
    """``torch.load`` a checkpoint that criticgym wrote, or raise :class:`CheckpointError` naming the file.

    Args:
        path: the checkpoint.
        keys: what it must hold (a checkpoint of another command, or another program's file, lacks them).
        fix: how to start over, for the message.
        map_location: as ``torch.load``'s.
    """
    import torch

    path = Path(path)
    try:
        state = torch.load(path, weights_only=False, map_location=map_location)
    except Exception as error:  # truncated, empty, random bytes: EOFError, RuntimeError, UnpicklingError, ...
        size = path.stat().st_size if path.exists() else 0
        said = str(error).strip().splitlines()  # MemoryError (random bytes read as a length) says nothing
        reason = f"{type(error).__name__}: {said[0].split('. ')[0][:120]}" if said else type(error).__name__
        raise CheckpointError(
            f"{path} cannot be read ({size:,} bytes; {reason}): it is truncated, empty or corrupt. {fix}"
        ) from error
    missing = [key for key in keys if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(
            f"{path} is not a checkpoint of this command (it has no {', '.join(missing)}); another program or "
            f"command wrote it. {fix}"
        )
    return state


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records, one JSON object per line, atomically; returns how many."""
    lines = [json.dumps(record, ensure_ascii=False) + "\n" for record in records]
    write_text_atomically(path, "".join(lines))
    return len(lines)
