"""Command-line options parsed by tyro, checked afterwards so that a bad value ends like every other error.

tyro reports an error raised while it builds a config (a ``__post_init__`` check) in a box of its own. A config whose
checks live in a ``check()`` method, called from ``__post_init__`` unless :func:`deferred` says otherwise, is parsed
with :func:`parsed`: its checks (and those of the configs nested in it) run once tyro is done, and their
:class:`~criticgym.errors.ConfigError` reaches the command line's one paragraph and exit code 2.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import fields, is_dataclass
from typing import Any

_DEFERRED: ContextVar[bool] = ContextVar("checks_deferred", default=False)


def deferred() -> bool:
    """Whether a config's ``__post_init__`` leaves its checks to :func:`parsed` (while tyro builds it)."""
    return _DEFERRED.get()


def check_all(config: Any) -> None:
    """Call ``check()`` on ``config`` and on every dataclass nested in it, the outer one last."""
    if not is_dataclass(config) or isinstance(config, type):
        return
    for f in fields(config):
        check_all(getattr(config, f.name))
    check = getattr(config, "check", None)
    if callable(check):
        check()


def parsed(cls: Any, argv: list[str], prog: str, **kwargs: Any) -> Any:
    """``tyro.cli(cls, args=argv, prog=prog, **kwargs)``, then the checks of what it built (:func:`check_all`)."""
    import tyro

    token = _DEFERRED.set(True)
    try:
        result = tyro.cli(cls, args=argv, prog=prog, **kwargs)
    finally:
        _DEFERRED.reset(token)
    check_all(result)
    return result
