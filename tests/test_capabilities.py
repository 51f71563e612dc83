"""A game's special powers are capabilities, never a test of its name (issue #27): which
built-in games have `ExactSolvable`, a stub game that declares it and gets every exact figure
without any code naming it, and a scan of the generic modules for name checks."""

from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import sepo.games as registry
from sepo.cli import app
from sepo.errors import SepoError
from sepo.evaluation import evaluate, read_tabular_policy
from sepo.games import ExactSolvable, capability, game_names, games_with, get_game
from sepo.games.base import AGENT, Action, Game, GameState, PolicyDecision, Strategy
from sepo.games.ipd import IPDGame
from sepo.report import game_metrics
from sepo.train.config import SEPOConfig

SRC = Path(__file__).resolve().parents[1] / "src" / "sepo"
#: A name check on Kuhn: `== "kuhn"`, `!= 'kuhn'`, `"kuhn" in`, `"kuhn" not in`, `"kuhn" ==`.
NAME_CHECK = re.compile(r"""[=!]=\s*["']kuhn["']|["']kuhn["']\s*(?:[=!]=|(?:not\s+)?in\b)""")


class StubBestResponse(Strategy):
    """Always defects: stands in for an exact best response."""

    name = "StubBestResponse"

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        return "DEFECT"


class ExactIPD(IPDGame, ExactSolvable):
    """IPD under another name with a made-up one-entry table, P(COOPERATE) in round 1, and a
    made-up exploitability: only the capability distinguishes it from IPD."""

    name = "exactipd"

    def policy_decisions(self) -> tuple[PolicyDecision, ...]:
        return (PolicyDecision("open", self.new_state(0), AGENT, "COOPERATE"),)

    def strategy_policy(self, strategy: Strategy) -> dict[str, float] | None:
        table = {"AlwaysCooperate": 1.0, "AlwaysDefect": 0.0}
        return {"open": table[strategy.name]} if strategy.name in table else None

    def exact_exploitability(self, policy: Any) -> float:
        return 0.5 * policy["open"]

    def best_response(self, policy: Any) -> Strategy:
        return StubBestResponse()

    def nash_policy(self) -> dict[str, float]:
        return {"open": 0.0}


@pytest.fixture()
def exact_ipd(monkeypatch: pytest.MonkeyPatch) -> ExactIPD:
    """The stub, with IPD's pools and defaults, registered under its name for this test."""
    game = ExactIPD()
    ipd = get_game("ipd")
    game.pools = copy.deepcopy(ipd.pools)
    game.demonstrators = dict(ipd.demonstrators)
    game.defaults = copy.deepcopy(ipd.defaults)
    monkeypatch.setitem(registry._GAMES, game.name, game)
    return game


def test_only_kuhn_among_the_builtin_games_is_exactly_solvable() -> None:
    have = {name: capability(get_game(name), ExactSolvable) is not None for name in game_names()}
    assert have == {name: name == "kuhn" for name in game_names()}
    assert games_with(ExactSolvable) == ["kuhn"]
    assert {name for name in game_names() if get_game(name).zero_sum} == {"kuhn"}
    kuhn = get_game("kuhn")
    assert capability(kuhn, ExactSolvable) is kuhn
    assert [d.key for d in kuhn.policy_decisions()] == list(kuhn.nash_policy())  # type: ignore[attr-defined]


def test_a_stub_game_with_the_capability_gets_exact_figures_in_evaluate(
        exact_ipd: ExactIPD) -> None:
    data = evaluate(exact_ipd, "AlwaysCooperate", episodes=2, n_boot=20).to_dict()
    assert data["exact_exploitability"] == 0.5
    assert data["ci95"]["exact_exploitability"] == [0.5, 0.5]
    assert data["per_opponent"]["StubBestResponse"]["pools"] == ["heldout"]
    # No readable table: the figure is null, not missing, and no best response is played.
    data = evaluate(exact_ipd, "TitForTat", episodes=2, n_boot=20).to_dict()
    assert data["exact_exploitability"] is None and "StubBestResponse" not in data["per_opponent"]
    # The same strategy in plain IPD: no capability, no exact figure at all.
    assert "exact_exploitability" not in evaluate("ipd", "AlwaysCooperate", episodes=2,
                                                  n_boot=20).to_dict()
    assert read_tabular_policy(get_game("ipd"), get_game("ipd").strategies["AlwaysDefect"]) is None
    assert read_tabular_policy(exact_ipd, exact_ipd.strategies["AlwaysDefect"]) == {"open": 0.0}


def test_a_stub_game_with_the_capability_gets_exact_figures_in_sepo_eval_json(
        exact_ipd: ExactIPD) -> None:
    result = CliRunner().invoke(app, ["eval", "exactipd", "--agent", "AlwaysCooperate",
                                      "--episodes", "2", "--n-boot", "20", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["game"] == "exactipd" and data["exact_exploitability"] == 0.5
    assert "StubBestResponse" in data["per_opponent"]


def test_the_capability_drives_the_report_columns_and_the_best_response_option(
        exact_ipd: ExactIPD) -> None:
    keys = [m.key for m in game_metrics("exactipd")]
    assert "exact_exploitability" in keys and "collusion" in keys  # exact, not zero-sum
    assert "exact_exploitability" not in [m.key for m in game_metrics("ipd")]
    assert "collusion" not in [m.key for m in game_metrics("kuhn")]
    assert "exact_exploitability" not in [m.key for m in game_metrics("not-installed")]
    SEPOConfig(game="exactipd", model="x", out="unused", exploit_best_response=True)
    with pytest.raises(SepoError, match="computes for kuhn only, not ipd"):
        SEPOConfig(game="ipd", model="x", out="unused", exploit_best_response=True)


def test_the_lm_agent_reads_any_exactly_solvable_games_table(
        exact_ipd: ExactIPD, tiny_lm: tuple[Any, Any]) -> None:
    from sepo.agents import LMAgent, SamplingConfig

    model, tokenizer = tiny_lm
    agent = LMAgent(model, tokenizer, SamplingConfig(temperature=1.0))
    policy = agent.tabular_policy(exact_ipd)
    assert list(policy) == ["open"] and 0.0 <= policy["open"] <= 1.0
    with pytest.raises(SepoError, match="not ExactSolvable"):
        agent.tabular_policy(get_game("ipd"))


def test_no_generic_module_checks_for_kuhn_by_name() -> None:
    """Outside the games package and the solver's import path, Kuhn's powers are reached
    through its capability only."""
    exempt = {SRC / "kuhn_exact.py"}
    offenders = [
        f"{path.relative_to(SRC)}:{n}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        if SRC / "games" not in path.parents and path not in exempt
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if NAME_CHECK.search(line)
    ]
    assert offenders == []
    assert NAME_CHECK.search('if game == "kuhn":') and NAME_CHECK.search("'kuhn' in games")
