"""SFT: demonstrator datasets (determinism, parse-back, split, card, loading, errors) and a
short supervised fine-tuning run whose checkpoint loads and plays."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sepo.engine import Decision, DecisionRequest, Engine, Episode, StrategyPlayer
from sepo.errors import SepoError, UnknownNameError
from sepo.games import game_names, get_game, get_strategy
from sepo.prompts import ACTION_ONLY_INSTRUCTION, REASONING_INSTRUCTION, chat_messages
from sepo.sft.data import (
    CARD_FILE,
    TRAIN_FILE,
    VALIDATION_FILE,
    DemonstratorMixture,
    GameMismatchError,
    SFTDataError,
    completion_text,
    generate_sft_data,
    load_sft_data,
    read_split,
    sft_opponents,
)
from sepo.sft.train import SFT_INFO_FILE, NonFiniteLossError, SFTRunConfig, train_sft


def _available_games() -> list[str]:
    names = []
    for name in game_names():
        try:
            get_game(name)
        except (ImportError, AttributeError):  # a game still being written
            continue
        names.append(name)
    return names


GAMES = _available_games()


@pytest.fixture(scope="module")
def ipd_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sft") / "ipd"
    generate_sft_data("ipd", out, episodes_per_opponent=5, seed=3)
    return out


# ------------------------------------------------------------------ the reason sentence
def test_reason_sentence_describes_the_action_and_why() -> None:
    game = get_game("ipd")
    tft = game.strategies["TitForTat"]
    state = game.new_state(0)
    first = completion_text(game, state, 0, tft, "COOPERATE", reasoning=True)
    assert first == ("It is the first round and the other has not moved yet; I follow "
                     "TitForTat (cooperates first, then copies the other's last move), so I "
                     "play COOPERATE.\nCOOPERATE")
    game.apply(state, 0, "COOPERATE")
    game.apply(state, 1, "DEFECT")
    after = completion_text(game, state, 0, tft, "DEFECT", reasoning=True)
    assert after.startswith("The other played DEFECT last round; I follow TitForTat")
    assert after.endswith("so I play DEFECT.\nDEFECT")
    assert completion_text(game, state, 0, tft, "DEFECT", reasoning=False) == "DEFECT"


# ------------------------------------------------------------------ generation
def test_same_seed_same_bytes_and_another_seed_differs(tmp_path: Path, ipd_data: Path) -> None:
    again = tmp_path / "again"
    generate_sft_data("ipd", again, episodes_per_opponent=5, seed=3)
    for name in (TRAIN_FILE, VALIDATION_FILE, CARD_FILE):
        assert (again / name).read_bytes() == (ipd_data / name).read_bytes()
    other = tmp_path / "other"
    generate_sft_data("ipd", other, episodes_per_opponent=5, seed=4)
    assert (other / TRAIN_FILE).read_bytes() != (ipd_data / TRAIN_FILE).read_bytes()


class _Replay:
    """Seat-0 player that replays an episode's recorded rows and checks each one against the
    live state: the prompt is exactly the agent's, and the completion parses to the action the
    demonstrator takes here."""

    def __init__(self, game_name: str, demonstrator: str, rows: list[dict[str, Any]]) -> None:
        self.game = get_game(game_name)
        self.strategy = self.game.strategies[demonstrator]
        self.name = demonstrator
        self.rows = iter(rows)
        self.checked = 0

    def decide(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
        out = []
        for r in requests:
            row = next(self.rows)
            action = self.strategy.choose(r.game, r.state, r.seat, r.rng)
            reasoning = row["prompt"][0]["content"].endswith(REASONING_INSTRUCTION)
            assert row["prompt"] == chat_messages(r.game, r.state, r.seat, reasoning=reasoning)
            text = row["completion"][0]["content"]
            assert r.game.parse(text, r.state, r.seat) == action
            assert text.splitlines()[-1] == row["action"] == r.game.format_action(action)
            assert row["round"] == r.state.t
            self.checked += 1
            out.append(Decision(action, text=text))
        return out


@pytest.mark.parametrize("reasoning", [True, False])
def test_every_completion_replays_and_parses_back(tmp_path: Path, reasoning: bool) -> None:
    out = tmp_path / "all"
    generate_sft_data(GAMES, out, episodes_per_opponent=2, seed=11, reasoning=reasoning)
    rows = read_split(out, "train") + read_split(out, "validation")
    by_episode: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_episode[row["game"], row["episode"]].append(row)
    replays, episodes = [], []
    for (game_name, seed), ep_rows in by_episode.items():
        replay = _Replay(game_name, ep_rows[0]["demonstrator"], ep_rows)
        opponent = StrategyPlayer(replay.game.strategies[ep_rows[0]["opponent"]])
        episodes.append(Episode(replay.game, replay, opponent, seed))
        replays.append(replay)
    Engine(episodes).run()
    assert sum(r.checked for r in replays) == len(rows)
    assert all(next(r.rows, None) is None for r in replays)  # nothing left unplayed
    assert {row["game"] for row in rows} == set(GAMES)
    system = rows[0]["prompt"][0]["content"]
    assert system.endswith(REASONING_INSTRUCTION if reasoning else ACTION_ONLY_INSTRUCTION)
    if not reasoning:
        assert all(r["completion"][0]["content"] == r["action"] for r in rows)


def test_split_is_80_20_by_episode_and_the_card_counts_the_files(ipd_data: Path) -> None:
    card = json.loads((ipd_data / CARD_FILE).read_text())
    train, val = read_split(ipd_data, "train"), read_split(ipd_data, "validation")
    opponents = sft_opponents(get_game("ipd"))
    assert "Prober" not in opponents and "Random" in opponents  # held-out pool excluded
    episodes = 5 * len(opponents)
    counts = card["counts"]["ipd"]
    assert counts["episodes"] == {"train": episodes - episodes // 5, "validation": episodes // 5}
    # IPD episodes are 8 decisions long, so the example split is exactly 80/20 too.
    assert len(val) * 4 == len(train) == counts["examples"]["train"]
    assert card["examples"] == {"train": len(train), "validation": len(val)}
    assert not {r["episode"] for r in train} & {r["episode"] for r in val}
    every = train + val
    assert counts["actions"] == dict(Counter(r["action"] for r in every))
    assert counts["opponents"] == {o: 5 * 8 for o in sorted(opponents)}
    for name, s in counts["strategies"].items():
        mine = [r for r in every if r["demonstrator"] == name]
        assert s == {"examples": len(mine), "episodes": len({r["episode"] for r in mine})}
    assert set(counts["strategies"]) <= set(get_game("ipd").demonstrators)
    assert counts["mixture"] == get_game("ipd").demonstrators


def test_restricted_demonstrators(tmp_path: Path) -> None:
    card = generate_sft_data("ipd", tmp_path / "tft", episodes_per_opponent=2,
                             demonstrators=["TitForTat"])
    assert card["counts"]["ipd"]["mixture"] == {"TitForTat": 1.0}
    assert {r["demonstrator"] for r in read_split(tmp_path / "tft", "train")} == {"TitForTat"}
    with pytest.raises(UnknownNameError, match="TitForTot"):
        generate_sft_data("ipd", tmp_path / "x", episodes_per_opponent=2,
                          demonstrators=["TitForTot"])


def test_demonstrator_mixture_plays_one_member_per_episode_by_weight() -> None:
    game = get_game("ipd")
    mixture = DemonstratorMixture(game)
    records = Engine(Episode(game, mixture, game.strategies["Mixed"], seed)
                     for seed in range(1500)).run()
    members = Counter()
    for seed, rec in enumerate(records):
        member = mixture.member(Episode(game, mixture, mixture, seed).state).name
        members[member] += 1
        mine = [r.actions[0] for r in rec.rounds]
        if member == "AlwaysDefect":
            assert set(mine) == {"DEFECT"}
        elif member == "TitForTat":
            assert mine == ["COOPERATE"] + [r.actions[1] for r in rec.rounds[:-1]]
    for name, weight in game.demonstrators.items():  # 4-sigma binomial band
        p = weight / sum(game.demonstrators.values())
        assert abs(members[name] / 1500 - p) < 4 * (p * (1 - p) / 1500) ** 0.5


def test_loadable_by_datasets_load_dataset(ipd_data: Path) -> None:
    from datasets import load_dataset

    ds = load_dataset("json", data_files={"train": str(ipd_data / TRAIN_FILE),
                                          "validation": str(ipd_data / VALIDATION_FILE)})
    assert ds["train"].num_rows == len(read_split(ipd_data, "train"))
    row = ds["validation"][0]
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert [m["role"] for m in row["completion"]] == ["assistant"]


# ------------------------------------------------------------------ bad input
def test_missing_empty_and_foreign_directories(tmp_path: Path) -> None:
    with pytest.raises(SFTDataError, match="does not exist"):
        load_sft_data(tmp_path / "nope", "ipd")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SFTDataError, match=r"card\.json is missing \(found: nothing\)"):
        load_sft_data(tmp_path / "empty", "ipd")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("hi")
    with pytest.raises(SepoError, match="not an SFT dataset directory"):
        generate_sft_data("ipd", tmp_path / "foreign", episodes_per_opponent=1)
    with pytest.raises(UnknownNameError, match=r"Choices: .*ipd"):
        generate_sft_data("chess", tmp_path / "c", episodes_per_opponent=1)


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize(("line", "problem"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"game": "ipd", "prompt": []}', "missing field"),
    ('{"game": "ipd", "prompt": [], "completion": []}', "non-empty list"),
    ('{"game": "ipd", "prompt": [{"role": "user", "content": 3}], '
     '"completion": [{"role": "assistant", "content": "C"}]}', "not"),
    ('{"game": "ipd", "prompt": [{"role": "user", "content": "x"}], '
     '"completion": [{"role": "user", "content": "C"}]}', "role 'user'"),
    ('{"game": "kuhn", "prompt": [{"role": "user", "content": "x"}], '
     '"completion": [{"role": "assistant", "content": "C"}]}', "not among the card's games"),
    ("", "empty line"),
])
def test_malformed_line_names_file_and_line(ipd_data: Path, tmp_path: Path, line: str,
                                            problem: str) -> None:
    bad = _copy(ipd_data, tmp_path / "bad")
    lines = (bad / VALIDATION_FILE).read_text().splitlines()
    lines[2] = line
    (bad / VALIDATION_FILE).write_text("\n".join(lines) + "\n")
    with pytest.raises(SFTDataError, match=rf"validation\.jsonl:3: .*{problem}"):
        load_sft_data(bad, "ipd")


def test_empty_split_file(ipd_data: Path, tmp_path: Path) -> None:
    bad = _copy(ipd_data, tmp_path / "bad")
    (bad / TRAIN_FILE).write_text("")
    with pytest.raises(SFTDataError, match=r"train\.jsonl holds no examples"):
        load_sft_data(bad, "ipd")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.text(max_size=200))
def test_any_junk_line_is_a_clear_error(ipd_data: Path, tmp_path_factory: pytest.TempPathFactory,
                                        junk: str) -> None:
    bad = _copy(ipd_data, tmp_path_factory.mktemp("junk") / "d")
    good = (bad / TRAIN_FILE).read_text().splitlines()
    junk = junk.replace("\r", " ").replace("\n", " ")  # one line
    (bad / TRAIN_FILE).write_text("\n".join([good[0], junk, *good[1:]]) + "\n")
    try:
        rows = read_split(bad, "train")
    except SFTDataError as err:
        assert f"{TRAIN_FILE}:2:" in str(err)
    else:  # only a line that is itself a valid example may pass
        assert len(rows) == len(good) + 1


def test_game_mismatch(ipd_data: Path, tmp_path: Path) -> None:
    other = next((g for g in GAMES if g != "ipd"), None)
    if other is None:
        pytest.skip("only ipd is available")
    with pytest.raises(GameMismatchError, match=f"made for ipd, not {other}"):
        load_sft_data(ipd_data, other)
    with pytest.raises(GameMismatchError):  # checked before any model is loaded
        train_sft(other, "no-such-model", ipd_data, tmp_path / "ckpt")


def test_config_errors_name_the_field() -> None:
    with pytest.raises(UnknownNameError, match=r"lerning_rate.*Did you mean 'learning_rate'"):
        SFTRunConfig.from_dict({"lerning_rate": 1e-3})
    with pytest.raises(SepoError, match="batch_size"):
        SFTRunConfig.from_dict({"batch_size": 0})


# ------------------------------------------------------------------ training
@pytest.fixture
def one_thread() -> Iterator[None]:
    """A 0.1 M-parameter model gains nothing from intra-op threads, and on a busy 2-core
    machine they make each step several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_ipd_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sft") / "ipd-small"
    generate_sft_data("ipd", out, episodes_per_opponent=2, seed=0)
    return out


