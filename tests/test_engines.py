"""The two sampling engines behind `SamplingConfig.engine`: the same play where they should.

`"fast"` is sepo's own decoding loop on `transformers` internals (`sepo.agents.fast`);
`"generate"` is `transformers`' public `generate` and plain forward passes (`sepo.agents.plain`).
Greedy play must be identical (completions, texts, actions, fallbacks; log-probabilities up to
float rounding) on real game prompts; sampled play on `generate` must record the trainer's
log-probabilities and be reproducible from its seed; the constrained fallback must give a legal
action on both; and the switch must be honoured: `"generate"` never reaches the fast engine,
and `"fast"` falls back to `"generate"` where it cannot run.

The model is the shipped `tiny` (pre-trained on the games, so it writes real reasoning and
action lines as well as text the fallback has to rescue).
"""

from __future__ import annotations

import json
import random
import sys
import types
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import sepo.agents
from lm_reference import forward_logprobs
from sepo.agents import LMAgent, LMTrace, SamplingConfig
from sepo.agents.fast import sampling as fast_sampling
from sepo.engine import Decision, DecisionRequest, Engine, Episode, EpisodeRecord
from sepo.errors import SepoError, UnknownNameError
from sepo.games import get_game
from sepo.games.base import AGENT, Game
from sepo.models import load_model
from sepo.models.tiny import shipped_tiny
from sepo.train.config import SEPOConfig

