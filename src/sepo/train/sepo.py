"""SEPO stage 2: GRPO with safety penalties, per-pool credit, one file, top to bottom.

One step of `train_sepo`:

1. **Rollouts.** For every opponent of the train, exploit and collusive pools (an opponent in
   two pools gets a group in each role), n episodes that share one seed (common random
   numbers: they differ only by the agent's sampling), all in ONE lock-step `Engine`, so the
   LM agent makes one batched `generate` per round for the whole step.
2. **Rewards** per round (docs/method.md §5.3), by the episode's pool role (`credit=per-pool`):
   train s·u_t − λx·x_t; exploit −λe·s·e_r − λx·x_t; collusive −λc·c_t.
3. **Advantages** per (group, round t): the reward minus the group's mean over its n rollouts
   (0 where the n rewards are equal), divided by the group's std (`advantage=group`, GRPO),
   by one scale for the whole step (`batch`, which keeps the λ weights), or by nothing
   (`none`); docs/method.md §5.4. Every decision of round t of a rollout gets that rollout's
   A_t (a Kuhn hand can hold two decisions). Under `budgets`, the λ of step t+1 follows dual
   ascent on the metrics measured in steps up to t (§5.4.1, `sepo.train.budgets`).
4. **Loss** per decision: the PPO clipped surrogate on the sequence-level ratio
   exp(Σ log π_θ − Σ log π_old) of the decision's generated tokens (π_old: the trainer's own
   forward before the step's first update, not the sampler's log-probs), plus
   β·max(0, log π_θ − log π_ref) (sequence log-probs; a one-sided KL to the reference),
   averaged over decisions. Decisions the constrained fallback chose are left out (their
   tokens did not choose the action played), but their rounds' rewards still count. So the
   loss neither rewards nor punishes text that fails to parse; only the KL term holds the
   answer format, and on tiny's bargaining at lr 1e-4 that was not enough
   (research/2026-11-23-auction-negotiation-bargaining-3-seeds.md).
5. **Step.** AdamW, global gradient-norm clip, then logging, and every k steps an evaluation
   and an atomic checkpoint.

Baselines and ablations are switches of the same loop:

- `credit=aux` — the paper's Algorithm 1, kept to reproduce it: only train-pool rollouts are
  trained on; each also gets auxiliary episodes against the exploit and collusive pools (same
  agent, their own seeds, not trained on) whose penalties are subtracted from every round of
  that train rollout. Those penalties are independent of the train rollout's actions, so they
  add variance and no expected gradient.
- `credit=constant` — the paper's released code: one penalty per step (the Safety penalty of
  the step's whole batch) subtracted from every reward of every rollout, in place of the
  per-round penalties. A constant cancels in the per-group normalisation, so the gradient is
  exactly reward-only's (`tests/test_train.py` proves it to 1e-6 on one batch).
- `reward_only` — every λ = 0: plain GRPO.
- `normalize=episode` — one advantage per rollout, from its summed reward.
- `oracle` (on by default, docs/method.md §5.7) — adaptive exploiters: every `oracle_every`
  steps a best-response oracle (`sepo.train.oracle`) picks `oracle_top` exploiters of the
  current policy, played in as many exploit groups after the fixed ones: Kuhn's exact best
  response (exploit reward on the signed gap), or the other games' top candidates by gap.
- `exploit_best_response` (Kuhn; the oracle's earlier opt-in form, kept for its runs) —
  `best_response_groups` more exploit groups whose opponent is the exact best response to the
  current policy, rebuilt every step.

Batch composition: `per-pool`, `constant` and `reward_only` play and train on exactly the same
groups (train, exploit and collusive). Under `constant` and `reward_only` the exploit and
collusive groups' rewards are constant within each group, so their advantages are 0, but their
decisions stay in the batch and still carry the KL term: the only difference between these
conditions is the reward signal. `aux` trains on the train groups only (the paper's design).

Several processes (`accelerate launch`, `torchrun`; docs/GPU.md) split the step's groups
(`groups[rank::N]`) and train exactly as one process would, to float rounding
(`tests/test_data_parallel.py`): every rollout draws from its own sampling key (so its tokens do
not depend on which rollouts share its batch or process), every process gathers every
process's records in the one-process order and computes the rewards, advantages, λ and the
logged figures over all of them, the loss of each process's decisions is divided by the global
number of decisions and the gradients are summed, and the main process evaluates, checkpoints,
logs and tells the others the evaluation and the best checkpoint.

Log-probabilities follow the LM agent's convention (`sepo.agents.lm`): log_softmax of the
logits divided by the sampling temperature, over the full vocabulary, with the model in eval
mode (no dropout: the sequence-level ratio would multiply per-token dropout noise and trip the
clip spuriously; `dropout=True` turns it on).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sepo.agents import LMAgent, LMTrace, SamplingConfig
from sepo.agents.chat import accepts_logits_to_keep, eos_token_ids, model_device, pad_token_id
from sepo.agents.engines import fast_or_none
from sepo.console import new_progress
from sepo.engine import SAMPLING_KEY, AgentDecision, Engine, Episode, EpisodeRecord
from sepo.errors import SepoError, UnknownNameError
from sepo.games import get_game, get_strategy
from sepo.games.base import (
    AGENT,
    ExactCredit,
    ExactSolvable,
    Game,
    Strategy,
    capability,
    derive_seed,
)
from sepo.metrics import LAMBDA_NAMES, episode_gap, finite_or_none, role_metrics, round_rewards
from sepo.rundir import check_output_dir, describing_os_errors, model_input_paths
from sepo.train import checkpoint as ckpt
from sepo.train import tracking
from sepo.train.budgets import BudgetSettings, SafetyBudgets
from sepo.train.config import ADVANTAGES, NORMALIZATIONS, Lambdas, SEPOConfig, load_config
from sepo.train.oracle import (
    ORACLE_LOG,
    SINGLE_PROCESS,
    BestResponseOracle,
    Collective,
    OracleLog,
    Refresh,
    build_oracle,
    slot_opponents,
)

#: First part of every seed the trainer derives ("SEPO TRAIN"), apart from evaluation seeds.
TRAIN_TAG = 0x5E90_7241
# Stream 4 is retired (the in-training evaluation keys every episode, `evaluate_checkpoint`);
# the numbers stay fixed, so that a run's seeds do not change.
_INIT_STREAM, _ROLLOUT_STREAM, _AUX_STREAM, _SAMPLING_STREAM = range(4)
#: The oracle's refreshes: its episodes' seeds and its agent's sampling seed, per step.
_ORACLE_STREAM = 5
#: Each rollout's sampling key (`rollout_episodes`).
_KEY_STREAM = 6
ROLES = ("train", "exploit", "collusive")
#: Above this many parameters `lora=None` (auto) picks LoRA over full fine-tuning.
AUTO_LORA_PARAMETERS = 1_000_000_000


class NonFiniteLossError(SepoError):
    """The loss or the gradient norm of a step is NaN or infinite; the run stops."""

    def __init__(self, step: int, what: str, value: float) -> None:
        self.step = step
        super().__init__(f"non-finite {what} ({value}) at step {step}")


# ====================================================================== 1. rollouts
@dataclass(frozen=True, slots=True)
class Group:
    """n rollouts against one opponent, played in one pool role, sharing one seed.

    `oracle`: an oracle group, whose opponent (`opponent` names its slot) changes at each
    refresh; `signed_gap`: its exploit reward is the unclipped payoff gap (§5.7)."""

    index: int
    role: str
    opponent: str
    oracle: bool = False
    signed_gap: bool = False


#: The opponent name of the adaptive exploiter's group (`exploit_best_response`).
BEST_RESPONSE = "BestResponse"
#: The opponent name of the i-th oracle group (i from 1); the record names the exploiter.
ORACLE_SLOT = "Oracle{}"


def rollout_groups(game: Game, credit: str, best_response_groups: int = 0,
                   oracle_groups: int = 0, oracle_signed: bool = False) -> list[Group]:
    """The step's groups: one per (role, opponent). `aux` trains on the train pool only.
    `best_response_groups` exploit groups against the current policy's exact best response,
    then `oracle_groups` exploit groups against the oracle's choice, are appended (last, so
    every other group keeps its index and its seeds; a fixed number, so the batch keeps its
    shape from one refresh to the next)."""
    roles = ("train",) if credit == "aux" else ROLES
    groups: list[Group] = []
    for role in roles:
        for name in game.pools[role]:
            groups.append(Group(len(groups), role, name))
    for _ in range(best_response_groups):
        groups.append(Group(len(groups), "exploit", BEST_RESPONSE))
    for i in range(oracle_groups):
        groups.append(Group(len(groups), "exploit", ORACLE_SLOT.format(i + 1), oracle=True,
                            signed_gap=oracle_signed))
    return groups


def adaptive_opponents(config: SEPOConfig, agent: LMAgent,
                       collective: Collective = SINGLE_PROCESS) -> dict[str, Strategy]:
    """Opponents built from the current policy for this step: under `exploit_best_response`,
    the exact best response to the agent's tabular policy (the game's `ExactSolvable`
    capability; Kuhn: its 12-information-set per-hand policy). Why: with fixed
    exploiters and group-standardised advantages, λe cannot steer a zero-sum game's policy
    toward Nash (research/2026-11-22-kuhn-3-seeds-2-08m.md, reason 3); against its own best
    response, a rollout's better payoff is exactly lower exploitability."""
    if not config.exploit_best_response:
        return {}
    game = get_game(config.game)
    solver = capability(game, ExactSolvable)
    if solver is None:  # SEPOConfig refuses this; a config built around validation may not
        raise SepoError(f"exploit_best_response needs a game with exact best responses, "
                        f"not {game.name}")
    return {BEST_RESPONSE: solver.best_response(_policy_now(game, agent, collective))}


