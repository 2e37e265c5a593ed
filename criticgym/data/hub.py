"""Loaders for Hugging Face ``datasets`` corpora, for users who have the hub (or the files locally)."""

from __future__ import annotations

from criticgym.data.corpora import Example
from criticgym.errors import ConfigError, require


def load_imdb(
    which: str = "train", data_files: str | list[str] | None = None, limit: int | None = None
) -> list[Example]:
    """IMDB reviews as labelled examples (1 positive, 0 negative), the corpus of the RELC sentiment task.

    Args:
        which: ``"train"`` or ``"test"``.
        data_files: local files in the hub's format (parquet, JSON lines or CSV with ``text`` and ``label``
            columns); when not given, the ``stanfordnlp/imdb`` dataset is loaded from the hub.
        limit: keep only the first ``limit`` examples.
    """
    if which not in ("train", "test"):
        raise ConfigError(f"Unknown IMDB split {which!r}; use 'train' or 'test'.")
    datasets = require("datasets", "datasets", "Loading IMDB")
    if data_files is None:
        dataset = datasets.load_dataset("stanfordnlp/imdb", split=which)
    else:
        first = data_files if isinstance(data_files, str) else data_files[0]
        builder = {"parquet": "parquet", "jsonl": "json", "json": "json", "csv": "csv"}.get(first.rsplit(".", 1)[-1])
        if builder is None:
            raise ConfigError(f"Cannot tell the format of {first!r}: use a .parquet, .jsonl, .json or .csv file.")
        dataset = datasets.load_dataset(builder, data_files={which: data_files}, split=which)
    missing = {"text", "label"} - set(dataset.column_names)
    if missing:
        raise ConfigError(f"IMDB data needs the columns 'text' and 'label'; missing {sorted(missing)}.")
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return [
        Example(" ".join(str(t).replace("<br />", " ").split()), int(y))
        for t, y in zip(dataset["text"], dataset["label"], strict=True)
    ]
