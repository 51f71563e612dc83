"""Supervised fine-tuning on demonstrator data with TRL's `SFTTrainer` (docs/method.md §4).

The data are conversational prompt/completion rows (`sepo.sft.data`); the loss is on the
completion only (the reason sentence, the action and the end-of-turn token). Large models get
LoRA adapters on their attention projections with the paper's defaults (r 32, α 64, dropout
.05, lr 2e-5, cosine, 3 epochs); small ones (the embedded `tiny`, SmolLM2-135M) are fully
fine-tuned. The checkpoint is a plain `save_pretrained` directory (model + tokenizer), written
atomically, with `sepo_sft.json` beside the weights saying what it was trained on.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sepo.config_model import check_field
from sepo.errors import SepoError
from sepo.rundir import (
    RunLock,
    check_output_dir,
    describing_os_errors,
    make_staging_dir,
    model_input_paths,
    replace_dir_atomically,
    write_output_marker,
)
from sepo.sft.data import load_sft_data, resolve_games

#: Models up to this many parameters are fully fine-tuned by default; larger ones get LoRA.
FULL_FINETUNE_MAX_PARAMS = 200_000_000
#: Learning rates when none is given. LoRA: the paper's. Full fine-tuning: 1e-3 for models under
#: 50 M parameters (the embedded `tiny`: a 3 M model needs a large step to move in a few hundred
#: updates; measured in docs/SFT.md), 1e-5 above (a usual full-FT rate for 100 M+ models).
LORA_LR, SMALL_FULL_LR, LARGE_FULL_LR = 2e-5, 1e-3, 1e-5
SMALL_MODEL_PARAMS = 50_000_000
#: Written beside the weights of every SFT checkpoint.
SFT_INFO_FILE = "sepo_sft.json"

#: Linear layers of attention, by architecture: Llama/Qwen/Gemma/SmolLM/Mistral, GPT-2, NeoX/Falcon.
_ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "c_attn", "query_key_value",
                          "Wqkv", "out_proj")


class NonFiniteLossError(SepoError):
    """Training produced a NaN or infinite loss; nothing was saved."""


#: What an unknown-field error calls a field of `SFTRunConfig`. It checks its fields only in
#: `from_dict` (and `sepo run` its pass-through ones): built directly, it is pydantic's error.
SFT_FIELD_KIND = "SFT config field"


class SFTRunConfig(BaseModel):
    """Settings of one SFT run (docs/method.md §4); `None` fields are chosen per model."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    finetune: Literal["auto", "full", "lora"] = Field(
        "auto", description="'full' fine-tuning or 'lora' adapters (r 32, α 64 unless "
        f"lora_r/lora_alpha say otherwise); 'auto': full up to {FULL_FINETUNE_MAX_PARAMS:,} "
        "parameters (tiny, smollm2-135m), LoRA above")
    # Bounds (as in `sepo.train.config`): NaN/inf refused; a rate of 1 already destroys a model,
    # 1,000 epochs or a million steps is a typo; numpy's legacy seeding takes 32-bit seeds.
    learning_rate: float | None = Field(
        None, gt=0, le=1, allow_inf_nan=False,
        description=f"learning rate; None: {LORA_LR:g} with LoRA; full fine-tuning "
        f"{SMALL_FULL_LR:g} "
        f"under {SMALL_MODEL_PARAMS:,} parameters, {LARGE_FULL_LR:g} above")
    epochs: float = Field(3.0, gt=0, le=1000, allow_inf_nan=False,
                          description="passes over the training examples")
    lr_scheduler: str = Field("cosine", description="learning-rate schedule, a transformers "
                                                    "`lr_scheduler_type` name")
    warmup: float = Field(0.03, ge=0, lt=1, description="warm-up, as a share of the steps")
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False, description="AdamW weight decay")
    batch_size: int = Field(16, ge=1, le=4096, description="examples per optimizer step and "
                                                           "device")
    grad_accum: int = Field(1, ge=1, le=4096, description="gradient accumulation steps")
    max_length: int | None = Field(
        None, ge=8, le=131_072, description="token limit of prompt + completion; None: the model's "
        "context length, at most 2048")
    max_steps: int | None = Field(None, ge=1, le=1_000_000,
                                  description="stop after this many steps")
    lora_r: int = Field(32, ge=1, le=8192, description="LoRA rank r (paper: 32)")
    lora_alpha: int = Field(64, ge=1, description="LoRA scaling α (paper: 64)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout (paper: 0.05)")
    lora_target_modules: list[str] | None = Field(
        None, description="None: the model's attention projections")
    merge_lora: bool = Field(False, description="save LoRA merged into a plain model")
    gradient_checkpointing: bool = Field(
        False, description="saves memory on large models; slows small ones (off on CPU)")
    share_prompt_prefix: bool = Field(
        True, description="run the prompt prefix common to a batch (the game's system prompt) "
        "once and reuse its keys and values (the fast engine, sepo.agents.fast): the same loss "
        "and gradients up to rounding, for a fraction of the FLOPs (off with gradient "
        "checkpointing); off: transformers' plain forward passes")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto, cpu or cuda ('auto': cuda when a GPU is available, "
        "else cpu)")
    logging_steps: int = Field(10, ge=1, le=1_000_000,
                               description="log the training loss every k steps")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="training and data-order seed")
    progress: bool = Field(True, description="show the training progress bar")
    report_to: str = Field("none", description="transformers `report_to` integrations "
                                               "('none': no logging service)")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SFTRunConfig:
        """A config from a plain dict, naming any unknown field and listing the choices."""
        for key in values:
            check_field(cls, SFT_FIELD_KIND, key)
        try:
            return cls(**values)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                 for e in err.errors())
            raise SepoError(f"invalid SFT config: {problems}") from None


