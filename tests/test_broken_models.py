"""Broken models are refused at load time, in one line that names the path and the problem.

Each case copies the session's test-sized tiny model (the `tiny_lm_path` fixture) to a
temporary directory, breaks one thing, and checks both `load_model` (a `SepoError`) and
`sepo model info DIR` (exit code 2, one `error:` line, no traceback). Without these checks
transformers loads most of them with a warning at most: a config of another architecture or
a missing tensor gives randomly initialised weights, NaN weights play "ordinary" games.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from sepo.cli import app
from sepo.errors import SepoError
from sepo.models import load_model

runner = CliRunner()
WEIGHTS = "model.safetensors"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_config(d: Path, **changes: object) -> None:
    config = json.loads((d / "config.json").read_text())
    config.update(changes)
    config = {k: v for k, v in config.items() if v is not None}  # None: delete the key
    (d / "config.json").write_text(json.dumps(config))


def _edit_weights(d: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    weights = load_file(d / WEIGHTS)
    edit(weights)
    save_file(weights, d / WEIGHTS, metadata={"format": "pt"})


def _set_nan(w: dict[str, torch.Tensor]) -> None:
    w["model.layers.0.mlp.down_proj.weight"][0, 0] = float("nan")


def _truncate(d: Path) -> None:
    data = (d / WEIGHTS).read_bytes()
    (d / WEIGHTS).write_bytes(data[: len(data) // 2])


#: name: (how to break the model directory, words the error message must contain)
BREAKAGES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "other architecture": (
        lambda d: _edit_config(d, model_type="gpt2", architectures=["GPT2LMHeadModel"]),
        ("GPT2LMHeadModel", "missing", "unexpected")),
    "unknown model type": (lambda d: _edit_config(d, model_type="no_such_model"),
                           ("config.json", "no_such_model", "does not know")),
    "encoder-only model type": (lambda d: _edit_config(d, model_type="vit"),
                                ("cannot be loaded as a causal language model", "ViTConfig")),
    "no model type": (lambda d: _edit_config(d, model_type=None),
                      ("config.json", "model_type")),
    "missing tensor": (
        lambda d: _edit_weights(d, lambda w: w.pop("model.layers.1.mlp.up_proj.weight")),
        ("1 tensor", "model.layers.1.mlp.up_proj.weight", "missing")),
    "unexpected tensor": (
        lambda d: _edit_weights(d, lambda w: w.update({"model.layers.0.extra.weight":
                                                       torch.zeros(4)})),
        ("model.layers.0.extra.weight", "unexpected")),
    "wrong shape": (
        lambda d: _edit_weights(d, lambda w: w.update({"model.norm.weight": torch.ones(3)})),
        ("model.norm.weight", "wrong shape")),
    "NaN weight": (lambda d: _edit_weights(d, _set_nan),
                   ("model.layers.0.mlp.down_proj.weight", "NaN")),
    "truncated safetensors": (_truncate, (WEIGHTS, "truncated or corrupt")),
    "empty safetensors": (lambda d: (d / WEIGHTS).write_bytes(b""), (WEIGHTS, "corrupt")),
    "garbage config.json": (lambda d: (d / "config.json").write_text("{not json"),
                            ("config.json", "not valid JSON")),
    "garbage tokenizer.json": (lambda d: (d / "tokenizer.json").write_text("{not json"),
                               ("tokenizer.json", "not a valid tokenizer")),
    "tokenizer.json of no tokenizer": (
        lambda d: (d / "tokenizer.json").write_text('{"a": 1}'),
        ("tokenizer.json", "not a valid tokenizer")),
    "garbage tokenizer_config.json": (
        lambda d: (d / "tokenizer_config.json").write_bytes(b"\xff\xfe garbage"),
        ("tokenizer_config.json", "not valid JSON")),
    "broken chat template": (
        lambda d: (d / "chat_template.jinja").write_text("{% for message in %}"),
        ("chat template", "does not compile")),
}


def _assert_cli_refuses(path: Path, words: tuple[str, ...]) -> None:
    result = runner.invoke(app, ["model", "info", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if "error:" in line]
    assert len(errors) == 1, result.output
    assert str(path) in errors[0] and all(w in errors[0] for w in words), errors[0]


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_model_is_refused_in_one_line(
        tiny_lm_path: Path, tmp_path: Path, breakage: str) -> None:
    break_it, words = BREAKAGES[breakage]
    model_dir = _copy(tiny_lm_path, tmp_path / "model")
    break_it(model_dir)
    with pytest.raises(SepoError) as err:
        load_model(str(model_dir), device="cpu", progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert str(model_dir) in message and all(w in message for w in words), message
    _assert_cli_refuses(model_dir, words)


def test_an_intact_model_loads(tiny_lm_path: Path, tmp_path: Path) -> None:
    """The checks refuse nothing that is whole: the tiny model as saved (tied embeddings, so
    no `lm_head.weight`), and the same with the tied `lm_head.weight` stored too."""
    model_dir = _copy(tiny_lm_path, tmp_path / "model")
    model, _ = load_model(str(model_dir), device="cpu", progress=False)
    assert model.config.tie_word_embeddings
    _edit_weights(model_dir, lambda w: w.update(
        {"lm_head.weight": w["model.embed_tokens.weight"].clone()}))
    load_model(str(model_dir), device="cpu", progress=False)
    result = runner.invoke(app, ["model", "info", str(model_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["architecture"] == "LlamaForCausalLM"


@pytest.fixture(scope="module")
def adapter_dir(tiny_lm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter directory (peft) on the tiny model, as SEPO's LoRA runs save one."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_model(str(tiny_lm_path), device="cpu", progress=False)
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4,
                                                  target_modules=["q_proj", "v_proj"]))
    path = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _adapter_weights(d: Path) -> Path:
    return d / "adapter_model.safetensors"


ADAPTER_BREAKAGES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "truncated adapter weights": (
        lambda d: _adapter_weights(d).write_bytes(_adapter_weights(d).read_bytes()[:100]),
        ("adapter_model.safetensors", "truncated or corrupt")),
    "adapter missing a tensor": (
        lambda d: save_file({k: v for k, v in load_file(_adapter_weights(d)).items()
                             if "layers.1" not in k}, _adapter_weights(d)),
        ("LoRA adapter does not fit", "missing adapter keys", "lora_A")),
    "garbage adapter_config.json": (
        lambda d: (d / "adapter_config.json").write_text("{not json"),
        ("adapter_config.json", "not valid JSON")),
}


@pytest.mark.parametrize("breakage", sorted(ADAPTER_BREAKAGES))
def test_a_broken_lora_adapter_is_refused_in_one_line(
        adapter_dir: Path, tmp_path: Path, breakage: str) -> None:
    break_it, words = ADAPTER_BREAKAGES[breakage]
    broken = _copy(adapter_dir, tmp_path / "adapter")
    load_model(str(broken), device="cpu", progress=False)  # whole, it loads
    break_it(broken)
    with pytest.raises(SepoError) as err:
        load_model(str(broken), device="cpu", progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert str(broken) in message and all(w in message for w in words), message
    _assert_cli_refuses(broken, words)


def test_model_info_refuses_a_damaged_build_record(tiny_lm_path: Path, tmp_path: Path) -> None:
    """`sepo model info` reads the tiny build's `sepo_build.json` too: damaged, one line."""
    model_dir = _copy(tiny_lm_path, tmp_path / "model")
    (model_dir / "sepo_build.json").write_text("{not json")
    _assert_cli_refuses(model_dir, ("sepo_build.json", "not valid JSON"))