def exact_credit_inputs(game: Game, agent: LMAgent, groups: Sequence[Group],
                        adaptive: Mapping[str, Strategy], collective: Collective = SINGLE_PROCESS,
                        read: Mapping[str, float] | None = None,
                        ) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """What `exact_advantages` needs this step: the agent's tabular policy now and, per oracle
    group, the table its opponent (the oracle's best response) plays. The policy is `read`,
    the oracle's reading when it refreshed this step (the same weights and prompts), else
    read here (rank 0's reading for every process, as in `adaptive_opponents`)."""
    solver = capability(game, ExactSolvable)
    if solver is None:
        raise SepoError(f"exact_credit needs a game with tabular policies, not {game.name}")
    policy = _policy_now(game, agent, collective, read)
    tables: dict[int, dict[str, float]] = {}
    for group in groups:
        if not group.oracle:
            continue
        table = solver.strategy_policy(adaptive[group.opponent])
        if table is None:
            raise SepoError(f"exact_credit: the oracle's exploiter {group.opponent} plays no "
                            "table")
        tables[group.index] = dict(table)
    return policy, tables


class StepOracle:
    """The trainer's side of the best-response oracle (`sepo.train.oracle`, docs/method.md
    §5.7): when it refreshes (before step 1, then every `oracle_every` steps, never in
    between), with which agent and seeds, and who plays the oracle groups until the next.

    The refresh of step t plays on seeds derived from (run seed, `_ORACLE_STREAM`, t) with an
    agent of its own (the same model and sampling settings, its seed from the same stream and
    the process index, its call counter reset): it takes nothing from the training agent's
    draws, and a resumed run repeats it exactly. Several processes: each plays its share of
    the candidates and every process ranks the gathered results (`Collective`), so all choose
    the same exploiters.
    """

    def __init__(self, oracle: BestResponseOracle, config: SEPOConfig, model: Any,
                 tokenizer: Any, collective: Collective = SINGLE_PROCESS) -> None:
        self.oracle = oracle
        self.config = config
        self.every = int(config.oracle_every or 1)
        self.slots = [ORACLE_SLOT.format(i + 1) for i in range(config.oracle_top)]
        self.collective = collective
        self.agent = LMAgent(model, tokenizer, SamplingConfig(
            temperature=config.temperature, top_p=config.top_p,
            max_new_tokens=config.max_new_tokens, reasoning=config.reasoning,
            engine=config.engine), name=f"sepo-oracle:{config.model}")
        self.last: Refresh | None = None
        self._opponents: dict[str, Strategy] = {}

    def due(self, step: int) -> bool:
        return (step - 1) % self.every == 0

    def load(self, state: Mapping[str, Any]) -> None:
        """The refresh a checkpoint's trainer state holds (`{}`: none yet)."""
        if state:
            self._use(Refresh.from_json(state))

    def refresh(self, step: int) -> Refresh:
        base = derive_seed(TRAIN_TAG, self.config.seed, _ORACLE_STREAM, step)
        self.agent.config = dataclasses.replace(
            self.agent.config, seed=derive_seed(base, 1, self.collective.rank))
        self.agent.calls = 0
        result = self.oracle.refresh(self.agent, step, derive_seed(base, 0), self.collective)
        self._use(result)
        return result

    def _use(self, refresh: Refresh) -> None:
        self.last = refresh
        self._opponents = slot_opponents(self.oracle.exploiters(refresh), self.slots)

    def opponents(self) -> dict[str, Strategy]:
        return dict(self._opponents)

    def policy_read_at(self, step: int) -> dict[str, float] | None:
        """The tabular policy the refresh of `step` answered, if one refreshed at `step`
        (an exact oracle; None otherwise)."""
        last = self.last
        return last.policy if last is not None and last.step == step else None


def step_oracle(config: SEPOConfig, game: Game, model: Any, tokenizer: Any,
                collective: Collective = SINGLE_PROCESS) -> StepOracle | None:
    """The run's oracle (None when `config.oracle` is off or the game has none)."""
    if not config.oracle:
        return None
    oracle = build_oracle(game, top=config.oracle_top, episodes=config.oracle_episodes)
    return StepOracle(oracle, config, model, tokenizer, collective) if oracle else None


def _collective(accelerator: Any) -> Collective:
    if accelerator.num_processes == 1:
        return SINGLE_PROCESS
    from accelerate.utils import gather_object

    return Collective(accelerator.process_index, accelerator.num_processes,
                      lambda x: list(gather_object([x])))


def aux_opponents(game: Game) -> list[tuple[str, str]]:
    """(role, opponent) of the auxiliary episodes each train rollout gets under `credit=aux`."""
    return [(role, name) for role in ("exploit", "collusive") for name in game.pools[role]]


def rollout_episodes(game: Game, agent: LMAgent, groups: Sequence[Group], config: SEPOConfig,
                     step: int, adaptive: Mapping[str, Strategy] | None = None) -> list[Episode]:
    """Every episode of one step, to be played in one lock-step batch.

    Tags say what each episode is for: `pool` (its role), `group` and `rollout` for trained
    episodes; auxiliary episodes have `group` None and `aux_of` = [group, rollout].
    `adaptive`: opponents of this step by name (`adaptive_opponents`), before the game's own.

    Every episode carries a sampling key (`SAMPLING_KEY`) derived from (run seed, step, group,
    rollout[, auxiliary opponent]): the agent draws each of its decisions from a stream of that
    key, so a rollout plays the same whichever episodes share its batch, and N processes,
    each playing its share of the groups, play exactly the one-process rollouts. (Before the
    keys, one stream per agent call fed the whole batch; one-process draws changed with them.)
    """
    episodes: list[Episode] = []
    for group in groups:
        opponent = (adaptive or {}).get(group.opponent) or get_strategy(game, group.opponent)
        seed = derive_seed(TRAIN_TAG, config.seed, _ROLLOUT_STREAM, step, group.index)
        extra = {**({"oracle": True} if group.oracle else {}),
                 **({"gap": "signed"} if group.signed_gap else {})}
        for i in range(config.group_size):
            key = derive_seed(TRAIN_TAG, config.seed, _KEY_STREAM, step, group.index, i)
            episodes.append(Episode(game, agent, opponent, seed,
                                    {"pool": group.role, "group": group.index, "rollout": i,
                                     **extra, SAMPLING_KEY: key}))
            if config.credit != "aux":
                continue
            for j, (role, name) in enumerate(aux_opponents(game)):
                # Independent of the train rollout: their own seed, per rollout.
                aux_seed = derive_seed(TRAIN_TAG, config.seed, _AUX_STREAM, step, group.index,
                                       i, j)
                # j + 1: SeedSequence ignores trailing zeros, and j = 0 would be the rollout's.
                aux_key = derive_seed(TRAIN_TAG, config.seed, _KEY_STREAM, step, group.index,
                                      i, j + 1)
                episodes.append(Episode(game, agent, get_strategy(game, name), aux_seed,
                                        {"pool": role, "group": None,
                                         "aux_of": [group.index, i], SAMPLING_KEY: aux_key}))
    return episodes


# ====================================================================== 2. rewards
@dataclass(slots=True)
class StepRewards:
    """Per-round rewards of every record of a step, aligned with the records.

    `groups[k]` is record k's group, or None for an episode that is not trained on (an
    auxiliary episode, whose `per_round` is then its own pool's reward signal, for logging).
    `penalty` is what `credit=constant` subtracted from every reward (0 otherwise); under
    `credit=aux`, `aux_penalties[k]` is what was subtracted from train rollout k's rounds.
    """

    per_round: list[np.ndarray]
    groups: list[int | None]
    penalty: float = 0.0
    aux_penalties: dict[int, float] | None = None


def episode_penalty(game: Game, record: EpisodeRecord, role: str, lambdas: Lambdas) -> float:
    """The episode's mean per-round penalty in its role: what the λ terms take from its
    reward (λx·x̄ for train, λe·s·e_r + λx·x̄ for exploit, λc·c̄ for collusive)."""
    with_penalty = _round_rewards(game, record, role, lambdas)
    without = _round_rewards(game, record, role, Lambdas.zero())
    return float(np.mean(np.subtract(without, with_penalty))) if record.rounds else 0.0


def _round_rewards(game: Game, record: EpisodeRecord, role: str, lambdas: Lambdas) -> np.ndarray:
    """`round_rewards` of a record, with the signed gap where its group has one (§5.7)."""
    return np.asarray(round_rewards(game, record, role, lambdas.as_dict(),
                                    signed_gap=record.tags.get("gap") == "signed"))


def _role_mean_penalty(game: Game, records: Sequence[EpisodeRecord],
                       lambdas: Lambdas) -> float:
    """Σ over roles of the mean episode penalty over that role's episodes: the Safety
    penalty λe·s·e + λc·c + λx·x of a batch (x counted per role)."""
    total = 0.0
    for role in ROLES:
        mine = [episode_penalty(game, r, role, lambdas) for r in records
                if r.tags["pool"] == role]
        if mine:
            total += float(np.mean(mine))
    return total


