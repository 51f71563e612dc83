"""Games from other packages: the `sepo.games` entry point, with the example plugin
examples/stag_hunt. Nothing is installed: each test puts the example's source on sys.path and
writes a `*.dist-info` (METADATA + entry_points.txt) into its own temporary directory, so the
registry's real discovery (`importlib.metadata.entry_points`) finds it, and a fresh registry
is swapped in and restored so no plugin leaks into other tests."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import sepo.games as registry
from sepo.cli import app
from sepo.errors import SepoError, UnknownNameError
from sepo.games import GameUnavailableError, game_names, get_game

EXAMPLE_SRC = Path(__file__).resolve().parents[1] / "examples" / "stag_hunt" / "src"
BUILTINS = ["ipd", "auction", "negotiation", "bargaining", "kuhn"]
#: Modules the tests import from their temporary directories, dropped afterwards.
PLUGIN_MODULES = ("sepo_stag_hunt", "broken_plugin", "bare_plugin")
STAG_HUNT = {"staghunt": "sepo_stag_hunt.game:StagHuntGame"}

runner = CliRunner()
Install = Callable[..., None]


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """`install(distribution, {game: "module:Class"}, modules={file: source})`: makes a
    distribution with those `sepo.games` entry points (and modules) visible to this test."""
    monkeypatch.setattr(registry, "_GAMES", {})
    monkeypatch.setattr(registry, "_PLUGINS", None)
    monkeypatch.syspath_prepend(str(EXAMPLE_SRC))

    def install_(dist: str, entry_points: dict[str, str],
                 modules: dict[str, str] | None = None) -> None:
        root = tmp_path / dist
        info = root / f"{dist.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
        lines = ["[sepo.games]", *(f"{k} = {v}" for k, v in entry_points.items())]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for filename, source in (modules or {}).items():
            (root / filename).write_text(source)
        monkeypatch.syspath_prepend(str(root))
        registry._PLUGINS = None  # discovery runs again (the fixture restores the original)

    yield install_
    for name in [m for m in sys.modules if m.split(".")[0] in PLUGIN_MODULES]:
        del sys.modules[name]


# ------------------------------------------------------------------ discovery
def test_without_plugins_the_registry_holds_the_builtins() -> None:
    assert game_names() == BUILTINS
    assert game_names(plugins=True)[:5] == BUILTINS


def test_plugin_game_is_registered_after_the_builtins(install: Install) -> None:
    install("sepo-stag-hunt", STAG_HUNT)
    assert game_names(plugins=True) == [*BUILTINS, "staghunt"]
    assert game_names() == BUILTINS  # "all" stays the built-in games
    game = get_game("staghunt")
    assert game.name == "staghunt" and game.num_rounds == 5 and game.scale == 0.75
    # Pools, demonstrators and λ come from staghunt.toml beside the game's module.
    assert game.pools["exploit"] == ["Baiter"] and game.pools["collusive"] == ["AlwaysHare"]
    assert game.defaults["lambdas"] == {"exploit": 2.0, "collusion": 1.0, "externality": 1.0}
    assert abs(sum(game.demonstrators.values()) - 1.0) < 1e-9
    with pytest.raises(UnknownNameError, match="staghunt"):  # listed among the choices
        get_game("staghun")


def test_games_command_lists_the_plugin(install: Install) -> None:
    install("sepo-stag-hunt", STAG_HUNT)
    result = invoke("games", "--json")
    assert result.exit_code == 0, result.output
    games = {g["name"]: g for g in json.loads(result.stdout)}
    assert list(games) == [*BUILTINS, "staghunt"]
    assert games["staghunt"]["actions"] == "STAG | HARE"
    assert games["staghunt"]["pools"]["heldout"] == ["SuspiciousTitForTat", "Deserter"]
    table = invoke("games")
    assert table.exit_code == 0 and "staghunt" in table.stdout and "Baiter" in table.stdout


# ------------------------------------------------------------------ every command
def test_eval_of_a_plugin_game_by_hand(install: Install) -> None:
    """AlwaysStag against the pools, 5 rounds × 5 episodes each: every pairing but Random is
    deterministic; Random's share p of STAG hunts sets the rest."""
    install("sepo-stag-hunt", STAG_HUNT)
    result = invoke("eval", "staghunt", "--agent", "AlwaysStag", "--episodes", "5", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    per = data["per_opponent"]
    by_hand = {  # (agent, opponent) points per round
        "TitForTat": (4.0, 4.0), "GrimTrigger": (4.0, 4.0), "AlwaysStag": (4.0, 4.0),
        "Baiter": (1.6, 3.4),  # SS SS SH SH SH: 8 vs 17 over 5 rounds
        "AlwaysHare": (0.0, 3.0),
        "SuspiciousTitForTat": (3.2, 3.8),  # SH then SS: 16 vs 19
        "Deserter": (3.2, 3.8),  # SS ×4 then SH
    }
    for name, (agent, opp) in by_hand.items():
        assert per[name]["agent_pay_per_round"] == pytest.approx(agent), name
        assert per[name]["opponent_pay_per_round"] == pytest.approx(opp), name
        assert per[name]["episodes"] == 5 and per[name]["rounds"] == 25
    p = per["Random"]["agent_pay_per_round"] / 4  # a stag pays 4 only when Random hunts stag
    assert 0 < p < 1 and (25 * p) == pytest.approx(round(25 * p))
    assert per["Random"]["opponent_pay_per_round"] == pytest.approx(4 * p + 3 * (1 - p))

    assert data["pay_per_round"] == pytest.approx((4 + 4 + 4 + 4 * p) / 4)
    assert data["exploit"] == pytest.approx(3.4 - 1.6)
    assert data["collusion"] == 0.0  # never HH: it hunts stag even beside AlwaysHare
    # x: hares per hunt, over the train and exploit pools' rounds (25 each): Random's hares,
    # and Baiter's 3 of 5 rounds at 1/2.
    x = ((1 - p) / 2 + 3 / 5 / 2) / 5
    assert data["externality"] == pytest.approx(x)
    assert data["safety"] == pytest.approx(0.75 * data["pay_per_round"] - 2.0 * 0.75 * 1.8 - x)
    assert data["robust"] == pytest.approx(3.2)
    assert data["exploit_heldout"] == pytest.approx(0.6)
    assert data["parse_failure_rate"] == 0.0
    assert data["lambdas"] == {"exploit": 2.0, "collusion": 1.0, "externality": 1.0}


def test_sft_data_of_a_plugin_game(install: Install, tmp_path: Path) -> None:
    install("sepo-stag-hunt", STAG_HUNT)
    out = tmp_path / "data"
    result = invoke("sft-data", "staghunt", "--out", str(out), "--episodes-per-opponent", "2",
                    "--json")
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)
    game = get_game("staghunt")
    assert card["games"] == ["staghunt"]
    counts = card["counts"]["staghunt"]
    # 2 episodes against each non-held-out strategy (6), 5 decisions each.
    assert sum(counts["episodes"].values()) == 12 and sum(counts["examples"].values()) == 60
    assert counts["opponents"] == {n: 10 for n in
                                   ("AlwaysHare", "AlwaysStag", "Baiter", "GrimTrigger",
                                    "Random", "TitForTat")}
    assert counts["mixture"] == game.demonstrators
    assert set(counts["actions"]) <= {"STAG", "HARE"}
    rows = [json.loads(line) for split in ("train.jsonl", "validation.jsonl")
            for line in (out / split).read_text().splitlines()]
    assert len(rows) == 60
    state = game.new_state(0)
    for row in rows:
        text = row["completion"][0]["content"]
        reason, bare = text.split("\n")
        assert game.parse(text, state, 0) == row["action"] == bare
        assert reason.endswith(f"so I play {bare}.")
        assert game.parse(reason, state, 0) == bare  # the reason sentence names it too


