"""SFT demonstrator datasets (stage 1, docs/method.md §4).

Each episode draws one demonstrator from the game's SFT mixture (`game.demonstrators`) and one
opponent from every strategy that is not held out; the demonstrator sits in the agent's seat, and
every one of its decisions becomes one chat example in the HF conversational prompt/completion
format:

    prompt     = [system, user]   -- built by `sepo.prompts.chat_messages`, exactly what the LM
                                     agent sees at that decision
    completion = [assistant]      -- one templated reason sentence, a newline, the bare action
                                     (or the bare action alone with `reasoning=False`)

A data directory holds `train.jsonl`, `validation.jsonl` (split 80/20 by episode, so the rounds
of one episode never straddle the split), `card.json` (what was generated and the counts per
game, strategy and action) and a human-readable `README.md`, plus sepo's output marker
(`sepo.rundir.OUTPUT_MARKER`). Same arguments -> byte-identical files.
"""

from __future__ import annotations

import json
import math
import random
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sepo.engine import Decision, DecisionRequest, Engine, Episode, StrategyPlayer
from sepo.errors import SepoError
from sepo.games import Game, GameState, Strategy, game_names, get_game, get_strategy
from sepo.games.base import Action, derive_seed
from sepo.prompts import chat_messages
from sepo.rundir import (
    RunLock,
    check_output_dir,
    describing_os_errors,
    replace_dir_atomically,
    staging_dir,
    write_output_marker,
)

FORMAT = "sepo-sft-data"
FORMAT_VERSION = 1
TRAIN_FILE, VALIDATION_FILE, CARD_FILE, README_FILE = (
    "train.jsonl", "validation.jsonl", "card.json", "README.md")
SPLITS = {"train": TRAIN_FILE, "validation": VALIDATION_FILE}
VALIDATION_FRACTION = 0.2

# Sub-streams of a generation seed (derive_seed parts); fixed so adding a game changes nothing
# in the others' data.
_EPISODE_STREAM, _DEMONSTRATOR_STREAM, _SPLIT_STREAM = 1, 2, 3


class SFTDataError(SepoError):
    """A data directory that is missing, empty, malformed or not an SFT dataset."""


class GameMismatchError(SepoError):
    """The games asked for are not the games a dataset (or checkpoint) was made for."""


def _name_key(name: str) -> int:
    """A stable integer for a name, for seed derivation (Python's `hash` is salted)."""
    return zlib.crc32(name.encode("utf-8"))


def resolve_games(game: str | Sequence[str]) -> list[str]:
    """`"all"` -> every registered game; a name or list of names -> validated names."""
    names = game_names() if game == "all" else [game] if isinstance(game, str) else list(game)
    for name in names:
        get_game(name)  # raises UnknownNameError listing the games
    if not names:
        raise SepoError(f"no game given; choices: all, {', '.join(game_names())}")
    return list(dict.fromkeys(names))


# ------------------------------------------------------------------ reason sentences
def _clause(text: str) -> str:
    return " ".join(str(text).split()).rstrip(" .;,")


def reason_sentence(game: Game, state: GameState, seat: int, strategy: Strategy,
                    action: Action) -> str:
    """One sentence saying what the demonstrator does and why, from the situation it faced
    (`game.situation`, read before the action is applied) and its rule (`strategy.description`):

        "The other played DEFECT last round; I follow TitForTat (cooperates first, then
        copies the other's last move), so I play DEFECT."

    Kept to one templated sentence: a model of a few million parameters learns it, and the
    action it ends on is the action actually taken.
    """
    situation = _clause(game.situation(state, seat)) or f"it is round {state.t + 1}"
    situation = situation[0].upper() + situation[1:]
    rule = _clause(strategy.description)
    follow = f"I follow {strategy.name} ({rule})" if rule else f"I follow {strategy.name}"
    return f"{situation}; {follow}, so I play {game.format_action(action)}."


def completion_text(game: Game, state: GameState, seat: int, strategy: Strategy,
                    action: Action, *, reasoning: bool) -> str:
    """The assistant's answer: reason sentence, newline, bare action (or the bare action)."""
    bare = game.format_action(action)
    if not reasoning:
        return bare
    return f"{reason_sentence(game, state, seat, strategy, action)}\n{bare}"


