"""The embedded `tiny` model: a few-million-parameter Llama trained here, on the games' text.

`build_tiny` trains a byte-level BPE tokenizer on the games' prompts and answers, then
"pre-trains" a `LlamaForCausalLM` on transcripts of random legal play (`sepo.models.corpus`).
That is the model's *base* stage: it learns the answer format (an action on the last line,
then end of turn) and no strategy. The result is an ordinary `transformers` checkpoint
(`save_pretrained`, safetensors, with the tokenizer and its chat template), so everything
downstream runs the code path a 4B model takes. Builds are deterministic by seed and cached
under `cache_dir()/models/tiny-<key>`, the key covering the config, the seed, the build code
version and a digest of the training text.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from sepo.console import new_progress
from sepo.games.base import AGENT, derive_seed
from sepo.machine import cpu_name
from sepo.models import corpus
from sepo.models.paths import cache_dir

# The config lives apart, without torch, so that the CLI checks it before importing this
# module; re-exported here, where it has always been. BUILD_VERSION is bumped there.
from sepo.models.tiny_config import (  # noqa: F401
    BUILD_VERSION,
    MAX_PARAMETERS,
    MAX_PRETRAIN_EXAMPLES,
    TinyConfig,
)
from sepo.models.util import save_model_dir, weights_digest
from sepo.prompts import chat_messages

BUILD_INFO = "sepo_build.json"

PAD, SYSTEM, USER, ASSISTANT, END = "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = (PAD, SYSTEM, USER, ASSISTANT, END)

#: Each turn is `<|role|>\n{content}<|end|>\n`; `<|end|>` is the end-of-sequence token, so a
#: model stops after its answer. The generation prompt opens an assistant turn.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('unknown chat role ' + message['role']) }}"
    "{%- endif -%}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\\n' }}{%- endif -%}"
)


# ------------------------------------------------------------------ tokenizer
def chat_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a trained `tokenizers.Tokenizer` with the chat template and special tokens."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=END, pad_token=PAD,
        extra_special_tokens=[SYSTEM, USER, ASSISTANT], chat_template=CHAT_TEMPLATE,
        padding_side="left", model_max_length=None, clean_up_tokenization_spaces=False,
    )


def train_tokenizer(texts: Sequence[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `texts`, with the chat special tokens and template.

    Byte-level: every byte has a token, so any text a model writes (or a user types) encodes
    and decodes back exactly; nothing is unrepresentable.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return chat_tokenizer(tok)


def tokenizer_texts(examples: Sequence[corpus.Example]) -> list[str]:
    """The training text of the tokenizer: each distinct message and answer once (system
    prompts repeat in every example; counting them thousands of times would skew the merges
    toward them)."""
    seen: dict[str, None] = {}
    for ex in examples:
        for m in ex.messages:
            seen.setdefault(m["content"], None)
        seen.setdefault(ex.completion, None)
    return list(seen)


# ------------------------------------------------------------------ model
def llama_config(config: TinyConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=config.max_positions, tie_word_embeddings=True,
        rms_norm_eps=1e-5, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def encode_example(tokenizer: PreTrainedTokenizerFast, ex: corpus.Example) -> tuple[list[int], int]:
    """Token ids of prompt + answer + end of turn, and the prompt's length.

    Prompt and answer are encoded separately and concatenated: that is exactly the sequence an
    agent sees when it generates after the prompt.
    """
    prompt = tokenizer.apply_chat_template(list(ex.messages), add_generation_prompt=True,
                                           tokenize=False)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    answer_ids = tokenizer.encode(ex.completion + END, add_special_tokens=False)
    return prompt_ids + answer_ids, len(prompt_ids)


def _batch_order(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of batches: shuffled, then sorted by length within windows of 16 batches so
    each batch holds similar lengths (little padding; Kuhn prompts are twice IPD's), then the
    batches shuffled."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 16
    batches = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: lengths[i])
        batches.extend(chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def _batches(encoded: list[tuple[list[int], int]], batch_size: int, steps: int, pad_id: int,
             rng: random.Random, *, answer_only: bool = True,
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`steps` batches (input ids, attention mask, labels), right-padded.

    Labels cover the answer and its end-of-turn token only (-100 elsewhere): the base stage
    teaches the answer format, and the fixed system prompts, which are most of the tokens,
    would otherwise dominate the loss of a model this small.
    """
    lengths = [len(seq) for seq, _ in encoded]
    pending: list[list[int]] = []
    for _ in range(steps):
        if not pending:
            pending = _batch_order(lengths, batch_size, rng)
        idx = pending.pop()
        width = max(lengths[i] for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        labels = torch.full((len(idx), width), -100, dtype=torch.long)
        for row, i in enumerate(idx):
            seq, n_prompt = encoded[i]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
            start = n_prompt if answer_only else 1
            labels[row, start : len(seq)] = torch.tensor(seq[start:])
        yield ids, mask, labels


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n if n is not None else min(4, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pretrain(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast,
             examples: Sequence[corpus.Example], config: TinyConfig, seed: int, *,
             progress: bool = True) -> list[float]:
    """The base stage: AdamW with linear warm-up and cosine decay on answer tokens.

    Returns the loss of every step.
    """
    encoded = [encode_example(tokenizer, ex) for ex in examples]
    too_long = max((len(s) for s, _ in encoded), default=0)
    if too_long > config.max_positions:
        raise ValueError(f"a training example has {too_long} tokens, more than max_positions="
                         f"{config.max_positions}; raise TinyConfig.max_positions")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=config.lr, betas=(0.9, 0.95))
    steps, warm = config.pretrain_steps, config.warmup_steps

    def lr_factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    rng = random.Random(derive_seed(seed, 7))
    losses: list[float] = []
    model.train()
    with _progress(progress, "pre-training tiny", steps) as advance:
        for ids, mask, labels in _batches(encoded, config.batch_size, steps,
                                          tokenizer.pad_token_id, rng,
                                          answer_only=config.loss_on == "answer"):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            advance(f"loss {losses[-1]:.3f}")
    model.eval()
    return losses


@contextmanager
def _progress(show: bool, label: str, total: int) -> Iterator[Any]:
    """A rich progress bar (or nothing); yields `advance(status)`."""
    if not show:
        yield lambda status="": None
        return

    with new_progress("{task.description}", "bar", "count", "elapsed", "remaining",
                      "{task.fields[status]}") as bar:
        task = bar.add_task(label, total=total, status="")

        def advance(status: str = "") -> None:
            bar.update(task, advance=1, status=status)

        yield advance


# ------------------------------------------------------------------ build
def build_corpus(config: TinyConfig, seed: int) -> tuple[list[corpus.Example],
                                                          list[corpus.Example], list[str]]:
    """(tokenizer examples, pre-training examples, game names) for a build."""
    games = corpus.available_games()
    if not games:
        raise RuntimeError("no game is available to build the tiny model from")
    tok_examples = [ex for i, g in enumerate(games)
                    for ex in corpus.examples(g, config.tokenizer_examples,
                                              derive_seed(seed, 1, i),
                                              reasoning_share=config.reasoning_share)]
    n_train = config.pretrain_steps * config.batch_size
    train_examples = corpus.mixed_examples(games, n_train, derive_seed(seed, 2),
                                           reasoning_share=config.reasoning_share,
                                           weights=config.game_weights)
    return tok_examples, train_examples, [g.name for g in games]


def tiny_path(config: TinyConfig = TinyConfig(), seed: int = 0, *,  # noqa: B008
              root: Path | None = None) -> Path:
    """Where the build of (`config`, `seed`) lives (whether built or not)."""
    tok_examples, train_examples, _ = build_corpus(config, seed)
    digest = corpus.digest([*tok_examples, *train_examples])
    return _models_dir(root) / f"tiny-{config.key(seed, digest)}"


def shipped_tiny() -> Path | None:
    """The canonical build that ships in the package (`sepo/data/tiny`), when it is the build
    of today's default config and seed 0; else None (then `tiny` is built into the cache).

    Shipped so that every host starts from the same weights (a build on another CPU differs by
    float rounding, and so does everything trained from it) and nobody waits for a build.
    `sepo model build tiny` still rebuilds it and says whether this host's digest matches.
    """
    path = Path(str(resources.files("sepo").joinpath("data", "tiny")))
    info = build_info(path) if path.is_dir() else None
    if info is None or "tiny-" + str(info.get("key")) != tiny_path().name:
        return None
    return path


def _models_dir(root: Path | None) -> Path:
    return (root if root is not None else cache_dir()) / "models"


def build_tiny(config: TinyConfig = TinyConfig(), seed: int = 0, *,  # noqa: B008
               force: bool = False, progress: bool = True, root: Path | None = None) -> Path:
    """Build (or find in the cache) the tiny model of `config` and `seed`; returns its directory.

    The directory is an ordinary `save_pretrained` checkpoint (model, tokenizer, chat
    template) plus `sepo_build.json` (config, seed, games, timings, losses). The build is
    written to a temporary directory and renamed into place, so an interrupted build never
    leaves a half-written model in the cache. `root` overrides the cache directory.
    """
    t0 = time.perf_counter()
    tok_examples, train_examples, game_list = build_corpus(config, seed)
    digest = corpus.digest([*tok_examples, *train_examples])
    target = _models_dir(root) / f"tiny-{config.key(seed, digest)}"
    if (target / BUILD_INFO).exists() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    corpus_s = time.perf_counter() - t0

    with _torch_threads(config.threads):
        t1 = time.perf_counter()
        tokenizer = train_tokenizer(tokenizer_texts(tok_examples), config.vocab_size)
        tokenizer.model_max_length = config.max_positions
        tokenizer_s = time.perf_counter() - t1

        torch.manual_seed(derive_seed(seed, 3))
        model = LlamaForCausalLM(llama_config(config, tokenizer))
        t2, cpu2 = time.perf_counter(), time.process_time()
        losses = pretrain(model, tokenizer, train_examples, config, seed, progress=progress)
        pretrain_s, pretrain_cpu_s = time.perf_counter() - t2, time.process_time() - cpu2

    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    info = {
        "name": "tiny", "seed": seed, "config": config.model_dump(), "version": BUILD_VERSION,
        "key": config.key(seed, digest),
        "games": game_list, "text_digest": digest,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "seconds": {"corpus": round(corpus_s, 3), "tokenizer": round(tokenizer_s, 3),
                    "pretrain": round(pretrain_s, 3),
                    # CPU time of the process (all its threads): robust to other load
                    "pretrain_cpu": round(pretrain_cpu_s, 3)},
        "loss_first": losses[0] if losses else None,
        "loss_last": sum(losses[-10:]) / len(losses[-10:]) if losses else None,
        "torch_threads": config.threads or min(4, torch.get_num_threads()),
        # What a different build elsewhere would differ by (see `weights_digest`).
        "weights_digest": weights_digest(model),
        "torch": torch.__version__,
        "cpu": cpu_name(),
    }
    return save_model_dir(target, model, tokenizer, BUILD_INFO, info, progress=progress)


def build_info(path: Path) -> dict[str, Any] | None:
    """The `sepo_build.json` of a tiny build, or None for other checkpoints."""
    f = Path(path) / BUILD_INFO
    return json.loads(f.read_text()) if f.exists() else None


# ------------------------------------------------------------------ format check
def format_check(model: Any, tokenizer: Any, games: Sequence[Any] | None = None, *,
                 decisions: int = 32, seed: int = 0, reasoning: bool = False,
                 do_sample: bool = False, temperature: float = 1.0, max_new_tokens: int = 32,
                 batch_size: int = 32) -> dict[str, dict[str, Any]]:
    """How well a model answers in the games' format: per game, the share of `decisions`
    random-play decisions whose generated answer parses to a legal action (`parse_rate`), the
    counts of the actions named, and their entropy divided by the log of the number of
    distinct legal actions met (`action_entropy`, 1 = uniform, 0 = always the same).
    """

    games = list(games) if games is not None else corpus.available_games()
    out: dict[str, dict[str, Any]] = {}
    for game in games:
        prompts, states = [], []
        legal_texts: set[str] = set()
        episode = 0
        while len(prompts) < decisions:
            for state in corpus.random_play_states(game, derive_seed(seed, 5, episode)):
                msgs = chat_messages(game, state, AGENT, reasoning=reasoning)
                prompts.append(tokenizer.apply_chat_template(msgs, add_generation_prompt=True,
                                                             tokenize=False))
                states.append(copy.deepcopy(state))
                legal_texts.update(game.format_action(a) for a in game.legal_actions(state, AGENT))
                if len(prompts) == decisions:
                    break
            episode += 1
        texts = generate_texts(model, tokenizer, prompts, do_sample=do_sample,
                               temperature=temperature, max_new_tokens=max_new_tokens,
                               batch_size=batch_size, seed=seed)
        counts: dict[str, int] = {}
        parsed = 0
        for text, state in zip(texts, states, strict=True):
            action = game.parse(text, state, AGENT)
            if action is not None:
                parsed += 1
                name = game.format_action(action)
                counts[name] = counts.get(name, 0) + 1
        total = sum(counts.values())
        entropy = -sum(c / total * math.log(c / total) for c in counts.values()) if total else 0.0
        out[game.name] = {
            "parse_rate": parsed / len(texts),
            "action_entropy": entropy / math.log(len(legal_texts)) if len(legal_texts) > 1 else 0.0,
            "actions": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
            "example": texts[0],
        }
    return out


@torch.no_grad()
def generate_texts(model: Any, tokenizer: Any, prompts: Sequence[str], *, do_sample: bool,
                   temperature: float = 1.0, max_new_tokens: int = 32, batch_size: int = 32,
                   seed: int = 0) -> list[str]:
    """Batched generation of the answers to chat-formatted prompts (left-padded)."""
    torch.manual_seed(derive_seed(seed, 6))
    texts: list[str] = []
    for b in range(0, len(prompts), batch_size):
        enc = tokenizer(list(prompts[b : b + batch_size]), return_tensors="pt", padding=True,
                        add_special_tokens=False).to(model.device)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0} \
            if do_sample else {"do_sample": False}
        out = model.generate(**enc, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id, **sampling)
        texts.extend(tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:],
                                            skip_special_tokens=True))
    return texts
