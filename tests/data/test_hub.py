from __future__ import annotations

import json

import pytest

from criticgym.data import load_imdb
from criticgym.errors import ConfigError


def test_imdb_loader_reads_local_files_in_the_hub_format(tmp_path):
    path = tmp_path / "imdb.jsonl"
    rows = [{"text": "A <br />great film.", "label": 1}, {"text": "Dull  and long.", "label": 0}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    examples = load_imdb("train", data_files=str(path))
    assert [(e.text, e.label) for e in examples] == [("A great film.", 1), ("Dull and long.", 0)]
    assert len(load_imdb("train", data_files=str(path), limit=1)) == 1


def test_imdb_loader_reads_parquet(tmp_path):
    import datasets

    path = tmp_path / "train.parquet"
    datasets.Dataset.from_dict({"text": ["good", "bad"], "label": [1, 0]}).to_parquet(path)
    assert [e.label for e in load_imdb("train", data_files=str(path))] == [1, 0]


def test_imdb_loader_errors_name_the_fix(tmp_path):
    path = tmp_path / "imdb.jsonl"
    path.write_text(json.dumps({"review": "x", "label": 1}))
    with pytest.raises(ConfigError, match="'text'"):
        load_imdb("train", data_files=str(path))
    with pytest.raises(ConfigError, match="format"):
        load_imdb("train", data_files=str(tmp_path / "imdb.txt"))
    with pytest.raises(ConfigError, match="split"):
        load_imdb("validation", data_files=str(path))
