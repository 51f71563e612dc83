"""`load_model`: any model sepo can use, by name, local path or Hugging Face id.

Whatever the source, the caller gets a causal LM in eval mode and a tokenizer ready for batched
chat generation: a chat template, a pad token, left padding. And the vocabulary is checked at
load time: every game's action texts must encode and decode back exactly, or the model could
never name an action (a clear error now beats a run of parse failures later).

A broken model is refused the same way, before any play or training: unreadable files (JSON,
safetensors headers, tokenizer), weights that do not fit the architecture the config names
(transformers would only warn and initialise the missing tensors at random), and NaN or
infinite weights. Each refusal is a one-line `SepoError` naming the path and the problem.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from sepo.errors import SepoError, UnknownNameError

# `weights_digest` and `transformers_progress` are re-exported: callers import them from here.
from sepo.models.util import resolve_device, transformers_progress, weights_digest  # noqa: F401

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from sepo.games.base import Game

#: Names `load_model` knows, besides local paths and Hugging Face ids.
MODEL_NAMES = ("tiny", "smollm2-135m")
DTYPES = ("auto", "float32", "bfloat16", "float16")
#: Where `load_model` can put a model (`cuda:N` picks a GPU).
DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?|mps|auto")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


# Typer callbacks of the CLI's --device and --dtype, kept here (not in `sepo.cli`, which
# imports every command module) so that any command can check them before loading anything.
# `typer.BadParameter` makes the CLI's one-line error name the option.
def check_device(value: str | None) -> str | None:
    if value is not None and not DEVICE_PATTERN.fullmatch(value):
        raise typer.BadParameter(str(UnknownNameError("device", value, DEVICE_CHOICES)))
    return value


def check_dtype(value: str | None) -> str | None:
    if value is not None and value not in DTYPES:
        raise typer.BadParameter(str(UnknownNameError("dtype", value, DTYPES)))
    return value
#: `org/name`: the shape of a Hugging Face model id.
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
HUB_HOST = "huggingface.co"
ADAPTER_CONFIG = "adapter_config.json"


def model_names() -> list[str]:
    return list(MODEL_NAMES)


# ------------------------------------------------------------------ resolving a name
def resolve(name_or_path: str, *, progress: bool = True) -> str:
    """The directory (or Hugging Face id) that `from_pretrained` should read for a model.

    `tiny` is the build shipped in the package (built into the cache only when the default
    config no longer matches it); `smollm2-135m` is converted on first use and cached.
    A local directory must hold a saved model. Anything else must look like an HF id.
    """
    if name_or_path == "tiny":
        from sepo.models.tiny import build_tiny, shipped_tiny

        shipped = shipped_tiny()
        return str(shipped if shipped is not None else build_tiny(progress=progress))
    if name_or_path == "smollm2-135m":
        from sepo.models.smollm2 import smollm2_path

        return str(smollm2_path(progress=progress))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir() or not _holds_model(path):
            inside = _models_inside(path) if path.is_dir() else []
            hint = (f"; these directories inside it do: {', '.join(inside)}" if inside
                    else "")
            raise SepoError(f"{name_or_path!r} holds no model: a model directory has a "
                            f"config.json and weights or, for LoRA adapters, an "
                            f"{ADAPTER_CONFIG} (as written by save_pretrained){hint}")
        return str(path)
    if _looks_like_path(name_or_path):
        raise SepoError(f"model path {name_or_path!r} does not exist")
    if _HF_ID.match(name_or_path):
        return name_or_path
    err = UnknownNameError("model", name_or_path, MODEL_NAMES)
    err.args = (f"{err.args[0]}, a model directory, or a Hugging Face id (org/name)",)
    raise err


def _holds_model(path: Path) -> bool:
    """Whether `save_pretrained` wrote a model (or a LoRA adapter) into `path`. A config.json
    alone is not enough: a `sepo train` run directory has one (its run config)."""
    if (path / ADAPTER_CONFIG).exists():
        return True
    return (path / "config.json").exists() and any(
        any(path.glob(pattern)) for pattern in ("*.safetensors", "*.bin", "*.index.json"))


def _models_inside(path: Path, limit: int = 8) -> list[str]:
    """Model directories one or two levels below `path` (a run directory's `best` and
    `checkpoints/step-N`), relative to it, for the error message."""
    found = sorted({str(c.parent.relative_to(path))
                    for pattern in ("*/config.json", "*/*/config.json", f"*/{ADAPTER_CONFIG}",
                                    f"*/*/{ADAPTER_CONFIG}")
                    for c in path.glob(pattern) if _holds_model(c.parent)})
    return found[:limit] + ([f"... ({len(found) - limit} more)"] if len(found) > limit else [])


def _looks_like_path(s: str) -> bool:
    return s.startswith((".", "/", "~")) or s.count("/") > 1 or (os.sep in s and os.sep != "/")


# ------------------------------------------------------------------ loading
def load_model(name_or_path: str, *, device: str | None = None, dtype: str | None = None,
               progress: bool = True) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM (eval mode) and its chat-ready tokenizer, by name, path or HF id.

    name_or_path: `tiny` (the build shipped in the package), `smollm2-135m` (converted from its
        GGUF on first use, then cached), a directory written by `save_pretrained` (e.g. an SFT
        checkpoint; a LoRA adapter directory is loaded onto its base model and merged), or a
        Hugging Face id such as `Qwen/Qwen3.5-4B`.
    device: `cpu`, `cuda`, `cuda:N`, `mps`, or `auto` (spread over every GPU with
        accelerate's device map); default `cuda` when available, else `cpu`.
    dtype: `float32`, `bfloat16`, `float16` or `auto` (the checkpoint's); default float32 on
        CPU and bfloat16 on GPU.
    """
    torch_device, device_map = _device(device)
    torch_dtype = _dtype(dtype, torch_device)
    source = resolve(name_or_path, progress=progress)
    with transformers_progress(progress):
        if not Path(source).exists():
            model, tokenizer = _from_hub(source, torch_dtype, device_map)
        elif (Path(source) / "config.json").exists():
            model, tokenizer = _from_pretrained(source, torch_dtype, device_map,
                                                local_only=True)
        else:
            model, tokenizer = _from_adapter(Path(source), torch_dtype, device_map, progress)
    if device_map is None:
        model.to(torch_device)
    check_finite_weights(model, source)
    model.eval()
    prepare_tokenizer(tokenizer, name_or_path)
    _check_chat_template(tokenizer, source)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    check_vocabulary(tokenizer, model_name=name_or_path)
    return model, tokenizer