# ------------------------------------------------------------------ generation
@dataclass(slots=True)
class _Decision:
    round: int
    action: Action
    prompt: list[dict[str, str]]
    completion: str


class DemonstratorRecorder:
    """A `Player` that plays a strategy and records, for every decision, the chat prompt the
    LM agent would see (built before the action is applied) and the demonstrator's answer."""

    def __init__(self, strategy: Strategy, *, reasoning: bool) -> None:
        self.strategy = strategy
        self.name = strategy.name
        self.reasoning = reasoning
        #: Recorded decisions by episode (keyed by the Episode object's id).
        self.log: dict[int, list[_Decision]] = {}

    def decide(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
        answers: list[Decision] = []
        for r in requests:
            game, state, seat = r.game, r.state, r.seat
            prompt = chat_messages(game, state, seat, reasoning=self.reasoning)
            action = self.strategy.choose(game, state, seat, r.rng)
            text = completion_text(game, state, seat, self.strategy, action,
                                   reasoning=self.reasoning)
            if game.parse(text, state, seat) != action:  # a game whose text and parser disagree
                raise SepoError(f"{game.name}: the SFT completion {text!r} of {self.name} does "
                                f"not parse back to its action {action!r}; the game's "
                                "format_action, situation or parse is inconsistent")
            self.log.setdefault(id(r.episode), []).append(
                _Decision(state.t, action, prompt, text))
            answers.append(Decision(action, text=text))
        return answers


def sft_opponents(game: Game) -> list[str]:
    """Opponents of SFT episodes: every strategy of the game that is not held out."""
    heldout = set(game.pools.get("heldout", []))
    return [name for name in game.strategies if name not in heldout]


def demonstrator_mixture(game: Game,
                         only: Sequence[str] | None = None) -> dict[str, float]:
    """The demonstrator weights of SFT episodes: the game's mixture (docs/method.md §2.3), or,
    with `only`, those strategies of the game with equal weights (e.g. TitForTat-only data)."""
    if only:
        names = [get_strategy(game, n).name for n in dict.fromkeys(only)]
        return {n: 1.0 / len(names) for n in names}
    weights = {n: float(w) for n, w in game.demonstrators.items()}
    if not weights or not all(math.isfinite(w) and w >= 0 for w in weights.values()) or sum(
            weights.values()) <= 0:
        raise SepoError(f"{game.name} has no usable SFT demonstrator weights: {weights!r}")
    return weights


def _draw_demonstrator(game: Game, mixture: dict[str, float], seed: int, opponent: str,
                       k: int) -> str:
    rng = random.Random(derive_seed(seed, _name_key(game.name), _name_key(opponent), k,
                                    _DEMONSTRATOR_STREAM))
    return rng.choices(list(mixture), weights=list(mixture.values()))[0]


class DemonstratorMixture(Strategy):
    """The SFT demonstrator mixture as one strategy: each episode follows one demonstrator,
    drawn by weight from a stream of the episode's own seed (so a whole episode is one
    demonstrator, as in the data). What an SFT agent imitates; evaluate it to compare."""

    name = "DemonstratorMixture"
    description = "plays one demonstrator of the SFT mixture per episode, drawn by weight"

    def __init__(self, game: Game, only: Sequence[str] | None = None) -> None:
        self.mixture = demonstrator_mixture(game, only)
        self.members = {n: game.strategies[n] for n in self.mixture}

    def member(self, state: GameState) -> Strategy:
        """The demonstrator that this episode (identified by its chance seed) follows."""
        rng = random.Random(derive_seed(state.seed, _DEMONSTRATOR_STREAM))
        name = rng.choices(list(self.mixture), weights=list(self.mixture.values()))[0]
        return self.members[name]

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        return self.member(state).choose(game, state, seat, rng)


def game_examples(game: Game, *, episodes_per_opponent: int, reasoning: bool = True,
                  seed: int = 0, demonstrators: Sequence[str] | None = None,
                  ) -> list[list[dict[str, Any]]]:
    """The demonstrator episodes of one game, each a list of example rows, in generation
    order. Deterministic in its arguments. `demonstrators` restricts the mixture (see
    `demonstrator_mixture`)."""
    if episodes_per_opponent < 1:
        raise SepoError(f"episodes_per_opponent must be at least 1, got {episodes_per_opponent}")
    mixture = demonstrator_mixture(game, demonstrators)
    recorders = {name: DemonstratorRecorder(game.strategies[name], reasoning=reasoning)
                 for name in mixture}
    episodes: list[Episode] = []
    for opponent in sft_opponents(game):
        opponent_player = StrategyPlayer(game.strategies[opponent])
        for k in range(episodes_per_opponent):
            demonstrator = _draw_demonstrator(game, mixture, seed, opponent, k)
            episode_seed = derive_seed(seed, _name_key(game.name), _name_key(opponent), k,
                                       _EPISODE_STREAM)
            episodes.append(Episode(game, recorders[demonstrator], opponent_player,
                                    episode_seed))
    Engine(episodes).run()
    out: list[list[dict[str, Any]]] = []
    for ep in episodes:
        recorder = ep.players[0]
        assert isinstance(recorder, DemonstratorRecorder)
        rows = []
        for i, d in enumerate(recorder.log.pop(id(ep), [])):
            rows.append({
                "game": game.name,
                "demonstrator": recorder.name,
                "opponent": ep.players[1].name,
                "episode": ep.seed,
                "round": d.round,
                "decision": i,
                "action": game.format_action(d.action),
                "prompt": d.prompt,
                "completion": [{"role": "assistant", "content": d.completion}],
            })
        out.append(rows)
    return out


def split_episodes(n: int, *, seed: int, game: str,
                   validation_fraction: float = VALIDATION_FRACTION) -> set[int]:
    """Indices (of `n` episodes) that go to validation: a seeded shuffle, at least one
    episode on each side when n >= 2."""
    if not 0.0 < validation_fraction < 1.0:
        raise SepoError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    n_val = round(n * validation_fraction)
    if n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    order = list(range(n))
    random.Random(derive_seed(seed, _name_key(game), _SPLIT_STREAM)).shuffle(order)
    return set(order[:n_val])


# ------------------------------------------------------------------ the card
def _counts(rows: Sequence[dict[str, Any]], key: str) -> dict[str, int]:
    return dict(sorted(Counter(str(r[key]) for r in rows).items()))


def _game_card(rows_by_split: dict[str, list[dict[str, Any]]],
               episodes_by_split: dict[str, int]) -> dict[str, Any]:
    every = [r for rows in rows_by_split.values() for r in rows]
    episodes_by_demonstrator = Counter(
        r["demonstrator"] for r in every if r["decision"] == 0)
    return {
        "episodes": dict(episodes_by_split),
        "examples": {split: len(rows) for split, rows in rows_by_split.items()},
        "strategies": {
            name: {"episodes": episodes_by_demonstrator[name], "examples": n}
            for name, n in _counts(every, "demonstrator").items()
        },
        "actions": _counts(every, "action"),
        "opponents": _counts(every, "opponent"),
    }


def _readme(card: dict[str, Any]) -> str:
    lines = [
        "# SFT demonstrator dataset",
        "",
        f"Made by `sepo sft-data` (format {card['format']} v{card['version']}): "
        f"games {', '.join(card['games'])}, {card['episodes_per_opponent']} episodes per "
        f"opponent, seed {card['seed']}, reasoning {'on' if card['reasoning'] else 'off'}, "
        f"validation fraction {card['validation_fraction']:g} (split by episode).",
        "",
        "Rows: `prompt` (system + user chat messages, exactly as the LM agent sees them), "
        "`completion` (the assistant's answer), and `game`, `demonstrator`, `opponent`, "
        "`episode`, `round`, `decision`, `action`.",
    ]
    for game, g in card["counts"].items():
        lines += ["", f"## {game}", "",
                  f"Episodes: {g['episodes']['train']} train, {g['episodes']['validation']} "
                  f"validation. Examples: {g['examples']['train']} train, "
                  f"{g['examples']['validation']} validation.", "",
                  "| demonstrator | weight | episodes | examples |", "|---|---:|---:|---:|"]
        for name, weight in g["mixture"].items():
            s = g["strategies"].get(name, {"episodes": 0, "examples": 0})
            lines.append(f"| {name} | {weight:.3g} | {s['episodes']} | {s['examples']} |")
        lines += ["", "| action | examples |", "|---|---:|"]
        lines += [f"| `{a}` | {n} |" for a, n in g["actions"].items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ writing
def _jsonl(rows: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def generate_sft_data(game: str | Sequence[str], out: str | Path, *,
                      episodes_per_opponent: int = 50, reasoning: bool = True, seed: int = 0,
                      validation_fraction: float = VALIDATION_FRACTION,
                      demonstrators: Sequence[str] | None = None,
                      on_game: Callable[[str, int], None] | None = None,
                      progress: Callable[[int, int], None] | None = None,
                      overwrite: bool = False) -> dict[str, Any]:
    """Generate the demonstrator dataset of `game` (a name, names, or "all") into `out`.

    `demonstrators` (default: each game's mixture, docs/method.md §2.3) restricts them to
    those strategies, drawn uniformly.
    Writes train/validation JSONL, `card.json` and `README.md` atomically (a finished directory
    replaces `out`) and returns the card. `on_game(name, examples)` and `progress(games done,
    games)` are called after each game, for progress display. An existing non-empty `out`, an
    earlier dataset included, is replaced only with `overwrite` (`sepo.rundir.check_output_dir`);
    a failed run leaves `out` as it was and nothing beside it.
    """
    games = resolve_games(game)
    out = Path(out)
    check_output_dir(out, overwrite=overwrite, made_by="sft-data")
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "validation": []}
    counts: dict[str, Any] = {}
    for name in games:
        g = get_game(name)
        episodes = game_examples(g, episodes_per_opponent=episodes_per_opponent,
                                 reasoning=reasoning, seed=seed, demonstrators=demonstrators)
        val = split_episodes(len(episodes), seed=seed, game=name,
                             validation_fraction=validation_fraction)
        game_rows: dict[str, list[dict[str, Any]]] = {"train": [], "validation": []}
        for i, rows in enumerate(episodes):
            game_rows["validation" if i in val else "train"].extend(rows)
        for split, rows in game_rows.items():
            splits[split].extend(rows)
        counts[name] = {
            "mixture": demonstrator_mixture(g, demonstrators),
            **_game_card(game_rows, {"train": len(episodes) - len(val), "validation": len(val)}),
        }
        if on_game is not None:
            on_game(name, sum(len(r) for r in episodes))
        if progress is not None:
            progress(len(counts), len(games))
    card = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "games": games,
        "episodes_per_opponent": episodes_per_opponent,
        "reasoning": reasoning,
        "seed": seed,
        "validation_fraction": validation_fraction,
        "files": dict(SPLITS),
        "examples": {split: len(rows) for split, rows in splits.items()},
        "counts": counts,
    }
    # Generation above takes no lock (it writes nothing); the write does, and checks `out`
    # again: another process may have written it meanwhile. The lock lives beside `out`, which
    # is replaced whole.
    with RunLock.for_output(out, "sft-data"):
        check_output_dir(out, overwrite=overwrite, made_by="sft-data")
        with staging_dir(out, clear_stale=True) as staging:
            with describing_os_errors(out):
                for split, filename in SPLITS.items():
                    (staging / filename).write_text(_jsonl(splits[split]), encoding="utf-8")
                (staging / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n",
                                                 encoding="utf-8")
                (staging / README_FILE).write_text(_readme(card), encoding="utf-8")
            write_output_marker(staging, "sft-data")
            replace_dir_atomically(staging, out)
    return card


# ------------------------------------------------------------------ reading


def _check_messages(value: Any, where: str, field: str, *, roles: Sequence[str]) -> None:
    if not isinstance(value, list) or not value:
        raise SFTDataError(f"{where}: {field!r} must be a non-empty list of chat messages")
    for m in value:
        if not (isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)):
            raise SFTDataError(f"{where}: {field!r} holds a message that is not "
                               '{"role": str, "content": str}')
        if m["role"] not in roles:
            raise SFTDataError(f"{where}: {field!r} has role {m['role']!r}; "
                               f"expected one of {', '.join(roles)}")


