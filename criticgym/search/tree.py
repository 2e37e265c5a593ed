"""RAIN's search tree: token-set nodes with their statistics, PUCT selection, backup, re-rooting.

No model in here: :mod:`criticgym.search.rain` drives it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from criticgym.search.rain import RAINConfig


class Node:
    """A token set in the search tree, with its statistics.

    ``n`` counts visits, fractional because similar siblings share backups; ``visits`` counts real ones. ``q`` is
    the mean value, ``embedding`` the running mean of the embeddings of the texts simulated through this node.
    """

    __slots__ = ("tokens", "prior", "parent", "children", "depth", "n", "visits", "q", "embedding", "top")

    def __init__(self, tokens: tuple[int, ...], prior: float, parent: Node | None, depth: int) -> None:
        self.tokens, self.prior, self.parent, self.depth = tokens, prior, parent, depth
        self.children: dict[tuple[int, ...], Node] = {}
        self.n, self.visits, self.q = 0.0, 0, 0.0
        self.embedding: np.ndarray | None = None
        self.top: tuple[np.ndarray, np.ndarray] | None = None  # the next-token (ids, probs) after this node

    def add_children(self, candidates: Sequence[tuple[tuple[int, ...], float]], mix: float | None) -> None:
        """New children from ``(tokens, probability)`` candidates; priors normalized (and mixed with uniform)."""
        fresh = [(t, p) for t, p in candidates if t not in self.children]
        if not fresh:
            return
        probs = np.asarray([p for _, p in fresh], dtype=np.float64)
        probs = probs / probs.sum() if probs.sum() > 0 else np.full(len(fresh), 1.0 / len(fresh))
        if mix is not None:
            probs = mix * probs + (1 - mix) / len(fresh)
        for (tokens, _), prior in zip(fresh, probs, strict=True):
            self.children[tokens] = Node(tokens, float(prior), self, self.depth + 1)


class Tree:
    """The search tree: selection, backup and re-rooting (no model in here).

    Values are normalized for selection by the smallest and largest mean value seen (at first -1 and 1).
    """

    def __init__(self, config: RAINConfig, root: Node | None = None) -> None:
        self.config = config
        self.root = root or Node((), 0.0, None, 0)
        self.q_min, self.q_max = -1.0, 1.0

    def score(self, child: Node) -> float:
        """``q_norm + c * p * sqrt(N_parent) / (1 + n)``, with ``q_norm`` 0 for an unvisited child."""
        q = 0.0 if child.n == 0 else (child.q - self.q_min) / (self.q_max - self.q_min + 1e-5)
        return q + self.config.c * child.prior * math.sqrt(child.parent.n) / (1 + child.n)

    def select(self, node: Node) -> Node:
        """The child with the highest score (the first one on ties)."""
        return max(node.children.values(), key=self.score)

    def backup(self, path: Sequence[Node], value: float, embeddings: Sequence[np.ndarray | None] = ()) -> None:
        """Back a value up the path: ``n += 1``, ``q += (v - q) / n``.

        With embeddings (one per node below the root), similar siblings get a share: ``n += s * gamma`` and their
        mean moves toward ``v`` with that weight.
        """
        cfg = self.config
        embeddings = list(embeddings) or [None] * (len(path) - 1)
        for node in path:
            node.n += 1
            node.visits += 1
            node.q += (value - node.q) / node.n
            if node is not self.root:
                self.q_min, self.q_max = min(self.q_min, node.q), max(self.q_max, node.q)
        for node, embedding in zip(path[1:], embeddings, strict=True):
            if embedding is None:
                continue
            node.embedding = (
                embedding if node.embedding is None else node.embedding + (embedding - node.embedding) / node.visits
            )
            if not cfg.similarity:
                continue
            for sibling in node.parent.children.values():
                if sibling is node or sibling.embedding is None:
                    continue
                similarity = _cosine(node.embedding, sibling.embedding)
                if similarity < cfg.similarity_threshold:
                    continue
                share = similarity * cfg.similarity_gamma
                sibling.q = (sibling.q * sibling.n + share * value) / (sibling.n + share)
                sibling.n += share

    def best_child(self) -> Node | None:
        """The most visited child of the root (the higher mean value on ties)."""
        children = list(self.root.children.values())
        return max(children, key=lambda c: (c.n, c.q)) if children else None

    def reroot(self, child: Node) -> None:
        """Make ``child`` the root, keeping its subtree and statistics; its children's priors are re-mixed."""
        child.parent = None
        self.root = child
        if child.children:
            mix = self.config.root_prior_mix
            priors = np.asarray([c.prior for c in child.children.values()])
            priors = mix * priors + (1 - mix) / len(priors)
            for c, p in zip(child.children.values(), priors / priors.sum(), strict=True):
                c.prior = float(p)

    def needs_addition(self, node: Node) -> bool:
        """Dynamic addition: fewer than ``max_children`` children, all evaluated, all bad and all alike."""
        cfg = self.config
        children = list(node.children.values())
        if not cfg.dynamic_addition or not children or len(children) >= cfg.max_children:
            return False
        if any(c.embedding is None for c in children) or max(c.q for c in children) >= 0:
            return False
        spread = float(np.linalg.norm(np.var(np.stack([c.embedding for c in children]), axis=0)))
        return spread < cfg.addition_spread * len(children[0].tokens)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