@pytest.mark.usefixtures("one_thread")
def test_sft_lowers_validation_loss_and_the_checkpoint_plays(
        tiny_lm_path: Path, small_ipd_data: Path, tmp_path: Path) -> None:
    from sepo.agents import LMAgent, SamplingConfig
    from sepo.models import load_model

    model, tokenizer = load_model(str(tiny_lm_path), device="cpu", dtype="float32")
    ckpt = tmp_path / "ckpt"
    result = train_sft("ipd", (model, tokenizer), small_ipd_data, ckpt, SFTRunConfig(
        epochs=1, batch_size=8, learning_rate=3e-3, progress=False, logging_steps=1))
    assert result.finetune == "full" and result.trainable_parameters == result.parameters
    assert result.eval_loss_final < result.eval_loss_initial - 0.5
    assert result.train_tokens > 0 and result.steps == -(-result.train_examples // 8)
    longest = max(len(tokenizer(r["completion"][0]["content"])["input_ids"])
                  for r in read_split(small_ipd_data, "train"))
    assert longest <= result.completion_tokens_max <= longest + 3  # + end-of-turn markup
    info = json.loads((ckpt / SFT_INFO_FILE).read_text())
    assert info["games"] == ["ipd"] and info["reasoning"] is True
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left

    # The checkpoint tells its agent to reason, with room for the longest completion.
    from sepo.agents import load_lm_agent
    settings = load_lm_agent(str(ckpt), device="cpu").config
    assert settings.reasoning is True
    assert settings.new_tokens == max(96, result.completion_tokens_max + 8)

    lm, tok = load_model(str(ckpt), device="cpu", dtype="float32")
    agent = LMAgent(lm, tok, SamplingConfig(temperature=0.0, max_new_tokens=48))
    game = get_game("ipd")
    [record] = Engine([Episode(game, agent, game.strategies["TitForTat"], 5)]).run()
    assert len(record.rounds) == game.num_rounds
    assert all(d.action in ("COOPERATE", "DEFECT") for d in record.decisions)


@pytest.mark.usefixtures("one_thread")
def test_lora_merged_checkpoint_is_a_plain_model(
        tiny_lm_path: Path, small_ipd_data: Path, tmp_path: Path) -> None:
    from sepo.models import load_model

    ckpt = tmp_path / "lora"
    result = train_sft("ipd", load_model(str(tiny_lm_path), device="cpu", dtype="float32"),
                       small_ipd_data, ckpt, SFTRunConfig(
                           finetune="lora", merge_lora=True, max_steps=3, batch_size=4,
                           learning_rate=1e-2, lora_r=4, lora_alpha=8, progress=False))
    assert result.finetune == "lora" and result.merged
    assert result.trainable_parameters < result.parameters // 5
    assert not (ckpt / "adapter_config.json").exists()
    lm, _ = load_model(str(ckpt), device="cpu", dtype="float32")
    assert not any("lora" in name for name, _ in lm.named_parameters())


@pytest.mark.usefixtures("one_thread")
def test_non_finite_loss_stops_and_saves_nothing(
        tiny_lm_path: Path, small_ipd_data: Path, tmp_path: Path) -> None:
    import torch

    from sepo.models import load_model

    model, tokenizer = load_model(str(tiny_lm_path), device="cpu", dtype="float32")
    with torch.no_grad():
        model.get_input_embeddings().weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="non-finite training loss"):
        train_sft("ipd", (model, tokenizer), small_ipd_data, tmp_path / "ckpt", SFTRunConfig(
            max_steps=2, batch_size=4, logging_steps=1, progress=False))
    assert list(tmp_path.iterdir()) == []



