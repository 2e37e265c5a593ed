"""docs/ARCHITECTURE.md stays true: every module its room tree names exists, and every name it cites in code spans
(a module, a class, a function, ``module.function`` or ``Class.method``) is there."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import criticgym

PAGE = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"
PACKAGE = Path(criticgym.__file__).parent


def room_tree() -> list[str]:
    """The ``.py`` files of the page's first code block, as paths under the package."""
    block = PAGE.read_text().split("```")[1]
    files, room = [], ""
    for line in block.splitlines():
        first = line.split()[0] if line.strip() else ""
        if line[:2] == "  " and line[2] != " ":  # a room (``algos/``) or a top-level module (``rewards.py``)
            room = first if first.endswith("/") else ""
        if first in ("docs/", "benchmarks/", "tests/"):
            break
        for name in re.findall(r"\b([a-z_/]+\.py)\b", line):  # a file of this room, or room/file.py
            files.append(name if "/" in name else f"{room}{name}")
    return files


def test_every_module_of_the_room_tree_exists():
    files = room_tree()
    assert "registration.py" in files and "algos/grpo.py" in files and "train/export.py" in files
    missing = [f for f in files if not (PACKAGE / f).is_file()]
    assert not missing, missing


def package_names() -> dict[str, object]:
    """Every public name defined in any criticgym module (modules that need an absent extra are skipped)."""
    names: dict[str, object] = {}
    for info in pkgutil.walk_packages(criticgym.__path__, "criticgym."):
        if info.name.endswith("__main__"):  # python -m criticgym: runs the command line
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:
            continue
        names[info.name.removeprefix("criticgym.")] = module
        for key, value in vars(module).items():
            if not key.startswith("_"):
                names.setdefault(key, value)
    return names


def cited() -> list[str]:
    """The code spans of the page that name something in the package: dotted names, CamelCase names, calls."""
    spans = set(re.findall(r"`([^`\n]+)`", PAGE.read_text()))
    names = set()
    for span in spans:
        span = span.removesuffix("()")
        if "/" in span or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", span):
            continue
        if "." in span or span[0].isupper() or span in ("with_reward", "check_role", "play", "replay", "play_rows"):
            names.add(span)
    return sorted(names)


def resolves(name: str, names: dict[str, object]) -> bool:
    head, *rest = name.split(".")
    for start in range(len(rest) + 1):  # a module path first (train.build.build_agent), then attributes
        module = ".".join([head, *rest[:start]])
        obj = names.get(module)
        if obj is None:
            continue
        for part in rest[start:]:  # an attribute, or a dataclass field without a class-level default
            fields = getattr(obj, "__dataclass_fields__", {})
            if not hasattr(obj, part) and part not in fields:
                break
            obj = getattr(obj, part, fields.get(part))
        else:
            return True
    return False


def test_every_name_the_page_cites_exists():
    names = package_names()
    cites = cited()
    files = [n for n in cites if n.endswith(".py")]  # rewards.py: a module of the package
    assert all((PACKAGE / f).is_file() for f in files), files
    missing = [n for n in cites if not n.endswith((".py", ".json", ".toml")) and not resolves(n, names)]
    assert not missing, missing


@pytest.mark.parametrize("path", ["tests/test_recipes.py", "tests/algos/test_grpo.py", "tests/train/test_objects.py"])
def test_the_recipes_tests_are_there(path):
    text = PAGE.read_text()
    root = PAGE.parents[1]
    for test in re.findall(re.escape(path) + r"::(\w+)", text):
        assert f"def {test}(" in (root / path).read_text(), test
