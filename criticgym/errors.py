"""The package's own error types. Every message names the fix."""

from __future__ import annotations


class CriticGymError(Exception):
    """Base class of every error criticgym raises on purpose."""


class ConfigError(CriticGymError, ValueError):
    """A wrong argument: unknown name, bad value, incompatible options."""


class UnknownModelError(ConfigError):
    """A model name that is neither built in, a local folder, nor loadable from the hub."""


class UnknownEnvError(ConfigError):
    """An environment id that criticgym does not register."""


class PromptTooLongError(ConfigError):
    """A prompt that does not fit the environment's or the model's context."""


class InvalidActionError(ConfigError):
    """An action (token id) outside the vocabulary, or a step on a finished episode."""


class FolderInUseError(CriticGymError):
    """A run folder that another process holds (its lock names the process)."""


class CheckpointError(CriticGymError):
    """A checkpoint that cannot be read: truncated, empty, corrupt, or not written by criticgym."""


class DiskFullError(CriticGymError):
    """No space left to write a result; what was written before is intact."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: the message says where it stopped and how to continue."""


class MissingDependencyError(CriticGymError, ImportError):
    """An optional package is missing; the message gives the ``pip install`` that adds it."""


def require(module: str, pip: str, purpose: str, install: str | None = None):
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``pip``.

    Args:
        module: the module to import, e.g. ``"vaderSentiment.vaderSentiment"``.
        pip: the install command's argument, e.g. ``"vaderSentiment==3.3.2"``.
        purpose: what needs it, for the message.
        install: the whole install advice, when ``pip install <pip>`` or the offline extra is not it.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        advice = install or f"Install it with: pip install {pip}   (or: pip install 'criticgym[offline]')"
        raise MissingDependencyError(
            f"{purpose} needs the package {pip.split('=')[0]!r}, which is not installed. {advice}"
        ) from exc


def name_of(obj: object) -> str:
    """How an error message names a user's scorer, critic or judge: its function's or class's qualified name.

    A wrapper that adapts a function (``FunctionScorer``, ``FunctionCritic``) is named by the function it holds.
    """
    inner = getattr(obj, "fn", None)
    target = inner if callable(inner) else obj
    if isinstance(target, str):
        return repr(target)
    named = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if named is None:
        named = type(target).__qualname__
    module = getattr(target, "__module__", None) or type(target).__module__
    return f"{module}.{named}" if module and module not in ("builtins", "__main__") else named


AT_LEAST_1 = (1, True, None)
POSITIVE = (0, False, None)
NON_NEGATIVE = (0, True, None)
FRACTION = (0, True, 1)  # [0, 1]
SHARE = (0, False, 1)  # (0, 1]


def check_ranges(obj: object, ranges: dict[str, tuple], prefix: str = "--") -> None:
    """Raise :class:`ConfigError` for the first field of ``obj`` outside its range, named as the option it is.

    Args:
        obj: a dataclass of options.
        ranges: field name -> ``(low, low included, high)`` (``high`` None: no upper bound; a None value is unset).
        prefix: how an option is typed before its name, e.g. ``"--ppo."``.
    """
    for name, (low, inclusive, high) in ranges.items():
        value = getattr(obj, name)
        if value is None:
            continue
        below = value < low if inclusive else value <= low
        if below or (high is not None and value > high):
            if high is not None:
                want = f"in {'[' if inclusive else '('}{low}, {high}]"
            elif low == 1 and inclusive:
                want = "at least 1"
            else:
                want = f"{'at least' if inclusive else 'more than'} {low}"
            raise ConfigError(f"{prefix}{name.replace('_', '-')} must be {want}, got {value}.")
