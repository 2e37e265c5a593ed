"""Prompt and reference loaders: packaged offline corpora, and Hugging Face ``datasets`` when online.

This package imports nothing else of criticgym but its errors, so every other layer may use it.
"""

from criticgym.data.arithmetic import load_arithmetic
from criticgym.data.corpora import (
    Example,
    load_detox_prompts,
    load_news_articles,
    load_rotten_tomatoes,
    split,
)
from criticgym.data.hub import load_imdb

__all__ = [
    "Example",
    "load_arithmetic",
    "load_detox_prompts",
    "load_imdb",
    "load_news_articles",
    "load_rotten_tomatoes",
    "split",
]
