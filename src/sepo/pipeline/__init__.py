"""`sepo run GAME|all`: the whole pipeline, base model → SFT → SEPO and reward-only → report.

For each game and each training seed k, in `RUN_DIR/<game>/seed<k>/`:

1. `sft-data/`    demonstrator episodes as chat examples (`sepo.sft.data`, seed k);
2. `sft/`         the base model fine-tuned on them (`sepo.sft.train`, seed k);
3. `sepo/`        SEPO from the SFT checkpoint (`sepo.train`, seed k);
4. `reward-only/` the plain-GRPO baseline from the same SFT checkpoint, same seed, same
                  rollout seeds: the only difference is the reward (all λ = 0);
   `<name>/`      each further trained condition of `RunConfig.conditions` (an ablation:
                  SEPO with other settings), from the same SFT checkpoint and seed;
5. `eval/<condition>.json`  the evaluation of base, SFT and every trained condition on the SAME
                  evaluation episodes (common random numbers), disjoint from the episodes the
                  trainers used to pick their best checkpoints.

Then `results.json`, `results.csv`, `per_opponent.csv`, `report.md` and the PNGs
(`sepo.report`), and the final table is printed.

The package, one job per module (each imports only those listed before it):

- `config`: `RunConfig`, what defines a run, and the settings each stage derives from it;
- `layout`: the run directory: where each stage's output lives, what is finished, whose
  directory it is;
- `results`: `results.json` and `timings.json`, with the environment the numbers were made in;
- `stages`: the stages and `run_pipeline`, which drives them.

**Resumable by stage.** Each stage's output is written atomically or carries a completion
marker, so a finished stage is skipped and an interrupted one restarts (a SEPO run resumes from
its last checkpoint). Running the same command again finishes an interrupted run; adding seeds
(`--seeds 3` after `--seeds 1`) or conditions adds only those. A different config in the same
directory is refused (it would mix two experiments), as is a directory holding files sepo did
not write; `--overwrite` deletes what is there and starts the new run. The run holds a lock on
its directory (`sepo.rundir.RunLock`), so a second `sepo run` there stops at once, and a run
that fails before any stage saved work leaves no `run_config.json` behind.

**Budget** (`sepo run kuhn` with the defaults: ≤ 15 minutes on 2 CPU cores; the README
states the last measurement). Each game's stage budgets are the `[budget]` table of its
`<game>.toml` (`sepo.games.GameBudget`; `GENERIC_BUDGET` for a game without one). For Kuhn:

- `tiny` ships in the package: nothing is built;
- SFT data: under a second (rule-based play); SFT: `tiny` is fully fine-tuned on
  `sft_episodes` episodes per opponent for `sft_epochs` epochs (1,808 examples, 226 steps);
- SEPO and reward-only: `sepo_steps` steps each, every step's groups in one lock-step batch
  (SEPO's include the two groups against the exact best response to the current policy), then
  one update; the in-training evaluations every `checkpoint_every` steps;
- evaluation: 4 conditions × `eval_episodes` episodes per opponent × (train + exploit +
  held-out + exact best response) opponents, batched; Kuhn's exact exploitability is one
  batched forward pass.

Kuhn runs without reasoning by default (its `[budget]` sets `reasoning = false`): its exact
exploitability is read from the model's action distribution on action-only prompts
(`LMAgent.tabular_policy`), so training and evaluating on those same prompts makes the exact
number the policy that was trained and played, and it keeps each decision a few tokens.
"""

from __future__ import annotations

from sepo.games import GENERIC_BUDGET, GameBudget
from sepo.pipeline.config import RunConfig, Selection
from sepo.pipeline.layout import (
    CONFIG_FILE,
    TIMINGS_FILE,
    seed_dir,
    trained_checkpoint,
    training_state,
)
from sepo.pipeline.stages import FINAL_EVAL_INDEX, run_pipeline

__all__ = [
    "CONFIG_FILE",
    "FINAL_EVAL_INDEX",
    "GENERIC_BUDGET",
    "TIMINGS_FILE",
    "GameBudget",
    "RunConfig",
    "Selection",
    "run_pipeline",
    "seed_dir",
    "trained_checkpoint",
    "training_state",
]
