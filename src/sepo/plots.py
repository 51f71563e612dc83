"""The report's figures (matplotlib, Agg backend): plain data in, one PNG out.

Three kinds, all drawn from what a run wrote to disk (so `sepo report` can redraw them):

- `training_curves` — per-step training figures and per-checkpoint evaluations of the trained
  conditions (SEPO against the reward-only baseline), one thin line per seed and a bold mean;
- `condition_bars` — one panel per metric, one bar per condition (Base, SFT, reward-only,
  SEPO) with its 95% interval as an error bar;
- `policy_bars` — a tabular policy (games with the `ExactSolvable` capability; Kuhn: the
  probability of BET, or CALL facing a bet, at its 12 information sets, by seat) against the
  game's Nash equilibrium family, laid out as the game's `PolicyFigure` says.

Nothing here computes a statistic: intervals arrive computed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

    from sepo.games.base import PolicyFigure


def _pyplot() -> Any:
    """matplotlib.pyplot, imported on first use: importing it costs ~1 s, which every `sepo`
    command (even `--help`) would otherwise pay because the report module imports this one."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on CI machines and worker processes
    import matplotlib.pyplot as plt

    return plt

#: One colour per condition, the same in every figure.
CONDITION_COLORS: dict[str, str] = {
    "base": "#9e9e9e",
    "sft": "#5b8fd0",
    "reward-only": "#e0913a",
    "sepo": "#2e9e5b",
}
CONDITION_LABELS: dict[str, str] = {
    "base": "Base",
    "sft": "SFT",
    "reward-only": "Reward-only",
    "sepo": "SEPO",
}
_FALLBACK_COLORS = ("#8e5bd0", "#d05b8f", "#5bd0c4", "#c4c45b")


def condition_label(condition: str) -> str:
    return CONDITION_LABELS.get(condition, condition)


def condition_color(condition: str, index: int = 0) -> str:
    return CONDITION_COLORS.get(condition, _FALLBACK_COLORS[index % len(_FALLBACK_COLORS)])


def _save(fig: plt.Figure, path: Path) -> Path:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


# ------------------------------------------------------------------ training curves
def training_curves(
    curves: Mapping[str, Mapping[int, Mapping[str, Sequence[tuple[float, float]]]]],
    panels: Sequence[tuple[str, str]],
    path: Path,
    *,
    title: str,
) -> Path:
    """Training figures over steps.

    `curves[condition][seed][column]` is a list of (step, value) points; `panels` lists the
    (column, axis title) pairs to draw, one panel each. A column with no points in any condition
    is left out. Each seed is a thin line; with several seeds the mean over the steps they share
    is drawn bold.
    """
    present = [(col, label) for col, label in panels
               if any(pts for by_seed in curves.values() for cols in by_seed.values()
                      for c, pts in cols.items() if c == col)]
    if not present:
        present = [("", "no training figures recorded")]
    nrows, ncols = _grid(len(present), 3)
    plt = _pyplot()
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.2 * nrows), squeeze=False,
                             layout="constrained")
    for ax, (col, label) in zip(axes.flat, present, strict=False):
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        for i, (condition, by_seed) in enumerate(curves.items()):
            color = condition_color(condition, i)
            series = [sorted(cols.get(col, [])) for cols in by_seed.values()]
            series = [s for s in series if s]
            for s in series:
                x, y = zip(*s, strict=True)
                ax.plot(x, y, color=color, alpha=0.35 if len(series) > 1 else 0.9,
                        lw=0.9 if len(series) > 1 else 1.6, marker="." if len(s) < 30 else None)
            if len(series) > 1:
                shared = sorted(set.intersection(*(set(x for x, _ in s) for s in series)))
                if shared:
                    means = [float(np.mean([dict(s)[x] for s in series])) for x in shared]
                    ax.plot(shared, means, color=color, lw=2.2)
            if series:  # one legend entry per condition
                ax.plot([], [], color=color, lw=2.2,
                        label=f"{condition_label(condition)} ({len(series)} seed"
                              f"{'s' if len(series) > 1 else ''})")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(present):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=12)
    return _save(fig, path)


