"""Shared pytest fixtures.

`tiny_lm` is a very small model of the `tiny` architecture (Llama, the tiny tokenizer and chat
template, a short pre-training on random legal play), built once per test session in a few
seconds. It is shared: a test that trains must not change it in place; load a fresh copy with
`sepo.models.load_model(str(tiny_lm_path))` (or `copy.deepcopy` the model) instead.

`own_cache_miniature` builds random miniatures of architectures whose cache is not all full
attention, which is what GPU users' models (Gemma 4, Qwen3.5) are.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

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


#: Random miniatures of architectures whose cache is not all full attention, by HF model type:
#: sliding-window layers (Mistral; Gemma 4 mixes them with full attention) and Qwen3.5's
#: linear-attention (Gated DeltaNet) layers. Values: the fields beyond the common small shape.
OWN_CACHE_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "mistral": {"sliding_window": 8},
    "gemma4_text": {"sliding_window": 8, "hidden_size_per_layer_input": 0,
                    "layer_types": ["sliding_attention", "full_attention"]},
    "qwen3_5_text": {"layer_types": ["linear_attention", "full_attention"],
                     "linear_num_key_heads": 2, "linear_num_value_heads": 2,
                     "linear_key_head_dim": 8, "linear_value_head_dim": 8},
}


@pytest.fixture(params=sorted(OWN_CACHE_ARCHITECTURES))
def own_cache_miniature(request: pytest.FixtureRequest) -> Callable[[int], PreTrainedModel]:
    """A function of the vocabulary size that seeds torch with 0 and returns a randomly
    initialised 2-layer model of one of `OWN_CACHE_ARCHITECTURES` (one test per type)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type = request.param

    def build(vocab_size: int) -> PreTrainedModel:
        extra = dict(OWN_CACHE_ARCHITECTURES[model_type])
        if model_type == "gemma4_text":
            extra["vocab_size_per_layer_input"] = vocab_size
        torch.manual_seed(0)
        config = AutoConfig.for_model(
            model_type, vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
            max_position_embeddings=256, pad_token_id=0, **extra)
        return AutoModelForCausalLM.from_config(config)

    return build