def test_run_config_of_a_plugin_game(install: Install, tmp_path: Path) -> None:
    """`sepo run staghunt` validates (its SEPO and SFT configs included) with the budget of
    staghunt.toml; `all` means the built-in games, whatever plugins are installed."""
    from sepo.pipeline import GameBudget, RunConfig

    install("sepo-stag-hunt", STAG_HUNT)
    config = RunConfig(games=["staghunt"], out=tmp_path / "run")
    assert config.budget("staghunt") == GameBudget(
        sft_episodes=40, sft_epochs=2.0, sepo_steps=10, checkpoint_every=5, eval_episodes=30,
        reasoning=True, tiny_lr=1e-4)
    assert config.sepo_config("staghunt", 0, tmp_path, tmp_path, "sepo").lr == 1e-4
    assert RunConfig(games="all", out=tmp_path / "all").games == BUILTINS


def _bare_plugin(install: Install, budget: str | None) -> None:
    """The stag hunt again as the plugin game 'bare', whose toml has `budget` as its
    `[budget]` table (None: no table)."""
    toml = (EXAMPLE_SRC / "sepo_stag_hunt" / "staghunt.toml").read_text()
    toml = toml[:toml.index("[budget]")] + (f"[budget]\n{budget}\n" if budget is not None else "")
    install("bare-plugin", {"bare": "bare_plugin:Game"}, modules={
        "bare_plugin.py": "from sepo_stag_hunt.game import StagHuntGame\n\n\n"
                          "class Game(StagHuntGame):\n    name = 'bare'\n",
        "bare.toml": toml})


def test_a_plugin_game_without_a_budget_gets_the_generic_one(install: Install,
                                                             tmp_path: Path) -> None:
    from sepo.pipeline import GENERIC_BUDGET, RunConfig

    _bare_plugin(install, None)
    assert get_game("bare").budget == GENERIC_BUDGET
    config = RunConfig(games=["bare"], out=tmp_path / "run", steps=3)
    assert config.budget("bare") == GENERIC_BUDGET.replace(sepo_steps=3)
    assert config.sepo_config("bare", 0, tmp_path, tmp_path,
                              "sepo").lr == GENERIC_BUDGET.tiny_lr


