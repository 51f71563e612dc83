"""Stage 1 of SEPO: demonstrator datasets and supervised fine-tuning (docs/method.md §4).

- `generate_sft_data(game, out, ...)` plays each game's SFT demonstrator mixture and writes chat
  examples (prompt = the LM agent's exact system + user messages; completion = one reason
  sentence and the bare action) with an 80/20 split by episode and a card.
- `train_sft(game, model, data, out, SFTRunConfig(...))` fine-tunes with TRL's `SFTTrainer`
  (loss on the completion only; LoRA or full) and saves a `save_pretrained` checkpoint.
"""

from sepo.sft.data import (
    GameMismatchError,
    SFTDataError,
    generate_sft_data,
    load_sft_data,
    read_card,
    read_split,
    reason_sentence,
)
from sepo.sft.train import (
    SFT_INFO_FILE,
    NonFiniteLossError,
    SFTResult,
    SFTRunConfig,
    read_sft_info,
    train_sft,
)

__all__ = [
    "SFT_INFO_FILE",
    "GameMismatchError",
    "NonFiniteLossError",
    "SFTDataError",
    "SFTResult",
    "SFTRunConfig",
    "generate_sft_data",
    "load_sft_data",
    "read_card",
    "read_sft_info",
    "read_split",
    "reason_sentence",
    "train_sft",
]
