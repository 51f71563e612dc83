"""The LM agent: batched play, stopping, parsing, constrained fallback, traces, Kuhn policy.

Models are real `LlamaForCausalLM`s: the session's test-sized `tiny_lm` (barely pre-trained,
so most of what it writes is nonsense that exercises the fallback), a randomly initialised
one (only nonsense), and small "scripted" models whose weights are set by hand so that the
next token depends only on the current one (a bigram table), which makes their exact output
known in advance.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig, LlamaForCausalLM

from lm_reference import forward_logprobs
from sepo.agents import (
    ActionTrie,
    LMAgent,
    LMTrace,
    SamplingConfig,
    build_prompt,
    constrained_decode,
    load_lm_agent,
)
from sepo.agents.chat import ContinuationIds, build_prompts, left_pad, think_is_open, visible_answer
from sepo.agents.decoding import draw_tokens
from sepo.agents.fast.sampling import sample_batch, shared_prefix_length
from sepo.agents.lm import fallback_messages
from sepo.engine import Decision, DecisionRequest, Engine, Episode, StrategyPlayer
from sepo.errors import SepoError
from sepo.games import game_names, get_game
from sepo.games.base import AGENT, OPPONENT, Game
from sepo.games.ipd import IPDGame
from sepo.games.kuhn import POLICY_KEYS
from sepo.prompts import chat_messages

LM = tuple[Any, Any]
GAMES = [get_game(name) for name in game_names()]


# ------------------------------------------------------------------ helpers
@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Any:
    """These models are tiny: one intra-op thread is as fast as two, and on a shared 2-core
    machine a second spinning OpenMP thread can slow a step down by 50x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def random_lm(tiny_lm: LM) -> LM:
    """A randomly initialised Llama with the tiny tokenizer, mostly writing nonsense.

    Its weights are drawn large (std 0.3, untied), so what it writes depends sharply on the
    whole prompt: greedy texts differ from decision to decision (a mishandled pad or position
    would change them), and now and then one is an exact action line.
    """
    _, tokenizer = tiny_lm
    torch.manual_seed(1)
    model = LlamaForCausalLM(_llama_config(tokenizer, hidden=32, tie=False, layers=2, init=0.3))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def _llama_config(tokenizer: Any, *, hidden: int, tie: bool, layers: int = 1,
                  init: float = 0.02) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
        initializer_range=init,
        max_position_embeddings=2048, tie_word_embeddings=tie, bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def scripted_lm(tokenizer: Any, transitions: dict[int, int]) -> LlamaForCausalLM:
    """A real Llama whose next token is `transitions[current token]`, by construction.

    Attention and MLP outputs are zeroed, so the last hidden state is the current token's
    (normalised) embedding, and each LM-head row is a large multiple of the embedding of the
    token that must precede it: a bigram table with logit margins of ~100.
    """
    torch.manual_seed(0)
    model = LlamaForCausalLM(_llama_config(tokenizer, hidden=64, tie=False))
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        embeddings = model.model.embed_tokens.weight
        unit = embeddings / embeddings.norm(dim=-1, keepdim=True)
        model.lm_head.weight.zero_()
        for current, following in transitions.items():
            model.lm_head.weight[following] += 20.0 * unit[current]
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def first_train_opponent(game: Game) -> Any:
    return game.strategies[game.pools["train"][0]]


def play_all(agent: LMAgent, games: Sequence[Game], seeds: Sequence[int]) -> list[Any]:
    episodes = [Episode(g, agent, first_train_opponent(g), s) for g in games for s in seeds]
    return Engine(episodes).run()


class NeverDone:
    """A row watcher that lets every row run to `max_new_tokens`."""

    def update(self, rows: Sequence[int], tokens: Sequence[int]) -> list[bool]:
        return [False] * len(rows)


def requests_at_random_states(game: Game, count: int, seed: int) -> list[DecisionRequest]:
    """Agent decisions at states reached by random legal play, in random rounds."""
    import random

    rng = random.Random(seed)
    requests: list[DecisionRequest] = []
    for k in range(count):
        opponent = first_train_opponent(game)
        episode = Episode(game, opponent, opponent, seed * 1000 + k)
        target = rng.randrange(game.num_rounds)
        state = episode.state
        while not (state.t >= target and AGENT in game.to_act(state)):
            seat = game.to_act(state)[0]
            legal = game.legal_actions(state, seat)
            game.apply(state, seat, legal[rng.randrange(len(legal))])
        requests.append(DecisionRequest(episode, AGENT))
    return requests


