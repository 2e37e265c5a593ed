"""RAIN: tree arithmetic against hand-computed values, the search against vanilla sampling, and the cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from criticgym.errors import ConfigError
from criticgym.rollout import GREEDY, RolloutEngine
from criticgym.search.rain import RAIN, RAINConfig
from criticgym.search.tree import Node, Tree


def char_embed(texts):
    """A cheap deterministic sentence embedding for tests: letter counts."""
    out = np.zeros((len(texts), 26), dtype=np.float32)
    for row, text in enumerate(texts):
        for ch in text.lower():
            if "a" <= ch <= "z":
                out[row, ord(ch) - 97] += 1
    return out + 1e-3


def tree_with_children(priors, c=2.0, **config):
    tree = Tree(RAINConfig(c=c, **config))
    tree.root.add_children([((i,), p) for i, p in enumerate(priors)], mix=None)
    return tree


def test_selection_is_puct_with_min_max_normalized_values():
    tree = tree_with_children([0.5, 0.3, 0.2])
    a, b, c = tree.root.children.values()
    tree.backup([tree.root, a], 0.5)
    tree.backup([tree.root, b], -0.5)
    # root n = 2; q range [-1, 1] (the initial bounds hold): a 0.75 + 2 * 0.5 * sqrt(2) / 2, b 0.25 + ...
    assert tree.score(a) == pytest.approx(0.75 / (1 + 0.5e-5) + 0.5 * math.sqrt(2), rel=1e-5)
    assert tree.score(b) == pytest.approx(0.25 / (1 + 0.5e-5) + 0.3 * math.sqrt(2), rel=1e-5)
    assert tree.score(c) == pytest.approx(2 * 0.2 * math.sqrt(2))  # unvisited: q_norm 0
    assert tree.select(tree.root) is a
    no_exploration = tree_with_children([0.9, 0.1], c=0.0)
    x, y = no_exploration.root.children.values()
    no_exploration.backup([no_exploration.root, y], 0.2)
    assert no_exploration.select(no_exploration.root) is y  # c = 0: the value alone decides


def test_backup_is_a_running_mean_along_the_path():
    tree = tree_with_children([1.0])
    (child,) = tree.root.children.values()
    child.add_children([((7,), 1.0)], mix=None)
    leaf = child.children[(7,)]
    for value in (1.0, -0.5, 0.2):
        tree.backup([tree.root, child, leaf], value)
    for node in (tree.root, child, leaf):
        assert (node.n, node.visits) == (3, 3) and node.q == pytest.approx((1.0 - 0.5 + 0.2) / 3)
    assert (tree.q_min, tree.q_max) == (-1.0, 1.0)
    tree.backup([tree.root, child], 5.0)  # values beyond the initial bounds widen them
    assert tree.q_max == pytest.approx(child.q)


def test_similar_siblings_share_a_backup():
    tree = tree_with_children([0.5, 0.5, 0.0])
    a, b, c = tree.root.children.values()
    near, far = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    tree.backup([tree.root, b], 0.0, [np.array([1.0, 0.1])])  # b: cosine 0.995 with a
    tree.backup([tree.root, c], 0.0, [far])  # c: orthogonal
    tree.backup([tree.root, a], 1.0, [near])
    share = 0.2 * float(np.dot(near, [1.0, 0.1]) / np.linalg.norm([1.0, 0.1]))
    assert b.n == pytest.approx(1 + share) and b.q == pytest.approx(share * 1.0 / (1 + share))
    assert b.visits == 1  # real visits do not change
    assert (c.n, c.q) == (1, 0.0)
    off = tree_with_children([0.5, 0.5], similarity=False)
    a2, b2 = off.root.children.values()
    off.backup([off.root, b2], 0.0, [np.array([1.0, 0.1])])
    off.backup([off.root, a2], 1.0, [near])
    assert (b2.n, b2.q) == (1, 0.0)


def test_the_rerooted_tree_keeps_its_statistics():
    tree = tree_with_children([0.6, 0.4])
    a, _ = tree.root.children.values()
    a.add_children([((1,), 0.8), ((2,), 0.2)], mix=None)
    x, y = a.children.values()
    tree.backup([tree.root, a, x], 0.5)
    tree.backup([tree.root, a, y], -1.0)
    assert tree.best_child() is a
    tree.reroot(a)
    assert tree.root is a and a.parent is None and (a.n, a.visits) == (2, 2)
    assert (x.n, x.q, y.n, y.q) == (1, 0.5, 1, -1.0)
    assert x.prior == pytest.approx(0.75 * 0.8 + 0.125) and y.prior == pytest.approx(0.75 * 0.2 + 0.125)


def test_dynamic_addition_asks_for_alike_and_bad_children():
    tree = tree_with_children([0.5, 0.5])
    a, b = tree.root.children.values()
    assert not tree.needs_addition(tree.root)  # not evaluated yet
    tree.backup([tree.root, a], -0.5, [np.array([1.0, 0.0])])
    tree.backup([tree.root, b], -0.5, [np.array([1.0, 0.001])])
    assert tree.needs_addition(tree.root)
    tree.backup([tree.root, b], 1.0, [np.array([1.0, 0.0])])
    assert not tree.needs_addition(tree.root)  # one child is good now


def bad_word_setup(sharp, prompt):
    model, tokenizer = sharp
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    greedy = RolloutEngine(model, tokenizer).generate([ids], max_new_tokens=1, sampling=GREEDY)
    bad = tokenizer.decode(greedy.completion_ids[0])
    return bad, (lambda prompts, texts: [-1.0 if bad in t else 1.0 for t in texts])


def test_rain_avoids_what_the_evaluator_marks_harmful_where_vanilla_writes_it(sharp):
    model, tokenizer = sharp
    prompt = "The movie was"
    bad, evaluator = bad_word_setup(sharp, prompt)
    vanilla = RolloutEngine(model, tokenizer).generate([prompt] * 16, max_new_tokens=6, seed=0)
    texts = tokenizer.batch_decode(vanilla.completion_ids, skip_special_tokens=True)
    assert sum(bad in t for t in texts) >= 8, (bad, texts)  # the sharp model writes it most of the time
    # PUCT keeps visiting a high-prior child until its visits outweigh its prior (about 10 visits here): 30
    # searches per step leave room for the good candidates to overtake it
    config = RAINConfig(searches=30, min_new_searches=10, max_new_tokens=6)
    rain = RAIN(model, tokenizer, evaluator, config, embed=char_embed)
    results = rain.generate([prompt] * 4)
    assert all(bad not in r.completion for r in results), [r.completion for r in results]
    assert all(r.stats["searches"] >= 10 and r.stats["committed_tokens"] >= 1 for r in results)


def test_no_stale_cache_after_rewinds(sharp):
    """The root state after a whole search equals a fresh prefill of what was committed, and re-running every
    prefix (the official strategy) makes exactly the same search."""
    model, tokenizer = sharp
    _, evaluator = bad_word_setup(sharp, "I think")
    config = dict(searches=8, min_new_searches=4, max_new_tokens=8, seed=3)
    cached = RAIN(model, tokenizer, evaluator, RAINConfig(**config), embed=char_embed)
    rerun = RAIN(model, tokenizer, evaluator, RAINConfig(**config, reuse_cache=False), embed=char_embed)
    a, b = cached.generate(["I think"]), rerun.generate(["I think"])
    assert a[0].completion_ids == b[0].completion_ids
    for key in ("searches", "evaluations", "evaluation_cache_hits", "additions"):
        assert a[0].stats[key] == b[0].stats[key]
    assert a[0].stats["forward_tokens"] < b[0].stats["forward_tokens"]

    ids = tokenizer("I think", add_special_tokens=False)["input_ids"]
    from criticgym.search.rain import _Run

    run = _Run(cached, ids, "I think", seed=0, budget=8, eos=cached.eos_ids)
    for _ in range(5):
        run.search_once()
    run.commit(run.tree.best_child())
    for _ in range(3):
        run.search_once()
    fresh = cached.decoder.prefill([ids + run.committed])
    assert run.root_state.cache.length == len(ids) + len(run.committed)
    torch.testing.assert_close(run.root_state.logits, fresh.logits, atol=2e-4, rtol=2e-4)


def test_rain_plays_an_env_and_the_wrappers_score_the_completion(sharp):
    import criticgym

    model, tokenizer = sharp
    seen = []

    def scorer(prompts, completions):
        seen.extend(completions)
        return [1.0] * len(completions)

    env = criticgym.make("criticgym/Words-v0", model=tokenizer, scorer=scorer, max_new_tokens=5)
    config = RAINConfig(searches=4, min_new_searches=2)
    out = RAIN(model, tokenizer, lambda p, t: [0.0] * len(t), config, embed=char_embed).play(env, seed=0)
    assert out["return"] == pytest.approx(1.0) and seen == [out["completion"]]
    assert len(out["completion_ids"]) == out["search"]["committed_tokens"] <= 5


def test_bad_config():
    with pytest.raises(ConfigError, match="set-lengths must all be at least 1"):
        RAINConfig(set_lengths=(0,))
    with pytest.raises(ConfigError, match="searches must be at least 1"):
        RAINConfig(searches=0)
    with pytest.raises(ConfigError, match=r"root-prior-mix must be in \[0, 1\], got 1.5"):
        RAINConfig(root_prior_mix=1.5)
    with pytest.raises(ConfigError, match="sample-top-k must be at least 1"):
        RAINConfig(sample_top_k=0)


def test_node_priors_mix_with_uniform_at_the_root():
    node = Node((), 0.0, None, 0)
    node.add_children([((1,), 3.0), ((2,), 1.0)], mix=0.75)
    assert [c.prior for c in node.children.values()] == pytest.approx([0.75 * 0.75 + 0.125, 0.75 * 0.25 + 0.125])


def test_searches_caps_the_simulations_of_a_step_below_min_new_searches(sharp):
    model, tokenizer = sharp
    calls = []

    def evaluator(prompts, texts):
        calls.append(len(texts))
        return [0.0] * len(texts)

    config = RAINConfig(searches=2, min_new_searches=15, max_new_tokens=6)  # min_new_searches is the default
    [result] = RAIN(model, tokenizer, evaluator, config, embed=char_embed).generate(["The movie was"])
    stats = result.stats
    assert stats["commits"] >= 1
    assert stats["searches"] <= 2 * stats["commits"]  # the option's word: at most 2 simulations per step
    assert sum(calls) == stats["evaluations"] <= stats["searches"]
    # the default still runs at least min_new_searches new searches per step
    default = RAINConfig(searches=50, min_new_searches=15, max_new_tokens=2, value_threshold=2.0)
    [full] = RAIN(model, tokenizer, evaluator, default, embed=char_embed).generate(["The movie was"])
    assert full.stats["searches"] >= 15 * full.stats["commits"]


def test_rain_refuses_an_engine_it_cannot_rewind(tokenizer):
    from criticgym.rollout.vllm import VLLMSampler

    sampler = VLLMSampler.__new__(VLLMSampler)  # what --engine vllm samples with (not started: it is refused first)
    with pytest.raises(ConfigError, match="Keep the built-in engine"):
        RAIN(sampler, tokenizer, lambda prompts, completions: [0.0] * len(prompts))