def _device(device: str | None) -> tuple[torch.device, str | None]:
    import torch

    if device is None or device == "auto":
        return torch.device(resolve_device(device)), device
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UnknownNameError("device", device, ["cpu", "cuda", "cuda:N", "mps", "auto"]) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SepoError(f"device {device!r} asked for, but no CUDA GPU is available here")
    return dev, None


def _dtype(dtype: str | None, device: torch.device) -> torch.dtype | str:
    import torch

    if dtype is None:
        dtype = "float32" if device.type == "cpu" else "bfloat16"
    if dtype not in DTYPES:
        raise UnknownNameError("dtype", dtype, DTYPES)
    return dtype if dtype == "auto" else getattr(torch, dtype)


def _from_pretrained(source: str, dtype: torch.dtype | str, device_map: str | None, *,
                     local_only: bool) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer of a directory (`local_only`) or of a Hub id (downloading). An
    OSError of a download is left to the caller, which says the Hub could not be reached."""
    import torch
    from transformers import AutoModelForCausalLM

    if local_only:
        check_model_files(Path(source))
    with _held_transformers_logs() as held:
        # the tokenizer first: it is cheap, so a broken one is refused before a large model
        tokenizer = _load_tokenizer(source, local_only=local_only)
        try:
            # mismatched shapes reported (not raised) so that the refusal can name them
            model, info = AutoModelForCausalLM.from_pretrained(
                source, dtype=dtype, device_map=device_map, local_files_only=local_only,
                ignore_mismatched_sizes=True, output_loading_info=True)
        except torch.OutOfMemoryError:
            raise
        except OSError as err:
            if not local_only:
                raise
            raise SepoError(f"{source!r}: cannot load the model: {_one_line(err)}") from err
        except ValueError as err:  # e.g. an encoder-only or vision-only config
            raise SepoError(f"{source!r} cannot be loaded as a causal language model: "
                            f"{_one_line(err)}") from err
        except Exception as err:  # safetensors, state-dict and conversion errors
            if "above report" in str(err):  # the table that the error refers to
                _release(held)
            raise SepoError(f"{source!r}: cannot load the model's weights: "
                            f"{type(err).__name__}: {_one_line(err)}") from err
        problem = _loading_problem(model, info)
        if problem:
            raise SepoError(f"{source!r}: {problem}")
    return model, tokenizer


def _load_tokenizer(source: str, *, local_only: bool) -> PreTrainedTokenizerBase:
    """`AutoTokenizer.from_pretrained`, with a local tokenizer that cannot be read refused in
    one line that names the file (tokenizers raises bare Exceptions, json KeyErrors...)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    except Exception as err:
        if isinstance(err, OSError) and not local_only:
            raise
        where = _tokenizer_file_problem(Path(source)) if local_only else None
        raise SepoError(where or f"{source!r}: cannot load its tokenizer: "
                                 f"{type(err).__name__}: {_one_line(err)}") from err


