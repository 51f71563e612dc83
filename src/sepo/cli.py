"""The `sepo` command line: thin wrappers around the Python API, printed with rich.

Adding a command takes a few lines:

    @app.command()
    def mycommand(game: Annotated[str, typer.Argument(help="...")],
                  json_out: JsonFlag = False) -> None:
        \"\"\"One line of help.\"\"\"
        with progress_bar("working") as update:
            result = api_call(game, progress=update)
        print_json(result.to_dict()) if json_out else console.print(...)

(`progress_bar`, `print_json`, `console` and `JsonFlag` come from `sepo.console`, which the
command modules elsewhere import too.) A group of sub-commands (`sepo model ...`) is a
`typer.Typer()` added with `app.add_typer(group, name="model")`. Raise a `SepoError` for
anything the user got wrong: the one handler below prints it as one line, without a
traceback, and exits with code 2 (so it does a pydantic `ValidationError`, an option that does
not parse, an OS error such as a full disk, and a malformed JSON or TOML file).
Heavy modules (models, training) are imported inside the command that needs them, so
`sepo --help` and `sepo games` stay fast.
"""

import errno
import json
import math
import secrets
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from sepo.console import JsonFlag, console, err_console, fmt_ci, print_json, progress_bar
from sepo.errors import SepoError, describe_validation_error
from sepo.games import GameUnavailableError, game_names, get_game, get_strategy
from sepo.games.base import Game
from sepo.limits import (
    MAX_BOOTSTRAP,
    MAX_BOOTSTRAP_DRAWS,
    MAX_EPISODES,
    MAX_EVAL_SEEDS,
    MAX_NEW_TOKENS,
    MAX_SEED,
)
from sepo.models.commands import model_app
from sepo.models.loading import DTYPES, check_device, check_dtype
from sepo.pipeline import report, run
from sepo.sft.commands import sft, sft_data
from sepo.train.commands import train

try:  # typer ≥ 0.2x carries its own copy of click; older versions use click itself
    from typer._click import exceptions as _click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as _click_errors  # type: ignore[no-redef]

class _SepoGroup(TyperGroup):
    """The one error handler: bad input from any command (sub-groups included) becomes a
    one-line message on stderr and exit code 2. Bad input is a `SepoError`, a pydantic
    `ValidationError` (a config value out of range), a usage error (an option that does not
    parse), an OS error (a full disk, a read-only or missing path) or a malformed JSON/TOML
    file. Anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _click_errors.UsageError as err:
            if type(err).__name__ == "NoArgsIsHelpError":  # `sepo model`: shows the help
                raise
            where = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
            _fail(err.format_message() + where)
        except SepoError as err:
            _fail(describe_sepo_error(err))
        except ValidationError as err:
            _fail(describe_validation_error(err))
        except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            _fail(describe_decode_error(err))
        except OSError as err:
            if err.errno == errno.EPIPE:  # `sepo ... | head`: click handles a closed pipe
                raise
            _fail(describe_os_error(err))


def _fail(message: str) -> None:
    """Print `error: message` as one line on stderr and exit with code 2."""
    line = " ".join(message.split())  # a message never spans lines, whatever it embeds
    err_console.print(f"[bold red]error:[/] {escape(line)}", soft_wrap=True)
    raise typer.Exit(2)


def describe_sepo_error(err: SepoError) -> str:
    """The error's message; a pydantic error embedded in it is shown in the one-line form."""
    message = str(err)
    cause = err.__cause__
    if isinstance(cause, ValidationError) and str(cause) in message:
        message = message.replace(str(cause), describe_validation_error(cause))
    return message


def describe_decode_error(err: ValueError) -> str:
    """A user file that is not valid JSON, TOML or UTF-8 text."""
    if isinstance(err, json.JSONDecodeError):
        return f"a file is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})"
    if isinstance(err, UnicodeDecodeError):
        return f"a file is not UTF-8 text: {err.reason} at byte {err.start}"
    return f"a file is not valid TOML: {err}"


