"""The constrained fallback: when a completion names no legal action, ask again and constrain.

The model's failed answer stays in the conversation, a user turn (`sepo.prompts.ELICITATION`)
asks for one legal action, and the model answers under a constraint: its logits are restricted
to the tokens that continue some legal action's canonical text (`game.format_action`), walking
a trie of those texts' token sequences until one is complete. Single-token words take one
forward pass; numbers and `[a, b, c]` demand vectors (bounded by the item counts, since only
legal vectors are in the trie) take a few more, batched across every failure of the step with
a KV cache. The result is always a legal action, whatever the model or its text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from sepo.agents.chat import ContinuationIds, Prompt
from sepo.agents.fast.sampling import BatchState
from sepo.games.base import Action


@dataclass(slots=True)
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    terminal: bool = False
    action: Action = None


class ActionTrie:
    """The legal actions of one decision as a trie of token sequences."""

    def __init__(self, entries: Iterable[tuple[Sequence[int], Action]]) -> None:
        self.root = _Node()
        self.size = 0
        for ids, action in entries:
            if not ids:  # an action whose text encodes to nothing cannot be written
                continue
            node = self.root
            for token in ids:
                node = node.children.setdefault(int(token), _Node())
            if not node.terminal:
                node.terminal, node.action = True, action
                self.size += 1

    @classmethod
    def for_decision(cls, continuations: ContinuationIds, prompt: Prompt,
                     texts: Sequence[str], actions: Sequence[Action]) -> ActionTrie:
        """The trie of `actions` (written as `texts`) continuing `prompt`."""
        return cls(zip(continuations(prompt, texts), actions, strict=True))


@dataclass(slots=True)
class ConstrainedChoice:
    """An action chosen under the constraint, with the tokens that wrote it.

    `logprobs` are the *unconstrained* tempered log-probabilities of `token_ids`
    (log_softmax(logits / T)), i.e. what the free policy would have given them, not the
    constrained distribution they were drawn from.
    """

    action: Action
    token_ids: list[int]
    logprobs: list[float]


def _depth(node: _Node) -> int:
    return 1 + max((_depth(c) for c in node.children.values()), default=-1)


def _choose(logits: torch.Tensor, allowed: list[int], temperature: float,
            generator: torch.Generator | None) -> int:
    """One of `allowed` token ids: sampled from the restricted tempered softmax, or the argmax
    when `temperature` is 0 (ties go to the first allowed id, deterministically)."""
    scores = torch.nan_to_num(logits[allowed].float().cpu(), nan=-1e9, posinf=1e9, neginf=-1e9)
    if temperature == 0.0:
        return allowed[int(torch.argmax(scores))]
    probs = torch.softmax(scores / temperature, dim=-1)
    return allowed[int(torch.multinomial(probs, 1, generator=generator))]


@torch.no_grad()
def constrained_decode(model: Any, prompts: Sequence[Sequence[int]], tries: Sequence[ActionTrie],
                       *, temperature: float, end_ids: Sequence[int], pad_id: int,
                       generator: torch.Generator | None = None) -> list[ConstrainedChoice]:
    """Decode one legal action per prompt, restricted to the paths of its trie.

    Batched: one forward pass over all the (left-padded) prompts, their shared prefix computed
    once, then one single-token step per further token of the longest action, reusing the KV
    cache. At a node where an action
    is complete but a longer one continues (e.g. "1" and "10" with digit tokens), ending is
    one more option, written as an end-of-sequence token. `temperature` 0 takes the argmax.
    """
    if len(prompts) != len(tries):
        raise ValueError(f"{len(prompts)} prompts but {len(tries)} tries")
    if not prompts:
        return []
    logprob_temperature = temperature if temperature > 0 else 1.0
    longest = max((_depth(t.root) for t in tries), default=0)
    batch = BatchState.prefill(model, prompts, pad_id=pad_id, reserve=longest + 1)

    nodes: list[_Node | None] = [t.root for t in tries]
    chosen: list[list[int]] = [[] for _ in prompts]
    logprobs: list[list[float]] = [[] for _ in prompts]
    actions: list[Action] = [None] * len(prompts)
    done = [False] * len(prompts)
    end = [int(e) for e in end_ids]
    for i, node in enumerate(nodes):
        if node is None or not node.children:  # an empty trie: nothing to write
            done[i] = True

    while not all(done):
        logits = batch.logits
        step_logprobs = torch.log_softmax(logits / logprob_temperature, dim=-1)
        next_tokens = torch.full((len(prompts),), pad_id, dtype=torch.long)
        for i, node in enumerate(nodes):
            if done[i] or node is None:
                continue
            allowed = list(node.children)
            ends_here = node.terminal and bool(end)
            if ends_here:
                allowed += [e for e in end if e not in node.children]
            token = _choose(logits[i], allowed, temperature, generator)
            chosen[i].append(token)
            logprobs[i].append(float(step_logprobs[i, token]))
            child = node.children.get(token)
            if child is None:  # chose to end: the action of this node is complete
                actions[i], done[i] = node.action, True
                continue
            nodes[i] = child
            if not child.children or (child.terminal and not end):
                actions[i], done[i] = child.action, True
            next_tokens[i] = token
        if all(done):
            break
        batch.step(next_tokens)

    return [ConstrainedChoice(a, c, lp) for a, c, lp in zip(actions, chosen, logprobs, strict=True)]
