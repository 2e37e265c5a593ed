"""Research benchmarks behind ``criticgym bench``.

- ``ablation.py``: reward arms trained at equal compute (``criticgym bench ablation``);
- ``frontier.py``: every feedback family on one task, served and judged (``criticgym bench frontier``);
- ``costs.py``: the cost of serving N completions with training amortized, which arms win at which N, the table;
- ``resolution.py``: what each paired comparison resolves, the smallest detectable difference, what a target needs;
- ``toxic_start.py``: a policy that writes offensive text, for Detoxify's ablation (``criticgym bench toxic-start``).
"""

from __future__ import annotations

import sys

USAGE = (
    "Usage: criticgym bench ablation [OPTIONS]     (make bench runs the performance suite)\n"
    "       criticgym bench frontier [OPTIONS]     (every feedback family at equal compute, held-out judges)\n"
    "       criticgym bench toxic-start [OPTIONS]  (a policy that writes offensive text, for Detoxify)\n"
    "       criticgym bench <command> --help"
)


def command(argv: list[str]) -> int:
    """Run ``criticgym bench <command>``; returns the exit code."""
    if argv[:1] in (["ablation"], ["frontier"]) and any(a.split("=")[0] == "--reward" for a in argv):
        from criticgym.errors import ConfigError

        raise ConfigError(
            f"criticgym bench {argv[0]} trains one run per reward arm: write the rewards as --arms "
            "sparse,relc-lexicon,random (each arm a --reward FORM; --critic-model and --judge-model set their models)."
        )
    if argv[:1] == ["toxic-start"]:
        from criticgym.bench.toxic_start import ToxicStartConfig, toxic_start
        from criticgym.utils.options import parsed

        summary = toxic_start(parsed(ToxicStartConfig, argv[1:], "criticgym bench toxic-start"))
        last = summary["epochs"][-1]
        print(f"{last['flagged']:.1f}% flagged after {last['epoch']} epochs; wrote {summary['config']['out']}/model")
        return 0
    if argv[:1] == ["frontier"]:
        from criticgym.bench.frontier import frontier

        frontier(argv[1:])
        return 0
    if argv[:1] == ["ablation"]:
        from criticgym.bench.ablation import ablation

        ablation(argv[1:])
        return 0
    print(USAGE, file=sys.stderr)
    return 2