# ------------------------------------------------------------------ config
def test_sampling_config_defaults_and_validation() -> None:
    cfg = SamplingConfig()
    assert (cfg.temperature, cfg.top_p, cfg.reasoning, cfg.seed) == (0.8, 1.0, True, 0)
    assert cfg.new_tokens == 96 and SamplingConfig(reasoning=False).new_tokens == 16
    assert SamplingConfig(max_new_tokens=5).new_tokens == 5
    greedy = SamplingConfig(temperature=0)
    assert greedy.greedy and greedy.logprob_temperature == 1.0
    assert SamplingConfig(temperature=0.5).logprob_temperature == 0.5
    for bad, field in [({"temperature": -0.1}, "temperature"), ({"temperature": math.nan},
                       "temperature"), ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"),
                       ({"max_new_tokens": 0}, "max_new_tokens"), ({"seed": 1.5}, "seed")]:
        with pytest.raises(SepoError, match=field):
            SamplingConfig(**bad)


def test_checkpoint_agent_settings_are_used_unless_overridden(tiny_lm_path: Path,
                                                               tmp_path: Path) -> None:
    import shutil

    from sepo.agents import load_lm_agent
    from sepo.agents.lm import AGENT_SETTINGS_FILE, write_agent_settings

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_lm_path, ckpt)
    assert load_lm_agent(str(ckpt), device="cpu").config.reasoning is True  # no file: defaults
    write_agent_settings(ckpt, reasoning=False, max_new_tokens=20)
    cfg = load_lm_agent(str(ckpt), device="cpu").config
    assert (cfg.reasoning, cfg.new_tokens) == (False, 20)
    cfg = load_lm_agent(str(ckpt), device="cpu", reasoning=True, max_new_tokens=7).config
    assert (cfg.reasoning, cfg.new_tokens) == (True, 7)
    (ckpt / AGENT_SETTINGS_FILE).write_text("{not json")
    with pytest.raises(SepoError, match=AGENT_SETTINGS_FILE):
        load_lm_agent(str(ckpt), device="cpu")


# ------------------------------------------------------------------ text helpers
def test_think_blocks_hide_the_reasoning_from_the_parser() -> None:
    assert visible_answer("<think>DEFECT? no</think>\nCOOPERATE", False) == "\nCOOPERATE"
    assert visible_answer("<think>I will DEFECT", False) == ""  # never closed: no answer
    assert visible_answer("still thinking DEFECT", True) == ""  # prompt opened the block
    assert visible_answer("DEFECT? no</think>COOPERATE", True) == "COOPERATE"
    assert visible_answer("plain DEFECT", False) == "plain DEFECT"
    assert think_is_open("<think>a</think><think>b", False)
    assert not think_is_open("<think>a</think>", True)


@given(st.text(max_size=200), st.booleans())
def test_visible_answer_never_raises_and_is_a_suffix(text: str, open_at_start: bool) -> None:
    answer = visible_answer(text, open_at_start)
    assert text.endswith(answer)


# ------------------------------------------------------------------ playing
@pytest.mark.parametrize("game", GAMES, ids=lambda g: g.name)
def test_agent_plays_every_game_end_to_end(tiny_lm: LM, game: Game) -> None:
    model, tokenizer = tiny_lm
    agent = LMAgent(model, tokenizer, SamplingConfig(temperature=1.0, max_new_tokens=12, seed=3))
    records = play_all(agent, [game], seeds=[0, 1])
    decisions = [d for r in records for d in r.decisions]
    assert all(len(r.rounds) == game.num_rounds for r in records)
    # Every played action was legal (the engine applied it), every trace is well formed.
    for d in decisions:
        trace = d.trace
        assert isinstance(trace, LMTrace)
        assert len(trace.completion_ids) == len(trace.logprobs) <= 12
        assert all(lp <= 1e-6 for lp in trace.logprobs)
        assert trace.temperature == 1.0
        assert d.parse_failed == trace.fallback
        assert bool(trace.fallback_ids) == trace.fallback
    assert agent.decisions == len(decisions)
    assert agent.parse_failures == sum(d.parse_failed for d in decisions)
    assert agent.parse_failure_rate == pytest.approx(agent.parse_failures / len(decisions))


