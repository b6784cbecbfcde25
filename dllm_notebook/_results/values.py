"""What counts as a missing cell value, decided once for the report, its charts and the
synthesis (``None``, ``pd.NA``, NaN; a list is a value, even an empty one)."""

from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = ["is_missing", "text_or_none"]


def is_missing(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return False
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def text_or_none(value: Any) -> str | None:
    """``value`` as text, or ``None`` when it is missing."""
    return None if is_missing(value) else str(value)
