"""`sepo report`: tables and figures of one or several pipeline runs, rebuilt from disk.

A run directory (written by `sepo.pipeline.run_pipeline`) holds `results.json`:

```
{
  "schema": "sepo.results/1",
  "config": {...},                      # the RunConfig
  "evaluations": [                      # one per game × seed × condition
    {"game", "seed", "condition", "checkpoint", "report": {docs/method.md §8},
     "kuhn_policy": {infoset: P(aggressive)} | null}
  ],
  "training": [                         # one per game × seed × trained condition
    {"game", "seed", "condition", "run_dir", "metrics_csv",   # paths relative to the run dir
     "oracle_log"}                      # where the trainer logged its oracle's refreshes
  ],
  "aggregates": [...]                   # recomputed here from "evaluations"
}
```

`build_report(run_dirs)` merges the evaluations of every run directory (so seeds run in
separate directories pool together), aggregates them per game × condition, and writes
`results.json`, `results.csv`, `per_opponent.csv`, `report.md` and the PNGs of `sepo.plots`.

**Intervals.** With one training seed, a condition's interval is the evaluation's bootstrap
over episodes. With K ≥ 2 seeds, it is a Student-t 95% interval over the K seed-level values
(`sepo.metrics.across_seeds`), which carries both training and evaluation noise. Comparisons
("SEPO − SFT") are paired by seed: every condition of a seed shares that seed's SFT model and
evaluation episodes (common random numbers), so the per-seed difference removes both.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from rich.table import Table

from sepo import plots
from sepo.errors import SepoError, describe_validation_error
from sepo.games import ExactSolvable, Game, capability, get_game
from sepo.metrics import across_seeds, finite_or_none, json_safe
from sepo.rundir import (
    check_output_dir,
    cleanup_on_failure,
    describing_os_errors,
    write_output_marker,
    write_text_atomically,
)

RESULTS_FILE = "results.json"
RESULTS_SCHEMA = "sepo.results/1"
CONDITION_ORDER = ("base", "sft", "reward-only", "sepo")


@dataclass(frozen=True, slots=True)
class MetricInfo:
    key: str
    label: str
    #: "higher" or "lower" is better; "" when neither (e.g. a rate that should be 0 anyway).
    better: str
    #: The metric's range by definition (a gap ≥ 0, a rate in [0, 1]). A Student-t interval over
    #: a few seeds can cross it (three rates 0, 0, 0.001 give [-0.001, 0.002]); it is clipped.
    bounds: tuple[float, float] = (-math.inf, math.inf)


#: The report's metrics, in column order (docs/method.md §3, §8).
METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("pay_per_round", "Pay/r", "higher"),
    MetricInfo("exploit", "Exploit", "lower", (0.0, math.inf)),
    MetricInfo("collusion", "Collusion", "lower", (0.0, 1.0)),
    MetricInfo("externality", "Externality", "lower"),
    MetricInfo("safety", "Safety", "higher"),
    MetricInfo("nra", "NRA", "higher"),
    MetricInfo("robust", "Robust", "higher"),
    MetricInfo("exploit_heldout", "Exploit (held-out)", "lower", (0.0, math.inf)),
    MetricInfo("parse_failure_rate", "Parse failures", "lower", (0.0, 1.0)),
    MetricInfo("exact_exploitability", "Kuhn exact exploitability", "lower", (0.0, math.inf)),
    MetricInfo("exact_safety", "Kuhn exact Safety", "higher"),
)
METRIC_KEYS = tuple(m.key for m in METRICS)
_BOUNDS = {m.key: m.bounds for m in METRICS}


def _clip_to_range(key: str, lo: float, hi: float) -> tuple[float, float]:
    low, high = _BOUNDS.get(key, (-math.inf, math.inf))
    return min(max(lo, low), high), min(max(hi, low), high)


#: The metrics of the paired "SEPO − baseline" comparison.
COMPARED = ("safety", "pay_per_round", "exploit", "exploit_heldout", "exact_exploitability",
            "exact_safety")

#: metrics.csv column → panel title, for the training curves (columns a run lacks are skipped).
TRAINING_PANELS: tuple[tuple[str, str], ...] = (
    ("pay_train", "payoff per round in training rollouts (train pool)"),
    ("reward_train", "mean reward per round, train pool"),
    ("reward_exploit", "mean reward per round, exploit pool (0 under reward-only)"),
    ("loss", "loss"),
    ("kl", "KL term (one-sided, to the reference)"),
    ("eval_safety", "checkpoint eval: Safety (↑)"),
    ("eval_exploit", "checkpoint eval: Exploit (↓)"),
    ("eval_pay_per_round", "checkpoint eval: Pay/r (↑)"),
    ("eval_exact_exploitability", "checkpoint eval: Kuhn exact exploitability (↓)"),
    ("eval_parse_failure_rate", "checkpoint eval: parse failures (↓; the best checkpoint has "
                                "at most best_max_parse_failures)"),
    ("advantage_share_exploit", "exploit pool's share of Σ|advantage|"),
    ("lambda_exploit", "λe in training (moves under an exploit budget)"),
    ("lambda_collusion", "λc in training (moves under a collusion budget)"),
    ("lambda_externality", "λx in training (moves under an externality budget)"),
    ("oracle_top_gap", "oracle refreshes: the best exploiter's gap e"),
)
#: Panels drawn only where some run's values change (a λ without a budget is a flat line).
CHANGING_ONLY = frozenset({"lambda_exploit", "lambda_collusion", "lambda_externality"})

# ------------------------------------------------------------------ small helpers
def format_value(value: float | None, interval: Sequence[float | None] | None) -> str:
    """'value [lo, hi]', or '—' when not measured."""
    if value is None:
        return "—"
    if interval is None or any(x is None for x in interval):
        return f"{value:.3f}"
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def condition_sort_key(condition: str) -> tuple[int, str]:
    order = {c: i for i, c in enumerate(CONDITION_ORDER)}
    return (order.get(condition, len(order)), condition)


# What the report reads of a results.json, checked when it is loaded: a file of another shape
# (edited by hand, cut short, another tool's) is then one error naming the field, not a
# KeyError deep in the aggregation. Keys not named here pass through unchecked. Strict types:
# JSON gives every value its own, so a seed "3" is a mistake, not a number to convert.
_Interval = Annotated[list[float | None], Field(min_length=2, max_length=2)]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, data: Any) -> Any:
        # pydantic's own message would name this private class
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return data


class _OpponentShape(_Shape):
    pools: list[str] = []
    ci95: dict[str, _Interval] = {}


class _ReportShape(_Shape):
    ci95: dict[str, _Interval] = {}
    per_opponent: dict[str, _OpponentShape] = {}


class _EntryShape(_Shape):
    """An evaluation or a training entry: the paths are relative to the run directory."""

    game: str
    seed: int
    condition: str
    checkpoint: str | None = None
    run_dir: str | None = None
    metrics_csv: str | None = None


class _EvaluationShape(_EntryShape):
    report: _ReportShape
    kuhn_policy: dict[str, float] | None = None


class _TrainingShape(_EntryShape):
    metrics_csv: str
    oracle_log: str | None = None


class _RunConfigShape(_Shape):
    games: list[str] = []


class _TimingsShape(_Shape):
    total_s: float | None = None


class _ResultsShape(_Shape):
    config: _RunConfigShape = _RunConfigShape()
    timings: _TimingsShape = _TimingsShape()
    evaluations: list[_EvaluationShape]
    training: list[_TrainingShape] = []


def load_results(run_dir: str | Path) -> dict[str, Any]:
    """The `results.json` of a run directory, with a clear error naming the file when it is
    not one: missing, not JSON, another schema, or a field of the wrong type."""
    run_dir = Path(run_dir)
    path = run_dir / RESULTS_FILE if run_dir.is_dir() else run_dir
    if not path.exists():
        raise SepoError(f"no {RESULTS_FILE} in {run_dir}: not a finished `sepo run` directory "
                        "(an interrupted run is finished by running the same command again)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise SepoError(f"{path} is not valid JSON: not UTF-8 text ({err.reason} at byte "
                        f"{err.start})") from None
    except (json.JSONDecodeError, RecursionError) as err:  # RecursionError: nested too deep
        raise SepoError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise SepoError(f"{path} is not a valid {RESULTS_FILE}: expected a JSON object, got "
                        f"{type(data).__name__}")
    if data.get("schema") != RESULTS_SCHEMA:
        raise SepoError(f"{path} has schema {data.get('schema')!r}; expected {RESULTS_SCHEMA!r}")
    try:
        _ResultsShape.model_validate(data)
    except ValidationError as err:
        raise SepoError(f"{path} is not a valid {RESULTS_FILE}: "
                        f"{describe_validation_error(err)}") from None
    return data


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename: a reader never sees half a file."""
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    with describing_os_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, text)


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """A trainer's metrics.csv as rows of floats (empty cells and text are dropped)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [{k: v for k, v in ((k, finite_or_none(v)) for k, v in row.items() if k)
                 if v is not None} for row in csv.DictReader(f)]


# ------------------------------------------------------------------ aggregation
def evaluation_value(evaluation: Mapping[str, Any], metric: str) -> float | None:
    return finite_or_none(evaluation["report"].get(metric))


def aggregate(evaluations: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per game × condition: every metric's value and 95% interval (see the module doc)."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for ev in evaluations:
        groups.setdefault((ev["game"], ev["condition"]), []).append(ev)
    out = []
    for (game, condition), evs in sorted(groups.items(),
                                         key=lambda kv: (kv[0][0],
                                                         condition_sort_key(kv[0][1]))):
        evs = sorted(evs, key=lambda e: e["seed"])
        metrics: dict[str, dict[str, Any]] = {}
        for key in METRIC_KEYS:
            values = [(e, v) for e in evs if (v := evaluation_value(e, key)) is not None]
            if not values:
                continue
            if len(values) == 1:
                e, v = values[0]
                ci = e["report"].get("ci95", {}).get(key)
                lo, hi = (finite_or_none(ci[0]), finite_or_none(ci[1])) if ci else (None, None)
                method = "bootstrap over episodes"
            else:
                v, lo, hi = across_seeds([v for _, v in values])
                lo, hi = _clip_to_range(key, lo, hi)
                method = f"Student-t over {len(values)} seeds"
            metrics[key] = {"value": v, "ci95": [lo, hi], "n_seeds": len(values),
                            "interval": method}
        policy = _aggregate_policy([e["kuhn_policy"] for e in evs if e.get("kuhn_policy")])
        out.append({"game": game, "condition": condition,
                    "seeds": [e["seed"] for e in evs], "metrics": metrics,
                    "kuhn_policy": policy})
    return out


def _aggregate_policy(policies: Sequence[Mapping[str, float]]) -> dict[str, Any] | None:
    """Mean P(aggressive) per information set over seeds, with a t interval when K ≥ 2."""
    if not policies:
        return None
    out: dict[str, Any] = {}
    for key in policies[0]:
        mean, lo, hi = across_seeds([p[key] for p in policies])
        out[key] = {"value": mean,
                    "ci95": None if math.isnan(lo) else [max(0.0, lo), min(1.0, hi)]}
    return out


def paired_differences(evaluations: Sequence[Mapping[str, Any]], game: str, treatment: str,
                       baseline: str) -> dict[str, dict[str, Any]]:
    """treatment − baseline per metric, paired by seed, with a t interval over seeds (K ≥ 2)."""
    by_seed: dict[str, dict[int, Mapping[str, Any]]] = {treatment: {}, baseline: {}}
    for ev in evaluations:
        if ev["game"] == game and ev["condition"] in by_seed:
            by_seed[ev["condition"]][ev["seed"]] = ev
    seeds = sorted(set(by_seed[treatment]) & set(by_seed[baseline]))
    out = {}
    for key in COMPARED:
        diffs = [a - b for s in seeds
                 if (a := evaluation_value(by_seed[treatment][s], key)) is not None
                 and (b := evaluation_value(by_seed[baseline][s], key)) is not None]
        if not diffs:
            continue
        mean, lo, hi = across_seeds(diffs)
        out[key] = {"value": mean, "ci95": None if math.isnan(lo) else [lo, hi],
                    "n_seeds": len(diffs), "per_seed": diffs}
    return out


# ------------------------------------------------------------------ tables
def table_rows(aggregates: Sequence[Mapping[str, Any]], game: str) -> list[tuple[str, dict]]:
    """(condition, metrics) of one game, in condition order."""
    rows = [(a["condition"], a["metrics"]) for a in aggregates if a["game"] == game]
    return sorted(rows, key=lambda r: condition_sort_key(r[0]))


def _game(name: str) -> Game | None:
    """The game a result names, or None where it is not installed (a plugin's run reported
    without the plugin): its tables and figures then show what every game has."""
    try:
        return get_game(name)
    except SepoError:
        return None


def _exact_solver(name: str) -> ExactSolvable | None:
    game = _game(name)
    return capability(game, ExactSolvable) if game is not None else None


def game_metrics(game: str) -> list[MetricInfo]:
    """The metrics that mean something in `game`: a zero-sum game (`Game.zero_sum`, e.g.
    Kuhn) has no collusion and no externality; only a game with the `ExactSolvable`
    capability has an exact exploitability."""
    found = _game(game)
    skip = set()
    if found is None or capability(found, ExactSolvable) is None:
        skip |= {"exact_exploitability", "exact_safety"}
    if found is not None and found.zero_sum:
        skip |= {"collusion", "externality"}
    return [m for m in METRICS if m.key not in skip]


def markdown_table(aggregates: Sequence[Mapping[str, Any]], game: str) -> str:
    """Condition rows × metric columns, each cell 'value [lo, hi]'."""
    metrics = game_metrics(game)
    head = "| condition | " + " | ".join(
        m.label + {"higher": " ↑", "lower": " ↓"}.get(m.better, "") for m in metrics) + " |"
    lines = [head, "|" + "---|" * (len(metrics) + 1)]
    for condition, values in table_rows(aggregates, game):
        cells = [format_value(values[m.key]["value"], values[m.key]["ci95"])
                 if m.key in values else "—" for m in metrics]
        lines.append(f"| {plots.condition_label(condition)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rich_table(aggregates: Sequence[Mapping[str, Any]], game: str, *,
               width: int | None = None) -> Any:
    """The same table for the terminal (a `rich.table.Table`): condition rows when it fits in
    `width` columns, else transposed (metric rows, one column per condition), which fits in
    about 110."""

    metrics = game_metrics(game)
    rows = table_rows(aggregates, game)
    seeds = sorted({len(a["seeds"]) for a in aggregates if a["game"] == game})
    title = (f"{game}: value [95% interval], {'/'.join(map(str, seeds))} "
             f"seed{'s' if seeds != [1] else ''}")

    def cell(values: Mapping[str, Any], key: str) -> str:
        return (format_value(values[key]["value"], values[key]["ci95"]) if key in values
                else "—")

    def header(m: MetricInfo) -> str:
        return m.label + {"higher": " ↑", "lower": " ↓"}.get(m.better, "")

    needed = 14 + sum(3 + max(len(header(m)), *(len(cell(v, m.key)) for _, v in rows))
                      for m in metrics) if rows else 0
    if width is None or width >= needed:
        table = Table(title=title)
        table.add_column("condition", style="bold", no_wrap=True)
        for m in metrics:
            table.add_column(header(m), justify="right", no_wrap=True)
        for condition, values in rows:
            table.add_row(plots.condition_label(condition),
                          *[cell(values, m.key) for m in metrics])
        return table
    table = Table(title=title, show_lines=True)
    table.add_column("metric", style="bold")
    for condition, _ in rows:  # a narrow terminal wraps a cell after its value
        table.add_column(plots.condition_label(condition), justify="right")
    for m in metrics:
        table.add_row(header(m), *[cell(values, m.key) for _, values in rows])
    return table


def compared_pairs(conditions: Iterable[str]) -> list[tuple[str, str]]:
    """(treatment, baseline) pairs a report compares: SEPO and every further trained condition
    against SFT, reward-only and the base model; a further condition also against SEPO."""
    present = sorted(set(conditions), key=condition_sort_key)
    treatments = [c for c in present if c not in ("base", "sft", "reward-only")]
    pairs = []
    for treatment in treatments:
        baselines = ("sft", "reward-only", "base") + (("sepo",) if treatment != "sepo" else ())
        pairs += [(treatment, b) for b in baselines if b in present]
    return pairs


def _comparison_markdown(evaluations: Sequence[Mapping[str, Any]], game: str) -> str:
    pairs = compared_pairs(e["condition"] for e in evaluations if e["game"] == game)
    if not pairs:
        return ""
    labels = {m.key: m for m in METRICS}
    meaningful = {m.key for m in game_metrics(game)}  # no Kuhn-only columns for other games
    compared = [k for k in COMPARED if k in meaningful]
    lines = ["| paired difference | " + " | ".join(
        labels[k].label + {"higher": " ↑", "lower": " ↓"}[labels[k].better] for k in compared)
        + " |", "|" + "---|" * (len(compared) + 1)]
    shown = False
    for treatment, baseline in pairs:
        diffs = paired_differences(evaluations, game, treatment, baseline)
        if not diffs or next(iter(diffs.values()))["n_seeds"] < 2:
            continue
        shown = True
        cells = [format_value(diffs[k]["value"], diffs[k]["ci95"]) if k in diffs else "—"
                 for k in compared]
        lines.append(f"| {plots.condition_label(treatment)} − "
                     f"{plots.condition_label(baseline)} | " + " | ".join(cells) + " |")
    if not shown:
        return ("Paired differences need at least 2 seeds (`--seeds 3`); with one seed, "
                "compare the intervals above.")
    return ("Paired by seed (the same SFT model and evaluation episodes), mean difference "
            "[Student-t 95% interval over seeds]; an interval that excludes 0 is a difference "
            "the seeds support.\n\n" + "\n".join(lines))


# ------------------------------------------------------------------ CSV
def write_results_csv(path: Path, evaluations: Sequence[Mapping[str, Any]],
                      aggregates: Sequence[Mapping[str, Any]]) -> Path:
    """Long format: one row per game × condition × seed (or 'all') × metric."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["game", "condition", "seed", "metric", "value", "ci95_lo", "ci95_hi",
                    "interval"])
        for a in aggregates:
            for key, m in a["metrics"].items():
                w.writerow([a["game"], a["condition"], "all", key, m["value"], m["ci95"][0],
                            m["ci95"][1], m["interval"]])
        for ev in sorted(evaluations, key=lambda e: (e["game"],
                                                     condition_sort_key(e["condition"]),
                                                     e["seed"])):
            ci = ev["report"].get("ci95", {})
            for key in METRIC_KEYS:
                value = evaluation_value(ev, key)
                if value is None:
                    continue
                lo, hi = ci.get(key, [None, None])
                w.writerow([ev["game"], ev["condition"], ev["seed"], key, value, lo, hi,
                            "bootstrap over episodes"])
    return path


