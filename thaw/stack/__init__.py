"""The cold-to-warm stack: a router over thaw's methods, itself a Recommender."""

from thaw.stack.router import ITEM_BANDS, USER_BANDS, Stack, StackTable

__all__ = ["ITEM_BANDS", "USER_BANDS", "Stack", "StackTable"]
