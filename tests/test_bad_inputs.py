"""Bad input on every command: exit code 2 and one line on stderr that names the offending
option or value, no traceback, nothing left behind, and no model loaded or built first.

Each case is a command line in which `{tmp}` stands for the test's directory (holding the
inputs `_world` writes) and `{long}` for a 300-character file name; `expect` must appear in
the error line. A case may simulate an OS failure (`os_error`): every directory created under
`{tmp}` then fails with that errno, as on a full, read-only or forbidden disk (tests run as
root, where chmod stops nothing).
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sepo.cli import app

LONG = "x" * 300
#: Seconds a case may take: all fail before any real work (the heavy imports are done once,
#: by `_heavy_imports`); generous, for a loaded 2-core machine.
CASE_SECONDS = 8.0


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    expect: str
    os_error: int | None = None


def case(command: str, expect: str, *, os_error: int | None = None, id: str) -> Any:
    """A table row; `command` is split on spaces (no argument here contains one)."""
    return pytest.param(Case(tuple(command.split()), expect, os_error), id=id)


TRAIN = "train kuhn --model {tmp}/fake-model --out {tmp}/run"
RUN = "run kuhn --out {tmp}/run"
SFT = "sft ipd --model tiny --data {tmp}/empty --out {tmp}/ckpt"
SFT_DATA = "sft-data ipd --episodes-per-opponent 1 --out {tmp}/data"
SFT_DATA_OUT = "sft-data ipd --out {tmp}/data"
EVAL = "eval ipd --agent TitForTat"
BUILD = "model build tiny --set"

CASES = [
    # ------------------------------------------------------------------ the app, games
    case("bogus", "No such command 'bogus'", id="unknown-command"),
    case("games --bogus", "No such option: --bogus", id="games-unknown-option"),
    case("games extra", "unexpected extra argument", id="games-extra-argument"),
    case("model bogus", "No such command 'bogus'", id="model-unknown-command"),
    # ------------------------------------------------------------------ eval: names
    case("eval", "Missing argument", id="eval-no-game"),
    case("eval chess --agent TitForTat", "unknown game 'chess'", id="eval-unknown-game"),
    case("eval ipd --agent TitForTwoTat", "Did you mean 'TitForTwoTats'?",
         id="eval-unknown-strategy"),
    case("eval ipd", "give exactly one of --agent", id="eval-no-agent"),
    case("eval ipd --agent TitForTat --model tiny", "give exactly one of", id="eval-both"),
    case("eval ipd --model nosuchmodel", "unknown model 'nosuchmodel'", id="eval-unknown-model"),
    case("eval ipd --model ./missing/dir", "'./missing/dir' does not exist",
         id="eval-missing-model-path"),
    case("eval ipd --model {tmp}/notamodel", "holds no model", id="eval-model-dir-no-weights"),
    case("eval ipd --model {tmp}/file", "holds no model", id="eval-model-is-file"),
    case("eval ipd --model {tmp}/bad-agent", "sepo_agent.json: not valid JSON",
         id="eval-model-garbage-agent-json"),
    case("eval ipd --model {tmp}/list-agent", "expected a JSON object",
         id="eval-model-agent-json-list"),
    case("eval ipd --model {tmp}/greedy-agent", "max_new_tokens must be an integer from 1",
         id="eval-model-agent-json-too-many-tokens"),
    case("eval ipd --model {tmp}/{long}", "too long", id="eval-model-name-too-long"),
    # ------------------------------------------------------------------ eval: numbers
    case(f"{EVAL} --episodes 0", "'--episodes'", id="eval-episodes-0"),
    case(f"{EVAL} --episodes -1", "'--episodes'", id="eval-episodes-negative"),
    case(f"{EVAL} --episodes 100000000000000000000000", "'--episodes'", id="eval-episodes-1e23"),
    case(f"{EVAL} --episodes 1.5", "'--episodes'", id="eval-episodes-fraction"),
    case(f"{EVAL} --episodes many", "'--episodes'", id="eval-episodes-text"),
    case(f"{EVAL} --seeds 0", "'--seeds'", id="eval-seeds-0"),
    case(f"{EVAL} --seeds 100000", "'--seeds'", id="eval-seeds-huge"),
    case(f"{EVAL} --episodes 5000 --seeds 3", "--episodes × --seeds",
         id="eval-episodes-times-seeds"),
    case(f"{EVAL} --n-boot 0", "'--n-boot'", id="eval-n-boot-0"),
    case(f"{EVAL} --n-boot 1000000000", "'--n-boot'", id="eval-n-boot-huge"),
    case(f"{EVAL} --n-boot 100000 --episodes 10000", "--n-boot × --episodes",
         id="eval-bootstrap-matrix"),
    case(f"{EVAL} --seed -1", "'--seed'", id="eval-seed-negative"),
    case(f"{EVAL} --seed 1000000000000000000000000000000", "'--seed'", id="eval-seed-huge"),
    case(f"{EVAL} --temperature nan", "'--temperature': must be a finite number",
         id="eval-temperature-nan"),
    case(f"{EVAL} --temperature inf", "'--temperature'", id="eval-temperature-inf"),
    case(f"{EVAL} --temperature -1", "got -1.0", id="eval-temperature-negative"),
    case(f"{EVAL} --temperature hot", "'--temperature'", id="eval-temperature-text"),
    case(f"{EVAL} --top-p 0", "'--top-p': must be in (0, 1]", id="eval-top-p-0"),
    case(f"{EVAL} --top-p 1.5", "'--top-p'", id="eval-top-p-above-1"),
    case(f"{EVAL} --top-p nan", "'--top-p'", id="eval-top-p-nan"),
    case(f"{EVAL} --top-p -0.1", "'--top-p'", id="eval-top-p-negative"),
    case(f"{EVAL} --max-new-tokens 0", "'--max-new-tokens'", id="eval-max-new-tokens-0"),
    case(f"{EVAL} --max-new-tokens -3", "'--max-new-tokens'", id="eval-max-new-tokens-neg"),
    case(f"{EVAL} --max-new-tokens 100000", "'--max-new-tokens'", id="eval-max-new-tokens-huge"),
    case(f"{EVAL} --device quantum", "unknown device 'quantum'", id="eval-device-unknown"),
    case(f"{EVAL} --device cuda:x", "unknown device 'cuda:x'", id="eval-device-bad-index"),
    case(f"{EVAL} --device CPU", "unknown device 'CPU'", id="eval-device-capitals"),
    case(f"{EVAL} --dtype int3", "unknown dtype 'int3'", id="eval-dtype-unknown"),
    case(f"{EVAL} --dtype float64", "Choices: auto, bfloat16, float16, float32",
         id="eval-dtype-float64"),
    case("eval ipd --model {tmp}/fake-model --temperature -1", "'--temperature'",
         id="eval-model-temperature"),
    case("eval ipd --model {tmp}/fake-model --device quantum", "'--device'",
         id="eval-model-device"),
    case("eval ipd --model {tmp}/fake-model --dtype int3", "'--dtype'", id="eval-model-dtype"),
    # ------------------------------------------------------------------ play
    case("play", "Missing argument", id="play-no-game"),
    case("play chess", "unknown game 'chess'", id="play-unknown-game"),
    case("play ipd --opponent Nobody", "unknown ipd strategy 'Nobody'",
         id="play-unknown-strategy"),
    case("play ipd --opponent TitForTat --opponent-model tiny", "give at most one",
         id="play-both-opponents"),
    case("play ipd --seed -1", "'--seed'", id="play-seed-negative"),
    case("play ipd --seed 1000000000000000000000000000000", "'--seed'", id="play-seed-huge"),
    case("play ipd --seed abc", "'--seed'", id="play-seed-text"),
    case("play ipd --opponent-model nosuchmodel", "unknown model 'nosuchmodel'",
         id="play-unknown-model"),
    case("play ipd --opponent-model {tmp}/notamodel", "holds no model",
         id="play-model-no-weights"),
    case("play ipd --model ./missing/dir", "does not exist", id="play-missing-model-path"),
    # ------------------------------------------------------------------ train
    case("train kuhn --model tiny", "Missing option '--out'", id="train-no-out"),
    case(f"{TRAIN} --steps 0", "steps: Input should be greater than or equal to 1 (got 0)",
         id="train-steps-0"),
    case(f"{TRAIN} --steps -5", "steps:", id="train-steps-negative"),
    case(f"{TRAIN} --steps 100000000000000000000000", "steps:", id="train-steps-1e23"),
    case(f"{TRAIN} --steps abc", "'--steps'", id="train-steps-text"),
    case(f"{TRAIN} -n 1", "group_size:", id="train-group-size-1"),
    case(f"{TRAIN} -n 100000", "group_size:", id="train-group-size-huge"),
    case(f"{TRAIN} --lr nan", "lr: Input should be a finite number (got nan)", id="train-lr-nan"),
    case(f"{TRAIN} --lr inf", "lr:", id="train-lr-inf"),
    case(f"{TRAIN} --lr 0", "lr:", id="train-lr-0"),
    case(f"{TRAIN} --lr -1e-5", "lr:", id="train-lr-negative"),
    case(f"{TRAIN} --lr 5", "lr: Input should be less than or equal to 1", id="train-lr-5"),
    case(f"{TRAIN} --beta -1", "beta:", id="train-beta-negative"),
    case(f"{TRAIN} --beta nan", "beta:", id="train-beta-nan"),
    case(f"{TRAIN} --lambda-exploit -1", "lambdas.exploit:", id="train-lambda-negative"),
    case(f"{TRAIN} --lambda-collusion nan", "lambdas.collusion:", id="train-lambda-nan"),
    case(f"{TRAIN} --lambda-externality inf", "lambdas.externality:", id="train-lambda-inf"),
    case(f"{TRAIN} --lr nan --beta -1", "lr: Input should be a finite number (got nan); beta:",
         id="train-two-fields"),
    case(f"{TRAIN} --temperature 0", "temperature:", id="train-temperature-0"),
    case(f"{TRAIN} --temperature -1", "temperature:", id="train-temperature-negative"),
    case(f"{TRAIN} --temperature nan", "temperature:", id="train-temperature-nan"),
    case(f"{TRAIN} --max-new-tokens 0", "max_new_tokens:", id="train-max-new-tokens-0"),
    case(f"{TRAIN} --max-new-tokens 5000", "max_new_tokens:", id="train-max-new-tokens-huge"),
    case(f"{TRAIN} --updates-per-step 0", "updates_per_step:", id="train-updates-0"),
    case(f"{TRAIN} --micro-batch-size 0", "micro_batch_size:", id="train-micro-batch-0"),
    case(f"{TRAIN} --checkpoint-every 0", "checkpoint_every:", id="train-checkpoint-every-0"),
    case(f"{TRAIN} --eval-episodes 0", "eval_episodes:", id="train-eval-episodes-0"),
    case(f"{TRAIN} --eval-episodes 100000", "eval_episodes:", id="train-eval-episodes-huge"),
    case(f"{TRAIN} --seed -1", "seed:", id="train-seed-negative"),
    case(f"{TRAIN} --seed 100000000000000000000", "seed:", id="train-seed-huge"),
    case(f"{TRAIN} --exploit-best-response --best-response-groups 0", "best_response_groups:",
         id="train-best-response-groups-0"),
    case(f"{TRAIN} --credit bogus", "unknown credit 'bogus'", id="train-credit-unknown"),
    case(f"{TRAIN} --normalize bogus", "unknown normalize 'bogus'", id="train-normalize-unknown"),
    case(f"{TRAIN} --mixed-precision fp8", "unknown mixed precision 'fp8'",
         id="train-mixed-precision-unknown"),
    case(f"{TRAIN} --device quantum", "unknown device 'quantum'", id="train-device-unknown"),
    case(f"{TRAIN} --device mps", "Choices: cpu, cuda", id="train-device-mps"),
    case(f"{TRAIN} --config {{tmp}}/bad.toml", "--config {tmp}/bad.toml is not valid TOML",
         id="train-config-not-toml"),
    case(f"{TRAIN} --config {{tmp}}/missing.toml", "--config {tmp}/missing.toml: No such file",
         id="train-config-missing"),
    case(f"{TRAIN} --config {{tmp}}/steps0.toml", "steps: Input should be greater than or "
         "equal to 1 (got 0)", id="train-config-bad-value"),
    case(f"{TRAIN} --set stepz=3", "unknown SEPO config field 'stepz'. Did you mean 'steps'?",
         id="train-set-unknown-field"),
    case(f"{TRAIN} --set lambdas.exploit=-1", "lambdas.exploit:", id="train-set-lambda"),
    case("train chess --model {tmp}/fake-model --out {tmp}/run", "unknown game 'chess'",
         id="train-unknown-game"),
    case("train ipd --model {tmp}/fake-model --out {tmp}/run --exploit-best-response",
         "kuhn only", id="train-best-response-not-kuhn"),
    case(f"{TRAIN} --credit aux --exploit-best-response", "credit=aux",
         id="train-best-response-with-aux"),
    case("train kuhn --model nosuchmodel --out {tmp}/run", "unknown model 'nosuchmodel'",
         id="train-unknown-model"),
    case("train kuhn --model ./missing/dir --out {tmp}/run", "does not exist",
         id="train-missing-model-path"),
    case("train kuhn --model {tmp}/notamodel --out {tmp}/run", "holds no model",
         id="train-model-no-weights"),
    case("train kuhn --model {tmp}/greedy-agent --out {tmp}/run",
         "{tmp}/greedy-agent/sepo_agent.json: max_new_tokens: Input should be less than or "
         "equal to 4096 (got 100000)", id="train-model-agent-json-too-many-tokens"),
    case("train kuhn --model {tmp}/nan-agent --out {tmp}/run",
         "sepo_agent.json: max_new_tokens: Input should be a finite number",
         id="train-model-agent-json-nan"),
    case("train kuhn --model {tmp}/text-agent --out {tmp}/run",
         "sepo_agent.json: max_new_tokens: Input should be a valid integer",
         id="train-model-agent-json-text"),
    case(f"{TRAIN} --resume", "--resume: no checkpoint", id="train-resume-nothing"),
    case("train kuhn --model {tmp}/fake-model --out {tmp}/old-run", "already holds a SEPO run",
         id="train-out-holds-a-run"),
    case("train kuhn --model {tmp}/fake-model --out {tmp}/old-run --resume",
         "--resume: no checkpoint", id="train-resume-no-checkpoint"),
    case("train kuhn --model {tmp}/fake-model --out {tmp}/file", "{tmp}/file",
         id="train-out-is-file"),
    case("train kuhn --model {tmp}/fake-model --out {tmp}/file/sub", "not a directory",
         id="train-out-under-file"),
    case("train kuhn --model {tmp}/fake-model --out {tmp}/{long}", "too long",
         id="train-out-name-too-long"),
    # ------------------------------------------------------------------ run
    case("run", "Missing argument", id="run-no-game"),
    case("run chess --out {tmp}/run", "unknown game 'chess'", id="run-unknown-game"),
    case(f"{RUN} --seeds 0", "seeds: Input should be greater than or equal to 1 (got 0)",
         id="run-seeds-0"),
    case(f"{RUN} --seeds 100000", "seeds:", id="run-seeds-huge"),
    case(f"{RUN} --first-seed -1", "first_seed:", id="run-first-seed-negative"),
    case(f"{RUN} --first-seed 4294967295 --seeds 2", "--first-seed + --seeds",
         id="run-last-seed-too-large"),
    case(f"{RUN} --steps 0", "steps:", id="run-steps-0"),
    case(f"{RUN} --steps 100000000000000000000000", "steps:", id="run-steps-1e23"),
    case(f"{RUN} --sft-episodes 0", "sft_episodes:", id="run-sft-episodes-0"),
    case(f"{RUN} --sft-episodes 1000000000", "sft_episodes:", id="run-sft-episodes-huge"),
    case(f"{RUN} --sft-epochs 0", "sft_epochs:", id="run-sft-epochs-0"),
    case(f"{RUN} --sft-epochs nan", "sft_epochs:", id="run-sft-epochs-nan"),
    case(f"{RUN} --sft-epochs inf", "sft_epochs:", id="run-sft-epochs-inf"),
    case(f"{RUN} --eval-episodes 0", "eval_episodes:", id="run-eval-episodes-0"),
    case(f"{RUN} --eval-episodes 100000", "eval_episodes:", id="run-eval-episodes-huge"),
    case(f"{RUN} -n 1", "group_size:", id="run-group-size-1"),
    case(f"{RUN} --checkpoint-every 0", "checkpoint_every:", id="run-checkpoint-every-0"),
    case(f"{RUN} --train-eval-episodes 0", "train_eval_episodes:", id="run-train-eval-0"),
    case(f"{RUN} --max-new-tokens 0", "max_new_tokens:", id="run-max-new-tokens-0"),
    case(f"{RUN} --max-new-tokens 5000", "max_new_tokens:", id="run-max-new-tokens-huge"),
    case(f"{RUN} --select worst", "unknown checkpoint selection 'worst'", id="run-select"),
    case(f"{RUN} --device quantum", "unknown device 'quantum'", id="run-device-unknown"),
    case(f"{RUN} --device cuda:1", "unknown device 'cuda:1'",
         id="run-device-the-trainer-refuses"),
    case(f"{RUN} --sepo lr=nan", "lr: Input should be a finite number", id="run-sepo-lr-nan"),
    case(f"{RUN} --sepo lr=-1", "lr: Input should be greater than 0 (got -1)",
         id="run-sepo-lr-negative"),
    case(f"{RUN} --sepo beta=-1", "beta:", id="run-sepo-beta-negative"),
    case(f"{RUN} --sepo credit=bogus", "unknown credit 'bogus'", id="run-sepo-credit-unknown"),
    case(f"{RUN} --sepo bogus=1", "unknown SEPO config field 'bogus'", id="run-sepo-unknown"),
    case(f"{RUN} --sepo steps=3", "set by the pipeline", id="run-sepo-owned-field"),
    case(f"{RUN} --sepo lr", "--sepo expects KEY=VALUE", id="run-sepo-no-value"),
    case(f"{RUN} --set sepo.bogus=1", "unknown SEPO config field 'bogus'", id="run-set-sepo"),
    case(f"{RUN} --set sft.bogus=1", "unknown SFT config field 'bogus'", id="run-set-sft"),
    case(f"{RUN} --set seeds=0", "seeds: Input should be greater than or equal to 1",
         id="run-set-seeds-0"),
    case(f"{RUN} --config {{tmp}}/bad.toml", "is not valid TOML", id="run-config-not-toml"),
    case("run ipd --out {tmp}/run --sepo exploit_best_response=true", "kuhn only",
         id="run-sepo-best-response-not-kuhn"),
    case("run kuhn --model nosuchmodel --out {tmp}/run", "unknown model 'nosuchmodel'",
         id="run-unknown-model"),
    case("run kuhn --out {tmp}/file", "is a file, not a directory", id="run-out-is-file"),
    case("run kuhn --out {tmp}/file/sub", "is a file, not a directory", id="run-out-under-file"),
    case("run kuhn --out {tmp}/{long}", "too long", id="run-out-name-too-long"),
    # ------------------------------------------------------------------ sft
    case("sft ipd --model tiny --data {tmp}/empty", "Missing option '--out'", id="sft-no-out"),
    case(f"{SFT} --epochs 0", "epochs: Input should be greater than 0", id="sft-epochs-0"),
    case(f"{SFT} --epochs nan", "'--epochs'", id="sft-epochs-nan"),
    case(f"{SFT} --epochs 100000", "epochs:", id="sft-epochs-huge"),
    case(f"{SFT} --lr nan", "learning_rate:", id="sft-lr-nan"),
    case(f"{SFT} --lr inf", "learning_rate:", id="sft-lr-inf"),
    case(f"{SFT} --lr 0", "learning_rate:", id="sft-lr-0"),
    case(f"{SFT} --batch-size 0", "'--batch-size'", id="sft-batch-size-0"),
    case(f"{SFT} --batch-size 100000", "batch_size:", id="sft-batch-size-huge"),
    case(f"{SFT} --grad-accum 0", "'--grad-accum'", id="sft-grad-accum-0"),
    case(f"{SFT} --max-steps 0", "'--max-steps'", id="sft-max-steps-0"),
    case(f"{SFT} --max-steps 100000000000000000000000", "max_steps:", id="sft-max-steps-1e23"),
    case(f"{SFT} --max-length 4", "'--max-length'", id="sft-max-length-4"),
    case(f"{SFT} --max-length 100000000", "max_length:", id="sft-max-length-huge"),
    case(f"{SFT} --grad-accum 100000", "grad_accum:", id="sft-grad-accum-huge"),
    case(f"{SFT} --epochs inf", "epochs:", id="sft-epochs-inf"),
    case(f"{SFT} --lr 5", "learning_rate:", id="sft-lr-5"),
    case(f"{SFT} --seed -1", "seed:", id="sft-seed-negative"),
    case(f"{SFT} --seed 100000000000", "seed:", id="sft-seed-above-32-bits"),
    case(f"{SFT} --device quantum", "device:", id="sft-device-unknown"),
    case(f"{SFT} --set bogus=1", "unknown SFT config field 'bogus'", id="sft-set-unknown"),
    case(f"{SFT} --config {{tmp}}/bad.toml", "is not valid TOML", id="sft-config-not-toml"),
    case("sft chess --model tiny --data {tmp}/empty --out {tmp}/ckpt", "unknown game 'chess'",
         id="sft-unknown-game"),
    case("sft ipd --model tiny --data {tmp}/missing --out {tmp}/ckpt", "does not exist",
         id="sft-data-missing"),
    case(SFT, "card.json is missing", id="sft-data-empty-dir"),
    case("sft ipd --model tiny --data {tmp}/file --out {tmp}/ckpt", "not a directory",
         id="sft-data-is-file"),
    case("sft ipd --model tiny --data {tmp}/bad-card --out {tmp}/ckpt", "not valid JSON",
         id="sft-data-garbage-card"),
    case("sft ipd --model tiny --data {tmp}/data-bad-jsonl --out {tmp}/ckpt",
         "train.jsonl:1: not valid JSON", id="sft-data-garbage-jsonl"),
    case("sft ipd --model tiny --data {tmp}/data-bad-card --out {tmp}/ckpt",
         "not a sepo-sft-data card", id="sft-data-foreign-card"),
    case("sft kuhn --model tiny --data {tmp}/data-ipd --out {tmp}/ckpt",
         "was made for ipd, not kuhn", id="sft-data-other-game"),
    case("sft ipd --model nosuchmodel --data {tmp}/data-ipd --out {tmp}/ckpt",
         "unknown model 'nosuchmodel'", id="sft-unknown-model"),
    case("sft ipd --model ./missing/dir --data {tmp}/data-ipd --out {tmp}/ckpt",
         "does not exist", id="sft-missing-model-path"),
    case("sft ipd --model {tmp}/notamodel --data {tmp}/data-ipd --out {tmp}/ckpt",
         "holds no model", id="sft-model-no-weights"),
    case("sft ipd --model tiny --data {tmp}/data-ipd --out {tmp}/data-ipd", "input",
         id="sft-out-is-the-data"),
    case("sft ipd --model tiny --data {tmp}/empty --out {tmp}/file", "is a file",
         id="sft-out-is-file"),
    case("sft ipd --model tiny --data {tmp}/empty --out {tmp}/{long}", "too long",
         id="sft-out-name-too-long"),
    # ------------------------------------------------------------------ sft-data
    case("sft-data ipd", "Missing option '--out'", id="sft-data-no-out"),
    case("sft-data chess --out {tmp}/data", "unknown game 'chess'", id="sft-data-unknown-game"),
    case("sft-data ipd --out {tmp}/data --episodes-per-opponent 0", "'--episodes-per-opponent'",
         id="sft-data-episodes-0"),
    case("sft-data ipd --out {tmp}/data --episodes-per-opponent some",
         "'--episodes-per-opponent'", id="sft-data-episodes-text"),
    case("sft-data ipd --out {tmp}/data --demonstrator Nobody", "unknown ipd strategy 'Nobody'",
         id="sft-data-unknown-demonstrator"),
    case(f"{SFT_DATA_OUT} --episodes-per-opponent 100000000000000000000000",
         "'--episodes-per-opponent'", id="sft-data-episodes-1e23"),
    case(f"{SFT_DATA_OUT} --episodes-per-opponent 10001", "less than or equal to 10000",
         id="sft-data-episodes-above-max"),
    case(f"{SFT_DATA} --seed -1", "'--seed'", id="sft-data-seed-negative"),
    case(f"{SFT_DATA} --seed 100000000000", "'--seed'", id="sft-data-seed-above-32-bits"),
    case("sft-data ipd --out {tmp}/file", "is a file, not a directory", id="sft-data-out-file"),
    case("sft-data ipd --out {tmp}/data-ipd", "holds an earlier", id="sft-data-out-earlier"),
    case("sft-data ipd --out {tmp}/notamodel", "not empty", id="sft-data-out-foreign-files"),
    case("sft-data ipd --out {tmp}/file/sub", "is a file, not a directory",
         id="sft-data-out-under-file"),
    case("sft-data ipd --out {tmp}/{long}", "too long", id="sft-data-out-name-too-long"),
    case("sft-data ipd --out {tmp}/{long}/sub", "too long", id="sft-data-out-long-parent"),
    case(SFT_DATA, "no space left", os_error=errno.ENOSPC, id="sft-data-disk-full"),
    case(SFT_DATA, "read-only", os_error=errno.EROFS, id="sft-data-read-only"),
    case(SFT_DATA, "permission denied", os_error=errno.EACCES, id="sft-data-forbidden"),
    case(SFT_DATA, "quota", os_error=errno.EDQUOT, id="sft-data-quota"),
    case(f"{RUN} --steps 1", "no space left", os_error=errno.ENOSPC, id="run-disk-full"),
    case(f"{RUN} --steps 1", "read-only", os_error=errno.EROFS, id="run-read-only"),
    # ------------------------------------------------------------------ report
    case("report", "Missing argument", id="report-no-run-dir"),
    case("report {tmp}/missing", "no results.json in", id="report-missing-dir"),
    case("report {tmp}/empty", "no results.json in", id="report-empty-dir"),
    case("report {tmp}/bad-json", "results.json is not valid JSON", id="report-garbage-json"),
    case("report {tmp}/wrong-schema", "has schema 'other'", id="report-wrong-schema"),
    case("report {tmp}/file", "is not valid JSON", id="report-run-dir-is-file"),
    case("report {tmp}/binary", "not UTF-8", id="report-binary-results"),
    case("report {tmp}/binary/results.json", "{tmp}/binary/results.json is not valid JSON: "
         "not UTF-8", id="report-binary-results-file"),
    case("report {tmp}/deep-json", "deep-json/results.json is not valid JSON",
         id="report-json-nested-too-deep"),
    case("report {tmp}/results-list", "{tmp}/results-list/results.json is not a valid "
         "results.json: expected a JSON object, got list", id="report-results-list"),
    case("report {tmp}/no-evaluations", "no-evaluations/results.json is not a valid "
         "results.json: evaluations: Field required", id="report-no-evaluations"),
    case("report {tmp}/evaluations-5", "evaluations: Input should be a valid list (got 5)",
         id="report-evaluations-number"),
    case("report {tmp}/evaluation-3", "evaluations.0: expected a JSON object (got 3)",
         id="report-evaluation-not-object"),
    case("report {tmp}/seed-text", "evaluations.0.seed: Input should be a valid integer",
         id="report-evaluation-seed-text"),
    case("report {tmp}/no-game", "evaluations.0.game: Field required",
         id="report-evaluation-no-game"),
    case("report {tmp}/report-list", "evaluations.0.report: expected a JSON object (got [])",
         id="report-evaluation-report-list"),
    case("report {tmp}/short-interval", "evaluations.0.report.ci95.nra: List should have at "
         "least 2 items", id="report-interval-one-number"),
    case("report {tmp}/opponents-list", "evaluations.0.report.per_opponent: Input should be a "
         "valid dictionary", id="report-per-opponent-list"),
    case("report {tmp}/policy-text", "evaluations.0.kuhn_policy.J: Input should be a valid "
         "number", id="report-kuhn-policy-text"),
    case("report {tmp}/training-no-csv", "training.0.metrics_csv: Field required",
         id="report-training-no-metrics-csv"),
    case("report {tmp}/config-list", "config: expected a JSON object", id="report-config-list"),
    case("report {tmp}/seed-text {tmp}/results-list --out {tmp}/combined",
         "evaluations.0.seed", id="report-several-one-misshapen"),
    case("report {tmp}/bad-json {tmp}/empty", "say where the combined report goes",
         id="report-several-without-out"),
    case("report {tmp}/{long}", "too long", id="report-name-too-long"),
    # ------------------------------------------------------------------ model build / info
    case("model build gpt5", "unknown buildable model 'gpt5'", id="build-unknown-model"),
    case(f"{BUILD} num_heads=3", "hidden_size 256 must be divisible by num_heads 3",
         id="build-heads-do-not-divide-width"),
    case(f"{BUILD} hidden_size=100", "divisible by num_heads 8", id="build-width-not-divisible"),
    case(f"{BUILD} hidden_size=24", "must be even", id="build-odd-head-dim"),
    case(f"{BUILD} num_kv_heads=3", "multiple of num_kv_heads 3", id="build-kv-heads"),
    case(f"{BUILD} hidden_size=100000", "parameters", id="build-too-many-parameters"),
    case(f"{BUILD} pretrain_steps=100000000", "pretrain_steps × batch_size",
         id="build-too-many-examples"),
    case(f"{BUILD} lr=nan", "lr: Input should be a finite number", id="build-lr-nan"),
    case(f"{BUILD} lr=-1", "bad tiny setting: lr: Input should be greater than 0 (got -1)",
         id="build-lr-negative"),
    case(BUILD + ' game_weights={"ipd":NaN}', "game_weights.ipd: Input should be a finite number",
         id="build-weight-nan"),
    case(f"{BUILD} hidden_size=2 --set num_layers=0", "hidden_size: Input should be greater "
         "than or equal to 8 (got 2); num_layers:", id="build-two-bad-settings"),
    case(BUILD + ' game_weights={"chess":1}', "unknown game 'chess'",
         id="build-weights-unknown-game"),
    case(BUILD + ' game_weights={"ipd":-1}', "must be ≥ 0", id="build-weight-negative"),
    case(BUILD + ' game_weights={"ipd":0,"kuhn":0,"auction":0,"negotiation":0,"bargaining":0}',
         "nothing to pre-train", id="build-weights-all-zero"),
    case(f"{BUILD} bogus=1", "unknown TinyConfig field 'bogus'", id="build-unknown-field"),
    case(f"{BUILD} hidden_size", "--set expects KEY=VALUE", id="build-set-no-value"),
    case(f"{BUILD} loss_on=some", "loss_on:", id="build-loss-on-unknown"),
    case(f"{BUILD} vocab_size=10", "vocab_size:", id="build-vocab-too-small"),
    case(f"{BUILD} reasoning_share=2", "reasoning_share:", id="build-share-above-1"),
    case(f"{BUILD} threads=0", "threads:", id="build-threads-0"),
    case("model build tiny --pretrain-steps -1", "'--pretrain-steps'",
         id="build-pretrain-steps-negative"),
    case("model build smollm2-135m --set hidden_size=48", "tiny only",
         id="build-set-on-smollm2"),
    case("model info", "Missing argument", id="info-no-model"),
    case("model info nosuchmodel", "unknown model 'nosuchmodel'", id="info-unknown-model"),
    case("model info ./missing/dir", "does not exist", id="info-missing-path"),
    case("model info {tmp}/notamodel", "holds no model", id="info-no-weights"),
    case("model info {tmp}/fake-model --device quantum", "unknown device 'quantum'",
         id="info-device-unknown"),
    case("model info {tmp}/fake-model --dtype int3", "unknown dtype 'int3'",
         id="info-dtype-unknown"),
    case("model info {tmp}/{long}", "too long", id="info-name-too-long"),
    # `tiny` is built on first use (minutes): a bad device or dtype is refused before.
    case("model info tiny --device quantum", "Invalid value for '--device': unknown device "
         "'quantum'", id="info-tiny-device-unknown"),
    case("model info tiny --dtype int3", "Invalid value for '--dtype': unknown dtype 'int3'",
         id="info-tiny-dtype-unknown"),
    case("model info smollm2-135m --device cuda:x", "unknown device 'cuda:x'",
         id="info-smollm2-device-bad-index"),
]


def _world(root: Path, dataset: Path) -> None:
    """The inputs the cases point at: files that are not what a command expects, and a copy
    of a valid SFT dataset (`dataset`) and two damaged ones."""
    for name in ("data-ipd", "data-bad-jsonl", "data-bad-card"):
        shutil.copytree(dataset, root / name)
    (root / "data-bad-jsonl" / "train.jsonl").write_text("{broken\n")
    (root / "data-bad-card" / "card.json").write_text('{"format": 5}')
    # A SEPO run directory that never reached a checkpoint, with a damaged config.
    (root / "old-run").mkdir()
    (root / "old-run" / "config.json").write_text("{garbage")
    (root / "old-run" / "metrics.csv").write_text("step\n")
    (root / "file").write_text("not a directory\n")
    (root / "bad.toml").write_text("steps = [\n")
    (root / "steps0.toml").write_text("steps = 0\n")
    (root / "empty").mkdir()
    for name, text in {"bad-json": "{not json", "wrong-schema": '{"schema": "other"}'}.items():
        (root / name).mkdir()
        (root / name / "results.json").write_text(text)
    # results.json files that are JSON, but not of the shape `sepo run` writes.
    schema = {"schema": "sepo.results/1"}
    evaluation = {"game": "ipd", "seed": 0, "condition": "sft", "report": {}}

    def results(*evaluations: Any, **fields: Any) -> str:
        return json.dumps({**schema, "evaluations": list(evaluations), **fields})

    misshapen = {
        "results-list": "[1, 2]",
        "no-evaluations": json.dumps(schema),
        "evaluations-5": json.dumps({**schema, "evaluations": 5}),
        "evaluation-3": results(3),
        "seed-text": results({**evaluation, "seed": "0"}),
        "no-game": results({k: v for k, v in evaluation.items() if k != "game"}),
        "report-list": results({**evaluation, "report": []}),
        "short-interval": results({**evaluation,
                                   "report": {"nra": 0.5, "ci95": {"nra": [0.4]}}}),
        "opponents-list": results({**evaluation, "report": {"per_opponent": []}}),
        "policy-text": results({**evaluation, "kuhn_policy": {"J": "often"}}),
        "training-no-csv": results(training=[{"game": "ipd", "seed": 0, "condition": "sepo"}]),
        "config-list": results(config=[]),
        "deep-json": "[" * 100_000,
    }
    for name, text in misshapen.items():
        (root / name).mkdir()
        (root / name / "results.json").write_text(text)
    (root / "binary").mkdir()
    (root / "binary" / "results.json").write_bytes(b"\xff\xfe\x00\x81")
    (root / "bad-card").mkdir()
    (root / "bad-card" / "card.json").write_text("{")
    (root / "notamodel").mkdir()
    (root / "notamodel" / "config.json").write_text("{}")
    # Directories that look like saved models (a config and a weights file), which a command
    # must refuse before reading the weights: the fake ones would not load.
    agents = {"fake-model": None, "bad-agent": "{bad", "list-agent": "[1, 2]",
              "greedy-agent": '{"max_new_tokens": 100000}',
              "nan-agent": '{"max_new_tokens": NaN}',
              "text-agent": '{"max_new_tokens": "many", "reasoning": false}'}
    for name, agent_json in agents.items():
        (root / name).mkdir()
        (root / name / "config.json").write_text("{}")
        (root / name / "model.safetensors").write_bytes(b"")
        if agent_json is not None:
            (root / name / "sepo_agent.json").write_text(agent_json)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


class WorkStarted(AssertionError):
    """A bad input got as far as loading or building a model."""


@pytest.fixture(scope="module")
def _heavy_imports() -> None:
    """Import once what the commands import on their way (torch, transformers, TRL), so that
    a case's time is its own."""
    for module in ("transformers", "trl", "sepo.models.smollm2", "sepo.models.tiny",
                   "sepo.sft.train", "sepo.train.sepo"):
        importlib.import_module(module)


