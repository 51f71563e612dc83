"""Shared pytest fixtures.

`tiny_lm` is a very small model of the `tiny` architecture (Llama, the tiny tokenizer and chat
template, a short pre-training on random legal play), built once per test session in a few
seconds. It is shared: a test that trains must not change it in place; load a fresh copy with
`sepo.models.load_model(str(tiny_lm_path))` (or `copy.deepcopy` the model) instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sepo.models import load_model
from sepo.models.tiny import TinyConfig, build_tiny


@pytest.fixture(scope="session")
def tiny_lm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of the session's test-sized tiny model (a `save_pretrained` checkpoint)."""
    root = tmp_path_factory.mktemp("sepo-cache")
    return build_tiny(TinyConfig.for_tests(), seed=0, progress=False, root=root)


@pytest.fixture(scope="session")
def tiny_lm(tiny_lm_path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) of the test-sized tiny model, on CPU, float32, eval mode."""
    return load_model(str(tiny_lm_path), device="cpu", dtype="float32")
