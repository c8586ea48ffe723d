"""thaw: recommendation for users and items with little or no history."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from thaw.models.base import Recommender

__version__ = "0.1.0"


def load(path: str | Path) -> Recommender:
    """A model saved with ``Recommender.save``, ready to score (see thaw/models/persist.py)."""
    from thaw.models.persist import load as load_model

    return load_model(path)
