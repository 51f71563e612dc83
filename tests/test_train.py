"""SEPO stage 2: rewards, advantages, the loss, credit switches, and run management."""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from sepo.agents import LMTrace, build_prompt
from sepo.engine import AgentDecision, Decision, DecisionRequest, Engine, EpisodeRecord
from sepo.errors import SepoError, UnknownNameError
from sepo.games import get_game
from sepo.games.base import AGENT, OPPONENT, Round
from sepo.prompts import chat_messages
from sepo.train import checkpoint as ckpt
from sepo.train import sepo as trainer
from sepo.train.config import Lambdas, SEPOConfig
from sepo.train.sepo import (
    compute_advantages,
    compute_rewards,
    decision_samples,
    rollout_episodes,
    rollout_groups,
    sepo_loss,
    sequence_logprobs,
)


# ------------------------------------------------------------------ helpers
class ScriptedLM:
    """A player that picks uniformly random legal actions (its own stream, so the rollouts of
    a group differ) and records an `LMTrace` of the bare action text: a training batch that
    does not depend on how well the test model writes."""

    def __init__(self, tokenizer: Any, seed: int = 0) -> None:
        self.name = "scripted"
        self.tokenizer = tokenizer
        self.rng = random.Random(seed)

    def decide(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
        out = []
        for r in requests:
            legal = r.game.legal_actions(r.state, r.seat)
            action = legal[self.rng.randrange(len(legal))]
            prompt = build_prompt(self.tokenizer,
                                  chat_messages(r.game, r.state, r.seat, reasoning=False))
            ids = self.tokenizer.encode(r.game.format_action(action), add_special_tokens=False)
            ids.append(self.tokenizer.eos_token_id)
            trace = LMTrace(prompt_ids=prompt.ids, completion_ids=ids, logprobs=[0.0] * len(ids),
                            temperature=0.8)
            out.append(Decision(action, r.game.format_action(action), trace=trace))
        return out


def scripted_batch(game_name: str, tokenizer: Any, credit: str = "per-pool",
                   group_size: int = 4) -> list[EpisodeRecord]:
    game = get_game(game_name)
    config = SEPOConfig(game=game_name, model="x", out="unused", credit=credit,
                        group_size=group_size)
    player = ScriptedLM(tokenizer)
    return Engine(rollout_episodes(game, player, rollout_groups(game, credit), config,  # type: ignore[arg-type]
                                   step=1)).run()


def batch_samples(game_name: str, records: list[EpisodeRecord],
                  **overrides: Any) -> list[trainer.DecisionSample]:
    """The decisions and advantages of `records` under a config."""
    game = get_game(game_name)
    config = SEPOConfig(game=game_name, model="x", out="unused", **overrides)
    rewards = compute_rewards(game, records, config)
    advantages = compute_advantages(rewards.per_round, rewards.groups, config.normalize,
                                    config.advantage)
    return decision_samples(records, advantages, rewards.groups)


def loss_gradient(model: Any, pad_id: int, samples: list[trainer.DecisionSample],
                  old: torch.Tensor, beta: float) -> torch.Tensor:
    """The gradient of the SEPO loss on `samples` as one flat vector, accumulated over
    micro-batches as the trainer does. The reference sits 0.1 nat below the old log-probs,
    so the one-sided KL term is active and must be carried identically by every credit."""
    model.zero_grad(set_to_none=True)
    for idx in trainer._micro_batches(samples, 32):
        logprobs = sequence_logprobs(model, [samples[i] for i in idx], pad_id)
        adv = torch.tensor([samples[i].advantage for i in idx])
        loss, _ = sepo_loss(logprobs, old[idx], old[idx] - 0.1, adv, clip_eps=0.2, beta=beta,
                            num_decisions=len(samples))
        loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def own_logprobs(model: Any, pad_id: int,
                 samples: list[trainer.DecisionSample]) -> torch.Tensor:
    """The model's log-probs of the samples (the old policy of a first update: ratio 1)."""
    old = torch.zeros(len(samples))
    with torch.no_grad():
        for idx in trainer._micro_batches(samples, 32):
            old[idx] = sequence_logprobs(model, [samples[i] for i in idx], pad_id)
    return old


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    """The test model's matrices are tiny: a second intra-op thread only adds overhead (and,
    on a busy 2-core machine, contention that makes these tests several times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lm(tiny_lm: tuple[Any, Any]) -> tuple[Any, Any, int]:
    """A private copy of the test model (gradient tests write .grad), its tokenizer, pad id."""
    model, tokenizer = tiny_lm
    return copy.deepcopy(model).float().eval(), tokenizer, int(tokenizer.pad_token_id)


@pytest.fixture()
def small_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    """One opponent per pool (pools are data) and three candidate exploiters for IPD's oracle
    (no Axelrod): end-to-end runs take seconds."""
    ipd = get_game("ipd")
    monkeypatch.setitem(ipd.pools, "train", ["TitForTat"])
    monkeypatch.setitem(ipd.pools, "exploit", ["AlwaysDefect"])
    monkeypatch.setattr(ipd, "oracle_candidates", ["AlternatingDefect", "GrimTrigger"])
    monkeypatch.setattr(ipd, "oracle_optional", [])
    families = {k: v for k, v in ipd.exploiter_families().items() if k == "DefectFrom(6)"}
    monkeypatch.setattr(ipd, "exploiter_families", lambda: dict(families))
    kuhn = get_game("kuhn")
    monkeypatch.setitem(kuhn.pools, "train", ["Nash"])
    monkeypatch.setitem(kuhn.pools, "exploit", ["AlwaysBet"])


def run_config(game: str, model_path: Path, out: Path, **overrides: Any) -> SEPOConfig:
    fields: dict[str, Any] = dict(
        game=game, model=str(model_path), out=out, steps=2, group_size=2, checkpoint_every=2,
        eval_episodes=1, eval_bootstrap=10, max_new_tokens=16, reasoning=False, device="cpu",
        lr=1e-3, temperature=1.0,
        # The test model's answers rarely parse: no parse-failure ceiling, so best/ is written.
        best_max_parse_failures=1.0)
    fields.update(overrides)
    return SEPOConfig(**fields)


# ------------------------------------------------------------------ config
def test_config_fills_the_games_defaults_and_rejects_unknown_names(tmp_path: Path) -> None:
    kuhn = SEPOConfig(game="kuhn", model="tiny", out=tmp_path)
    assert (kuhn.lr, kuhn.beta) == (3e-6, 0.2)
    assert kuhn.lambdas == Lambdas(exploit=1.5, collusion=0.0, externality=0.0)
    ipd = SEPOConfig(game="ipd", model="tiny", out=tmp_path, lr=5e-5)
    assert (ipd.lr, ipd.beta, ipd.group_size, ipd.temperature) == (5e-5, 0.1, 4, 0.8)
    assert ipd.lambdas == Lambdas(exploit=2.4, collusion=1.0, externality=1.8)
    only = SEPOConfig(game="ipd", model="tiny", out=tmp_path, reward_only=True)
    assert only.train_lambdas == Lambdas.zero() and only.lambdas == ipd.lambdas
    assert only.condition == "reward-only"

    with pytest.raises(UnknownNameError, match=r"'crdit'.*Did you mean 'credit'"):
        SEPOConfig(game="ipd", model="tiny", out=tmp_path, crdit="aux")
    with pytest.raises(UnknownNameError, match=r"credit 'pool'.*aux, constant, per-pool"):
        SEPOConfig(game="ipd", model="tiny", out=tmp_path, credit="pool")
    with pytest.raises(UnknownNameError, match=r"normalize 'round'.*episode, per-round"):
        SEPOConfig(game="ipd", model="tiny", out=tmp_path, normalize="round")
    with pytest.raises(UnknownNameError, match="unknown game 'chess'"):
        SEPOConfig(game="chess", model="tiny", out=tmp_path)
    with pytest.raises(UnknownNameError, match="lambda 'exploitability'"):
        SEPOConfig(game="ipd", model="tiny", out=tmp_path,
                   lambdas={"exploitability": 1.0, "collusion": 0.0, "externality": 0.0})


def test_normalize_defaults_to_the_games_toml(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`[sepo] normalize` in a game's toml is its default for every trained condition (the
    baseline too, so that conditions differ only by their switch); a run saved under another
    default resumes as it was; a bad value names the file and the choices."""
    game = get_game("ipd")
    assert SEPOConfig(game="ipd", model="tiny", out=tmp_path).normalize == "per-round"
    saved = SEPOConfig(game="ipd", model="tiny", out=tmp_path)
    monkeypatch.setitem(game.defaults, "sepo", {**game.defaults["sepo"], "normalize": "episode"})
    for reward_only in (False, True):
        config = SEPOConfig(game="ipd", model="tiny", out=tmp_path, reward_only=reward_only)
        assert config.normalize == "episode"
    default = SEPOConfig(game="ipd", model="tiny", out=tmp_path)
    assert default.condition == "sepo"
    assert SEPOConfig(game="ipd", model="tiny", out=tmp_path,
                      normalize="per-round").condition == "sepo-per-round-norm"
    assert default.resumed_from(saved).normalize == "per-round"
    monkeypatch.setitem(game.defaults, "sepo", {**game.defaults["sepo"], "normalize": "turn"})
    with pytest.raises(SepoError, match=r"ipd\.toml: \[sepo\] normalize.*per-round.*'turn'"):
        SEPOConfig(game="ipd", model="tiny", out=tmp_path)


def test_resume_allows_only_changes_that_keep_the_run_the_same() -> None:
    saved = SEPOConfig(game="kuhn", model="x", out="run", steps=10)
    saved.model_copy(update={"steps": 20, "resume": True, "device": "cpu",
                             "share_prompt_prefix": False}).check_resumable_from(saved)
    for field, value in (("lr", 1e-3), ("group_size", 2), ("credit", "aux")):
        with pytest.raises(SepoError, match=rf"cannot resume run.*{field}"):
            saved.model_copy(update={field: value}).check_resumable_from(saved)


def test_cli_rejects_unknown_credit_with_the_choices(tmp_path: Path) -> None:
    import typer

    from sepo.cli import train

    app = typer.Typer()
    app.command()(train)
    result = CliRunner().invoke(app, ["ipd", "--model", "tiny", "--out", str(tmp_path),
                                      "--credit", "shared"])
    assert isinstance(result.exception, UnknownNameError)
    assert "aux, constant, per-pool" in str(result.exception)


# ------------------------------------------------------------------ rollouts and rewards
def test_groups_share_a_seed_and_cover_every_role_of_an_opponent() -> None:
    kuhn = get_game("kuhn")
    config = SEPOConfig(game="kuhn", model="x", out="unused", group_size=3)
    groups = rollout_groups(kuhn, "per-pool")
    # Nash is in the train and the exploit pool: one group in each role.
    assert [(g.role, g.opponent) for g in groups] == [
        ("train", "Nash"), ("train", "TightPassive"), ("train", "LooseAggressive"),
        ("exploit", "Nash"), ("exploit", "AlwaysBet")]
    episodes = rollout_episodes(kuhn, "agent", groups, config, step=7)  # type: ignore[arg-type]
    seeds: dict[int, set[int]] = {}
    for e in episodes:
        seeds.setdefault(e.tags["group"], set()).add(e.seed)
    assert len(episodes) == 15 and all(len(s) == 1 for s in seeds.values())
    assert len({next(iter(s)) for s in seeds.values()}) == 5  # groups differ
    again = rollout_episodes(kuhn, "agent", groups, config, step=8)  # type: ignore[arg-type]
    assert {e.seed for e in again}.isdisjoint({e.seed for e in episodes})


def test_best_response_group_is_appended_and_other_groups_keep_their_seeds() -> None:
    kuhn = get_game("kuhn")
    config = SEPOConfig(game="kuhn", model="x", out="unused", exploit_best_response=True)
    fixed = rollout_groups(kuhn, "per-pool")
    assert rollout_groups(kuhn, "per-pool", best_response_groups=3)[:-2] == rollout_groups(
        kuhn, "per-pool", best_response_groups=1)
    groups = rollout_groups(kuhn, "per-pool", best_response_groups=1)
    assert groups[:-1] == fixed
    assert (groups[-1].role, groups[-1].opponent) == ("exploit", trainer.BEST_RESPONSE)
    from sepo.games.kuhn import nash_policy
    from sepo.kuhn_exact import BestResponse

    exploiter = BestResponse(nash_policy())
    episodes = rollout_episodes(kuhn, "agent", groups, config, step=3,  # type: ignore[arg-type]
                                adaptive={trainer.BEST_RESPONSE: exploiter})
    plain = rollout_episodes(kuhn, "agent", fixed, config, step=3)  # type: ignore[arg-type]
    assert [(e.seed, e.tags) for e in episodes[:len(plain)]] == [(e.seed, e.tags)
                                                                 for e in plain]
    extra = episodes[len(plain):]
    assert len(extra) == config.group_size
    assert all(e.players[1].strategy is exploiter and e.tags["pool"] == "exploit"  # type: ignore[attr-defined]
               for e in extra)


def test_adaptive_exploiter_is_the_exact_best_response_to_the_current_policy(
        lm: tuple[Any, Any, int]) -> None:
    """Against it the agent loses exactly its exploitability per hand: a rollout's better
    payoff there is lower exploitability, whatever λe's scale after standardisation."""
    from sepo.agents import LMAgent, SamplingConfig
    from sepo.kuhn_exact import exploitability, per_hand_value

    model, tokenizer, _ = lm
    agent = LMAgent(model, tokenizer, SamplingConfig(temperature=0.8, seed=0))
    assert trainer.adaptive_opponents(
        SEPOConfig(game="kuhn", model="x", out="unused"), agent) == {}
    config = SEPOConfig(game="kuhn", model="x", out="unused", exploit_best_response=True)
    (exploiter,) = trainer.adaptive_opponents(config, agent).values()
    policy = agent.tabular_policy(get_game("kuhn"))
    value = per_hand_value(exploiter.policy(), policy)
    assert value == pytest.approx(exploitability(policy), abs=1e-9)
    assert value > 0.05  # the untrained test model is far from Nash


@pytest.mark.parametrize(("game", "credit", "match"), [
    ("ipd", "per-pool", "kuhn only"), ("kuhn", "aux", "credit=aux")])
def test_best_response_exploiter_rejects_other_games_and_aux_credit(
        game: str, credit: str, match: str) -> None:
    with pytest.raises(SepoError, match=match):
        SEPOConfig(game=game, model="x", out="unused", credit=credit,
                   exploit_best_response=True)


def test_per_pool_rewards_follow_the_spec_on_a_hand_built_ipd_batch() -> None:
    ipd = get_game("ipd")
    config = SEPOConfig(game="ipd", model="x", out="unused")
    c, d = "COOPERATE", "DEFECT"

    def record(pool: str, moves: list[tuple[str, str]]) -> EpisodeRecord:
        pay = {(c, c): (3.0, 3.0), (d, d): (1.0, 1.0), (d, c): (5.0, 0.0), (c, d): (0.0, 5.0)}
        return EpisodeRecord("ipd", "a", "o", 1, [Round(m, pay[m]) for m in moves],
                             tags={"pool": pool, "group": 0, "rollout": 0})

    train = record("train", [(c, c), (d, c)])
    exploit = record("exploit", [(c, d), (d, d)])
    collusive = record("collusive", [(d, c), (c, c)])
    rewards = compute_rewards(ipd, [train, exploit, collusive], config).per_round
    # s = 1 at max_payoff 3; x (welfare shortfall): CC 0, DC 1/6, DD 2/3; λ 2.4 / 1.0 / 1.8.
    np.testing.assert_allclose(rewards[0], [3.0, 5.0 - 1.8 / 6])
    e = max(0.0, (5 + 1) / 2 - (0 + 1) / 2)  # 2.5
    np.testing.assert_allclose(rewards[1], [-2.4 * e - 1.8 / 6, -2.4 * e - 1.8 * 2 / 3])
    np.testing.assert_allclose(rewards[2], [-1.0, 0.0])

    only = compute_rewards(ipd, [train, exploit, collusive],
                           SEPOConfig(game="ipd", model="x", out="unused", reward_only=True))
    np.testing.assert_allclose(only.per_round[0], [3.0, 5.0])
    np.testing.assert_allclose(np.concatenate(only.per_round[1:]), 0.0)


def test_group_standardisation_cancels_the_scale_of_a_penalty_only_pool() -> None:
    """docs/DESIGN.md, "Stage-2 reward scale": the exploit pool's reward is −λe·s·e_r alone, so
    its group-standardised advantages are the same for every λe > 0; in the train pool, where
    −λx·x is added to the payoff, λx changes them."""
    ipd = get_game("ipd")
    c, d = "COOPERATE", "DEFECT"
    pay = {(c, c): (3.0, 3.0), (d, d): (1.0, 1.0), (d, c): (5.0, 0.0), (c, d): (0.0, 5.0)}
    games = [[(c, d), (d, d)], [(c, d), (c, d)], [(d, d), (d, d)], [(c, c), (d, c)]]

    def advantages(pool: str, **lam: float) -> np.ndarray:
        records = [EpisodeRecord("ipd", "a", "o", 1, [Round(m, pay[m]) for m in moves],
                                 tags={"pool": pool, "group": 0, "rollout": k})
                   for k, moves in enumerate(games)]
        config = SEPOConfig(game="ipd", model="x", out="unused", lambdas=Lambdas(**lam))
        rewards = compute_rewards(ipd, records, config)
        return np.stack(compute_advantages(rewards.per_round, rewards.groups, scale="group"))

    low = advantages("exploit", exploit=2.4, collusion=0.0, externality=0.0)
    assert np.abs(low).max() > 0.5  # the gaps differ, so the advantages are not all 0
    np.testing.assert_allclose(advantages("exploit", exploit=9.6, collusion=0.0,
                                          externality=0.0), low, atol=1e-9)
    with_x = advantages("train", exploit=2.4, collusion=0.0, externality=1.8)
    without_x = advantages("train", exploit=2.4, collusion=0.0, externality=0.0)
    assert np.abs(with_x - without_x).max() > 0.05


def test_aux_credit_subtracts_its_auxiliary_episodes_penalties(lm: tuple[Any, Any, int]) -> None:
    _, tokenizer, _ = lm
    ipd = get_game("ipd")
    records = scripted_batch("ipd", tokenizer, credit="aux", group_size=2)
    config = SEPOConfig(game="ipd", model="x", out="unused", credit="aux", group_size=2)
    # 4 train groups x 2 rollouts, each with 3 auxiliary episodes (2 exploit, 1 collusive).
    trained = [r for r in records if r.tags["group"] is not None]
    assert len(trained) == 8 and len(records) == 8 * 4
    assert {r.tags["pool"] for r in trained} == {"train"}
    rewards = compute_rewards(ipd, records, config)
    lam, s = config.lambdas, ipd.scale
    assert lam is not None
    for k, r in enumerate(records):
        if r.tags["group"] is None:
            continue
        aux = [a for a in records if a.tags.get("aux_of") == [r.tags["group"], r.tags["rollout"]]]
        exploit = [a for a in aux if a.tags["pool"] == "exploit"]
        collusive = [a for a in aux if a.tags["pool"] == "collusive"]
        assert len(exploit) == 2 and len(collusive) == 1
        gap = np.mean([max(0.0, a.mean(OPPONENT) - a.mean(AGENT)) for a in exploit])
        ext = np.mean([np.mean([ipd.externality(x) for x in a.rounds]) for a in exploit])
        coll = np.mean([ipd.collusion(x) for x in collusive[0].rounds])
        penalty = lam.exploit * s * gap + lam.externality * ext + lam.collusion * coll
        own = [s * x.payoffs[AGENT] - lam.externality * ipd.externality(x) for x in r.rounds]
        np.testing.assert_allclose(rewards.per_round[k], np.subtract(own, penalty))
    # Auxiliary episodes are played but never trained on.
    advantages = compute_advantages(rewards.per_round, rewards.groups)
    samples = decision_samples(records, advantages, rewards.groups)
    assert len(samples) == sum(len(r.decisions) for r in trained)


# ------------------------------------------------------------------ advantages
def test_advantages_per_round_and_per_episode_worked_by_hand() -> None:
    per_round = [np.array([1.0, 0.0, 2.0]), np.array([3.0, 0.0, 2.0]),
                 np.array([2.0, 0.0, 5.0]),  # group 0: three rollouts
                 np.array([0.0, 4.0, 1.0]), np.array([1.0, 4.0, 1.0]),  # group 1: two
                 np.array([9.0, 9.0, 9.0])]  # not trained (an auxiliary episode)
    groups = [0, 0, 0, 1, 1, None]
    adv = compute_advantages(per_round, groups, "per-round")
    k = 1 / math.sqrt(2 / 3)  # round 0 of group 0: values 1, 3, 2 (mean 2, std √(2/3))
    # Round 2 of group 0: 2, 2, 5 (mean 3, std √2).
    np.testing.assert_allclose(adv[0], [-k, 0.0, -1 / math.sqrt(2)], atol=1e-7)
    np.testing.assert_allclose(adv[1], [k, 0.0, -1 / math.sqrt(2)], atol=1e-7)
    np.testing.assert_allclose(adv[2], [0.0, 0.0, 2 / math.sqrt(2)], atol=1e-7)
    # Group 1: round 0 is 0 vs 1 (±1); rounds 1 and 2 are equal: std 0 gives exactly 0.
    np.testing.assert_allclose(adv[3], [-1.0, 0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(adv[4], [1.0, 0.0, 0.0], atol=1e-7)
    assert adv[3][1] == 0.0 and adv[3][2] == 0.0
    np.testing.assert_array_equal(adv[5], 0.0)

    episode = compute_advantages(per_round, groups, "episode")
    # Group 0 sums 3, 5, 7 (mean 5, std √(8/3)); group 1 sums 5, 6 (±1).
    z = 2 / math.sqrt(8 / 3)
    np.testing.assert_allclose(episode[0], [-z] * 3, atol=1e-7)
    np.testing.assert_allclose(episode[2], [z] * 3, atol=1e-7)
    np.testing.assert_allclose(episode[3], [-1.0] * 3, atol=1e-7)
    with pytest.raises(SepoError, match="normalize"):
        compute_advantages(per_round, groups, "per-hand")


def test_equal_rewards_give_exactly_zero_even_when_the_mean_rounds() -> None:
    # The mean of four copies of 0.1 - 1/3 is not exactly that value in floating point: the
    # std test must not turn rounding error into a 1e-9 / 1e-8 advantage.
    value = 0.1 - 1 / 3
    adv = compute_advantages([np.array([value])] * 4, [0] * 4)
    assert all(a[0] == 0.0 for a in adv)


def test_batch_and_none_scales_worked_by_hand() -> None:
    # Group 0 (two rollouts): rewards 1, 3 per round -> centred -1, +1; group 1: 10, 30 ->
    # -10, +10; group 2: equal rewards -> 0 (still counted in the batch's cells).
    per_round = [np.array([1.0]), np.array([3.0]), np.array([10.0]), np.array([30.0]),
                 np.array([5.0]), np.array([5.0]), np.array([100.0])]
    groups = [0, 0, 1, 1, 2, 2, None]
    group = compute_advantages(per_round, groups, scale="group")
    # Each group is divided by its own std (1 and 10): the 10x larger rewards vanish.
    np.testing.assert_allclose(np.concatenate(group[:4]), [-1, 1, -1, 1], atol=1e-7)
    none = compute_advantages(per_round, groups, scale="none")
    np.testing.assert_allclose(np.concatenate(none), [-1, 1, -10, 10, 0, 0, 0])
    batch = compute_advantages(per_round, groups, scale="batch")
    rms = math.sqrt((1 + 1 + 100 + 100 + 0 + 0) / 6)  # every trained cell, all groups
    np.testing.assert_allclose(np.concatenate(batch),
                               np.array([-1, 1, -10, 10, 0, 0, 0]) / rms, atol=1e-7)
    assert batch[4][0] == 0.0 and batch[6][0] == 0.0
    with pytest.raises(UnknownNameError, match=r"advantage 'rank'.*batch, group, none"):
        compute_advantages(per_round, groups, scale="rank")
    assert trainer.zero_variance_fraction(per_round, groups) == pytest.approx(1 / 3)


def test_batch_scale_over_processes_equals_one_process() -> None:
    # Two "ranks" each hold some groups; summing the scale's totals across them must give
    # the advantages one process computes over the whole step.
    rng = np.random.default_rng(0)
    per_round = [rng.normal(size=3) * (1 + k // 4) for k in range(16)]
    groups = [k // 4 for k in range(16)]
    whole = compute_advantages(per_round, groups, scale="batch")
    halves = [list(range(0, 8)), list(range(8, 16))]

    def totals(ks: list[int]) -> np.ndarray:
        centred = compute_advantages([per_round[k] for k in ks], [groups[k] for k in ks],
                                     scale="none")
        cells = np.concatenate(centred)
        return np.array([float(np.square(cells).sum()), float(cells.size)])

    for mine, other in (halves, halves[::-1]):
        part = compute_advantages([per_round[k] for k in mine], [groups[k] for k in mine],
                                  scale="batch", reduce=lambda t, o=other: t + totals(o))
        for row, k in enumerate(mine):
            np.testing.assert_allclose(part[row], whole[k], atol=1e-12)
    local = compute_advantages(per_round[:8], groups[:8], scale="batch")
    assert not np.allclose(np.concatenate(local), np.concatenate(whole[:8]))


def _ipd_exploit_and_train_records() -> list[EpisodeRecord]:
    c, d = "COOPERATE", "DEFECT"
    pay = {(c, c): (3.0, 3.0), (d, d): (1.0, 1.0), (d, c): (5.0, 0.0), (c, d): (0.0, 5.0)}
    games = [[(c, d), (d, d)], [(c, d), (c, d)], [(d, d), (d, d)], [(c, c), (d, c)]]
    return [EpisodeRecord("ipd", "a", "o", 1, [Round(m, pay[m]) for m in moves],
                          tags={"pool": pool, "group": g, "rollout": k})
            for g, pool in enumerate(("train", "exploit")) for k, moves in enumerate(games)]


@pytest.mark.parametrize("advantage", ["batch", "none"])
def test_lambda_exploit_keeps_its_weight_unless_groups_standardise(advantage: str) -> None:
    ipd = get_game("ipd")
    records = _ipd_exploit_and_train_records()

    def shares(scale: str, exploit: float) -> tuple[np.ndarray, dict[str, float]]:
        config = SEPOConfig(game="ipd", model="x", out="unused", advantage=scale,
                            lambdas=Lambdas(exploit=exploit, collusion=0.0, externality=0.0))
        rewards = compute_rewards(ipd, records, config)
        adv = compute_advantages(rewards.per_round, rewards.groups, scale=scale)
        samples = [trainer.DecisionSample([1], [2], 0.0, float(a[t]), 1.0, r.tags["pool"])
                   for r, a in zip(records, adv, strict=True) for t in range(len(r.rounds))]
        stats = trainer.advantage_stats(ipd, records, rewards.groups, rewards.per_round,
                                        samples, "per-round")
        return np.stack(adv), stats

    low, low_stats = shares(advantage, 0.5)
    high, high_stats = shares(advantage, 5.0)
    # The exploit group's advantages change with λe, and so does its share of Σ|A|.
    assert np.abs(high[4:] - low[4:]).max() > 0.1
    assert high_stats["advantage_share_exploit"] > low_stats["advantage_share_exploit"] + 0.1
    assert high_stats["advantage_share_collusive"] == 0.0
    assert math.isclose(high_stats["advantage_share_train"]
                        + high_stats["advantage_share_exploit"], 1.0)
    # Under `group` the exploit group's advantages are the same for every λe > 0 (documented).
    g_low, g_low_stats = shares("group", 0.5)
    g_high, g_high_stats = shares("group", 5.0)
    np.testing.assert_allclose(g_high[4:], g_low[4:], atol=1e-9)
    assert math.isclose(g_high_stats["advantage_share_exploit"],
                        g_low_stats["advantage_share_exploit"], abs_tol=1e-6)
    # The components are unweighted measurements: λe does not change them. Gaps of the four
    # exploit episodes (s = 0.2): 2.5, 5, 0, 0 -> s·e = 0.5, 1, 0, 0.
    assert high_stats["exploit_gap_mean"] == low_stats["exploit_gap_mean"]
    assert high_stats["exploit_gap_mean"] == pytest.approx(ipd.scale * 7.5 / 4)


def test_tenfold_lambda_exploit_changes_the_gradient_under_batch_not_group(
        lm: tuple[Any, Any, int]) -> None:
    model, tokenizer, pad_id = lm
    records = scripted_batch("ipd", tokenizer, group_size=3)
    # λx = 0: an exploit group's reward is then the exploit penalty alone.
    lam = Lambdas(exploit=2.4, collusion=1.0, externality=0.0)
    tenfold = Lambdas(exploit=24.0, collusion=1.0, externality=0.0)
    beta = float(SEPOConfig(game="ipd", model="x", out="unused").beta)

    def gradient(advantage: str, lambdas: Lambdas) -> torch.Tensor:
        samples = batch_samples("ipd", records, advantage=advantage, lambdas=lambdas)
        exploit = [s for s in samples if s.role == "exploit"]
        return loss_gradient(model, pad_id, exploit, own_logprobs(model, pad_id, exploit), beta)

    # Only the exploit groups' decisions: their update is the thing λe should weigh.
    assert torch.norm(gradient("batch", tenfold) - gradient("batch", lam)).item() > 1e-4
    assert torch.max(torch.abs(gradient("group", tenfold) - gradient("group", lam))).item() < 1e-6


def test_every_decision_of_a_round_gets_that_rounds_advantage() -> None:
    def trace(n: int) -> LMTrace:
        return LMTrace(prompt_ids=[1, 2], completion_ids=[3] * n, logprobs=[-0.5] * n,
                       temperature=0.8)

    decisions = [AgentDecision(0, "BET", "BET", False, trace(1)),
                 AgentDecision(0, "CALL", "CALL", False, trace(2)),  # same Kuhn hand
                 AgentDecision(1, "PASS", "x", True, LMTrace([1], [3], [-1.0], 0.8, True)),
                 AgentDecision(2, "PASS", "PASS", False, trace(1))]
    record = EpisodeRecord("kuhn", "a", "o", 0, [], decisions,
                           tags={"pool": "train", "group": 0})
    samples = decision_samples([record], [np.array([0.5, -1.0, 2.0])], [0])
    # The fallback decision (hand 1) is left out of the loss.
    assert [s.advantage for s in samples] == [0.5, 0.5, 2.0]
    assert [s.old_logprob for s in samples] == [-0.5, -1.0, -0.5]


# ------------------------------------------------------------------ the loss
def test_recomputed_logprobs_match_the_agents_sampling_logprobs(
        lm: tuple[Any, Any, int]) -> None:
    """The ratio of a first update is 1: the trainer's right-padded, mask-free forward gives
    the log-probs the agent recorded while sampling (left-padded, with a KV cache)."""
    from sepo.agents import LMAgent, SamplingConfig
    from sepo.engine import Episode

    model, tokenizer, pad_id = lm
    ipd = get_game("ipd")
    agent = LMAgent(model, tokenizer, SamplingConfig(temperature=0.8, max_new_tokens=8,
                                                     reasoning=False, seed=3))
    records = Engine(Episode(ipd, agent, ipd.strategies[name], seed, {"pool": "train"})
                     for name, seed in (("TitForTat", 1), ("AlwaysDefect", 2))).run()
    traces = [d.trace for r in records for d in r.decisions][:12]
    samples = [trainer.DecisionSample(t.prompt_ids, t.completion_ids, t.logprob, 0.0,
                                      t.temperature, "train") for t in traces]
    recomputed = own_logprobs(model, pad_id, samples)
    expected = torch.tensor([s.old_logprob for s in samples])
    torch.testing.assert_close(recomputed, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("game_name", ["ipd", "kuhn"])
@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("packed", [True, False])
def test_shared_prompt_prefix_gives_the_full_passs_logprobs_and_gradients(
        lm: tuple[Any, Any, int], game_name: str, lora: bool, packed: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Running the system prompt once for a micro-batch computes what one pass over the whole
    sequences computes: log-probs, the reference's log-probs (LoRA: adapters disabled), and the
    gradient of a loss through both passes. Packed: the rows after the prefix run as one
    unpadded sequence; not packed (models `packing_supported` rejects): the prefix's keys and
    values are repeated over the padded rows."""
    from sepo.agents.fast import prefix_sharing
    from sepo.agents.fast.prefix_sharing import shared_prefix_tokens

    if not packed:
        monkeypatch.setattr(prefix_sharing, "packing_supported", lambda model: False)
    model, tokenizer, pad_id = lm
    config = SEPOConfig(game=game_name, model="x", out="unused", lora=lora)
    policy = trainer.build_policy(copy.deepcopy(model), tokenizer, config)
    policy.model.eval()  # no LoRA dropout, as in `optimise`
    if lora:  # B starts at zero: move it so the adapted model differs from the reference
        with torch.no_grad():
            for name, p in policy.model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(0))
    samples = batch_samples(game_name, scripted_batch(game_name, tokenizer, group_size=2))[:40]
    game = get_game(game_name)
    system_turn = build_prompt(tokenizer, chat_messages(game, game.new_state(0), AGENT,
                                                        reasoning=False)[:1]).ids
    rows = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(s.prompt_ids + s.completion_ids) for s in samples], batch_first=True,
        padding_value=pad_id)
    # The whole system turn, bar the generation-prompt markup its rendering alone ends with.
    assert shared_prefix_tokens(policy.model, rows) >= len(system_turn) - 3

    first_layer = (policy.model.get_base_model() if lora else policy.model).model.layers[0]
    seen: list[int] = []
    handle = first_layer.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].shape[0]))

    def logprobs_and_gradient(share: bool) -> tuple[torch.Tensor, torch.Tensor]:
        policy.model.zero_grad(set_to_none=True)
        logprobs = sequence_logprobs(policy.model, samples, pad_id, share_prefix=share)
        (logprobs * torch.linspace(-1.0, 1.0, len(samples))).sum().backward()
        grad = torch.cat([p.grad.flatten() for p in policy.trainable_parameters()])
        with torch.no_grad(), policy.reference_model() as reference:
            ref = sequence_logprobs(reference, samples, pad_id, share_prefix=share)
        return torch.cat([logprobs.detach(), ref]), grad

    shared_values, shared_grad = logprobs_and_gradient(True)
    # The prefix once, then the rows (packed: one sequence); with LoRA the reference is the
    # same model again.
    passes = 2 if lora else 1
    assert seen == [1, 1 if packed else len(samples)] * passes
    seen.clear()
    full_values, full_grad = logprobs_and_gradient(False)
    assert seen == [len(samples)] * passes
    handle.remove()
    torch.testing.assert_close(shared_values, full_values, rtol=0, atol=1e-4)
    # Float rounding, summed in another order over ~10k tokens: every entry within 1e-4 of
    # the largest one (measured: ≤ 2e-5 of it, 1e-5 in norm).
    assert full_grad.abs().max() > 1e-3
    torch.testing.assert_close(shared_grad, full_grad, rtol=1e-4,
                               atol=1e-4 * float(full_grad.abs().max()))
    assert float((shared_grad - full_grad).norm() / full_grad.norm()) < 1e-4


@pytest.mark.parametrize("model_type", ["llama", "qwen3"])
def test_packed_rows_match_the_padded_pass_with_grouped_query_attention(model_type: str) -> None:
    """Packing on models `tiny` is not: grouped-query attention (4 query heads on 2 kv heads,
    Qwen3's per-head norms), rows of very different lengths, an empty completion, a batch whose
    rows share a 40-token prefix and one whose rows share nothing. Log-probs and gradients
    equal the padded full pass's."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from sepo.agents.fast.prefix_sharing import packed_prefix_tokens, packing_supported

    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, vocab_size=97, hidden_size=64,
                                  intermediate_size=96, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                  max_position_embeddings=256, pad_token_id=0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").float().eval()
    assert packing_supported(model)
    generator = torch.Generator().manual_seed(1)

    def tokens(n: int) -> list[int]:
        return torch.randint(1, 97, (n,), generator=generator).tolist()

    prefix = tokens(40)
    shapes = [(5, 7), (60, 3), (1, 0), (23, 12), (9, 1)]  # (prompt after prefix, completion)
    shared = [trainer.DecisionSample(prefix + tokens(p), tokens(c), 0.0, 0.0, 0.7 + 0.1 * i,
                                     "train") for i, (p, c) in enumerate(shapes)]
    unshared = [trainer.DecisionSample(tokens(p + 3), tokens(c), 0.0, 0.0, 1.0, "train")
                for p, c in shapes]
    assert packed_prefix_tokens([s.prompt_ids + s.completion_ids for s in shared],
                                [len(s.prompt_ids) for s in shared]) == 40
    for samples in (shared, unshared):
        results = []
        for packed in (True, False):
            model.zero_grad(set_to_none=True)
            logprobs = sequence_logprobs(model, samples, 0, share_prefix=packed)
            (logprobs * torch.linspace(-1.0, 1.0, len(samples))).sum().backward()
            results.append((logprobs.detach(),
                            torch.cat([p.grad.flatten() for p in model.parameters()])))
        (packed_values, packed_grad), (full_values, full_grad) = results
        assert full_values[2] == 0.0 and packed_values[2] == 0.0  # nothing to score
        torch.testing.assert_close(packed_values, full_values, rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(packed_grad, full_grad, rtol=1e-4, atol=1e-6)
        assert full_grad.abs().max() > 1e-3


def test_no_shared_prefix_when_prompts_differ_early_or_checkpointing_is_on(
        lm: tuple[Any, Any, int]) -> None:
    from sepo.agents.fast.prefix_sharing import shared_prefix_tokens

    model, tokenizer, pad_id = lm

    def rows(samples: list[trainer.DecisionSample]) -> torch.Tensor:
        return torch.nn.utils.rnn.pad_sequence(
            [torch.tensor(s.prompt_ids + s.completion_ids) for s in samples],
            batch_first=True, padding_value=pad_id)

    ipd = batch_samples("ipd", scripted_batch("ipd", tokenizer, group_size=2))[:4]
    kuhn = batch_samples("kuhn", scripted_batch("kuhn", tokenizer, group_size=2))[:4]
    assert shared_prefix_tokens(model, rows(ipd)) > 0
    assert shared_prefix_tokens(model, rows(ipd + kuhn)) == 0  # two games' system prompts
    assert shared_prefix_tokens(model, rows(ipd[:1])) == 0
    checkpointed = copy.deepcopy(model)
    # transformers 5.25 renamed it (the old name warns).
    getattr(checkpointed, "activation_checkpointing_enable",
            checkpointed.gradient_checkpointing_enable)()
    assert shared_prefix_tokens(checkpointed, rows(ipd)) == 0


def test_one_sided_kl_is_zero_below_the_reference_and_positive_above() -> None:
    ref = torch.tensor([-2.0, -2.0, -2.0])
    logprobs = torch.tensor([-3.0, -2.0, -1.5], requires_grad=True)
    zero = torch.zeros(3)
    loss, parts = sepo_loss(logprobs, logprobs.detach(), ref, zero, clip_eps=0.2, beta=0.1)
    loss.backward()
    # Only the third decision sits above the reference: 0.1 * 0.5 / 3.
    assert loss.item() == pytest.approx(0.1 * 0.5 / 3)
    assert logprobs.grad.tolist() == pytest.approx([0.0, 0.0, 0.1 / 3])
    assert parts.kl == pytest.approx(0.5) and parts.log_ratio_ref == pytest.approx(-0.5)


def test_ppo_clip_on_hand_made_ratios() -> None:
    old = torch.zeros(4)
    ratio = torch.tensor([1.5, 1.5, 0.5, 0.5])
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    logprobs = ratio.log().requires_grad_(True)
    loss, parts = sepo_loss(logprobs, old, logprobs.detach(), adv, clip_eps=0.2, beta=0.1)
    loss.backward()
    # min(ρA, clip(ρ)A): 1.2 (clipped), -1.5, 0.5, -0.8 (clipped); loss is minus their mean.
    assert loss.item() == pytest.approx(-(1.2 - 1.5 + 0.5 - 0.8) / 4)
    # d/dlogπ of -ρA/4 is -ρA/4 where unclipped, 0 where the clip is active.
    assert logprobs.grad.tolist() == pytest.approx([0.0, 1.5 / 4, -0.5 / 4, 0.0])
    assert parts.clipped == 4  # every ratio is outside [0.8, 1.2]
    half, _ = sepo_loss(logprobs.detach(), old, logprobs.detach(), adv, clip_eps=0.2, beta=0.1,
                        num_decisions=8)
    assert half.item() == pytest.approx(loss.item() / 2)


# ------------------------------------------------------------------ credit switches
@pytest.mark.parametrize("advantage", ["batch", "group", "none"])
@pytest.mark.parametrize("game_name", ["ipd", "kuhn"])
def test_constant_credit_gradient_equals_reward_only_and_per_pool_differs(
        lm: tuple[Any, Any, int], game_name: str, advantage: str) -> None:
    model, tokenizer, pad_id = lm
    records = scripted_batch(game_name, tokenizer, group_size=3)
    beta = float(SEPOConfig(game=game_name, model="x", out="unused").beta)
    constant = batch_samples(game_name, records, credit="constant", advantage=advantage)
    reward_only = batch_samples(game_name, records, reward_only=True, advantage=advantage)
    per_pool = batch_samples(game_name, records, advantage=advantage)
    # The same decisions in the same order: the comparison is on one batch.
    assert [s.completion_ids for s in constant] == [s.completion_ids for s in reward_only]
    assert [s.prompt_ids for s in per_pool] == [s.prompt_ids for s in reward_only]
    old = own_logprobs(model, pad_id, reward_only)

    penalty = compute_rewards(get_game(game_name), records, SEPOConfig(
        game=game_name, model="x", out="unused", credit="constant")).penalty
    assert penalty > 0.1  # a real penalty was subtracted from every reward ...
    grad_constant = loss_gradient(model, pad_id, constant, old, beta)
    grad_reward_only = loss_gradient(model, pad_id, reward_only, old, beta)
    assert torch.max(torch.abs(grad_constant - grad_reward_only)).item() < 1e-6  # ... and cancelled
    assert torch.norm(grad_reward_only).item() > 1e-3
    # Per-pool credit puts penalties on the actions that caused them: a different gradient.
    grad_per_pool = loss_gradient(model, pad_id, per_pool, old, beta)
    difference = torch.norm(grad_per_pool - grad_reward_only).item()
    assert difference > 0.05 * torch.norm(grad_reward_only).item()


# ------------------------------------------------------------------ LoRA
def test_lora_reference_is_the_model_with_adapters_disabled(lm: tuple[Any, Any, int]) -> None:
    from accelerate import Accelerator

    model, tokenizer, pad_id = lm
    base = copy.deepcopy(model)
    config = SEPOConfig(game="ipd", model="x", out="unused", lora=True, lr=1e-2, beta=0.1)
    policy = trainer.build_policy(copy.deepcopy(model), tokenizer, config)
    assert policy.reference is None  # no second copy
    trainable = {n for n, p in policy.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "k_proj", "v_proj", "o_proj"}

    records = scripted_batch("ipd", tokenizer, group_size=2)
    rewards = compute_rewards(get_game("ipd"), records, config)
    samples = decision_samples(records, compute_advantages(rewards.per_round, rewards.groups),
                               rewards.groups)
    with torch.no_grad():
        before = sequence_logprobs(base, samples, pad_id)
        for s, lp in zip(samples, before.tolist(), strict=True):
            s.old_logprob = lp
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-2)
    stats = trainer.optimise(policy, samples, optimizer, Accelerator(cpu=True), config, step=1)
    assert math.isfinite(stats["loss"]) and stats["grad_norm"] > 0
    with torch.no_grad():
        with policy.reference_model() as reference:
            ref_after = sequence_logprobs(reference, samples, pad_id)
        policy_after = sequence_logprobs(policy.model, samples, pad_id)
    torch.testing.assert_close(ref_after, before, rtol=0, atol=1e-5)
    assert torch.max(torch.abs(policy_after - before)).item() > 1e-3


def test_first_update_ratio_is_one_whatever_the_sampling_logprobs(
        lm: tuple[Any, Any, int]) -> None:
    """π_old of a step is the policy before its first optimiser step as the trainer computes
    it. Sampling log-probs off by 0.5 nat (what bf16 decoding did on an H100) must neither
    clip the ratio nor change the gradient; the gap is reported."""
    from accelerate import Accelerator

    model, tokenizer, pad_id = lm
    config = SEPOConfig(game="ipd", model="x", out="unused", lora=False, lr=1e-3, beta=0.1,
                        micro_batch_size=8)
    records = scripted_batch("ipd", tokenizer, group_size=2)
    exact = batch_samples("ipd", records)
    exact_old = own_logprobs(model, pad_id, exact)
    for s, lp in zip(exact, exact_old.tolist(), strict=True):
        s.old_logprob = lp
    shifted = copy.deepcopy(exact)
    for i, s in enumerate(shifted):
        s.old_logprob += 0.5 if i % 2 else -0.5

    def one_update(samples: list[trainer.DecisionSample]) -> tuple[dict[str, float], Any]:
        policy = trainer.build_policy(copy.deepcopy(model), tokenizer, config)
        optimizer = torch.optim.SGD(policy.trainable_parameters(), lr=0.0)  # keep the grads
        stats = trainer.optimise(policy, samples, optimizer, Accelerator(cpu=True), config,
                                 step=1)
        return stats, policy

    stats_exact, _ = one_update(exact)
    stats_shifted, _ = one_update(shifted)
    assert stats_shifted["clip_frac"] == 0.0 and stats_exact["clip_frac"] == 0.0
    assert stats_exact["logprob_gap"] < 1e-4
    assert abs(stats_shifted["logprob_gap"] - 0.5) < 1e-4
    for key in ("loss", "policy_loss", "grad_norm"):
        assert stats_shifted[key] == pytest.approx(stats_exact[key], rel=1e-5, abs=1e-7)


def test_lora_checkpoint_weights_restore_exactly(lm: tuple[Any, Any, int],
                                                  tmp_path: Path) -> None:
    model, tokenizer, _ = lm
    config = SEPOConfig(game="ipd", model="x", out="unused", lora=True)
    saved = trainer.build_policy(copy.deepcopy(model), tokenizer, config)
    with torch.no_grad():
        for name, p in saved.model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # B starts at 0: make the adapter non-trivial
    saved.model.save_pretrained(tmp_path)
    fresh = trainer.build_policy(copy.deepcopy(model), tokenizer, config)
    trainer._load_weights(fresh, tmp_path)
    for (name, a), (_, b) in zip(saved.model.named_parameters(),
                                 fresh.model.named_parameters(), strict=True):
        assert torch.equal(a, b), name



@pytest.mark.parametrize(("lora", "precision", "threshold", "dtype"), [
    (None, "bf16", 0, torch.bfloat16),              # LoRA chosen by size: a bf16 base
    (True, "bf16", 10**12, torch.bfloat16),         # LoRA asked for
    (None, "bf16", 10**12, torch.float32),          # full fine-tuning chosen by size
    (False, "bf16", 0, torch.float32),              # full fine-tuning asked for
    (None, "no", 0, torch.float32),                 # LoRA, no mixed precision
])
def test_starting_weights_dtype_follows_lora_and_precision(
        tiny_lm_path: Path, monkeypatch: pytest.MonkeyPatch, lora: bool | None, precision: str,
        threshold: int, dtype: torch.dtype) -> None:
    monkeypatch.setattr(trainer, "AUTO_LORA_PARAMETERS", threshold)
    config = SEPOConfig(game="ipd", model=str(tiny_lm_path), out="unused", lora=lora,
                        mixed_precision=precision)
    model, _ = trainer._load_starting_model(config, torch.device("cpu"), progress=False)
    assert {p.dtype for p in model.parameters()} == {dtype}


def test_merged_lora_rollouts_compute_the_adapted_model_and_restore_the_weights_exactly(
        lm: tuple[Any, Any, int]) -> None:
    """Rollouts fold the adapters into the weights (one matmul per layer); inside, the model
    is the adapted one (to fp32 rounding) and plays the same greedy game; after, every weight
    is the very tensor it was, so the frozen base, and with it the reference, never drift."""
    from sepo.agents import LMAgent, SamplingConfig
    from sepo.engine import Episode

    model, tokenizer, pad_id = lm
    config = SEPOConfig(game="ipd", model="x", out="unused", lora=True)
    policy = trainer.build_policy(copy.deepcopy(model), tokenizer, config)
    policy.model.eval()  # as in training: no LoRA dropout when playing
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)  # B starts at 0: make the adapter non-trivial
    before = {n: (p.data_ptr(), p.detach().clone())
              for n, p in policy.model.named_parameters()}
    samples = batch_samples("ipd", scripted_batch("ipd", tokenizer, group_size=2))
    game = get_game("ipd")
    opponent = game.strategies[game.pools["train"][0]]

    def greedy_play() -> list[Any]:
        agent = LMAgent(policy.model, tokenizer, SamplingConfig(temperature=0.0, seed=0))
        records = Engine([Episode(game, agent, opponent, seed) for seed in range(3)]).run()
        return [d.action for r in records for d in r.decisions]

    with torch.no_grad():
        unmerged = sequence_logprobs(policy.model, samples, pad_id)
        with policy.reference_model() as reference:
            reference_before = sequence_logprobs(reference, samples, pad_id)
    unmerged_actions = greedy_play()
    with policy.sampling_model() as sampling, torch.no_grad():
        merged_modules = [m for m in sampling.modules() if getattr(m, "merged", False)]
        assert len(merged_modules) == 4 * model.config.num_hidden_layers
        merged = sequence_logprobs(sampling, samples, pad_id)
        merged_actions = greedy_play()
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=1e-4)
    assert torch.max(torch.abs(unmerged - reference_before)).item() > 1e-2  # adapters matter
    assert merged_actions == unmerged_actions

    assert not any(getattr(m, "merged", False) for m in policy.model.modules())
    for name, p in policy.model.named_parameters():
        ptr, value = before[name]
        assert p.data_ptr() == ptr and torch.equal(p, value), name
    with torch.no_grad(), policy.reference_model() as reference:
        assert torch.equal(sequence_logprobs(reference, samples, pad_id), reference_before)
    with policy.sampling_model(merge_lora=False) as sampling:
        assert not any(getattr(m, "merged", False) for m in sampling.modules())

# ------------------------------------------------------------------ run management
def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint / "model.safetensors")


def _run_rows(run_dir: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in trainer.TIMING_COLUMNS}
            for row in ckpt.read_metrics(run_dir)]


@pytest.mark.slow
def test_resume_reproduces_an_uninterrupted_ipd_run(tiny_lm_path: Path, tmp_path: Path,
                                                    small_pools: None) -> None:
    # Seed 1: the test model writes a parseable answer (last line only) in steps 2 and 3, so
    # the step after the resume really trains.
    # With a budget, so that the multiplier's state must survive the resume too, and the
    # oracle (on by default) refreshing at step 1 only: the resumed step 3 plays the
    # exploiters the checkpoint's state holds.
    # The budget, 5, is IPD's largest payoff gap: every checkpoint is within it (so best/ is
    # written, §5.8) and λe falls by dual descent.
    budget = {"budgets": {"exploit": 5.0}, "budget_warmup": 0, "budget_window": 2,
              "oracle_every": 3, "advantage": "batch"}
    straight = run_config("ipd", tiny_lm_path, tmp_path / "straight", steps=3, seed=1, **budget)
    trainer.train_sepo(straight, progress=False)

    split = run_config("ipd", tiny_lm_path, tmp_path / "split", steps=2, seed=1, **budget)
    result = trainer.train_sepo(split, progress=False)
    run = tmp_path / "split"
    # A 2-step run writes every file of the run directory.
    assert (run / "config.json").exists() and list((run / "tb").glob("events.out.tfevents*"))
    step2 = run / "checkpoints" / "step-000002"
    assert result.last_checkpoint == step2
    for name in ("model.safetensors", "config.json", "tokenizer.json",
                 "training/tensors.safetensors", "training/state.json", "training/metrics.csv",
                 "trainer_state.json"):
        assert (step2 / name).exists(), name
    assert not (step2 / "training.pt").exists() and not (run / "best" / "training").exists()
    assert (run / "best" / "eval.json").exists() and (run / "best" / "model.safetensors").exists()
    rows = ckpt.read_metrics(run)
    assert [r["step"] for r in rows] == ["1", "2"]
    assert rows[0]["eval_safety"] == "" and math.isfinite(float(rows[1]["eval_safety"]))
    assert not list(run.glob("checkpoints/.tmp-*"))
    with pytest.raises(SepoError, match="already holds a SEPO run"):
        trainer.train_sepo(split, progress=False)
    with pytest.raises(SepoError, match=r"cannot resume.*lr"):
        trainer.train_sepo(split.model_copy(update={"steps": 3, "resume": True, "lr": 1.0}),
                           progress=False)

    trainer.train_sepo(split.model_copy(update={"steps": 3, "resume": True}), progress=False)
    final_straight = _weights(tmp_path / "straight" / "checkpoints" / "step-000003")
    final_split = _weights(run / "checkpoints" / "step-000003")
    assert final_straight.keys() == final_split.keys()
    for name, tensor in final_straight.items():
        assert torch.equal(tensor, final_split[name]), name
    # It did train, in the resumed step too (the test model rarely writes a parseable answer).
    rows = _run_rows(run)
    assert float(rows[-1]["grad_norm"]) > 0
    start = _weights(tiny_lm_path)
    assert any(not torch.equal(start[name], tensor) for name, tensor in final_straight.items())
    assert _run_rows(tmp_path / "straight") == _run_rows(run)
    # λe followed dual ascent on the logged measurements: log λ += lr × (window mean − 5).
    lam = [float(r["lambda_exploit"]) for r in rows]
    measured = [float(r["measured_exploit"]) for r in rows]
    assert lam[0] == 2.4  # the game's λe, the starting point
    for t in (1, 2):
        window = measured[max(0, t - 2):t]
        scale = get_game("ipd").scale  # the excess in reward units: s·e
        step = math.exp(0.5 * scale * (sum(window) / len(window) - 5.0))
        expected = min(max(lam[t - 1] * step, 1e-3), 100.0)
        assert lam[t] == pytest.approx(expected, rel=1e-12) and lam[t] < lam[t - 1]
    assert float(rows[0]["lambda_collusion"]) == 1.0  # not budgeted: fixed
    # The oracle refreshed once, before step 1; its choice survived the resume and played.
    assert split.oracle and [r["oracle_top_gap"] != "" for r in rows] == [True, False, False]
    logged = [json.loads(line) for line in (run / "oracle.jsonl").read_text().splitlines()]
    straight_log = (tmp_path / "straight" / "oracle.jsonl").read_text().splitlines()
    assert [r["step"] for r in logged] == [1] and len(logged[0]["chosen"]) == 2
    assert [{**r, "seconds": 0} for r in logged] == [
        {**json.loads(line), "seconds": 0} for line in straight_log]
    _, state = ckpt.load_training_state(run / "checkpoints" / "step-000003")
    assert state.oracle["chosen"] == logged[0]["chosen"]
    assert all(r["reward_oracle"] != "" for r in rows)


@pytest.mark.slow
def test_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(
        tiny_lm_path: Path, tmp_path: Path, small_pools: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    steps_seen: list[int] = []
    real_advantages = trainer.compute_advantages
    real_logprobs = trainer.sequence_logprobs

    def counting_advantages(*args: Any, **kwargs: Any) -> list[np.ndarray]:
        steps_seen.append(len(steps_seen) + 1)
        return real_advantages(*args, **kwargs)

    def poisoned_logprobs(model: Any, samples: Any, pad_id: int, *args: Any) -> torch.Tensor:
        out = real_logprobs(model, samples, pad_id, *args)
        # From step 3 on (the test model leaves some steps without a trainable decision, so
        # the first poisoned forward may come later).
        return out * float("nan") if steps_seen[-1] >= 3 else out

    monkeypatch.setattr(trainer, "compute_advantages", counting_advantages)
    monkeypatch.setattr(trainer, "sequence_logprobs", poisoned_logprobs)
    config = run_config("kuhn", tiny_lm_path, tmp_path / "run", steps=8, checkpoint_every=2)
    with pytest.raises(SepoError, match=r"non-finite loss \(nan\) at step \d+") as raised:
        trainer.train_sepo(config, progress=False)
    failed = int(str(raised.value).split(" at step ")[1].split(";")[0])
    last = 2 * ((failed - 1) // 2)  # the last checkpoint before the failing step
    assert failed >= 3 and f"step-{last:06d}" in str(raised.value) and "intact" in str(raised.value)
    run = tmp_path / "run"
    assert [step for step, _ in ckpt.list_checkpoints(run)][-1] == last
    training, state = ckpt.load_training_state(run / "checkpoints" / f"step-{last:06d}")
    assert state.step == last and "optimizer" in training
    weights = _weights(run / "checkpoints" / f"step-{last:06d}")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert [r["step"] for r in ckpt.read_metrics(run)] == [str(k) for k in range(1, failed)]
    assert not list(run.glob("checkpoints/.tmp-*"))


@pytest.mark.slow
def test_two_step_kuhn_run_from_the_command_line(tiny_lm_path: Path, tmp_path: Path,
                                                 small_pools: None) -> None:
    import json

    import typer

    from sepo.cli import train

    app = typer.Typer()
    app.command()(train)
    out = tmp_path / "kuhn-run"
    result = CliRunner().invoke(app, [
        "kuhn", "--model", str(tiny_lm_path), "--out", str(out), "--steps", "2",
        "--group-size", "2", "--checkpoint-every", "2", "--eval-episodes", "1",
        "--max-new-tokens", "6", "--no-reasoning", "--device", "cpu", "--credit", "constant",
        "--exploit-best-response", "--no-share-prompt-prefix", "--best-max-parse-failures",
        "1", "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["condition"] == "sepo-constant" and summary["steps"] == 2
    assert summary["best_checkpoint"] == str(out / "best")
    rows = ckpt.read_metrics(out)
    assert [r["step"] for r in rows] == ["1", "2"]
    # Kuhn's exact exploitability is measured at the checkpoint (NashConv/2 is in [0, 2]).
    assert 0.0 <= float(rows[1]["eval_exact_exploitability"]) <= 2.0
    assert math.isfinite(float(rows[1]["penalty"]))
    saved = SEPOConfig.model_validate_json((out / "config.json").read_text())
    assert saved.credit == "constant" and saved.beta == 0.2 and saved.exploit_best_response
    assert saved.share_prompt_prefix is False and saved.best_max_parse_failures == 1.0
    assert (out / "checkpoints" / "step-000002" / "training" / "state.json").exists()
    # The checkpoint tells `load_lm_agent` how it was trained to answer.
    for where in (out / "checkpoints" / "step-000002", out / "best"):
        settings = json.loads((where / "sepo_agent.json").read_text())
        assert settings == {"reasoning": False, "max_new_tokens": 6}


def test_training_after_a_bf16_stage_in_the_same_process(tiny_lm_path: Path, tmp_path: Path,
                                                         small_pools: None) -> None:
    """`sepo run` trains SFT and then SEPO in one process. On a GPU, TRL's SFT leaves
    accelerate's process-wide state at bf16; SEPO's own setting must still apply (it failed
    with "AcceleratorState has already been initialized" on an H100)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)  # earlier tests left theirs
    Accelerator(cpu=True, mixed_precision="bf16")  # what the SFT stage leaves on a GPU
    try:
        result = trainer.train_sepo(run_config("kuhn", tiny_lm_path, tmp_path / "run", steps=1,
                                               checkpoint_every=1), progress=False)
        assert result.steps == 1
        assert AcceleratorState().mixed_precision == "no"
    finally:
        AcceleratorState._reset_state(reset_partial_state=False)


def test_atomic_write_leaves_the_previous_directory_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "best"

    def good(d: Path) -> None:
        (d / "a.txt").write_text("one")

    def bad(d: Path) -> None:
        (d / "a.txt").write_text("half")
        raise OSError("disk full")

    ckpt.write_dir_atomically(target, good)
    with pytest.raises(OSError, match="disk full"):
        ckpt.write_dir_atomically(target, bad)
    assert (target / "a.txt").read_text() == "one"
    assert [p.name for p in tmp_path.iterdir()] == ["best"]


def test_metrics_log_resumes_a_file_written_with_fewer_columns(tmp_path: Path) -> None:
    old = ckpt.MetricsLog(tmp_path / "metrics.csv", ["step", "loss"])
    old.start(None)
    for step in (1, 2, 3):
        old.append({"step": step, "loss": step})
    new = ckpt.MetricsLog(tmp_path / "metrics.csv", ["step", "loss", "logprob_gap"])
    new.start(resume_step=2)
    new.append({"step": 3, "loss": 3, "logprob_gap": 0.25})
    rows = ckpt.read_metrics(tmp_path)
    assert [(r["step"], r["loss"], r["logprob_gap"]) for r in rows] == [
        ("1", "1", ""), ("2", "2", ""), ("3", "3", "0.25")]
    other = ckpt.MetricsLog(tmp_path / "metrics.csv", ["step", "kl"])
    with pytest.raises(SepoError, match="expected columns"):
        other.start(resume_step=2)


def test_metrics_log_drops_rows_after_the_resumed_checkpoint(tmp_path: Path) -> None:
    log = ckpt.MetricsLog(tmp_path / "metrics.csv", ["step", "loss"])
    log.start(None)
    for step in (1, 2, 3):
        log.append({"step": step, "loss": 0.5 * step})
    log.start(resume_step=2)
    assert [r["step"] for r in ckpt.read_metrics(tmp_path)] == ["1", "2"]
    with pytest.raises(ValueError, match="unknown columns"):
        log.append({"step": 4, "kl": 0.0})


def test_a_config_saved_before_the_advantage_setting_resumes_per_group(tmp_path: Path) -> None:
    saved = SEPOConfig(game="kuhn", model="x", out=tmp_path).model_dump(mode="json")
    del saved["advantage"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert trainer.load_config(tmp_path).advantage == "group"
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(SepoError, match=r"config\.json is not a SEPO config"):
        trainer.load_config(tmp_path)