# ------------------------------------------------------------------ condition bars
def condition_bars(
    values: Mapping[str, Mapping[str, tuple[float, float, float]]],
    panels: Sequence[tuple[str, str, str]],
    path: Path,
    *,
    title: str,
) -> Path:
    """One panel per metric, one bar per condition with its 95% interval.

    `values[condition][metric] = (value, lo, hi)`; `panels` lists (metric, title, direction)
    where direction is "higher", "lower" or "" and is written in the panel title. Metrics that
    no condition has are left out; a missing or non-finite value leaves an empty slot.
    """
    conditions = list(values)
    present = [p for p in panels if any(p[0] in values[c] for c in conditions)]
    nrows, ncols = _grid(max(1, len(present)), 4)
    plt = _pyplot()
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.0 * nrows), squeeze=False,
                             layout="constrained")
    x = np.arange(len(conditions))
    for ax, (metric, label, direction) in zip(axes.flat, present, strict=False):
        arrow = {"higher": " (↑ better)", "lower": " (↓ better)"}.get(direction, "")
        ax.set_title(label + arrow, fontsize=10)
        for i, condition in enumerate(conditions):
            v = values[condition].get(metric)
            if v is None or not all(map(math.isfinite, v)):
                continue
            value, lo, hi = v
            ax.bar(i, value, color=condition_color(condition, i), width=0.7)
            ax.errorbar(i, value, yerr=[[max(0.0, value - lo)], [max(0.0, hi - value)]],
                        color="black", capsize=4, lw=1.2)
        ax.set_xticks(x, [condition_label(c) for c in conditions], rotation=30, ha="right",
                      fontsize=9)
        ax.axhline(0.0, color="black", lw=0.6)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(present):]:
        ax.set_visible(False)
    fig.suptitle(f"{title}  (error bars: 95% intervals)", fontsize=12)
    return _save(fig, path)


# ------------------------------------------------------------------ tabular policy
def policy_bars(
    policies: Mapping[str, Mapping[str, float]],
    nash: Mapping[str, float],
    path: Path,
    *,
    figure: PolicyFigure,
    nash_family: Mapping[str, tuple[float, float]] | None = None,
    intervals: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
) -> Path:
    """Grouped bars of a tabular policy's probabilities at the information sets, per
    condition, against Nash; one panel per `figure.panels` entry (Kuhn: by seat).

    `policies[condition][infoset]` is a probability (the mean over seeds when several ran) and
    `intervals[condition][infoset]` an optional (lo, hi). Nash's reference policy is drawn as a
    black tick and, where the equilibrium is not unique, `nash_family[infoset]` = (lo, hi) as a
    grey band.
    """
    conditions = list(policies)
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(figure.panels), figsize=(13, 4.6), sharey=True,
                             layout="constrained", squeeze=False)
    axes = axes[0]
    width = 0.8 / max(1, len(conditions))
    for ax, (panel, infosets) in zip(axes, figure.panels, strict=True):
        x = np.arange(len(infosets))
        for j, key in enumerate(infosets):
            lo, hi = (nash_family or {}).get(key, (nash[key], nash[key]))
            if hi > lo:
                ax.add_patch(plt.Rectangle((j - 0.45, lo), 0.9, hi - lo, color="#d8d8d8",
                                           zorder=0, label=figure.family_label))
            ax.plot([j - 0.45, j + 0.45], [nash[key]] * 2, color="black", lw=2, zorder=3,
                    label=figure.reference_label if j == 0 else None)
        for i, condition in enumerate(conditions):
            probs = [policies[condition].get(k, float("nan")) for k in infosets]
            offsets = x - 0.4 + width * (i + 0.5)
            ax.bar(offsets, probs, width=width * 0.95, color=condition_color(condition, i),
                   label=condition_label(condition), zorder=2)
            if intervals and condition in intervals:
                iv = intervals[condition]
                lows = [max(0.0, p - iv[k][0]) if k in iv else 0.0
                        for p, k in zip(probs, infosets, strict=True)]
                highs = [max(0.0, iv[k][1] - p) if k in iv else 0.0
                         for p, k in zip(probs, infosets, strict=True)]
                ax.errorbar(offsets, probs, yerr=[lows, highs], fmt="none", color="black",
                            capsize=2, lw=0.8, zorder=4)
        ax.set_xticks(x, [figure.labels.get(k, k) for k in infosets], rotation=30,
                      ha="right", fontsize=9)
        ax.set_title(panel, fontsize=10)
        ax.set_ylim(-0.03, 1.05)  # below 0 so that a Nash tick at 0 shows
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(figure.ylabel)
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    fig.suptitle(figure.title, fontsize=12)
    fig.legend(unique.values(), unique.keys(), loc="outside lower center", ncol=len(unique),
               fontsize=9, frameon=False)
    return _save(fig, path)
