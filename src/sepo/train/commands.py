"""`sepo train GAME --model CKPT --out RUN_DIR [...]`: the typer command behind the CLI.

The lead wires it into `sepo.cli` with `app.command()(train)`. Options left unset take the
config's defaults (and the game's λ, β, lr from its data file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sepo.console import print_json
from sepo.metrics import json_safe
from sepo.train.config import CREDITS, MIXED_PRECISIONS, NORMALIZATIONS


def train(
    game: Annotated[str, typer.Argument(help="Game to train on (see `sepo games`).")],
    model: Annotated[str, typer.Option(
        "--model", help="Starting checkpoint: 'tiny', 'smollm2-135m', an HF id or a path "
                        "(usually the SFT output).")],
    out: Annotated[Path, typer.Option("--out", help="Run directory.")],
    steps: Annotated[int | None, typer.Option(help="SEPO steps.")] = None,
    group_size: Annotated[int | None, typer.Option(
        "--group-size", "-n", help="Rollouts per opponent group (paper: 4).")] = None,
    credit: Annotated[str | None, typer.Option(
        help=f"Penalty credit: {' | '.join(CREDITS)} (aux: the paper's Algorithm 1; "
             "constant: the paper's released code).")] = None,
    normalize: Annotated[str | None, typer.Option(
        help=f"Advantage normalisation: {' | '.join(NORMALIZATIONS)}.")] = None,
    reward_only: Annotated[bool, typer.Option(
        "--reward-only", help="All λ = 0: the plain GRPO baseline.")] = False,
    exploit_best_response: Annotated[bool, typer.Option(
        "--exploit-best-response", help="Kuhn only: add an exploit group against the exact "
                                        "best response to the current policy, rebuilt every "
                                        "step (beyond the game's fixed pools; "
                                        "docs/method.md §5.7).")] = False,
    best_response_groups: Annotated[int | None, typer.Option(
        help="With --exploit-best-response: groups that play it (default 1).")] = None,
    lora: Annotated[bool | None, typer.Option(
        "--lora/--full", help="LoRA adapters or full fine-tuning (default: LoRA above 1B "
                              "parameters).")] = None,
    lora_merged_rollouts: Annotated[bool | None, typer.Option(
        "--lora-merged-rollouts/--lora-unmerged-rollouts",
        help="With LoRA, sample rollouts with the adapters folded into the weights (faster; "
             "the default) or through the unmerged adapters.")] = None,
    lr: Annotated[float | None, typer.Option(help="AdamW learning rate (default: the game's).")]
    = None,
    beta: Annotated[float | None, typer.Option(
        help="One-sided KL weight β (default: the game's).")] = None,
    lambda_exploit: Annotated[float | None, typer.Option(help="λe (default: the game's).")]
    = None,
    lambda_collusion: Annotated[float | None, typer.Option(help="λc (default: the game's).")]
    = None,
    lambda_externality: Annotated[float | None, typer.Option(
        help="λx (default: the game's).")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(
        "--max-new-tokens", help="Generation budget per decision.")] = None,
    reasoning: Annotated[bool | None, typer.Option(
        "--reasoning/--no-reasoning", help="A short thought before the action.")] = None,
    updates_per_step: Annotated[int | None, typer.Option(
        "--updates-per-step", help="Optimiser passes over each step's rollouts.")] = None,
    micro_batch_size: Annotated[int | None, typer.Option(
        "--micro-batch-size", help="Decisions per forward/backward.")] = None,
    share_prompt_prefix: Annotated[bool | None, typer.Option(
        "--share-prompt-prefix/--no-share-prompt-prefix",
        help="Run a micro-batch's common prompt prefix once in the loss's forward passes, "
             "and the rows after it packed where the model allows (the default; same "
             "log-probs up to rounding, fewer FLOPs).")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(
        "--checkpoint-every", help="Checkpoint and evaluate every k steps.")] = None,
    eval_episodes: Annotated[int | None, typer.Option(
        "--eval-episodes", help="Episodes per opponent in the in-training evaluation.")]
    = None,
    seed: Annotated[int | None, typer.Option(help="Run seed.")] = None,
    mixed_precision: Annotated[str | None, typer.Option(
        "--mixed-precision", help=f"{' | '.join(MIXED_PRECISIONS)} (CPU: no).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: automatic).")]
    = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue RUN_DIR from its last checkpoint.")] = False,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print the result as one JSON object.")] = False,
    no_progress: Annotated[bool, typer.Option(
        "--no-progress", help="No progress bar.")] = False,
) -> None:
    """Train an LM agent with SEPO (stage 2) or one of its baselines."""
    from sepo.games import get_game
    from sepo.models.loading import MODEL_NAMES, resolve
    from sepo.train.config import SEPOConfig

    fields: dict[str, Any] = {
        "game": game, "model": model, "out": out, "steps": steps, "group_size": group_size,
        "credit": credit, "normalize": normalize, "reward_only": reward_only, "lora": lora,
        "lora_merged_rollouts": lora_merged_rollouts,
        "exploit_best_response": exploit_best_response or None,
        "best_response_groups": best_response_groups,
        "lr": lr, "beta": beta, "temperature": temperature, "max_new_tokens": max_new_tokens,
        "reasoning": reasoning, "updates_per_step": updates_per_step,
        "micro_batch_size": micro_batch_size, "share_prompt_prefix": share_prompt_prefix,
        "checkpoint_every": checkpoint_every,
        "eval_episodes": eval_episodes, "seed": seed, "mixed_precision": mixed_precision,
        "device": device, "resume": resume,
    }
    overrides = {"exploit": lambda_exploit, "collusion": lambda_collusion,
                 "externality": lambda_externality}
    if any(v is not None for v in overrides.values()):
        lambdas = dict(get_game(game).defaults["lambdas"])
        lambdas.update({k: v for k, v in overrides.items() if v is not None})
        fields["lambdas"] = lambdas
    config = SEPOConfig(**{k: v for k, v in fields.items() if v is not None})
    if model not in MODEL_NAMES:  # a mistyped name or path: refused before RUN_DIR is made
        resolve(model, progress=False)  # (the embedded names are built on first use)
    # Imported once the options are valid: the trainer brings in torch (seconds).
    from sepo.train.sepo import train_sepo

    result = train_sepo(config, progress=not no_progress)

    summary = {
        "run_dir": str(result.run_dir),
        "condition": config.condition,
        "steps": result.steps,
        "last_checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
        "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
        "best_step": result.best_step,
        "best_safety": result.best_safety,
        "final": json_safe(result.final),
    }
    if json_out:
        print_json(summary)
        return
    typer.echo(f"{config.condition} on {game}: {result.steps} steps in {result.run_dir}")
    if result.best_checkpoint is not None:
        typer.echo(f"best checkpoint (Safety {result.best_safety:.3f}, step "
                   f"{result.best_step}): {result.best_checkpoint}")
