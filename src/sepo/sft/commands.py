"""`sepo sft-data` and `sepo sft`: the typer commands behind the CLI.

The lead wires them into `sepo.cli` with `app.command("sft-data")(sft_data)` and
`app.command("sft")(sft)`. They raise `SepoError` for bad input; the CLI's handler prints it.
They print with `sepo.console` (importing `sepo.cli`, which imports them, would be a loop).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sepo.console import JsonFlag
from sepo.limits import MAX_EPISODES, MAX_SEED

_Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Replace a non-empty --out (an earlier output, or files sepo did not "
                        "write). Never an input.")]


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
    from rich.table import Table

    from sepo.console import console, print_json, progress_bar
    from sepo.sft.data import generate_sft_data, resolve_games

    games = resolve_games(game)
    with progress_bar("generating SFT data") as update:
        done: list[str] = []

        def on_game(name: str, examples: int) -> None:
            done.append(name)
            update(len(done), len(games))

        card = generate_sft_data(games, out, episodes_per_opponent=episodes_per_opponent,
                                 reasoning=reasoning, seed=seed, demonstrators=demonstrator,
                                 on_game=on_game, overwrite=overwrite)
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


def sft(
    game: Annotated[str, typer.Argument(help="Game to fine-tune for, or 'all'.")],
    model: Annotated[str, typer.Option(
        "--model", help="Base model: 'tiny', 'smollm2-135m', an HF id or a path.")],
    data: Annotated[Path, typer.Option("--data", help="Directory made by `sepo sft-data`.")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint directory to write (new or "
                                                    "empty, or with --overwrite).")],
    lora: Annotated[bool | None, typer.Option(
        "--lora/--full", help="LoRA adapters (r 32, α 64) or full fine-tuning (default: full "
                              "up to 200M parameters, LoRA above).")] = None,
    merge: Annotated[bool, typer.Option(
        "--merge/--no-merge", help="Save LoRA merged into a plain model.")] = False,
    epochs: Annotated[float | None, typer.Option(min=0.0, help="Epochs (default 3).")] = None,
    lr: Annotated[float | None, typer.Option(
        help="Learning rate (default: 2e-5 LoRA; full: 1e-3 under 50M parameters, "
             "1e-5 above).")] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", min=1, help="Examples per step (default 16).")] = None,
    grad_accum: Annotated[int | None, typer.Option(
        "--grad-accum", min=1, help="Gradient accumulation steps (default 1).")] = None,
    max_steps: Annotated[int | None, typer.Option(
        "--max-steps", min=1, help="Stop after this many steps.")] = None,
    max_length: Annotated[int | None, typer.Option(
        "--max-length", min=8, help="Token limit of prompt + completion.")] = None,
    seed: Annotated[int | None, typer.Option(help="Training seed (default 0).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    share_prompt_prefix: Annotated[bool | None, typer.Option(
        "--share-prompt-prefix/--no-share-prompt-prefix",
        help="Run the system prompt a batch shares once (the default; same loss up to "
             "rounding, fewer FLOPs).")] = None,
    overwrite: _Overwrite = False,
    json_out: JsonFlag = False,
) -> None:
    """Supervised fine-tuning on demonstrator data (TRL SFTTrainer, loss on the completion)."""
    from rich.table import Table

    from sepo.console import console, fmt, print_json
    from sepo.sft.train import SFTRunConfig, train_sft

    options: dict[str, Any] = {
        "finetune": None if lora is None else "lora" if lora else "full",
        "merge_lora": merge, "epochs": epochs, "learning_rate": lr, "batch_size": batch_size,
        "grad_accum": grad_accum, "max_steps": max_steps, "max_length": max_length,
        "seed": seed, "device": device, "share_prompt_prefix": share_prompt_prefix,
        # the JSON goes to stdout alone; the training bar would interleave with it
        "progress": not json_out,
    }
    config = SFTRunConfig.from_dict({k: v for k, v in options.items() if v is not None})
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
