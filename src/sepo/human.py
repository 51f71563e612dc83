"""A person at the terminal as a `Player`: it shows the game's prompts and reads actions.

It sees exactly the text a language-model agent sees (the game's system prompt once, then the
round's user prompt) and its answers go through the game's own parser, so a person can check
what the models are asked and how their words are read. Input and output are streams, so the
player is as testable as any other.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from sepo.engine import Decision, DecisionRequest, Engine, Episode, EpisodeRecord, Player
from sepo.games.base import AGENT, OPPONENT, Action, Game, Round, Strategy


class HumanQuit(Exception):
    """The person ended the game (end of input or Ctrl-C)."""


class HumanPlayer:
    """Reads one action per decision from `input`; re-asks until the text names a legal one."""

    def __init__(self, name: str = "you", *, input: TextIO | None = None,
                 output: TextIO | None = None, prompt: str = "> ",
                 echo: bool | None = None) -> None:
        self.name = name
        self.input = input if input is not None else sys.stdin
        self.output = output if output is not None else sys.stdout
        self.prompt = prompt
        # A terminal echoes what the person types; piped input (a script, a test) does not,
        # so the transcript would lose the answers.
        self.echo = echo if echo is not None else not _isatty(self.input)
        self._shown_rules: set[str] = set()
        self._narrated: dict[int, int] = {}  # id(state) -> rounds already narrated

    def write(self, text: str = "") -> None:
        self.output.write(text + "\n")
        self.output.flush()

    def decide(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
        return [self._ask(r) for r in requests]

    def narrate(self, episode: Episode) -> None:
        """A line for each round of `episode` that ended since the last narration."""
        state, game = episode.state, episode.game
        done = self._narrated.get(id(state), 0)
        for index in range(done, len(state.rounds)):
            self.write(describe_round(game, index + 1, state.rounds[index],
                                      episode.players[OPPONENT].name))
            self.write()
        self._narrated[id(state)] = len(state.rounds)

    def _ask(self, request: DecisionRequest) -> Decision:
        game, state, seat = request.game, request.state, request.seat
        # A round can end with the opponent's move at the start of this step: say so first.
        self.narrate(request.episode)
        if game.name not in self._shown_rules:  # the rules once, as a model gets them
            self._shown_rules.add(game.name)
            self.write(game.system_prompt())
            self.write()
        self.write(game.user_prompt(state, seat))
        legal = game.legal_actions(state, seat)
        while True:
            self.output.write(self.prompt)
            self.output.flush()
            line = self.input.readline()
            if not line:  # end of input
                self.write()
                raise HumanQuit
            if self.echo:
                self.write(line.rstrip("\n"))
            action = game.parse(line, state, seat)
            if action is not None and action in legal:
                return Decision(action, text=line.rstrip("\n"))
            self.write(f"No legal action found in {line.strip()!r}. Legal actions: "
                       f"{legal_text(game, legal)}.")


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or minimal stream
        return False


def legal_text(game: Game, legal: Sequence[Action], limit: int = 12) -> str:
    """The legal actions as a person should type them (a long list is elided)."""
    texts = [game.format_action(a) for a in legal]
    if len(texts) > limit:
        return f"{', '.join(texts[:limit - 2])}, …, {texts[-1]} ({len(texts)} in all)"
    return ", ".join(texts)


def _moves_text(game: Game, action: Action) -> str:
    # Sequential games (Kuhn) record a seat's moves in a hand as a tuple.
    if not game.simultaneous and isinstance(action, tuple):
        return " ".join(game.format_action(a) for a in action) or "(no move)"
    return game.format_action(action)


def describe_round(game: Game, index: int, rnd: Round, opponent: str) -> str:
    """One line on how a round went, from the agent's (seat 0's) point of view.

    Only moves and payoffs: private information (cards folded, the other's values) stays as
    hidden as the game's own prompts keep it from a model.
    """
    return (f"Round {index}: you {_moves_text(game, rnd.actions[AGENT])}, {opponent} "
            f"{_moves_text(game, rnd.actions[OPPONENT])} -> you {rnd.payoffs[AGENT]:g}, "
            f"{opponent} {rnd.payoffs[OPPONENT]:g}")


def play_human(game: Game, human: HumanPlayer, opponent: Player | Strategy,
               seed: int) -> EpisodeRecord:
    """One episode of `human` (seat 0) against `opponent`, narrated round by round.

    Raises `HumanQuit` when the person stops; the rounds played so far are then lost.
    """
    episode = Episode(game, human, opponent, seed)
    Engine([episode]).run()
    human.narrate(episode)  # the last round(s)
    record = episode.record()
    name = episode.players[OPPONENT].name
    human.write(f"Final score: you {record.total(AGENT):g}, {name} {record.total(OPPONENT):g} "
                f"over {len(record.rounds)} rounds.")
    return record