LM = tuple[Any, Any]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Small models on a shared machine: one intra-op thread (see tests/test_lm_agent.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shipped_lm(request: pytest.FixtureRequest) -> LM:
    """The shipped `tiny` (the session's test-sized build where the package has none)."""
    path = shipped_tiny() or request.getfixturevalue("tiny_lm_path")
    return load_model(str(path), device="cpu", dtype="float32")


def block_fast_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until the test ends, any import of `sepo.agents.fast` fails (as it would if a
    `transformers` release removed an internal it needs)."""
    monkeypatch.setitem(sys.modules, "sepo.agents.fast", None)
    monkeypatch.delattr(sepo.agents, "fast", raising=False)


@pytest.fixture
def no_fast_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    block_fast_engine(monkeypatch)


def episodes(agent: LMAgent) -> list[Episode]:
    """IPD and Kuhn poker episodes in one batch: prompts of different lengths (left padding),
    IPD's with its reasoning sentence."""
    batch = []
    for name, seeds in (("ipd", (0,)), ("kuhn", (0, 1))):
        game = get_game(name)
        batch += [Episode(game, agent, game.strategies[opponent], seed)
                  for opponent in game.pools["train"][:2] for seed in seeds]
    return batch


def decisions(records: Sequence[EpisodeRecord]) -> list[Decision]:
    return [d for record in records for d in record.decisions]


def mixed_requests() -> list[DecisionRequest]:
    """Agent decisions of IPD and Kuhn poker at states of random play, for one `decide`."""
    return [agent_decision(get_game(name), seed) for name in ("ipd", "kuhn") for seed in range(3)]


def agent_decision(game: Game, seed: int) -> DecisionRequest:
    """The agent's decision at a state reached by random legal play."""
    rng = random.Random(seed)
    opponent = game.strategies[game.pools["train"][0]]
    episode = Episode(game, opponent, opponent, seed)
    state = episode.state
    target = rng.randrange(game.num_rounds)
    while not (state.t >= target and AGENT in game.to_act(state)):
        seat = game.to_act(state)[0]
        legal = game.legal_actions(state, seat)
        game.apply(state, seat, legal[rng.randrange(len(legal))])
    return DecisionRequest(episode, AGENT)


# ------------------------------------------------------------------ the same play
def test_greedy_play_is_identical_on_both_engines(shipped_lm: LM,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole IPD and Kuhn episodes in one batch, greedy: the same completions, texts, actions
    and log-probabilities on both engines. `"generate"` plays with the fast engine made
    unimportable, so it never reaches it (its fallback too)."""
    model, tokenizer = shipped_lm
    played: dict[str, list[Decision]] = {}
    for engine in ("fast", "generate"):
        if engine == "generate":
            block_fast_engine(monkeypatch)
        agent = LMAgent(model, tokenizer, SamplingConfig(temperature=0, engine=engine))
        assert agent.engine == engine
        played[engine] = decisions(Engine(episodes(agent)).run())
    assert agent.buffers is None  # the fast engine's cache buffers are not used either
    request = agent_decision(get_game("bargaining"), 0)
    (choice,) = agent.fallback([request], ["garbage"])
    assert choice.action in request.game.legal_actions(request.state, AGENT)
    fast, plain = played["fast"], played["generate"]
    assert len(fast) == len(plain) > 20
    for a, b in zip(fast, plain, strict=True):
        ta, tb = a.trace, b.trace
        assert isinstance(ta, LMTrace) and isinstance(tb, LMTrace)
        assert ta.prompt_ids == tb.prompt_ids
        assert ta.completion_ids == tb.completion_ids
        assert (a.text, a.action, a.parse_failed) == (b.text, b.action, b.parse_failed)
        assert ta.logprobs == pytest.approx(tb.logprobs, abs=1e-4)
        assert ta.temperature == tb.temperature == 1.0
        assert (ta.fallback_prompt_ids, ta.fallback_ids) == (tb.fallback_prompt_ids,
                                                            tb.fallback_ids)
        assert ta.fallback_logprobs == pytest.approx(tb.fallback_logprobs, abs=1e-4)
    # Both paths were compared: answers the parser read, with a reasoning line before them.
    parsed = [d for d in fast if not d.parse_failed]
    assert parsed and any("\n" in (d.text or "").strip() for d in parsed)
    assert len({len(d.trace.prompt_ids) for d in fast}) > 1  # left padding was exercised


def test_generate_records_the_trainers_logprobs_and_is_seeded(shipped_lm: LM) -> None:
    """Sampled play on `generate`: each token's log-probability is log_softmax(logits / T) of a
    plain forward pass (top-p changes what is drawn, not what is recorded); the same seed
    replays the same play, another seed plays otherwise, and the global RNG is untouched."""
    model, tokenizer = shipped_lm
    config = SamplingConfig(temperature=0.8, top_p=0.9, seed=5, engine="generate")

    def play(cfg: SamplingConfig) -> list[Decision]:
        return LMAgent(model, tokenizer, cfg).decide(mixed_requests())

    rng_before = torch.get_rng_state()
    first = play(config)
    assert torch.equal(torch.get_rng_state(), rng_before)
    for d in first:
        trace = d.trace
        assert trace.temperature == 0.8
        expected = forward_logprobs(model, trace.prompt_ids, trace.completion_ids, 0.8)
        assert trace.logprobs == pytest.approx(expected, abs=1e-4)
    again = play(config)
    assert [d.trace.completion_ids for d in again] == [d.trace.completion_ids for d in first]
    assert [d.action for d in again] == [d.action for d in first]
    other = play(SamplingConfig(temperature=0.8, top_p=0.9, seed=6, engine="generate"))
    assert [d.trace.completion_ids for d in other] != [d.trace.completion_ids for d in first]


def test_generate_ignores_the_checkpoints_own_sampling_settings(
        shipped_lm: LM, monkeypatch: pytest.MonkeyPatch) -> None:
    """`generate` fills unset settings from the model's generation config: a checkpoint's top-k
    of 1 (greedy in all but name) or repetition penalty must not change the policy sampled."""
    model, tokenizer = shipped_lm
    monkeypatch.setattr(model.generation_config, "top_k", 1, raising=False)
    monkeypatch.setattr(model.generation_config, "repetition_penalty", 50.0, raising=False)
    requests = mixed_requests()
    greedy = LMAgent(model, tokenizer, SamplingConfig(temperature=0, engine="generate"))
    sampled = LMAgent(model, tokenizer, SamplingConfig(temperature=1.0, engine="generate"))
    greedy_ids = [d.trace.completion_ids for d in greedy.decide(requests)]
    assert greedy_ids == [d.trace.completion_ids for d in LMAgent(
        model, tokenizer, SamplingConfig(temperature=0, engine="fast")).decide(requests)]
    sampled_ids = [d.trace.completion_ids for d in sampled.decide(requests)]
    assert sampled_ids != greedy_ids
    monkeypatch.setattr(model.generation_config, "suppress_tokens", [5], raising=False)
    with pytest.warns(RuntimeWarning, match="sets suppress_tokens"):
        greedy.decide(requests[:1])


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_fallback_yields_a_legal_action_on_both_engines(shipped_lm: LM,
                                                        temperature: float) -> None:
    """Garbage answers in every kind of action space (words, numbers, demand vectors): the
    constrained fallback writes a legal action's canonical text on both engines, and under
    greedy decoding both write the same one with the same log-probabilities."""
    model, tokenizer = shipped_lm
    requests = [agent_decision(get_game(name), seed)
                for name in ("ipd", "kuhn", "negotiation", "bargaining") for seed in (0, 1)]
    garbage = ["%%% ???", "I will not answer", "", "[[[9, 9, 9, 9]]] BET? DEFECT?"] * 2
    chosen = {}
    for engine in ("fast", "generate"):
        agent = LMAgent(model, tokenizer, SamplingConfig(temperature=temperature, seed=3,
                                                          engine=engine))
        choices = agent.fallback(requests, garbage)
        for request, choice in zip(requests, choices, strict=True):
            game, state = request.game, request.state
            assert choice.action in game.legal_actions(state, AGENT)
            assert tokenizer.decode(choice.token_ids) == game.format_action(choice.action)
            assert len(choice.logprobs) == len(choice.token_ids)
            assert all(lp <= 1e-6 for lp in choice.logprobs)
        chosen[engine] = choices
    if temperature == 0:
        for a, b in zip(chosen["fast"], chosen["generate"], strict=True):
            assert (a.action, a.token_ids) == (b.action, b.token_ids)
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


# ------------------------------------------------------------------ the switch
def test_fast_falls_back_to_generate_when_it_cannot_be_imported(
        shipped_lm: LM, no_fast_engine: None) -> None:
    model, tokenizer = shipped_lm
    with pytest.warns(RuntimeWarning, match="cannot be imported"):
        agent = LMAgent(model, tokenizer, SamplingConfig(temperature=0, engine="fast"))
    assert agent.engine == "generate"
    requests = mixed_requests()
    for request, decision in zip(requests, agent.decide(requests), strict=True):
        assert decision.action in request.game.legal_actions(request.state, AGENT)


def test_fast_falls_back_to_generate_on_a_model_it_cannot_run(
        shipped_lm: LM, monkeypatch: pytest.MonkeyPatch) -> None:
    """A forward the fast engine's arguments break (here: as when `transformers` renamed the
    cache argument) is found before any play: the agent samples with `generate` instead."""
    model, tokenizer = shipped_lm

    def broken(self: Any, input_ids: torch.Tensor, positions: torch.Tensor) -> None:
        raise TypeError("forward() got an unexpected keyword argument 'past_key_values'")

    monkeypatch.setattr(fast_sampling.BatchState, "forward", broken)
    assert "unexpected keyword argument" in (fast_sampling.unsupported(model) or "")
    with pytest.warns(RuntimeWarning, match="cannot run this model"):
        agent = LMAgent(model, tokenizer, SamplingConfig(temperature=0, engine="fast"))
    assert agent.engine == "generate"
    (decision,) = agent.decide([agent_decision(get_game("ipd"), 0)])
    assert decision.action in ("COOPERATE", "DEFECT")
    monkeypatch.undo()
    assert fast_sampling.unsupported(model) is None


def test_the_fast_engine_runs_where_it_is_asked_for(shipped_lm: LM,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from sepo.agents import plain

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the plain engine ran")

    monkeypatch.setattr(plain, "generate_batch", refuse)
    monkeypatch.setattr(plain, "choose_tokens", refuse)
    model, tokenizer = shipped_lm
    agent = LMAgent(model, tokenizer, SamplingConfig(temperature=0, engine="fast"))
    assert agent.engine == "fast" and agent.buffers is not None
    agent.decide([agent_decision(get_game("kuhn"), 0)])
    agent.fallback([agent_decision(get_game("ipd"), 0)], ["garbage"])


def test_loss_runs_plain_forward_passes_without_the_fast_engine(
        shipped_lm: LM, no_fast_engine: None) -> None:
    """The SEPO loss's shared-prefix forwards are the fast engine's: without it, the loss warns
    and takes plain forward passes, with the same log-probabilities."""
    from sepo.train.sepo import DecisionSample, sequence_logprobs

    model, tokenizer = shipped_lm
    agent = LMAgent(model, tokenizer, SamplingConfig(temperature=0.8, engine="generate"))
    played = agent.decide(mixed_requests())
    samples = [DecisionSample(d.trace.prompt_ids, d.trace.completion_ids,
                              d.trace.logprob, 0.0, 0.8, "train") for d in played]
    with torch.no_grad():
        plain = sequence_logprobs(model, samples, pad_id=0, share_prefix=False)
        with pytest.warns(RuntimeWarning, match="fast engine is unavailable"):
            shared = sequence_logprobs(model, samples, pad_id=0, share_prefix=True)
    assert torch.equal(plain, shared)
    assert plain.tolist() == pytest.approx([s.old_logprob for s in samples], abs=1e-3)


# ------------------------------------------------------------------ where the switch is set
def test_the_switch_is_validated_everywhere_it_is_set() -> None:
    assert SamplingConfig().engine == "fast"
    with pytest.raises(SepoError, match=r"sampling engine 'generat'.*Did you mean 'generate'"):
        SamplingConfig(engine="generat")  # type: ignore[arg-type]
    config = SEPOConfig(game="kuhn", model="tiny", out="unused")
    assert config.engine == "fast"
    assert SEPOConfig(game="kuhn", model="tiny", out="unused", engine="generate").engine \
        == "generate"
    with pytest.raises(UnknownNameError, match="Did you mean 'generate'"):
        SEPOConfig(game="kuhn", model="tiny", out="unused", engine="generat")


def test_eval_passes_engine_to_the_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    from sepo.cli import app

    calls: list[dict[str, Any]] = []

    class FixedAgent:
        name = "fake-model"

        def decide(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
            return [Decision("DEFECT", text="DEFECT") for _ in requests]

    def load_lm_agent(model: str, **kwargs: Any) -> FixedAgent:
        calls.append(kwargs)
        return FixedAgent()

    fake = types.ModuleType("sepo.agents")
    fake.load_lm_agent = load_lm_agent  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sepo.agents", fake)
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "ipd", "--model", "tiny", "--episodes", "1",
                                 "--engine", "generate", "--json"])
    assert result.exit_code == 0, result.output
    assert calls == [{"engine": "generate", "seed": 0}]
    assert json.loads(result.stdout)["agent"] == "fake-model"
    result = runner.invoke(app, ["eval", "ipd", "--model", "tiny", "--engine", "slow"])
    assert result.exit_code != 0 and "fast, generate" in result.output
