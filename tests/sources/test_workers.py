"""Ray rollout workers (a rollout source), on a local Ray with 2 CPUs and the tiny model."""

from __future__ import annotations

from dataclasses import asdict
from functools import partial

import pytest
import torch

import criticgym
from criticgym.algos.grpo import GRPOConfig
from criticgym.algos.lora import add_lora
from criticgym.algos.ppo import PPOConfig
from criticgym.algos.reinforce import ReinforceConfig
from criticgym.errors import ConfigError
from criticgym.rewards import Relc
from criticgym.rollout import join_batches, load_policy
from criticgym.sources import EnvRollouts
from criticgym.sources.workers import RolloutWorker, trainable_state
from criticgym.train import TrainConfig, build_agent, build_policy, env_kwargs, train
from criticgym.train.build import rollout_workers, worker_setup

ray = pytest.importorskip("ray")

from tests.ray_actors import kill  # noqa: E402


def config(**overrides) -> TrainConfig:
    options = dict(
        env="criticgym/Words-v0",
        reward="sparse",
        model="tiny",
        num_envs=4,
        iterations=2,
        ppo=PPOConfig(lr=3e-3, epochs=1, minibatch_size=2, temperature=1.5),
        progress=False,
    )
    return TrainConfig(**{**options, **overrides})


def agent_of(cfg: TrainConfig, source=None):
    """The agent a config builds, playing on ``source`` (a vector env of the whole batch when not given)."""
    model, tokenizer = build_policy(cfg)
    source = source or criticgym.make_vec(cfg.env, num_envs=cfg.num_envs, **env_kwargs(cfg))
    return build_agent(cfg, model, tokenizer, source)


class InProcessWorkers:
    """The same shards as rollout_workers(cfg), played one after the other in this process (no Ray)."""

    def __init__(self, cfg: TrainConfig) -> None:
        half = cfg.num_envs // 2
        make = partial(worker_setup, asdict(cfg), {})
        self.workers = [RolloutWorker(make, rows, cfg.num_envs) for rows in (range(half), range(half, 2 * half))]
        self.num_envs, self.perf = cfg.num_envs, {}

    def play(self, engine, seed, sampling, options=None):
        state = trainable_state(engine)
        shards = [worker.play(state, seed, sampling, options)[0] for worker in self.workers]
        return join_batches(shards, engine.pad_id)


def test_two_workers_play_one_process_s_batch_and_a_killed_worker_is_replaced(cluster):
    cfg = config(workers=2)
    envs = criticgym.make_vec(cfg.env, num_envs=cfg.num_envs, **env_kwargs(cfg))
    whole = agent_of(cfg, EnvRollouts(envs, range(cfg.num_envs), cfg.num_envs))  # one process plays every row
    workers = rollout_workers(cfg)
    remote = agent_of(cfg, workers)

    ours, theirs = whole.rollout(), remote.rollout()
    for field in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "rewards"):
        assert torch.equal(getattr(ours, field), getattr(theirs, field)), field
    for field in ("logprobs", "values", "ref_logprobs"):  # other padding and batch shapes: float sums differ a little
        torch.testing.assert_close(getattr(ours, field), getattr(theirs, field), atol=1e-4, rtol=1e-4)

    # Training: against the same two shards played in this process with one thread, as each worker plays them, so
    # that every float is the same. (Against the whole batch, or with other thread counts, Adam's first step turns
    # 1e-5 differences into different weights.)
    local = agent_of(cfg, InProcessWorkers(cfg))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = [local.iterate(), local.iterate(), local.iterate()]
        got = [remote.iterate()]
        kill(workers.actors.handles[0])  # a worker dies between iterations
        got += [remote.iterate(), remote.iterate()]
    finally:
        torch.set_num_threads(threads)
        workers.close()
    assert workers.replaced == 1
    for want, have in zip(expected, got, strict=True):  # the new worker plays with the learner's current weights
        assert have["charts/episodic_return"] == want["charts/episodic_return"]
        assert have["losses/policy_loss"] == pytest.approx(want["losses/policy_loss"], abs=1e-7)
    assert len({h["charts/episodic_return"] for h in got}) > 1  # the policy changed between iterations


def test_workers_split_the_batch_evenly_and_fit_the_cluster(cluster):
    with pytest.raises(ConfigError, match="multiple of workers"):
        rollout_workers(config(num_envs=5, workers=2))
    with pytest.raises(ConfigError, match="Lower --workers"):
        rollout_workers(config(num_envs=8, workers=4))
    with pytest.raises(ConfigError, match="need 2 GPUs; the Ray cluster has 0. Lower --workers or --worker-gpus"):
        rollout_workers(config(worker_gpus=1.0, workers=2))  # a GPU per worker, on a cluster without any


def test_train_with_workers_and_a_critic_pool_writes_its_run(cluster, tmp_path):
    cfg = config(reward=Relc(critic="lexicon"), workers=2, critic_actors=1, out=str(tmp_path), eval_prompts=2)
    result = train(cfg, log=lambda *_: None)
    assert [h["iteration"] for h in result["history"]] == [1, 2]
    assert all(h["perf/policy_flops"] > 0 for h in result["history"])  # the workers' FLOPs reach the learner
    assert (tmp_path / "checkpoint.pt").exists()


def test_with_lora_only_the_adapter_travels():
    model, tokenizer = load_policy("tiny")
    lora = add_lora(model, r=2, alpha=4.0, targets="all-linear")
    cfg = config()
    agent = build_agent(cfg, lora, tokenizer, criticgym.make_vec(cfg.env, num_envs=4, **env_kwargs(cfg)))
    sent = trainable_state(agent.engine)["policy"]
    assert sent and all("lora_" in name for name in sent)
    full = trainable_state(agent_of(cfg).engine)["policy"]
    assert sum(v.numel() for v in sent.values()) < sum(v.numel() for v in full.values()) / 20


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # PPO: value head and reference model
        {"ppo": PPOConfig(kl_coef=0.0, freeze_layers=1)},  # no reference model, a frozen layer
        {"agent": "rloo", "reinforce": ReinforceConfig(k=2, kl_coef=0.05)},  # no value head
        {"agent": "grpo", "grpo": GRPOConfig(k=2, beta=0.0)},  # neither
    ],
)
def test_a_worker_builds_the_learner_s_actor_without_an_optimizer(overrides):
    from criticgym.train.build import build_actor

    cfg = config(**overrides)
    agent = agent_of(cfg)
    model, tokenizer = build_policy(cfg)
    actor = build_actor(cfg, model, tokenizer)
    assert not hasattr(actor, "optimizer")
    assert (actor.ref_model is None) == (agent.ref_model is None)
    assert (actor.value_head is None) == (agent.value_head is None)
    frozen = {n for n, p in actor.model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, p in agent.model.named_parameters() if not p.requires_grad}
    assert trainable_state(actor.engine).keys() == trainable_state(agent.engine).keys()
    assert trainable_state(actor.engine)["policy"].keys() == trainable_state(agent.engine)["policy"].keys()
    assert (actor.value_head is not None) == (overrides.get("agent", "ppo") == "ppo")
    assert (actor.ref_model is not None) == (not overrides or overrides.get("agent") == "rloo")
