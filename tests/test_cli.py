"""The `sepo` command line: games, eval, play, and the one-line error handler."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from collections.abc import Sequence
from typing import Any

import pytest
from typer.testing import CliRunner

from sepo.cli import app
from sepo.engine import Decision, DecisionRequest

runner = CliRunner()


def invoke(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input)


def test_games_json_lists_ipd() -> None:
    result = invoke("games", "--json")
    assert result.exit_code == 0, result.output
    games = {g["name"]: g for g in json.loads(result.stdout)}
    ipd = games["ipd"]
    assert ipd["rounds"] == 8 and ipd["max_payoff"] == 3
    assert ipd["actions"] == "COOPERATE | DEFECT"
    assert ipd["pools"]["collusive"] == ["AlwaysCooperate"]
    assert "TitForTat" in ipd["strategies"]
    assert set(games) == {"ipd", "auction", "negotiation", "bargaining", "kuhn"}
    assert "CALL | FOLD" in games["kuhn"]["actions"]


def test_games_table() -> None:
    result = invoke("games")
    assert result.exit_code == 0
    assert "ipd" in result.stdout and "COOPERATE" in result.stdout


def test_eval_json_has_every_spec_key() -> None:
    result = invoke("eval", "ipd", "--agent", "TitForTat", "--episodes", "20", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("game", "agent", "episodes", "pay_per_round", "exploit", "collusion",
                "externality", "safety", "nra", "robust", "exploit_heldout",
                "parse_failure_rate", "per_opponent", "ci95"):
        assert key in data
    assert data["exploit"] == 0.3125
    assert data["episodes"] == 20 and data["agent"] == "TitForTat"
    assert set(data["ci95"]) >= {"pay_per_round", "safety", "nra"}


def test_eval_sft_mixture_is_the_demonstrator_mixture() -> None:
    """`--agent sft-mixture` evaluates the game's SFT demonstrator mixture: the same report as
    evaluating `DemonstratorMixture` directly; without an agent the error names the option."""
    from sepo.evaluation import evaluate
    from sepo.games import get_game
    from sepo.sft.data import DemonstratorMixture

    result = invoke("eval", "kuhn", "--agent", "sft-mixture", "--episodes", "10", "--seed",
                    "7", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    game = get_game("kuhn")
    direct = evaluate(game, DemonstratorMixture(game), episodes=10, seed=7).to_dict()
    assert data["agent"] == "DemonstratorMixture"
    for key in ("pay_per_round", "exploit", "safety", "per_opponent"):
        assert data[key] == direct[key]
    bad = invoke("eval", "kuhn")
    assert bad.exit_code != 0 and "sft-mixture" in bad.output


def test_eval_table_reports_values_with_intervals() -> None:
    result = invoke("eval", "ipd", "--agent", "AlwaysDefect", "--episodes", "5",
                    "--n-boot", "50")
    assert result.exit_code == 0, result.output
    assert "collusion" in result.stdout
    assert "1.000 [1.000, 1.000]" in result.stdout  # AlwaysDefect always preys on a cooperator


@pytest.mark.parametrize(("args", "message"), [
    (("eval", "chess", "--agent", "TitForTat"),
     "unknown game 'chess'. Choices: auction, bargaining, ipd, kuhn, negotiation"),
    (("eval", "ipd", "--agent", "TitForTwoTat"),
     "unknown ipd strategy 'TitForTwoTat'. Did you mean 'TitForTwoTats'?"),
    (("play", "chess"), "unknown game 'chess'"),
    (("play", "ipd", "--opponent", "Nobody"), "Choices: AlternatingDefect, AlwaysCooperate"),
    (("eval", "ipd"), "give exactly one of --agent STRATEGY or --model"),
    (("eval", "ipd", "--agent", "TitForTat", "--model", "tiny"), "give exactly one of"),
])
def test_user_errors_are_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_play_ipd_against_always_defect() -> None:
    # One unreadable answer (re-asked), one that only mentions an action mid-word, then 8 moves.
    answers = "maybe\nuncooperative\n" + "I will DEFECT\n" * 7 + "cooperate\n"
    result = invoke("play", "ipd", "--opponent", "AlwaysDefect", "--seed", "3", input=answers)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.count("Legal actions: COOPERATE, DEFECT.") >= 2  # the two re-asks (+ prompts)
    assert "No legal action found in 'maybe'" in out
    assert "No legal action found in 'uncooperative'" in out
    assert "You are playing an iterated prisoner's dilemma" in out  # the rules, once
    assert out.count("You are playing an iterated") == 1
    assert [ln for ln in out.splitlines() if ln.startswith("Round ") and "->" in ln][-1] == \
        "Round 8: you COOPERATE, AlwaysDefect DEFECT -> you 0, AlwaysDefect 5"
    assert "Final score: you 7, AlwaysDefect 12 over 8 rounds." in out


def test_play_end_of_input_quits_cleanly() -> None:
    result = invoke("play", "ipd", "--seed", "1", input="COOPERATE\nDEFECT\n")
    assert result.exit_code == 0
    assert "Round 2:" in result.stdout and "Game abandoned." in result.stdout
    assert "Final score" not in result.stdout


def test_play_kuhn_hands_resolve() -> None:
    # Always take the aggressive move; a bet faced is called.
    result = invoke("play", "kuhn", "--opponent", "AlwaysBet", "--seed", "2",
                    input="BET\nCALL\n" * 12)
    assert result.exit_code == 0, result.output
    assert "Final score" in result.stdout and "over 6 rounds" in result.stdout


def test_play_negotiation_reads_numbers() -> None:
    # "demand 12" names no legal demand (1..9): re-asked; then an even split each round.
    result = invoke("play", "negotiation", "--opponent", "Fair", "--seed", "0",
                    input="demand 12\n" + "5\n" * 4)
    assert result.exit_code == 0, result.output
    assert "No legal action found in 'demand 12'" in result.stdout
    assert "Final score: you 20, Fair 20 over 4 rounds." in result.stdout


class FixedAgent:
    name = "fake-model"

    def decide(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
        return [Decision("DEFECT", text="DEFECT") for _ in requests]


def test_eval_model_is_wired_to_load_lm_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def load_lm_agent(model: str, **kwargs: Any) -> FixedAgent:
        calls.append((model, kwargs))
        return FixedAgent()

    fake = types.ModuleType("sepo.agents")
    fake.load_lm_agent = load_lm_agent  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sepo.agents", fake)
    result = invoke("eval", "ipd", "--model", "tiny", "--episodes", "2", "--temperature", "0.5",
                    "--no-reasoning", "--seed", "4", "--json")
    assert result.exit_code == 0, result.output
    # Options not given are left to the agent's own defaults.
    assert calls == [("tiny", {"temperature": 0.5, "reasoning": False, "seed": 4})]
    data = json.loads(result.stdout)
    assert data["agent"] == "fake-model" and data["collusion"] == 1.0


def test_help_and_python_dash_m() -> None:
    for command in ("games", "eval", "play"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "Usage" in result.output
    done = subprocess.run([sys.executable, "-m", "sepo", "games", "--json"],
                          capture_output=True, text=True, check=True)
    assert "ipd" in {g["name"] for g in json.loads(done.stdout)}
