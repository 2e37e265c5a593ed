from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for a hub; hub ids fail at once

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import criticgym  # noqa: E402, F401  (registers the ids)
from criticgym.rollout import load_policy  # noqa: E402


@pytest.fixture(scope="session")
def tiny():
    """The built-in tiny model and its tokenizer (random weights, SmolLM2 tokenizer)."""
    return load_policy("tiny")


@pytest.fixture(scope="session")
def tokenizer(tiny):
    return tiny[1]


@pytest.fixture(scope="session")
def sharp(tiny):
    """A tiny model with large random weights, so that greedy tokens depend on the whole context.

    The built-in tiny model's small initialization makes it repeat its last input token; this one does not,
    which makes equality tests sensitive to positions, padding and the cache.
    """
    from transformers import LlamaForCausalLM

    model, tokenizer = tiny
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        config = model.config.__class__.from_dict(model.config.to_dict())
        config.initializer_range = 0.6
        sharp = LlamaForCausalLM(config).eval()
    return sharp, tokenizer


def rollout_actions(env, actions, seed=0, options=None):
    """Step an env through fixed actions; return everything it said."""
    out = [env.reset(seed=seed, options=options)]
    for a in actions:
        step = env.step(a)
        out.append(step)
        if step[2] or step[3]:
            break
    return out


def assert_same(a, b):
    """Deep equality for nested tuples/dicts/arrays."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.fixture(scope="module")
def cluster():
    """A local Ray with 2 CPUs for the test module (criticgym[ray])."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