def _tokenizer_file_problem(path: Path) -> str | None:
    """Which tokenizer file of `path` is broken, if any (its JSON files are checked before)."""
    from tokenizers import Tokenizer

    file = path / "tokenizer.json"
    if not file.exists():
        return None
    try:
        Tokenizer.from_file(str(file))
    except Exception as err:  # tokenizers raises a bare Exception
        return f"{str(file)!r} is not a valid tokenizer file: {_one_line(err)}"
    return None


#: JSON files that transformers and peft read from a model or adapter directory.
_JSON_FILES = ("config.json", "generation_config.json", "tokenizer_config.json",
               "special_tokens_map.json", ADAPTER_CONFIG)


def check_model_files(path: Path, *, adapter: bool = False) -> None:
    """Raise a one-line `SepoError` naming the file if a model (or adapter) directory holds
    a JSON file that does not parse, a config.json naming no model type or one that this
    transformers does not know, or a safetensors file whose header does not read (a
    truncated or corrupt file: the header records every tensor's extent, so a short file
    fails here). Cheap: no tensor is read."""
    from safetensors import SafetensorError, safe_open

    for file in [path / name for name in _JSON_FILES] + sorted(path.glob("*.index.json")):
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text())
        except (ValueError, OSError) as err:  # UnicodeDecodeError is a ValueError
            raise SepoError(f"{str(file)!r} is not valid JSON: {_one_line(err)}") from err
        if not isinstance(data, dict):
            raise SepoError(f"{str(file)!r} is not a JSON object")
        if file.name == "config.json" and not adapter:
            _check_model_type(file, data.get("model_type"))
    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as f:
                f.keys()
        except (SafetensorError, OSError) as err:
            raise SepoError(f"{str(file)!r} is truncated or corrupt (not a readable "
                            f"safetensors file: {_one_line(err)})") from err


def _check_model_type(file: Path, model_type: Any) -> None:
    """A config.json must name a model type that this transformers knows (sepo loads no
    remote code), or no class can hold its weights."""
    import transformers
    from transformers import CONFIG_MAPPING

    if not isinstance(model_type, str) or not model_type:
        raise SepoError(f"{str(file)!r} names no model_type, so the architecture of the model "
                        "is unknown")
    if model_type not in CONFIG_MAPPING:
        raise SepoError(f"{str(file)!r} names the model type {model_type!r}, which "
                        f"transformers {transformers.__version__} does not know (a newer "
                        "version may)")


@contextmanager
def _held_transformers_logs() -> Iterator[list[logging.LogRecord]]:
    """Hold back what transformers logs while a model loads (its table of missing or
    unexpected tensors, warnings about a config that does not fit its weights...): a model
    refused with a `SepoError` gets that one line alone, which names the problem; otherwise
    the records go out afterwards as they would have. Held at transformers' own handlers,
    since a logger's filters do not see the records of its children."""
    handlers = list(logging.getLogger("transformers").handlers)
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        held.append(record)
        return False

    for handler in handlers:
        handler.addFilter(hold)
    refused = False
    try:
        yield held
    except SepoError:
        refused = True
        raise
    finally:
        for handler in handlers:
            handler.removeFilter(hold)
        if not refused:
            _release(held)


def _release(held: list[logging.LogRecord]) -> None:
    """Log the held records now (through their loggers, so to the same handlers)."""
    while held:
        record = held.pop(0)
        logging.getLogger(record.name).handle(record)