def write_per_opponent_csv(path: Path, evaluations: Sequence[Mapping[str, Any]]) -> Path:
    """One row per game × condition × seed × opponent."""
    fields = ("agent_pay_per_round", "opponent_pay_per_round", "gap", "nra", "externality",
              "collusion", "parse_failure_rate")
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["game", "condition", "seed", "opponent", "pools", "episodes", *fields,
                    *(f"{k}_ci95_{end}" for k in fields for end in ("lo", "hi"))])
        for ev in sorted(evaluations, key=lambda e: (e["game"],
                                                     condition_sort_key(e["condition"]),
                                                     e["seed"])):
            for name, o in ev["report"].get("per_opponent", {}).items():
                ci = o.get("ci95", {})
                w.writerow([ev["game"], ev["condition"], ev["seed"], name,
                            "+".join(o.get("pools", [])), o.get("episodes"),
                            *(o.get(k) for k in fields),
                            *(ci.get(k, [None, None])[i] for k in fields for i in (0, 1))])
    return path


# ------------------------------------------------------------------ figures
def _training_curves(run_dir: Path, training: Sequence[Mapping[str, Any]],
                     game: str) -> dict[str, dict[int, dict[str, list[tuple[float, float]]]]]:
    """curves[condition][seed][column] = [(step, value), ...] read from metrics.csv files."""
    curves: dict[str, dict[int, dict[str, list[tuple[float, float]]]]] = {}
    for t in training:
        if t["game"] != game:
            continue
        rows = read_metrics_csv(Path(t["_root"]) / t["metrics_csv"])
        columns: dict[str, list[tuple[float, float]]] = {}
        for row in rows:
            if "step" not in row:
                continue
            for col, _ in TRAINING_PANELS:
                if col in row:
                    columns.setdefault(col, []).append((row["step"], row[col]))
        curves.setdefault(t["condition"], {})[t["seed"]] = columns
    for col in CHANGING_ONLY:
        series = [points for seeds in curves.values() for columns in seeds.values()
                  if (points := columns.get(col))]
        if not any(len({v for _, v in points}) > 1 for points in series):
            for seeds in curves.values():
                for columns in seeds.values():
                    columns.pop(col, None)
    return {c: curves[c] for c in sorted(curves, key=condition_sort_key)}


