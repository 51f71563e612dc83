"""A repeated stag hunt for sepo, added from outside sepo through the `sepo.games` entry point."""

from sepo_stag_hunt.game import StagHuntGame

__all__ = ["StagHuntGame"]
