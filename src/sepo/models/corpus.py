"""Transcripts of random legal play: the text the `tiny` model's tokenizer and "base" stage see.

Every example is one decision of seat 0 (the agent's seat) in an episode where both seats play
uniformly random legal actions: the chat messages of that decision (`sepo.prompts`, exactly
what an agent is shown) and an assistant answer naming a random legal action. A model trained
on them learns the answer format (an action on the last line, then end of turn) and nothing
of strategy: every legal action is equally likely in the data.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from sepo.games import game_names, get_game
from sepo.games.base import AGENT, Action, Game, GameState, derive_seed
from sepo.prompts import chat_messages

#: Neutral reason sentences: they name the action and the situation and argue for nothing, so
#: pre-training teaches the shape of a reasoned answer without a strategy.
REASON_TEMPLATES = (
    "I choose {action}.",
    "My action this round is {action}.",
    "Given that {situation}, I play {action}.",
    "Since {situation}, my answer is {action}.",
    "I will go with {action}.",
)


@dataclass(frozen=True, slots=True)
class Example:
    """One decision: the prompt messages and the assistant's answer (without end of turn)."""

    game: str
    messages: tuple[dict[str, str], ...]
    completion: str
    action_text: str


def available_games(names: Sequence[str] | None = None) -> list[Game]:
    """The registered games whose module exists (games being written are skipped).

    Only a missing module is skipped: a game that exists but fails to load is a bug, and its
    error propagates.
    """
    games = []
    for name in names if names is not None else game_names():
        try:
            games.append(get_game(name))
        except ModuleNotFoundError as err:
            if not (err.name or "").startswith("sepo.games"):
                raise
    return games


def answer(game: Game, state: GameState, action: Action, rng: random.Random, *,
           reasoning: bool) -> str:
    """The assistant text naming `action`: with reasoning, a neutral sentence, a newline,
    then the action; without, the action alone."""
    text = game.format_action(action)
    if not reasoning:
        return text
    sentence = rng.choice(REASON_TEMPLATES).format(action=text,
                                                   situation=game.situation(state, AGENT))
    return f"{sentence}\n{text}"


def random_play_states(game: Game, seed: int) -> Iterator[GameState]:
    """Play one episode with uniformly random legal actions for both seats, yielding the state
    at each of seat 0's decisions (before it acts). The state object is live: consume each
    one before advancing the iterator."""
    rng = random.Random(derive_seed(seed, 1))
    state = game.new_state(derive_seed(seed, 0))
    while not state.done:
        for seat in game.to_act(state):
            if seat == AGENT:
                yield state
            legal = game.legal_actions(state, seat)
            game.apply(state, seat, legal[rng.randrange(len(legal))])
            break  # the seats still to act may change after a move (Kuhn)


def examples(game: Game, num_examples: int, seed: int, *,
             reasoning_share: float = 0.5) -> list[Example]:
    """`num_examples` decisions of random legal play of `game`, deterministic by `seed`.

    Each example answers with its own uniformly random legal action (independent of the move
    that continues the episode), and is written with reasoning with probability
    `reasoning_share`.
    """
    out: list[Example] = []
    episode = 0
    while len(out) < num_examples:
        ep_seed = derive_seed(seed, episode)
        rng = random.Random(derive_seed(ep_seed, 2))
        for state in random_play_states(game, ep_seed):
            legal = game.legal_actions(state, AGENT)
            action = legal[rng.randrange(len(legal))]
            reasoning = rng.random() < reasoning_share
            out.append(Example(
                game=game.name,
                messages=tuple(chat_messages(game, state, AGENT, reasoning=reasoning)),
                completion=answer(game, state, action, rng, reasoning=reasoning),
                action_text=game.format_action(action),
            ))
            if len(out) == num_examples:
                break
        episode += 1
    return out


def mixed_examples(games: Sequence[Game], num_examples: int, seed: int, *,
                   reasoning_share: float = 0.5,
                   weights: Mapping[str, float] | None = None) -> list[Example]:
    """`num_examples` examples split over `games` in proportion to `weights` (by game name,
    1 for games not named), shuffled by `seed`."""
    w = [float((weights or {}).get(g.name, 1.0)) for g in games]
    total = sum(w) or 1.0
    out = [ex for i, g in enumerate(games)
           for ex in examples(g, math.ceil(num_examples * w[i] / total),
                              derive_seed(seed, 100 + i), reasoning_share=reasoning_share)]
    random.Random(derive_seed(seed, 99)).shuffle(out)
    return out[:num_examples]


def action_texts(game: Game, episodes: int = 24, seed: int = 0) -> list[str]:
    """Canonical texts of every legal action met in `episodes` random episodes of `game`
    (both seats' decision points, so Kuhn's CALL / FOLD appear too), sorted."""
    texts: set[str] = set()
    for e in range(episodes):
        rng = random.Random(derive_seed(seed, e, 1))
        state = game.new_state(derive_seed(seed, e, 0))
        while not state.done:
            seat = game.to_act(state)[0]
            legal = game.legal_actions(state, seat)
            texts.update(game.format_action(a) for a in legal)
            game.apply(state, seat, legal[rng.randrange(len(legal))])
    return sorted(texts)


def digest(items: Sequence[Example]) -> str:
    """A short content hash of examples: a cache key changes whenever the games' text does."""
    h = hashlib.sha256()
    for ex in items:
        for m in ex.messages:
            h.update(m["role"].encode())
            h.update(b"\0")
            h.update(m["content"].encode())
            h.update(b"\0")
        h.update(ex.completion.encode())
        h.update(b"\1")
    return h.hexdigest()[:16]
