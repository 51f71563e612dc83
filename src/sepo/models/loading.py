"""`load_model`: any model sepo can use, by name, local path or Hugging Face id.

Whatever the source, the caller gets a causal LM in eval mode and a tokenizer ready for batched
chat generation: a chat template, a pad token, left padding. And the vocabulary is checked at
load time: every game's action texts must encode and decode back exactly, or the model could
never name an action (a clear error now beats a run of parse failures later).
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sepo.errors import SepoError, UnknownNameError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from sepo.games.base import Game

#: Names `load_model` knows, besides local paths and Hugging Face ids.
MODEL_NAMES = ("tiny", "smollm2-135m")
DTYPES = ("auto", "float32", "bfloat16", "float16")
#: `org/name`: the shape of a Hugging Face model id.
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
HUB_HOST = "huggingface.co"
ADAPTER_CONFIG = "adapter_config.json"


def model_names() -> list[str]:
    return list(MODEL_NAMES)


# ------------------------------------------------------------------ resolving a name
def resolve(name_or_path: str, *, progress: bool = True) -> str:
    """The directory (or Hugging Face id) that `from_pretrained` should read for a model.

    `tiny` is built on first use and `smollm2-135m` converted on first use; both are cached.
    A local directory must hold a saved model. Anything else must look like an HF id.
    """
    if name_or_path == "tiny":
        from sepo.models.tiny import build_tiny

        return str(build_tiny(progress=progress))
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

    name_or_path: `tiny` (built on first use, then cached), `smollm2-135m` (converted from its
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
    model.eval()
    prepare_tokenizer(tokenizer, name_or_path)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    check_vocabulary(tokenizer, model_name=name_or_path)
    return model, tokenizer


@contextmanager
def transformers_progress(show: bool) -> Iterator[None]:
    """transformers' own progress bars (loading and writing weights): off when `show` is
    False, else as the caller left them (so an outer `transformers_progress(False)`, as in
    `sepo run`, keeps them off through every load inside it)."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    if not show:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if before else hf_logging.disable_progress_bar)()


def _device(device: str | None) -> tuple[torch.device, str | None]:
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu"), "auto"
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
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, device_map=device_map, local_files_only=local_only)
    except ValueError as err:  # e.g. an encoder-only or vision-only config
        raise SepoError(f"{source!r} is not a causal language model: {err}") from err
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    return model, tokenizer


def _from_adapter(path: Path, dtype: torch.dtype | str, device_map: str | None,
                  progress: bool) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A LoRA adapter directory (e.g. a SEPO checkpoint): its base model, loaded as any other
    (name, path or id), with the adapter merged into the weights. The tokenizer saved beside
    the adapter wins over the base's."""
    from peft import PeftModel
    from transformers import AutoTokenizer

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
    model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    if (path / "tokenizer_config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
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


def weights_digest(model: Any) -> str:
    """A short SHA-256 of a model's weights (names, dtypes, shapes and bytes, in name order):
    whether two caches or checkpoints hold the same model.

    Seeded training is bit-identical from run to run on one machine, but float rounding depends
    on the CPU's kernels, so `tiny` built on another machine can differ in the last bits and,
    through training, in every number downstream (docs/BENCHMARKS.md, "Reproducibility across
    machines"). The digest tells the two cases apart.
    """
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