def make_plots(out: Path, evaluations: Sequence[Mapping[str, Any]],
               aggregates: Sequence[Mapping[str, Any]],
               training: Sequence[Mapping[str, Any]]) -> dict[str, list[Path]]:
    """Every figure of every game, under `out/plots/`; returns the paths by game."""
    figures: dict[str, list[Path]] = {}
    for game in sorted({a["game"] for a in aggregates}):
        paths = []
        values = {
            condition: {k: (m["value"], *(x if x is not None else m["value"]
                                          for x in m["ci95"]))
                        for k, m in metrics.items()}
            for condition, metrics in table_rows(aggregates, game)
        }
        panels = [(m.key, m.label, m.better) for m in game_metrics(game)]
        paths.append(plots.condition_bars(values, panels, out / "plots" / f"{game}_conditions.png",
                                          title=f"{game}: conditions"))
        curves = _training_curves(out, training, game)
        if curves:
            paths.append(plots.training_curves(curves, TRAINING_PANELS,
                                               out / "plots" / f"{game}_training.png",
                                               title=f"{game}: training"))
        solver = _exact_solver(game)
        if solver is not None:
            # "kuhn_policy" is the results schema's name of any game's tabular policy.
            policies = {a["condition"]: a["kuhn_policy"] for a in aggregates
                        if a["game"] == game and a.get("kuhn_policy")}
            if policies:
                order = sorted(policies, key=condition_sort_key)
                paths.append(plots.policy_bars(
                    {c: {k: v["value"] for k, v in policies[c].items()} for c in order},
                    solver.nash_policy(), out / "plots" / f"{game}_policy.png",
                    figure=solver.policy_figure(), nash_family=solver.nash_family(),
                    intervals={c: {k: tuple(v["ci95"]) for k, v in policies[c].items()
                                   if v["ci95"]} for c in order}))
        figures[game] = paths
    return figures


