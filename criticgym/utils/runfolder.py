"""One guarded output folder per run: never overwritten by accident, never written by two processes at once.

Every command that writes a run folder (``train``, ``demo``, ``bench ablation``, ``bench frontier``,
``bench toxic-start``, ``search``, ``self-evolve``, ``train-rm``) enters :func:`run_folder` once its settings are
validated, and holds it for the run's life:

- a folder that holds anything is refused unless the run continues it (``resume``) or replaces it (``overwrite``,
  which deletes what is there, and only in a folder a criticgym command wrote);
- a lock (``.criticgym.lock``, an ``flock`` held by the process, with its pid, host and command written inside)
  makes a second process refuse at once, naming the holder; the kernel drops the lock when its process dies, so a
  killed run's lock is taken over without a word;
- a run that fails before writing anything leaves no folder behind, and a killed writer's ``*.tmp`` file (atomic
  writes never leave one under its final name) is removed when the next run takes the folder.

:func:`output_file` does the same for a command whose output is a file (``label``, ``eval``, ``eval-judge``).
:func:`differences` and :func:`refuse_other_settings` are the one way a resumed command compares its settings with
the ones a folder was made with.

    >>> differences({"lr": 0.1, "ppo": {"epochs": 2}}, {"lr": 0.1, "ppo": {"epochs": 4}})
    ['ppo.epochs (2 -> 4)']
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from criticgym.errors import ConfigError, FolderInUseError, Interrupted

LOCK = ".criticgym.lock"
# Files that only a criticgym command writes: a folder holding one (or the lock) may be replaced by --overwrite.
RUN_FILES = (LOCK, "config.json", "checkpoint.pt", "metrics.csv", "summary.md", "summary.json", "reward_model.json")


def differences(
    old: dict[str, Any], new: dict[str, Any], defaults: dict[str, Any] | None = None, ignored: tuple[str, ...] = ()
) -> list[str]:
    """The settings in which ``new`` differs from ``old``, as ``key (old -> new)``; nested dicts as ``key.sub``.

    A key missing from ``old`` counts as its value in ``defaults`` (settings added since ``old`` was written);
    keys in ``ignored`` are skipped.
    """
    defaults = defaults or {}
    changed = []
    for key, value in new.items():
        if key in ignored:
            continue
        before, value = _as_stored(old.get(key, defaults.get(key))), _as_stored(value)
        if isinstance(value, dict) and isinstance(before, dict):
            changed += [f"{key}.{c}" for c in differences(before, value, defaults.get(key) or {})]
        elif before != value:
            changed.append(f"{key} ({before!r} -> {value!r})")
    return changed


def _as_stored(value: Any) -> Any:
    """``value`` as a JSON file gives it back: tuples become lists, so a stored setting equals the live one."""
    if isinstance(value, tuple | list):
        return [_as_stored(item) for item in value]
    return value


def refuse_other_settings(what: str, changed: list[str], fix: str) -> None:
    """Raise a :class:`ConfigError` listing ``changed`` when there is any: ``what`` was made with other settings."""
    if changed:
        raise ConfigError(f"{what} was made with other settings: {'; '.join(changed)}. {fix}")


class Lock:
    """An exclusive ``flock`` on ``path`` for this process, with who holds it written inside.

    Args:
        path: the lock file (created when missing; it stays after release, so that no race can split it).
        command: what the holder runs, for the message another process shows.
    """

    def __init__(self, path: Path, command: str) -> None:
        self.path, self.command, self.handle = Path(path), command, None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`FolderInUseError` naming the process that holds it."""
        try:
            import fcntl
        except ImportError:  # Windows: no flock; the folder is still guarded, not locked
            return

        while True:
            handle = open(self.path, "a+")  # noqa: SIM115 (held open for the run's life)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip()
                handle.close()
                raise FolderInUseError(self._held_by(holder)) from None
            if self.path.exists() and os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
            handle.close()  # its holder removed the file meanwhile: lock the one at the path now
        handle.seek(0)
        handle.truncate()
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command, "since": time.ctime()}
        handle.write(json.dumps(info) + "\n")
        handle.flush()
        self.handle = handle

    def _held_by(self, holder: str) -> str:
        try:
            info = json.loads(holder)
            who = f"process {info['pid']} on {info['host']} (`{info['command']}`, since {info['since']})"
        except (ValueError, KeyError, TypeError):
            who = "another process"
        return (
            f"{self.path.parent} is in use by {who}. Wait for it to finish, stop it, or give this run another "
            f"output folder. (A killed process releases it by itself; {self.path} names the last holder.)"
        )

    def release(self) -> None:
        """Drop the lock (closing the file releases the ``flock``)."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def _contents(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK) if folder.is_dir() else []


def _clear(folder: Path, option: str, had_lock: bool) -> None:
    """Delete what ``folder`` holds (not its lock), but only where a criticgym command wrote it."""
    names = {p.name for p in folder.iterdir()} - ({LOCK} if not had_lock else set())
    if not names & set(RUN_FILES):
        raise ConfigError(
            f"{option} {folder} holds files that no criticgym run wrote ({', '.join(sorted(names)[:4])}"
            f"{', ...' if len(names) > 4 else ''}); --overwrite deletes only a run. Give another {option}."
        )
    for path in folder.iterdir():
        if path.name == LOCK:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def each_kept(runs: list[Callable[[], Any]], out: str | Path) -> list[Any]:
    """Call each of a resumable command's runs in turn; Ctrl-C says how many finished (kept) and how to go on.

    An interruption that already says where it stopped (:class:`~criticgym.errors.Interrupted`, from a training run)
    passes as it is.
    """
    results: list[Any] = []
    try:
        for run in runs:
            results.append(run())
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted after {len(results)} of {len(runs)} runs; the finished ones are kept in {out}, and the "
            "same command continues with the rest."
        ) from None
    return results


def command_line() -> str:
    """The command line of this process, as the holder of a lock is named."""
    return " ".join(["criticgym", *sys.argv[1:]]) if sys.argv and "criticgym" in sys.argv[0] else " ".join(sys.argv)


@contextmanager
def run_folder(
    path: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    option: str = "--out",
    resume_hint: str | None = "continue it with --resume",
    command: str | None = None,
) -> Iterator[Path]:
    """Hold ``path`` as this run's folder for the ``with`` block; yields it as a :class:`Path`.

    Args:
        path: the run's folder (created when missing).
        resume: the run continues what the folder holds (the caller checks its settings).
        overwrite: delete what the folder holds first (when ``resume`` is False).
        option: the option that named the folder, for messages.
        resume_hint: how this command continues a run (None: it cannot), for the message that refuses the folder.
        command: what this process runs, written into the lock (default: its command line).
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder} is a file; give a folder.")
    created, had_lock = not folder.exists(), (folder / LOCK).exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = Lock(folder / LOCK, command or command_line())
    lock.acquire()  # in use: nothing is touched
    for leftover in folder.glob("*.tmp") if had_lock else ():  # a killed run's half-written file
        leftover.unlink()
    finished = False
    try:
        held = _contents(folder)
        if held and not resume:
            if not overwrite:
                ways = [resume_hint] if resume_hint else []
                ways += ["replace it with --overwrite (deletes it)", f"give another {option}"]
                ways_text = ", ".join(ways[:-1]) + ", or " + ways[-1]
                raise ConfigError(
                    f"{option} {folder} holds a run ({', '.join(held[:5])}{', ...' if len(held) > 5 else ''}); a new "
                    f"one would replace it. {ways_text[0].upper() + ways_text[1:]}."
                )
            _clear(folder, option, had_lock)
        yield folder
        finished = True
    finally:
        if not finished and (not had_lock or not _contents(folder)):  # a failed start leaves nothing behind
            (folder / LOCK).unlink(missing_ok=True)
            if created and not _contents(folder):
                folder.rmdir()
        lock.release()


@contextmanager
def output_file(path: str | Path, *, overwrite: bool = False, option: str = "--out") -> Iterator[Path]:
    """Hold ``path``, a command's one output file, for the ``with`` block (its lock lies beside it).

    An existing file is refused unless ``overwrite``; the caller writes it atomically.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name.")
    if path.exists() and not overwrite:
        raise ConfigError(f"{option} {path} exists; replace it with --overwrite, or give another {option}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = Lock(path.with_name(f".{path.name}.lock"), command_line())
    lock.acquire()
    try:
        yield path
    finally:
        lock.path.unlink(missing_ok=True)
        lock.release()