def test_random_model_nonsense_becomes_legal_counted_failures(random_lm: LM) -> None:
    model, tokenizer = random_lm
    agent = LMAgent(model, tokenizer, SamplingConfig(temperature=1.0, max_new_tokens=8, seed=0))
    records = play_all(agent, GAMES, seeds=[0])
    decisions = [d for r in records for d in r.decisions]
    assert agent.parse_failures == sum(d.parse_failed for d in decisions) > len(decisions) // 2
    for record in records:
        game = get_game(record.game)
        for d in record.decisions:
            if d.parse_failed:  # the fallback wrote the action's canonical text, token by token
                assert tokenizer.decode(d.trace.fallback_ids) == game.format_action(d.action)


def test_stops_as_soon_as_the_last_line_is_an_action(tiny_lm: LM) -> None:
    _, tokenizer = tiny_lm
    game = get_game("ipd")
    prompt = build_prompt(tokenizer, chat_messages(game, game.new_state(0), AGENT))
    (defect,) = ContinuationIds(tokenizer)(prompt, ["DEFECT"])
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert len(defect) == 1 and len(newline) == 1, "the tiny tokenizer has these tokens"
    # "DEFECT\nDEFECT\n..." with no end of turn: generation must stop right after "DEFECT".
    looping = scripted_lm(tokenizer, {prompt.ids[-1]: defect[0], defect[0]: newline[0],
                                      newline[0]: defect[0]})
    agent = LMAgent(looping, tokenizer, SamplingConfig(temperature=0, max_new_tokens=20))
    (decision,) = agent.decide([DecisionRequest(Episode(game, agent, game.strategies["TitForTat"],
                                                        0), AGENT)])
    assert decision.action == "DEFECT" and not decision.parse_failed
    assert decision.trace.completion_ids == defect
    assert decision.text == "DEFECT"
    # ".DEFECT" is never exactly an action line, so generation runs on to the end of turn,
    # which is part of the completion but not of the text.
    period = tokenizer(".", add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    ending = scripted_lm(tokenizer, {prompt.ids[-1]: period[0], period[0]: defect[0],
                                     defect[0]: eos})
    agent = LMAgent(ending, tokenizer, SamplingConfig(temperature=0, max_new_tokens=20))
    (decision,) = agent.decide([DecisionRequest(Episode(game, agent, game.strategies["TitForTat"],
                                                        0), AGENT)])
    assert decision.trace.completion_ids == [period[0], defect[0], eos]
    assert decision.text == ".DEFECT" and decision.action == "DEFECT"
    assert decision.trace.logprobs == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)


def test_batched_and_one_at_a_time_greedy_play_are_identical(tiny_lm: LM, random_lm: LM) -> None:
    """Mixed games in one batch (different prompt lengths, so real left padding), and both
    paths: parsed answers (a scripted model that answers "DEFECT", an answer only in the
    prisoner's dilemma) and constrained fallbacks (every model; the random model's nonsense
    never names an action on its last line)."""
    _, tiny_tokenizer = tiny_lm
    ipd = get_game("ipd")
    prompt = build_prompt(tiny_tokenizer, chat_messages(ipd, ipd.new_state(0), AGENT))
    (defect,) = ContinuationIds(tiny_tokenizer)(prompt, ["DEFECT"])
    answers_defect = scripted_lm(tiny_tokenizer, {prompt.ids[-1]: defect[0],
                                                  defect[0]: tiny_tokenizer.eos_token_id})
    parsed: list[int] = []
    for model, tokenizer in ((answers_defect, tiny_tokenizer), tiny_lm, random_lm):
        cfg = SamplingConfig(temperature=0, max_new_tokens=10)
        batched = LMAgent(model, tokenizer, cfg)
        together = play_all(batched, GAMES, seeds=[0])
        alone = [rec for g in GAMES
                 for rec in play_all(LMAgent(model, tokenizer, cfg), [g], seeds=[0])]
        for a, b in zip(together, alone, strict=True):
            assert (a.game, a.seed) == (b.game, b.seed)
            assert [d.action for d in a.decisions] == [d.action for d in b.decisions]
            assert [d.text for d in a.decisions] == [d.text for d in b.decisions]
            assert [d.parse_failed for d in a.decisions] == [d.parse_failed for d in b.decisions]
        assert batched.parse_failures > 0  # the fallback path was compared too
        parsed.append(batched.decisions - batched.parse_failures)
    # The random model's texts are context-dependent: a mishandled pad would show.
    texts = [d.text for r in together for d in r.decisions]
    assert len(set(texts)) > len(texts) // 2
    assert parsed[0] > 0  # the parsed path was compared too


