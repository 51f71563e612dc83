"""docs/configuration.md is generated (`sepo.configref`) and must match the config models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sepo import configref


@pytest.fixture(scope="module")
def text() -> str:
    return configref.render()


def _section(text: str, name: str) -> str:
    """The body of the `## name` section."""
    head = f"\n## {name}\n"
    assert head in text, f"no section {name!r}"
    return text.split(head, 1)[1].split("\n## ", 1)[0]


def _row(text: str, section: str, first_cell: str) -> list[str]:
    """The cells of the table row of `section` whose first cell is `first_cell`."""
    for line in _section(text, section).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in {section}")


def test_doc_is_current(text: str) -> None:
    on_disk = configref.DOC_PATH.read_text(encoding="utf-8")
    assert on_disk == text, "docs/configuration.md is stale: run `make docs`"


def test_every_field_is_described(text: str) -> None:
    missing = [line.split(" | ")[0] for line in text.splitlines()
               if line.endswith("*(no description)* |")]
    assert not missing, f"add Field(description=...) to: {', '.join(missing)}"


def test_sections(text: str) -> None:
    for name in ("RunConfig", "TinyConfig", "SFTRunConfig", "SEPOConfig", "Lambdas",
                 "SamplingConfig", "Per-game defaults"):
        _section(text, name)
    assert "\n- [Per-game defaults](#per-game-defaults)\n" in text


def test_facts_worked_out_by_hand(text: str) -> None:
    # SEPOConfig.lr: Field(None, gt=0.0, le=MAX_LR = 1.0); `sepo train --lr`; not set by the
    # pipeline, so `sepo run` passes it through its `[sepo]` table.
    assert _row(text, "SEPOConfig", "`lr`") == [
        "`lr`", "`float \\| None`", "`None`", "> 0, ≤ 1",
        "`sepo train --lr`<br>`sepo run --set sepo.lr=VALUE`",
        "AdamW learning rate; default: the game's toml"]
    # A field without a named flag: `--set` on both commands.
    assert _row(text, "SEPOConfig", "`clip_eps`")[4] == (
        "`sepo train --set clip_eps=VALUE`<br>`sepo run --set sepo.clip_eps=VALUE`")
    # The pipeline sets each SEPO run's seed (first_seed + k) and refuses `--sepo seed=...`.
    assert _row(text, "SEPOConfig", "`seed`")[4] == "`sepo train --seed`<br>set by `sepo run`"
    # sepo run's in-training evaluation option is named apart from the field.
    assert _row(text, "SEPOConfig", "`eval_episodes`")[4] == (
        "`sepo train --eval-episodes`<br>`sepo run --train-eval-episodes`")
    assert _row(text, "SEPOConfig", "`credit`")[3] == "one of `per-pool`, `aux`, `constant`"
    # Lambdas: `sepo train --lambda-<field>`.
    assert _row(text, "Lambdas", "`exploit`")[3:5] == [
        "≥ 0, finite",
        "`sepo train --lambda-exploit`<br>`sepo run --set sepo.lambdas.exploit=VALUE`"]
    # SFT: `--lr` sets learning_rate (its parameter is named so); `--lora/--full` sets finetune.
    assert _row(text, "SFTRunConfig", "`learning_rate`")[4] == (
        "`sepo sft --lr`<br>`sepo run --set sft.learning_rate=VALUE`")
    assert _row(text, "SFTRunConfig", "`epochs`")[4] == (
        "`sepo sft --epochs`<br>`sepo run --sft-epochs`")
    assert _row(text, "SFTRunConfig", "`finetune`")[4] == (
        "`sepo sft --lora/--full`<br>`sepo run --set sft.finetune=VALUE`")
    # TinyConfig: `--set` for every field, `--pretrain-steps` for one.
    assert _row(text, "TinyConfig", "`hidden_size`")[4] == (
        "`sepo model build --set hidden_size=VALUE`")
    assert _row(text, "TinyConfig", "`pretrain_steps`")[4] == (
        "`sepo model build --pretrain-steps`")
    # Every field of the commands' configs is reachable from the command line: no named
    # option, then `--set`.
    assert _row(text, "RunConfig", "`n_boot`")[4] == "`sepo run --set n_boot=VALUE`"
    assert "No command-line option sets" not in _section(text, "RunConfig")
    assert "No command-line option sets" not in _section(text, "SEPOConfig")
    # SamplingConfig, read from the source: MAX_NEW_TOKENS (4096) filled into its bound.
    assert "from 1 to 4096" in _row(text, "SamplingConfig", "`max_new_tokens`")[3]
    assert _row(text, "SamplingConfig", "`seed`")[4] == (
        "`sepo eval --seed`<br>`sepo play --seed`")


def test_per_game_defaults_by_hand(text: str) -> None:
    # kuhn.toml: λ 1.5 / 0 / 0, β 0.2, lr 3e-6; [budget]: tiny's stage-2 rate 1e-4, 40 SFT
    # episodes, 2 epochs, 10 steps, every 5, 40 eval, no reasoning.
    # kuhn.toml [sepo] oracle_every = 1: the exact best response, rebuilt every step; per-round
    # advantages; exact credit in its expected form.
    assert _row(text, "Per-game defaults", "`kuhn`") == [
        "`kuhn`", "1.5", "0", "0", "0.2", "3e-06", "0.0001", "exact best response", "1",
        "per-round", "expected", "40", "2", "10", "5", "40", "False"]
    # ipd.toml λe 2.4; [budget] tiny_lr = 3e-5, 20 SEPO steps; a population oracle, K = 5.
    ipd = _row(text, "Per-game defaults", "`ipd`")
    assert (ipd[1], ipd[6], ipd[7], ipd[8], ipd[13]) == ("2.4", "3e-05", "population", "5",
                                                         "20")
    # negotiation.toml [sepo] normalize = "episode"; no exact credit (no tabular policy).
    assert _row(text, "Per-game defaults", "`negotiation`")[9:11] == ["episode", "off"]


def test_check_reports_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    text: str) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(text + "edited by hand\n", encoding="utf-8")
    assert configref.main(["--check", "--out", str(stale)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run `make docs`" in err
    assert configref.main(["--out", str(stale)]) == 0  # writes
    assert configref.main(["--check", "--out", str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == text


def test_render_imports_no_torch() -> None:
    # A fresh interpreter: this one may already hold torch from other tests.
    code = ("import sys; from sepo.configref import render; render(); "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
