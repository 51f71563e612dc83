"""`sepo model ...`: build the embedded models and describe any model.

A typer sub-app; `sepo.cli` mounts it as `model`. Errors are `SepoError`s, which the main app
prints as one line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from sepo.config_model import check_field
from sepo.errors import SepoError, UnknownNameError, describe_validation_error
from sepo.models.loading import MODEL_NAMES, check_device, check_dtype
from sepo.models.tiny_config import TinyConfig  # no torch: `sepo.models.tiny` has it
from sepo.models.util import weights_digest

model_app = typer.Typer(help="Build the embedded models (tiny, smollm2-135m) and inspect models.",
                        no_args_is_help=True)


@model_app.command("build")
def build(
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
    t0 = time.perf_counter()
    if (pretrain_steps is not None or settings) and name != "tiny":
        option = "--pretrain-steps" if pretrain_steps is not None else "--set"
        raise typer.BadParameter(f"{option} applies to tiny only, not {name!r}")
    if name == "tiny":
        config = tiny_config(settings or [], pretrain_steps)  # before torch is imported
        from sepo.models.tiny import build_info, build_tiny, shipped_tiny

        path = build_tiny(config, seed, force=force, progress=not json_out)
        record: dict[str, Any] = build_info(path) or {}
        shipped = shipped_tiny()
        if shipped is not None and path.name == "tiny-" + str(record.get("key")) and \
                (build_info(shipped) or {}).get("key") == record.get("key"):
            # The same build as the one `tiny` loads: say whether this host rounds alike.
            digest = (build_info(shipped) or {}).get("weights_digest")
            record["shipped_weights_digest"] = digest
            record["matches_shipped"] = digest == record.get("weights_digest")
    elif name == "smollm2-135m":
        from sepo.models.smollm2 import CONVERT_INFO, smollm2_path

        path = smollm2_path(force=force, progress=not json_out)
        record = json.loads((path / CONVERT_INFO).read_text())
    else:
        raise UnknownNameError("buildable model", name, MODEL_NAMES)
    record = {**record, "path": str(path), "seconds_this_call": round(time.perf_counter() - t0, 2)}
    if json_out:
        typer.echo(json.dumps(record, indent=2))
        return
    from rich.console import Console

    console = Console()
    console.print(f"[bold]{name}[/bold] ready at {path} "
                  f"({record['seconds_this_call']:.1f} s this call)")
    if "matches_shipped" in record:
        same = ("the same as the shipped build's, which `--model tiny` loads"
                if record["matches_shipped"] else
                f"not the shipped build's {record['shipped_weights_digest']}: this host rounds "
                "differently; `--model tiny` loads the shipped build, pass this path to use "
                "yours")
        console.print(f"weights digest {record.get('weights_digest')}: {same}")


def tiny_config(settings: list[str], pretrain_steps: int | None = None) -> TinyConfig:
    """The default `TinyConfig` with `--set KEY=VALUE` overrides (VALUE read as JSON when it
    parses) and `--pretrain-steps`. An unknown key names the fields; a bad value is a one-line
    `SepoError` naming the field and the bound. The overrides are checked before
    `sepo.models.tiny` (torch: seconds to import) is imported."""
    overrides: dict[str, Any] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SepoError(f"--set expects KEY=VALUE, got {item!r}")
        check_field(TinyConfig, "TinyConfig field", key)
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    if pretrain_steps is not None:
        overrides["pretrain_steps"] = pretrain_steps
    _tiny_settings(TinyConfig, TinyConfig().model_dump(), overrides)
    from sepo.models import tiny

    # The build's default is read where the build reads it (tests put a smaller one there).
    default = tiny.TinyConfig()
    return _tiny_settings(type(default), default.model_dump(), overrides)


def _tiny_settings(cls: type[TinyConfig], defaults: dict[str, Any],
                   overrides: dict[str, Any]) -> TinyConfig:
    try:
        return cls.model_validate({**defaults, **overrides})
    except ValidationError as err:
        raise SepoError(f"bad tiny setting: {describe_validation_error(err)}") from None


def model_info(name_or_path: str, *, device: str | None = "cpu", dtype: str | None = None,
               progress: bool = True) -> dict[str, Any]:
    """What `sepo model info` reports: size, vocabulary, context, where it lives, and whether
    it is ready for chat. A broken model (unreadable files, weights that do not fit its
    config, NaN weights) is a one-line `SepoError` from `load_model`."""
    from sepo.models.loading import _device, _dtype, load_model, resolve
    from sepo.models.tiny import BUILD_INFO, build_info

    # `load_model`'s own checks, first: `resolve` may build tiny (minutes) before it runs them.
    _dtype(dtype, _device(device)[0])
    source = resolve(name_or_path, progress=progress)
    t0 = time.perf_counter()
    model, tokenizer = load_model(name_or_path, device=device, dtype=dtype, progress=progress)
    load_s = time.perf_counter() - t0
    cfg = model.config
    info: dict[str, Any] = {
        "name": name_or_path,
        "path": source,
        "architecture": (cfg.architectures or [type(model).__name__])[0],
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "context_length": getattr(cfg, "max_position_embeddings", None),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "device": str(next(model.parameters()).device),
        "chat_template": bool(tokenizer.chat_template),
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
        "padding_side": tokenizer.padding_side,
        "load_seconds": round(load_s, 2),
        # Of the weights as loaded (dtype included): whether two caches hold the same model.
        "weights_digest": weights_digest(model),
    }
    try:
        build = build_info(Path(source)) if Path(source).exists() else None
    except (ValueError, OSError) as err:  # a damaged sepo_build.json: one line, no traceback
        raise SepoError(f"{source!r}: {BUILD_INFO} is not valid JSON: "
                        f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
                        ) from err
    if build is not None:
        info["build"] = {k: build[k] for k in ("seed", "games", "seconds", "loss_last",
                                                 "torch", "cpu")
                         if k in build}
    return info


@model_app.command("info")
def info(
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
    report = model_info(name, device=device, dtype=dtype, progress=not json_out)
    if json_out:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"model {name}", show_header=False)
    for key, value in report.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) and not isinstance(value, bool)
                      else str(value))
    Console().print(table)
