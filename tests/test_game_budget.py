"""The stage budgets of `sepo run`, read from each game's `[budget]` table (`<game>.toml`).

The expected table below is a regression guard: every built-in game's budget as it was when it
moved from `sepo.pipeline` into the tomls (research/2026-12-07-stage-budgets-history.md). A
change to a budget changes every run of that game; make it on purpose, here and in the toml."""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any

import pytest

from sepo.errors import SepoError, UnknownNameError
from sepo.games import GENERIC_BUDGET, GameBudget, game_names, get_game

#: game -> (sft_episodes, sft_epochs, sepo_steps, checkpoint_every, eval_episodes, reasoning,
#: tiny_lr).
EXPECTED: dict[str, tuple[int, float, int, int, int, bool, float]] = {
    "ipd": (40, 2.0, 20, 5, 30, True, 3e-5),
    "auction": (40, 2.0, 10, 5, 30, True, 1e-4),
    "negotiation": (40, 2.0, 10, 5, 30, True, 1e-4),
    "bargaining": (120, 5.0, 20, 5, 30, True, 3e-5),
    "kuhn": (40, 2.0, 10, 5, 40, False, 1e-4),
}
GENERIC = (40, 2.0, 10, 5, 30, True, 1e-4)


def _values(budget: GameBudget) -> tuple[Any, ...]:
    return tuple(budget.as_dict()[k] for k in GameBudget.table_keys())


def test_every_builtin_budget_is_unchanged() -> None:
    assert sorted(EXPECTED) == sorted(game_names())
    for name, expected in EXPECTED.items():
        budget = get_game(name).budget
        assert _values(budget) == expected, name
        # Exact types too: a float epoch count, a bool, ints.
        assert [type(v) for v in _values(budget)] == [int, float, int, int, int, bool, float]


def test_the_generic_budget_is_unchanged() -> None:
    assert _values(GENERIC_BUDGET) == GENERIC


def test_every_builtin_toml_writes_its_whole_budget_out() -> None:
    """A built-in game never relies on the generic fill-in: its budget is all in its toml."""
    for name in game_names():
        data = tomllib.loads(resources.files("sepo.games").joinpath(f"{name}.toml").read_text(
            encoding="utf-8"))
        assert tuple(data["budget"]) == GameBudget.table_keys(), name
        assert "budget" not in get_game(name).defaults  # the budget is not a stage-2 default


def test_a_table_overrides_the_generic_budget_key_by_key() -> None:
    budget = GameBudget.from_table({"sepo_steps": 3, "sft_epochs": 1}, "x.toml")
    assert budget == GENERIC_BUDGET.replace(sepo_steps=3, sft_epochs=1.0)
    assert isinstance(budget.sft_epochs, float)  # a toml `1` is 1.0
    assert GameBudget.from_table({}, "x.toml") == GENERIC_BUDGET


def test_an_unknown_key_is_refused_naming_it_and_the_choices() -> None:
    with pytest.raises(UnknownNameError) as err:
        GameBudget.from_table({"sepo_step": 3}, "x.toml")
    assert str(err.value) == (
        "unknown x.toml [budget] key 'sepo_step'. Did you mean 'sepo_steps'? Choices: "
        "checkpoint_every, eval_episodes, reasoning, sepo_steps, sft_episodes, sft_epochs, "
        "tiny_lr")


@pytest.mark.parametrize(("table", "message"), [
    ({"sft_episodes": 0}, "x.toml [budget]: budget sft_episodes must be an integer from 1 to "
                          "10,000 (got 0)"),
    ({"eval_episodes": 2.5}, "budget eval_episodes must be an integer"),
    ({"checkpoint_every": True}, "budget checkpoint_every must be an integer"),
    ({"sft_epochs": 0.0}, "budget sft_epochs must be a number > 0 and ≤ 1000 (got 0.0)"),
    ({"sft_epochs": float("inf")}, "budget sft_epochs must be a number"),
    ({"tiny_lr": "1e-4"}, "budget tiny_lr must be a number > 0 and ≤ 1 (got '1e-4')"),
    ({"reasoning": "yes"}, "budget reasoning must be true or false (got 'yes')"),
])
def test_a_bad_value_is_refused_naming_the_file_and_the_key(table: dict[str, Any],
                                                             message: str) -> None:
    with pytest.raises(SepoError) as err:
        GameBudget.from_table(table, "x.toml")
    assert message in str(err.value) and str(err.value).startswith("x.toml [budget]: ")


def test_budgets_are_frozen() -> None:
    with pytest.raises(AttributeError):
        GENERIC_BUDGET.sepo_steps = 1  # type: ignore[misc]