def test_shared_prompt_prefix_is_computed_once_and_changes_nothing(random_lm: LM) -> None:
    """A one-game batch shares its system prompt: its KV cache is computed in one batch-1
    pass and reused by every row, and greedy play is the same as one episode at a time."""
    model, tokenizer = random_lm
    game = get_game("ipd")
    cfg = SamplingConfig(temperature=0, max_new_tokens=10)
    batched = LMAgent(model, tokenizer, cfg)
    shapes: list[tuple[int, ...]] = []
    hook = model.register_forward_pre_hook(
        lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    try:
        together = Engine([Episode(game, batched, game.strategies[o], s)
                           for o in game.pools["train"] for s in (0, 1)]).run()
    finally:
        hook.remove()
    # The shared prefix is one batch-1 pass of the same length every round after the first
    # (whose prompts are all the same: one batch-1 pass of the whole prompt). A lone row of a
    # fallback can add other batch-1 passes, so count the repeated length.
    prefix_lengths = Counter(sh[1] for sh in shapes if sh[0] == 1)
    length, passes = prefix_lengths.most_common(1)[0]
    assert length >= 32 and passes >= game.num_rounds - 1
    for record in together:
        alone = Engine([Episode(game, LMAgent(model, tokenizer, cfg),
                                game.strategies[record.opponent], record.seed)]).run()[0]
        assert [d.text for d in record.decisions] == [d.text for d in alone.decisions]
        assert [d.action for d in record.decisions] == [d.action for d in alone.decisions]


def test_identical_prompts_run_once_and_their_rows_sample_independently(random_lm: LM) -> None:
    """Rows with the same prompt (a group's rollouts in their first round) share one prefill
    row; after it each row draws its own tokens, with its own exact log-probabilities."""
    model, tokenizer = random_lm
    a = [5, 6, 7, 8, 9, 10, 11]
    b = [5, 6, 7, 12, 13]
    prompts = [a, a, b, a, a, b]
    rows: list[int] = []
    hook = model.register_forward_pre_hook(
        lambda m, args, kw: rows.append(kw["input_ids"].shape[0]), with_kwargs=True)
    try:
        sampled = sample_batch(model, prompts, temperature=1.0, top_p=1.0, max_new_tokens=6,
                               pad_id=tokenizer.pad_token_id, watcher=NeverDone(),
                               generator=torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    assert rows[0] == 2  # the prefill: two distinct prompts
    assert rows[1:] == [6] * 5  # then every row decodes
    drawn = [tuple(tokens) for tokens, _ in sampled]
    assert len({drawn[k] for k in (0, 1, 3, 4)}) > 1  # the copies of `a` drew apart
    for prompt, (tokens, logprobs) in zip(prompts, sampled, strict=True):
        assert logprobs == pytest.approx(forward_logprobs(model, prompt, tokens, 1.0), abs=1e-4)
    # Greedy: each copy continues exactly as the prompt alone does.
    greedy = sample_batch(model, prompts, temperature=0, top_p=1.0, max_new_tokens=6,
                          pad_id=tokenizer.pad_token_id, watcher=NeverDone())
    for prompt, (tokens, _) in zip(prompts, greedy, strict=True):
        alone = sample_batch(model, [prompt], temperature=0, top_p=1.0, max_new_tokens=6,
                             pad_id=tokenizer.pad_token_id, watcher=NeverDone())
        assert tokens == alone[0][0]


def test_models_with_their_own_cache_sample_every_row_as_alone(
        own_cache_miniature: Callable[[int], Any]) -> None:
    """Sliding-window or linear-attention layers keep the model's own cache (no shared
    prefix), but left padding, repeated prompts and compaction must still give each row
    exactly its own continuation, past the window, with the log-probs of a plain forward."""
    from sepo.agents.fast.cache import new_cache

    model = own_cache_miniature(64).eval()
    assert new_cache(model, reserve=4) is None  # the model's own cache, not the growing one
    a, b, c = list(range(3, 23)), list(range(5, 12)), list(range(30, 60))
    prompts = [a, b, a, c, b]

    class StopAt:  # rows end at different lengths, so the batch is compacted
        def __init__(self) -> None:
            self.count = [0] * len(prompts)

        def update(self, rows: Sequence[int], tokens: Sequence[int]) -> list[bool]:
            for r in rows:
                self.count[r] += 1
            return [self.count[r] >= 6 + 3 * r for r in rows]

    for temperature in (0.0, 1.0):
        sampled = sample_batch(model, prompts, temperature=temperature, top_p=1.0,
                               max_new_tokens=20, pad_id=0, watcher=StopAt(),
                               generator=torch.Generator().manual_seed(1))
        for k, (prompt, (tokens, logprobs)) in enumerate(zip(prompts, sampled, strict=True)):
            assert len(tokens) == 6 + 3 * k
            expected = forward_logprobs(model, prompt, tokens, temperature or 1.0)
            assert logprobs == pytest.approx(expected, abs=1e-4)
            if temperature == 0:
                alone = sample_batch(model, [prompt], temperature=0, top_p=1.0,
                                     max_new_tokens=len(tokens), pad_id=0, watcher=NeverDone())
                assert tokens == alone[0][0]


def test_shared_prefix_length_leaves_a_token_to_generate_from() -> None:
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert shared_prefix_length([[7], [7, 8]]) == 0
    assert shared_prefix_length([[1, 2], [3, 4]]) == 0


def test_draw_tokens_keeps_the_top_p_nucleus_and_its_proportions() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().repeat(4000, 1)
    generator = torch.Generator().manual_seed(0)
    # Mass before token 2 is 0.8 > 0.7: the nucleus is {0, 1}, renormalised to 5/8, 3/8.
    counts = torch.bincount(draw_tokens(logits, 1.0, 0.7, generator), minlength=4)
    assert counts[2:].tolist() == [0, 0]
    assert counts[0] / 4000 == pytest.approx(5 / 8, abs=0.03)
    # Temperature 2 flattens: p ∝ sqrt(probs) over the whole vocabulary with top_p = 1.
    counts = torch.bincount(draw_tokens(logits, 2.0, 1.0, generator), minlength=4)
    expected = probs.sqrt() / probs.sqrt().sum()
    assert (counts / 4000).tolist() == pytest.approx(expected.tolist(), abs=0.03)
    assert draw_tokens(logits[:3], 0.0, 1.0, None).tolist() == [0, 0, 0]  # greedy
    assert draw_tokens(logits[:3], 1.0, 1e-6, generator).tolist() == [0, 0, 0]  # top token kept
    broken = torch.tensor([[float("nan"), 0.0, float("inf")]])
    assert 0 <= int(draw_tokens(broken, 1.0, 0.9, generator)) < 3  # no crash on NaN logits


def test_same_seed_same_play_other_seed_other_play(tiny_lm: LM) -> None:
    model, tokenizer = tiny_lm

    def run(seed: int) -> list[tuple[Any, str | None]]:
        agent = LMAgent(model, tokenizer, SamplingConfig(temperature=1.0, max_new_tokens=6,
                                                         seed=seed))
        records = play_all(agent, [get_game("ipd"), get_game("bargaining")], seeds=[0])
        return [(d.action, d.text) for r in records for d in r.decisions]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_sampling_leaves_the_global_rng_alone(tiny_lm: LM) -> None:
    model, tokenizer = tiny_lm
    agent = LMAgent(model, tokenizer, SamplingConfig(temperature=1.0, max_new_tokens=4))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    play_all(agent, [get_game("ipd")], seeds=[0])
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------ traces
@pytest.mark.parametrize(("temperature", "games"), [
    (0.7, ("ipd",)),  # one game: the batch shares its prompt prefix's KV cache
    (0.7, ("kuhn", "bargaining")),  # mixed: plain left padding
    (0.0, ("negotiation", "auction")),
])
def test_trace_logprobs_match_an_independent_forward_pass(random_lm: LM, temperature: float,
                                                          games: tuple[str, ...]) -> None:
    model, tokenizer = random_lm
    agent = LMAgent(model, tokenizer, SamplingConfig(temperature=temperature, max_new_tokens=10,
                                                     seed=2))
    records = play_all(agent, [get_game(g) for g in games], seeds=[0, 1, 2])
    traces = [d.trace for r in records for d in r.decisions]
    t = temperature or 1.0
    for trace in traces[:40]:
        assert trace.temperature == t
        expected = forward_logprobs(model, trace.prompt_ids, trace.completion_ids, t)
        assert trace.logprobs == pytest.approx(expected, abs=1e-4)
        assert trace.logprob == pytest.approx(sum(expected), abs=1e-3)
        if trace.fallback:  # the fallback's tokens: unconstrained log-probs, same convention
            expected = forward_logprobs(model, trace.fallback_prompt_ids, trace.fallback_ids, t)
            assert trace.fallback_logprobs == pytest.approx(expected, abs=1e-4)


def test_trace_prompt_is_the_chat_template_of_the_decision(tiny_lm: LM) -> None:
    model, tokenizer = tiny_lm
    game = get_game("auction")
    agent = LMAgent(model, tokenizer, SamplingConfig(max_new_tokens=4, reasoning=False))
    episode = Episode(game, agent, first_train_opponent(game), 7)
    (decision,) = agent.decide([DecisionRequest(episode, AGENT)])
    text = tokenizer.apply_chat_template(chat_messages(game, episode.state, AGENT,
                                                       reasoning=False),
                                         add_generation_prompt=True, tokenize=False)
    assert decision.trace.prompt_ids == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_repeated_conversations_are_encoded_once_into_equal_independent_prompts(
        tiny_lm: LM) -> None:
    _, tokenizer = tiny_lm
    game = get_game("ipd")
    first, later = game.new_state(0), game.new_state(0)
    game.apply(later, AGENT, "COOPERATE")
    game.apply(later, OPPONENT, "DEFECT")
    a, b = chat_messages(game, first, AGENT), chat_messages(game, later, AGENT)
    calls: list[int] = []

    class Counting:  # the tokenizer, counting the texts of each encoding call
        def __getattr__(self, name: str) -> Any:
            return getattr(tokenizer, name)

        def __call__(self, texts: list[str], **kwargs: Any) -> Any:
            calls.append(len(texts))
            return tokenizer(texts, **kwargs)

    prompts = build_prompts(Counting(), [a, b, a, a, b])
    assert calls == [2]  # one batched call over the two distinct conversations
    alone = [build_prompt(tokenizer, m) for m in (a, b)]
    assert [p.ids for p in prompts] == [alone[k].ids for k in (0, 1, 0, 0, 1)]
    assert [p.text for p in prompts] == [alone[k].text for k in (0, 1, 0, 0, 1)]
    prompts[0].ids.append(-1)  # each prompt owns its ids
    assert prompts[2].ids == alone[0].ids


def test_agent_works_in_seat_one_from_its_own_view(tiny_lm: LM) -> None:
    model, tokenizer = tiny_lm
    game = get_game("auction")  # private values: the two seats' prompts differ
    agent = LMAgent(model, tokenizer, SamplingConfig(max_new_tokens=6))
    seen: list[tuple[list[int], Decision]] = []

    class Watcher:
        name = "watcher"

        def decide(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
            expected = [build_prompt(tokenizer, chat_messages(r.game, r.state, r.seat)).ids
                        for r in requests]
            assert all(r.seat == OPPONENT for r in requests)
            decisions = agent.decide(requests)
            seen.extend(zip(expected, decisions, strict=True))
            return decisions

    records = Engine([Episode(game, StrategyPlayer(first_train_opponent(game)), Watcher(), s)
                      for s in (0, 1)]).run()
    assert len(seen) == 2 * game.num_rounds
    for expected, decision in seen:
        assert decision.trace.prompt_ids == expected
    assert [r.actions[OPPONENT] for r in records[0].rounds] == [d.action for _, d in seen[::2]]


# ------------------------------------------------------------------ fallback
NONSENSE = st.one_of(
    st.text(max_size=300),
    st.just(""),
    st.text(alphabet="[]0123456789, HIGLOWDEFCTBASPMU\n", max_size=80),  # near-misses
    st.just("\x00" * 50 + "<|end|><|assistant|>" + "🂡" * 30),  # control text, special tokens
    st.just("DEFECT " * 5000),  # far longer than any context
)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answers=st.lists(NONSENSE, min_size=5, max_size=5))
def test_fallback_turns_any_text_into_a_legal_action(tiny_lm: LM, answers: list[str]) -> None:
    model, tokenizer = tiny_lm
    agent = LMAgent(model, tokenizer, SamplingConfig(temperature=1.0, seed=len(answers[0])))
    requests = [r for game in GAMES for r in requests_at_random_states(game, 1, len(answers[1]))]
    choices = agent.fallback(requests, answers[:len(requests)])
    for request, choice in zip(requests, choices, strict=True):
        legal = request.game.legal_actions(request.state, request.seat)
        assert choice.action in legal
        assert tokenizer.decode(choice.token_ids) == request.game.format_action(choice.action)


def test_bargaining_fallback_vectors_stay_within_the_item_counts(random_lm: LM) -> None:
    model, tokenizer = random_lm
    game = get_game("bargaining")
    agent = LMAgent(model, tokenizer, SamplingConfig(temperature=1.5, seed=4))
    requests = requests_at_random_states(game, 12, seed=3)
    choices = agent.fallback(requests, ["I want everything!!"] * len(requests))
    for request, choice in zip(requests, choices, strict=True):
        assert choice.action in game.legal_actions(request.state, request.seat)
        assert len(choice.token_ids) > 1  # a vector takes several tokens: real trie decoding


def test_fallback_prompt_holds_the_failed_answer_and_the_elicitation(tiny_lm: LM) -> None:
    model, tokenizer = tiny_lm
    game = get_game("ipd")
    agent = LMAgent(model, tokenizer, SamplingConfig(temperature=0))
    request = requests_at_random_states(game, 1, seed=0)[0]
    decision_messages = chat_messages(game, request.state, AGENT)
    expected = build_prompt(tokenizer, fallback_messages(decision_messages, "no idea"))
    assert "no idea" in expected.text and "named no legal action" in expected.text
    (choice,) = agent.fallback([request], ["no idea"])
    # Greedy constrained choice = argmax of one forward pass over the legal first tokens.
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([expected.ids])).logits[0, -1]
    ids = ContinuationIds(tokenizer)(expected, ["COOPERATE", "DEFECT"])
    best = max(zip(ids, ["COOPERATE", "DEFECT"], strict=True),
               key=lambda p: float(logits[p[0][0]]))
    assert choice.action == best[1]


def test_constrained_decode_samples_the_restricted_softmax(tiny_lm: LM) -> None:
    """Frequencies of 600 fallback draws match the exact probability of each action under
    constrained decoding: the product, over the trie's branching nodes on its path, of the
    temperature-T softmax restricted to that node's children."""
    model, tokenizer = tiny_lm
    # A short prompt keeps 600 rows cheap; the words are Kuhn's, multi-token in this tokenizer.
    prompt = build_prompt(tokenizer, [{"role": "user", "content": "CALL or FOLD?"}])
    actions = ["CALL", "FOLD"]
    ids = ContinuationIds(tokenizer)(prompt, actions)
    trie = ActionTrie(zip(ids, actions, strict=True))
    n, temperature = 600, 2.0
    choices = constrained_decode(
        model, [prompt.ids] * n, [trie] * n, temperature=temperature,
        end_ids=[tokenizer.eos_token_id], pad_id=tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(0))

    def exact_probability(path: list[int]) -> float:
        probability, node = 1.0, trie.root
        for k, token in enumerate(path):
            options = list(node.children)
            if len(options) > 1:
                with torch.no_grad():
                    logits = model(input_ids=torch.tensor([prompt.ids + path[:k]])).logits[0, -1]
                restricted = torch.softmax(logits[options] / temperature, dim=-1)
                probability *= float(restricted[options.index(token)])
            node = node.children[token]
        return probability

    p = exact_probability(ids[0])
    assert 0.0 < p < 1.0 and p + exact_probability(ids[1]) == pytest.approx(1.0)
    freq = sum(c.action == actions[0] for c in choices) / n
    assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_trie_can_end_an_action_that_prefixes_another(tiny_lm: LM) -> None:
    """Token paths "1" and "1","0" (as in a digit-by-digit tokenizer): at the shared node the
    decoder may end (EOS) or continue; greedy takes whichever the model prefers."""
    model, tokenizer = tiny_lm
    one, zero = (tokenizer(d, add_special_tokens=False)["input_ids"][0] for d in "10")
    eos = tokenizer.eos_token_id
    prompt = build_prompt(tokenizer, [{"role": "user", "content": "Pick a number."}])
    trie = ActionTrie([([one], 1), ([one, zero], 10)])
    (choice,) = constrained_decode(model, [prompt.ids], [trie], temperature=0, end_ids=[eos],
                                   pad_id=tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[*prompt.ids, one]])).logits[0, -1]
    expected = 10 if logits[zero] > logits[eos] else 1
    assert choice.action == expected
    assert choice.token_ids == ([one, zero] if expected == 10 else [one, eos])


