"""The configuration of the embedded `tiny` model, apart from its build (`sepo.models.tiny`).

This module imports no torch, so that `sepo model build tiny --set ...` checks its settings in
a fraction of a second, before the build's imports (about ten seconds) start.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sepo.errors import UnknownNameError
from sepo.games import game_names

#: Bump when the build procedure (`sepo.models.tiny.build_tiny`) changes in a way that changes
#: its output: the version is part of every build's cache key.
BUILD_VERSION = 1

#: Largest `tiny` a build accepts: pre-training keeps fp32 weights, gradients and two AdamW
#: moments (16 bytes a parameter, 1.6 GB here) on the CPU, where it would take days anyway.
MAX_PARAMETERS = 100_000_000
#: Pre-training examples (`pretrain_steps` × `batch_size`): each is a few KB of text held in
#: memory before training starts; the default build uses 3,840.
MAX_PRETRAIN_EXAMPLES = 1_000_000


class TinyConfig(BaseModel):
    """Architecture and build recipe of the `tiny` model. The defaults give 3.62 M parameters
    (vocabulary 825, tied embeddings) and build in a few minutes on 2 CPU cores
    (docs/BENCHMARKS.md, "Models")."""

    # NaN and ±inf are refused (lr, weights): they would only show as a NaN loss minutes later.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    # --- tokenizer
    #: Upper bound of the BPE vocabulary (special tokens included). The games' text has about
    #: a thousand distinct words, so merges run out near there and the trained vocabulary is
    #: smaller: BPE never merges across words.
    vocab_size: int = Field(2048, ge=300, description="upper bound of the BPE vocabulary, "
                                                     "special tokens included")
    #: Decisions per game whose prompts and answers the BPE is trained on.
    tokenizer_examples: int = Field(2000, ge=1, description="decisions per game the BPE is "
                                                           "trained on")
    # --- architecture (Llama)
    #: Width 256 with 8 heads (3.62 M parameters) since 2026-12-05; before, 192 with 4 heads
    #: and MLP 576 (2.08 M), the build of earlier results in research/, which `sepo model
    #: build tiny --set hidden_size=192 --set num_heads=4 --set num_kv_heads=4 --set
    #: intermediate_size=576` rebuilds (the same cache key). At the pipeline's SFT budgets the
    #: wider model follows the demonstrators in 8 of 10 (game, metric) pairs against 6 of 10
    #: (docs/SFT.md).
    hidden_size: int = Field(256, ge=8, description="model width")
    num_layers: int = Field(4, ge=1, description="transformer layers")
    num_heads: int = Field(8, ge=1, description="attention heads")
    num_kv_heads: int = Field(8, ge=1, description="grouped-query attention when < num_heads")
    intermediate_size: int = Field(768, ge=8, description="MLP inner width")
    #: RoPE positions. The longest prompt (Kuhn, last hand, full history) is 428 tokens with the
    #: default tokenizer and ~610 with the test one (tests/test_models.py checks it fits with
    #: room for an answer); 1024 leaves room for long reasoning.
    max_positions: int = Field(1024, ge=64, description="context length in tokens (RoPE "
                                                        "positions)")
    # --- pre-training (the base stage)
    pretrain_steps: int = Field(240, ge=0, description="pre-training steps on random legal play")
    batch_size: int = Field(16, ge=1, description="pre-training examples per step")
    lr: float = Field(3e-3, gt=0, description="peak AdamW learning rate of pre-training (linear "
                                              "warm-up, then cosine decay)")
    warmup_steps: int = Field(20, ge=0, description="warm-up steps of pre-training")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay of pre-training")
    reasoning_share: float = Field(0.5, ge=0, le=1,
                                   description="share of answers with a reason sentence")
    #: Share of each game in the pre-training mix, relative (games not named: 1). Bargaining's
    #: answer is a 9-token vector that must respect the item counts, the hardest format to
    #: learn, so it gets twice the examples.
    game_weights: dict[str, float] = Field(
        default_factory=lambda: {"bargaining": 2.0},
        description="relative share of each game in the pre-training mix (games not named: 1)")
    #: "answer": loss on the answer and its end-of-turn token only; "all": on every token.
    loss_on: Literal["answer", "all"] = Field(
        "answer", description="pre-training loss on the answer and its end-of-turn token, or "
                              "on every token")
    #: CPU threads for the build (None: torch's default, at most 4; matmuls this small gain
    #: nothing from more). Not part of the cache key: the weights are the same up to float
    #: reduction order.
    threads: int | None = Field(
        None, ge=1, le=1024, description="CPU threads for the build; None: torch's default, "
                                         "at most 4")

    @model_validator(mode="after")
    def _buildable(self) -> TinyConfig:
        # A setting the build cannot use fails here, before the tokenizer and corpus are made
        # (tens of seconds), not in torch afterwards or by running out of memory.
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads "
                             f"{self.num_heads} (each head gets hidden_size / num_heads "
                             "dimensions)")
        head_dim = self.hidden_size // self.num_heads
        if head_dim % 2:
            raise ValueError(f"hidden_size / num_heads = {head_dim} must be even (rotary "
                             "position embeddings rotate pairs of dimensions)")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} must be a multiple of num_kv_heads "
                             f"{self.num_kv_heads} (grouped-query attention shares each "
                             "key/value head among num_heads / num_kv_heads heads)")
        if self.pretrain_steps * self.batch_size > MAX_PRETRAIN_EXAMPLES:
            raise ValueError(f"pretrain_steps × batch_size = "
                             f"{self.pretrain_steps * self.batch_size:,} examples; at most "
                             f"{MAX_PRETRAIN_EXAMPLES:,} (they are all made in memory first)")
        if self.parameters() > MAX_PARAMETERS:
            raise ValueError(f"these settings give about {self.parameters():,} parameters; "
                             f"tiny is built on the CPU, at most {MAX_PARAMETERS:,}")
        games = game_names()
        for name, weight in self.game_weights.items():
            if name not in games:
                raise ValueError(f"game_weights: {UnknownNameError('game', name, games)}")
            if weight < 0:
                raise ValueError(f"game_weights: {name}'s weight must be ≥ 0, got {weight}")
        if all(self.game_weights.get(name, 1.0) == 0 for name in games):
            raise ValueError("game_weights: every game has weight 0, so there is nothing to "
                             "pre-train on")
        return self

    def parameters(self) -> int:
        """The parameter count of the architecture with `vocab_size` tokens (an upper bound:
        the trained vocabulary is smaller), tied embeddings."""
        kv = self.num_kv_heads * (self.hidden_size // self.num_heads)
        attention = 2 * self.hidden_size * self.hidden_size + 2 * self.hidden_size * kv
        layer = attention + 3 * self.hidden_size * self.intermediate_size + 2 * self.hidden_size
        return self.vocab_size * self.hidden_size + self.num_layers * layer + self.hidden_size

    @classmethod
    def for_tests(cls) -> TinyConfig:
        """A ~0.1 M-parameter model that builds in seconds: the `tiny_lm` test fixture."""
        return cls(vocab_size=512, tokenizer_examples=200, hidden_size=64, num_layers=2,
                   num_heads=2, num_kv_heads=2, intermediate_size=128, max_positions=1024,
                   pretrain_steps=10, batch_size=8, lr=1e-2, warmup_steps=2, threads=1)

    def key(self, seed: int, text_digest: str) -> str:
        fields = self.model_dump(exclude={"threads"})
        blob = json.dumps({"config": fields, "seed": seed, "version": BUILD_VERSION,
                           "text": text_digest}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]
