"""The batched sampler's cache: cascade attention over a shared prefix kept once, the growing
key/value layer's in-place compaction, and the categorical draw.

Cascade attention must be the same function as one attention over the concatenated cache, so
it is checked three ways: the attention function against SDPA on hand-built tensors (grouped
queries, padding holes, causal prefill and one-token decoding), whole sampling runs against the
plain repeated-prefix path (same greedy tokens, log-probabilities of an unpadded forward), and
the cache layer's row moves against `index_select`.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lm_reference import forward_logprobs
from sepo.agents.decoding import draw_categorical
from sepo.agents.fast import sampling
from sepo.agents.fast.cache import BufferPool, GrowingKVLayer
from sepo.agents.fast.cascade import (
    cascade_attention_forward,
    cascade_supported,
    row_attention_mask,
)
from sepo.agents.fast.sampling import MIN_SHARED_PREFIX, sample_batch


def gqa_llama(seed: int = 0) -> LlamaForCausalLM:
    """A random two-layer Llama with grouped-query attention (4 query heads, 2 kv heads) and
    large weights, so its greedy text depends sharply on every token it attends to."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         initializer_range=0.3, max_position_embeddings=512,
                         tie_word_embeddings=False, bos_token_id=None, eos_token_id=1,
                         pad_token_id=0)
    return LlamaForCausalLM(config).eval()


class StopAfter:
    """Row r ends after `lengths[r]` tokens: rows end apart, so the batch is compacted."""

    def __init__(self, lengths: Sequence[int]) -> None:
        self.lengths, self.count = list(lengths), [0] * len(lengths)

    def update(self, rows: Sequence[int], tokens: Sequence[int]) -> list[bool]:
        for r in rows:
            self.count[r] += 1
        return [self.count[r] >= self.lengths[r] for r in rows]


def test_cascade_attention_equals_attention_over_the_concatenated_cache() -> None:
    """Prefix (kept once) + each row's own keys with left-padding holes, 4 query heads on 2
    kv heads, for a 5-token causal prefill and for a 1-token decoding step: the merged output
    is SDPA's over [prefix | own keys] with the same mask, to float rounding."""
    torch.manual_seed(0)
    batch, heads, kv_heads, dim, prefix_len, own_len = 3, 4, 2, 8, 6, 7
    module = SimpleNamespace(layer_idx=1)
    shape = (1, kv_heads, prefix_len, dim)
    prefix = [(torch.empty(0), torch.empty(0)), (torch.randn(shape), torch.randn(shape))]
    keys = torch.randn(batch, kv_heads, own_len, dim)
    values = torch.randn(batch, kv_heads, own_len, dim)
    own_mask = torch.ones(batch, own_len, dtype=torch.long)
    own_mask[1, :2] = 0  # left padding of row 1
    own_mask[2, :4] = 0  # row 2: its first real token is the 5th
    for q_len in (5, 1):
        query = torch.randn(batch, heads, q_len, dim)
        mask = row_attention_mask(own_mask, q_len, torch.float32)
        out, _ = cascade_attention_forward(module, query, keys, values, mask, scaling=0.3,
                                           sepo_prefix=prefix)
        # Reference: every row attends to the prefix, then to its own keys under the mask.
        full_k = torch.cat([prefix[1][0].expand(batch, -1, -1, -1), keys], dim=2)
        full_v = torch.cat([prefix[1][1].expand(batch, -1, -1, -1), values], dim=2)
        full_mask = torch.cat([torch.zeros(batch, 1, q_len, prefix_len), mask], dim=-1)
        expected = torch.nn.functional.scaled_dot_product_attention(
            query, full_k.repeat_interleave(2, dim=1), full_v.repeat_interleave(2, dim=1),
            attn_mask=full_mask, scale=0.3).transpose(1, 2)
        real = own_mask[:, -q_len:].bool()  # padding queries compute something unseen
        assert out.shape == (batch, q_len, heads, dim)
        assert torch.allclose(out[real], expected[real], atol=1e-5)