def compute_rewards(game: Game, records: Sequence[EpisodeRecord], config: SEPOConfig,
                    lambdas: Lambdas | None = None) -> StepRewards:
    """Per-round rewards of one step's records under the config's credit assignment, with
    `lambdas` (this step's multipliers under safety budgets) or the config's training λ."""
    lambdas = config.train_lambdas if lambdas is None else lambdas
    groups: list[int | None] = [r.tags.get("group") for r in records]

    if config.credit == "per-pool":
        per_round = [_round_rewards(game, r, r.tags["pool"], lambdas) for r in records]
        return StepRewards(per_round, groups)

    if config.credit == "constant":
        # The game reward alone, minus ONE number shared by every rollout of the step.
        penalty = _role_mean_penalty(game, records, lambdas)
        per_round = [_round_rewards(game, r, r.tags["pool"], Lambdas.zero()) - penalty
                     for r in records]
        return StepRewards(per_round, groups, penalty=penalty)

    # credit == "aux": a train rollout's own reward, minus the penalties measured on its
    # auxiliary episodes (which its actions did not cause).
    aux_of: dict[tuple[int, int], list[EpisodeRecord]] = {}
    for r in records:
        if r.tags.get("aux_of") is not None:
            g, i = r.tags["aux_of"]
            aux_of.setdefault((g, i), []).append(r)
    per_round, aux_penalties = [], {}
    for k, r in enumerate(records):
        rewards = _round_rewards(game, r, r.tags["pool"], lambdas)
        if groups[k] is not None:
            aux = aux_of.get((r.tags["group"], r.tags["rollout"]), [])
            aux_penalties[k] = _role_mean_penalty(game, aux, lambdas)
            rewards = rewards - aux_penalties[k]
        per_round.append(rewards)
    return StepRewards(per_round, groups, aux_penalties=aux_penalties)


# ====================================================================== 3. advantages
def compute_advantages(per_round: Sequence[np.ndarray], groups: Sequence[int | None],
                       normalize: str = "per-round", scale: str = "group", eps: float = 1e-8,
                       reduce: Callable[[np.ndarray], np.ndarray] | None = None,
                       exact: Mapping[int, np.ndarray] | None = None,
                       ) -> list[np.ndarray]:
    """Advantages, one per round of each record: the group-centred reward over a scale.

    Every (group, round t) cell (per-round) or group (episode: each rollout's summed reward,
    broadcast to its rounds) is centred on its group's mean; `scale` says what divides it:

    - `group` — the cell's own population std (GRPO; the paper). A pool whose reward is one
      penalty term (exploit, collusive) then has the same advantages for every λ > 0.
    - `batch` — one number for the whole step: the root mean square of every centred value of
      every trained record, all pools together (REINFORCE++-style whitening, TRL's
      `scale_rewards="batch"` on centred values). The λ weights keep their relative size.
    - `none` — no division (Dr. GRPO): the advantages are in reward units.

    Where a group's values are all equal the advantage is exactly 0 (tested with max == min,
    which rounding of the mean cannot fool). Records whose group is None get 0. `reduce` sums
    a vector across processes, for a caller that holds one process's share of the step's
    groups, so that `batch` divides by the scale of the whole step (the trainer itself gathers
    every process's records, `all_records`).

    `exact` (`exact_credit`): per record k, one advantage per DECISION in reward units
    (`exact_advantages`), already centred (on V(I)). Such a record's returned array is per
    decision, in its `decisions` order, not per round (`decision_samples(per_decision=...)`).
    `group` divides each such group's values by their root mean square (they have no
    rollout spread to divide by), `batch` counts them in the step's scale, `none` keeps them.
    """
    if normalize not in NORMALIZATIONS:
        raise UnknownNameError("normalize", normalize, NORMALIZATIONS)
    if scale not in ADVANTAGES:
        raise UnknownNameError("advantage", scale, ADVANTAGES)
    exact = exact or {}
    advantages = [np.zeros(len(r), dtype=np.float64) for r in per_round]
    sampled = [None if k in exact else g for k, g in enumerate(groups)]
    for ks, centred, std, _varies in _centred_groups(per_round, sampled, normalize):
        if scale == "group":
            centred = centred / (std + eps)
        for row, k in enumerate(ks):
            advantages[k] = np.broadcast_to(centred[row], advantages[k].shape).copy()
    exact_groups: dict[int | None, list[int]] = {}
    for k, values in exact.items():
        advantages[k] = np.asarray(values, dtype=np.float64).copy()
        exact_groups.setdefault(groups[k], []).append(k)
    if scale == "group":
        for ks in exact_groups.values():
            values = np.concatenate([advantages[k] for k in ks])
            rms = math.sqrt(float(np.mean(np.square(values)))) if values.size else 0.0
            for k in ks:
                advantages[k] = advantages[k] / (rms + eps)
    if scale == "batch":
        trained = [a for a, g in zip(advantages, groups, strict=True) if g is not None]
        cells = np.concatenate(trained) if trained else np.zeros(0)
        totals = np.array([float(np.square(cells).sum()), float(cells.size)])
        if reduce is not None:
            totals = reduce(totals)
        rms = math.sqrt(totals[0] / totals[1]) if totals[1] > 0 else 0.0
        advantages = [a / (rms + eps) for a in advantages]
    return advantages


def _centred_groups(per_round: Sequence[np.ndarray], groups: Sequence[int | None],
                    normalize: str) -> Iterator[tuple[list[int], np.ndarray, np.ndarray,
                                                      np.ndarray]]:
    """For each group: its records' indices, their rewards minus the group mean (per round,
    or of the summed reward), the group's population std and where the values differ (0 is
    written exactly where they do not)."""
    members: dict[int, list[int]] = {}
    for k, g in enumerate(groups):
        if g is not None:
            members.setdefault(g, []).append(k)
    for g, ks in members.items():
        lengths = {len(per_round[k]) for k in ks}
        if len(lengths) != 1:
            raise SepoError(f"group {g} mixes episodes of {sorted(lengths)} rounds")
        rewards = np.stack([np.asarray(per_round[k], dtype=np.float64) for k in ks])
        if normalize == "episode":
            rewards = rewards.sum(axis=1, keepdims=True)
        varies = rewards.max(axis=0) > rewards.min(axis=0)
        centred = np.where(varies, rewards - rewards.mean(axis=0), 0.0)
        yield ks, centred, rewards.std(axis=0), varies


def zero_variance_fraction(per_round: Sequence[np.ndarray], groups: Sequence[int | None],
                           normalize: str = "per-round") -> float:
    """The fraction of the step's (group, round) cells (groups, under `episode`) whose
    rollouts all got the same reward: they contribute no policy gradient, whatever λ is."""
    flat = [v for *_, varies in _centred_groups(per_round, groups, normalize) for v in varies]
    return float(np.mean(np.logical_not(flat))) if flat else math.nan


def exact_advantages(game: Game, records: Sequence[EpisodeRecord],
                     opponents: Mapping[int, Mapping[str, float]], policy: Mapping[str, float],
                     weight: float) -> dict[int, np.ndarray]:
    """`exact_credit` (docs/method.md §5.7.1): for each record of a group in `opponents`
    (group index -> the table its opponent plays), one advantage per agent decision,
    weight·(Q(I, a) − V(I)) of the decision's information set I and action a against that
    table, the agent playing `policy` (its tabular policy this step) afterwards.

    Why: the exploit reward against a best response is linear in the hands' margins, so its
    policy gradient is Σ over reached decisions of (Q − V)·∇log π, which the game computes
    exactly (`ExactCredit`). A sampled episode return gives the same gradient in expectation
    but, with group rollouts on shared deals, left about half the cells without any
    (research/2026-12-07-penalties-study-kuhn.md, "Follow-up"). `weight` is λe·s, the
    exploit reward's weight on the margin."""
    credit = capability(game, ExactCredit)
    if credit is None:
        raise SepoError(f"exact_credit needs a game with exact action values, not {game.name}")
    tables = {g: credit.action_advantages(policy, table) for g, table in opponents.items()}
    out: dict[int, np.ndarray] = {}
    for k, record in enumerate(records):
        group = record.tags.get("group")
        if group not in tables:
            continue
        made = [m for rnd in record.rounds for m in credit.round_decisions(rnd)]
        actions = [d.action for d in record.decisions]
        if [a for _, a in made] != actions:
            raise SepoError(f"{game.name}: the rounds of an episode of group {group} hold the "
                            f"decisions {made}, its record {actions}")
        out[k] = np.array([weight * tables[group][key][action] for key, action in made],
                          dtype=np.float64)
    return out


@dataclass(frozen=True, slots=True)
class ExpectedCredit:
    """`exact_expected` (docs/method.md §5.7.2): the loss term that stands for the oracle
    groups' `decisions` sampled decisions. Per information set I (`keys`, the tabular
    policy's order) and its two actions, the coefficient of π(scored | I) and of
    π(other | I): Σ over oracle groups of n_g · q_g(I) · Â_g(I, a), with n_g the group's
    trained decisions, q_g(I) the share of play's decisions made at I against the group's
    table and Â_g the exact advantage scaled as the group's sampled values were."""

    keys: tuple[str, ...]
    scored: np.ndarray
    other: np.ndarray
    decisions: int

    def loss(self, log_odds: torch.Tensor) -> torch.Tensor:
        """−Σ_I Σ_a coefficient(I, a) · π(a | I), from the policy's log-odds of the scored
        action: its gradient is Σ_I Σ_a coefficient · ∇π, i.e. n_g times the expected
        Â·∇log π of one sampled decision."""
        p = torch.sigmoid(log_odds)
        scored = torch.as_tensor(self.scored, dtype=p.dtype, device=p.device)
        other = torch.as_tensor(self.other, dtype=p.dtype, device=p.device)
        return -(scored * p + other * (1.0 - p)).sum()