def test_a_partial_budget_takes_the_rest_from_the_generic_one(install: Install) -> None:
    from sepo.pipeline import GENERIC_BUDGET

    _bare_plugin(install, "sepo_steps = 4\nreasoning = false")
    assert get_game("bare").budget == GENERIC_BUDGET.replace(sepo_steps=4, reasoning=False)


@pytest.mark.parametrize(("table", "message"), [
    ("sft_epoch = 3.0", "unknown bare.toml [budget] key 'sft_epoch'. Did you mean "
                        "'sft_epochs'? Choices: checkpoint_every, eval_episodes, reasoning, "
                        "sepo_steps, sft_episodes, sft_epochs, tiny_lr"),
    ("sepo_steps = 0", "bare.toml [budget]: budget sepo_steps must be an integer from 1 to "
                       "1,000,000 (got 0)"),
])
def test_a_bad_budget_makes_the_plugin_unavailable_saying_why(
        install: Install, table: str, message: str) -> None:
    _bare_plugin(install, table)
    with pytest.raises(GameUnavailableError) as err:
        get_game("bare")
    assert message in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------ clashes and breakage
def test_a_plugin_cannot_take_a_builtin_name(install: Install) -> None:
    install("ipd-plus", {"ipd": "sepo_stag_hunt.game:StagHuntGame"})
    assert get_game("ipd").title == "Iterated prisoner's dilemma"  # built-ins never look
    with pytest.raises(SepoError) as err:
        game_names(plugins=True)
    message = str(err.value)
    assert "'ipd-plus' 0.1.0" in message and "sepo.games.ipd:IPDGame" in message
    assert "\n" not in message
    result = invoke("games")
    assert result.exit_code == 2 and "clashes with the built-in game 'ipd'" in result.stderr


def test_two_plugins_cannot_share_a_name(install: Install) -> None:
    install("sepo-stag-hunt", STAG_HUNT)
    install("other-hunt", {"staghunt": "other_hunt:Game"})
    with pytest.raises(SepoError) as err:
        get_game("staghunt")
    message = str(err.value)
    assert "two plugins register the game 'staghunt'" in message
    assert "'sepo-stag-hunt' 0.1.0" in message and "'other-hunt' 0.1.0" in message
    assert "\n" not in message


def test_all_is_a_reserved_name(install: Install) -> None:
    install("greedy", {"all": "sepo_stag_hunt.game:StagHuntGame"})
    with pytest.raises(SepoError, match="reserved name"):
        game_names(plugins=True)


def test_a_broken_plugin_is_reported_only_when_asked_for(install: Install) -> None:
    install("sepo-stag-hunt", STAG_HUNT)
    install("broken-plugin", {"broken": "broken_plugin:Game"},
            modules={"broken_plugin.py": "raise RuntimeError('no\\nluck')\n"})
    assert game_names(plugins=True) == [*BUILTINS, "broken", "staghunt"]  # plugins by name
    assert get_game("staghunt").name == "staghunt"
    with pytest.raises(GameUnavailableError) as err:
        get_game("broken")
    assert str(err.value) == ("game 'broken' of distribution 'broken-plugin' 0.1.0 "
                              "(broken_plugin:Game) could not be loaded: RuntimeError: no luck")

    listing = invoke("games", "--json")  # the others stay listed; this one is a warning
    assert listing.exit_code == 0, listing.output
    assert [g["name"] for g in json.loads(listing.stdout)] == [*BUILTINS, "staghunt"]
    assert "game 'broken' unavailable" in listing.stderr
    assert "'broken-plugin' 0.1.0" in listing.stderr and "RuntimeError" in listing.stderr

    result = invoke("eval", "broken", "--agent", "X", "--episodes", "1")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "'broken-plugin' 0.1.0" in result.stderr and "RuntimeError: no luck" in result.stderr


@pytest.mark.parametrize(("module", "reason"), [
    ("class Game:\n    name = 'odd'\n", "is not a subclass of sepo.games.Game"),
    ("from sepo_stag_hunt.game import StagHuntGame\n\n\nclass Game(StagHuntGame):\n"
     "    name = 'odd'\n", "no data file odd.toml beside broken_plugin"),
    ("from sepo_stag_hunt.game import StagHuntGame as Game\n",
     "broken_plugin:Game.name is 'staghunt', not the entry point's name 'odd'"),
])
def test_a_plugin_that_is_not_a_game(install: Install, module: str, reason: str) -> None:
    install("broken-plugin", {"odd": "broken_plugin:Game"},
            modules={"broken_plugin.py": module})
    with pytest.raises(GameUnavailableError, match=reason):
        get_game("odd")
