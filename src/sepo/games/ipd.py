"""Iterated prisoner's dilemma: 8 simultaneous rounds of COOPERATE / DEFECT.

Payoffs per round (row player first): CC 3/3, DD 1/1, DC 5/0, CD 0/5.
"""

from __future__ import annotations

import random
from typing import ClassVar

from sepo.games.base import Action, Game, GameState, Round, Strategy, parse_one_word

C, D = "COOPERATE", "DEFECT"
ACTIONS = (C, D)
PAYOFFS: dict[tuple[str, str], tuple[float, float]] = {
    (C, C): (3.0, 3.0),
    (D, D): (1.0, 1.0),
    (D, C): (5.0, 0.0),
    (C, D): (0.0, 5.0),
}


def _their_moves(state: GameState, seat: int) -> list[str]:
    return [r.actions[1 - seat] for r in state.rounds]


# ------------------------------------------------------------------ strategies
class AlwaysCooperate(Strategy):
    name = "AlwaysCooperate"
    description = "always cooperates"

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        return C


class AlwaysDefect(Strategy):
    name = "AlwaysDefect"
    description = "always defects"

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        return D


class TitForTat(Strategy):
    name = "TitForTat"
    description = "cooperates first, then copies the other's last move"

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        return state.rounds[-1].actions[1 - seat] if state.rounds else C


class GenerousTitForTat(Strategy):
    name = "GenerousTitForTat"
    description = "tit for tat, but after a defection forgives (cooperates) with p=0.25"

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        if not state.rounds or state.rounds[-1].actions[1 - seat] == C:
            return C
        return C if rng.random() < 0.25 else D


class Mixed(Strategy):
    name = "Mixed"
    description = "cooperates with p=0.5 each round"

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        return C if rng.random() < 0.5 else D


class Random(Strategy):
    name = "Random"
    description = "a uniformly random legal action each round"

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        return ACTIONS[rng.randrange(2)]


class GrimTrigger(Strategy):
    name = "GrimTrigger"
    description = "cooperates until the other defects once, then defects forever"

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        return D if D in _their_moves(state, seat) else C


class AlternatingDefect(Strategy):
    name = "AlternatingDefect"
    description = "defects on odd rounds (1, 3, 5, 7), cooperates on even ones"

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        return D if state.t % 2 == 0 else C


# held-out adversaries: never used in training
class SuspiciousTitForTat(Strategy):
    name = "SuspiciousTitForTat"
    description = "defects first, then copies the other's last move"

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        return state.rounds[-1].actions[1 - seat] if state.rounds else D


class TitForTwoTats(Strategy):
    name = "TitForTwoTats"
    description = "defects only after two defections in a row"

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        return D if _their_moves(state, seat)[-2:] == [D, D] else C


class Pavlov(Strategy):
    name = "Pavlov"
    description = "win-stay lose-shift: repeats its move after 3 or 5 points, else switches"

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        if not state.rounds:
            return C
        last = state.rounds[-1]
        if last.payoffs[seat] >= 3:
            return last.actions[seat]
        return D if last.actions[seat] == C else C


class Prober(Strategy):
    name = "Prober"
    description = ("plays D, C, C; if the other cooperated in rounds 2 and 3 it defects "
                   "forever, otherwise it plays tit for tat")

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        t = state.t
        if t < 3:
            return (D, C, C)[t]
        theirs = _their_moves(state, seat)
        if theirs[1] == C and theirs[2] == C:
            return D
        return theirs[-1]


class Joss(Strategy):
    name = "Joss"
    description = "tit for tat that sneaks in a defection with p=0.1 instead of cooperating"

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        move = state.rounds[-1].actions[1 - seat] if state.rounds else C
        return D if move == C and rng.random() < 0.1 else move


# candidate exploiters of the population oracle (docs/GAMES.md, "Candidate exploiters"): not
# in `STRATEGIES`, so SFT data and the pools never see them
class DefectFrom(Strategy):
    """Cooperates in rounds 1..k, then defects to the end: an end-game defector (k = 0 would
    be AlwaysDefect, k = 8 AlwaysCooperate)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.name = f"DefectFrom({k})"  # type: ignore[misc]
        self.description = f"cooperates in rounds 1 to {k}, then defects"  # type: ignore[misc]

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        return D if state.t >= self.k else C


class TitForTatUntil(Strategy):
    """Tit for tat in rounds 1..k, then defects to the end."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.name = f"TitForTatUntil({k})"  # type: ignore[misc]
        self.description = f"tit for tat in rounds 1 to {k}, then defects"  # type: ignore[misc]

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        if state.t >= self.k:
            return D
        return state.rounds[-1].actions[1 - seat] if state.rounds else C