def expected_credit(game: Game, records: Sequence[EpisodeRecord],
                    opponents: Mapping[int, Mapping[str, float]], policy: Mapping[str, float],
                    raw: Mapping[int, np.ndarray], scaled: Sequence[np.ndarray],
                    weight: float) -> ExpectedCredit:
    """The `ExpectedCredit` of this step's oracle groups (`opponents`: group -> table), from
    their records' raw exact advantages `raw` (`exact_advantages`) and the same records'
    advantages after `compute_advantages` (`scaled`): each group's values keep the scale
    they were given there, so that the term is the sampled one's expectation under every
    `advantage` setting. `weight` is λe·s, as for `exact_advantages`."""
    credit = capability(game, ExactCredit)
    solver = capability(game, ExactSolvable)
    if credit is None or solver is None:
        raise SepoError(f"exact_expected needs a game with exact action values, not {game.name}")
    decisions = solver.policy_decisions()
    keys = tuple(d.key for d in decisions)
    scored, other = np.zeros(len(keys)), np.zeros(len(keys))
    total = 0
    for group, table in opponents.items():
        ks = [k for k in raw if records[k].tags.get("group") == group]
        n = sum(_trained_decisions(records[k]) for k in ks)
        size = float(sum(np.abs(raw[k]).sum() for k in ks))
        factor = float(sum(np.abs(scaled[k]).sum() for k in ks)) / size if size > 0 else 0.0
        total += n
        if n == 0 or factor == 0.0:
            continue
        reach = credit.decision_reach(policy, table)
        mass = sum(reach.values())
        margins = credit.action_advantages(policy, table)
        for i, d in enumerate(decisions):
            q = reach[d.key] / mass if mass > 0 else 0.0
            (other_action,) = [a for a in margins[d.key] if a != d.action]
            scored[i] += n * q * weight * factor * margins[d.key][d.action]
            other[i] += n * q * weight * factor * margins[d.key][other_action]
    return ExpectedCredit(keys, scored, other, total)


def _trained_decisions(record: EpisodeRecord) -> int:
    """How many of a record's decisions `decision_samples` trains on."""
    return sum(1 for d in record.decisions if _is_trained(d))


def _is_trained(decision: AgentDecision) -> bool:
    """A decision the loss takes: made by the LM (a trace), not by the constrained fallback
    (its tokens did not choose the action), with a non-empty completion."""
    trace = decision.trace
    return trace is not None and not trace.fallback and bool(trace.completion_ids)


# ====================================================================== 4. the loss
@dataclass(slots=True)
class DecisionSample:
    """One trained decision: its tokens, the sampling log-prob and its advantage."""

    prompt_ids: list[int]
    completion_ids: list[int]
    old_logprob: float
    advantage: float
    temperature: float
    role: str


def decision_samples(records: Sequence[EpisodeRecord], advantages: Sequence[np.ndarray],
                     groups: Sequence[int | None],
                     per_decision: Container[int] = ()) -> list[DecisionSample]:
    """The decisions the loss is taken over: every decision of a trained record with a trace,
    except fallback decisions and empty completions. A decision takes its round's advantage,
    or, for a record k in `per_decision`, its own (`advantages[k][j]` for decision j)."""
    samples = []
    for k, (record, adv, group) in enumerate(zip(records, advantages, groups, strict=True)):
        if group is None:
            continue
        for j, d in enumerate(record.decisions):
            trace: LMTrace | None = d.trace
            if not _is_trained(d):
                continue
            assert trace is not None
            samples.append(DecisionSample(
                prompt_ids=list(trace.prompt_ids), completion_ids=list(trace.completion_ids),
                old_logprob=float(sum(trace.logprobs)),
                advantage=float(adv[j] if k in per_decision else adv[d.round]),
                temperature=float(trace.temperature), role=record.tags["pool"]))
    return samples


def sequence_logprobs(model: Any, samples: Sequence[DecisionSample], pad_id: int,
                      share_prefix: bool = True) -> torch.Tensor:
    """Σ over each sample's completion tokens of log_softmax(logits / T), shape (B,).

    Right-padded batch; prompt and padding positions are left out of the sum. Only the
    positions that predict completion tokens go through the LM head (`logits_to_keep`) when
    the model supports it: for a large vocabulary that is most of the memory of the forward
    pass. With `share_prefix`, the prompt prefix the whole batch shares (the game's system
    prompt) is run once (the fast engine's `sepo.agents.fast.prefix_sharing`): the same
    log-probs and gradients up to float rounding, for about half the FLOPs on `tiny`; where
    `packing_supported`, the rest of the rows runs packed, without padding, and only the
    completion-predicting positions reach the LM head (`packed_completion_logits`). Without it,
    or where the fast engine cannot be imported, plain forward passes.
    """
    device = model_device(model)
    fast = fast_or_none("the loss's shared prompt prefix") if share_prefix else None
    if fast is not None:
        logits = fast.packed_completion_logits(model, [s.prompt_ids + s.completion_ids
                                                       for s in samples],
                                               [len(s.prompt_ids) for s in samples])
        if logits is not None:
            owner = torch.tensor([i for i, s in enumerate(samples) for _ in s.completion_ids],
                                 device=device)
            targets = torch.tensor([t for s in samples for t in s.completion_ids],
                                   device=device)
            temperature = torch.tensor([s.temperature for s in samples], device=device)
            token_logprobs = torch.log_softmax(logits.float() / temperature[owner, None], dim=-1)
            token_logprobs = token_logprobs.gather(-1, targets[:, None]).squeeze(-1)
            return torch.zeros(len(samples), device=device).index_add(0, owner, token_logprobs)
    lengths = [len(s.prompt_ids) + len(s.completion_ids) for s in samples]
    width = max(lengths)
    input_ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    is_completion = torch.zeros((len(samples), width), dtype=torch.bool)
    for i, s in enumerate(samples):
        input_ids[i, :lengths[i]] = torch.tensor(s.prompt_ids + s.completion_ids)
        is_completion[i, len(s.prompt_ids):lengths[i]] = True
    # The logits at position j predict token j + 1: keep positions first..width-2.
    first = min(len(s.prompt_ids) for s in samples) - 1
    keep = torch.arange(first, width - 1, device=device)
    input_ids = input_ids.to(device)
    # No attention mask: with right padding, causality alone keeps every real token from
    # seeing the padding after it (padding positions are never scored), and a mask-free batch
    # takes the fused causal attention kernel instead of materialising a B x S x S mask.
    with fast.shared_prompt_prefix(model) if fast is not None else nullcontext():
        if accepts_logits_to_keep(model):
            logits = model(input_ids=input_ids, logits_to_keep=keep).logits
        else:
            logits = model(input_ids=input_ids).logits[:, first:width - 1]
    targets = input_ids[:, first + 1:]
    scored = is_completion[:, first + 1:].to(device)
    temperature = torch.tensor([s.temperature for s in samples], device=device)[:, None, None]
    token_logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)
    token_logprobs = token_logprobs.gather(-1, targets[..., None]).squeeze(-1)
    return torch.where(scored, token_logprobs, 0.0).sum(dim=-1)


@dataclass(slots=True)
class LossParts:
    """Sums over a batch's decisions (detached), for logging."""

    policy: float  # Σ −clipped surrogate
    kl: float  # Σ max(0, log π_θ − log π_ref)
    log_ratio_ref: float  # Σ (log π_θ − log π_ref), signed
    clipped: int  # decisions whose ratio left [1 − ε, 1 + ε]
    count: int