def test_row_mask_is_causal_over_real_tokens_and_never_empty() -> None:
    mask = torch.tensor([[0, 1, 1, 1]])
    allowed = row_attention_mask(mask, 3, torch.float32)[0, 0] == 0
    # Queries are keys 1..3; key 0 is padding and seen by no query.
    assert allowed.tolist() == [[False, True, False, False],
                                [False, True, True, False],
                                [False, True, True, True]]
    padded_query = row_attention_mask(torch.tensor([[0, 0, 1]]), 3, torch.float32)[0, 0] == 0
    assert padded_query.tolist()[0] == [True, False, False]  # a padding query sees itself


@pytest.mark.parametrize(("temperature", "chunk_tokens"), [(0.0, 8192), (1.0, 8192), (0.0, 4)])
def test_cascade_sampling_matches_the_repeated_prefix(temperature: float, chunk_tokens: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The same prompts through the cascade path and the plain one (prefix repeated over the
    rows): a shared prefix, repeated prompts, different lengths, rows ending apart; with tiny
    prefill chunks, every distinct prompt is its own pass, right-aligned into the batch with a
    hole before it. Greedy tokens agree, and both paths' log-probabilities are those of an
    unpadded forward."""
    monkeypatch.setattr(sampling, "PREFILL_CHUNK_TOKENS", chunk_tokens)
    model = gqa_llama()
    assert cascade_supported(model)
    prefix = list(range(10, 10 + MIN_SHARED_PREFIX + 4))
    a, b, c = [*prefix, 50, 51, 52], [*prefix, 60], [*prefix, 70, 71, 72, 73, 74, 75]
    prompts = [a, b, a, c, b, c]
    runs = {}
    calls: list[str] = []
    hook = model.register_forward_pre_hook(
        lambda m, args, kw: calls.append(m.config._attn_implementation), with_kwargs=True)
    for cascade in (True, False):
        calls.clear()
        runs[cascade] = sample_batch(
            model, prompts, temperature=temperature, top_p=1.0, max_new_tokens=12, pad_id=0,
            watcher=StopAfter([3, 12, 5, 8, 1, 12]), cascade=cascade,
            generator=torch.Generator().manual_seed(4))
        assert ("sepo_cascade" in calls) == cascade
        assert model.config._attn_implementation == "sdpa"  # switched back after each call
        for prompt, (tokens, logprobs) in zip(prompts, runs[cascade], strict=True):
            expected = forward_logprobs(model, prompt, tokens, temperature or 1.0)
            assert logprobs == pytest.approx(expected, abs=1e-4)
    hook.remove()
    assert [len(t) for t, _ in runs[True]] == [3, 12, 5, 8, 1, 12]
    if temperature == 0:
        assert [t for t, _ in runs[True]] == [t for t, _ in runs[False]]
        for prompt, (tokens, _) in zip(prompts, runs[True], strict=True):
            alone = sample_batch(model, [prompt], temperature=0, top_p=1.0,
                                 max_new_tokens=len(tokens), pad_id=0,
                                 watcher=StopAfter([len(tokens)]))
            assert tokens == alone[0][0]


def test_cascade_runs_only_where_it_was_measured() -> None:
    model = gqa_llama()
    assert cascade_supported(model)
    model.config._attn_implementation = "eager"
    assert cascade_supported(model)
    model.config._attn_implementation = "flash_attention_2"
    assert not cascade_supported(model)  # not through the sdpa/eager attention interface
    model.config._attn_implementation = "sdpa"
    model.config.model_type = "gemma2"  # soft-capped logits: not implemented by the cascade
    assert not cascade_supported(model)


def test_growing_layer_moves_rows_like_index_select_and_keeps_appending() -> None:
    """A compaction (rows dropped, order kept) moves rows inside the buffers; a reorder with
    repeats makes new ones. Either way the cache holds exactly the selected rows' tokens, and
    later appends land after them."""
    torch.manual_seed(0)
    layer = GrowingKVLayer(reserve=2)
    keys, values = torch.randn(5, 2, 3, 4), torch.randn(5, 2, 3, 4)
    layer.update(keys, values)
    buffer = layer._buffers[0]
    for index in ([0, 2, 3], [1, 1, 0, 2, 2]):  # a compaction, then repeats
        index_t = torch.tensor(index)
        expected_k, expected_v = layer.keys.index_select(0, index_t), layer.values.index_select(
            0, index_t)
        layer.reorder_cache(index_t)
        assert torch.equal(layer.keys, expected_k) and torch.equal(layer.values, expected_v)
        if index == [0, 2, 3]:
            assert layer._buffers[0] is buffer  # moved in place, no new buffer
    new_k, new_v = torch.randn(5, 2, 4, 4), torch.randn(5, 2, 4, 4)  # outgrows the reserve
    k, v = layer.update(new_k, new_v)
    assert torch.equal(k, torch.cat([expected_k, new_k], dim=2))
    assert torch.equal(v, torch.cat([expected_v, new_v], dim=2))


def test_categorical_draw_follows_the_weights_and_never_draws_a_zero() -> None:
    weights = torch.tensor([0.0, 2.0, 0.0, 1.0, 1.0, 0.0]).repeat(8000, 1)
    drawn = draw_categorical(weights, torch.Generator().manual_seed(0))
    counts = torch.bincount(drawn, minlength=6) / 8000
    assert counts[[0, 2, 5]].tolist() == [0, 0, 0]
    assert counts[[1, 3, 4]].tolist() == pytest.approx([0.5, 0.25, 0.25], abs=0.02)
    one_hot = torch.tensor([[0.0, 0.0, 3.0]])
    assert draw_categorical(one_hot, None).tolist() == [2]


def test_categorical_draw_is_torch_multinomials_draw_from_the_same_generator() -> None:
    """Bit for bit, including what is left in the generator: sampled play stays the play of
    the runs made when the sampler called `torch.multinomial` (docs/RESULTS.md)."""
    logits = torch.randn(64, 825, generator=torch.Generator().manual_seed(1)) * 4
    probs = torch.softmax(logits, dim=-1)
    nucleus = probs.masked_fill(probs < probs.max(dim=-1, keepdim=True).values / 50, 0.0)
    for weights in (probs, nucleus, probs[:1]):
        ours, theirs = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
        for _ in range(20):
            assert torch.equal(draw_categorical(weights, ours),
                               torch.multinomial(weights, 1, generator=theirs).squeeze(1))
        assert torch.equal(ours.get_state(), theirs.get_state())


def test_pooled_buffers_are_reused_and_their_stale_contents_change_nothing() -> None:
    """An agent's pool hands a finished batch's cache buffers to the next batch, holding the
    old keys and values where the new batch has holes: the samples are those of fresh
    buffers."""
    model = gqa_llama()
    prefix = list(range(10, 10 + MIN_SHARED_PREFIX))
    first = [[*prefix, 40 + k, 41, 42, 43, 44, 45] for k in range(4)]
    second = [[*prefix, 70], [*prefix, 71, 72, 73, 74, 75, 76], [*prefix, 71, 72, 73, 74, 75, 76]]
    pool = BufferPool()

    def run(prompts: list[list[int]], pool: BufferPool | None) -> list[list[int]]:
        sampled = sample_batch(model, prompts, temperature=0, top_p=1.0, max_new_tokens=8,
                               pad_id=0, watcher=StopAfter([8] * len(prompts)), pool=pool)
        return [tokens for tokens, _ in sampled]

    run(first, pool)
    spare = list(pool._spare)
    # Keys and values of each layer, of the prefill's chunk and of the batch decoded.
    assert len(spare) == 2 * 2 * model.config.num_hidden_layers
    assert run(second, pool) == run(second, None)
    assert any(t.data_ptr() in {s.data_ptr() for s in pool._spare} for t in spare)


def test_pool_takes_the_smallest_fit_and_keeps_under_its_limit() -> None:
    like = torch.zeros(1)
    pool = BufferPool(limit_bytes=4 * 95)
    for size in (60, 10, 30):
        pool.give(torch.zeros(size))
    assert sorted(t.numel() for t in pool._spare) == [30, 60]  # over 95 floats: the smallest went
    taken = pool.take((5, 5), like)  # 25 → the 30
    assert taken.shape == (5, 5) and [t.numel() for t in pool._spare] == [60]
    assert pool.take((200,), like).abs().sum() == 0  # nothing fits: a new zero tensor