@pytest.fixture
def no_model_work(monkeypatch: pytest.MonkeyPatch, _heavy_imports: None) -> None:
    """Loading or building any model fails the case at once."""
    import transformers

    import sepo.models.smollm2
    import sepo.models.tiny

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise WorkStarted("a model was loaded or built before the bad input was refused")

    for owner in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        monkeypatch.setattr(owner, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(sepo.models.tiny, "build_tiny", refuse)
    monkeypatch.setattr(sepo.models.smollm2, "smollm2_path", refuse)


def _failing_mkdir(root: Path, code: int) -> Callable[..., None]:
    real = os.mkdir

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(os.fsdecode(path)).absolute().is_relative_to(root):
            raise OSError(code, os.strerror(code), os.fsdecode(path))
        real(path, *args, **kwargs)

    return mkdir


@pytest.fixture(scope="module")
def _dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small valid IPD SFT dataset, made once (rule-based play: well under a second)."""
    out = tmp_path_factory.mktemp("sft-data") / "ipd"
    made = CliRunner().invoke(app, ["sft-data", "ipd", "--episodes-per-opponent", "1",
                                    "--out", str(out), "--json"])
    assert made.exit_code == 0, made.output
    return out


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _dataset: Path) -> Iterator[Path]:
    root = tmp_path / "w"
    root.mkdir()
    _world(root, _dataset)
    # Defaults that write (`sepo run`'s runs/..., the model cache) land in the tree checked.
    monkeypatch.chdir(root)
    monkeypatch.setenv("SEPO_CACHE", str(root / "cache"))
    yield root


@pytest.mark.usefixtures("no_model_work")
@pytest.mark.parametrize("bad", CASES)
def test_bad_input_is_one_line_and_exit_2(bad: Case, world: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def fill(text: str) -> str:
        return text.replace("{tmp}", str(world)).replace("{long}", LONG)

    args = [fill(a) for a in bad.args]
    expect = fill(bad.expect)
    before = _tree(world)
    if bad.os_error is not None:
        monkeypatch.setattr(os, "mkdir", _failing_mkdir(world, bad.os_error))
    started = time.perf_counter()
    result = CliRunner().invoke(app, args)
    seconds = time.perf_counter() - started
    monkeypatch.undo()  # before looking at the tree: os.mkdir and the cwd are real again

    assert not isinstance(result.exception, WorkStarted), result.exception
    assert result.exit_code == 2, (result.exit_code, result.exception, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expect in lines[0], lines[0]
    assert _tree(world) == before, "the failed command left files behind"
    assert seconds < CASE_SECONDS, f"{seconds:.1f} s: work started before the refusal?"


def test_the_table_covers_every_command() -> None:
    commands = {p.values[0].args[0] for p in CASES}
    models = {p.values[0].args[1] for p in CASES if p.values[0].args[0] == "model"}
    assert {"games", "eval", "play", "train", "run", "sft", "sft-data", "report",
            "model"} <= commands
    assert {"build", "info"} <= models
    assert len(CASES) >= 100


def test_bad_tiny_settings_and_devices_are_refused_before_torch_is_imported() -> None:
    """The table imports torch up front (`_heavy_imports`); a fresh interpreter shows that
    these refusals do not wait for its import (about ten seconds)."""
    script = """
import sys
from typer.testing import CliRunner
from sepo.cli import app
for args in (["model", "build", "tiny", "--set", "lr=-1"],
             ["model", "build", "tiny", "--set", "num_heads=3"],
             ["model", "info", "tiny", "--device", "quantum"],
             ["model", "info", "tiny", "--dtype", "int3"]):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (args, result.output)
assert "torch" not in sys.modules, "torch was imported"
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
