"""``df.dllm.show()``: a result table as a pandas Styler, for reading in a notebook.

Long text wraps in its column instead of running off to the right, the index (the papers)
stays in view while scrolling sideways, each status of the long form has its colour and a
DOI links to ``https://doi.org/<doi>``. Every cell is HTML-escaped: a model's answer is
shown, never rendered.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pandas as pd

from .._errors import StylerUnavailable
from .exports import cell_text
from .statuses import ANSWERED, FAILED, INVALID, PENDING

if TYPE_CHECKING:
    from pandas.io.formats.style import Styler

__all__ = ["STATUS_COLOURS", "doi_link", "show"]

STATUS_COLOURS = {
    **dict.fromkeys(ANSWERED, "#d9f2d9"),  # green: answered
    FAILED: "#f8d0d0",  # red: every try failed
    INVALID: "#fde8c0",  # amber: an answer that did not match its type
    PENDING: "#e4e4e4",  # grey: not finished
}
UNREAD_COLOUR = "#f3e0f7"
"""A paper that could not be read (``no_file``, ``encrypted``, ``garbled``...)."""

_WRAP = {
    "white-space": "pre-wrap",
    "min-width": "16em",
    "max-width": "40em",
    "text-align": "left",
    "vertical-align": "top",
}


def doi_link(doi: Any) -> str:
    """An HTML link to the DOI's resolver page; both the URL and the text are escaped."""
    text = cell_text(doi)
    if not text:
        return ""
    url = "https://doi.org/" + quote(text, safe="/:;()._-")
    return (
        f'<a href="{html.escape(url, quote=True)}" target="_blank" rel="noopener">'
        f"{html.escape(text)}</a>"
    )


def _status_css(status: Any) -> str:
    text = cell_text(status)
    if text is None:
        return ""
    return f"background-color: {STATUS_COLOURS.get(text, UNREAD_COLOUR)}"


def show(frame: pd.DataFrame) -> Styler:
    """The table (wide or long, as it is) styled for reading; see the module docstring."""
    try:
        import jinja2  # noqa: F401  (pandas' Styler renders with it)
    except ImportError as exc:
        raise StylerUnavailable() from exc
    text_columns = [
        c
        for c in frame.columns
        if pd.api.types.is_string_dtype(frame[c]) or frame[c].dtype == object
    ]
    styler = frame.style.format(lambda v: html.escape(cell_text(v) or ""))
    styler = styler.format_index(escape="html")
    if "doi" in frame.columns:
        styler = styler.format(doi_link, subset=["doi"])
    wrapped = [c for c in text_columns if c not in ("doi", "status")]
    if wrapped:
        styler = styler.set_properties(subset=wrapped, **_WRAP)
    if "status" in frame.columns:
        styler = styler.map(_status_css, subset=["status"])
    sticky: Styler = styler.set_sticky(axis="index")
    return sticky