def sepo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
              advantages: torch.Tensor, *, clip_eps: float, beta: float,
              num_decisions: int | None = None) -> tuple[torch.Tensor, LossParts]:
    """The SEPO loss of a batch of decisions (sequence-level log-probs, shape (B,)).

    Per decision: −min(ρA, clip(ρ, 1−ε, 1+ε)A) + β·max(0, log π_θ − log π_ref) with
    ρ = exp(log π_θ − log π_old). Returns the sum over the batch divided by `num_decisions`
    (default B): with micro-batches, pass the step's total so the micro-batch losses add up
    to the mean over all decisions.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    policy_term = -torch.minimum(unclipped, clipped)
    log_ratio_ref = logprobs - ref_logprobs
    kl = torch.relu(log_ratio_ref)  # one-sided: only moving above the reference (grad 0 at 0)
    per_decision = policy_term + beta * kl
    denominator = len(logprobs) if num_decisions is None else num_decisions
    loss = per_decision.sum() / max(denominator, 1)
    with torch.no_grad():
        parts = LossParts(
            policy=float(policy_term.sum()), kl=float(kl.sum()),
            log_ratio_ref=float(log_ratio_ref.sum()),
            clipped=int(((ratio < 1.0 - clip_eps) | (ratio > 1.0 + clip_eps)).sum()),
            count=len(logprobs))
    return loss, parts


# ====================================================================== 5. policy and reference
@dataclass(slots=True)
class Policy:
    """The trained model and how to get the reference's log-probabilities.

    LoRA: `reference` is None and the reference is the same model with its adapters disabled
    (no second copy). Full fine-tuning: `reference` is a frozen copy of the starting model.
    """

    model: Any
    tokenizer: Any
    reference: Any | None
    lora: bool
    pad_id: int

    @contextmanager
    def reference_model(self) -> Iterator[Any]:
        if self.reference is not None:
            yield self.reference
        else:
            with self.model.disable_adapter():
                yield self.model

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @contextmanager
    def sampling_model(self, merge_lora: bool = True) -> Iterator[Any]:
        """The model to play with. Under LoRA (and `merge_lora`), its adapters folded into
        the weights for the duration; see `merged_lora_weights`."""
        if self.lora and merge_lora:
            with merged_lora_weights(self.model):
                yield self.model
        else:
            yield self.model


@contextmanager
def merged_lora_weights(model: Any) -> Iterator[None]:
    """Inside: every LoRA linear layer computes with W + s·BA in place of W, as one matmul.
    On exit: each W is exactly the tensor it was.

    Why: unmerged adapters add their own small kernels to every layer of every decoding step,
    and decoding a batch is bound by latency; on one H100 that made SmolLM2-135M's LoRA
    rollouts several times slower than full fine-tuning's (docs/GPU.md). peft's
    `merge_adapter`/`unmerge_adapter` add and later subtract the delta in place, which with a
    bf16 base leaves a rounding error in the frozen weights (and so in the reference) at every
    step; here W is set aside and put back, at the cost of one merged copy of the adapted
    weights while sampling. Rounding makes the sampled log-probs differ slightly from the
    loss's forward; π_old is that forward's own (the gap is logged as `logprob_gap`)."""
    from peft.tuners.lora import Linear as LoraLinear

    saved: list[tuple[Any, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for module in model.modules():
                if (not isinstance(module, LoraLinear) or module.merged
                        or module.disable_adapters or module.lora_variant):
                    continue  # merged or disabled already, or DoRA-like: left as it is
                adapters = [a for a in module.active_adapters if a in module.lora_A]
                if not adapters:
                    continue
                weight = module.get_base_layer().weight
                original = weight.data
                delta = sum(module.get_delta_weight(a).float() for a in adapters)
                weight.data = (original.float() + delta).to(original.dtype)
                module.merged_adapters = adapters
                saved.append((module, original))
        yield
    finally:
        for module, original in saved:
            module.get_base_layer().weight.data = original
            module.merged_adapters = []


def _use_lora(config: SEPOConfig, model: Any) -> bool:
    if config.lora is not None:
        return config.lora
    return sum(p.numel() for p in model.parameters()) > AUTO_LORA_PARAMETERS


def build_policy(model: Any, tokenizer: Any, config: SEPOConfig) -> Policy:
    """Wrap the starting model for training: LoRA adapters or a frozen reference copy."""
    pad_id = pad_token_id(tokenizer, eos_token_ids(model, tokenizer))
    if not _use_lora(config, model):
        reference = copy.deepcopy(model).eval().requires_grad_(False)
        return Policy(model, tokenizer, reference, lora=False, pad_id=pad_id)
    from peft import LoraConfig, get_peft_model

    lora_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                             lora_dropout=config.lora_dropout,
                             target_modules=list(config.lora_target_modules),
                             bias="none", task_type="CAUSAL_LM")
    try:
        wrapped = get_peft_model(model, lora_config)
    except ValueError as exc:  # target modules not in this architecture
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                         if isinstance(m, torch.nn.Linear)})
        raise SepoError(f"LoRA target modules {config.lora_target_modules} do not fit this "
                        f"model ({exc}); its linear modules: {', '.join(linear)}") from None
    return Policy(wrapped, tokenizer, None, lora=True, pad_id=pad_id)


# ====================================================================== 6. one optimisation
def _micro_batches(samples: Sequence[DecisionSample], size: int) -> list[list[int]]:
    """Indices of the samples in micro-batches of similar length (little padding, and a
    narrow window of prompt lengths so `logits_to_keep` keeps few positions)."""
    order = sorted(range(len(samples)), key=lambda i: (len(samples[i].prompt_ids),
                                                       len(samples[i].completion_ids), i))
    return [order[i:i + size] for i in range(0, len(order), size)]


def _all_reduce_gradients(parameters: Sequence[torch.nn.Parameter], accelerator: Any) -> None:
    """Sum gradients over processes (each process's loss is already divided by the global
    number of decisions, so the sum is the gradient of the global mean)."""
    if accelerator.num_processes == 1:
        return
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad = accelerator.reduce(p.grad, reduction="sum")


def optimise(policy: Policy, samples: Sequence[DecisionSample], optimizer: Any,
             accelerator: Any, config: SEPOConfig, step: int,
             expected: tuple[ExpectedCredit, LMAgent, Game] | None = None) -> dict[str, float]:
    """`updates_per_step` clipped-gradient AdamW steps on one step's decisions, and, under
    `exact_expected`, the `ExpectedCredit` term that stands for the oracle groups' decisions
    (counted in the mean; added by the main process only, as the gradients are summed)."""
    device = accelerator.device
    total = int(accelerator.reduce(torch.tensor(len(samples), device=device), "sum").item())
    if expected is not None:
        total += expected[0].decisions
    stats = {"loss": math.nan, "policy_loss": math.nan, "kl": math.nan,
             "log_ratio_ref": math.nan, "clip_frac": math.nan, "grad_norm": math.nan,
             "logprob_gap": math.nan}
    if total == 0:  # every decision fell back: nothing to learn from this step
        return stats
    batches = _micro_batches(samples, config.micro_batch_size)
    old = torch.tensor([s.old_logprob for s in samples], device=device)
    adv = torch.tensor([s.advantage for s in samples], device=device)
    mode = policy.model.train if config.dropout else policy.model.eval

    # The fast engine's shared-prefix forwards only where the run uses the fast engine.
    share_prefix = config.share_prompt_prefix and config.engine == "fast"
    # The reference's log-probs, once per step (they do not change within it).
    ref = torch.zeros(len(samples), device=device)
    with torch.no_grad(), policy.reference_model() as reference, accelerator.autocast():
        reference.eval()
        for idx in batches:
            ref[idx] = sequence_logprobs(reference, [samples[i] for i in idx], policy.pad_id,
                                         share_prefix)

    parameters = policy.trainable_parameters()
    sums = {"loss": 0.0, "policy": 0.0, "kl": 0.0, "log_ratio_ref": 0.0, "clipped": 0.0,
            "grad_norm": 0.0, "gap": 0.0}
    mode()
    for epoch in range(config.updates_per_step):
        for idx in batches:
            with accelerator.autocast():
                logprobs = sequence_logprobs(policy.model, [samples[i] for i in idx],
                                             policy.pad_id, share_prefix)
            if epoch == 0:
                # π_old is the policy before this step's first optimiser step, as the trainer's
                # own forward computes it: the log-probs recorded while sampling (cached,
                # incremental decoding) differ from it in low precision. Measured on an H100
                # with LoRA in bf16: 35% of decisions clipped at step 1 with the sampling
                # log-probs, where the ratio is 1 by definition. The gap is logged.
                sums["gap"] += float((logprobs.detach() - old[idx]).abs().sum())
                old[idx] = logprobs.detach()
            loss, parts = sepo_loss(logprobs, old[idx], ref[idx], adv[idx],
                                    clip_eps=config.clip_eps, beta=float(config.beta or 0.0),
                                    num_decisions=total)
            if not torch.isfinite(loss.detach()):
                raise NonFiniteLossError(step, "loss", loss.item())
            accelerator.backward(loss)
            sums["loss"] += loss.item()
            sums["policy"] += parts.policy
            sums["kl"] += parts.kl
            sums["log_ratio_ref"] += parts.log_ratio_ref
            sums["clipped"] += parts.clipped
        if expected is not None and accelerator.is_main_process:
            term, agent, game = expected
            with accelerator.autocast():
                _, log_odds = agent.policy_log_odds(game, grad=True)
            loss = term.loss(log_odds) / total
            accelerator.backward(loss)
            sums["loss"] += loss.item()
            sums["policy"] += loss.item() * total
        _all_reduce_gradients(parameters, accelerator)
        grad_norm = float(accelerator.clip_grad_norm_(parameters, config.max_grad_norm))
        # fp16 overflows are the grad scaler's business (it skips the step); otherwise a
        # non-finite gradient means the run has diverged.
        if not math.isfinite(grad_norm) and config.mixed_precision != "fp16":
            raise NonFiniteLossError(step, "gradient norm", grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sums["grad_norm"] += grad_norm
    policy.model.eval()

    epochs = config.updates_per_step
    reduced = accelerator.reduce(torch.tensor(
        [sums["policy"], sums["kl"], sums["log_ratio_ref"], sums["clipped"], sums["gap"]],
        dtype=torch.float64, device=device), "sum").tolist()
    per_decision = total * epochs
    stats.update({
        "loss": float(accelerator.reduce(torch.tensor(sums["loss"], device=device), "sum"))
        / epochs,
        "policy_loss": reduced[0] / per_decision,
        "kl": reduced[1] / per_decision,
        "log_ratio_ref": reduced[2] / per_decision,
        "clip_frac": reduced[3] / per_decision,
        "logprob_gap": reduced[4] / total,
        "grad_norm": sums["grad_norm"] / epochs,
    })
    return stats


# ====================================================================== 7. logging helpers
#: The measured quantities a step's reward is made of, unweighted (λ multiplies them):
#: s·u per train round, s·e per exploit episode, c per collusive round, x per round.
REWARD_COMPONENTS = ("payoff", "exploit_gap", "collusion", "externality")


#: metrics.csv columns: per step, then (filled at checkpoints) the in-training evaluation.
STEP_COLUMNS = (
    "step", "loss", "policy_loss", "kl", "log_ratio_ref", "clip_frac", "logprob_gap",
    "grad_norm", "lr",
    "reward_train", "reward_exploit", "reward_collusive", "reward_oracle", "penalty",
    "pay_train",
    "decisions", "trained_decisions", "fallback_rate", "completion_tokens",
    "advantage_share_train", "advantage_share_exploit", "advantage_share_collusive",
    "zero_variance_groups", *(f"{c}_{m}" for c in REWARD_COMPONENTS for m in ("mean", "std")),
    *(f"lambda_{name}" for name in LAMBDA_NAMES), *(f"measured_{name}" for name in LAMBDA_NAMES),
    # at each oracle refresh: the best candidate's gap e, the mean gap of those chosen
    "oracle_top_gap", "oracle_chosen_gap",
    "time_oracle", "time_rollout", "time_rewards", "time_update", "time_step",
)
EVAL_COLUMNS = ("eval_safety", "eval_exploit", "eval_pay_per_round", "eval_collusion",
                "eval_externality", "eval_exact_exploitability", "eval_parse_failure_rate",
                "time_eval")
COLUMNS = STEP_COLUMNS + EVAL_COLUMNS
#: Columns that measure the machine, not the run (they differ between identical runs).
TIMING_COLUMNS = frozenset(c for c in COLUMNS if c.startswith("time_"))


def rollout_stats(records: Sequence[EpisodeRecord], rewards: StepRewards,
                  samples: Sequence[DecisionSample]) -> dict[str, float]:
    """Mean reward per round by pool (trained episodes), penalties, payoffs, counts."""
    stats: dict[str, float] = {}
    for role in ROLES:
        values = [rw for r, rw, g in zip(records, rewards.per_round, rewards.groups, strict=True)
                  if g is not None and r.tags["pool"] == role]
        stats[f"reward_{role}"] = float(np.mean(np.concatenate(values))) if values else math.nan
    oracle = [rw for r, rw, g in zip(records, rewards.per_round, rewards.groups, strict=True)
              if g is not None and r.tags.get("oracle")]
    stats["reward_oracle"] = float(np.mean(np.concatenate(oracle))) if oracle else math.nan
    if rewards.aux_penalties:
        stats["penalty"] = float(np.mean(list(rewards.aux_penalties.values())))
    else:
        stats["penalty"] = rewards.penalty
    train = [r for r, g in zip(records, rewards.groups, strict=True)
             if g is not None and r.tags["pool"] == "train"]
    stats["pay_train"] = float(np.mean([r.mean(0) for r in train])) if train else math.nan
    decisions = [d for r in records for d in r.decisions]
    stats["decisions"] = len(decisions)
    stats["trained_decisions"] = len(samples)
    stats["fallback_rate"] = (sum(d.parse_failed for d in decisions) / len(decisions)
                              if decisions else 0.0)
    stats["completion_tokens"] = sum(len(s.completion_ids) for s in samples)
    return stats


def advantage_stats(game: Game, records: Sequence[EpisodeRecord], groups: Sequence[int | None],
                    per_round: Sequence[np.ndarray], samples: Sequence[DecisionSample],
                    normalize: str, exact: Container[int] = ()) -> dict[str, float]:
    """Where the step's policy gradient comes from: each pool's share of Σ|A| over the trained
    decisions, the fraction of zero-variance cells (of the group-centred records: not those
    in `exact`, credited per decision), and each reward component's mean and std over the
    trained episodes (NaN where no episode measures it)."""
    stats: dict[str, float] = {}
    total = sum(abs(s.advantage) for s in samples)
    for role in ROLES:
        mine = sum(abs(s.advantage) for s in samples if s.role == role)
        stats[f"advantage_share_{role}"] = mine / total if total > 0 else math.nan
    sampled = [None if k in exact else g for k, g in enumerate(groups)]
    stats["zero_variance_groups"] = zero_variance_fraction(per_round, sampled, normalize)
    trained = [r for r, g in zip(records, groups, strict=True) if g is not None]
    values: dict[str, list[float]] = {c: [] for c in REWARD_COMPONENTS}
    for r in trained:
        role = r.tags["pool"]
        values["externality"] += [game.externality(x) for x in r.rounds]
        if role == "train":
            values["payoff"] += [game.scale * x.payoffs[AGENT] for x in r.rounds]
        elif role == "exploit" and r.rounds:
            values["exploit_gap"].append(game.scale * episode_gap(r))
        elif role == "collusive":
            values["collusion"] += [c for x in r.rounds if (c := game.collusion(x)) is not None]
    for name, xs in values.items():
        stats[f"{name}_mean"] = float(np.mean(xs)) if xs else math.nan
        stats[f"{name}_std"] = float(np.std(xs)) if xs else math.nan
    return stats


def step_budgets(config: SEPOConfig, game: Game) -> SafetyBudgets | None:
    """The run's safety-budget multipliers, starting at its fixed λ (None without budgets)."""
    if not config.budgets:
        return None
    settings = BudgetSettings(config.budgets, units={"exploit": game.scale},
                              lr=config.budget_lr, window=config.budget_window,
                              warmup=config.budget_warmup, lambda_min=config.lambda_min,
                              lambda_max=config.lambda_max)
    return SafetyBudgets.start(settings, config.train_lambdas.as_dict())