def test_a_parser_that_raises_falls_back_instead_of_crashing(tiny_lm: LM) -> None:
    class BrokenParser(IPDGame):
        def parse(self, text, state, seat):  # type: ignore[no-untyped-def]
            raise RuntimeError("parser bug")

    game = BrokenParser()
    game.pools, game.demonstrators, game.defaults = (get_game("ipd").pools, {}, {})
    model, tokenizer = tiny_lm
    agent = LMAgent(model, tokenizer, SamplingConfig(max_new_tokens=4))
    with pytest.warns(RuntimeWarning, match="parser bug"):
        records = Engine([Episode(game, agent, game.strategies["TitForTat"], 0)]).run()
    assert all(d.parse_failed for d in records[0].decisions)
    assert agent.parse_failure_rate == 1.0


def test_load_lm_agent_from_a_model_directory(tiny_lm_path: Any) -> None:
    agent = load_lm_agent(str(tiny_lm_path), temperature=0, max_new_tokens=5, reasoning=False,
                          device="cpu", dtype="float32")
    assert agent.name == str(tiny_lm_path)
    assert agent.config == SamplingConfig(temperature=0, max_new_tokens=5, reasoning=False)
    records = play_all(agent, [get_game("negotiation")], seeds=[0])
    assert all(1 <= d.action <= 9 for d in records[0].decisions)
    with pytest.raises(SepoError, match="temperature"):
        load_lm_agent(str(tiny_lm_path), temperature=-1)


