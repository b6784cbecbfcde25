"""The long result table's columns and their dtypes: shared by the store and the tables.

Kept apart from ``_results`` so that modules which only need the names do not import pandas.
"""

from __future__ import annotations

__all__ = ["LONG_COLUMNS"]

LONG_COLUMNS = {
    "paper": "string",
    "title": "string",
    "prompt": "string",
    "answer": "string",
    "status": "string",
    "error": "string",
    "worker": "string",
    "model": "string",
    "prompt_tokens": "Int64",
    "completion_tokens": "Int64",
    "latency_s": "Float64",
    "fit": "string",
}
"""The long form's columns and their dtypes (nullable, so Parquet round-trips exactly)."""