def _batch_sizes_seen(model: Any) -> tuple[list[int], Any]:
    """Batch sizes of the inputs of the model's first decoder layer, and the hook's handle."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    seen: list[int] = []
    handle = causal_lm.base_model.layers[0].register_forward_pre_hook(
        lambda _module, args, kwargs: seen.append(
            (args[0] if args else kwargs["hidden_states"]).shape[0]), with_kwargs=True)
    return seen, handle


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("lora", [False, True])
def test_shared_prompt_prefix_gives_the_full_passs_loss_and_gradients(
        tiny_lm_path: Path, lora: bool) -> None:
    """A right-padded batch whose rows share their system prompt: with the backbone running
    that prefix once (a batch-1 pass, then the rows on its keys and values), the loss on the
    completion tokens, the logits and every gradient are the full pass's."""
    import torch

    from sepo.agents import build_prompt
    from sepo.agents.fast.prefix_sharing import shared_prompt_prefix
    from sepo.models import load_model

    model, tokenizer = load_model(str(tiny_lm_path), device="cpu", dtype="float32")
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"]))
        for name, p in model.named_parameters():  # B starts at zero: make the adapters count
            if "lora_B" in name:
                p.data.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(1))
    model.train()
    game = get_game("kuhn")
    rows = []
    for seed in range(5):
        prompt = build_prompt(tokenizer, chat_messages(game, game.new_state(seed), 0,
                                                       reasoning=False)).ids
        rows.append((prompt, tokenizer.encode("PASS" if seed % 2 else "BET",
                                              add_special_tokens=False)))
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((len(rows), width), int(tokenizer.pad_token_id))
    mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
    for i, (p, c) in enumerate(rows):
        ids[i, :len(p) + len(c)] = torch.tensor(p + c)
        mask[i, :len(p) + len(c)] = 1
        labels[i, len(p):len(p) + len(c)] = torch.tensor(c)

    def loss_logits_gradient() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        out = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
        out.loss.backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return out.loss.detach(), out.logits.detach()[labels != -100], grad

    seen, handle = _batch_sizes_seen(model)
    full = loss_logits_gradient()
    assert seen == [len(rows)]
    seen.clear()
    with shared_prompt_prefix(model):
        shared = loss_logits_gradient()
    assert seen == [1, len(rows)]  # the prefix once, then the rows
    handle.remove()
    causal_lm = model.get_base_model() if lora else model
    assert "forward" not in vars(causal_lm.base_model)  # the patch is gone
    torch.testing.assert_close(shared[0], full[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(shared[1], full[1], rtol=0, atol=1e-4)
    torch.testing.assert_close(shared[2], full[2], rtol=1e-4, atol=1e-6)
    assert full[2].abs().max() > 1e-3


@pytest.mark.usefixtures("one_thread")
def test_sft_with_a_shared_prompt_prefix_trains_the_same_model(
        tiny_lm_path: Path, small_ipd_data: Path, tmp_path: Path) -> None:
    """Through TRL's trainer, sharing the system prompt (on by default) runs the prefix as a
    batch of one and ends at the weights and losses of the plain run."""
    import torch
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from sepo.models import load_model

    class BatchSizes(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                           **kwargs: Any) -> None:
            self.seen, self.handle = _batch_sizes_seen(model)

    results, sizes = {}, {}
    for share in (True, False):
        spy = BatchSizes()
        results[share] = train_sft(
            "ipd", load_model(str(tiny_lm_path), device="cpu", dtype="float32"),
            small_ipd_data, tmp_path / str(share), SFTRunConfig(
                max_steps=3, batch_size=4, learning_rate=3e-3, progress=False,
                share_prompt_prefix=share), callbacks=[spy])
        spy.handle.remove()
        sizes[share] = set(spy.seen)
    assert 1 in sizes[True] and 4 in sizes[True]
    assert sizes[False] == {4}
    shared, plain = results[True], results[False]
    assert shared.eval_loss_final == pytest.approx(plain.eval_loss_final, abs=1e-4)
    assert shared.train_loss == pytest.approx(plain.train_loss, abs=1e-4)
    a, b = (load_file(tmp_path / str(s) / "model.safetensors") for s in (True, False))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-4)


def prefixed_batch(vocab: int = 300, prefix: int = 40) -> tuple[Any, Any]:
    """Four right-padded rows that share their first `prefix` tokens: (input ids, mask)."""
    import torch

    shared = torch.randint(5, vocab, (prefix,))
    rows = [torch.cat([shared, torch.randint(5, vocab, (4 + 3 * i,))]) for i in range(4)]
    ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones_like(r) for r in rows], batch_first=True)
    return ids, mask