def exact_exploitability_now(game: Game, agent: LMAgent, oracle: StepOracle | None,
                             step: int, collective: Collective = SINGLE_PROCESS) -> float:
    """`budget_exact`'s measured exploit: the exact exploitability of the policy this step
    trained (the oracle's reading when it refreshed this step, else read now, rank 0's)."""
    solver = capability(game, ExactSolvable)
    if solver is None:  # SEPOConfig refuses this
        raise SepoError(f"budget_exact needs a game with exact best responses, not {game.name}")
    read = oracle.policy_read_at(step) if oracle is not None else None
    return float(solver.exact_exploitability(_policy_now(game, agent, collective, read)))


def _policy_now(game: Game, agent: LMAgent, collective: Collective,
                read: Mapping[str, float] | None = None) -> dict[str, float]:
    """The agent's tabular policy now: `read` (a reading of the same weights) where given,
    else rank 0's reading for every process (a best response flips on near-ties, which float
    rounding could break differently in another process)."""
    if read is not None:
        return dict(read)
    return dict(collective.all_gather(dict(agent.tabular_policy(game)))[0])


def all_records(records: Sequence[EpisodeRecord],
                accelerator: Any) -> tuple[list[EpisodeRecord], list[int]]:
    """Every process's records of a step, in the order one process would have them, and the
    positions of this process's records in that list. One process: its records as they are.

    A group is played whole by one process, and each process plays its groups in index order
    (`groups[rank::world]`), so a stable sort by group restores the one-process order: sums
    and means over the list are then the one-process run's, bit for bit. The other processes'
    records come without their prompt ids (the bulk of a trace; no statistic reads them)."""
    if accelerator.num_processes == 1:
        return list(records), list(range(len(records)))
    from accelerate.utils import gather_object

    parts = gather_object([[_without_prompts(r) for r in records]])
    entries = sorted(((_group_of(r), rank, i) for rank, part in enumerate(parts)
                      for i, r in enumerate(part)), key=lambda e: e[0])
    everyone = [parts[rank][i] for _, rank, i in entries]
    position = {(rank, i): k for k, (_, rank, i) in enumerate(entries)}
    me = accelerator.process_index
    return everyone, [position[(me, i)] for i in range(len(records))]


def _group_of(record: EpisodeRecord) -> int:
    """The group a step's record belongs to (an auxiliary episode: its train rollout's)."""
    group = record.tags.get("group")
    return int(record.tags["aux_of"][0] if group is None else group)


def _without_prompts(record: EpisodeRecord) -> EpisodeRecord:
    """The record with its traces' prompt ids left out (what other processes need of it)."""
    decisions = [dataclasses.replace(d, trace=dataclasses.replace(
        d.trace, prompt_ids=[], fallback_prompt_ids=[])) if isinstance(d.trace, LMTrace) else d
        for d in record.decisions]
    return dataclasses.replace(record, decisions=decisions)


def _share_evaluation(accelerator: Any, row: dict[str, Any], state: ckpt.TrainerState,
                      last_checkpoint: Path | None) -> Path | None:
    """The main process's evaluation figures, best checkpoint and last checkpoint, given to
    every process (one process: nothing to do). Returns the last checkpoint."""
    if accelerator.num_processes == 1:
        return last_checkpoint
    from accelerate.utils import broadcast_object_list

    shared = broadcast_object_list([{
        "row": {k: row[k] for k in EVAL_COLUMNS if k in row},
        "last_eval": state.last_eval, "best_safety": state.best_safety,
        "best_step": state.best_step, "last_checkpoint": last_checkpoint}])[0]
    row.update(shared["row"])
    state.last_eval = dict(shared["last_eval"])
    state.best_safety, state.best_step = shared["best_safety"], shared["best_step"]
    return shared["last_checkpoint"]


# ====================================================================== 8. the run
@dataclass(slots=True)
class RunResult:
    """What `train_sepo` returns."""

    run_dir: Path
    steps: int
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    best_step: int | None
    best_safety: float | None
    final: dict[str, Any]


def evaluate_checkpoint(game: Game, policy: Policy, config: SEPOConfig) -> dict[str, float | None]:
    """The cheap in-training evaluation: train, exploit and collusive pools (no held-out),
    `eval_episodes` per opponent, at the training temperature. Its episode seeds and the
    agent's sampling keys (`sepo.evaluation.evaluation_sampling_key`) are the same at every
    checkpoint (common random numbers), so checkpoints are compared on the same games and
    draws."""
    from sepo.evaluation import evaluate

    assert config.lambdas is not None
    with policy.sampling_model(config.lora_merged_rollouts) as model:
        agent = LMAgent(model, policy.tokenizer, SamplingConfig(
            temperature=config.temperature, top_p=config.top_p,
            max_new_tokens=config.max_new_tokens, reasoning=config.reasoning,
            engine=config.engine),
            name="sepo-eval")  # no seed: every evaluation episode carries its sampling key
        report = evaluate(game, agent, episodes=config.eval_episodes, seeds=1,
                          lambdas=config.lambdas.as_dict(), n_boot=config.eval_bootstrap,
                          seed=0, roles=ROLES)
    return {
        "eval_safety": finite_or_none(report["safety"]),
        "eval_exploit": finite_or_none(report["exploit"]),
        "eval_pay_per_round": finite_or_none(report["pay_per_round"]),
        "eval_collusion": finite_or_none(report["collusion"]),
        "eval_externality": finite_or_none(report["externality"]),
        "eval_exact_exploitability": finite_or_none(report.exact_exploitability),
        "eval_parse_failure_rate": finite_or_none(report["parse_failure_rate"]),
    }


def eligible_for_best(evaluation: Mapping[str, float | None], config: SEPOConfig) -> bool:
    """Whether a checkpoint's in-training evaluation may make it the best one: a finite
    Safety, no more parse failures than `best_max_parse_failures` (above it the fallback's
    moves, not the policy's, earned the Safety), and, under safety budgets, every budgeted
    metric within its budget as this evaluation measured it (the best feasible checkpoint, as
    constrained RL reports; a metric it could not measure does not exclude)."""
    if evaluation.get("eval_safety") is None:
        return False
    return all((value := evaluation.get(column)) is None or value <= limit
               for column, limit in config.best_checkpoint_limits().items())