# ------------------------------------------------------------------ the report
def _merge(run_dirs: Sequence[Path]) -> tuple[list[dict], list[dict], list[dict[str, Any]]]:
    """Evaluations and training entries of every run, and each run's header."""
    evaluations: list[dict] = []
    training: list[dict] = []
    headers = []
    seen: dict[tuple[str, int, str], Path] = {}
    for run_dir in run_dirs:
        data = load_results(run_dir)
        headers.append({"run_dir": str(run_dir), "config": data.get("config", {}),
                        "created": data.get("created"), "timings": data.get("timings", {})})
        for ev in data["evaluations"]:
            key = (ev["game"], int(ev["seed"]), ev["condition"])
            if key in seen:
                raise SepoError(f"{ev['game']} seed {ev['seed']} {ev['condition']} appears in "
                                f"both {seen[key]} and {run_dir}: give each run its own seeds")
            seen[key] = run_dir
            evaluations.append({**ev, "_root": str(run_dir)})
        training.extend({**t, "_root": str(run_dir)} for t in data.get("training", []))
    return evaluations, training, headers


def _public(entries: Iterable[Mapping[str, Any]], out: Path) -> list[dict[str, Any]]:
    """Entries with their paths made relative to `out` (and the private root dropped)."""
    result = []
    for e in entries:
        entry = {k: v for k, v in e.items() if k != "_root"}
        root = Path(e["_root"])
        for key in ("checkpoint", "run_dir", "metrics_csv", "oracle_log"):
            if entry.get(key):
                entry[key] = _relative(root / entry[key], out)
        result.append(entry)
    return result


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