def read_card(data_dir: str | Path) -> dict[str, Any]:
    """The card of a data directory, or a clear error if the directory is not a dataset."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise SFTDataError(f"SFT data directory {data_dir} does not exist; "
                           "make one with `sepo sft-data GAME --out DIR`")
    if not data_dir.is_dir():
        raise SFTDataError(f"SFT data path {data_dir} is not a directory")
    path = data_dir / CARD_FILE
    if not path.is_file():
        present = sorted(p.name for p in data_dir.iterdir())
        raise SFTDataError(f"{data_dir} is not an SFT dataset: {CARD_FILE} is missing "
                           f"(found: {', '.join(present) or 'nothing'}); "
                           "make one with `sepo sft-data GAME --out DIR`")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SFTDataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise SFTDataError(f"{path}: not a {FORMAT} card (format is "
                           f"{card.get('format') if isinstance(card, dict) else None!r})")
    if not isinstance(card.get("games"), list) or not card["games"]:
        raise SFTDataError(f"{path}: 'games' must be a non-empty list")
    return card


def read_split(data_dir: str | Path, split: str, *,
               games: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every row of one split, validated line by line (errors name the file and the line).

    With `games`, only those games' rows are kept.
    """
    data_dir = Path(data_dir)
    card = read_card(data_dir)
    if split not in SPLITS:
        raise SFTDataError(f"unknown split {split!r}; choices: {', '.join(SPLITS)}")
    path = data_dir / SPLITS[split]
    if not path.is_file():
        raise SFTDataError(f"{path} is missing; regenerate the dataset with `sepo sft-data`")
    known = set(card["games"])
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8", errors="strict") as f:
        try:
            lines = list(enumerate(f, 1))
        except UnicodeDecodeError as e:
            raise SFTDataError(f"{path}: not UTF-8 text ({e})") from None
    for lineno, line in lines:
        where = f"{path}:{lineno}"
        if not line.strip():
            raise SFTDataError(f"{where}: empty line (each line must hold one JSON example)")
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SFTDataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise SFTDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        missing = [k for k in ("game", "prompt", "completion") if k not in row]
        if missing:
            raise SFTDataError(f"{where}: missing field(s) {', '.join(missing)}")
        _check_messages(row["prompt"], where, "prompt", roles=("system", "user"))
        _check_messages(row["completion"], where, "completion", roles=("assistant",))
        if row["game"] not in known:
            raise SFTDataError(f"{where}: game {row['game']!r} is not among the card's games "
                               f"({', '.join(card['games'])})")
        if games is None or row["game"] in games:
            rows.append(row)
    if not rows:
        which = f" for {', '.join(games)}" if games is not None else ""
        raise SFTDataError(f"{path} holds no examples{which}")
    return rows


