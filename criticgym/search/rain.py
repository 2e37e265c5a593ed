"""RAIN: rewindable inference-time alignment by search with self-evaluation (Li et al. 2023, arXiv 2309.07124).

A frozen model writes a completion one *token set* at a time. Before committing a set, it searches a tree of
candidate sets: it walks down by the PUCT rule, expands a leaf with candidate sets drawn from the model, simulates
the text to the end of the clause, evaluates that text (the model itself, or any scorer), and backs the value up
the path, sharing it with siblings whose texts mean the same. It then commits the most visited child and re-roots
the tree there, keeping its statistics. No weights change.

The search never re-runs the committed prefix. Its KV cache is extended by the path and the simulation of one
search and then rewound in place (:meth:`~criticgym.rollout.DecodeState.rewind`); a node's candidate sets are
drawn as one batch; values are cached by text. ``RAINConfig(reuse_cache=False)`` follows the official code's
strategy instead: every simulation and every candidate set starts with a fresh run of the whole prefix (then
continues incrementally), and the candidates are drawn one at a time. It makes the same search (the same random
numbers, the same sets) and exists to measure the difference.

    >>> from criticgym.search.rain import RAIN, RAINConfig
    >>> from criticgym.rollout import load_policy
    >>> model, tokenizer = load_policy("tiny")
    >>> rain = RAIN(model, tokenizer, evaluator=lambda prompts, texts: [0.0] * len(texts),
    ...             config=RAINConfig(searches=4, min_new_searches=2, max_new_tokens=4))
    >>> [result] = rain.generate(["The movie was"])
    >>> result.stats["committed_tokens"] <= 4
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from criticgym.critics.protocols import DirectJudge
from criticgym.errors import AT_LEAST_1, FRACTION, NON_NEGATIVE, ConfigError, check_ranges
from criticgym.rollout import Decoder, DecodeState, eos_token_ids
from criticgym.search.tree import Node, Tree
from criticgym.utils.options import deferred


@dataclass
class RAINConfig:
    """RAIN's constants; the defaults are the paper's and its official code's."""

    searches: int = 50
    """T: searches per committed step, counting the visits the re-rooted subtree already had; never more new ones."""
    min_new_searches: int = 15
    """Run at least this many new searches per committed step (the official code's inner loop), capped at
    ``searches``: with ``searches=2`` a step runs at most 2 simulations."""
    min_visits: int = 6
    """T_m: stop searching early once the most visited child has more real visits than this ..."""
    value_threshold: float = 0.8
    """V: ... and a mean value above this."""
    c: float = 2.0
    """Exploration weight of the PUCT rule (0: no exploration, the paper's ablation)."""
    set_lengths: tuple[int, ...] = (1, 2, 4, 10)
    """Length of the token sets by depth (the last one repeats)."""
    candidates: int = 10
    """Candidate sets per expansion: the top tokens at length 1, else greedy plus sampled continuations."""
    sample_top_k: int = 15
    """Top-k of the sampled continuations (and of their joint probabilities)."""
    root_prior_mix: float = 0.75
    """Root priors: this share of the model's prior, the rest uniform."""
    similarity: bool = True
    """Share each backup with siblings whose texts have similar embeddings (the paper's ablation turns it off)."""
    similarity_threshold: float = 0.95
    """Cosine similarity from which a sibling shares a backup."""
    similarity_gamma: float = 0.2
    """Weight of that share (times the similarity)."""
    dynamic_addition: bool = True
    """Add a candidate to a node whose children are all bad and all alike (the paper's ablation turns it off)."""
    max_children: int = 20
    """No dynamic addition beyond this many children."""
    addition_spread: float = 0.03
    """Children are 'alike' when the norm of their embeddings' variance is below this times their set length."""
    clause_ends: str = ",.?:;\n"
    """A simulation stops at the end of a clause (or EOS, or the token budget)."""
    max_new_tokens: int = 20
    """Token budget of a completion (an env's own budget replaces it)."""
    reuse_cache: bool = True
    """Keep the committed prefix's KV cache and batch the candidates (False: the official strategy; benchmarks)."""
    seed: int = 0
    """Seeds the sampled candidates and simulations."""

    def __post_init__(self) -> None:
        if not deferred():  # the commands check once tyro has parsed (utils.options.parsed)
            self.check()

    def check(self) -> None:
        """Raise :class:`ConfigError` for a constant out of its range, named as its option (``--rain.searches``)."""
        check_ranges(self, RAIN_RANGES, "--rain.")
        if not self.set_lengths or min(self.set_lengths) < 1:
            raise ConfigError(f"--rain.set-lengths must all be at least 1, got {self.set_lengths}.")


