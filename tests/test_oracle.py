"""The best-response oracle (docs/method.md §5.7): rankings worked out by hand, Kuhn's signed
exploit reward, the candidate libraries' disjointness from the held-out pools, when it
refreshes, determinism, and its state across a checkpoint."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sepo.engine import EpisodeRecord, StrategyPlayer, play
from sepo.errors import SepoError
from sepo.games import (
    candidate_exploiters,
    game_names,
    get_game,
    has_exploiter_library,
    optional_exploiters,
)
from sepo.games.base import Game, GameState, Round, Strategy
from sepo.train import checkpoint as ckpt
from sepo.train import sepo as trainer
from sepo.train.config import SEPOConfig, load_config
from sepo.train.oracle import (
    Collective,
    ExactOracle,
    PopulationOracle,
    Refresh,
    build_oracle,
    slot_opponents,
)


def ipd_strategy(name: str) -> Strategy:
    ipd = get_game("ipd")
    return {**ipd.strategies, **ipd.exploiter_families()}[name]


# ------------------------------------------------------------------ ranking
#: Against an agent that always cooperates (8 rounds; CC pays 3/3, DC 5 to the defector):
#: the candidate's mean payoff per round minus the agent's, worked out by hand.
COOPERATOR_GAPS = {
    "AlwaysDefect": 5.0,  # 0 vs 40 over 8 rounds
    "DefectEvery(3)": 1.875,  # D in rounds 1, 4, 7: agent 15/8, candidate 30/8
    "DefectFrom(6)": 1.25,  # D in rounds 7, 8: agent 18/8, candidate 28/8
    "TitForTatUntil(7)": 0.625,  # D in round 8: agent 21/8, candidate 26/8
    "TitForTat": 0.0,
}


def test_population_oracle_ranks_by_gap_and_picks_the_top_m() -> None:
    ipd = get_game("ipd")
    library = {name: ipd_strategy(name) for name in
               ("TitForTat", "DefectFrom(6)", "TitForTatUntil(7)", "AlwaysDefect",
                "DefectEvery(3)")}
    oracle = PopulationOracle(ipd, library, top=2, episodes=3)
    refresh = oracle.refresh(StrategyPlayer(ipd.strategies["AlwaysCooperate"]), step=4, seed=9)
    assert [r.name for r in refresh.ranking] == list(COOPERATOR_GAPS)
    for r in refresh.ranking:
        assert r.gap == pytest.approx(COOPERATOR_GAPS[r.name]) and r.episodes == 3
    assert refresh.chosen == ["AlwaysDefect", "DefectEvery(3)"]
    assert refresh.top_gap == 5.0 and refresh.chosen_gap == pytest.approx((5 + 1.875) / 2)
    assert [s.name for s in oracle.exploiters(refresh)] == refresh.chosen
    # Gaps are clipped at 0; the unclipped difference orders the candidates the agent beats:
    # against an agent that always defects, TitForTat loses round 1 only, AlwaysCooperate all.
    coop = {"TitForTat": ipd.strategies["TitForTat"],
            "AlwaysCooperate": ipd.strategies["AlwaysCooperate"]}
    against_defector = PopulationOracle(ipd, coop, top=1, episodes=1).refresh(
        StrategyPlayer(ipd.strategies["AlwaysDefect"]), step=1, seed=0)
    assert [(r.name, r.gap, r.diff) for r in against_defector.ranking] == [
        ("TitForTat", 0.0, -5 / 8), ("AlwaysCooperate", 0.0, -5.0)]


def test_the_trainers_oracle_skips_the_fixed_exploit_pool_and_the_held_out_pool() -> None:
    ipd = get_game("ipd")
    oracle = build_oracle(ipd, top=2, episodes=1)
    assert isinstance(oracle, PopulationOracle)
    named = set(oracle.library) & set(ipd.strategies)
    assert named == set(ipd.oracle_candidates) - set(ipd.pools["exploit"])
    assert not set(oracle.library) & set(ipd.pools["heldout"] + ipd.pools["exploit"])
    assert isinstance(build_oracle(get_game("kuhn"), top=2, episodes=1), ExactOracle)


def test_processes_that_split_the_candidates_choose_what_one_process_chooses() -> None:
    """Two ranks (threads) each play half of the candidates; every rank ranks the gathered
    results, so all choose the same exploiters, the single process's."""
    ipd = get_game("ipd")
    library = candidate_exploiters(ipd, optional=False)
    agent = StrategyPlayer(ipd.strategies["GenerousTitForTat"])  # stochastic: seeds matter
    single = PopulationOracle(ipd, library, top=3, episodes=2).refresh(agent, 2, seed=11)

    barrier = threading.Barrier(2)
    shared: list[Any] = [None, None]
    results: list[Refresh | None] = [None, None]

    def rank(r: int) -> None:
        def all_gather(x: Any) -> list[Any]:
            shared[r] = x
            barrier.wait()
            return list(shared)

        results[r] = PopulationOracle(ipd, library, top=3, episodes=2).refresh(
            agent, 2, seed=11, collective=Collective(r, 2, all_gather))

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0] == results[1] == single