def _short_path(path: Any) -> str:
    """A path for an error message; one with a 300-character name is cut in the middle."""
    text = str(path)
    return text if len(text) <= 160 else f"{text[:80]}…{text[-80:]}"


def describe_os_error(err: OSError) -> str:
    """An OS error as one line naming the path and the cause (a full disk, a read-only or
    forbidden directory, a name too long, ...): `sepo.rundir.describe_os_error`'s wording for
    errors met writing; a neutral one for a missing path (met reading as often as writing) and
    for a library's own OSError without an error number (its message says what happened)."""
    from sepo.rundir import describe_os_error as describe_write_error

    paths = [p for p in (err.filename, err.filename2) if p is not None]
    if err.errno is None or err.errno == errno.ENOENT:
        where = " → ".join(_short_path(p) for p in paths)
        cause = err.strerror or str(err) or type(err).__name__
        return f"{where}: {cause}" if where else cause
    # The same error with its path shortened: the message names it once, cut if very long.
    shortened = OSError(err.errno, err.strerror, *(_short_path(p) for p in paths[:1]))
    return str(describe_write_error(shortened))


app = typer.Typer(
    cls=_SepoGroup,
    help="SEPO: train and evaluate language-model agents that play strategic games safely.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

def _version(value: bool) -> None:
    if value:
        try:
            typer.echo(version("sepo"))
        except PackageNotFoundError:
            typer.echo("unknown (not installed)")
        raise typer.Exit()


@app.callback()
def main(
    show_version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """SEPO: train and evaluate language-model agents that play strategic games safely."""


# ------------------------------------------------------------------ option checks
# Typer callbacks for options that no pydantic config validates: each raises
# `typer.BadParameter`, which the handler prints as one line naming the option. The device
# and dtype checks live in `sepo.models.loading` (`sepo model info` uses them too).


def check_temperature(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise typer.BadParameter(f"must be a finite number ≥ 0 (0: greedy), got {value}")
    return value


def check_top_p(value: float | None) -> float | None:
    if value is not None and not 0 < value <= 1:  # also refuses NaN
        raise typer.BadParameter(f"must be in (0, 1], got {value}")
    return value


def load_model_agent(model: str, **options: Any) -> Any:
    """An LM agent (`sepo.agents.load_lm_agent`); options left as None take its defaults."""
    try:
        from sepo.agents import load_lm_agent
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("sepo"):
            raise SepoError(f"language-model agents are not available in this install "
                            f"({err.name} is missing)") from None
        raise
    return load_lm_agent(model, **{k: v for k, v in options.items() if v is not None})


# ------------------------------------------------------------------ sepo games
def _game_info(game: Game) -> dict[str, Any]:
    return {
        "name": game.name,
        "title": game.title,
        "rounds": game.num_rounds,
        "simultaneous": game.simultaneous,
        "actions": game.actions_help,
        "max_payoff": game.max_payoff,
        "scale": game.scale,
        "pools": game.pools,
        "lambdas": dict(game.defaults.get("lambdas", {})),
        "strategies": {n: s.description for n, s in game.strategies.items()},
    }


@app.command()
def games(json_out: JsonFlag = False) -> None:
    """The games: rounds, actions, max payoff and opponent pools."""
    infos = []
    for name in game_names(plugins=True):
        try:
            infos.append(_game_info(get_game(name)))
        except (ModuleNotFoundError, GameUnavailableError) as err:  # missing or broken module
            err_console.print(f"warning: game {name!r} unavailable ({err})", soft_wrap=True)
    if json_out:
        print_json(infos)
        return
    table = Table(title="Games", show_lines=True)
    for col in ("game", "rounds", "actions", "max payoff", "pools"):
        table.add_column(col)
    for info in infos:
        shown = info["actions"]
        pools = "\n".join(f"{role}: {', '.join(names)}" for role, names in info["pools"].items()
                          if names)
        table.add_row(f"[bold]{info['name']}[/]\n{escape(info['title'])}", str(info["rounds"]),
                      escape(shown), f"{info['max_payoff']:g}", escape(pools))
    console.print(table)


# ------------------------------------------------------------------ sepo eval
def _print_eval(report: Any) -> None:
    data = report.to_dict()
    title = (f"{data['game']}: {escape(data['agent'])} — {data['episodes']} episodes × "
             f"{data['seeds']} seed(s) per opponent")
    opp = Table(title=title)
    for col in ("opponent", "pools", "agent / round", "opponent / round", "gap", "NRA"):
        opp.add_column(col, justify="left" if col in ("opponent", "pools") else "right")
    for name, o in data["per_opponent"].items():
        ci = o["ci95"]
        opp.add_row(escape(name), ", ".join(o["pools"]),
                    fmt_ci(o["agent_pay_per_round"], ci["agent_pay_per_round"]),
                    fmt_ci(o["opponent_pay_per_round"], ci["opponent_pay_per_round"]),
                    fmt_ci(o["gap"], ci["gap"]), fmt_ci(o["nra"], ci["nra"]))
    console.print(opp)

    across = data.get("ci95_across_seeds")
    summary = Table(title="Metrics (95% bootstrap intervals)")
    summary.add_column("metric")
    summary.add_column("value [lo, hi]", justify="right")
    if across:
        summary.add_column("across seeds [lo, hi]", justify="right")
    names = [k for k in data["ci95"] if k in data]
    for name in names:
        row = [name, fmt_ci(data[name], data["ci95"][name])]
        if across:
            row.append(fmt_ci(data[name], across[name]) if name in across else "")
        summary.add_row(*row)
    console.print(summary)
    symbol = {"exploit": "λe", "collusion": "λc", "externality": "λx"}
    lam = ", ".join(f"{symbol.get(k, k)} {v:g}" for k, v in data["lambdas"].items())
    console.print(f"Safety = s·u − λe·s·e − λc·c − λx·x with s = {data['scale']:g}, {lam}.")


#: `sepo eval --agent` name of a game's SFT demonstrator mixture (docs/method.md §2.3), the
#: reference an SFT agent is compared with (docs/SFT.md).
SFT_MIXTURE = "sft-mixture"


@app.command("eval")
def eval_command(
    game: Annotated[str, typer.Argument(help="Game name (see `sepo games`).")],
    agent: Annotated[str | None, typer.Option(
        help=f"Evaluate a rule-based strategy of the game, or '{SFT_MIXTURE}' (the SFT "
             "demonstrator mixture that an SFT agent imitates).")] = None,
    model: Annotated[str | None, typer.Option(
        help="Evaluate a language model: tiny, smollm2-135m, an HF id or a local path.")] = None,
    episodes: Annotated[int, typer.Option(
        min=1, max=MAX_EPISODES, help="Episodes per opponent per seed.")] = 50,
    seeds: Annotated[int, typer.Option(min=1, max=MAX_EVAL_SEEDS, help="Evaluation seeds.")]
    = 1,
    seed: Annotated[int, typer.Option(
        min=0, max=MAX_SEED, help="First evaluation seed index (and bootstrap seed).")] = 0,
    n_boot: Annotated[int, typer.Option(min=1, max=MAX_BOOTSTRAP, help="Bootstrap resamples.")]
    = 1000,
    temperature: Annotated[float | None, typer.Option(
        callback=check_temperature, help="LM sampling temperature (0: greedy).")] = None,
    top_p: Annotated[float | None, typer.Option(
        callback=check_top_p, help="LM nucleus sampling p, in (0, 1].")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(
        min=1, max=MAX_NEW_TOKENS, help="LM tokens per answer.")] = None,
    reasoning: Annotated[bool | None, typer.Option(
        "--reasoning/--no-reasoning", help="Let the LM write a short thought first.")] = None,
    device: Annotated[str | None, typer.Option(
        callback=check_device, help="Torch device for --model: cpu, cuda, cuda:N, mps or auto.")]
    = None,
    dtype: Annotated[str | None, typer.Option(
        callback=check_dtype, help=f"Weights dtype for --model: {', '.join(DTYPES)}.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Evaluate a strategy or a language model against every opponent pool of GAME."""
    from sepo.evaluation import evaluate

    game_ = get_game(game)
    # Every episode is kept in memory until the metrics are computed, and so is the bootstrap's
    # matrix: refuse sizes that would exhaust it before playing any.
    if episodes * seeds > MAX_EPISODES:
        raise SepoError(f"--episodes × --seeds must be at most {MAX_EPISODES:,} (every episode "
                        f"is kept in memory); got {episodes:,} × {seeds:,}")
    if n_boot * episodes * seeds > MAX_BOOTSTRAP_DRAWS:
        raise SepoError(f"--n-boot × --episodes × --seeds must be at most "
                        f"{MAX_BOOTSTRAP_DRAWS:,} (the bootstrap's matrix); got "
                        f"{n_boot:,} × {episodes:,} × {seeds:,}")
    if (agent is None) == (model is None):
        raise SepoError(
            "give exactly one of --agent STRATEGY or --model NAME_OR_PATH "
            f"(strategies of {game_.name}: {', '.join(sorted(game_.strategies))}; "
            f"or {SFT_MIXTURE})")
    if agent == SFT_MIXTURE:
        from sepo.sft.data import DemonstratorMixture

        player: Any = DemonstratorMixture(game_)
    elif agent is not None:
        player = get_strategy(game_, agent)
    else:
        player = load_model_agent(model, temperature=temperature, top_p=top_p,
                                  max_new_tokens=max_new_tokens, reasoning=reasoning,
                                  seed=seed, device=device, dtype=dtype)
    with progress_bar(f"evaluating on {game_.name}") as update:
        report = evaluate(game_, player, episodes=episodes, seeds=seeds, n_boot=n_boot,
                          seed=seed, progress=update)
    if json_out:
        print_json(report.to_dict())
    else:
        _print_eval(report)


# ------------------------------------------------------------------ sepo play
@app.command()
def play(
    game: Annotated[str, typer.Argument(help="Game name (see `sepo games`).")],
    opponent: Annotated[str | None, typer.Option(
        help="Opponent strategy (default: the first of the train pool).")] = None,
    model: Annotated[str | None, typer.Option(
        "--opponent-model", "--model",
        help="Play against a language model (name or path) instead of a strategy.")] = None,
    seed: Annotated[int | None, typer.Option(
        min=0, max=MAX_SEED, help="Episode seed (default: random).")] = None,
) -> None:
    """Play GAME yourself in the terminal against a strategy or a model."""
    from sepo.human import HumanPlayer, HumanQuit, play_human

    game_ = get_game(game)
    if opponent is not None and model is not None:
        raise SepoError("give at most one of --opponent STRATEGY or --opponent-model NAME_OR_PATH")
    if seed is None:
        seed = secrets.randbits(31)
    if model is not None:
        rival: Any = load_model_agent(model, seed=seed)
    else:
        rival = get_strategy(game_, opponent or game_.pools["train"][0])
    human = HumanPlayer(input=sys.stdin, output=sys.stdout)
    human.write(f"{game_.title} against {rival.name} (seed {seed}). "
                "Type your action; Ctrl-D or Ctrl-C quits.\n")
    try:
        play_human(game_, human, rival, seed)
    except (HumanQuit, KeyboardInterrupt):
        human.write("Game abandoned.")


# ------------------------------------------------------------------ the other areas' commands
# Each area keeps its commands beside its code (`sepo.<area>.commands`); those modules import
# nothing heavy at the top, and print with `sepo.console`, never with this module.
app.add_typer(model_app, name="model")
app.command("sft-data")(sft_data)
app.command("sft")(sft)
app.command("train")(train)
app.command("run")(run)
app.command("report")(report)
