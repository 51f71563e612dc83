"""`sepo.report` on a hand-made run directory: the numbers, intervals and files it writes."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest

from sepo.errors import SepoError
from sepo.report import (
    RESULTS_SCHEMA,
    aggregate,
    build_report,
    format_value,
    load_results,
    paired_differences,
)

CONDITIONS = ("base", "sft", "reward-only", "sepo")
#: Kuhn exact exploitability by condition and seed: chosen so every aggregate is easy by hand.
EXPLOITABILITY = {"base": (0.9, 0.9, 0.9), "sft": (0.3, 0.4, 0.5),
                  "reward-only": (0.25, 0.35, 0.3), "sepo": (0.1, 0.2, 0.3)}
T975_DF2 = 4.302653  # Student-t 0.975 quantile, 2 degrees of freedom


def spec_report(game: str, condition: str, seed: int, *, value: float) -> dict[str, Any]:
    """A SPEC §6 object whose every metric is `value` (interval value ± 0.05), exact
    exploitability from `EXPLOITABILITY` for Kuhn."""
    metrics = ("pay_per_round", "exploit", "collusion", "externality", "safety", "nra",
               "robust", "exploit_heldout", "parse_failure_rate")
    report: dict[str, Any] = {"game": game, "agent": f"{condition}-{seed}", "episodes": 10,
                              "seeds": 1, "seed": seed, **dict.fromkeys(metrics, value)}
    report["ci95"] = {m: [value - 0.05, value + 0.05] for m in metrics}
    report["per_opponent"] = {
        "Nash": {"pools": ["train", "exploit"], "episodes": 10, "rounds": 60,
                 "agent_pay_per_round": value, "opponent_pay_per_round": -value, "gap": 0.0,
                 "nra": 0.5, "externality": 0.0, "collusion": None, "parse_failure_rate": 0.0,
                 "ci95": {"agent_pay_per_round": [value - 0.1, value + 0.1]}},
    }
    if game == "kuhn":
        x = EXPLOITABILITY[condition][seed]
        report["exact_exploitability"] = x
        report["ci95"]["exact_exploitability"] = [x, x]
        # Not measured in Kuhn (zero-sum): null, as evaluation writes NaN.
        report["robust"] = None
        report["ci95"]["robust"] = [None, None]
    return report


def nash_like_policy(shift: float) -> dict[str, float]:
    keys = ("J", "Q", "K", "Jpb", "Qpb", "Kpb", "Jp", "Qp", "Kp", "Jb", "Qb", "Kb")
    return {k: min(1.0, max(0.0, 0.5 + shift * (i - 6) / 12)) for i, k in enumerate(keys)}


def write_run(run_dir: Path, games: tuple[str, ...], seeds: tuple[int, ...]) -> Path:
    evaluations, training = [], []
    for game in games:
        for seed in seeds:
            for c, condition in enumerate(CONDITIONS):
                evaluations.append({
                    "game": game, "seed": seed, "condition": condition,
                    "checkpoint": f"{game}/seed{seed}/{condition}",
                    # Pay/r etc. = condition index + seed: seeds 0,1,2 → mean c+1, sd 1.
                    "report": spec_report(game, condition, seed, value=float(c + seed)),
                    "kuhn_policy": nash_like_policy(0.1 * (c + 1)) if game == "kuhn" else None,
                })
            for condition in ("reward-only", "sepo"):
                rel = Path(game) / f"seed{seed}" / condition
                (run_dir / rel).mkdir(parents=True, exist_ok=True)
                with (run_dir / rel / "metrics.csv").open("w", newline="") as f:
                    w = csv.writer(f)
                    w.writerow(["step", "reward_train", "loss", "kl", "eval_safety",
                                "eval_exploit", "eval_exact_exploitability"])
                    for step in range(1, 9):
                        evald = step % 4 == 0
                        w.writerow([step, 0.1 * step + seed, 1.0 / step, 0.01 * step,
                                    0.5 + 0.01 * step if evald else "",
                                    0.3 - 0.01 * step if evald else "",
                                    (0.4 - 0.02 * step if game == "kuhn" and evald else "")])
                entry = {"game": game, "seed": seed, "condition": condition,
                         "run_dir": str(rel), "metrics_csv": str(rel / "metrics.csv")}
                if game == "ipd" and condition == "sepo":  # its oracle's log: two refreshes
                    refreshes = [{"step": step, "kind": "population",
                                  "chosen": ["DefectFrom(1)", "Bully"][:2],
                                  "ranking": [{"name": "DefectFrom(1)", "gap": 0.1 * step + seed},
                                              {"name": "Bully", "gap": 0.5},
                                              {"name": "TitForTat", "gap": 0.0}]}
                                 for step in (1, 6)]
                    (run_dir / rel / "oracle.jsonl").write_text(
                        "".join(json.dumps(r) + "\n" for r in refreshes) + '{"torn')
                    entry["oracle_log"] = str(rel / "oracle.jsonl")
                training.append(entry)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps({
        "schema": RESULTS_SCHEMA,
        "config": {"model": "tiny", "games": list(games), "seeds": len(seeds)},
        "evaluations": evaluations, "training": training,
    }))
    return run_dir


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run", ("kuhn", "ipd"), (0, 1, 2))


def test_aggregate_across_seeds_is_mean_with_student_t(run_dir: Path) -> None:
    data = load_results(run_dir)
    aggs = {(a["game"], a["condition"]): a for a in aggregate(data["evaluations"])}
    # Pay/r of condition c over seeds 0, 1, 2 is (c, c+1, c+2): mean c+1, sd 1.
    half = T975_DF2 / math.sqrt(3)
    for c, condition in enumerate(CONDITIONS):
        m = aggs[("ipd", condition)]["metrics"]["pay_per_round"]
        assert m["value"] == pytest.approx(c + 1)
        assert m["ci95"] == pytest.approx([c + 1 - half, c + 1 + half], abs=1e-5)
        assert m["n_seeds"] == 3 and m["interval"] == "Student-t over 3 seeds"
    # Exact exploitability of SFT: (0.3, 0.4, 0.5) → 0.4 ± t·0.1/√3.
    x = aggs[("kuhn", "sft")]["metrics"]["exact_exploitability"]
    assert x["value"] == pytest.approx(0.4)
    assert x["ci95"] == pytest.approx([0.4 - T975_DF2 * 0.1 / math.sqrt(3),
                                       0.4 + T975_DF2 * 0.1 / math.sqrt(3)], abs=1e-6)
    # Base is the same on every seed: a zero-width interval, not a failure.
    assert aggs[("kuhn", "base")]["metrics"]["exact_exploitability"]["ci95"] == \
        pytest.approx([0.9, 0.9])
    # A metric that is null on every seed (Kuhn robust here) is left out, not reported as 0.
    assert "robust" not in aggs[("kuhn", "sepo")]["metrics"]
    # Kuhn policies are averaged per information set.
    pol = aggs[("kuhn", "sepo")]["kuhn_policy"]
    assert pol["J"]["value"] == pytest.approx(nash_like_policy(0.4)["J"])


def test_seed_intervals_stay_inside_the_metrics_range(run_dir: Path) -> None:
    """Exploit is a gap (≥ 0) and a parse-failure share is in [0, 1]: a t interval over three
    seeds that crosses those limits is clipped to them; an unbounded metric is not."""
    aggs = {(a["game"], a["condition"]): a
            for a in aggregate(load_results(run_dir)["evaluations"])}
    half = T975_DF2 / math.sqrt(3)  # base: values (0, 1, 2), mean 1
    base = aggs[("ipd", "base")]["metrics"]
    assert base["exploit"]["ci95"] == pytest.approx([0.0, 1 + half], abs=1e-5)
    assert base["parse_failure_rate"]["ci95"] == pytest.approx([0.0, 1.0])
    assert base["safety"]["ci95"] == pytest.approx([1 - half, 1 + half], abs=1e-5)


def test_single_seed_uses_the_episode_bootstrap(tmp_path: Path) -> None:
    data = load_results(write_run(tmp_path / "one", ("ipd",), (1,)))
    sepo = next(a for a in aggregate(data["evaluations"]) if a["condition"] == "sepo")
    assert sepo["metrics"]["safety"] == {"value": 4.0, "ci95": [3.95, 4.05], "n_seeds": 1,
                                         "interval": "bootstrap over episodes"}


def test_paired_differences_by_seed(run_dir: Path) -> None:
    data = load_results(run_dir)
    diff = paired_differences(data["evaluations"], "kuhn", "sepo", "sft")
    # Exact exploitability SEPO − SFT per seed: −0.2 on every seed → zero-width interval.
    x = diff["exact_exploitability"]
    assert x["per_seed"] == pytest.approx([-0.2, -0.2, -0.2])
    assert x["value"] == pytest.approx(-0.2)
    assert x["ci95"] == pytest.approx([-0.2, -0.2])
    # Against reward-only: (0.1−0.25, 0.2−0.35, 0.3−0.3) = (−0.15, −0.15, 0).
    y = paired_differences(data["evaluations"], "kuhn", "sepo", "reward-only")
    assert y["exact_exploitability"]["value"] == pytest.approx(-0.1)


def test_build_report_writes_every_artifact(run_dir: Path) -> None:
    report = build_report([run_dir])
    assert report == run_dir / "report.md"
    text = report.read_text()
    # The table cells are "value [lo, hi]"; IPD Pay/r of SEPO: mean 4 over seeds 3, 4, 5.
    half = T975_DF2 / math.sqrt(3)
    assert format_value(4.0, [4 - half, 4 + half]) in text
    assert "| SEPO |" in text and "| Reward-only |" in text
    assert "Kuhn exact exploitability" in text
    # The paired comparison against SFT: exact exploitability −0.2 [−0.2, −0.2].
    assert "-0.200 [-0.200, -0.200]" in text
    for name in ("kuhn_conditions", "kuhn_training", "kuhn_policy", "ipd_conditions",
                 "ipd_training"):
        png = run_dir / "plots" / f"{name}.png"
        assert png.exists() and png.stat().st_size > 10_000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{name}.png" in text
    # No Kuhn policy figure for IPD; no exact exploitability column either.
    assert not (run_dir / "plots" / "ipd_policy.png").exists()
    # The oracle's last refresh per SEPO run of IPD (a torn last line is skipped); none for
    # Kuhn, whose runs logged none.
    ipd_text, kuhn_text = text.split("\n## ipd\n", 1)[1].split("\n## kuhn\n", 1)
    assert "### Adaptive exploiters" in ipd_text
    # Kuhn-only metrics get no column in another game's tables, the paired one included.
    assert "Kuhn exact" not in ipd_text and "Kuhn exact exploitability" in kuhn_text
    assert "### Adaptive exploiters" not in kuhn_text
    for seed in (0, 1, 2):
        assert (f"| SEPO | {seed} | 6 | population | 3 | DefectFrom(1) "
                f"({0.6 + seed:.3f}), Bully (0.500) |") in ipd_text

    results = json.loads((run_dir / "results.json").read_text())
    assert {(a["game"], a["condition"]) for a in results["aggregates"]} == \
        {(g, c) for g in ("kuhn", "ipd") for c in CONDITIONS}
    assert results["comparisons"]["kuhn"]["sft"]["exact_exploitability"]["value"] == \
        pytest.approx(-0.2)

    with (run_dir / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    agg_row = next(r for r in rows if r["game"] == "kuhn" and r["condition"] == "sft"
                   and r["seed"] == "all" and r["metric"] == "exact_exploitability")
    assert float(agg_row["value"]) == pytest.approx(0.4)
    seed_rows = [r for r in rows if r["seed"] != "all"]
    # 2 games × 4 conditions × 3 seeds × metrics (IPD 9, Kuhn 9: robust is null)
    assert len(seed_rows) == 3 * 4 * (9 + 9)
    with (run_dir / "per_opponent.csv").open() as f:
        opp = list(csv.DictReader(f))
    assert len(opp) == 2 * 4 * 3 and opp[0]["opponent"] == "Nash"

    # Rebuilding is idempotent: the same numbers again.
    first = json.loads((run_dir / "results.json").read_text())["aggregates"]
    build_report([run_dir], figures=False)
    assert json.loads((run_dir / "results.json").read_text())["aggregates"] == first


def test_combined_report_pools_seeds_from_several_runs(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", ("ipd",), (0, 1))
    b = write_run(tmp_path / "b", ("ipd",), (2,))
    report = build_report([a, b], out=tmp_path / "both")
    results = json.loads((tmp_path / "both" / "results.json").read_text())
    sepo = next(x for x in results["aggregates"] if x["condition"] == "sepo")
    assert sepo["seeds"] == [0, 1, 2]
    assert sepo["metrics"]["pay_per_round"]["value"] == pytest.approx(4.0)
    # Training curves are found through their run directories.
    assert (tmp_path / "both" / "plots" / "ipd_training.png").exists()
    assert report.exists()
    with pytest.raises(SepoError, match="--out"):
        build_report([a, b])
    with pytest.raises(SepoError, match="appears in both"):
        build_report([a, a], out=tmp_path / "dup")


def test_not_a_run_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SepoError, match=r"no results\.json"):
        build_report([tmp_path])
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(SepoError, match="not valid JSON"):
        load_results(tmp_path)


def test_lambda_panels_only_where_a_budget_moved_lambda(tmp_path: Path) -> None:
    from sepo.report import _training_curves

    def metrics(name: str, lambdas: list[float]) -> dict[str, object]:
        rows = ["step,loss,lambda_exploit,lambda_collusion,advantage_share_exploit"]
        rows += [f"{k + 1},0.5,{lam},1.0,0.25" for k, lam in enumerate(lambdas)]
        (tmp_path / f"{name}.csv").write_text("\n".join(rows) + "\n")
        return {"game": "ipd", "seed": 0, "condition": name, "_root": str(tmp_path),
                "metrics_csv": f"{name}.csv"}

    fixed = [metrics("sepo", [2.4, 2.4, 2.4]), metrics("reward-only", [0.0, 0.0, 0.0])]
    curves = _training_curves(tmp_path, fixed, "ipd")
    assert "lambda_exploit" not in curves["sepo"][0]  # fixed λ: no panel
    assert curves["sepo"][0]["advantage_share_exploit"] == [(1, 0.25), (2, 0.25), (3, 0.25)]
    budget = [*fixed, metrics("sepo-budget", [2.4, 3.1, 4.0])]
    curves = _training_curves(tmp_path, budget, "ipd")
    assert curves["sepo-budget"][0]["lambda_exploit"] == [(1, 2.4), (2, 3.1), (3, 4.0)]
    assert curves["sepo"][0]["lambda_exploit"] == [(1, 2.4), (2, 2.4), (3, 2.4)]
    assert "lambda_collusion" not in curves["sepo-budget"][0]  # constant everywhere
