"""The constrained fallback: when a completion names no legal action, ask again and constrain.

The model's failed answer stays in the conversation, a user turn (`sepo.prompts.ELICITATION`)
asks for one legal action, and the model answers under a constraint: its logits are restricted
to the tokens that continue some legal action's canonical text (`game.format_action`), walking
a trie of those texts' token sequences until one is complete. Single-token words take one
forward pass; numbers and `[a, b, c]` demand vectors (bounded by the item counts, since only
legal vectors are in the trie) take a few more, batched across every failure of the step (on
either sampling engine, `sepo.agents.engines`). The result is always a legal action, whatever
the model or its text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from sepo.agents.chat import ContinuationIds, Prompt
from sepo.agents.decoding import Engine, RowGenerators
from sepo.agents.engines import choose_tokens
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


class TrieWalk:
    """The constrained choice of every row, one token at a time: each row walks its trie from
    the root, choosing among the children of its node (and, where the node completes an
    action, an end-of-sequence token) until an action is complete. A `TokenChooser` for either
    engine's `choose_tokens`."""

    def __init__(self, tries: Sequence[ActionTrie], *, temperature: float,
                 end_ids: Sequence[int], pad_id: int,
                 generator: RowGenerators = None) -> None:
        self.temperature = temperature
        self.logprob_temperature = temperature if temperature > 0 else 1.0
        self.end = [int(e) for e in end_ids]
        self.pad_id = pad_id
        # One generator for every row, or one per row (`RowGenerators`).
        self.generators: list[torch.Generator | None] = (
            [generator] * len(tries) if generator is None or isinstance(generator, torch.Generator)
            else list(generator))
        if len(self.generators) != len(tries):
            raise ValueError(f"{len(self.generators)} generators for {len(tries)} tries")
        self.nodes: list[_Node | None] = [t.root for t in tries]
        self.chosen: list[list[int]] = [[] for _ in tries]
        self.logprobs: list[list[float]] = [[] for _ in tries]
        self.actions: list[Action] = [None] * len(tries)
        # An empty trie has nothing to write.
        self.done = [node is None or not node.children for node in self.nodes]
        #: Tokens of the longest path: how many choices the walk can take at most.
        self.longest = max((_depth(t.root) for t in tries), default=0) + 1

    @property
    def finished(self) -> bool:
        return all(self.done)

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        """Each unfinished row's next token, chosen from its row of `logits` (batch ×
        vocabulary); padding for the finished rows."""
        step_logprobs = torch.log_softmax(logits / self.logprob_temperature, dim=-1)
        next_tokens = torch.full((len(self.nodes),), self.pad_id, dtype=torch.long)
        for i, node in enumerate(self.nodes):
            if self.done[i] or node is None:
                continue
            allowed = list(node.children)
            if node.terminal and self.end:
                allowed += [e for e in self.end if e not in node.children]
            token = _choose(logits[i], allowed, self.temperature, self.generators[i])
            self.chosen[i].append(token)
            self.logprobs[i].append(float(step_logprobs[i, token]))
            child = node.children.get(token)
            if child is None:  # chose to end: the action of this node is complete
                self.actions[i], self.done[i] = node.action, True
                continue
            self.nodes[i] = child
            if not child.children or (child.terminal and not self.end):
                self.actions[i], self.done[i] = child.action, True
            next_tokens[i] = token
        return next_tokens

    def choices(self) -> list[ConstrainedChoice]:
        return [ConstrainedChoice(a, c, lp)
                for a, c, lp in zip(self.actions, self.chosen, self.logprobs, strict=True)]


@torch.no_grad()
def constrained_decode(model: Any, prompts: Sequence[Sequence[int]], tries: Sequence[ActionTrie],
                       *, temperature: float, end_ids: Sequence[int], pad_id: int,
                       generator: RowGenerators = None,
                       engine: Engine = "fast") -> list[ConstrainedChoice]:
    """Decode one legal action per prompt, restricted to the paths of its trie.

    Batched: one forward pass over all the (left-padded) prompts, then one single-token step
    per further token of the longest action, reusing the KV cache, on `engine`
    (`sepo.agents.engines.choose_tokens`). The choices depend only on the logits and
    `generator` (one for all rows, or one per row: then a row's choice does not depend on
    its batch), so both engines choose alike where their logits agree. At a node where an
    action is complete but a longer one continues (e.g. "1" and "10" with digit tokens), ending
    is one more option, written as an end-of-sequence token. `temperature` 0 takes the argmax.
    """
    if len(prompts) != len(tries):
        raise ValueError(f"{len(prompts)} prompts but {len(tries)} tries")
    if not prompts:
        return []
    walk = TrieWalk(tries, temperature=temperature, end_ids=end_ids, pad_id=pad_id,
                    generator=generator)
    if not walk.finished:
        choose_tokens(engine, model, prompts, walk, pad_id=pad_id, eos_ids=walk.end,
                      max_new_tokens=walk.longest)
    return walk.choices()