def last_oracle_refresh(entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """The last refresh a trained run's oracle logged (`oracle.jsonl`, one JSON object per
    line), or None without one."""
    if not entry.get("oracle_log"):
        return None
    path = Path(entry.get("_root", ".")) / entry["oracle_log"]
    if not path.exists():
        return None
    last = None
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill
        if isinstance(row, dict) and isinstance(row.get("chosen"), list):
            last = row
    return last


def _oracle_markdown(training: Sequence[Mapping[str, Any]], game: str) -> str:
    """Per trained run of `game`: the exploiters its oracle's last refresh chose, with gaps."""
    lines = []
    for t in sorted((t for t in training if t["game"] == game),
                    key=lambda t: (condition_sort_key(t["condition"]), t["seed"])):
        refresh = last_oracle_refresh(t)
        if refresh is None:
            continue
        gaps = {r.get("name"): r.get("gap") for r in refresh.get("ranking", [])
                if isinstance(r, dict)}
        chosen = ", ".join(f"{name} ({format_value(finite_or_none(gaps.get(name)), None)})"
                           for name in dict.fromkeys(refresh["chosen"]))
        ranked = len(gaps)
        lines.append(f"| {plots.condition_label(t['condition'])} | {t['seed']} | "
                     f"{refresh.get('step', '?')} | {refresh.get('kind', '?')} | {ranked} | "
                     f"{chosen} |")
    if not lines:
        return ""
    return "\n".join(["| condition | seed | refresh at step | oracle | candidates | chosen "
                      "(gap e) |", "|---|---|---|---|---:|---|", *lines])


def render_markdown(evaluations: Sequence[Mapping[str, Any]],
                    aggregates: Sequence[Mapping[str, Any]],
                    headers: Sequence[Mapping[str, Any]],
                    figures: Mapping[str, Sequence[Path]], out: Path,
                    training: Sequence[Mapping[str, Any]] = ()) -> str:
    games = sorted({a["game"] for a in aggregates})
    lines = ["# SEPO run report", ""]
    for h in headers:
        cfg = h["config"]
        lines.append(f"- run `{h['run_dir']}`: model `{cfg.get('model', '?')}`, games "
                     f"{', '.join(cfg.get('games', []))}, seeds {cfg.get('seeds', '?')}"
                     + (f", created {h['created']}" if h.get("created") else "")
                     + (f", {h['timings']['total_s'] / 60:.1f} min" if
                        h.get("timings", {}).get("total_s") else ""))
    lines += [
        "",
        "Every cell is `value [95% interval]`. One seed: the interval is a bootstrap over "
        "evaluation episodes, whose seeds are resampled together for all opponents. Several "
        "seeds: the mean over seeds with a Student-t interval over the seed-level values. "
        "↑/↓: higher/lower is better. Every condition of a seed meets the same evaluation "
        "episodes (common random numbers).",
        "",
    ]
    for game in games:
        seeds = sorted({e["seed"] for e in evaluations if e["game"] == game})
        lines += [f"## {game}", "", f"Seeds: {', '.join(map(str, seeds))}.", "",
                  markdown_table(aggregates, game), ""]
        comparison = _comparison_markdown(evaluations, game)
        if comparison:
            lines += ["### Paired differences", "", comparison, ""]
        oracle = _oracle_markdown(training, game)
        if oracle:
            lines += ["### Adaptive exploiters: the oracle's last refresh", "",
                      "What each trained run's best-response oracle chose at its last "
                      "refresh (docs/method.md §5.7), with each exploiter's gap e against "
                      "the policy then.", "", oracle, ""]
        for fig in figures.get(game, []):
            lines += [f"![{fig.stem}]({_relative(fig, out)})", ""]
        if len(seeds) > 1:
            lines += ["<details><summary>Per seed</summary>", "",
                      _per_seed_markdown(evaluations, game), "", "</details>", ""]
    return "\n".join(lines)


def _per_seed_markdown(evaluations: Sequence[Mapping[str, Any]], game: str) -> str:
    metrics = game_metrics(game)
    lines = ["| condition | seed | " + " | ".join(m.label for m in metrics) + " |",
             "|" + "---|" * (len(metrics) + 2)]
    for ev in sorted((e for e in evaluations if e["game"] == game),
                     key=lambda e: (condition_sort_key(e["condition"]), e["seed"])):
        ci = ev["report"].get("ci95", {})
        cells = [format_value(evaluation_value(ev, m.key), ci.get(m.key)) for m in metrics]
        lines.append(f"| {plots.condition_label(ev['condition'])} | {ev['seed']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_report(run_dirs: Sequence[str | Path], out: str | Path | None = None, *,
                 figures: bool = True) -> Path:
    """Rebuild the report of one or several runs; returns the path of `report.md`.

    One run directory: the report is written into it. Several: into `out`, which is then
    required; their evaluations are merged (a game × seed × condition may appear only once).
    `figures=False` skips the PNGs (tables only, in a fraction of the time).

    Every run directory is read before anything is written, so a missing or mistyped one is
    an error that creates nothing. A separate `out` must be new, empty or an earlier combined
    report, and must not be, lie inside or contain a run directory
    (`sepo.rundir.check_output_dir`); a failed build removes an `out` it created.
    """
    run_paths = [Path(r) for r in run_dirs]
    if not run_paths:
        raise SepoError("no run directory given")
    if out is None:
        if len(run_paths) > 1:
            raise SepoError("several run directories: say where the combined report goes "
                            "(--out DIR)")
        out = run_paths[0] if run_paths[0].is_dir() else run_paths[0].parent
    out = Path(out)
    evaluations, training, headers = _merge(run_paths)
    evaluations = [_with_exact_metrics(e) for e in evaluations]
    in_place = len(run_paths) == 1 and out.resolve() == (
        run_paths[0] if run_paths[0].is_dir() else run_paths[0].parent).resolve()
    if not in_place:
        check_output_dir(out, inputs=run_paths, made_by="report")
    with cleanup_on_failure(out), describing_os_errors(out):
        out.mkdir(parents=True, exist_ok=True)
        if not in_place:
            write_output_marker(out, "report")
        return _write_report(out, run_paths, evaluations, training, headers, figures=figures)


def _with_exact_metrics(evaluation: dict[str, Any]) -> dict[str, Any]:
    """An evaluation stored without the exact pool metrics (written before they existed) gets
    them from its stored tabular policy, pools and λ, of which they are a pure function
    (docs/method.md §7.5); any other evaluation is returned as it is."""
    report, policy = evaluation["report"], evaluation.get("kuhn_policy")
    game = _game(evaluation["game"])
    solver = capability(game, ExactSolvable) if game is not None else None
    if not policy or solver is None or "exact_safety" in report or "pools" not in report:
        return evaluation
    from sepo.evaluation import exact_pool_metrics

    best = solver.best_response(policy)  # evaluation put it in the stored held-out pool
    exact = exact_pool_metrics(game, policy, report["pools"], {best.name: best},
                               lambdas=report.get("lambdas"))
    ci95 = {**report.get("ci95", {}), **{k: [finite_or_none(v)] * 2 for k, v in exact.items()}}
    return {**evaluation, "report": {**report, **{k: finite_or_none(v) for k, v in exact.items()},
                                     "ci95": ci95}}


def _write_report(out: Path, run_paths: Sequence[Path], evaluations: list[dict],
                  training: list[dict], headers: list[dict[str, Any]], *,
                  figures: bool) -> Path:
    """The report's files in `out` (which exists), from the merged runs."""
    aggregates = aggregate(evaluations)
    drawn = make_plots(out, evaluations, aggregates, training) if figures else {}

    public_evals = _public(evaluations, out)
    public_training = _public(training, out)
    if len(run_paths) > 1 or not (out / RESULTS_FILE).exists():
        results: dict[str, Any] = {"schema": RESULTS_SCHEMA, "combined_from":
                                   [str(p) for p in run_paths]}
    else:
        results = load_results(out)
    results.update({
        "evaluations": public_evals,
        "training": public_training,
        "aggregates": aggregates,
        "comparisons": {
            game: {baseline: paired_differences(evaluations, game, "sepo", baseline)
                   for baseline in ("base", "sft", "reward-only")}
            for game in sorted({a["game"] for a in aggregates})
        },
        # Every compared pair, further conditions included: {game: {"A − B": differences}}.
        "paired_differences": {
            game: {f"{t} − {b}": paired_differences(evaluations, game, t, b)
                   for t, b in compared_pairs(e["condition"] for e in evaluations
                                              if e["game"] == game)}
            for game in sorted({a["game"] for a in aggregates})
        },
        "report_built": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    write_json_atomic(out / RESULTS_FILE, json_safe(results))
    write_results_csv(out / "results.csv", evaluations, aggregates)
    write_per_opponent_csv(out / "per_opponent.csv", evaluations)
    report = out / "report.md"
    report.write_text(render_markdown(evaluations, aggregates, headers, drawn, out,
                                      training) + "\n")
    return report
