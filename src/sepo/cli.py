"""The `sepo` command line: thin wrappers around the Python API, printed with rich.

Every command lives here, and each is thin: it parses its options, calls one library function
(`sepo.pipeline.run_pipeline`, `sepo.models.info.model_info`, ...) and prints the result; work
that is not about the command line belongs in the library. Adding a command takes a few lines:

    @app.command()
    def mycommand(game: Annotated[str, typer.Argument(help="...")],
                  json_out: JsonFlag = False) -> None:
        \"\"\"One line of help.\"\"\"
        with progress_bar("working") as update:
            result = api_call(game, progress=update)
        print_json(result.to_dict()) if json_out else console.print(...)

(`progress_bar`, `print_json`, `console` and `JsonFlag` come from `sepo.console`, which the
library's long-running stages use too.) A command that builds a config model takes its
settings from the model: an option that sets a field is `field_option(Model, "field")` on a
parameter named like the field (its help is the field's description), collected with
`given_fields`, and `--config`/`--set` reach every field (`resolve_settings`). A group of
sub-commands (`sepo model ...`) is a `typer.Typer()` added with
`app.add_typer(group, name="model")`. Raise a `SepoError` for
anything the user got wrong: the one handler below prints it as one line, without a
traceback, and exits with code 2 (so it does a pydantic `ValidationError`, an option that does
not parse, an OS error such as a full disk, and a malformed JSON or TOML file).
Heavy modules (models, training) are imported inside the command that needs them, so
`sepo --help` and `sepo games` stay fast.
"""

import errno
import json
import math
import os
import secrets
import sys
import tomllib
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from sepo.config_model import merge_settings, nested_setting, parse_setting, read_settings
from sepo.console import JsonFlag, console, err_console, fmt, fmt_ci, print_json, progress_bar
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
from sepo.models.loading import DTYPES, check_device, check_dtype
from sepo.pipeline import RunConfig
from sepo.sft.train import SFTRunConfig
from sepo.train.config import ENGINES, LAMBDA_KEYS, Lambdas, SEPOConfig

try:  # typer ≥ 0.2x carries its own copy of click; older versions use click itself
    from typer._click import exceptions as _click_errors
    from typer._click.core import ParameterSource
except ImportError:  # pragma: no cover
    from click import exceptions as _click_errors  # type: ignore[no-redef]
    from click.core import ParameterSource  # type: ignore[no-redef]

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


def check_engine(value: str | None) -> str | None:
    if value is not None and value not in ENGINES:
        raise typer.BadParameter(f"must be one of {', '.join(ENGINES)}, got {value!r}")
    return value


#: The help of `--engine`, for every command that samples from a model.
ENGINE_HELP = (f"What samples from the model: {' | '.join(ENGINES)}. 'fast' (the default): "
               "sepo's own engine on transformers internals, several times faster on CPU (where "
               "it cannot run the model, sepo warns and uses 'generate'); 'generate': "
               "transformers' public generate only.")


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


# ------------------------------------------------------------------ options from config models
# `sepo train`, `sepo sft` and `sepo run` each build one config model. Its fields are the one
# source of their settings: a named flag's help is the field's description (`field_option`),
# and every field can be set from a TOML file (`--config`) or `--set KEY=VALUE`. Precedence,
# lowest first: the model's defaults (and the game's toml, which the model applies to fields
# left unset) < the --config file < --set items < the named flags given on the command line.


def field_option(model: type[BaseModel], name: str, *decls: str, **kwargs: Any) -> Any:
    """A typer option that sets the field `name` of `model`, its help the field's description
    and its shown default the field's (the option itself defaults to "not given"). The
    command's parameter should be named like the field, for `given_fields` to collect it."""
    field = model.model_fields[name]  # a misspelt name fails at import, in every test
    default = field.default
    if "show_default" not in kwargs and not field.is_required():
        if isinstance(default, bool):  # shown as the flag that is on, as typer does
            pair = next((d for d in decls if "/" in d), None)
            kwargs["show_default"] = pair.split("/")[not default].strip().lstrip("-") \
                if pair else False
        elif isinstance(default, int | float | str | Path) and default is not None:
            kwargs["show_default"] = str(default)
    return typer.Option(*decls, help=escape(field.description or ""), **kwargs)


