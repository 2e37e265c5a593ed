from __future__ import annotations

import numpy as np
import pytest
import torch

import criticgym
from criticgym.algos.lora import BaseModel, adapter_state, add_lora
from criticgym.algos.ppo import PPO, PPOConfig
from criticgym.algos.reinforce import Reinforce, ReinforceConfig
from criticgym.errors import ConfigError
from criticgym.rollout import GREEDY, RolloutEngine, load_policy

IDS = torch.tensor([[5, 6, 7, 8, 9]])


def words_envs(n=32):
    return criticgym.make_vec("criticgym/Words-v0", num_envs=n, autoreset_mode="disabled")


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_the_reference_is_the_base_with_the_adapter_off_not_a_copy():
    model, tokenizer = load_policy("tiny")
    before = logits(model)
    policy = add_lora(model, r=4, alpha=8)
    torch.testing.assert_close(logits(policy), before)  # B starts at zero: the adapter changes nothing yet
    agent = PPO(policy, tokenizer, words_envs(8), PPOConfig(lr=1e-2, kl_coef=0.05, minibatch_size=8, epochs=1))
    assert isinstance(agent.ref_model, BaseModel) and not list(agent.ref_model.children())  # no weights of its own
    trained = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    for _ in range(2):
        metrics = agent.iterate()
    torch.testing.assert_close(logits(agent.ref_model), before, rtol=0, atol=0)  # the reference never moves
    assert (logits(policy) - before).abs().max() > 1e-3 and metrics["charts/kl"] > 0
    with pytest.raises(ConfigError, match="freeze_layers"):
        PPO(policy, tokenizer, words_envs(8), PPOConfig(freeze_layers=1))


def test_a_lora_policy_generates_through_the_kv_cache_like_its_base():
    model, tokenizer = load_policy("tiny")
    base = RolloutEngine(model, tokenizer).generate(["Say it:", "Words:"], max_new_tokens=8, sampling=GREEDY)
    policy = add_lora(model, r=4)  # a zero adapter: the same greedy tokens, through the peft wrapper's cache
    wrapped = RolloutEngine(policy, tokenizer).generate(["Say it:", "Words:"], max_new_tokens=8, sampling=GREEDY)
    torch.testing.assert_close(wrapped.completion_ids, base.completion_ids)
    view = RolloutEngine(BaseModel(policy), tokenizer).generate(
        ["Say it:", "Words:"], max_new_tokens=8, sampling=GREEDY
    )
    torch.testing.assert_close(view.completion_ids, base.completion_ids)


# Learning thresholds, measured on the locked install over the last five of 40 batches of Words-v0 (seeds 0-5):
# PPO with LoRA r 8 on every linear layer and the output head, lr 5e-3, reaches 0.83-0.96; full fine-tuning
# 0.80-0.86 (its test asks 0.76, and so does this one). Without an adapter on the head, which holds most of this
# tiny model's weights, LoRA reaches only 0.72-0.85 after 60 batches.
def test_lora_ppo_learns_the_toy_task_past_the_full_fine_tuning_threshold():
    model, tokenizer = load_policy("tiny")
    policy = add_lora(model, r=8, alpha=16, targets="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head")
    agent = PPO(policy, tokenizer, words_envs(), PPOConfig(lr=5e-3, kl_coef=0.01, minibatch_size=16, epochs=2))
    returns = [agent.iterate()["charts/episodic_return"] for _ in range(40)]
    assert np.mean(returns[-5:]) > 0.76 and np.mean(returns[-5:]) > returns[0] + 0.05, returns


def test_lora_reinforce_and_rloo_train_the_adapter_only():
    model, tokenizer = load_policy("tiny")
    policy = add_lora(model, r=4)
    frozen = {n: p.detach().clone() for n, p in policy.named_parameters() if not p.requires_grad}
    agent = Reinforce(policy, tokenizer, words_envs(8), ReinforceConfig(lr=1e-2, baseline="rloo", k=4, kl_coef=0.01))
    agent.iterate()
    assert all(torch.equal(p, frozen[n]) for n, p in policy.named_parameters() if n in frozen)
    assert set(agent.state_dict()["model"]) == set(adapter_state(policy))


def test_a_lora_run_checkpoints_the_adapter_resumes_and_evaluates_with_its_base(tmp_path):
    from criticgym.cli.train import EvalConfig, evaluate
    from criticgym.train import TrainConfig, train

    def config(out, iterations):
        return TrainConfig(
            env="criticgym/Words-v0",
            reward="sparse",
            model="tiny",
            lora_r=4,
            lora_targets="q_proj,v_proj",
            iterations=iterations,
            num_envs=8,
            eval_prompts=4,
            checkpoint_every=2,
            eval_every=0,
            ppo=PPOConfig(lr=1e-2, minibatch_size=8, epochs=1, kl_coef=0.05),
            out=str(out),
            progress=False,
        )

    straight = train(config(tmp_path / "straight", 4), log=lambda *a: None)
    state = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    names = list(state["agent"]["model"])
    assert names and all("lora_" in n and ("q_proj" in n or "v_proj" in n) for n in names)  # the adapter alone
    train(config(tmp_path / "resumed", 2), log=lambda *a: None)
    resumed = train(TrainConfig(**{**config(tmp_path / "resumed", 4).__dict__, "resume": True}), log=lambda *a: None)
    returns = [[h["charts/episodic_return"] for h in r["history"]] for r in (straight, resumed)]
    assert returns[0] == returns[1]
    columns = evaluate(EvalConfig(checkpoint=str(tmp_path / "straight"), prompts=4))
    base, trained = columns.values()
    assert trained["eval/reward"] == pytest.approx(straight["evals"][-1]["eval/reward"])
    assert base["eval/reward"] == pytest.approx(straight["evals"][0]["eval/reward"])  # the adapter off: iteration 0