def _loading_problem(model: PreTrainedModel, info: dict[str, Any]) -> str | None:
    """What `from_pretrained`'s loading info says is wrong with the weights, or None.

    transformers has already left out of it the keys a model may legitimately lack (tied
    weights such as `lm_head.weight` under `tie_word_embeddings`, and each class's
    `_keys_to_ignore_on_load_*`), so anything left means tensors that were initialised at
    random or dropped.
    """
    parts = []
    if info.get("missing_keys"):
        parts.append(f"{_keys(info['missing_keys'])} missing from the checkpoint (they would "
                     "be initialised at random)")
    if info.get("unexpected_keys"):
        parts.append(f"{_keys(info['unexpected_keys'])} unexpected (not part of the model)")
    if info.get("mismatched_keys"):
        shapes = sorted(f"{key} {tuple(ckpt)} vs {tuple(want)}"
                        for key, ckpt, want in info["mismatched_keys"])
        parts.append(f"{_keys(shapes)} of the wrong shape (checkpoint vs model)")
    if info.get("error_msgs"):
        parts.append(f"errors: {_one_line(' '.join(map(str, info['error_msgs'])))}")
    if not parts:
        return None
    model_type = getattr(model.config, "model_type", "?")
    return (f"the weights do not fit {type(model).__name__}, the architecture its config "
            f"names (model type {model_type!r}): {'; '.join(parts)}")


def _keys(keys: Any, show: int = 3) -> str:
    """`N tensor(s) (a, b, c, ...)`: a count and the first few names, sorted."""
    names = sorted(map(str, keys))
    shown = ", ".join(names[:show]) + (", ..." if len(names) > show else "")
    return f"{len(names)} tensor{'s' if len(names) != 1 else ''} ({shown})"


