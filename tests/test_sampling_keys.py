"""Batch-independent sampling: an episode with a sampling key (`sepo.engine.SAMPLING_KEY`, what
the trainer gives every rollout) plays the same whichever episodes share its batch, on both
engines; episodes without one keep the one stream per call."""

from __future__ import annotations

from typing import Any

import torch

from sepo.agents import LMAgent, SamplingConfig
from sepo.agents.decoding import draw_tokens, row_generators
from sepo.agents.lm import row_seeds
from sepo.engine import SAMPLING_KEY, Engine, Episode
from sepo.games import get_game, get_strategy
from sepo.games.base import derive_seed


def test_a_row_draws_from_its_own_generator_alone() -> None:
    logits = torch.randn(5, 40, generator=torch.Generator().manual_seed(1))
    seeds = [11, 12, 13, 14, 15]
    together = draw_tokens(logits, 1.0, 0.9, row_generators(seeds, torch.device("cpu")))
    for k in range(5):
        alone = draw_tokens(logits[k:k + 1], 1.0, 0.9,
                            row_generators([seeds[k]], torch.device("cpu")))
        assert int(alone) == int(together[k])
    # A row that draws nothing (None: finished) leaves its stream where it was.
    generators = row_generators(seeds, torch.device("cpu"))
    first = draw_tokens(logits, 1.0, 0.9, [None, *generators[1:]])
    assert torch.equal(first[1:], together[1:])
    assert int(draw_tokens(logits[:1], 1.0, 0.9, generators[:1])) == int(together[0])


def test_row_seeds_follow_the_keys_and_leave_unkeyed_calls_alone() -> None:
    assert row_seeds([None, None], seed=5, call=3, stream=0) is None
    seeds = row_seeds([(77, 2), None], seed=5, call=3, stream=1)
    assert seeds == [derive_seed(77, 2, 1), derive_seed(5, 3, 1, 2)]


def play(agent: LMAgent, keys: list[int | None]) -> dict[int | None, Any]:
    game = get_game("kuhn")
    opponent = get_strategy(game, "Nash")
    episodes = [Episode(game, agent, opponent, 100 + i % 2,
                        {} if key is None else {SAMPLING_KEY: key})
                for i, key in enumerate(keys)]
    records = Engine(episodes).run()
    return {r.tags.get(SAMPLING_KEY): [(d.trace.completion_ids, d.action, d.parse_failed)
                                       for d in r.decisions] for r in records}


def test_a_keyed_episode_plays_the_same_in_any_batch_on_either_engine(
        tiny_lm: tuple[Any, Any]) -> None:
    model, tokenizer = tiny_lm

    def agent(seed: int, engine: str) -> LMAgent:
        return LMAgent(model, tokenizer, SamplingConfig(
            temperature=1.0, max_new_tokens=12, reasoning=False, seed=seed,
            engine=engine))  # type: ignore[arg-type]

    batch = play(agent(0, "fast"), [1, 2, 3])
    # Other rows, another order, another agent seed and call count: the same play.
    assert play(agent(9, "fast"), [3, 1]) == {k: batch[k] for k in (3, 1)}
    # The generate engine draws alike from the same keys (the same logits up to rounding),
    # alone as in a batch.
    assert play(agent(4, "generate"), [2]) == {2: batch[2]}
    # The fallback's choices (parse failures) are keyed too, and some happen here.
    assert any(failed for moves in batch.values() for *_, failed in moves)


def test_evaluation_gives_every_condition_the_same_random_numbers(
        tiny_lm: tuple[Any, Any]) -> None:
    """Evaluation keys the agent's draws by (opponent, seed index, episode): another agent seed,
    or fewer opponents in the batch, plays every shared episode move for move alike, so paired
    conditions differ only where their policies do (docs/method.md §7.1)."""
    from sepo.evaluation import evaluate, evaluation_sampling_key

    model, tokenizer = tiny_lm

    def moves(seed: int, roles: tuple[str, ...]) -> dict[tuple[str, int], Any]:
        agent = LMAgent(model, tokenizer, SamplingConfig(
            temperature=1.0, max_new_tokens=12, reasoning=False, seed=seed))
        report = evaluate("kuhn", agent, episodes=3, n_boot=10, roles=roles)
        return {(r.opponent, r.tags["episode"]): [(d.trace.completion_ids, d.action)
                                                  for d in r.decisions]
                for r in report.records}

    everyone = moves(0, ("train", "exploit"))
    exploit_only = moves(5, ("exploit",))
    assert exploit_only == {k: everyone[k] for k in exploit_only}
    assert {o for o, _ in exploit_only} == {"Nash", "AlwaysBet"}
    # Not one stream shared by all: the keys differ by opponent and by episode.
    keys = {evaluation_sampling_key(o, 0, i) for o in ("Nash", "AlwaysBet") for i in range(3)}
    assert len(keys) == 6
