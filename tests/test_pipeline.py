"""`sepo run` end to end on the test-sized tiny model, with a budget of a few steps and episodes:
every stage runs, every artifact is written, a second invocation skips every finished stage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
import typer
from typer.testing import CliRunner

from sepo.cli import report, run
from sepo.errors import SepoError, UnknownNameError
from sepo.games import game_names, get_game
from sepo.kuhn_exact import exploitability
from sepo.models.tiny import build_info
from sepo.pipeline import FINAL_EVAL_INDEX, RunConfig, run_pipeline, seed_dir
from sepo.report import CONDITION_ORDER, load_results
from sepo.train.config import SEPOConfig

#: The smallest budget that still exercises every stage: 2 steps, one checkpoint evaluation.
#: The test model's answers rarely parse: no parse-failure ceiling, so best/ is written.
SMOKE = dict(steps=2, checkpoint_every=2, sft_episodes=1, sft_epochs=1.0, eval_episodes=1,
             group_size=2, train_eval_episodes=1, max_new_tokens=8,
             sepo={"best_max_parse_failures": 1.0})
SMOKE_CLI = ["--steps", "2", "--checkpoint-every", "2", "--sft-episodes", "1", "--sft-epochs",
             "1", "--eval-episodes", "1", "--group-size", "2", "--train-eval-episodes", "1",
             "--max-new-tokens", "8", "--sepo", "best_max_parse_failures=1.0"]


def cli() -> typer.Typer:
    """`sepo.cli`'s two commands, without its error handler: errors reach the test as
    raised."""
    app = typer.Typer()
    app.command()(run)
    app.command()(report)
    return app


@pytest.fixture(scope="module")
def kuhn_run(tiny_lm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pipeline") / "kuhn"
    result = CliRunner().invoke(cli(), ["run", "kuhn", "--model", str(tiny_lm_path),
                                        "--out", str(out), *SMOKE_CLI])
    assert result.exit_code == 0, result.output
    # The final table: one row or column per condition, numbers with intervals.
    for label in ("Base", "SFT", "Reward-only", "SEPO"):
        assert label in result.output
    assert "Kuhn exact" in result.output
    return out


@pytest.mark.slow
def test_pipeline_writes_every_artifact(kuhn_run: Path) -> None:
    sd = seed_dir(kuhn_run, "kuhn", 0)
    assert (sd / "sft-data" / "card.json").exists()
    assert (sd / "sft" / "sepo_sft.json").exists()
    for condition in ("sepo", "reward-only"):
        rows = (sd / condition / "metrics.csv").read_text().splitlines()
        assert len(rows) == 1 + 2  # header + one row per step
        assert (sd / condition / "best" / "config.json").exists()
        saved = json.loads((sd / condition / "config.json").read_text())
        assert saved["reward_only"] is (condition == "reward-only")
        assert saved["model"].endswith("sft")  # both start from the same SFT checkpoint
    for name in ("report.md", "results.json", "results.csv", "per_opponent.csv",
                 "run_config.json", "timings.json"):
        assert (kuhn_run / name).stat().st_size > 0, name
    for name in ("kuhn_conditions", "kuhn_training", "kuhn_policy"):
        png = kuhn_run / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.slow
def test_results_hold_every_condition_on_common_evaluation_episodes(kuhn_run: Path,
                                                                    tiny_lm_path: Path) -> None:
    results = load_results(kuhn_run)
    evals = {e["condition"]: e for e in results["evaluations"]}
    assert list(evals) == list(CONDITION_ORDER)
    for condition, e in evals.items():
        rep = e["report"]
        # The same evaluation seed index for every condition (common random numbers), and
        # not index 0, on which the trainers selected their best checkpoints.
        assert rep["seed"] == FINAL_EVAL_INDEX
        assert rep["game"] == "kuhn" and rep["episodes"] == 1
        assert set(rep["ci95"]) >= {"pay_per_round", "exploit", "safety", "nra",
                                    "exact_exploitability"}
        # The stored policy is the one whose exploitability was reported.
        policy = e["kuhn_policy"]
        assert len(policy) == 12 and all(0.0 <= p <= 1.0 for p in policy.values())
        assert exploitability(policy) == pytest.approx(rep["exact_exploitability"], abs=1e-9)
        assert e["checkpoint"] == {"base": str(tiny_lm_path.resolve()), "sft": "kuhn/seed0/sft",
                                   "reward-only": "kuhn/seed0/reward-only/best",
                                   "sepo": "kuhn/seed0/sepo/best"}[condition]
    aggs = {a["condition"]: a for a in results["aggregates"]}
    for condition in CONDITION_ORDER:
        m = aggs[condition]["metrics"]["exact_exploitability"]
        assert m["value"] == evals[condition]["report"]["exact_exploitability"]
        assert m["interval"] == "bootstrap over episodes"  # one seed
    text = (kuhn_run / "report.md").read_text()
    assert "| SEPO |" in text and "plots/kuhn_policy.png" in text
    # SEPO's oracle (Kuhn: the exact best response) logged its refreshes; reward-only has none.
    training = {t["condition"]: t for t in results["training"]}
    assert "oracle_log" not in training["reward-only"]
    assert training["sepo"]["oracle_log"] == "kuhn/seed0/sepo/oracle.jsonl"
    assert "### Adaptive exploiters" in text
    assert "| SEPO | 0 | 2 | exact | 1 | BestResponse (" in text
    # Where the numbers were made: the versions, and which base build (its weights digest).
    env = json.loads((kuhn_run / "results.json").read_text())["environment"]
    assert env["torch"] == torch.__version__ and env["transformers"] == transformers.__version__
    assert env["base_weights_digest"] == build_info(tiny_lm_path)["weights_digest"]  # type: ignore[index]


@pytest.mark.slow
def test_rerun_skips_finished_stages_and_keeps_the_numbers(kuhn_run: Path,
                                                           tiny_lm_path: Path) -> None:
    before = load_results(kuhn_run)["aggregates"]
    eval_file = seed_dir(kuhn_run, "kuhn", 0) / "eval" / "sepo.json"
    mtime = eval_file.stat().st_mtime_ns
    run_pipeline(RunConfig(games=["kuhn"], model=str(tiny_lm_path), out=kuhn_run, **SMOKE),
                 quiet=True)
    assert eval_file.stat().st_mtime_ns == mtime  # not re-evaluated
    assert load_results(kuhn_run)["aggregates"] == before
    assert len(json.loads((kuhn_run / "timings.json").read_text())) == 2
    # A different experiment in the same directory is refused, naming what differs.
    with pytest.raises(SepoError, match="steps: 2 → 3"):
        run_pipeline(RunConfig(games=["kuhn"], model=str(tiny_lm_path), out=kuhn_run,
                               **{**SMOKE, "steps": 3}), quiet=True)


@pytest.mark.slow
def test_report_command_rebuilds_tables(kuhn_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli(), ["report", str(kuhn_run), "--no-plots", "--json"])
    assert result.exit_code == 0, result.output
    aggregates: list[dict[str, Any]] = json.loads(result.output)
    assert {a["condition"] for a in aggregates} == set(CONDITION_ORDER)


@pytest.mark.slow
def test_a_further_condition_joins_an_earlier_run_paired_with_the_others(
        kuhn_run: Path, tiny_lm_path: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "kuhn"
    shutil.copytree(kuhn_run, run_dir)
    sd = seed_dir(run_dir, "kuhn", 0)
    kept = {c: (sd / "eval" / f"{c}.json").stat().st_mtime_ns for c in CONDITION_ORDER}
    paper = ["--set", "conditions.sepo-paper.advantage=group",
             "--set", "conditions.sepo-paper.oracle=false"]
    result = CliRunner().invoke(cli(), ["run", "kuhn", "--model", str(tiny_lm_path),
                                        "--out", str(run_dir), *SMOKE_CLI, *paper])
    assert result.exit_code == 0, result.output
    # Only the new condition was trained and evaluated; the others were kept as they were.
    assert {c: (sd / "eval" / f"{c}.json").stat().st_mtime_ns for c in CONDITION_ORDER} == kept
    trained = json.loads((sd / "sepo-paper" / "config.json").read_text())
    assert (trained["advantage"], trained["oracle"], trained["reward_only"]) == (
        "group", False, False)
    assert Path(trained["model"]) == sd / "sft"  # the same SFT checkpoint as SEPO's
    results = load_results(run_dir)
    evals = {e["condition"]: e for e in results["evaluations"]}
    assert list(evals) == [*CONDITION_ORDER, "sepo-paper"]
    # The same evaluation episodes as every other condition of the seed.
    assert evals["sepo-paper"]["report"]["seed"] == evals["sepo"]["report"]["seed"]
    assert evals["sepo-paper"]["checkpoint"] == "kuhn/seed0/sepo-paper/best"
    assert {t["condition"] for t in results["training"]} == {"sepo", "reward-only",
                                                             "sepo-paper"}
    assert set(results["paired_differences"]["kuhn"]) == {
        f"{t} − {b}" for t in ("sepo", "sepo-paper") for b in ("sft", "reward-only", "base")
    } | {"sepo-paper − sepo"}
    assert json.loads((run_dir / "run_config.json").read_text())["conditions"] == {
        "sepo-paper": {"advantage": "group", "oracle": False}}
    # Without the option the recorded condition stays; changing it is another experiment.
    with pytest.raises(SepoError, match=r"conditions\.sepo-paper"):
        run_pipeline(RunConfig(games=["kuhn"], model=str(tiny_lm_path), out=run_dir, **SMOKE,
                               conditions={"sepo-paper": {"advantage": "batch"}}), quiet=True)


def test_further_conditions_override_the_shared_sepo_fields(tmp_path: Path) -> None:
    config = RunConfig(games=["ipd"], out=tmp_path, sepo={"lr": 3e-5, "advantage": "batch"},
                       conditions={"paper": {"advantage": "group", "oracle": False},
                                   "budget": {"budgets": {"exploit": 0.3}}})
    assert config.trained_conditions == ["sepo", "reward-only", "paper", "budget"]
    sepo = config.sepo_config("ipd", 0, tmp_path, tmp_path / "s", "sepo")
    paper = config.sepo_config("ipd", 0, tmp_path, tmp_path / "p", "paper")
    budget = config.sepo_config("ipd", 0, tmp_path, tmp_path / "b", "budget")
    assert (sepo.advantage, sepo.oracle, sepo.budgets) == ("batch", True, {})
    assert (paper.advantage, paper.oracle, paper.lr) == ("group", False, 3e-5)
    assert (budget.advantage, budget.budgets, budget.reward_only) == (
        "batch", {"exploit": 0.3}, False)
    with pytest.raises(UnknownNameError, match="paper"):
        config.sepo_config("ipd", 0, tmp_path, tmp_path, "papr")


@pytest.mark.parametrize(("conditions", "message"), [
    ({"SEPO Paper": {}}, "lower-case letters"),
    ({"sft": {}}, "is taken; reserved: base, eval, reward-only, sepo, sft, sft-data"),
    ({"paper": {"adventage": "group"}}, "adventage"),
    ({"paper": {"seed": 3}}, "conditions.paper.seed is set by the pipeline"),
    ({"paper": {"advantage": "bach"}}, "batch"),
    ({"paper": "group"}, "must be a table of SEPOConfig fields"),
])
def test_a_bad_further_condition_is_refused_naming_it(tmp_path: Path, conditions: Any,
                                                      message: str) -> None:
    with pytest.raises((SepoError, ValueError), match=message):
        RunConfig(games=["kuhn"], out=tmp_path, conditions=conditions)


# ------------------------------------------------------------------ config (fast)
def test_run_config_defaults_and_overrides(tmp_path: Path) -> None:
    config = RunConfig(games="all", out=tmp_path)
    assert config.games == game_names()
    assert config.budget("kuhn") == get_game("kuhn").budget
    # No generation budget by default: each checkpoint's sepo_agent.json (sized by SFT) decides.
    assert config.budget("kuhn").reasoning is False and config.new_tokens("kuhn") is None
    assert RunConfig(games="kuhn", out=tmp_path, max_new_tokens=12).new_tokens("kuhn") == 12
    tuned = RunConfig(games=["ipd", "ipd"], out=tmp_path, steps=7, reasoning=False, seeds=3,
                      first_seed=2)
    assert tuned.games == ["ipd"]
    assert tuned.budget("ipd").sepo_steps == 7 and tuned.budget("ipd").reasoning is False
    assert tuned.seed_list == [2, 3, 4]
    sepo = tuned.sepo_config("ipd", 3, tmp_path / "sft", tmp_path / "sepo", "reward-only")
    assert (sepo.steps, sepo.seed, sepo.reward_only, sepo.reasoning) == (7, 3, True, False)
    assert sepo.train_lambdas.as_dict() == {"exploit": 0.0, "collusion": 0.0,
                                            "externality": 0.0}
    # Extra trainer settings pass through to both conditions.
    lr = RunConfig(games=["kuhn"], out=tmp_path, sepo={"lr": 3e-5}).sepo_config(
        "kuhn", 0, tmp_path, tmp_path, "sepo")
    assert lr.lr == 3e-5
    # `tiny` gets its own stage-2 rate (`tiny_lr`); any other model keeps the game's (the
    # paper's).
    tiny_lr = get_game("kuhn").budget.tiny_lr
    assert RunConfig(games=["kuhn"], out=tmp_path).sepo_config(
        "kuhn", 0, tmp_path, tmp_path, "reward-only").lr == tiny_lr
    # IPD and bargaining (reasoning games whose KL ran away at 1e-4) get their lower rate.
    assert get_game("ipd").budget.tiny_lr < tiny_lr
    assert RunConfig(games=["ipd"], out=tmp_path).sepo_config(
        "ipd", 0, tmp_path, tmp_path, "sepo").lr == get_game("ipd").budget.tiny_lr
    assert RunConfig(games=["ipd"], out=tmp_path, sepo={"lr": 1e-4}).sepo_config(
        "ipd", 0, tmp_path, tmp_path, "sepo").lr == 1e-4
    paper = SEPOConfig(game="kuhn", model="org/model", out=tmp_path).lr
    assert paper != tiny_lr
    assert RunConfig(games=["kuhn"], out=tmp_path, model="org/model").sepo_config(
        "kuhn", 0, tmp_path, tmp_path, "reward-only").lr == paper
    # A path to a tiny build (another `--set` build, the 2.08 M one of docs/RESULTS.md) is
    # tiny too; a directory without the build record is not.
    build = tmp_path / "tiny-other"
    build.mkdir()
    (build / "sepo_build.json").write_text(json.dumps({"name": "tiny", "seed": 0}))
    assert RunConfig(games=["kuhn"], out=tmp_path, model=str(build)).sepo_config(
        "kuhn", 0, tmp_path, tmp_path, "reward-only").lr == tiny_lr
    assert RunConfig(games=["kuhn"], out=tmp_path, model=str(tmp_path / "sft")).sepo_config(
        "kuhn", 0, tmp_path, tmp_path, "reward-only").lr == paper
    # The adaptive exploiter is SEPO's; the reward-only baseline stays the plain one.
    adaptive = RunConfig(games=["kuhn"], out=tmp_path, sepo={"exploit_best_response": True})
    assert adaptive.sepo_config("kuhn", 0, tmp_path, tmp_path,
                                "sepo").exploit_best_response
    assert not adaptive.sepo_config("kuhn", 0, tmp_path, tmp_path,
                                    "reward-only").exploit_best_response


def test_a_further_condition_may_set_its_own_steps_and_nothing_else_of_the_pipelines(
        tmp_path: Path) -> None:
    config = RunConfig(games=["ipd"], out=tmp_path, conditions={
        "sepo-budget-40": {"steps": 40, "advantage": "batch", "budgets": {"collusion": 0.2}}})
    longer = config.sepo_config("ipd", 0, tmp_path / "sft", tmp_path / "a", "sepo-budget-40")
    default = config.sepo_config("ipd", 0, tmp_path / "sft", tmp_path / "b", "sepo")
    assert (longer.steps, default.steps) == (40, get_game("ipd").budget.sepo_steps) == (40, 20)
    assert longer.budgets == {"collusion": 0.2} and default.budgets == {}
    with pytest.raises(SepoError, match=r"conditions\.x\.seed is set by the pipeline"):
        RunConfig(games=["ipd"], out=tmp_path, conditions={"x": {"seed": 3}})


def test_run_config_bad_input_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="kuhn"):
        RunConfig(games=["poker"], out=tmp_path)
    with pytest.raises(UnknownNameError, match="steps"):
        RunConfig(games=["kuhn"], out=tmp_path, stepz=3)
    with pytest.raises(UnknownNameError, match="credit"):
        RunConfig(games=["kuhn"], out=tmp_path, sepo={"credt": "aux"})
    with pytest.raises(SepoError, match="set by the pipeline"):
        RunConfig(games=["kuhn"], out=tmp_path, sepo={"steps": 3})
    with pytest.raises(UnknownNameError, match="final"):
        RunConfig(games=["kuhn"], out=tmp_path, select="last")
    result = CliRunner().invoke(cli(), ["run", "kuhn", "--out", str(tmp_path), "--sepo", "lr"])
    assert isinstance(result.exception, SepoError) and "KEY=VALUE" in str(result.exception)


@pytest.mark.parametrize(("flag", "expected"), [
    ([], {"sepo": {}, "sft": {}}),
    (["--no-share-prompt-prefix"], {"sepo": {"share_prompt_prefix": False},
                                    "sft": {"share_prompt_prefix": False}}),
])
def test_run_command_turns_prefix_sharing_off_for_both_stages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: list[str],
        expected: dict[str, Any]) -> None:
    """`sepo run --no-share-prompt-prefix` (the computation the runs in docs/RESULTS.md used)
    reaches SFT's and both trainers' configs."""
    import sepo.pipeline as pipeline

    seen: list[RunConfig] = []
    monkeypatch.setattr(pipeline, "run_pipeline",
                        lambda config, quiet=False, overwrite=False:
                        seen.append(config) or config.out)
    app = typer.Typer()
    app.command()(run)
    result = CliRunner().invoke(app, ["kuhn", "--out", str(tmp_path / "r"), *flag])
    assert result.exit_code == 0, result.output
    [config] = seen
    assert {"sepo": config.sepo, "sft": config.sft} == expected
    for condition in ("sepo", "reward-only"):
        sepo = config.sepo_config("kuhn", 0, tmp_path / "sft", tmp_path / "x", condition)
        assert sepo.share_prompt_prefix is not bool(flag)


def test_the_study_configs_build_the_documented_conditions(tmp_path: Path) -> None:
    """examples/study/*.toml, the configs docs/RESULTS.md's study was run with, stay valid."""
    from sepo.config_model import read_settings

    study = Path(__file__).parent.parent / "examples" / "study"
    budgets = {"kuhn": {"exploit": 0.3}, "ipd": {"collusion": 0.2}}
    for game, budget in budgets.items():
        config = RunConfig(out=tmp_path, games=[game], **read_settings(study / f"{game}.toml"))
        assert config.seeds == 3
        extra = (["sepo-exact", "sepo-expected", "sepo-expected-budget", "sepo-exact-budget"]
                 if game == "kuhn" else ["sepo-budget-40"])
        assert config.trained_conditions == ["sepo", "reward-only", "sepo-paper", "sepo-budget",
                                             *extra]
        if game == "ipd":
            longer = config.sepo_config(game, 0, tmp_path, tmp_path, "sepo-budget-40")
            assert (longer.steps, longer.advantage, longer.budgets) == (40, "batch", budget)
        else:
            exact = config.sepo_config(game, 0, tmp_path, tmp_path, "sepo-exact")
            assert (exact.exact_credit, exact.exact_expected) == (True, False)
            expected = config.sepo_config(game, 0, tmp_path, tmp_path, "sepo-expected")
            assert (expected.exact_credit, expected.exact_expected) == (True, True)
            on_rollouts = config.sepo_config(game, 0, tmp_path, tmp_path, "sepo-expected-budget")
            assert (on_rollouts.exact_expected, on_rollouts.budget_exact,
                    on_rollouts.budgets) == (True, False, {"exploit": 0.3})
            on_exact = config.sepo_config(game, 0, tmp_path, tmp_path, "sepo-exact-budget")
            assert (on_exact.exact_expected, on_exact.budget_exact,
                    on_exact.budgets) == (True, True, {"exploit": 0.15})
        paper = config.sepo_config(game, 0, tmp_path, tmp_path, "sepo-paper")
        assert (paper.advantage, paper.oracle) == ("group", False)
        budgeted = config.sepo_config(game, 0, tmp_path, tmp_path, "sepo-budget")
        assert (budgeted.advantage, budgeted.budgets) == ("batch", budget)
    for game in ("auction", "negotiation", "bargaining"):
        config = RunConfig(out=tmp_path, games=[game], **read_settings(study / "other.toml"))
        assert config.trained_conditions == ["sepo", "reward-only", "sepo-paper"]
        # The paper's per-round advantages, whatever the game's default; SEPO and its
        # baseline share the game's.
        paper = config.sepo_config(game, 0, tmp_path, tmp_path, "sepo-paper")
        assert (paper.advantage, paper.oracle, paper.normalize) == ("group", False, "per-round")
        default = "per-round" if game == "auction" else "episode"
        for condition in ("sepo", "reward-only"):
            assert config.sepo_config(game, 0, tmp_path, tmp_path, condition).normalize == default