def test_a_refresh_is_a_function_of_its_seed() -> None:
    ipd = get_game("ipd")
    library = candidate_exploiters(ipd, optional=False)
    agent = StrategyPlayer(ipd.strategies["Mixed"])  # draws from the episode's seat stream
    oracle = PopulationOracle(ipd, library, top=2, episodes=2)
    first = oracle.refresh(agent, 3, seed=5)
    assert oracle.refresh(agent, 3, seed=5) == first
    assert oracle.refresh(agent, 3, seed=6).ranking != first.ranking


# ------------------------------------------------------------------ Kuhn: signed exploit reward
def kuhn_record(payoffs: list[tuple[float, float]], signed: bool) -> EpisodeRecord:
    tags = {"pool": "exploit", "group": 0, "rollout": 0, **({"gap": "signed"} if signed else {})}
    return EpisodeRecord("kuhn", "a", "BestResponse", 1,
                         [Round((("BET",), ("CALL",)), p) for p in payoffs], tags=tags)


def test_kuhn_best_response_exploit_reward_is_the_signed_payoff_gap() -> None:
    kuhn = get_game("kuhn")
    config = SEPOConfig(game="kuhn", model="x", out="unused")
    lam_e, s = 1.5, 1.5  # Kuhn's λe and scale 3 / max_payoff 2; λx = 0
    # The agent wins: ū_π = 0.5, ū_o = -0.5, so −λe·s·(ū_o − ū_π) = +2.25 per round.
    won = [(2.0, -2.0), (-1.0, 1.0)]
    lost = [(-2.0, 2.0), (1.0, -1.0)]  # ū_o − ū_π = 1
    rewards = trainer.compute_rewards(
        kuhn, [kuhn_record(won, True), kuhn_record(lost, True), kuhn_record(won, False)],
        config).per_round
    np.testing.assert_allclose(rewards[0], [lam_e * s * 1.0] * 2)
    np.testing.assert_allclose(rewards[1], [-lam_e * s * 1.0] * 2)
    np.testing.assert_allclose(rewards[2], [0.0, 0.0])  # a fixed exploiter: the clipped gap
    # By default Kuhn's oracle is the exact best response, and its groups are signed.
    assert config.oracle and config.oracle_every == 1
    oracle = build_oracle(kuhn, top=config.oracle_top, episodes=config.oracle_episodes)
    assert isinstance(oracle, ExactOracle) and oracle.signed_gap
    groups = trainer.rollout_groups(kuhn, "per-pool", oracle_groups=2, oracle_signed=True)
    assert groups[:-2] == trainer.rollout_groups(kuhn, "per-pool")
    episodes = trainer.rollout_episodes(kuhn, "agent", groups, config, step=2,  # type: ignore[arg-type]
                                        adaptive=slot_opponents(
                                            [kuhn_best_response(kuhn)],
                                            [g.opponent for g in groups[-2:]]))
    extra = [e for e in episodes if e.tags["group"] >= len(groups) - 2]
    assert len(extra) == 2 * config.group_size
    assert all(e.tags == {**e.tags, "oracle": True, "gap": "signed", "pool": "exploit"}
               for e in extra)
    assert all("oracle" not in e.tags and "gap" not in e.tags for e in episodes[:-len(extra)])
    assert len({e.seed for e in extra}) == 2  # each group its own seed


