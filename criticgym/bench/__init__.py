"""Research benchmarks behind ``criticgym bench``: reward ablations at equal compute."""