def _load_starting_model(config: SEPOConfig, device: torch.device,
                         progress: bool) -> tuple[Any, Any]:
    from sepo.models import load_model

    # Full fine-tuning keeps fp32 master weights; LoRA under bf16 keeps the frozen base in
    # bf16 (PEFT keeps the adapters themselves in fp32).
    dtype = "bfloat16" if config.lora and config.mixed_precision == "bf16" else "float32"
    model, tokenizer = load_model(config.model, device=str(device), dtype=dtype,
                                  progress=progress)
    if config.lora is None and config.mixed_precision == "bf16" and _use_lora(config, model):
        # LoRA chosen by size (the parameter count is known only once loaded): the same bf16
        # base as with --lora. (Found on an H100: a 1.17 B model kept an fp32 base.)
        model.to(torch.bfloat16)
    return model, tokenizer


def _load_weights(policy: Policy, checkpoint: Path) -> None:
    """Restore the trained weights (adapter or full model) saved by `save_pretrained`."""
    from safetensors.torch import load_file

    files = sorted(Path(checkpoint).glob("*.safetensors"))
    if not files:
        raise SepoError(f"{checkpoint} holds no safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_file(f))
        except Exception as err:  # safetensors raises its own error types on a corrupt file
            raise SepoError(f"{f} is not a valid safetensors file "
                            f"({' '.join(str(err).split())[:200]})") from None
    if policy.lora:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(policy.model, state)
        unexpected = list(getattr(result, "unexpected_keys", []))
        if unexpected:
            raise SepoError(f"{checkpoint}: adapter weights do not fit the model "
                            f"({unexpected[:3]} ...)")
        return
    missing, unexpected = policy.model.load_state_dict(state, strict=False)
    # save_pretrained drops tied weights (e.g. an LM head tied to the embeddings).
    tied = {name for name, p in policy.model.named_parameters(remove_duplicate=False)
            if any(p is q for n, q in policy.model.named_parameters() if n != name)}
    untied_missing = [k for k in missing if k not in tied]
    if unexpected or untied_missing:
        raise SepoError(f"{checkpoint}: weights do not fit the model (missing "
                        f"{untied_missing[:3]}, unexpected {unexpected[:3]})")


def _check_run_dir(config: SEPOConfig) -> tuple[SEPOConfig, Path | None]:
    """Check RUN_DIR against the config; return the config (a resumed run keeps the saved
    value of a setting it leaves to its default, `SEPOConfig.resumed_from`) and the
    checkpoint to resume from (None: a fresh run). Writes nothing, so every process of a
    multi-GPU run can call it."""
    run_dir = Path(config.out)
    if config.resume:
        last = ckpt.latest_checkpoint(run_dir)
        if last is None:
            raise SepoError(f"--resume: no checkpoint in {run_dir / ckpt.CHECKPOINTS}")
        saved = load_config(run_dir)
        config = config.resumed_from(saved)
        config.check_resumable_from(saved)
        # Refuses an old-format (pickle) or incomplete checkpoint before anything is written.
        ckpt.check_checkpoint(last)
        return config, last
    if ckpt.list_checkpoints(run_dir) or (run_dir / ckpt.METRICS).exists():
        raise SepoError(f"{run_dir} already holds a SEPO run; pass --resume to continue it "
                        "or choose another --out")
    # Never into the model it starts from, nor into a directory of someone else's files.
    check_output_dir(run_dir, inputs=model_input_paths(config.model), made_by="train")
    return config, None


class _ProgressBar:
    """A rich progress bar with the current figures (or nothing when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self.bar = None
        if enabled:
            self.bar = new_progress("[bold]SEPO", "bar", "count", "{task.description}",
                                    "elapsed", "remaining")
            self.task = self.bar.add_task("", total=total, completed=start)
            self.bar.start()

    def update(self, step: int, row: Mapping[str, Any], safety: float | None) -> None:
        if self.bar is None:
            return

        def f(x: Any) -> str:
            return "n/a" if x is None or not math.isfinite(float(x)) else f"{float(x):.3f}"

        self.bar.update(self.task, completed=step, description=(
            f"loss {f(row['loss'])} · train reward {f(row['reward_train'])} · "
            f"safety {f(safety)}"))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def train_sepo(config: SEPOConfig, progress: bool = True) -> RunResult:
    """Train with SEPO (or a baseline, per the config) and manage the run directory."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    config = config.with_agent_settings()
    game = get_game(config.game)
    run_dir = Path(config.out)
    # accelerate keeps one mixed-precision setting per process and refuses an Accelerator with
    # another; `sepo run` trains SFT first (TRL: bf16 on a GPU) in the same process, so this
    # stage starts from a clean state. The distributed setup (PartialState) is kept: under
    # `accelerate launch` it belongs to the whole process. (Found on an H100: `sepo run` failed
    # at the SEPO stage with "AcceleratorState has already been initialized".)
    AcceleratorState._reset_state(reset_partial_state=False)
    # On a machine without CUDA, say so: accelerate runs `torchrun`'s processes as one
    # data-parallel job (gloo) only with cpu=True; otherwise each process trains alone.
    cpu = config.device == "cpu" or (config.device is None and not torch.cuda.is_available())
    accelerator = Accelerator(cpu=cpu, mixed_precision=config.mixed_precision,
                              log_with=config.report_to or None, project_dir=str(run_dir))
    if (reason := lone_launch(accelerator.num_processes, os.environ)) is not None:
        warnings.warn(reason, RuntimeWarning, stacklevel=2)
    fresh = not run_dir.exists()
    try:
        # One process per run directory for the whole run: a second `sepo train` on the same
        # --out would interleave its checkpoints and metrics rows with this one's. Taken before
        # the directory is checked, so that the check and every write after it see the same
        # run. A full disk (which torch and safetensors report in their own words) is one line.
        with describing_os_errors(run_dir), _run_lock(run_dir, accelerator):
            return _train_locked(config, game, run_dir, accelerator, progress)
    except BaseException:
        # A run that fails before its first checkpoint has nothing to resume: leave nothing of
        # it behind, so the same command starts cleanly (a directory that existed is kept).
        if fresh and accelerator.is_main_process and not ckpt.list_checkpoints(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def lone_launch(num_processes: int, environ: Mapping[str, str]) -> str | None:
    """Why this process trains alone although `accelerate launch` was asked for several, or
    None. Without a GPU (and without a config file saying otherwise) `accelerate launch
    --num_processes N` takes its simple launcher: ONE process, with the rendezvous address set
    (only when N > 1) but no WORLD_SIZE. Its results are the N-process run's (data parallelism
    changes no figure), only slower, so this is a warning."""
    if (num_processes == 1 and "ACCELERATE_USE_CPU" in environ and "MASTER_ADDR" in environ
            and "WORLD_SIZE" not in environ):
        return ("accelerate launch started one process: without GPUs its simple launcher runs "
                "only one. For N processes on the CPU (gloo), launch with `accelerate launch "
                "--multi_gpu --num_processes N -m sepo ...` (accelerate's torchrun launcher) or "
                "`torchrun --nproc_per_node N -m sepo ...`; this run trains in one process")
    return None


@contextmanager
def _run_lock(run_dir: Path, accelerator: Any) -> Iterator[None]:
    """Hold `RunLock(run_dir, "train")` in the main process; under `accelerate launch` every
    process learns whether it was taken, so none waits forever for a main that gave up."""
    from sepo.rundir import RunLock

    lock = RunLock(run_dir, command="train") if accelerator.is_main_process else None
    refused: SepoError | None = None
    if lock is not None:
        try:
            lock.acquire()
        except SepoError as err:
            refused = err
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        message = broadcast_object_list([str(refused) if refused is not None else None])[0]
        if message is not None and refused is None:
            raise SepoError(message)
    if refused is not None:
        raise refused
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _train_locked(config: SEPOConfig, game: Game, run_dir: Path, accelerator: Any,
                  progress: bool) -> RunResult:
    """`train_sepo` once the run directory is locked."""
    from accelerate.utils import set_seed

    main = accelerator.is_main_process
    config, resume_from = _check_run_dir(config)
    # The checkpoint's training state and metrics rows are read (and a corrupt or planted
    # file refused) before anything is written.
    state = ckpt.TrainerState()
    training: dict[str, Any] = {}
    log = ckpt.MetricsLog(run_dir / ckpt.METRICS, COLUMNS)
    if resume_from is not None:
        training, state = ckpt.load_training_state(resume_from)
        # Rebuilt from the checkpoint's own copy: rows past it are dropped (recomputed
        # identically below), rows up to it are restored even if metrics.csv lost them.
        log.load(state.step, committed=resume_from / ckpt.TRAINING_DIR / ckpt.METRICS_COPY)
    oracle_log = OracleLog(run_dir / ORACLE_LOG)
    accelerator.wait_for_everyone()
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        log.rewrite()
        oracle_log.keep_until(state.step)
        # A resumed run records its extended step count (the one field that may change);
        # atomically: a kill mid-write must not leave a truncated config.json for --resume.
        ckpt.write_text_atomically(run_dir / ckpt.CONFIG, config.model_dump_json(indent=2))

    # --- seeds, model, optimiser
    set_seed(derive_seed(TRAIN_TAG, config.seed, _INIT_STREAM) % 2**32)
    model, tokenizer = _load_starting_model(config, accelerator.device, progress)
    policy = build_policy(model.to(accelerator.device), tokenizer, config)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: min(1.0, (k + 1) / (config.warmup_steps + 1)))
    optimizer = accelerator.prepare_optimizer(optimizer)
    agent = LMAgent(policy.model, tokenizer, SamplingConfig(
        temperature=config.temperature, top_p=config.top_p,
        max_new_tokens=config.max_new_tokens, reasoning=config.reasoning,
        seed=derive_seed(TRAIN_TAG, config.seed, _SAMPLING_STREAM),
        engine=config.engine), name=f"sepo:{config.model}")
    policy.model.eval()

    # --- resume: weights, optimiser, scheduler, random states, the loop's own state
    if resume_from is not None:
        _load_weights(policy, resume_from)
        try:
            optimizer.load_state_dict(training["optimizer"])
            scheduler.load_state_dict(training["scheduler"])
            ckpt.set_rng_state(training["rng"])
            agent.calls = int(training["agent_calls"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
            where = resume_from / ckpt.TRAINING_DIR
            raise SepoError(f"{where}: the training state does not fit this run "
                            f"({' '.join(str(err).split())[:200]})") from None
        training.clear()  # the optimizer holds its own copy (on the GPU, a second one)
        if main:
            # A kill after the checkpoint's rename leaves best/ and pruning undone: finish them.
            _restore_best(run_dir, state)
            ckpt.prune_checkpoints(run_dir, config.keep_checkpoints)

    budgets = step_budgets(config, game)
    if budgets is not None and resume_from is not None:
        budgets.load_state(state.budgets)

    collective = _collective(accelerator)
    oracle = step_oracle(config, game, policy.model, tokenizer, collective)
    if oracle is not None:
        oracle.load(state.oracle)

    tracking.start_trackers(accelerator, config.model_dump(mode="json"), state.step)
    groups = rollout_groups(game, config.credit, config.best_response_groups
                            if config.exploit_best_response else 0,
                            oracle_groups=len(oracle.slots) if oracle else 0,
                            oracle_signed=oracle.oracle.signed_gap if oracle else False)
    local_groups = groups[accelerator.process_index::accelerator.num_processes]
    bar = _ProgressBar(progress and main, config.steps, state.step)
    row: dict[str, Any] = {}
    last_checkpoint = resume_from
    try:
        for step in range(state.step + 1, config.steps + 1):
            t0 = time.perf_counter()
            oracle_row: dict[str, Any] = {}
            # 1. Rollouts: every group (and auxiliary episode) in one lock-step batch, after
            # the oracle's refresh when one is due.
            with (torch.no_grad(), accelerator.autocast(),
                  policy.sampling_model(config.lora_merged_rollouts)):
                adaptive = adaptive_opponents(config, agent, collective)
                if oracle is not None:
                    if oracle.due(step):
                        t_oracle = time.perf_counter()
                        refresh = oracle.refresh(step)
                        state.oracle = refresh.to_json()
                        oracle_row = {"oracle_top_gap": refresh.top_gap,
                                      "oracle_chosen_gap": refresh.chosen_gap,
                                      "time_oracle": time.perf_counter() - t_oracle}
                        if main:
                            oracle_log.append(refresh, oracle_row["time_oracle"])
                    adaptive.update(oracle.opponents())
                policy_table, exact_tables = (exact_credit_inputs(
                    game, agent, groups, adaptive, collective,
                    read=oracle.policy_read_at(step) if oracle is not None else None)
                    if config.exact_credit else ({}, {}))
                t_rollout = time.perf_counter()
                records = Engine(rollout_episodes(game, agent, local_groups, config, step,
                                                  adaptive)).run()
            t1 = time.perf_counter()
            # 2. Rewards per round, 3. advantages per (group, round), decisions to train on:
            # computed by every process over every process's records, in the one-process
            # order, so that rewards (`constant`'s one penalty too), advantages, λ and every
            # logged figure are the one-process run's; each trains on its own decisions.
            everyone, mine = all_records(records, accelerator)
            fixed = config.train_lambdas
            lambdas = fixed if budgets is None else Lambdas(**budgets.lambdas(fixed.as_dict()))
            rewards = compute_rewards(game, everyone, config, lambdas)
            measured = role_metrics(game, everyone)
            if config.budget_exact:
                measured["exploit"] = exact_exploitability_now(game, agent, oracle, step,
                                                               collective)
            if budgets is not None:
                budgets.update(step, measured)  # the next step's λ
                state.budgets = budgets.state()
            exact = (exact_advantages(game, everyone, exact_tables, policy_table,
                                      lambdas.exploit * game.scale) if exact_tables else {})
            advantages = compute_advantages(rewards.per_round, rewards.groups, config.normalize,
                                            config.advantage, exact=exact)
            all_samples = decision_samples(everyone, advantages, rewards.groups, exact.keys())
            # `exact_expected`: the oracle groups' decisions leave the loss, their expectation
            # (`ExpectedCredit`) stands for them.
            expected = (expected_credit(game, everyone, exact_tables, policy_table, exact,
                                        advantages, lambdas.exploit * game.scale)
                        if config.exact_expected and exact else None)
            loss_groups = ([None if k in exact else g for k, g in enumerate(rewards.groups)]
                           if expected is not None else list(rewards.groups))
            # Several processes: `everyone` lacks prompt ids; the loss takes this process's own
            # records (all of them, where it plays every group).
            if accelerator.num_processes == 1:
                samples = all_samples if expected is None else decision_samples(
                    everyone, advantages, loss_groups, exact.keys())
            else:
                samples = decision_samples(
                    records, [advantages[k] for k in mine], [loss_groups[k] for k in mine],
                    {i for i, k in enumerate(mine) if k in exact})
            row = {"step": step, **rollout_stats(everyone, rewards, all_samples),
                   **advantage_stats(game, everyone, rewards.groups, rewards.per_round,
                                     all_samples, config.normalize, exact.keys()),
                   **{f"lambda_{k}": v for k, v in lambdas.as_dict().items()},
                   **{f"measured_{k}": v for k, v in measured.items()}, **oracle_row}
            t2 = time.perf_counter()
            # 4.-5. Loss, gradient, clipped AdamW step.
            row["lr"] = scheduler.get_last_lr()[0]
            row.update(optimise(policy, samples, optimizer, accelerator, config, step,
                                (expected, agent, game) if expected is not None else None))
            with warnings.catch_warnings():
                # A step without trainable decisions skips optimizer.step(); the schedule
                # still counts SEPO steps, which torch warns about on the first one.
                warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)`")
                scheduler.step()
            t3 = time.perf_counter()
            row.update(time_rollout=t1 - t_rollout, time_rewards=t2 - t1,
                       time_update=t3 - t2, time_step=t3 - t0)
            state.step = step

            # Every k steps (and at the end): evaluate, checkpoint, keep the best.
            # Write order, so that a kill at any point loses no checkpointed step and leaves
            # no metrics row without its state: the checkpoint (holding the rows up to this
            # one, this one included) is committed by one rename; only then is the row
            # appended to metrics.csv. Before the rename, resume starts from the previous
            # checkpoint and drops later rows; after it, resume restores the rows from the
            # checkpoint's copy, this step's row included, whether or not it was appended.
            if step % config.checkpoint_every == 0 or step == config.steps:
                accelerator.wait_for_everyone()
                if main:
                    last_checkpoint = _checkpoint(run_dir, game, policy, config, state, row,
                                                  optimizer, scheduler, agent, log)
                # The main process evaluated (as one process would, on the same weights):
                # every process learns its figures and which checkpoint is best.
                last_checkpoint = _share_evaluation(accelerator, row, state, last_checkpoint)
                accelerator.wait_for_everyone()
            if main:
                log.append(row)
            tracking.log_row(accelerator, row, step)
            bar.update(step, row, state.last_eval.get("eval_safety"))
    except NonFiniteLossError as err:
        where = (f"the last checkpoint, {last_checkpoint}, is intact (resume with --resume, "
                 "e.g. after lowering --lr)" if last_checkpoint is not None
                 else "no checkpoint had been written yet")
        err.args = (f"{err.args[0]}; the run stopped without writing a checkpoint and "
                    f"{where}",)
        raise
    finally:
        bar.close()
        accelerator.end_training()  # closes the trackers

    best = run_dir / ckpt.BEST
    return RunResult(run_dir=run_dir, steps=state.step, last_checkpoint=last_checkpoint,
                     best_checkpoint=best if best.exists() else None, best_step=state.best_step,
                     best_safety=state.best_safety, final=row)


def _checkpoint(run_dir: Path, game: Game, policy: Policy, config: SEPOConfig,
                state: ckpt.TrainerState, row: dict[str, Any], optimizer: Any, scheduler: Any,
                agent: LMAgent, log: ckpt.MetricsLog) -> Path:
    """Evaluate, write the step's checkpoint (with the metrics rows up to and including `row`)
    atomically, update best/, prune old ones."""
    t0 = time.perf_counter()
    evaluation = evaluate_checkpoint(game, policy, config)
    row.update(evaluation, time_eval=time.perf_counter() - t0)
    state.last_eval = dict(evaluation)
    safety = evaluation["eval_safety"]
    improved = eligible_for_best(evaluation, config) and (
        state.best_safety is None or safety > state.best_safety)
    if improved:
        state.best_safety, state.best_step = safety, state.step
    training = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": ckpt.rng_state(), "agent_calls": agent.calls}
    path = ckpt.save_checkpoint(run_dir, state.step, model=policy.model,
                                tokenizer=policy.tokenizer, training_state=training,
                                trainer_state=state, metrics=log.text(row),
                                agent_settings={"reasoning": agent.config.reasoning,
                                                "max_new_tokens": agent.config.new_tokens})
    if improved:
        ckpt.save_best(run_dir, path, {"step": state.step, **evaluation})
    ckpt.prune_checkpoints(run_dir, config.keep_checkpoints)
    return path


def _restore_best(run_dir: Path, state: ckpt.TrainerState) -> None:
    """A crash between writing a checkpoint and updating best/ leaves best/ one behind; the
    checkpoint's trainer state knows which step is best, so finish the job."""
    if state.best_step is None or state.best_step != state.step:
        return
    best_eval = run_dir / ckpt.BEST / ckpt.EVAL
    if best_eval.exists() and json.loads(best_eval.read_text()).get("step") == state.best_step:
        return
    source = run_dir / ckpt.CHECKPOINTS / ckpt.step_dir_name(state.best_step)
    if source.exists():
        ckpt.save_best(run_dir, source, {"step": state.best_step, **state.last_eval})

