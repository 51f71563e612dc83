"""The `sepo` command line: thin wrappers around the Python API, printed with rich.

Adding a command takes a few lines:

    @app.command()
    def mycommand(game: Annotated[str, typer.Argument(help="...")],
                  json_out: JsonFlag = False) -> None:
        \"\"\"One line of help.\"\"\"
        with progress_bar("working") as update:
            result = api_call(game, progress=update)
        print_json(result.to_dict()) if json_out else console.print(...)

A group of sub-commands (`sepo model ...`) is a `typer.Typer()` added with
`app.add_typer(group, name="model")`. Raise a `SepoError` for anything the user got wrong: the
one handler below prints it as one line, without a traceback, and exits with code 2.
Heavy modules (models, training) are imported inside the command that needs them, so
`sepo --help` and `sepo games` stay fast.
"""

import json
import math
import secrets
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from typer.core import TyperGroup

from sepo.errors import SepoError
from sepo.games import game_names, get_game, get_strategy
from sepo.games.base import Game

console = Console()
err_console = Console(stderr=True)


class _SepoGroup(TyperGroup):
    """The one error handler: a `SepoError` from any command (sub-groups included) becomes a
    one-line message on stderr and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SepoError as err:
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_SepoGroup,
    help="SEPO: train and evaluate language-model agents that play strategic games safely.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


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


# ------------------------------------------------------------------ shared helpers
def print_json(obj: Any) -> None:
    """One JSON object on stdout (plain text: rich would wrap long lines)."""
    typer.echo(json.dumps(obj, indent=2, allow_nan=False))


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def fmt_ci(value: float | None, interval: tuple[float, float] | list[float | None] | None,
           digits: int = 3) -> str:
    """"value [lo, hi]", the way every number is reported."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if interval is None or interval[0] is None or not math.isfinite(interval[0]):
        return fmt(value, digits)
    return f"{value:.{digits}f} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr (only on a terminal); yields `update(done, total)`."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=err_console,
                  transient=True, disable=not err_console.is_terminal) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


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
    for name in game_names():
        try:
            infos.append(_game_info(get_game(name)))
        except ModuleNotFoundError as err:  # a game whose module is not installed
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


#: `sepo eval --agent` name of a game's SFT demonstrator mixture (SPEC §2 weights), the
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
    episodes: Annotated[int, typer.Option(min=1, help="Episodes per opponent per seed.")] = 50,
    seeds: Annotated[int, typer.Option(min=1, help="Evaluation seeds.")] = 1,
    seed: Annotated[int, typer.Option(help="First evaluation seed index (and bootstrap seed).")]
    = 0,
    n_boot: Annotated[int, typer.Option(min=1, help="Bootstrap resamples.")] = 1000,
    temperature: Annotated[float | None, typer.Option(help="LM sampling temperature.")] = None,
    top_p: Annotated[float | None, typer.Option(help="LM nucleus sampling p.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="LM tokens per answer.")] = None,
    reasoning: Annotated[bool | None, typer.Option(
        "--reasoning/--no-reasoning", help="Let the LM write a short thought first.")] = None,
    device: Annotated[str | None, typer.Option(help="Torch device for --model.")] = None,
    dtype: Annotated[str | None, typer.Option(
        help="Weights dtype for --model, e.g. bfloat16 on GPUs.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Evaluate a strategy or a language model against every opponent pool of GAME."""
    from sepo.evaluation import evaluate

    game_ = get_game(game)
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
    seed: Annotated[int | None, typer.Option(help="Episode seed (default: random).")] = None,
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
# Each area keeps its commands beside its code; their modules import nothing heavy at the top.
from sepo.models.commands import model_app  # noqa: E402
from sepo.pipeline import report, run  # noqa: E402
from sepo.sft.commands import sft, sft_data  # noqa: E402
from sepo.train.commands import train  # noqa: E402

app.add_typer(model_app, name="model")
app.command("sft-data")(sft_data)
app.command("sft")(sft)
app.command("train")(train)
app.command("run")(run)
app.command("report")(report)