def check_games(card: dict[str, Any], games: Sequence[str], data_dir: str | Path) -> None:
    """Raise GameMismatchError unless the dataset covers every game asked for."""
    missing = [g for g in games if g not in card["games"]]
    if missing:
        raise GameMismatchError(
            f"SFT data {data_dir} was made for {', '.join(card['games'])}, not "
            f"{', '.join(missing)}; generate it with `sepo sft-data {' '.join(missing)} "
            f"--out DIR` or pick the matching game")


def load_sft_data(data_dir: str | Path, game: str | Sequence[str]) -> dict[str, Any]:
    """Validated rows of the games asked for: {"card", "train", "validation"}.

    `game` is a name, names, or "all" (every registered game); the dataset must cover them.
    """
    card = read_card(data_dir)
    games = resolve_games(game)
    check_games(card, games, data_dir)
    return {"card": card,
            **{split: read_split(data_dir, split, games=games) for split in SPLITS}}


__all__ = [
    "CARD_FILE",
    "FORMAT",
    "SPLITS",
    "TRAIN_FILE",
    "VALIDATION_FILE",
    "VALIDATION_FRACTION",
    "DemonstratorMixture",
    "DemonstratorRecorder",
    "GameMismatchError",
    "SFTDataError",
    "check_games",
    "completion_text",
    "demonstrator_mixture",
    "game_examples",
    "generate_sft_data",
    "load_sft_data",
    "read_card",
    "read_split",
    "reason_sentence",
    "resolve_games",
    "sft_opponents",
    "split_episodes",
]