def kuhn_best_response(kuhn: Game) -> Strategy:
    """The exact oracle's exploiter of AlwaysBet."""
    oracle = build_oracle(kuhn, top=1, episodes=1)
    assert oracle is not None
    return oracle.exploiters(oracle.refresh(StrategyPlayer(kuhn.strategies["AlwaysBet"]), 1, 0))[0]


def test_exact_oracle_state_rebuilds_the_same_best_response() -> None:
    kuhn = get_game("kuhn")
    oracle = build_oracle(kuhn, top=2, episodes=2)
    assert isinstance(oracle, ExactOracle)
    refresh = oracle.refresh(StrategyPlayer(kuhn.strategies["AlwaysBet"]), 7, 0)
    # AlwaysBet's exploitability is 1/3 per hand: the responder out-earns it by 2/3.
    assert refresh.chosen == ["BestResponse"] and refresh.top_gap == pytest.approx(2 / 3)
    state = ckpt.TrainerState(step=7, oracle=refresh.to_json())
    restored = ckpt.TrainerState.from_json(state.to_json())
    again = Refresh.from_json(restored.oracle)
    assert again == refresh
    (before,), (after,) = oracle.exploiters(refresh), oracle.exploiters(again)
    assert before.policy() == after.policy()  # type: ignore[attr-defined]
    # Two groups: the exact best response fills both.
    slots = slot_opponents(oracle.exploiters(refresh), ["Oracle1", "Oracle2"])
    assert [s.name for s in slots.values()] == ["BestResponse", "BestResponse"]


# ------------------------------------------------------------------ libraries vs held-out pools
class RandomProbe(Strategy):
    """Uniformly random legal play: with many seeds, histories a strategy must answer."""

    name = "probe"

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Any:
        legal = game.legal_actions(state, seat)
        return legal[rng.randrange(len(legal))]


def behaviour(game: Game, strategy: Strategy, seeds: int = 30) -> tuple[Any, ...]:
    """What `strategy` plays from the opponent's seat against a random prober and against
    every strategy of the game, on `seeds` seeds each: equal for two strategies that play
    alike (a deterministic one, exactly)."""
    probes = [RandomProbe(), *game.strategies.values()]
    out = []
    for probe in probes:
        for record in play(game, probe, [strategy], range(seeds)):
            out.append(tuple(r.actions[1] for r in record.rounds))
    return tuple(out)


@pytest.mark.parametrize("name", game_names())
def test_candidate_libraries_are_disjoint_from_the_held_out_pool(name: str) -> None:
    game = get_game(name)
    library = candidate_exploiters(game, optional=False)
    heldout = game.pools["heldout"]
    assert not set(library) & set(heldout)
    # The toml's candidates are the game's own strategies; the families are not strategies
    # of the game (SFT data and the pools never see them).
    assert set(game.oracle_candidates) <= set(game.strategies)
    assert not set(game.exploiter_families()) & set(game.strategies)
    # Pools stay consistent: every name a pool holds is a strategy.
    assert {n for pool in game.pools.values() for n in pool} <= set(game.strategies)
    held = {behaviour(game, game.strategies[h]): h for h in heldout}
    for candidate, strategy in library.items():
        assert behaviour(game, strategy) not in held, \
            f"{candidate} plays like the held-out {held.get(behaviour(game, strategy))}"
    assert has_exploiter_library(game) == bool(library)