# ------------------------------------------------------------------ Kuhn policy
def test_kuhn_policy_in_one_forward_pass_matches_per_sequence_passes(tiny_lm: LM) -> None:
    model, tokenizer = tiny_lm
    calls: list[torch.Size] = []

    def count(module: Any, args: Any, kwargs: Any) -> None:
        calls.append(kwargs["input_ids"].shape)

    temperature = 1.3
    agent = LMAgent(model, tokenizer, SamplingConfig(temperature=temperature))
    hook = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        policy = agent.tabular_policy(get_game("kuhn"))
    finally:
        hook.remove()
    assert len(calls) == 1 and calls[0][0] == 24  # 12 info sets × 2 actions, one pass
    assert set(policy) == set(POLICY_KEYS)
    assert all(0.0 <= p <= 1.0 for p in policy.values())

    game = get_game("kuhn")
    continuations = ContinuationIds(tokenizer)
    for key in POLICY_KEYS:
        state, seat = game.state_for_infoset(key)
        prompt = build_prompt(tokenizer, chat_messages(game, state, seat, reasoning=False))
        lp = {}
        for action in game.legal_actions(state, seat):
            (ids,) = continuations(prompt, [game.format_action(action)])
            lp[action] = sum(forward_logprobs(model, prompt.ids, ids, temperature))
        aggressive = next(a for a in lp if a in ("BET", "CALL"))
        passive = next(a for a in lp if a not in ("BET", "CALL"))
        expected = math.exp(lp[aggressive]) / (math.exp(lp[aggressive]) + math.exp(lp[passive]))
        assert policy[key] == pytest.approx(expected, abs=1e-4)