def loss_and_gradient(model: Any, ids: Any, mask: Any, labels: Any) -> tuple[Any, Any]:
    """The model's loss on the batch and its gradient, flattened."""
    import torch

    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()
                                     if p.grad is not None])


@pytest.mark.parametrize("architecture", ["gpt2", "qwen2-gqa", "gemma"])
def test_shared_prompt_prefix_on_other_architectures(architecture: str) -> None:
    """The backbone patch is architecture-agnostic: on randomly initialised GPT-2, Qwen2
    (grouped-query attention) and Gemma models it shares the prefix and changes nothing."""
    import torch
    from transformers import (
        GemmaConfig,
        GemmaForCausalLM,
        GPT2Config,
        GPT2LMHeadModel,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    from sepo.agents.fast.prefix_sharing import shared_prefix_tokens, shared_prompt_prefix

    torch.manual_seed(0)
    small = {"vocab_size": 300, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    model = {
        "gpt2": lambda: GPT2LMHeadModel(GPT2Config(
            n_layer=2, n_embd=32, n_head=4, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0,
            **small)),
        "qwen2-gqa": lambda: Qwen2ForCausalLM(Qwen2Config(
            num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
            num_key_value_heads=2, **small)),
        "gemma": lambda: GemmaForCausalLM(GemmaConfig(
            num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
            num_key_value_heads=1, head_dim=8, **small)),
    }[architecture]()
    model.train()
    ids, mask = prefixed_batch()
    labels = torch.where(mask.bool(), ids, -100)
    labels[:, :40] = -100
    full = loss_and_gradient(model, ids, mask, labels)
    with shared_prompt_prefix(model):
        assert shared_prefix_tokens(model, ids, mask) == 40
        shared = loss_and_gradient(model, ids, mask, labels)
    torch.testing.assert_close(shared[0], full[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(shared[1], full[1], rtol=1e-4, atol=1e-6)


def test_no_shared_prefix_for_sliding_window_or_linear_attention(
        own_cache_miniature: Callable[[int], Any]) -> None:
    """Where a shared prefix's cache would be wrong or unproven (sliding-window layers: Mistral,
    Gemma 4; Qwen3.5's linear attention), the context runs the plain forward: nothing is
    shared and the loss and gradients are exactly the plain pass's."""
    import torch

    from sepo.agents.fast.prefix_sharing import shared_prefix_tokens, shared_prompt_prefix

    model = own_cache_miniature(300).train()
    ids, mask = prefixed_batch()
    labels = torch.where(mask.bool(), ids, -100)
    full = loss_and_gradient(model, ids, mask, labels)
    with shared_prompt_prefix(model):
        assert shared_prefix_tokens(model, ids, mask) == 0
        plain = loss_and_gradient(model, ids, mask, labels)
    torch.testing.assert_close(plain[0], full[0], rtol=0, atol=0)
    torch.testing.assert_close(plain[1], full[1], rtol=0, atol=0)


@pytest.mark.usefixtures("one_thread")
def test_sft_command_line_runs_and_passes_its_options(
        tiny_lm_path: Path, small_ipd_data: Path, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from sepo.cli import sft

    app = typer.Typer()
    app.command()(sft)
    out = tmp_path / "ckpt"
    result = CliRunner().invoke(app, [
        "ipd", "--model", str(tiny_lm_path), "--data", str(small_ipd_data), "--out", str(out),
        "--max-steps", "2", "--batch-size", "4", "--lr", "3e-3", "--device", "cpu",
        "--no-share-prompt-prefix", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["steps"] == 2 and summary["games"] == ["ipd"]
    assert summary["learning_rate"] == 3e-3 and summary["finetune"] == "full"
    assert summary["config"]["share_prompt_prefix"] is False
    assert json.loads((out / SFT_INFO_FILE).read_text())["config"]["batch_size"] == 4

    mismatch = CliRunner().invoke(app, ["kuhn", "--model", str(tiny_lm_path), "--data",
                                        str(small_ipd_data), "--out", str(tmp_path / "x")])
    assert mismatch.exit_code != 0 and not (tmp_path / "x").exists()


def _bench_sft_module() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sft.py"
    spec = importlib.util.spec_from_file_location("bench_sft", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_situation_reading_counts_each_clause_the_text_gets_right() -> None:
    """`bench_sft.py reads` (docs/SFT.md, "Does the SFT agent read its prompt?"): a scripted
    auction player states its true situation in even rounds and the other value in odd ones,
    the other's last bid always right. Of 6 rounds, 3 state the value right: own 1/2, other's
    move 1, whole situation 1/2."""
    bench = _bench_sft_module()
    game = get_game("auction")
    assert bench.situation_clauses("my value is 4 and the other bid HIGH last round") == [
        ("own", "my value is 4"), ("other", "the other bid HIGH last round")]
    assert bench.situation_clauses("the other demanded 5 last round and the deal held") == [
        ("other", "the other demanded 5 last round and the deal held")]

    class HalfRight:
        name = "half-right"

        def decide(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
            out = []
            for r in requests:
                truth = game.situation(r.episode.state, r.seat)
                if r.episode.state.t % 2:
                    value = r.episode.state.value(r.seat)
                    truth = truth.replace(f"my value is {value}",
                                          f"my value is {6 - value}")
                out.append(Decision("LOW", f"{truth[0].upper()}{truth[1:]}; I bid LOW.\nLOW"))
            return out

    witness = bench.SituationWitness(HalfRight())
    Engine(Episode(game, witness, StrategyPlayer(get_strategy(game, "Shaded")), seed)
           for seed in range(3)).run()
    shares = bench.situation_shares(witness.seen)
    assert shares["own"]["share"] == 0.5 and shares["own"]["decisions"] == 18
    assert shares["other"]["share"] == 1.0
    assert shares["situation"]["share"] == 0.5
