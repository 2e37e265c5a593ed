"""What a training run writes besides its checkpoint: metrics.csv, samples.md, curves.png, TensorBoard scalars."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from criticgym.utils.plots import pyplot


def tensorboard(out: Path):
    """A TensorBoard writer in ``out/tensorboard`` when the ``tensorboard`` package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def write_csv(path: Path, rows: list[dict[str, float]]) -> None:
    """``metrics.csv`` anew, with the rows so far (a resumed run's)."""
    with path.open("w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def append_csv(path: Path, row: dict[str, float]) -> None:
    """One iteration's row (the header first in an empty file)."""
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def write_samples(path: Path, evals: list[dict[str, Any]]) -> None:
    """``samples.md``: the held-out samples of the first and the last evaluation."""
    lines = ["# Samples on held-out prompts", ""]
    for result in (evals[0], evals[-1]) if len(evals) > 1 else evals:
        lines += [f"## Iteration {result['iteration']} (mean reward {result['eval/reward']:+.3f})", ""]
        lines += ["| reward | prompt | completion |", "| ---: | --- | --- |"]
        for s in result["samples"]:
            cells = [_cell(s["prompt"]), _cell(s["completion"])]
            lines.append(f"| {s['reward']:+.3f} | {cells[0]} | {cells[1]} |")
        lines.append("")
    path.write_text("\n".join(lines))


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace("|", "\\|").strip()


def plot_curves(
    history: list[dict[str, float]], evals: list[dict[str, Any]], path: Path, kl_target: float | None = None
) -> None:
    """Training reward (with held-out evaluations) and KL against iterations, as a PNG.

    With ``kl_target`` the KL panel shows the target and the band from half to twice it.
    """
    plt = pyplot()
    fig, (ax_reward, ax_kl) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [h["iteration"] for h in history]
    ax_reward.plot(steps, [h["charts/episodic_return"] for h in history], label="training batch", alpha=0.7)
    ax_reward.plot([e["iteration"] for e in evals], [e["eval/reward"] for e in evals], "o-", label="held-out")
    ax_reward.set(xlabel="iteration", ylabel="episode return", title="Reward")
    ax_reward.legend()
    ax_kl.plot(steps, [h["charts/kl"] for h in history], color="tab:red", label="KL")
    if kl_target is not None:
        ax_kl.axhline(kl_target, color="gray", linestyle="--", label=f"target {kl_target:g}")
        ax_kl.axhspan(kl_target / 2, kl_target * 2, color="gray", alpha=0.12, label="half to twice the target")
        ax_kl.legend()
    ax_kl.set(xlabel="iteration", ylabel="KL to reference (per completion)", title="KL")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
