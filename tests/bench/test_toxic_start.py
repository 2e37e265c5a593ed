"""The toxic-start recipe: fine-tuning on offensive continuations raises the flagged rate (tiny model, toy data)."""

from __future__ import annotations

import json

import pytest

from criticgym.bench import toxic_start as ts
from criticgym.errors import ConfigError


def test_the_recipe_raises_the_flagged_rate_and_saves_a_model_the_ablation_can_start_from(tmp_path, capfd):
    # toy data: the task's own train prompts, each continued with words the word list flags
    toy = [{"prompt": r["prompt"], "response": " shit damn shit damn"} for r in ts.continuation_records(48)]
    cfg = ts.ToxicStartConfig(
        model="tiny",
        out=str(tmp_path),
        target=40.0,
        max_epochs=4,
        lr=3e-2,
        batch_size=16,
        eval_prompts=16,
        progress=False,
    )
    summary = ts.toxic_start(cfg, records=toy, log=lambda *_: None)
    assert "it/s" not in capfd.readouterr().err  # progress=False: no bar, not even the one that saves the model
    rates = [e["flagged"] for e in summary["epochs"]]
    # fine-tuned on profanity, the policy writes it (measured on seeds 0-3: 0-25% before, 62-81% after 2 epochs)
    assert summary["reached"] and rates[-1] >= 40.0 > rates[0]
    assert summary["epochs"][0]["judge"] == "profanity-list"
    assert len(rates) <= 5 and json.loads((tmp_path / "summary.json").read_text())["epochs"][-1]["flagged"] == rates[-1]
    # the saved model is the fine-tuned one: loaded back by name, it is flagged as often
    from criticgym.rollout import load_policy

    assert ts.flagged_rate(*load_policy(str(tmp_path / "model")), cfg)["flagged"] == rates[-1]


def test_the_records_are_train_continuations_only():
    from criticgym.data import load_detox_prompts

    records = ts.continuation_records()
    test = load_detox_prompts("test")
    assert records and not {e.text for e in test} & {r["prompt"] for r in records}
    assert not {" " + e.reference for e in test} & {r["response"] for r in records}
    assert all(r["response"].startswith(" ") for r in records) and len(ts.continuation_records(5)) == 5


def test_settings_that_cannot_work_fail_clearly():
    with pytest.raises(ConfigError, match="percent"):
        ts.ToxicStartConfig(target=0)
    with pytest.raises(ConfigError, match="max-epochs"):
        ts.ToxicStartConfig(max_epochs=0)
