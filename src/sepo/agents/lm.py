"""The language-model agent: one batched generation per engine step, parsing, fallback, traces.

`LMAgent.decide` gets every live episode's decision of one engine step (any mix of games and
seats), renders each as a chat prompt (`sepo.prompts.chat_messages`, the tokenizer's chat
template with the generation prompt), and samples all completions in ONE batched generation,
left-padded, on the engine `SamplingConfig.engine` selects (`sepo.agents.engines`): the fast
engine's decoding loop (`sepo.agents.fast`: a KV cache, finished rows leaving the batch), or
`transformers`' `generate` (`sepo.agents.plain`). A sequence stops at its end-of-sequence
token, or as soon as its current last line is exactly one legal action in canonical form
(outside an open `<think>` block), or at `max_new_tokens`; generation ends when every sequence
has stopped. Each completion is parsed with its game's parser; the ones that name no legal
action go, together, through the constrained fallback (`sepo.agents.fallback`). Every decision
carries an `LMTrace` with the token ids and log-probabilities the trainer needs.

Randomness: one stream per call, seeded from (`SamplingConfig.seed`, the call counter), for the
whole batch; except that a decision of an episode with a sampling key (`SAMPLING_KEY`, every
training rollout and evaluation episode) draws its tokens and fallback from a stream of (key,
decision index) alone, so that what it plays does not depend on the batch, the engine step or
the process.

Log-probability convention (the trainer must recompute exactly this, with gradients):
for a trace with prompt ids P, completion ids C = c_1..c_n and temperature T,

    logprobs[k] = log_softmax(logits(P + c_1..c_{k-1})[-1] / T)[c_k]

with the logits of the model in eval mode (no dropout), over the full vocabulary: top-p
truncation is NOT applied (it changes which tokens can be drawn, not the policy being
optimised; this is TRL's GRPO convention too). T is the sampling temperature, and 1 under greedy
decoding (`temperature=0`). C holds the generated tokens up to and including the EOS token, or up
to the last token of the action line where generation stopped early; never padding.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sepo.agents.chat import (
    ContinuationIds,
    Prompt,
    accepts_logits_to_keep,
    batch_decode,
    build_prompt,
    build_prompts,
    eos_token_ids,
    left_pad,
    model_device,
    pad_token_id,
    think_is_open,
    visible_answer,
)
from sepo.agents.decoding import ENGINES, Engine, row_generators
from sepo.agents.engines import buffer_pool, resolve, sample
from sepo.agents.fallback import ActionTrie, ConstrainedChoice, constrained_decode
from sepo.engine import SAMPLING_KEY, Decision, DecisionRequest
from sepo.errors import SepoError, UnknownNameError
from sepo.games.base import (
    AGENT,
    Action,
    ExactSolvable,
    Game,
    GameState,
    TabularPolicy,
    capability,
    derive_seed,
)
from sepo.limits import MAX_NEW_TOKENS
from sepo.prompts import ELICITATION, chat_messages

#: Default `max_new_tokens`: one short sentence of reasoning and the action line, or the action
#: alone (a `[4, 4, 4]` vector is up to ~10 tokens in a general-purpose tokenizer). The SFT
#: reason sentences run to 91 tokens in `tiny`'s tokenizer (bargaining; IPD 66, Kuhn 71), and
#: a cut-off sentence has no action line, so the budget covers them. Generation stops as soon
#: as every sequence holds an action, so a generous cap costs little. Thinking models
#: (`<think>` blocks) need far more: set it explicitly for them.
MAX_NEW_TOKENS_REASONING = 96
MAX_NEW_TOKENS_ACTION_ONLY = 16

#: Written beside the weights of every checkpoint sepo saves (SFT and SEPO): how the model was
#: trained to answer, so `load_lm_agent` plays it the same way unless told otherwise.
AGENT_SETTINGS_FILE = "sepo_agent.json"

# Seed streams of one `decide` call (with the call counter): sampling, then the fallback.
_SAMPLING_STREAM, _FALLBACK_STREAM = 0, 1


@dataclass(frozen=True, slots=True)
class SamplingConfig:
    """How the agent samples its answers.

    - `temperature`: softmax temperature; 0 means greedy decoding (argmax, also in the
      fallback). Default 0.8 (the paper's rollouts).
    - `top_p`: nucleus sampling mass (1.0: off). Not part of the log-probability convention.
    - `max_new_tokens`: cap on generated tokens; None picks 96 with reasoning, 16 without.
    - `reasoning`: ask for one short sentence of reasoning before the action line.
    - `seed`: sampling seed; with the agent's call counter it seeds every call, so the same
      seed and the same sequence of calls reproduce the same play on CPU (decisions of keyed
      episodes draw from their key instead; module docstring).
    - `engine`: what samples, `"fast"` or `"generate"`. `"fast"` (the default): sepo's own
      batched decoding loop on `transformers` internals (`sepo.agents.fast`), several times
      faster on the CPU; where it cannot run the model, the agent warns and uses `"generate"`.
      `"generate"`: `transformers`' public `generate` only (`sepo.agents.plain`). Greedy play
      is the same on both; sampled play follows the same distribution with other draws.
    """

    temperature: float = 0.8
    top_p: float = 1.0
    max_new_tokens: int | None = None
    reasoning: bool = True
    seed: int = 0
    engine: Engine = "fast"

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, int | float) and math.isfinite(self.temperature)
                and self.temperature >= 0):
            raise SepoError(f"sampling temperature must be a finite number ≥ 0 (0 = greedy), "
                            f"got {self.temperature!r}")
        if not (isinstance(self.top_p, int | float) and 0 < self.top_p <= 1):
            raise SepoError(f"sampling top_p must be in (0, 1], got {self.top_p!r}")
        # bool is an int in Python; True tokens is a slip, not a budget.
        if self.max_new_tokens is not None and not (
                isinstance(self.max_new_tokens, int) and not isinstance(self.max_new_tokens, bool)
                and 1 <= self.max_new_tokens <= MAX_NEW_TOKENS):
            raise SepoError(f"max_new_tokens must be an integer from 1 to {MAX_NEW_TOKENS} or "
                            f"None (each row holds a key/value cache of that many tokens), "
                            f"got {self.max_new_tokens!r}")
        if not isinstance(self.seed, int):
            raise SepoError(f"sampling seed must be an integer, got {self.seed!r}")
        if self.engine not in ENGINES:
            raise UnknownNameError("sampling engine", self.engine, ENGINES)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def logprob_temperature(self) -> float:
        """The T of the log-probability convention: the temperature, or 1 when greedy."""
        return 1.0 if self.greedy else float(self.temperature)

    @property
    def new_tokens(self) -> int:
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        return MAX_NEW_TOKENS_REASONING if self.reasoning else MAX_NEW_TOKENS_ACTION_ONLY


@dataclass(slots=True)
class LMTrace:
    """What the trainer needs of one decision (see the module docstring for the convention).

    `prompt_ids` + `completion_ids` are the policy's own sample and `logprobs` its per-token
    log-probabilities under log_softmax(logits / `temperature`): a valid on-policy sample even
    when `fallback` is True.

    `fallback` is True when the completion named no legal action and the constrained fallback
    chose the action played; its prompt and tokens are in `fallback_prompt_ids`,
    `fallback_ids` and `fallback_logprobs` (unconstrained log-probabilities of tokens drawn from
    the *constrained* distribution, so not usable in a PPO ratio). Recommended use: mask
    fallback decisions out of the policy loss (the action's consequences were produced by the
    fallback, in part by a distribution the ratio does not describe); the completion's tokens
    stay a correct sample for anyone who treats the fallback as part of the environment.
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    temperature: float
    fallback: bool = False
    fallback_prompt_ids: list[int] = field(default_factory=list)
    fallback_ids: list[int] = field(default_factory=list)
    fallback_logprobs: list[float] = field(default_factory=list)

    @property
    def logprob(self) -> float:
        """Log-probability of the whole completion (sum over its tokens)."""
        return float(sum(self.logprobs))


class ActionLineWatcher:
    """Ends a row's completion at its EOS token, or as soon as its current last line is exactly
    one legal action in canonical form (outside an open `<think>` block)."""

    def __init__(self, tokenizer: Any, prompts: Sequence[Prompt],
                 action_lines: Sequence[frozenset[str]], eos_ids: Sequence[int]) -> None:
        self.tokenizer = tokenizer
        self.think_open_at_start = [p.think_open for p in prompts]
        self.action_lines = action_lines
        self.eos = frozenset(int(e) for e in eos_ids)
        self.tokens: list[list[int]] = [[] for _ in prompts]
        self.line_start = [0] * len(prompts)  # index of the token holding the last newline
        self._has_newline: dict[int, bool] = {}

    def _newline(self, token: int) -> bool:
        known = self._has_newline.get(token)
        if known is None:
            known = "\n" in self.tokenizer.decode([token])
            self._has_newline[token] = known
        return known

    def update(self, rows: Sequence[int], tokens: Sequence[int]) -> list[bool]:
        done = [False] * len(rows)
        check: list[int] = []
        for k, (row, token) in enumerate(zip(rows, tokens, strict=True)):
            self.tokens[row].append(token)
            if token in self.eos:
                done[k] = True
                continue
            if self._newline(token):
                self.line_start[row] = len(self.tokens[row]) - 1
            check.append(k)
        if check:
            tails = batch_decode(self.tokenizer, [self.tokens[rows[k]][self.line_start[rows[k]]:]
                                                  for k in check])
            for k, tail in zip(check, tails, strict=True):
                row = rows[k]
                line = tail[tail.rfind("\n") + 1:].strip()
                if line in self.action_lines[row] and not think_is_open(
                        batch_decode(self.tokenizer, [self.tokens[row]])[0],
                        self.think_open_at_start[row]):
                    done[k] = True
        return done


class LMAgent:
    """A causal LM as a `Player`: one batched generation per engine step for all its decisions.

    Works from either seat (prompts are rendered from the requesting seat's view) and for any
    mix of games in one call. Counts its decisions and parse failures (`parse_failure_rate`).
    """

    def __init__(self, model: Any, tokenizer: Any, config: SamplingConfig | None = None, *,
                 name: str = "lm") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or SamplingConfig()
        self.name = name
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.pad_id = pad_token_id(tokenizer, self.eos_ids)
        self.continuations = ContinuationIds(tokenizer)
        #: The engine that samples: `config.engine`, or "generate" where the fast engine cannot
        #: run this model (`sepo.agents.engines.resolve`, which warns).
        self.engine: Engine = resolve(self.config.engine, model)
        #: Cache buffers reused from one engine step to the next (`engines.buffer_pool`).
        self.buffers = buffer_pool(self.engine, model)
        self.calls = 0
        self.decisions = 0
        self.parse_failures = 0

    def __repr__(self) -> str:
        return f"LMAgent({self.name!r}, {self.config})"

    @property
    def parse_failure_rate(self) -> float:
        """Share of this agent's decisions whose text named no legal action."""
        return self.parse_failures / self.decisions if self.decisions else 0.0

    def reset_counts(self) -> None:
        self.decisions = self.parse_failures = 0

    # ------------------------------------------------------------------ playing
    def decide(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
        """One decision per request, from one batched generation (plus, for the completions
        that named no legal action, one batched constrained fallback)."""
        if not requests:
            return []
        call = self.calls
        self.calls += 1
        cfg = self.config
        games = [r.game for r in requests]
        states = [r.state for r in requests]
        seats = [r.seat for r in requests]
        legal = [g.legal_actions(s, seat) for g, s, seat in zip(games, states, seats, strict=True)]
        canonical = [[g.format_action(a) for a in acts] for g, acts in zip(games, legal,
                                                                             strict=True)]
        messages = [chat_messages(g, s, seat, reasoning=cfg.reasoning)
                    for g, s, seat in zip(games, states, seats, strict=True)]
        prompts = build_prompts(self.tokenizer, messages)
        keys = request_keys(requests)

        was_training = getattr(self.model, "training", False)
        self.model.eval()  # no dropout: the log-probs must be the policy's own
        try:
            completions = self._generate(prompts, [frozenset(c) for c in canonical],
                                         derive_seed(cfg.seed, call, _SAMPLING_STREAM),
                                         row_seeds(keys, cfg.seed, call, _SAMPLING_STREAM))
            decisions: list[Decision] = []
            failed: list[int] = []
            for i, (ids, logprobs) in enumerate(completions):
                text = self._decode(ids)
                action = self._parse(games[i], visible_answer(text, prompts[i].think_open),
                                     states[i], seats[i], legal[i])
                trace = LMTrace(prompt_ids=list(prompts[i].ids), completion_ids=ids,
                                logprobs=logprobs, temperature=cfg.logprob_temperature)
                decisions.append(Decision(action=action, text=text, trace=trace))
                if action is None:
                    failed.append(i)
            if failed:
                seeds = row_seeds(keys, cfg.seed, call, _FALLBACK_STREAM)
                self._apply_fallback(failed, decisions, messages, legal, canonical,
                                     derive_seed(cfg.seed, call, _FALLBACK_STREAM),
                                     None if seeds is None else [seeds[i] for i in failed])
        finally:
            self.model.train(was_training)
        self.decisions += len(requests)
        self.parse_failures += len(failed)
        return decisions

    def _generate(self, prompts: Sequence[Prompt], action_lines: Sequence[frozenset[str]],
                  seed: int, seeds: Sequence[int] | None = None,
                  ) -> list[tuple[list[int], list[float]]]:
        cfg = self.config
        watcher = ActionLineWatcher(self.tokenizer, prompts, action_lines, self.eos_ids)
        return sample(self.engine, self.model, [p.ids for p in prompts],
                      temperature=cfg.temperature, top_p=cfg.top_p,
                      max_new_tokens=cfg.new_tokens, pad_id=self.pad_id, eos_ids=self.eos_ids,
                      watcher=watcher, seed=seed, row_seeds=seeds, pool=self.buffers)

    def _decode(self, ids: Sequence[int]) -> str:
        """The completion's text; a final EOS is not text (other special tokens are kept, so
        a `<think>` special token still marks the reasoning block)."""
        ids = list(ids)
        if ids and ids[-1] in self.eos_ids:
            ids.pop()
        return str(self.tokenizer.decode(ids, skip_special_tokens=False))

    @staticmethod
    def _parse(game: Game, answer: str, state: GameState, seat: int,
               legal: Sequence[Action]) -> Action | None:
        """The game's parser, guarded: whatever the text, a legal action or None."""
        try:
            action = game.parse(answer, state, seat)
        except Exception as exc:  # a parser bug must not end a run; the fallback decides
            warnings.warn(f"{game.name} parser raised {exc!r} on {answer[:80]!r}; "
                          "using the constrained fallback", RuntimeWarning, stacklevel=2)
            return None
        return action if action is not None and action in legal else None

    def fallback(self, requests: Sequence[DecisionRequest],
                 answers: Sequence[str]) -> list[ConstrainedChoice]:
        """The constrained fallback on its own: a legal action for each request, given the
        answer text the model is taken to have written (any text at all). One batched call;
        counts as one call of the agent for seeding."""
        if len(requests) != len(answers):
            raise ValueError(f"{len(requests)} requests but {len(answers)} answers")
        if not requests:
            return []
        call = self.calls
        self.calls += 1
        legal = [r.game.legal_actions(r.state, r.seat) for r in requests]
        canonical = [[r.game.format_action(a) for a in acts]
                     for r, acts in zip(requests, legal, strict=True)]
        messages = [chat_messages(r.game, r.state, r.seat, reasoning=self.config.reasoning)
                    for r in requests]
        _, choices = self._constrained(messages, answers, legal, canonical,
                                       derive_seed(self.config.seed, call, _FALLBACK_STREAM))
        return choices

    def _constrained(self, messages: Sequence[list[dict[str, str]]], answers: Sequence[str],
                     legal: Sequence[list[Action]], canonical: Sequence[list[str]],
                     seed: int, seeds: Sequence[int] | None = None,
                     ) -> tuple[list[Prompt], list[ConstrainedChoice]]:
        """Fallback prompts (conversation, failed answer, elicitation turn) and the actions
        constrained decoding picks on them, in one batch (`seeds`: one per row, each row's
        own stream; else one stream from `seed`)."""
        prompts = build_prompts(self.tokenizer, [
            fallback_messages(m, answer) for m, answer in zip(messages, answers, strict=True)])
        tries = [ActionTrie.for_decision(self.continuations, p, texts, acts)
                 for p, texts, acts in zip(prompts, canonical, legal, strict=True)]
        was_training = getattr(self.model, "training", False)
        self.model.eval()
        try:
            choices = constrained_decode(
                self.model, [p.ids for p in prompts], tries,
                temperature=float(self.config.temperature), end_ids=self.eos_ids,
                pad_id=self.pad_id,
                generator=(torch.Generator().manual_seed(seed) if seeds is None
                           else row_generators(seeds, torch.device("cpu"))),
                engine=self.engine)
        finally:
            self.model.train(was_training)
        for choice, acts in zip(choices, legal, strict=True):
            # An action set the tokenizer cannot write at all leaves an empty trie: the first
            # legal action keeps the run going (still counted as a parse failure).
            if choice.action is None:
                choice.action = acts[0]
        return prompts, choices

    def _apply_fallback(self, failed: Sequence[int], decisions: list[Decision],
                        messages: Sequence[list[dict[str, str]]], legal: Sequence[list[Action]],
                        canonical: Sequence[list[str]], seed: int,
                        seeds: Sequence[int] | None = None) -> None:
        """Replace the failed decisions' actions with constrained-fallback ones, in place
        (`seeds`: one per failed decision, see `_constrained`)."""
        prompts, choices = self._constrained(
            [messages[i] for i in failed], [decisions[i].text or "" for i in failed],
            [legal[i] for i in failed], [canonical[i] for i in failed], seed, seeds)
        for i, prompt, choice in zip(failed, prompts, choices, strict=True):
            decision = decisions[i]
            decision.action = choice.action
            decision.parse_failed = True
            trace: LMTrace = decision.trace
            trace.fallback = True
            trace.fallback_prompt_ids = list(prompt.ids)
            trace.fallback_ids = choice.token_ids
            trace.fallback_logprobs = choice.logprobs

    # ------------------------------------------------------------------ tabular policy
    @torch.no_grad()
    def tabular_policy(self, game: Game) -> TabularPolicy:
        """The agent's tabular policy in a game with the `ExactSolvable` capability: at each
        information set, the probability of its scored action (Kuhn: P(aggressive move) at 12).

        Read in ONE batched forward pass over prompt + action text for both legal actions of
        every information set (`ExactSolvable.policy_decisions`: a state and the seat that
        acts there). Prompts are action-only (`reasoning=False`) whatever the agent's setting:
        a policy that first reasons freely is a distribution over reasoning texts, not
        computable in one pass. Each action's probability is that of its canonical text's
        tokens under log_softmax(logits / T) at the agent's temperature (top-p ignored),
        normalised over the two legal actions; under greedy decoding the more probable text
        gets probability 1 (0.5 each on an exact tie).
        """
        keys, log_odds = self.policy_log_odds(game)
        policy: TabularPolicy = {}
        for key, diff in zip(keys, log_odds.tolist(), strict=True):
            if self.config.greedy:
                policy[key] = 1.0 if diff > 0 else 0.0 if diff < 0 else 0.5
            else:
                policy[key] = 1.0 / (1.0 + math.exp(-diff)) if diff > -700 else 0.0
        return policy

    def policy_log_odds(self, game: Game, *, grad: bool = False) -> tuple[list[str], torch.Tensor]:
        """Per information set of `tabular_policy` (its keys, in order): log π(scored action)
        − log π(other action) at the agent's temperature, shape (len(keys),). With `grad` the
        forward pass keeps the graph (the model's train/eval mode is left as it is), so that a
        loss on the table reaches the weights (`exact_credit="expected"`)."""
        solver = capability(game, ExactSolvable)
        if solver is None:
            raise SepoError(f"{game.name} has no tabular policy to read: it is not "
                            "ExactSolvable")
        decisions = solver.policy_decisions()
        rows: list[tuple[str, bool]] = []  # (info set, scored action?) of each sequence
        sequences: list[list[int]] = []
        action_lengths: list[int] = []
        for decision in decisions:
            prompt = build_prompt(self.tokenizer, chat_messages(game, decision.state,
                                                                decision.seat, reasoning=False))
            actions = game.legal_actions(decision.state, decision.seat)
            if len(actions) != 2 or decision.action not in actions:
                raise SepoError(f"{game.name} information set {decision.key!r}: a tabular "
                                f"policy needs two legal actions, one of them "
                                f"{decision.action!r}; got {actions!r}")
            texts = [game.format_action(a) for a in actions]
            for action, ids in zip(actions, self.continuations(prompt, texts), strict=True):
                rows.append((decision.key, action == decision.action))
                sequences.append(prompt.ids + ids)
                action_lengths.append(len(ids))

        device = model_device(self.model)
        input_ids, mask, positions = left_pad(sequences, self.pad_id, device)
        # Left padding ends every sequence in the last column, so the logits that predict the
        # action tokens are all in the last (longest action + 1) positions.
        window = max(action_lengths) + 1
        keep = {"logits_to_keep": window} if accepts_logits_to_keep(self.model) else {}
        was_training = getattr(self.model, "training", False)
        if not grad:
            self.model.eval()
        try:
            with torch.enable_grad() if grad else torch.no_grad():
                logits = self.model(input_ids=input_ids, attention_mask=mask,
                                    position_ids=positions, **keep).logits[:, -window:, :]
                logprobs = torch.log_softmax(logits.float() / self.config.logprob_temperature,
                                             dim=-1)
                targets = input_ids[:, -window + 1:] if window > 1 else input_ids[:, :0]
                token_lp = logprobs[:, :-1, :].gather(2, targets[..., None]).squeeze(-1)
                width = token_lp.shape[1]
                sequence_lp = torch.stack([token_lp[r, width - n:].sum()
                                           for r, n in enumerate(action_lengths)]).double()
        finally:
            self.model.train(was_training)
        scored = {key: i for i, (key, is_scored) in enumerate(rows) if is_scored}
        other = {key: i for i, (key, is_scored) in enumerate(rows) if not is_scored}
        keys = [decision.key for decision in decisions]
        log_odds = (sequence_lp[[scored[k] for k in keys]]
                    - sequence_lp[[other[k] for k in keys]])
        return keys, log_odds


def request_keys(requests: Sequence[DecisionRequest]) -> list[tuple[int, int] | None]:
    """Each request's (sampling key, decision index): the episode's `SAMPLING_KEY` tag and how
    many agent decisions it has made so far; None where the episode has no key or the request
    is not the agent's seat (an episode counts the agent's decisions only)."""
    keys: list[tuple[int, int] | None] = []
    for r in requests:
        key = r.episode.tags.get(SAMPLING_KEY)
        keys.append(None if key is None or r.seat != AGENT
                    else (int(key), len(r.episode.decisions)))
    return keys


def row_seeds(keys: Sequence[tuple[int, int] | None], seed: int, call: int,
              stream: int) -> list[int] | None:
    """One seed per row of a call, for `stream` (sampling or the fallback): from the row's
    (key, decision index) where it has one, so that its draws depend on nothing else in the
    batch. None where no row has a key: the call keeps its one stream, seeded from (seed,
    call), exactly as before keys existed, so unkeyed play (`sepo play`) is unchanged. A row
    without a key in a keyed call gets (seed, call, its position): deterministic, though not
    batch-independent."""
    if all(k is None for k in keys):
        return None
    # i + 1: SeedSequence ignores trailing zeros, and row 0 would get the call's own seed.
    return [derive_seed(seed, call, stream, i + 1) if k is None else derive_seed(*k, stream)
            for i, k in enumerate(keys)]


#: The failed answer shown in the fallback's conversation is cut to its last characters: a
#: model's own answer is bounded by `max_new_tokens` anyway, and any text handed to
#: `LMAgent.fallback` must not overflow the context.
FALLBACK_ANSWER_CHARS = 2000


def fallback_messages(messages: Sequence[dict[str, str]], answer: str) -> list[dict[str, str]]:
    """The fallback's conversation: the decision's messages, the failed answer (its last
    `FALLBACK_ANSWER_CHARS` characters), the elicitation turn (`sepo.prompts.ELICITATION`)."""
    return [*messages, {"role": "assistant", "content": answer[-FALLBACK_ANSWER_CHARS:]},
            {"role": "user", "content": ELICITATION}]


def write_agent_settings(checkpoint: str | Path, *, reasoning: bool,
                         max_new_tokens: int | None) -> None:
    """Record beside a checkpoint's weights how its agent answers (`AGENT_SETTINGS_FILE`)."""
    settings = {"reasoning": bool(reasoning), "max_new_tokens": max_new_tokens}
    (Path(checkpoint) / AGENT_SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n",
                                                        encoding="utf-8")


def read_agent_settings(model: str | Path) -> dict[str, Any]:
    """The `AGENT_SETTINGS_FILE` of a local checkpoint; {} for a model name, an HF id or a
    directory without one."""
    path = Path(model) / AGENT_SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SepoError(f"{path}: not valid JSON ({e}); delete it to use the defaults") from None
    if not isinstance(settings, dict):
        raise SepoError(f"{path}: expected a JSON object, got {type(settings).__name__}")
    return settings


def load_lm_agent(model: str, *, temperature: float = 0.8, top_p: float = 1.0,
                  max_new_tokens: int | None = None, reasoning: bool | None = None,
                  seed: int = 0, engine: Engine = "fast", device: str | None = None,
                  dtype: str | None = None) -> LMAgent:
    """An `LMAgent` for a model name (`tiny`, `smollm2-135m`) or any HF causal-LM id or path.

    `reasoning` and `max_new_tokens` left as None come from the checkpoint's
    `AGENT_SETTINGS_FILE` (how SFT/SEPO trained it to answer), else the defaults (reasoning
    on; `MAX_NEW_TOKENS_REASONING` / `MAX_NEW_TOKENS_ACTION_ONLY`)."""
    from sepo.models import load_model

    settings = read_agent_settings(model)
    if reasoning is None:
        reasoning = bool(settings.get("reasoning", True))
    if max_new_tokens is None:
        max_new_tokens = settings.get("max_new_tokens")
    config = SamplingConfig(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                            reasoning=reasoning, seed=seed, engine=engine)
    lm, tokenizer = load_model(model, device=device, dtype=dtype)
    return LMAgent(lm, tokenizer, config, name=model)
