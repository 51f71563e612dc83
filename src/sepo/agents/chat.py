"""Token-level plumbing of the LM agent: prompts, end-of-sequence ids, reasoning blocks, padding.

Everything that turns chat messages into token ids lives here, so the agent, the constrained
fallback, the Kuhn policy reader (and the SFT data and the trainer, which should call
`build_prompt` too) all tokenize a decision's prompt in exactly the same way.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from jinja2 import TemplateError

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True, slots=True)
class Prompt:
    """A rendered prompt: its text, its token ids, and whether it leaves a `<think>` open.

    Some chat templates end the generation prompt inside a reasoning block (`...<think>\\n`);
    the model's answer then only starts after `</think>`.
    """

    text: str
    ids: list[int]
    think_open: bool
    #: Whether `ids` were encoded with the tokenizer's special tokens (BOS); only when the
    #: tokenizer has no chat template, since templates write their own.
    add_special_tokens: bool


def render_chat(tokenizer: Any, messages: Sequence[dict[str, str]]) -> tuple[str, bool]:
    """The chat template applied to `messages` with the generation prompt.

    Returns the text and whether it already holds the special tokens (it does when a chat
    template was used). Templates that reject a system turn (Gemma-style) get the system text
    folded into the first user turn; tokenizers without a template (base models) get a plain
    "System:/User:/Assistant:" transcript.
    """
    if getattr(tokenizer, "chat_template", None):
        try:
            text = tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, tokenize=False)
        except TemplateError:
            text = tokenizer.apply_chat_template(
                _fold_system(messages), add_generation_prompt=True, tokenize=False)
        return str(text), True
    parts = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join([*parts, "Assistant:"]), False


def _fold_system(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if system and rest and rest[0]["role"] == "user":
        rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    elif system:
        rest.insert(0, {"role": "user", "content": system})
    return rest


def build_prompt(tokenizer: Any, messages: Sequence[dict[str, str]]) -> Prompt:
    """Render and encode one decision's prompt (chat template, generation prompt)."""
    return build_prompts(tokenizer, [messages])[0]


def build_prompts(tokenizer: Any,
                  conversations: Sequence[Sequence[dict[str, str]]]) -> list[Prompt]:
    """`build_prompt` for many conversations, with one batched tokenizer call.

    Each distinct conversation is rendered and encoded once: in an engine step many are the
    same (a group's rollouts in their first round, episodes whose histories agree; 2 of 3 in
    256 IPD episodes), and the others get equal copies of its `Prompt`."""
    keys = [tuple((m["role"], m["content"]) for m in c) for c in conversations]
    first: dict[tuple[tuple[str, str], ...], int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    distinct = list(first.values())
    rendered = {i: render_chat(tokenizer, conversations[i]) for i in distinct}
    built: dict[int, Prompt] = {}
    for templated in (True, False):  # templates write their own special tokens
        idx = [i for i in distinct if rendered[i][1] == templated]
        if not idx:
            continue
        encoded = tokenizer([rendered[i][0] for i in idx], add_special_tokens=not templated)
        for i, ids in zip(idx, encoded["input_ids"], strict=True):
            text = rendered[i][0]
            built[i] = Prompt(text=text, ids=list(ids), think_open=think_is_open(text, False),
                              add_special_tokens=not templated)
    # A copy of the ids per conversation: callers may extend a prompt's ids in place.
    return [replace(built[first[key]], ids=list(built[first[key]].ids)) for key in keys]


class ContinuationIds:
    """The token ids of action texts written right after a prompt, cached.

    An action's ids are taken from the joint encoding of the prompt's tail and the text, cut
    after the tail's own ids: the ids the tokenizer produces in context (a merge across the
    seam would otherwise give token sequences the model never sees), while the cache makes
    them free for every prompt that ends the same way (all prompts of a chat template end
    with the same generation prompt). Where the joint encoding does not extend the tail's ids,
    the text is encoded on its own.
    """

    #: Characters of prompt context around the seam; pre-tokenizers split at whitespace and
    #: special tokens, so the seam's tokens depend only on the last few characters.
    TAIL_CHARS = 64

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[tuple[str, bool, str], list[int]] = {}
        self._special = set(getattr(tokenizer, "all_special_ids", []) or [])

    def __call__(self, prompt: Prompt, texts: Sequence[str]) -> list[list[int]]:
        tail = prompt.text[-self.TAIL_CHARS:]
        add_special = prompt.add_special_tokens
        missing = [t for t in dict.fromkeys(texts) if (tail, add_special, t) not in self._cache]
        if missing:
            encoded = self.tokenizer([tail, *(tail + t for t in missing)],
                                     add_special_tokens=add_special)["input_ids"]
            head = list(encoded[0])
            while head and head[-1] in self._special:  # a post-processor's appended EOS
                head.pop()
            for text, ids in zip(missing, encoded[1:], strict=True):
                ids = list(ids)
                suffix = ids[len(head):] if ids[:len(head)] == head else []
                while suffix and suffix[-1] in self._special:
                    suffix.pop()
                if not suffix:
                    suffix = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
                self._cache[(tail, add_special, text)] = suffix
        return [list(self._cache[(tail, add_special, t)]) for t in texts]


def batch_decode(tokenizer: Any, sequences: Sequence[Sequence[int]]) -> list[str]:
    """Decode many sequences, special tokens kept, with the Rust tokenizer directly when there
    is one (transformers' wrapper costs more than the decoding of a few tokens; the Rust
    `decode_batch` pays thread start-up for short sequences)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return [backend.decode(list(s), skip_special_tokens=False) for s in sequences]
    return [str(tokenizer.decode(list(s), skip_special_tokens=False)) for s in sequences]


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends an answer: the generation config's EOS ids and the tokenizer's."""
    ids: list[int] = []
    gen_config = getattr(model, "generation_config", None)
    configured = getattr(gen_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.append(configured)
    elif configured is not None:
        ids.extend(int(i) for i in configured)
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.append(int(tokenizer.eos_token_id))
    return list(dict.fromkeys(ids))


def pad_token_id(tokenizer: Any, eos_ids: Sequence[int]) -> int:
    """The id used for padding: the tokenizer's pad token, else its EOS (masked out anyway)."""
    if getattr(tokenizer, "pad_token_id", None) is not None:
        return int(tokenizer.pad_token_id)
    return int(eos_ids[0]) if eos_ids else 0


def think_is_open(text: str, open_at_start: bool) -> bool:
    """Whether a `<think>` block is open at the end of `text` (which may continue an open one)."""
    opened, closed = text.rfind(THINK_OPEN), text.rfind(THINK_CLOSE)
    if opened == closed == -1:
        return open_at_start
    return opened > closed


def visible_answer(text: str, open_at_start: bool) -> str:
    """The part of a completion that is the answer: what follows the last `</think>`.

    A reasoning block that never closed (the model ran out of tokens while thinking) leaves no
    answer at all, so its text cannot be mistaken for one.
    """
    if think_is_open(text, open_at_start):
        return ""
    closed = text.rfind(THINK_CLOSE)
    return text[closed + len(THINK_CLOSE):] if closed >= 0 else text


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded `input_ids`, `attention_mask` and `position_ids` of a batch.

    Left padding puts every sequence's last token in the last column, so one step of decoding
    appends one column for all; the position ids count real tokens only, so a padded sequence
    sees exactly the positions it would see alone.
    """
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        if seq:
            input_ids[i, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
            mask[i, width - len(seq):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids.to(device), mask.to(device), positions.to(device)


def model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether the model's forward takes `logits_to_keep` (computing the LM head only where
    it is needed saves a batch × length × vocabulary tensor)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False
