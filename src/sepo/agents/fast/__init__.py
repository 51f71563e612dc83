"""The fast CPU engine: sepo's own batched decoding and loss forwards on `transformers` internals.

It is what makes batched play and the training step fast on the CPU (docs/BENCHMARKS.md), and
it is the only code in sepo that reaches into `transformers`' internals:

- `sampling`: `sample_batch`, the rollout sampler (finished rows leave the batch, the shared
  system prompt and identical prompts computed once, a private generator), and
  `choose_tokens`, the constrained fallback's cached decoding, both on `BatchState`;
- `cascade`: attention over a shared prefix whose cache is kept once (an attention function
  registered with `AttentionInterface`);
- `cache`: `GrowingKVLayer`, a subclass of `DynamicLayer` that grows and compacts in place,
  its buffer pool, and the shims for the cache's argument names across `transformers` versions;
- `prefix_sharing`: the SFT and SEPO loss forwards that run a batch's shared prompt prefix once
  (a patched backbone `forward`) and the loss's packed rows (a registered attention function).

`prefix_sharing` lives here rather than beside the trainer: it is built from the same pieces
as the sampler (the growing cache, the cache-argument shims, the attention-function switch,
`cascade_supported`, `MIN_SHARED_PREFIX`), so one package holds every dependency on
`transformers` internals, and a `transformers` release that breaks them breaks this package
alone.

Everything here is behind one switch, `SamplingConfig.engine` (`SEPOConfig.engine` for
training, `sepo eval --engine`): `"fast"` (the default) uses it, `"generate"` uses the plain
engine (`sepo.agents.plain`: `transformers`' public `generate` and plain forward passes) and
never imports this package. Where it cannot run a model (`unsupported`), or cannot be imported,
the agent falls back to the plain engine with a warning (`sepo.agents.engines`).
"""

from sepo.agents.fast.cache import BufferPool
from sepo.agents.fast.prefix_sharing import packed_completion_logits, shared_prompt_prefix
from sepo.agents.fast.sampling import BatchState, choose_tokens, sample_batch, unsupported

__all__ = [
    "BatchState",
    "BufferPool",
    "choose_tokens",
    "packed_completion_logits",
    "sample_batch",
    "shared_prompt_prefix",
    "unsupported",
]
