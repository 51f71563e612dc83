"""The chat messages a language model sees for one decision.

One function, shared by the LM agent, the SFT data generator and the Kuhn policy reader, so a
model is always trained on exactly the text it plays with.
"""

from __future__ import annotations

from sepo.games.base import Game, GameState

#: Appended to the game's system prompt. With reasoning the model may write one short
#: sentence before the action; without, the action alone.
REASONING_INSTRUCTION = (
    "First write one short sentence of reasoning, then your action alone on the last line."
)
ACTION_ONLY_INSTRUCTION = "Answer with your action alone."


def chat_messages(game: Game, state: GameState, seat: int, *,
                  reasoning: bool = True) -> list[dict[str, str]]:
    """System and user messages for `seat`'s decision in `state` (no assistant turn)."""
    instruction = REASONING_INSTRUCTION if reasoning else ACTION_ONLY_INSTRUCTION
    return [
        {"role": "system", "content": f"{game.system_prompt()}\n{instruction}"},
        {"role": "user", "content": game.user_prompt(state, seat)},
    ]


#: The elicitation turn of the constrained fallback: appended after an unparseable answer.
ELICITATION = "Your answer named no legal action. Reply with one legal action only."