def given(ctx: typer.Context, param: str) -> bool:
    """Whether the option `param` was given (on the command line, or by its environment
    variable), rather than left at its default."""
    source = ctx.get_parameter_source(param)
    return source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT,
                      ParameterSource.PROMPT)


def given_fields(ctx: typer.Context, model: type[BaseModel]) -> dict[str, Any]:
    """The command's options that were given and are named like a field of `model`, as
    field → value: the named-flag layer of the settings."""
    return {name: value for name, value in ctx.params.items()
            if name in model.model_fields and given(ctx, name)}


def resolve_settings(config_file: Path | None, items: list[str] | None,
                     flags: Mapping[str, Any], *extra: Mapping[str, Any],
                     arguments: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The fields to build a config with: the --config file, then the --set items, then the
    `extra` layers (`sepo run --sepo`), then the named `flags`, each overriding the ones
    before (tables merged key by key). `arguments` (field → ARGUMENT) are the fields the
    command's arguments set: the file or --set naming one is refused, not silently
    overridden."""
    lower = merge_settings(read_settings(config_file, items or []), *extra)
    for name, argument in (arguments or {}).items():
        if name in lower:
            raise SepoError(f"{name} is the {argument} argument; --config and --set cannot set "
                            "it")
    return merge_settings(lower, flags)


def check_required(ctx: typer.Context, model: type[BaseModel],
                   values: Mapping[str, Any]) -> None:
    """Refuse a required field that no layer set as the missing option, as click would."""
    for name, field in model.model_fields.items():
        if field.is_required() and name not in values:
            option = next((p.opts[0] for p in ctx.command.params if p.name == name), name)
            raise SepoError(f"Missing option '{option}' (or {name} in the --config file)")


def config_file_option(model: str, tables: str = "") -> Any:
    return typer.Option(
        "--config", metavar="FILE.toml", show_default=False,
        help=escape(f"A TOML file of {model} fields (docs/configuration.md){tables}. --set "
                    "and the options given override it."))


def set_option(model: str, example: str) -> Any:
    return typer.Option(
        "--set", metavar="KEY=VALUE", show_default=False,
        help=escape(f"A {model} field, VALUE read as JSON when it parses (else as text), "
                    f"repeatable, e.g. --set {example}; overrides --config, and the options "
                    "given override it."))


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
    engine: Annotated[str | None, typer.Option(callback=check_engine, help=ENGINE_HELP)]
    = None,
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
                                  seed=seed, engine=engine, device=device, dtype=dtype)
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


# ------------------------------------------------------------------ sepo sft-data, sepo sft
_Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Replace a non-empty --out (an earlier output, or files sepo did not "
                        "write). Never an input.")]


@app.command("sft-data")
def sft_data(
    game: Annotated[str, typer.Argument(help="Game name, or 'all' (see `sepo games`).")],
    out: Annotated[Path, typer.Option("--out", help="Dataset directory to write (new or "
                                                    "empty, or with --overwrite).")],
    episodes_per_opponent: Annotated[int, typer.Option(
        "--episodes-per-opponent", min=1, max=MAX_EPISODES,
        help="Episodes against each non-held-out strategy; each draws one demonstrator.")] = 50,
    reasoning: Annotated[bool, typer.Option(
        "--reasoning/--no-reasoning",
        help="Completions with a reason sentence before the action, or the bare action.")]
    = True,
    seed: Annotated[int, typer.Option(
        min=0, max=MAX_SEED, help="Generation seed (episodes, mixture draws, split).")] = 0,
    demonstrator: Annotated[list[str] | None, typer.Option(
        "--demonstrator", help="Only this demonstrator (repeatable; drawn uniformly). "
                               "Default: the game's SFT mixture.")] = None,
    overwrite: _Overwrite = False,
    json_out: JsonFlag = False,
) -> None:
    """Write demonstrator chat examples (train/validation JSONL and a card) for SFT."""
    from sepo.sft.data import generate_sft_data

    with progress_bar("generating SFT data") as update:
        card = generate_sft_data(game, out, episodes_per_opponent=episodes_per_opponent,
                                 reasoning=reasoning, seed=seed, demonstrators=demonstrator,
                                 progress=update, overwrite=overwrite)
    if json_out:
        print_json({"out": str(out), **card})
        return
    table = Table(title=f"SFT data in {out}")
    for col in ("game", "episodes train/val", "examples train/val", "demonstrators (examples)"):
        table.add_column(col)
    for name, g in card["counts"].items():
        table.add_row(
            name, f"{g['episodes']['train']}/{g['episodes']['validation']}",
            f"{g['examples']['train']}/{g['examples']['validation']}",
            ", ".join(f"{s} {c['examples']}" for s, c in g["strategies"].items()))
    console.print(table)


@app.command("sft")
def sft(
    ctx: typer.Context,
    game: Annotated[str, typer.Argument(help="Game to fine-tune for, or 'all'.")],
    model: Annotated[str, typer.Option(
        "--model", help="Base model: 'tiny', 'smollm2-135m', an HF id or a path.")],
    data: Annotated[Path, typer.Option("--data", help="Directory made by `sepo sft-data`.")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint directory to write (new or "
                                                    "empty, or with --overwrite).")],
    # `--lora/--full` is the `finetune` field as a switch; left out, the field decides.
    lora: Annotated[bool | None, field_option(SFTRunConfig, "finetune", "--lora/--full")]
    = None,
    merge_lora: Annotated[bool | None, field_option(
        SFTRunConfig, "merge_lora", "--merge/--no-merge")] = None,
    epochs: Annotated[float | None, field_option(SFTRunConfig, "epochs", min=0.0)] = None,
    learning_rate: Annotated[float | None, field_option(SFTRunConfig, "learning_rate", "--lr")]
    = None,
    batch_size: Annotated[int | None, field_option(
        SFTRunConfig, "batch_size", "--batch-size", min=1)] = None,
    grad_accum: Annotated[int | None, field_option(
        SFTRunConfig, "grad_accum", "--grad-accum", min=1)] = None,
    max_steps: Annotated[int | None, field_option(
        SFTRunConfig, "max_steps", "--max-steps", min=1)] = None,
    max_length: Annotated[int | None, field_option(
        SFTRunConfig, "max_length", "--max-length", min=8)] = None,
    seed: Annotated[int | None, field_option(SFTRunConfig, "seed")] = None,
    device: Annotated[str | None, field_option(SFTRunConfig, "device")] = None,
    share_prompt_prefix: Annotated[bool | None, field_option(
        SFTRunConfig, "share_prompt_prefix", "--share-prompt-prefix/--no-share-prompt-prefix")]
    = None,
    config_file: Annotated[Path | None, config_file_option("SFTRunConfig")] = None,
    settings: Annotated[list[str] | None, set_option("SFTRunConfig", "lora_r=16")] = None,
    overwrite: _Overwrite = False,
    json_out: JsonFlag = False,
) -> None:
    """Supervised fine-tuning on demonstrator data (TRL SFTTrainer, loss on the completion)."""
    from sepo.sft.train import train_sft

    flags = given_fields(ctx, SFTRunConfig)
    if lora is not None:
        flags["finetune"] = "lora" if lora else "full"
    if json_out:  # the JSON goes to stdout alone; the training bar would interleave with it
        flags["progress"] = False
    config = SFTRunConfig.from_dict(resolve_settings(config_file, settings, flags))
    result = train_sft(game, model, data, out, config, overwrite=overwrite)
    if json_out:
        print_json(result.model_dump())
        return
    table = Table(title=f"SFT checkpoint {out}", show_header=False)
    rows = [
        ("games", ", ".join(result.games)), ("base model", result.base_model),
        ("fine-tuning", result.finetune + (" (merged)" if result.merged else "")),
        ("trainable parameters", f"{result.trainable_parameters:,} of {result.parameters:,}"),
        ("examples train/val", f"{result.train_examples}/{result.eval_examples}"),
        ("steps", str(result.steps)), ("learning rate", f"{result.learning_rate:g}"),
        ("train loss", fmt(result.train_loss)),
        ("validation loss", f"{fmt(result.eval_loss_initial)} → {fmt(result.eval_loss_final)}"),
        ("time", f"{result.train_seconds:.1f} s ({result.tokens_per_second:,.0f} tokens/s)"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)


# ------------------------------------------------------------------ sepo train
@app.command("train")
def train(
    ctx: typer.Context,
    game: Annotated[str, typer.Argument(help="Game to train on (see `sepo games`).")],
    # Required, but a --config file may give them: `check_required` checks.
    model: Annotated[str | None, field_option(SEPOConfig, "model", "--model")] = None,
    out: Annotated[Path | None, field_option(SEPOConfig, "out", "--out")] = None,
    steps: Annotated[int | None, field_option(SEPOConfig, "steps")] = None,
    group_size: Annotated[int | None, field_option(SEPOConfig, "group_size", "--group-size", "-n")]
    = None,
    credit: Annotated[str | None, field_option(SEPOConfig, "credit")] = None,
    normalize: Annotated[str | None, field_option(SEPOConfig, "normalize")] = None,
    advantage: Annotated[str | None, field_option(SEPOConfig, "advantage")] = None,
    budget: Annotated[list[str] | None, typer.Option(
        "--budget", help="A safety budget METRIC=VALUE (exploit, collusion or externality), "
                         "repeatable, e.g. --budget exploit=0.3: that λ is then learned by "
                         "dual ascent to keep the metric within the budget (the `budgets` "
                         "field).")] = None,
    reward_only: Annotated[bool, field_option(SEPOConfig, "reward_only", "--reward-only")] = False,
    oracle: Annotated[bool | None, field_option(SEPOConfig, "oracle", "--oracle/--no-oracle")]
    = None,
    oracle_every: Annotated[int | None, field_option(SEPOConfig, "oracle_every")] = None,
    oracle_top: Annotated[int | None, field_option(SEPOConfig, "oracle_top")] = None,
    exact_credit: Annotated[bool | None, field_option(
        SEPOConfig, "exact_credit", "--exact-credit/--no-exact-credit")] = None,
    exact_expected: Annotated[bool | None, field_option(
        SEPOConfig, "exact_expected", "--exact-expected/--no-exact-expected")] = None,
    exploit_best_response: Annotated[bool, field_option(
        SEPOConfig, "exploit_best_response", "--exploit-best-response")] = False,
    best_response_groups: Annotated[int | None, field_option(SEPOConfig, "best_response_groups")]
    = None,
    lora: Annotated[bool | None, field_option(SEPOConfig, "lora", "--lora/--full")] = None,
    lora_merged_rollouts: Annotated[bool | None, field_option(
        SEPOConfig, "lora_merged_rollouts", "--lora-merged-rollouts/--lora-unmerged-rollouts")]
    = None,
    lr: Annotated[float | None, field_option(SEPOConfig, "lr")] = None,
    beta: Annotated[float | None, field_option(SEPOConfig, "beta")] = None,
    lambda_exploit: Annotated[float | None, field_option(Lambdas, "exploit")] = None,
    lambda_collusion: Annotated[float | None, field_option(Lambdas, "collusion")] = None,
    lambda_externality: Annotated[float | None, field_option(Lambdas, "externality")] = None,
    temperature: Annotated[float | None, field_option(SEPOConfig, "temperature")] = None,
    max_new_tokens: Annotated[int | None, field_option(SEPOConfig, "max_new_tokens")] = None,
    reasoning: Annotated[bool | None, field_option(
        SEPOConfig, "reasoning", "--reasoning/--no-reasoning")] = None,
    engine: Annotated[str | None, field_option(SEPOConfig, "engine")] = None,
    updates_per_step: Annotated[int | None, field_option(SEPOConfig, "updates_per_step")] = None,
    micro_batch_size: Annotated[int | None, field_option(SEPOConfig, "micro_batch_size")] = None,
    share_prompt_prefix: Annotated[bool | None, field_option(
        SEPOConfig, "share_prompt_prefix", "--share-prompt-prefix/--no-share-prompt-prefix")]
    = None,
    checkpoint_every: Annotated[int | None, field_option(SEPOConfig, "checkpoint_every")] = None,
    eval_episodes: Annotated[int | None, field_option(SEPOConfig, "eval_episodes")] = None,
    best_max_parse_failures: Annotated[float | None, field_option(
        SEPOConfig, "best_max_parse_failures")] = None,
    seed: Annotated[int | None, field_option(SEPOConfig, "seed")] = None,
    mixed_precision: Annotated[str | None, field_option(SEPOConfig, "mixed_precision")] = None,
    device: Annotated[str | None, field_option(SEPOConfig, "device")] = None,
    resume: Annotated[bool, field_option(SEPOConfig, "resume", "--resume")] = False,
    report_to: Annotated[list[str] | None, field_option(SEPOConfig, "report_to", "--report-to",
                                                        metavar="TRACKER")] = None,
    config_file: Annotated[Path | None, config_file_option(
        "SEPOConfig", ", with a [lambdas] table for the penalty weights")] = None,
    settings: Annotated[list[str] | None, set_option(
        "SEPOConfig", "clip_eps=0.1 --set lambdas.exploit=2")] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print the result as one JSON object.")] = False,
    no_progress: Annotated[bool, typer.Option(
        "--no-progress", help="No progress bar.")] = False,
) -> None:
    """Train an LM agent with SEPO (stage 2) or one of its baselines."""
    from sepo.train.run import train_run

    flags = given_fields(ctx, SEPOConfig)
    # A λ given alone changes that one; SEPOConfig takes the others from the game's toml.
    lambdas = {key: ctx.params[f"lambda_{key}"] for key in LAMBDA_KEYS
               if given(ctx, f"lambda_{key}")}
    if lambdas:
        flags["lambdas"] = lambdas
    if budget:
        flags["budgets"] = dict(parse_setting(item, "--budget") for item in budget)
    values = resolve_settings(config_file, settings, flags, arguments={"game": "GAME"})
    check_required(ctx, SEPOConfig, values)
    config = SEPOConfig(**values)
    summary = train_run(config, progress=not no_progress)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # several processes (accelerate launch, torchrun): the main one reports
    if json_out:
        print_json(summary)
        return
    typer.echo(f"{summary['condition']} on {game}: {summary['steps']} steps in "
               f"{summary['run_dir']}")
    if summary["best_checkpoint"] is not None:
        typer.echo(f"best checkpoint (Safety {summary['best_safety']:.3f}, step "
                   f"{summary['best_step']}): {summary['best_checkpoint']}")
    else:
        typer.echo(f"no best checkpoint: no in-training evaluation had "
                   f"{config.best_checkpoint_rule()} (metrics.csv)")


# ------------------------------------------------------------------ sepo run, sepo report
@app.command("run")
def run(
    ctx: typer.Context,
    game: Annotated[str, typer.Argument(help="A game (see `sepo games`) or 'all'.")],
    seeds: Annotated[int | None, field_option(RunConfig, "seeds")] = None,
    out: Annotated[Path | None, field_option(
        RunConfig, "out", show_default="runs/<game>-<model>")] = None,
    model: Annotated[str | None, field_option(RunConfig, "model")] = None,
    first_seed: Annotated[int | None, field_option(RunConfig, "first_seed")] = None,
    # The budgets' default is the game's `[budget]` table in its toml.
    steps: Annotated[int | None, field_option(RunConfig, "steps", show_default="per game")]
    = None,
    sft_episodes: Annotated[int | None, field_option(
        RunConfig, "sft_episodes", show_default="per game")] = None,
    sft_epochs: Annotated[float | None, field_option(
        RunConfig, "sft_epochs", show_default="per game")] = None,
    eval_episodes: Annotated[int | None, field_option(
        RunConfig, "eval_episodes", show_default="per game")] = None,
    group_size: Annotated[int | None, field_option(RunConfig, "group_size", "--group-size",
                                                   "-n")] = None,
    checkpoint_every: Annotated[int | None, field_option(
        RunConfig, "checkpoint_every", show_default="per game")] = None,
    reasoning: Annotated[bool | None, field_option(
        RunConfig, "reasoning", "--reasoning/--no-reasoning", show_default="per game")] = None,
    train_eval_episodes: Annotated[int | None, field_option(RunConfig, "train_eval_episodes")]
    = None,
    max_new_tokens: Annotated[int | None, field_option(RunConfig, "max_new_tokens")] = None,
    select: Annotated[str | None, field_option(RunConfig, "select")] = None,
    device: Annotated[str | None, field_option(RunConfig, "device")] = None,
    sepo_option: Annotated[list[str] | None, typer.Option(
        "--sepo", metavar="KEY=VALUE", show_default=False,
        help="Short for --set sepo.KEY=VALUE: a SEPOConfig field of both trained conditions, "
             "repeatable, e.g. --sepo lr=3e-5 --sepo credit=aux.")] = None,
    share_prompt_prefix: Annotated[bool | None, typer.Option(
        "--share-prompt-prefix/--no-share-prompt-prefix", show_default="share-prompt-prefix",
        help="SFT and the SEPO loss run the system prompt a batch shares once (the default: "
             "faster, same results up to float rounding). Off computes every prompt in full, "
             "as the runs before 2026-11-23 did.")] = None,
    config_file: Annotated[Path | None, config_file_option(
        "RunConfig", ", with [sepo] and [sft] tables of SEPOConfig and SFTRunConfig fields "
        "for every run of those stages")] = None,
    settings: Annotated[list[str] | None, set_option(
        "RunConfig", "seeds=3 --set sepo.lr=3e-5 --set sft.batch_size=8 (a dotted KEY reaches "
        "the [sepo] and [sft] tables)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the aggregates as JSON at "
                                                          "the end.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Delete a run with another config (or files sepo did not write) "
                            "in --out and start this one. A run with this config is "
                            "continued either way.")] = False,
) -> None:
    """The whole pipeline: base → SFT → SEPO and reward-only → evaluation → report."""
    from sepo.pipeline import run_pipeline
    from sepo.report import load_results

    flags = {**given_fields(ctx, RunConfig), "games": [game]}
    if share_prompt_prefix is not None:  # one switch for both stages' field of that name
        flags["sepo"] = {"share_prompt_prefix": share_prompt_prefix}
        flags["sft"] = {"share_prompt_prefix": share_prompt_prefix}
    sepo_items = merge_settings(*(nested_setting(*parse_setting(item, "--sepo"), "--sepo")
                                  for item in sepo_option or []))
    values = resolve_settings(config_file, settings, flags,
                              {"sepo": sepo_items} if sepo_items else {},
                              arguments={"games": "GAME"})
    # The default directory names the game and the model the settings chose, wherever from.
    values.setdefault("out", Path("runs") / f"{game}-{Path(values.get('model', 'tiny')).name}")
    config = RunConfig(**values)
    run_dir = run_pipeline(config, quiet=json_out, overwrite=overwrite)
    if json_out:
        typer.echo(json.dumps(load_results(run_dir)["aggregates"], indent=2))


@app.command("report")
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories of `sepo run`.")],
    out: Annotated[Path | None, typer.Option(
        help="Where the combined report goes (required with several run directories).")]
    = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw the PNGs.")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print the aggregates as JSON.")]
    = False,
) -> None:
    """Rebuild report.md, results.json/CSV and plots from one or several run directories."""
    from sepo.report import build_report, load_results, rich_table

    path = build_report(run_dirs, out, figures=plots)
    results = load_results(path.parent)
    if json_out:
        typer.echo(json.dumps(results["aggregates"], indent=2))
        return
    for game in sorted({a["game"] for a in results["aggregates"]}):
        console.print(rich_table(results["aggregates"], game, width=console.width))
    console.print(f"[bold]report:[/] {path}")


# ------------------------------------------------------------------ sepo model ...
model_app = typer.Typer(help="Build the embedded models (tiny, smollm2-135m) and inspect models.",
                        no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("build")
def build_command(
    name: Annotated[str, typer.Argument(help="tiny or smollm2-135m")] = "tiny",
    seed: Annotated[int, typer.Option(help="seed of the tiny build")] = 0,
    force: Annotated[bool, typer.Option(help="rebuild even if the cache has it")] = False,
    pretrain_steps: Annotated[int | None, typer.Option(
        "--pretrain-steps", min=0,
        help="tiny's pre-training steps (default 240). A build with other steps is another "
             "model: pass the printed path as --model (research/"
             "2026-11-23-longer-base-stage.md).")] = None,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="a TinyConfig field, KEY=VALUE, repeatable, e.g. --set hidden_size=256 "
                      "--set num_heads=8 (a build with other settings is another model, "
                      "cached apart; `sepo model info PATH` shows its config)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the build record")] = False,
) -> None:
    """Build `tiny` (tokenizer + pre-training on random legal play) or convert
    `smollm2-135m` from its GGUF file, into the sepo cache. Cached builds are reused. `tiny`
    itself ships in the package; building it checks this host against the shipped digest."""
    from sepo.models.build import build_model

    if (pretrain_steps is not None or settings) and name != "tiny":
        option = "--pretrain-steps" if pretrain_steps is not None else "--set"
        raise typer.BadParameter(f"{option} applies to tiny only, not {name!r}")
    record = build_model(name, seed=seed, force=force, settings=settings or [],
                         pretrain_steps=pretrain_steps, progress=not json_out)
    if json_out:
        typer.echo(json.dumps(record, indent=2))
        return
    console.print(f"[bold]{name}[/bold] ready at {record['path']} "
                  f"({record['seconds_this_call']:.1f} s this call)")
    if "matches_shipped" in record:
        same = ("the same as the shipped build's, which `--model tiny` loads"
                if record["matches_shipped"] else
                f"not the shipped build's {record['shipped_weights_digest']}: this host rounds "
                "differently; `--model tiny` loads the shipped build, pass this path to use "
                "yours")
        console.print(f"weights digest {record.get('weights_digest')}: {same}")


@model_app.command("info")
def info_command(
    name: Annotated[str, typer.Argument(help="tiny, smollm2-135m, a model directory or an HF id")],
    device: Annotated[str, typer.Option(
        callback=check_device, help="cpu, cuda, cuda:N, mps or auto")] = "cpu",
    dtype: Annotated[str | None, typer.Option(
        callback=check_dtype, help="float32, bfloat16, float16 or auto")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Parameters, vocabulary, context length, cache path, dtype, chat readiness and a digest
    of the weights of a model (checking on the way that it can write every game's actions).
    The digest reads every weight once."""
    from sepo.models.info import model_info

    report = model_info(name, device=device, dtype=dtype, progress=not json_out)
    if json_out:
        typer.echo(json.dumps(report, indent=2))
        return
    table = Table(title=f"model {name}", show_header=False)
    for key, value in report.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) and not isinstance(value, bool)
                      else str(value))
    console.print(table)