def test_kuhn_policy_under_greedy_decoding_is_pure(tiny_lm: LM) -> None:
    model, tokenizer = tiny_lm
    kuhn = get_game("kuhn")
    sampled = LMAgent(model, tokenizer, SamplingConfig(temperature=1.0)).tabular_policy(kuhn)
    greedy = LMAgent(model, tokenizer, SamplingConfig(temperature=0)).tabular_policy(kuhn)
    for key in POLICY_KEYS:
        assert greedy[key] in (0.0, 0.5, 1.0)
        assert greedy[key] == (1.0 if sampled[key] > 0.5 else 0.0 if sampled[key] < 0.5 else 0.5)


def test_kuhn_exact_reads_the_lm_policy(tiny_lm: LM) -> None:
    kuhn_exact = pytest.importorskip("sepo.kuhn_exact")
    model, tokenizer = tiny_lm
    agent = LMAgent(model, tokenizer, SamplingConfig(temperature=1.0))
    assert kuhn_exact.policy_of(agent) == pytest.approx(agent.tabular_policy(get_game("kuhn")))


def test_left_padding_positions_count_real_tokens_only() -> None:
    ids, mask, positions = left_pad([[7, 8, 9], [5]], pad_id=0, device=torch.device("cpu"))
    assert ids.tolist() == [[7, 8, 9], [0, 0, 5]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions[:, -1].tolist() == [2, 0]