class SFTResult(BaseModel):
    """What an SFT run did; also the content of `sepo_sft.json` (with the config)."""

    checkpoint: str
    games: list[str]
    base_model: str
    data: str
    reasoning: bool
    finetune: Literal["full", "lora"]
    merged: bool
    parameters: int
    trainable_parameters: int
    learning_rate: float
    train_examples: int
    eval_examples: int
    steps: int
    epochs: float
    train_loss: float
    eval_loss_initial: float
    eval_loss_final: float
    train_seconds: float
    train_tokens: int
    #: The longest training completion in tokens (end-of-turn included): an LM agent needs
    #: at least this many new tokens to write a whole reason sentence and its action.
    completion_tokens_max: int
    tokens_per_second: float
    device: str
    config: dict[str, Any]


def _device(config: SFTRunConfig) -> str:
    import torch

    from sepo.models.util import resolve_device

    if config.device == "cuda" and not torch.cuda.is_available():
        raise SepoError("device 'cuda' was asked for but no CUDA GPU is available; "
                        "choices here: auto, cpu")
    return resolve_device(config.device)


def attention_projections(model: Any) -> list[str]:
    """Names of the attention projection layers that LoRA adapts, found in the model."""
    import torch

    found = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear)}
    targets = [n for n in _ATTENTION_PROJECTIONS if n in found]
    if not targets:
        raise SepoError("found no attention projection layers for LoRA "
                        f"(looked for {', '.join(_ATTENTION_PROJECTIONS)}); set "
                        "lora_target_modules, or fine-tune fully with --full")
    return targets


def _load(model: Any, *, device: str, dtype: str) -> tuple[Any, Any, str]:
    """(model, tokenizer, name) from a name/path or an already loaded (model, tokenizer)."""
    if isinstance(model, tuple):
        lm, tokenizer = model
        return lm, tokenizer, str(getattr(lm.config, "_name_or_path", "") or "in-memory")
    from sepo.models import load_model

    lm, tokenizer = load_model(str(model), device=device, dtype=dtype)
    return lm, tokenizer, str(model)


def _max_length(config: SFTRunConfig, model: Any) -> int:
    if config.max_length is not None:
        return config.max_length
    context = getattr(model.config, "max_position_embeddings", None) or 2048
    return int(min(context, 2048))


def _checkpointing_field(config_class: type) -> str:
    """transformers 5 renamed `gradient_checkpointing` (the old name still works, and warns)."""
    fields = getattr(config_class, "__dataclass_fields__", {})
    return ("activation_checkpointing" if "activation_checkpointing" in fields
            else "gradient_checkpointing")