def _one_line(err: BaseException | str, limit: int = 300) -> str:
    """An exception's message as one line: its first line (with the next when the first ends
    in a colon, as 'Error(s) in loading ...:' does), cut at `limit` characters."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__ if isinstance(err, BaseException) else ""
    text = lines[0] + (f" {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else "")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_finite_weights(model: Any, source: str, chunk: int = 1 << 24) -> None:
    """Raise a one-line `SepoError` naming the tensors if any floating-point parameter or
    buffer holds a NaN or an infinity: such a model plays and trains without complaint but
    every number it yields is meaningless. Chunked, so a large embedding matrix costs no
    full-size temporary; tensors offloaded to the meta device are skipped."""
    import torch

    bad, dtype = [], None
    tensors = dict(model.named_parameters())  # tied weights once
    tensors.update(model.named_buffers())
    with torch.no_grad():
        for name, tensor in tensors.items():
            if not tensor.is_floating_point() or tensor.is_meta:
                continue
            flat = tensor.detach().reshape(-1)
            if not all(bool(torch.isfinite(flat[i : i + chunk]).all())
                       for i in range(0, flat.numel(), chunk)):
                bad.append(name)
                dtype = str(tensor.dtype).removeprefix("torch.")
    if bad:
        raise SepoError(f"{source!r}: NaN or infinite values in {_keys(bad)} (as {dtype}); "
                        "the checkpoint is corrupt or its training diverged")


def _check_chat_template(tokenizer: PreTrainedTokenizerBase, source: str) -> None:
    """Compile the chat template now: a broken one would otherwise fail at the first turn."""
    from jinja2 import TemplateSyntaxError

    try:
        tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=False,
                                      add_generation_prompt=True)
    except TemplateSyntaxError as err:
        raise SepoError(f"{source!r}: its chat template does not compile: "
                        f"{_one_line(err)}") from err


def _from_adapter(path: Path, dtype: torch.dtype | str, device_map: str | None,
                  progress: bool) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A LoRA adapter directory (e.g. a SEPO checkpoint): its base model, loaded as any other
    (name, path or id), with the adapter merged into the weights. The tokenizer saved beside
    the adapter wins over the base's."""
    import torch
    from peft import PeftModel

    check_model_files(path, adapter=True)
    try:
        base = json.loads((path / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
    except (KeyError, ValueError) as err:
        raise SepoError(f"{str(path)!r}: {ADAPTER_CONFIG} names no base model ({err})") from err
    if not base:
        raise SepoError(f"{str(path)!r}: {ADAPTER_CONFIG} names no base model")
    base_source = resolve(base, progress=progress)
    if Path(base_source).exists():
        model, tokenizer = _from_pretrained(base_source, dtype, device_map, local_only=True)
    else:
        model, tokenizer = _from_hub(base_source, dtype, device_map)
    # peft only warns when the adapter lacks tensors the model has (the layers keep their
    # zero-initialised B, so the adapter silently does nothing there): make that a refusal
    missing_warning = "Found missing adapter keys"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
        except torch.OutOfMemoryError:
            raise
        except Exception as err:  # safetensors, state-dict and config errors
            raise SepoError(f"{str(path)!r}: cannot load the LoRA adapter: "
                            f"{type(err).__name__}: {_one_line(err)}") from err
    for w in caught:
        if missing_warning in str(w.message):
            keys = re.findall(r"'([^']+)'", str(w.message).partition(missing_warning)[2])
            raise SepoError(f"{str(path)!r}: the LoRA adapter does not fit its base model "
                            f"{base!r}: {_keys(keys)} missing from it (missing adapter keys)")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    if (path / "tokenizer_config.json").exists():
        tokenizer = _load_tokenizer(str(path), local_only=True)
    return model, tokenizer


def _from_hub(model_id: str, dtype: torch.dtype | str, device_map: str | None,
              ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load from the local HF cache when the model is there (as a plain directory: no network
    at all); download only when the hub is reachable, checked first with a quick connection,
    so a machine without access fails at once instead of hanging in retries."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        local = snapshot_download(model_id, local_files_only=True)
    except LocalEntryNotFoundError:
        local = None
    if local is not None and (Path(local) / "config.json").exists():
        return _from_pretrained(local, dtype, device_map, local_only=True)
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("", "0", "false"):
        raise SepoError(f"model {model_id!r} is not in the local Hugging Face cache and "
                        "HF_HUB_OFFLINE is set, so it cannot be downloaded")
    if not hub_reachable():
        raise SepoError(f"model {model_id!r} is not in the local Hugging Face cache and the "
                        f"Hugging Face Hub ({HUB_HOST}) cannot be reached from this machine, "
                        "so it cannot be downloaded. Download it where the hub is reachable "
                        "and pass its directory instead.")
    try:
        return _from_pretrained(model_id, dtype, device_map, local_only=False)
    except OSError as err:
        raise SepoError(f"could not download model {model_id!r} from the Hugging Face Hub: "
                        f"{str(err).splitlines()[0]}") from err


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hugging Face Hub opens within `timeout` seconds."""
    endpoint = os.environ.get("HF_ENDPOINT", f"https://{HUB_HOST}")
    host = re.sub(r"^\w+://", "", endpoint).split("/")[0]
    name, _, port = host.partition(":")
    try:
        with socket.create_connection((name, int(port or 443)), timeout=timeout):
            return True
    except OSError:
        return False


# ------------------------------------------------------------------ tokenizer and vocabulary
#: ChatML, the template of SmolLM2-Instruct and Qwen; used when a tokenizer has none.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, model_name: str = "") -> None:
    """Left padding, a pad token, and a chat template (in place).

    Left padding so a batch's prompts all end where generation starts. A tokenizer with no
    pad token pads with its end-of-sequence token (masked out by the attention mask). A
    tokenizer with no chat template gets ChatML when its vocabulary has ChatML's markers;
    otherwise the model cannot be prompted as a chat agent, which is an error.
    """
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise SepoError(f"model {model_name!r}: its tokenizer has neither a pad nor an "
                            "end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        vocab = tokenizer.get_vocab()
        if "<|im_start|>" in vocab and "<|im_end|>" in vocab:
            tokenizer.chat_template = CHATML_TEMPLATE
        else:
            raise SepoError(f"model {model_name!r}: its tokenizer has no chat template; sepo "
                            "prompts models as chat agents (use an instruct/chat model)")


@cache
def _game_action_texts() -> tuple[tuple[str, tuple[str, ...]], ...]:
    from sepo.models.corpus import action_texts, available_games

    return tuple((g.name, tuple(action_texts(g))) for g in available_games())


def check_vocabulary(tokenizer: PreTrainedTokenizerBase, games: Sequence[Game] | None = None, *,
                     model_name: str = "") -> None:
    """Raise a `SepoError` unless every action text of every game (or of `games`) encodes
    and decodes back to itself, alone and after a newline (where an answer puts it)."""
    if games is None:
        table = _game_action_texts()
    else:
        from sepo.models.corpus import action_texts

        table = tuple((g.name, tuple(action_texts(g))) for g in games)
    unk = tokenizer.unk_token_id
    for game, texts in table:
        for text in texts:
            for context in ("", "\n"):
                ids = tokenizer.encode(context + text, add_special_tokens=False)
                back = tokenizer.decode(ids, skip_special_tokens=False)
                # after a newline compare without surrounding whitespace: tokenizers that
                # normalise whitespace still express the action itself exactly
                same = back == text if not context else back.strip() == text
                if (unk is not None and unk in ids) or not same:
                    raise SepoError(
                        f"model {model_name!r} cannot express the {game} action {text!r}: its "
                        f"tokenizer turns it into {back.strip()!r}. Use a model whose "
                        "vocabulary covers the games' actions.")
