"""The long result table's columns and their dtypes: shared by the store and the tables.

Kept apart from ``frames`` so that modules which only need the names do not import pandas.
"""

from __future__ import annotations

__all__ = ["JSON_COLUMNS", "LONG_COLUMNS", "META_COLUMNS", "MODEL_COLUMN"]

LONG_COLUMNS = {
    "paper": "string",
    "title": "string",
    "prompt": "string",
    "answer": "string",
    "value": "string",
    "status": "string",
    "error": "string",
    "worker": "string",
    "model": "string",
    "prompt_tokens": "Int64",
    "completion_tokens": "Int64",
    "latency_s": "Float64",
    "fit": "string",
    "evidence": "string",
    "quotes": "string",
    "authors": "object",
    "year": "Int64",
    "doi": "string",
    "venue": "string",
    "source": "string",
}
"""The long form's columns and their dtypes (nullable, so Parquet round-trips exactly).

``answer`` is the model's text. ``value`` is a typed prompt's value as JSON text (an int,
a float, a bool, one of the choices or a list: ``json.loads`` it, or use the wide table,
whose columns have real dtypes; missing for a text prompt and for an answer that did not
match its type). ``evidence`` is ``verified``, ``unverified`` or ``none``, and ``quotes``
the checked quotes as JSON text, a list of ``{text, page, match}`` (``df.dllm.evidence()``
gives them as a table). JSON text keeps a long table with several types in one column
writable to Parquet. The paper's reference metadata follows."""

META_COLUMNS: tuple[str, ...] = ("title", "authors", "year", "doi", "venue", "source")
"""The paper's reference metadata, in the order the wide table shows it after the prompts
(``_prompts.templates`` rejects a prompt named like one; ``tests/test_layers.py`` keeps the
two lists the same)."""

JSON_COLUMNS = frozenset({"authors"})
"""Columns that hold Python values (lists): the store keeps them as JSON text."""

MODEL_COLUMN = "requested_model"
"""When models are compared (``analyze(model=["m1", "m2"])``), the long form has this column
after ``model``: the model the row's cell asked, which names its wide column ``(prompt,
model)``. ``model`` stays the name the answering worker gave it (a model group's member)."""