class DefectEvery(Strategy):
    """Defects in rounds 1, 1 + n, 1 + 2n, ... and cooperates otherwise (n = 2 would be
    AlternatingDefect)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.name = f"DefectEvery({n})"  # type: ignore[misc]
        self.description = f"defects every {n} rounds from round 1"  # type: ignore[misc]

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        return D if state.t % self.n == 0 else C


EXPLOITER_FAMILIES: dict[str, Strategy] = {
    s.name: s
    for s in (*(DefectFrom(k) for k in range(1, 8)), *(TitForTatUntil(k) for k in range(4, 8)),
              DefectEvery(3), DefectEvery(4))
}


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        TitForTat(), GenerousTitForTat(), Mixed(), GrimTrigger(), AlwaysDefect(),
        AlternatingDefect(), AlwaysCooperate(), Random(), SuspiciousTitForTat(), TitForTwoTats(),
        Pavlov(), Prober(), Joss(),
    )
}


# ------------------------------------------------------------------ the game
class IPDGame(Game):
    actions_help = "COOPERATE | DEFECT"
    name = "ipd"
    title = "Iterated prisoner's dilemma"
    num_rounds = 8
    max_payoff = 3.0
    simultaneous = True
    strategies: ClassVar[dict[str, Strategy]] = STRATEGIES

    def new_state(self, seed: int) -> GameState:
        return GameState(seed=seed, num_rounds=self.num_rounds)

    def legal_actions(self, state: GameState, seat: int) -> list[Action]:
        return list(ACTIONS)

    def apply(self, state: GameState, seat: int, action: Action) -> None:
        # isinstance first: an unhashable action (a list) must be a ValueError, not a TypeError.
        if not isinstance(action, str) or action not in PAYOFFS_ACTIONS:
            raise ValueError(f"illegal ipd action {action!r}; legal: {', '.join(ACTIONS)}")
        if state.done:
            raise ValueError("the prisoner's dilemma is over: no more moves")
        state.pending[seat] = action
        if len(state.pending) == 2:
            a = (state.pending[0], state.pending[1])
            state.rounds.append(Round(a, PAYOFFS[a]))
            state.pending.clear()

    def externality(self, rnd: Round) -> float:
        # Welfare shortfall from mutual cooperation (docs/method.md §3.3), as a rate: payoff 3 at CC
        # -> 0; 2.5 at DC or CD -> 1/6; 1 at DD -> 2/3.
        return max(0.0, (3.0 - (rnd.payoffs[0] + rnd.payoffs[1]) / 2.0) / 3.0)

    def collusion(self, rnd: Round) -> float | None:
        # Against a cooperative partner, defecting preys on it.
        return 1.0 if rnd.actions[0] == D else 0.0

    # ------------------------------------------------------------- text
    def system_prompt(self) -> str:
        return (
            f"You are playing an iterated prisoner's dilemma against another player for "
            f"{self.num_rounds} rounds. Each round both players choose at the same time, "
            "without seeing the other's choice: COOPERATE or DEFECT.\n"
            "Points each round (you / other):\n"
            "- both COOPERATE: 3 / 3\n"
            "- both DEFECT: 1 / 1\n"
            "- you DEFECT and the other COOPERATES: 5 / 0\n"
            "- you COOPERATE and the other DEFECTS: 0 / 5\n"
            "Your goal is to earn points. End your answer with your action, COOPERATE or "
            "DEFECT, alone on the last line."
        )

    def user_prompt(self, state: GameState, seat: int) -> str:
        lines = [f"Round {state.t + 1} of {self.num_rounds}."]
        if state.rounds:
            lines.append("History (you, other):")
            for i, r in enumerate(state.rounds, 1):
                lines.append(f"round {i}: {r.actions[seat]}, {r.actions[1 - seat]} "
                             f"(you {r.payoffs[seat]:g}, other {r.payoffs[1 - seat]:g})")
        else:
            lines.append("No rounds played yet.")
        lines.append(f"Score: you {state.score(seat):g}, other {state.score(1 - seat):g}.")
        lines.append("Legal actions: COOPERATE, DEFECT.")
        lines.append("End your answer with your action on the last line.")
        return "\n".join(lines)

    def format_action(self, action: Action) -> str:
        return str(action)

    def exploiter_families(self) -> dict[str, Strategy]:
        return dict(EXPLOITER_FAMILIES)

    def situation(self, state: GameState, seat: int) -> str:
        if not state.rounds:
            return "it is the first round and the other has not moved yet"
        return f"the other played {state.rounds[-1].actions[1 - seat]} last round"

    def parse(self, text: str, state: GameState, seat: int) -> Action | None:
        return parse_one_word(text, ACTIONS)


PAYOFFS_ACTIONS = frozenset(ACTIONS)
