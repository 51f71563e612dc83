"""Command options from the config models: `--config FILE.toml` and `--set KEY=VALUE` on
`sepo train`, `sepo sft` and `sepo run`, their precedence (file < --set < named flags), their
one-line errors, and named flags whose help is the field's description.

The commands' work is replaced by a stub that records the config they built, so nothing here
loads a model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import BaseModel
from rich.markup import escape
from typer.testing import CliRunner

from sepo.cli import app
from sepo.config_model import merge_settings, nested_setting, read_settings
from sepo.errors import SepoError
from sepo.games import get_game
from sepo.pipeline import RunConfig
from sepo.sft.train import SFTRunConfig
from sepo.train.config import Lambdas, SEPOConfig


def invoke(*args: str | Path) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result: Any) -> str:
    """The error line of a refused command: exit code 2, one line, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def toml(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def trained(monkeypatch: pytest.MonkeyPatch) -> list[SEPOConfig]:
    """`sepo train` builds its config and stops: the configs it would have trained."""
    import sepo.train.run

    seen: list[SEPOConfig] = []

    def train_run(config: SEPOConfig, *, progress: bool = True) -> dict[str, Any]:
        seen.append(config)
        return {"condition": config.condition}

    monkeypatch.setattr(sepo.train.run, "train_run", train_run)
    return seen


@pytest.fixture
def fine_tuned(monkeypatch: pytest.MonkeyPatch) -> list[SFTRunConfig]:
    """`sepo sft` builds its config and stops: the configs it would have trained with."""
    import sepo.sft.train

    seen: list[SFTRunConfig] = []

    def train_sft(game: str, model: str, data: Path, out: Path, config: SFTRunConfig,
                  **kwargs: Any) -> Any:
        seen.append(config)
        raise typer.Exit(0)  # no result to print

    monkeypatch.setattr(sepo.sft.train, "train_sft", train_sft)
    return seen


@pytest.fixture
def piped(monkeypatch: pytest.MonkeyPatch) -> list[RunConfig]:
    """`sepo run` builds its config and stops: the configs it would have run."""
    import sepo.pipeline

    seen: list[RunConfig] = []
    monkeypatch.setattr(sepo.pipeline, "run_pipeline",
                        lambda config, quiet=False, overwrite=False:
                        seen.append(config) or config.out)
    return seen


TRAIN = ("train", "kuhn", "--model", "tiny", "--json")


# ------------------------------------------------------------------ sepo train
def test_train_config_file_reaches_the_config(tmp_path: Path,
                                              trained: list[SEPOConfig]) -> None:
    path = toml(tmp_path, 'steps = 2\ncredit = "constant"\nclip_eps = 0.1\n'
                          "lora_target_modules = ['q_proj']\n[lambdas]\nexploit = 2.5\n")
    result = invoke(*TRAIN, "--out", tmp_path / "run", "--config", path)
    assert result.exit_code == 0, result.output
    [config] = trained
    assert (config.steps, config.credit, config.clip_eps) == (2, "constant", 0.1)
    assert config.lora_target_modules == ["q_proj"]
    # A λ the file leaves out stays the game's, as do the game's lr and β.
    game = get_game("kuhn").defaults
    assert config.lambdas == Lambdas(**{**game["lambdas"], "exploit": 2.5})
    assert config.lr == SEPOConfig(game="kuhn", model="tiny", out=tmp_path).lr


def test_train_precedence_file_then_set_then_flags(tmp_path: Path,
                                                   trained: list[SEPOConfig]) -> None:
    path = toml(tmp_path, "steps = 2\nseed = 5\nbeta = 0.3\n[lambdas]\nexploit = 1.0\n"
                          "collusion = 1.0\n")
    base = (*TRAIN, "--out", tmp_path / "run", "--config", path)
    assert invoke(*base, "--set", "steps=3", "--set", "lambdas.exploit=2").exit_code == 0
    assert invoke(*base, "--set", "steps=3", "--steps", "4", "--lambda-exploit", "3",
                  "--set", "lambdas.exploit=2").exit_code == 0
    set_only, flagged = trained
    assert (set_only.steps, set_only.seed, set_only.beta) == (3, 5, 0.3)
    assert (set_only.lambdas.exploit, set_only.lambdas.collusion) == (2.0, 1.0)
    # The named flags win over --set, whatever their order on the command line.
    assert (flagged.steps, flagged.seed, flagged.lambdas.exploit) == (4, 5, 3.0)
    assert flagged.lambdas.collusion == 1.0


def test_train_file_may_give_model_and_out(tmp_path: Path, trained: list[SEPOConfig]) -> None:
    path = toml(tmp_path, f'model = "tiny"\nout = "{tmp_path / "run"}"\nreward_only = true\n')
    result = invoke("train", "kuhn", "--config", path, "--json")
    assert result.exit_code == 0, result.output
    [config] = trained
    assert (config.model, config.out, config.condition) == ("tiny", tmp_path / "run",
                                                            "reward-only")
    # Neither the file nor the flag: the missing option, as click would say it.
    line = one_line_error(invoke("train", "kuhn", "--model", "tiny"))
    assert "Missing option '--out'" in line
    # The GAME argument is the game: a file naming another is refused, not overridden.
    line = one_line_error(invoke(*TRAIN, "--out", tmp_path / "r", "--config",
                                 toml(tmp_path, 'game = "ipd"\n', "game.toml")))
    assert "game is the GAME argument" in line
    assert len(trained) == 1


@pytest.mark.parametrize(("text", "settings", "expected"), [
    ("stepz = 2\n", [], "unknown SEPO config field 'stepz'. Did you mean 'steps'? Choices: "),
    ("", ["stepz=2"], "unknown SEPO config field 'stepz'. Did you mean 'steps'?"),
    ("[lambdas]\nexploitt = 1\n", [], "unknown lambda 'exploitt'. Did you mean 'exploit'? "
                                      "Choices: collusion, exploit, externality"),
    ("steps = 0\n", [], "steps: Input should be greater than or equal to 1 (got 0)"),
    ("", ["steps=many"], "steps: Input should be a valid integer, unable to parse string as "
                         "an integer (got 'many')"),
    ("", ["credit=bogus"], "unknown credit 'bogus'. Choices: aux, constant, per-pool"),
    ("", ["lambdas.exploit=-1"], "lambdas.exploit: Input should be greater than or equal to 0"),
    ("", ["steps"], "--set expects KEY=VALUE, got 'steps'"),
    ("", ["lambdas..exploit=1"], "--set expects KEY=VALUE with KEY a field name or dotted "
                                 "names"),
])
def test_train_bad_settings_are_one_line(tmp_path: Path, trained: list[SEPOConfig], text: str,
                                         settings: list[str], expected: str) -> None:
    args = [arg for item in settings for arg in ("--set", item)]
    line = one_line_error(invoke(*TRAIN, "--out", tmp_path / "run", "--config",
                                 toml(tmp_path, text), *args))
    assert expected in line
    if "Choices" in expected and "SEPO config field" in expected:
        assert all(name in line for name in SEPOConfig.model_fields)
    assert not trained


@pytest.mark.parametrize(("content", "expected"), [
    ("steps = [\n", "is not valid TOML: "),
    (b"steps = '\xff'\n", "is not UTF-8 text"),
    (None, "No such file or directory"),
])
def test_unreadable_config_file_is_one_line_naming_it(
        tmp_path: Path, trained: list[SEPOConfig], content: str | bytes | None,
        expected: str) -> None:
    path = tmp_path / "bad.toml"
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    line = one_line_error(invoke(*TRAIN, "--out", tmp_path / "run", "--config", path))
    assert f"--config {path}" in line and expected in line
    # A directory is not a file either.
    line = one_line_error(invoke(*TRAIN, "--out", tmp_path / "run", "--config", tmp_path))
    assert f"--config {tmp_path}" in line
    assert not trained


# ------------------------------------------------------------------ sepo sft
def test_sft_config_file_set_and_flags(tmp_path: Path,
                                       fine_tuned: list[SFTRunConfig]) -> None:
    path = toml(tmp_path, "epochs = 1.5\nbatch_size = 4\nlora_r = 8\nwarmup = 0.1\n")
    base = ("sft", "ipd", "--model", "tiny", "--data", tmp_path, "--out", tmp_path / "ckpt",
            "--config", path)
    assert invoke(*base).exit_code == 0
    assert invoke(*base, "--set", "batch_size=8", "--set", "epochs=2",
                  "--epochs", "3", "--lora", "--lr", "1e-4", "--json").exit_code == 0
    from_file, flagged = fine_tuned
    assert (from_file.epochs, from_file.batch_size, from_file.lora_r) == (1.5, 4, 8)
    assert from_file.finetune == "auto" and from_file.progress
    assert (flagged.epochs, flagged.batch_size, flagged.warmup) == (3.0, 8, 0.1)
    assert (flagged.finetune, flagged.learning_rate) == ("lora", 1e-4)
    assert not flagged.progress  # --json: the bar would interleave with the JSON
    line = one_line_error(invoke(*base, "--set", "batchsize=8"))
    assert "unknown SFT config field 'batchsize'. Did you mean 'batch_size'? Choices: " in line
    line = one_line_error(invoke(*base, "--set", "warmup=2"))
    assert "warmup: Input should be less than 1" in line
    assert len(fine_tuned) == 2


# ------------------------------------------------------------------ sepo run
def test_run_set_and_config_reach_the_pass_through_configs(
        tmp_path: Path, piped: list[RunConfig]) -> None:
    path = toml(tmp_path, "seeds = 2\nsteps = 3\n[sepo]\ncredit = \"constant\"\nlr = 1e-3\n"
                          "[sft]\nbatch_size = 4\n")
    out = tmp_path / "r"
    assert invoke("run", "kuhn", "--out", out, "--set", "sepo.lr=3e-5").exit_code == 0
    assert invoke("run", "kuhn", "--out", out, "--config", path, "--set", "sepo.lr=3e-5",
                  "--sepo", "lambdas.exploit=2", "--set", "sft.lora_r=8",
                  "--seeds", "3").exit_code == 0
    plain, filed = piped
    assert plain.sepo_config("kuhn", 0, tmp_path, tmp_path, "sepo").lr == 3e-5
    assert (filed.seeds, filed.steps) == (3, 3)
    sepo = filed.sepo_config("kuhn", 0, tmp_path, tmp_path, "sepo")
    assert (sepo.lr, sepo.credit, sepo.lambdas.exploit) == (3e-5, "constant", 2.0)
    assert sepo.lambdas.collusion == get_game("kuhn").defaults["lambdas"]["collusion"]
    assert filed.sft == {"batch_size": 4, "lora_r": 8}
    # --sepo, kept for compatibility, and the flag that sets both stages' field.
    assert invoke("run", "kuhn", "--out", out, "--config", path, "--sepo", "lr=1e-4",
                  "--no-share-prompt-prefix").exit_code == 0
    assert piped[-1].sepo == {"credit": "constant", "lr": 1e-4, "share_prompt_prefix": False}
    assert piped[-1].sft == {"batch_size": 4, "share_prompt_prefix": False}


def test_run_default_out_names_the_model_the_file_chose(tmp_path: Path,
                                                         piped: list[RunConfig],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = toml(tmp_path, 'model = "smollm2-135m"\n')
    assert invoke("run", "ipd", "--config", path).exit_code == 0
    assert piped[0].out == Path("runs") / "ipd-smollm2-135m"
    assert piped[0].model == "smollm2-135m"


@pytest.mark.parametrize(("settings", "expected"), [
    (["sepo.stepz=3"], "unknown SEPO config field 'stepz'. Did you mean 'steps'?"),
    (["sepo.steps=3"], "sepo.steps is set by the pipeline"),
    (["sft.epochs=3"], "sft.epochs is set by the pipeline"),
    (["sft.batchsize=3"], "unknown SFT config field 'batchsize'"),
    (["seedz=3"], "unknown run config field 'seedz'. Did you mean 'seeds'?"),
    (["games=[\"ipd\"]"], "games is the GAME argument"),
    (["sepo.lr=-1"], "lr: Input should be greater than 0 (got -1)"),
])
def test_run_bad_settings_are_one_line(tmp_path: Path, piped: list[RunConfig],
                                       settings: list[str], expected: str) -> None:
    args = [arg for item in settings for arg in ("--set", item)]
    assert expected in one_line_error(invoke("run", "kuhn", "--out", tmp_path / "r", *args))
    assert not piped


def test_run_started_with_a_config_file_continues_with_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run directory records the resolved config: the same file continues the run (the
    resume check compares configs); another value is refused as another run."""
    import sepo.pipeline as pipeline
    from sepo.pipeline import layout
    from sepo.pipeline import stages as pipeline_stages

    started: list[bool] = []

    def stages(config: RunConfig, record: RunConfig, *, start_over: bool,
               quiet: bool) -> Path:
        layout.record_run(config, record)
        started.append(start_over)
        return config.out

    monkeypatch.setattr(pipeline_stages, "_run_stages", stages)
    path = toml(tmp_path, "steps = 2\neval_episodes = 3\n[sepo]\nlr = 3e-5\n")
    out = tmp_path / "run"
    for _ in range(2):
        result = invoke("run", "kuhn", "--out", out, "--config", path, "--model", "tiny")
        assert result.exit_code == 0, result.output
    assert started == [False, False]
    saved = RunConfig.model_validate_json((out / pipeline.CONFIG_FILE).read_text())
    assert (saved.steps, saved.eval_episodes, saved.sepo) == (2, 3, {"lr": 3e-5})
    # The same settings as flags are the same run.
    assert invoke("run", "kuhn", "--out", out, "--steps", "2", "--eval-episodes", "3",
                  "--sepo", "lr=3e-5").exit_code == 0
    line = one_line_error(invoke("run", "kuhn", "--out", out, "--config", path,
                                 "--set", "sepo.lr=1e-4"))
    assert "a run with another config (sepo: {'lr': 3e-05} → {'lr': 0.0001})" in line
    assert started == [False, False, False]


# ------------------------------------------------------------------ help from the models
def _params(command: str) -> dict[str, Any]:
    click_app = typer.main.get_command(app)
    return {p.name: p for p in click_app.commands[command].params}  # type: ignore[attr-defined]


@pytest.mark.parametrize(("command", "param", "model", "field"), [
    ("train", "steps", SEPOConfig, "steps"),
    ("train", "credit", SEPOConfig, "credit"),
    ("train", "lora", SEPOConfig, "lora"),
    ("train", "lambda_exploit", Lambdas, "exploit"),
    ("sft", "learning_rate", SFTRunConfig, "learning_rate"),
    ("sft", "lora", SFTRunConfig, "finetune"),
    ("sft", "batch_size", SFTRunConfig, "batch_size"),
    ("run", "seeds", RunConfig, "seeds"),
    ("run", "train_eval_episodes", RunConfig, "train_eval_episodes"),
])
def test_named_flag_help_is_the_field_description(command: str, param: str,
                                                  model: type[BaseModel], field: str) -> None:
    description = model.model_fields[field].description
    assert description and _params(command)[param].help == escape(description)


def test_every_config_option_of_train_is_a_field_or_says_why() -> None:
    """`sepo train`'s options are SEPOConfig fields (collected by name), λ and budget flags
    (entries of the `lambdas` and `budgets` tables), or the few that are not settings."""
    not_fields = {"lambda_exploit", "lambda_collusion", "lambda_externality", "budget",
                  "config_file", "settings", "json_out", "no_progress"}
    assert set(_params("train")) - not_fields <= set(SEPOConfig.model_fields)


# ------------------------------------------------------------------ the helpers
def test_settings_merge_tables_key_by_key(tmp_path: Path) -> None:
    assert nested_setting("sepo.lambdas.exploit", 2, "--set") == {
        "sepo": {"lambdas": {"exploit": 2}}}
    file = {"sepo": {"lr": 1.0, "credit": "aux"}, "steps": 2}
    merged = merge_settings(file, {"sepo": {"lr": 2.0}}, {"steps": 3})
    assert merged == {"sepo": {"lr": 2.0, "credit": "aux"}, "steps": 3}
    assert file["sepo"]["lr"] == 1.0  # the layers are left as they were
    path = toml(tmp_path, "a = 1\n[t]\nb = 'x'\n")
    settings: Callable[..., dict[str, Any]] = read_settings
    assert settings(path, ["t.c=[1, 2]", "a=text"]) == {"a": "text", "t": {"b": "x",
                                                                         "c": [1, 2]}}
    with pytest.raises(SepoError, match="--set expects KEY=VALUE"):
        settings(None, [".a=1"])


def test_budget_flags_reach_the_budgets_table(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import sepo.train.run

    seen: list[SEPOConfig] = []
    monkeypatch.setattr(sepo.train.run, "train_run",
                        lambda config, progress: seen.append(config) or {})
    result = invoke("train", "ipd", "--model", "tiny", "--out", tmp_path / "r",
                    "--budget", "exploit=0.3", "--budget", "collusion=0.2",
                    "--set", "budget_lr=0.1", "--advantage", "batch")
    assert seen, result.output
    assert seen[0].budgets == {"exploit": 0.3, "collusion": 0.2}
    assert seen[0].budget_lr == 0.1 and seen[0].condition == "sepo-budget-batch-scale"