@contextmanager
def _quiet_dataset_preparation() -> Iterator[None]:
    """No progress bars for the sub-second tokenising passes (the training bar stays)."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _last_eval_loss(trainer: Any) -> float | None:
    """The evaluation loss logged at the last step, if the trainer evaluated there."""
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry:
            return float(entry["eval_loss"]) if entry.get("step") == trainer.state.global_step \
                else None
    return None


def _longest_completion(dataset: Any) -> int:
    """Tokens that carry loss (the completion) in the longest prepared training example."""
    if dataset is None or "labels" not in dataset.column_names:
        return 0
    return max((sum(1 for t in labels if t != -100) for labels in dataset["labels"]), default=0)


def train_sft(game: str | Sequence[str], model: str | Path | tuple[Any, Any],
              data: str | Path, out: str | Path, config: SFTRunConfig | None = None, *,
              callbacks: Sequence[Any] = (), overwrite: bool = False) -> SFTResult:
    """Fine-tune `model` on the SFT data of `game` (a name, names or "all") in `data`, and
    save the checkpoint to `out`.

    `model` is a name or path for `sepo.models.load_model`, or a loaded (model, tokenizer)
    pair (trained in place). The dataset must cover the games asked for (else
    `GameMismatchError`); with several games in the data, only those asked for are used.
    Raises `NonFiniteLossError` (and saves nothing) if the loss stops being finite.
    `callbacks` are extra `transformers.TrainerCallback`s (progress, timing).

    `out` must not be, lie inside or contain `data` or the model's directory, and an existing
    non-empty `out` (an earlier checkpoint included) is replaced only with `overwrite`
    (`sepo.rundir.check_output_dir`). The checkpoint is swapped into place whole; a failed
    run leaves `out` as it was and nothing beside it.
    """
    out = Path(out)
    inputs = [Path(data), *([] if isinstance(model, tuple) else model_input_paths(model))]
    check_output_dir(out, inputs=inputs, overwrite=overwrite, made_by="sft")
    # The lock lives beside `out` (`.<name>.sepo.lock`): `out` itself is replaced whole at the
    # end, and a lock file inside it would go with the old directory.
    with RunLock.for_output(out, "sft"):
        # Again under the lock: another process may have written `out` while we waited.
        check_output_dir(out, inputs=inputs, overwrite=overwrite, made_by="sft")
        return _train_sft(game, model, data, out, config, callbacks=callbacks)


def _train_sft(game: str | Sequence[str], model: str | Path | tuple[Any, Any],
               data: str | Path, out: Path, config: SFTRunConfig | None, *,
               callbacks: Sequence[Any]) -> SFTResult:
    """`train_sft` once `out` is checked and locked."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from sepo.agents.engines import fast_or_none

    config = config or SFTRunConfig()
    games = resolve_games(game)
    rows = load_sft_data(data, games)  # validates before the (slow) model load
    card = rows["card"]
    device = _device(config)
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()

    # LoRA on a GPU keeps the frozen base in bf16; full fine-tuning keeps fp32 master weights
    # (with bf16 autocast on a GPU).
    lora_bf16 = bf16 and config.finetune == "lora"
    lm, tokenizer, base_name = _load(model, device=device,
                                     dtype="bfloat16" if lora_bf16 else "float32")
    n_params = sum(p.numel() for p in lm.parameters())
    finetune = config.finetune
    if finetune == "auto":
        finetune = "full" if n_params <= FULL_FINETUNE_MAX_PARAMS else "lora"
    if finetune == "lora" and bf16 and not lora_bf16:
        lm = lm.to(torch.bfloat16)
    lr = config.learning_rate or (LORA_LR if finetune == "lora" else
                                  SMALL_FULL_LR if n_params < SMALL_MODEL_PARAMS else LARGE_FULL_LR)
    if tokenizer.pad_token is None:  # batching needs one; the end-of-sequence token serves
        tokenizer.pad_token = tokenizer.eos_token

    def to_dataset(split: str) -> Dataset:
        return Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]}
                                  for r in rows[split]])

    train_ds, eval_ds = to_dataset("train"), to_dataset("validation")

    # Leftovers of a killed run beside `out` are ours to clear: we hold `out`'s lock.
    staging = make_staging_dir(out, clear_stale=True)
    try:
        args = SFTConfig(
            output_dir=str(staging / "trainer"),
            num_train_epochs=config.epochs,
            max_steps=config.max_steps or -1,
            learning_rate=lr,
            lr_scheduler_type=config.lr_scheduler,
            warmup_steps=config.warmup,
            weight_decay=config.weight_decay,
            per_device_train_batch_size=config.batch_size,
            per_device_eval_batch_size=config.batch_size,
            gradient_accumulation_steps=config.grad_accum,
            max_length=_max_length(config, lm),
            completion_only_loss=True,
            eval_strategy="epoch",
            save_strategy="no",
            logging_steps=config.logging_steps,
            logging_nan_inf_filter=False,
            include_num_input_tokens_seen="non_padding",
            # TRL's defaults (bf16 on, gradient checkpointing on) made a 1 M-parameter CPU step
            # ten times slower: bf16 only on a GPU that has it, checkpointing only on request.
            bf16=bf16,
            **{_checkpointing_field(SFTConfig): config.gradient_checkpointing},
            use_cpu=device == "cpu",
            dataloader_num_workers=0,
            report_to=config.report_to,
            disable_tqdm=not config.progress,
            seed=config.seed,
            data_seed=config.seed,
        )
        peft_config = None
        if finetune == "lora":
            from peft import LoraConfig

            peft_config = LoraConfig(
                r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                target_modules=config.lora_target_modules or attention_projections(lm),
                task_type="CAUSAL_LM",
            )

        class StopOnNonFinite(TrainerCallback):
            """Stop at the first logged non-finite loss (NaN/inf never recovers)."""

            def on_log(self, args: Any, state: Any, control: Any,
                       logs: dict[str, float] | None = None, **kwargs: Any) -> None:
                loss = (logs or {}).get("loss")
                if loss is not None and not math.isfinite(loss):
                    raise NonFiniteLossError(
                        f"non-finite training loss ({loss}) at step {state.global_step}; "
                        f"nothing was saved (lower the learning rate, now {lr:g})")

        with _quiet_dataset_preparation():
            trainer = SFTTrainer(model=lm, args=args, train_dataset=train_ds,
                                 eval_dataset=eval_ds, processing_class=tokenizer,
                                 peft_config=peft_config,
                                 callbacks=[StopOnNonFinite(), *callbacks])
        if not config.progress:  # quiet means quiet: no log dicts printed to stdout either
            trainer.remove_callback(PrinterCallback)
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        fast = fast_or_none("SFT's shared prompt prefix") if config.share_prompt_prefix else None
        with (fast.shared_prompt_prefix(trainer.model) if fast is not None
              else contextlib.nullcontext()):
            eval_initial = float(trainer.evaluate()["eval_loss"])
            started = time.perf_counter()
            output = trainer.train()
            train_seconds = time.perf_counter() - started
            train_loss = float(output.training_loss)
            if not math.isfinite(train_loss):
                raise NonFiniteLossError(f"non-finite training loss ({train_loss}); nothing "
                                         f"was saved (lower the learning rate, now {lr:g})")
            eval_final = _last_eval_loss(trainer)
            if eval_final is None:
                eval_final = float(trainer.evaluate()["eval_loss"])
        tokens = int(trainer.state.num_input_tokens_seen)
        completion_max = _longest_completion(trainer.train_dataset)

        final = trainer.model
        merged = False
        if finetune == "lora" and config.merge_lora:
            final = final.merge_and_unload()
            merged = True
        checkpoint = staging / "checkpoint"
        with describing_os_errors(out):
            final.save_pretrained(checkpoint)
            tokenizer.save_pretrained(checkpoint)
        result = SFTResult(
            checkpoint=str(out), games=games, base_model=base_name, data=str(data),
            reasoning=bool(card.get("reasoning", True)), finetune=finetune, merged=merged,
            parameters=n_params, trainable_parameters=trainable, learning_rate=lr,
            train_examples=len(train_ds), eval_examples=len(eval_ds),
            steps=int(output.global_step), epochs=float(trainer.state.epoch or 0.0),
            train_loss=train_loss, eval_loss_initial=eval_initial, eval_loss_final=eval_final,
            train_seconds=train_seconds, train_tokens=tokens,
            completion_tokens_max=completion_max,
            tokens_per_second=tokens / train_seconds if train_seconds > 0 else 0.0,
            device=device, config=config.model_dump(),
        )
        with describing_os_errors(out):
            (checkpoint / SFT_INFO_FILE).write_text(result.model_dump_json(indent=2) + "\n",
                                                    encoding="utf-8")
        from sepo.agents.lm import (
            MAX_NEW_TOKENS_ACTION_ONLY,
            MAX_NEW_TOKENS_REASONING,
            write_agent_settings,
        )

        # How the agent should answer: as trained, with room for the longest completion.
        default_tokens = (MAX_NEW_TOKENS_REASONING if result.reasoning
                          else MAX_NEW_TOKENS_ACTION_ONLY)
        with describing_os_errors(out):
            write_agent_settings(checkpoint, reasoning=result.reasoning,
                                 max_new_tokens=max(default_tokens, completion_max + 8))
        write_output_marker(checkpoint, "sft")
        replace_dir_atomically(checkpoint, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def read_sft_info(checkpoint: str | Path) -> dict[str, Any] | None:
    """The `sepo_sft.json` of a checkpoint directory, or None if it is not an SFT checkpoint."""
    path = Path(checkpoint) / SFT_INFO_FILE
    if not path.is_file():
        return None
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as e:
        raise SepoError(f"{path}: not valid JSON ({e})") from None


__all__ = [
    "FULL_FINETUNE_MAX_PARAMS",
    "SFT_INFO_FILE",
    "NonFiniteLossError",
    "SFTResult",
    "SFTRunConfig",
    "attention_projections",
    "read_sft_info",
    "train_sft",
]