@pytest.mark.parametrize(("game", "member", "heldout"), [
    ("negotiation", ("Schedule", (9, 8, 7, 6)), "Anchor"),
    ("negotiation", ("UntilBreakdown", (9, 6)), "Bully"),
    ("auction", ("Retaliator", (1,)), "Spiteful"),
    ("bargaining", ("ConcedeSchedule", (2, 1)), "Anchor"),
])
def test_the_behaviour_check_catches_the_family_members_left_out(
        game: str, member: tuple[str, tuple[int, ...]], heldout: str) -> None:
    """Each family stops short of a held-out strategy; the member it skips plays exactly
    like it, and `behaviour` says so."""
    import importlib

    g = get_game(game)
    cls = getattr(importlib.import_module(f"sepo.games.{game}"), member[0])
    twin = cls(*member[1])
    assert twin.name not in candidate_exploiters(g, optional=False)
    assert behaviour(g, twin) == behaviour(g, g.strategies[heldout])


def test_a_data_file_naming_a_held_out_candidate_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sepo.games as registry
    from sepo.games.ipd import IPDGame

    text = (Path(registry.__file__).parent / "ipd.toml").read_text()
    bad = tmp_path / "ipd.toml"
    bad.write_text(text.replace('candidates = ["AlwaysDefect"', 'candidates = ["Pavlov"'))
    monkeypatch.setattr(registry, "_data_file", lambda cls, name: bad)
    with pytest.raises(ValueError, match=r"oracle candidates \['Pavlov'\] are in the held-out"):
        registry._load(IPDGame, "ipd")


@pytest.mark.slow
def test_axelrod_candidates_are_deterministic_and_none_plays_like_a_held_out_one() -> None:
    axelrod_pool = pytest.importorskip("sepo.games.axelrod_pool")
    if not axelrod_pool.axelrod_available():
        pytest.skip("axelrod is not installed")
    ipd = get_game("ipd")
    extra = optional_exploiters(ipd)
    assert list(extra) == [f"axl.{n}" for n in axelrod_pool.EXPLOITER_CANDIDATES]
    assert not set(extra) & {f"axl.{n}" for n in axelrod_pool.DEFAULT_HELDOUT}
    assert set(extra) <= set(candidate_exploiters(ipd))
    held = {behaviour(ipd, ipd.strategies[h], seeds=10): h for h in ipd.pools["heldout"]}
    held.update({behaviour(ipd, s, seeds=10): s.name
                 for s in axelrod_pool.heldout_extension()})
    for name, strategy in extra.items():
        assert not strategy.stochastic, name
        assert behaviour(ipd, strategy, seeds=10) not in held, name
    # The check would catch one: Axelrod's Prober is sepo's held-out Prober.
    prober = axelrod_pool.axelrod_strategy("Prober")
    assert held.get(behaviour(ipd, prober, seeds=10)) == "Prober"


# ------------------------------------------------------------------ settings
def test_the_oracle_is_on_by_default_for_sepo_only(tmp_path: Path) -> None:
    def config(**kw: Any) -> SEPOConfig:
        return SEPOConfig(**{"game": "ipd", "model": "x", "out": "unused", **kw})

    assert (config().oracle, config().oracle_every, config().oracle_top) == (True, 5, 2)
    assert config(game="kuhn").oracle_every == 1  # kuhn.toml [sepo]: rebuilt every step
    assert config(reward_only=True).oracle is False
    assert config(reward_only=True, oracle=True).oracle is False  # forced off: plain GRPO
    assert config(credit="aux").oracle is False
    assert config(game="kuhn", exploit_best_response=True).oracle is False
    with pytest.raises(SepoError, match="credit=aux"):
        config(credit="aux", oracle=True)
    with pytest.raises(SepoError, match="use one of them"):
        config(game="kuhn", exploit_best_response=True, oracle=True)

    from sepo.pipeline import RunConfig

    run = RunConfig(games=["ipd"], out=tmp_path)
    assert run.sepo_config("ipd", 0, Path("m"), tmp_path / "s", "sepo").oracle
    assert not run.sepo_config("ipd", 0, Path("m"), tmp_path / "r", "reward-only").oracle


