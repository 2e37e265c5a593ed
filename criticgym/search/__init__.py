"""Inference-time search: RAIN, the value functions a search optimizes, and the comparison with sampling."""
