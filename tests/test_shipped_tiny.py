"""The canonical `tiny` ships in the package: it is today's default build, its weights are the
ones its build record names, and `--model tiny` loads it without building anything."""

from __future__ import annotations

from pathlib import Path

import pytest

import sepo.models.tiny as tiny
from sepo.models.loading import load_model, resolve, weights_digest
from sepo.models.tiny import TinyConfig, build_info, shipped_tiny

SHIPPED = Path(tiny.__file__).resolve().parents[1] / "data" / "tiny"


def test_the_shipped_build_is_the_default_configs_build() -> None:
    # Fails when TinyConfig's defaults, the build code (BUILD_VERSION) or the games' text
    # change: then rebuild (`sepo model build tiny --force`), copy the cache directory it
    # prints to src/sepo/data/tiny, and re-measure what depends on the weights.
    info = build_info(SHIPPED)
    assert info is not None, f"no build record in {SHIPPED}"
    assert info["config"] == TinyConfig().model_dump()
    assert info["seed"] == 0
    assert "tiny-" + info["key"] == tiny.tiny_path().name
    assert shipped_tiny() == SHIPPED


def test_the_shipped_weights_are_the_recorded_build() -> None:
    model, tokenizer = load_model(str(SHIPPED), device="cpu", dtype="float32", progress=False)
    info = build_info(SHIPPED)
    assert info is not None
    assert weights_digest(model) == info["weights_digest"]
    assert sum(p.numel() for p in model.parameters()) == info["parameters"]
    assert len(tokenizer) == info["vocab_size"]


def test_tiny_resolves_to_the_shipped_build_without_building(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tiny was built although the package ships it")

    monkeypatch.setattr(tiny, "build_tiny", refuse)
    assert Path(resolve("tiny")) == SHIPPED