def test_a_run_saved_before_the_oracle_resumes_without_it(tmp_path: Path) -> None:
    saved = SEPOConfig(game="ipd", model="x", out=tmp_path).model_dump(mode="json")
    del saved["oracle"], saved["oracle_every"], saved["oracle_top"], saved["oracle_episodes"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    old = load_config(tmp_path)
    assert old.oracle is False
    # `sepo train ... --resume` leaves the oracle to its default: the saved run's is kept.
    again = SEPOConfig(game="ipd", model="x", out=tmp_path, resume=True)
    assert again.oracle is True and again.resumed_from(old).oracle is False
    again.resumed_from(old).check_resumable_from(old)
    forced = SEPOConfig(game="ipd", model="x", out=tmp_path, resume=True, oracle=True)
    with pytest.raises(SepoError, match=r"cannot resume.*oracle"):
        forced.resumed_from(old).check_resumable_from(old)


# ------------------------------------------------------------------ refresh schedule, LM
def test_step_oracle_refreshes_every_k_steps_and_repeats_itself(
        tiny_lm: tuple[Any, Any]) -> None:
    model, tokenizer = tiny_lm
    negotiation = get_game("negotiation")
    config = SEPOConfig(game="negotiation", model="x", out="unused", oracle_every=3,
                        oracle_top=2, oracle_episodes=1, reasoning=False, max_new_tokens=4)
    library = {n: s for n, s in candidate_exploiters(negotiation).items()
               if n in ("Demand(9)", "Balanced", "Schedule(8,7,6,5)")}
    step_oracle = trainer.StepOracle(PopulationOracle(negotiation, library, 2, 1), config,
                                     model, tokenizer)
    assert [t for t in range(1, 11) if step_oracle.due(t)] == [1, 4, 7, 10]
    first = step_oracle.refresh(4)
    assert len(first.chosen) == 2 and set(first.chosen) <= set(library)
    assert step_oracle.refresh(4) == first  # the same step, weights and seed: the same
    assert list(step_oracle.opponents()) == ["Oracle1", "Oracle2"]
    assert [s.name for s in step_oracle.opponents().values()] == first.chosen
    restored = trainer.StepOracle(step_oracle.oracle, config, model, tokenizer)
    restored.load(json.loads(json.dumps(first.to_json())))
    assert restored.opponents() == step_oracle.opponents()


@pytest.mark.slow
def test_a_kuhn_run_refreshes_at_steps_1_and_3_with_k_2(tiny_lm_path: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    kuhn = get_game("kuhn")
    monkeypatch.setitem(kuhn.pools, "train", ["Nash"])
    monkeypatch.setitem(kuhn.pools, "exploit", ["AlwaysBet"])
    config = SEPOConfig(game="kuhn", model=str(tiny_lm_path), out=tmp_path / "run", steps=3,
                        group_size=2, checkpoint_every=3, eval_episodes=1, eval_bootstrap=10,
                        max_new_tokens=6, reasoning=False, device="cpu", lr=1e-3,
                        oracle_every=2, oracle_top=1)
    trainer.train_sepo(config, progress=False)
    rows = ckpt.read_metrics(tmp_path / "run")
    assert [r["oracle_top_gap"] != "" for r in rows] == [True, False, True]
    assert [r["time_oracle"] != "" for r in rows] == [True, False, True]
    assert all(r["reward_oracle"] != "" for r in rows)
    logged = [json.loads(line) for line in
              (tmp_path / "run" / "oracle.jsonl").read_text().splitlines()]
    assert [(r["step"], r["kind"], r["chosen"]) for r in logged] == [
        (1, "exact", ["BestResponse"]), (3, "exact", ["BestResponse"])]
    assert all(0.0 <= r["ranking"][0]["gap"] <= 4.0 for r in logged)
    assert float(rows[0]["oracle_top_gap"]) == logged[0]["ranking"][0]["gap"]
