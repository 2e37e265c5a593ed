"""train/export.py: a run's trained policy as a Hugging Face folder that from_pretrained and criticgym eval take."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from criticgym.algos.reinforce import ReinforceConfig
from criticgym.cli import main
from criticgym.train import TrainConfig, train


def tiny_run(out, **overrides):
    options = dict(
        env="criticgym/Words-v0",
        reward="sparse",
        agent="reinforce",
        model="tiny",
        iterations=2,
        num_envs=4,
        reinforce=ReinforceConfig(lr=1e-2),
        eval_prompts=4,
        out=str(out),
        progress=False,
    )
    return TrainConfig(**(options | overrides))


def logits(model, tokenizer, text="one two three"):
    with torch.no_grad():
        return model(tokenizer(text, return_tensors="pt").input_ids).logits


def test_the_trained_policy_loads_with_from_pretrained_and_criticgym_eval(tmp_path):
    result = train(tiny_run(tmp_path / "run"), log=lambda *a: None)
    folder = tmp_path / "run" / "policy"
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    trained = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["agent"]["model"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, trained[name]), name
    assert transformers.AutoTokenizer.from_pretrained(folder).eos_token == "<|im_end|>"

    out = tmp_path / "eval.json"
    argv = ["eval", "--model", str(folder), "--env", "criticgym/Words-v0", "--prompts", "4", "--out", str(out)]
    assert main(argv) == 0
    (column,) = json.loads(out.read_text()).values()
    # the same held-out prompts and weights as the run's last evaluation: the same task score
    assert column["eval/score"] == pytest.approx(result["evals"][-1]["eval/score"])


def test_a_lora_run_writes_its_adapter_and_on_request_a_merged_copy(tmp_path):
    pytest.importorskip("peft")
    from criticgym.algos.lora import add_lora, load_adapter_state
    from criticgym.rollout import load_policy

    train(tiny_run(tmp_path, lora_r=2, merged_policy=True), log=lambda *a: None)
    base, tokenizer = load_policy("tiny")
    policy = add_lora(base, 2, 16.0, "all-linear")
    load_adapter_state(policy, torch.load(tmp_path / "checkpoint.pt", weights_only=False)["agent"]["model"])
    expected = logits(policy, tokenizer)
    assert (tmp_path / "policy" / "adapter_config.json").is_file()
    adapter = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "policy")  # base + adapter, through peft
    torch.testing.assert_close(logits(adapter, tokenizer), expected)
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "policy-merged")
    assert not (tmp_path / "policy-merged" / "adapter_config.json").exists()
    # float rounding: W + BA summed once, in another order than the adapter's two products (2.6e-4 seen on an AMX
    # CPU); the adapter itself moves the logits by far more, so a merge that dropped or mis-scaled it fails
    torch.testing.assert_close(logits(merged, tokenizer), expected, rtol=1e-3, atol=1e-3)
    moved = (logits(load_policy("tiny")[0], tokenizer) - expected).abs().max()
    assert moved > 0.1, float(moved)  # 6.5 here