# Every constant's range (the two thresholds have none: one beyond [-1, 1] turns its rule off, as a test does)
RAIN_COUNTS = ("searches", "min_new_searches", "candidates", "sample_top_k", "max_children", "max_new_tokens")
RAIN_RANGES = dict.fromkeys(RAIN_COUNTS, AT_LEAST_1) | {"root_prior_mix": FRACTION}
RAIN_RANGES |= dict.fromkeys(("min_visits", "c", "similarity_gamma", "addition_spread", "seed"), NON_NEGATIVE)


@dataclass
class SearchResult:
    """One prompt's completion and search statistics."""

    prompt: str
    completion: str
    completion_ids: list[int]
    stats: dict[str, float] = field(default_factory=dict)


class RAIN:
    """RAIN on a frozen causal LM.

    Args:
        model: the policy (any transformers causal LM); only read.
        tokenizer: its tokenizer.
        evaluator: the value it optimizes: a direct judge (``rate(prompts, completions)`` in [-1, 1]), a scorer, a
            function ``(prompts, completions) -> values`` or a name (:func:`~criticgym.search.values.make_value`).
        config: the search's constants.
        embed: ``texts -> (N, D)`` sentence embeddings for the similarity update and dynamic addition
            (all-MiniLM-L6-v2 by default).
    """

    def __init__(
        self,
        model,
        tokenizer,
        evaluator: DirectJudge | Callable | str,
        config: RAINConfig | None = None,
        embed: Callable[[Sequence[str]], np.ndarray] | None = None,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise ConfigError(
                f"RAIN searches on a transformers model, got {type(model).__name__}: it forks, crops and rewinds the "
                "model's KV cache, which vLLM does not expose. Keep the built-in engine for search (load_policy)."
            )
        self.model, self.tokenizer = model, tokenizer
        from criticgym.search.values import make_value

        self.evaluator = make_value(evaluator, model, tokenizer)
        self.config = config or RAINConfig()
        if embed is None:
            from criticgym.critics.embeddings import embed
        self.embed = embed
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.decoder = Decoder(model, pad)
        self.eos_ids = tuple(eos_token_ids(tokenizer, model.generation_config))
        self.device = self.decoder.device

    # -- public API --------------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], progress: bool = False) -> list[SearchResult]:
        """One searched completion per prompt (seeded by the config's seed and the prompt's index)."""
        from tqdm.auto import tqdm

        results = []
        for index, prompt in enumerate(tqdm(prompts, desc="rain", unit="prompt", disable=not progress)):
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            results.append(self.search(ids, prompt, seed=self.config.seed * 1_000_003 + index))
        return results

    def play(self, env, seed: int | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run one episode of a criticgym env (single, with its reward wrappers).

        The search commits tokens by stepping the env, which decides when the episode ends and pays its rewards
        as usual.

        Returns the last step's info with ``return`` (the sum of rewards) and ``search`` (statistics).
        """
        obs, info = env.reset(seed=seed, options=options)
        ids = obs["input_ids"][: int(obs["attention_mask"].sum())].tolist()
        unwrapped = env.unwrapped
        outcome: dict[str, Any] = {"return": 0.0}

        def commit(tokens: Sequence[int]) -> bool:
            for token in tokens:
                _, reward, terminated, truncated, step_info = env.step(int(token))
                outcome["return"] += float(reward)
                if terminated or truncated:
                    outcome.update(step_info)
                    return True
            return False

        result = self.search(
            ids,
            info["prompt"],
            seed=0 if seed is None else seed,
            budget=unwrapped.max_new_tokens,
            eos_ids=tuple(unwrapped.eos_token_ids),
            commit=commit,
        )
        outcome["search"] = result.stats
        return outcome

    # -- the search ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def search(
        self,
        prompt_ids: Sequence[int],
        prompt: str,
        seed: int = 0,
        budget: int | None = None,
        eos_ids: Sequence[int] | None = None,
        commit: Callable[[Sequence[int]], bool] | None = None,
    ) -> SearchResult:
        """Search and commit token sets until EOS or the budget.

        ``commit`` is called with each committed set and may end the completion earlier (it returns True).
        """
        run = _Run(self, list(prompt_ids), prompt, seed, budget or self.config.max_new_tokens, eos_ids or self.eos_ids)
        start = time.perf_counter()
        cfg = self.config
        at_least = min(cfg.min_new_searches, cfg.searches)  # new searches per step: the cap is ``searches``
        while True:
            first = run.tree.root.visits
            for _ in range(max(cfg.searches - first, at_least)):
                run.search_once()
                best = run.tree.best_child()
                if best is not None and best.visits > cfg.min_visits and best.q > cfg.value_threshold:
                    break
            best = run.tree.best_child()
            if best is None:  # the root is terminal: nothing left to write
                break
            ended = run.commit(best)
            run.stats["commits"] += 1
            if commit is not None and commit(best.tokens):
                ended = True
            if ended:
                break
        completion = self.tokenizer.decode(run.committed, skip_special_tokens=True)
        run.stats["seconds"] = time.perf_counter() - start
        run.stats["committed_tokens"] = len(run.committed)
        return SearchResult(prompt, completion, list(run.committed), run.stats)


class _Run:
    """The state of one prompt's search: the tree, the committed prefix and its decoder state, the caches."""

    def __init__(
        self, rain: RAIN, prompt_ids: list[int], prompt: str, seed: int, budget: int, eos: Sequence[int]
    ) -> None:
        self.rain, self.cfg = rain, rain.config
        self.prompt, self.prompt_ids, self.budget, self.eos = prompt, prompt_ids, budget, set(eos)
        self.generator = torch.Generator().manual_seed(seed)  # sampling runs on the CPU copy of the probabilities
        self.tree = Tree(self.cfg)
        self.committed: list[int] = []
        self.values: dict[str, float] = {}
        self.stats = {"searches": 0, "evaluations": 0, "evaluation_cache_hits": 0, "additions": 0, "forward_tokens": 0}
        self.stats["commits"] = 0  # committed token sets
        self.root_state = self._prefill(prompt_ids)

    # -- model calls (the only place that differs between reusing the cache and re-running prefixes) ------

    def _prefill(self, ids: list[int]) -> DecodeState:
        self.stats["forward_tokens"] += len(ids)
        return self.rain.decoder.prefill([ids])

    def state_after(self, tokens: Sequence[int]) -> DecodeState:
        """The decoder state after the committed prefix plus ``tokens`` (rewind the root afterwards)."""
        if not self.cfg.reuse_cache:
            return self._prefill(self.prompt_ids + self.committed + list(tokens))
        if not tokens:
            return self.root_state
        self.stats["forward_tokens"] += len(tokens)
        return self.rain.decoder.extend(self.root_state, torch.tensor([list(tokens)], device=self.rain.device))

    def step(self, state: DecodeState, tokens: Sequence[int]) -> DecodeState:
        """One token per row, on the state's own cache (both strategies continue a sequence incrementally)."""
        self.stats["forward_tokens"] += len(tokens)
        return self.rain.decoder.step(state, torch.as_tensor(list(tokens), device=self.rain.device))

    def rewind(self) -> None:
        if self.cfg.reuse_cache:
            self.root_state.rewind()

    # -- one search --------------------------------------------------------------------------------------

    def search_once(self) -> None:
        """One search: select down to a leaf, expand it, simulate to the end of the clause, evaluate, back up.

        On the way down, a node whose children are all bad and alike gets one more candidate.
        """
        tree, node, path, tokens = self.tree, self.tree.root, [self.tree.root], []
        while node.children:
            if tree.needs_addition(node):
                self.add_candidate(node, tokens)
            node = tree.select(node)
            path.append(node)
            tokens += node.tokens
        self.stats["searches"] += 1
        if self.finished(tokens):  # a finished leaf (EOS or the budget): nothing to expand or simulate, no forward
            text_ids, simulated = list(tokens), 0
        else:
            state = self.state_after(tokens)
            self.expand(node, state, tokens)
            text_ids, simulated = self.simulate(state, tokens)
            self.rewind()
        value = self.evaluate(self.committed + text_ids)
        embeddings: list[np.ndarray | None] = []
        if self.cfg.similarity or self.cfg.dynamic_addition:
            texts, n = [], len(text_ids)
            for below in reversed(path[1:]):  # a node's text: its tokens to the end of the simulation
                texts.append(self.rain.tokenizer.decode(text_ids[n - simulated - len(below.tokens) :]))
                simulated += len(below.tokens)
            embeddings = list(reversed(list(self.rain.embed(texts)))) if texts else []
        tree.backup(path, value, embeddings)

    def finished(self, tokens: Sequence[int]) -> bool:
        """Whether committed plus ``tokens`` end the completion (EOS or the budget)."""
        return len(self.committed) + len(tokens) >= self.budget or any(t in self.eos for t in tokens)

    def expand(self, node: Node, state: DecodeState, tokens: Sequence[int]) -> None:
        """Give a leaf its candidate sets: the top tokens (length 1), else greedy plus sampled continuations."""
        cfg = self.cfg
        probs = torch.softmax(state.logits[0].float(), dim=-1)
        top = torch.topk(probs, min(cfg.max_children + 1, probs.numel()))
        node.top = (top.indices.cpu().numpy(), top.values.cpu().numpy())
        length = cfg.set_lengths[min(node.depth, len(cfg.set_lengths) - 1)]
        length = min(length, self.budget - len(self.committed) - len(tokens))
        mix = cfg.root_prior_mix if node.parent is None else None
        if length == 1:
            k = min(cfg.candidates, probs.numel())
            ids, p = node.top[0][:k], node.top[1][:k]
            node.add_children([((int(i),), float(q)) for i, q in zip(ids, p, strict=True)], mix)
            return
        node.add_children(self.continuations(state, length, cfg.candidates), mix)

    def continuations(self, state: DecodeState, length: int, k: int) -> list[tuple[tuple[int, ...], float]]:
        """Greedy plus ``k - 1`` sampled continuations of ``length`` tokens (top-k filtered).

        Ours draws them as one batch of k rows from the state's cache; the official strategy draws them one after
        the other, each from a fresh run of the prefix. Both use the same uniforms, so they draw the same sets.
        Duplicates are dropped; each comes with its joint probability (the greedy one's clamped as in the
        paper's code).
        """
        uniforms = torch.rand((k, length), generator=self.generator, dtype=torch.float64)
        if self.cfg.reuse_cache:
            seqs, logp = self._draw(state.repeat(k), uniforms, greedy_first=True)
        else:
            drawn = [
                self._draw(self._prefill(state.ids[0].tolist()), uniforms[row : row + 1], greedy_first=row == 0)
                for row in range(k)
            ]
            seqs, logp = torch.cat([d[0] for d in drawn]), torch.cat([d[1] for d in drawn])
        out: list[tuple[tuple[int, ...], float]] = []
        for row in range(k):
            tokens = tuple(int(t) for t in seqs[row] if t >= 0)
            if tokens and tokens not in [c for c, _ in out]:
                out.append((tokens, float(torch.exp(logp[row]))))
        greedy, others = out[0][1], np.asarray([p for _, p in out[1:]])
        if len(others):
            greedy = max(min(greedy, float(others.sum())), float(others.max() + others.min()))
        return [(out[0][0], greedy)] + out[1:]

    def _draw(self, rows: DecodeState, uniforms: torch.Tensor, greedy_first: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Continue each row for ``uniforms.shape[1]`` tokens by inverse-CDF draws from its top-k.

        With ``greedy_first`` the first row takes the most likely token instead. Tokens after EOS are -1.
        """
        k, length = uniforms.shape
        greedy = torch.zeros(k, dtype=torch.bool)
        greedy[0] = greedy_first
        seqs = torch.full((k, length), -1, dtype=torch.long)
        logp = torch.zeros(k, dtype=torch.float64)
        alive = torch.ones(k, dtype=torch.bool)
        eos = torch.tensor(sorted(self.eos))
        for t in range(length):
            top = torch.topk(rows.logits.float().cpu(), min(self.cfg.sample_top_k, rows.logits.size(-1)), dim=-1)
            probs = torch.softmax(top.values.double(), dim=-1)
            cdf = probs.cumsum(dim=-1)
            choice = torch.searchsorted(cdf, (uniforms[:, t : t + 1] * cdf[:, -1:])).squeeze(1)
            choice = choice.clamp(max=probs.size(-1) - 1).masked_fill(greedy, 0)
            token = top.indices[torch.arange(k), choice]
            logp += torch.where(alive, torch.log(probs[torch.arange(k), choice]), 0.0)
            seqs[:, t] = torch.where(alive, token, -1)
            alive &= ~torch.isin(token, eos)
            if t < length - 1 and bool(alive.any()):
                rows = self.step(rows, token.tolist())
            elif t < length - 1:
                break
        return seqs, logp

    def add_candidate(self, node: Node, tokens: Sequence[int]) -> None:
        """Dynamic addition: the next most likely token (single-token sets) or one more sampled continuation."""
        if node.top is not None and all(len(c) == 1 for c in node.children):
            new = [((int(i),), float(p)) for i, p in zip(*node.top, strict=True) if (int(i),) not in node.children]
        else:
            state = self.state_after(list(tokens))
            new = [c for c in self.continuations(state, len(next(iter(node.children))), 2) if c[0] not in node.children]
            self.rewind()
        if not new:
            return
        tokens_, p = new[0]
        # its prior: its share next to the children's priors, mixed with uniform at the root
        prior = p / (p + sum(c.prior for c in node.children.values()))
        if node.parent is None:
            prior = self.cfg.root_prior_mix * prior + (1 - self.cfg.root_prior_mix) / (len(node.children) + 1)
        node.children[tokens_] = Node(tokens_, prior, node, node.depth + 1)
        self.stats["additions"] += 1

    def simulate(self, state: DecodeState, tokens: Sequence[int]) -> tuple[list[int], int]:
        """Sample from ``state`` to the end of the clause (or EOS, or the budget).

        Returns the ids after the committed prefix (path and simulation) and how many the simulation added.
        """
        ids = list(tokens)
        added = 0
        decode = self.rain.tokenizer.decode
        while not self.finished(ids):
            text = decode(self.committed + ids, skip_special_tokens=True)
            if text and text[-1] in self.cfg.clause_ends:
                break
            probs = torch.softmax(state.logits[0].float(), dim=-1).cpu()
            token = int(torch.multinomial(probs, 1, generator=self.generator))
            ids.append(token)
            added += 1
            if self.finished(ids):
                break
            state = self.step(state, [token])
        return ids, added

    def evaluate(self, completion_ids: Sequence[int]) -> float:
        """The evaluator's value of a completion (cached by its text), clipped to [-1, 1]."""
        text = self.rain.tokenizer.decode(list(completion_ids), skip_special_tokens=True)
        if text in self.values:
            self.stats["evaluation_cache_hits"] += 1
            return self.values[text]
        self.stats["evaluations"] += 1
        value = float(np.clip(float(self.rain.evaluator.rate([self.prompt], [text])[0]), -1.0, 1.0))
        self.values[text] = value
        return value

    def commit(self, child: Node) -> bool:
        """Append the child's tokens to the committed prefix and re-root there; True when the completion ended."""
        tokens = list(child.tokens)
        if self.cfg.reuse_cache:
            self.stats["forward_tokens"] += len(tokens)
            self.root_state = self.rain.decoder.extend(self.root_state, torch.tensor([tokens], device=self.rain.device))
        self.committed += tokens
        if not self.cfg.reuse_cache:
            self.root_state = self._prefill(self.prompt_ids + self.committed)
        self.tree.reroot(child)
        return self.finished([])
