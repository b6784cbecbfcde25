"""``df.dllm``: the accessor on every result table.

Registered on pandas as soon as pandas is imported (see ``dllm_notebook/__init__``). That
hook can run while ``frames`` is still importing pandas, so ``frames`` is used as a module
(its functions are looked up when called), and the export modules, which import from
``frames``, are imported by the methods that use them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import frames
from .columns import META_COLUMNS, MODEL_COLUMN
from .statuses import ANSWERED

if TYPE_CHECKING:
    from pandas.io.formats.style import Styler

    from .synthesis import Synthesis

__all__ = ["DllmAccessor"]


@pd.api.extensions.register_dataframe_accessor("dllm")
class DllmAccessor:
    """``df.dllm``: switch between the long and wide forms and export reports."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame

    @property
    def is_long(self) -> bool:
        return {"paper", "prompt", "answer"} <= set(self._frame.columns)

    def wide(self) -> pd.DataFrame:
        """The paper x prompt table."""
        return frames.wide_frame(self._frame) if self.is_long else self._frame

    def long(self) -> pd.DataFrame:
        """One row per paper x prompt with provenance (worker, model, tokens, status...)."""
        return self._frame if self.is_long else frames.long_from_wide(self._frame)

    def for_model(self, model: str) -> pd.DataFrame:
        """One model's table out of a comparison (``analyze(..., model=["m1", "m2"])``),
        wide or long as this one is: the flat table that model would have given alone,
        whose ``.dllm.long()`` and exports still find its provenance.

        >>> df.dllm.for_model("m1").dllm.to_excel("m1.xlsx")  # doctest: +SKIP
        """
        return frames.for_model(self._frame, model)

    def to_json_report(self, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """Write (when ``path`` is given) and return the original tool's JSON report."""
        report = frames.json_report(self.long())
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                json.dump(report, fh, indent=2, ensure_ascii=False)
        return report

    def answers(self) -> pd.DataFrame:
        """The wide table's answer columns alone (one per prompt, or per prompt x model
        when models are compared)."""
        wide = self.wide()
        answers: pd.DataFrame = wide[frames.prompt_columns(wide)]
        return answers

    def meta(self) -> pd.DataFrame:
        """The papers' reference metadata alone: title, authors, year, doi, venue, source."""
        wide = self.wide()
        if isinstance(wide.columns, pd.MultiIndex):  # models compared: (name, "") columns
            names = [c for c in META_COLUMNS if (c, "") in wide.columns]
            flat: pd.DataFrame = wide[[(c, "") for c in names]].droplevel("model", axis=1)
            flat.columns.name = None
            return flat
        meta: pd.DataFrame = wide[[c for c in META_COLUMNS if c in wide.columns]]
        return meta

    def evidence(self) -> pd.DataFrame:
        """Every quote given as evidence, one row each: paper, prompt, quote, page, match.

        ``match`` is ``exact`` or ``close`` for a quote the tool found in the paper (on
        ``page``), ``unverified`` for one it did not find: that one is not evidence. When
        models are compared, ``requested_model`` follows ``prompt``.
        """
        long = self.long()
        keys = ["paper", "prompt"]
        if MODEL_COLUMN in long.columns:  # models compared: which model quoted it
            keys.append(MODEL_COLUMN)
        rows = [
            {**dict(zip(keys, key, strict=True)), **quote}
            for *key, text in zip(*(long[k] for k in keys), long["quotes"], strict=True)
            if isinstance(text, str)
            for quote in json.loads(text)
        ]
        table = pd.DataFrame(rows, columns=[*keys, "text", "page", "match"])
        table = table.rename(columns={"text": "quote"})
        types = {k: "string" for k in keys}
        typed: pd.DataFrame = table.astype(
            {**types, "quote": "string", "page": "Int64", "match": "string"}
        )
        return typed

    def models(self) -> pd.DataFrame:
        """Which models answered each prompt: one row per prompt, with the models (sorted)
        and how many cells each answered. One model per column is what a methods section
        can name; ``analyze(model=...)`` makes it so."""
        long = self.long()
        answered = long[long["status"].isin(ANSWERED)]
        rows = []
        for prompt, group in answered.groupby("prompt", sort=False):
            counts = group["model"].value_counts()
            rows.append(
                {
                    "prompt": prompt,
                    "models": sorted(counts.index),
                    "cells": {str(m): int(n) for m, n in counts.items()},
                }
            )
        table: pd.DataFrame = pd.DataFrame(rows, columns=["prompt", "models", "cells"])
        indexed: pd.DataFrame = table.set_index("prompt")
        return indexed

    def failures(self) -> pd.DataFrame:
        """The tasks that did not produce an answer, with their errors."""
        long = self.long()
        failed: pd.DataFrame = long[~long["status"].isin(ANSWERED)]
        return failed

    def to_report(
        self,
        path: str | os.PathLike[str],
        synthesis: Synthesis | None = None,
        *,
        charts: bool = True,
    ) -> Path:
        """Write the review report: one self-contained HTML file (or Markdown for ``.md``).

        >>> df.dllm.to_report("review.html", synthesis=cluster.synthesize(df))  # doctest: +SKIP

        It has the run's summary, the table (a text filter, sortable columns), a chart for
        each typed column (needs matplotlib: ``pip install 'dllm-notebook[notebook]'``, or
        ``charts=False``), every quote with its page and match (unverified ones flagged),
        the synthesis with its citations linked to rows, and the failures. It needs
        nothing from the network: open it offline or send it by e-mail.
        """
        from .report import write_report

        frames.require_one_model(self._frame, "df.dllm.to_report()")
        return write_report(self._frame, path, synthesis=synthesis, charts=charts)

    def synthesize(self, cluster: Any, question: str | None = None, **options: Any) -> Synthesis:
        """``cluster.synthesize(df, question, ...)``: see ``Cluster.synthesize``.

        >>> s = df.dllm.synthesize(cluster, "Which methods dominate?")  # doctest: +SKIP
        """
        synthesis: Synthesis = cluster.synthesize(self._frame, question, **options)
        return synthesis

    # -- exports (``exports``, ``citations``, ``styled``) ----------------------------------

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write the table as it is (wide or long) as CSV that Excel opens right (UTF-8
        with a byte-order mark); lists are written as JSON text.

        >>> df.dllm.to_csv("review.csv")
        """
        from . import exports

        exports.to_csv(self._frame, path)

    def to_excel(self, path: str | os.PathLike[str]) -> None:
        """Write an Excel workbook: the paper x prompt ``table`` (typed columns as numbers
        and booleans, long text wrapped, header frozen), the ``evidence`` quotes and the
        run's ``provenance`` (run id, summary, prompts with their types, models, workers).

        >>> df.dllm.to_excel("review.xlsx")
        """
        from . import exports

        frames.require_one_model(self._frame, "df.dllm.to_excel()")
        exports.to_excel(path, wide=self.wide(), long=self.long(), evidence=self.evidence())

    def to_markdown(self, path: str | os.PathLike[str] | None = None) -> str:
        """The table as it is (wide or long) as a Markdown table; written when ``path`` is
        given (UTF-8).

        >>> print(df.dllm.answers().dllm.to_markdown())
        """
        from . import exports

        return exports.to_markdown(self._frame, path)

    def to_bibtex(self, path: str | os.PathLike[str] | None = None) -> str:
        """The papers as BibTeX entries (citation keys as entry keys) with their answers in
        ``note``, one line per prompt; written when ``path`` is given.

        >>> df.dllm.to_bibtex("review.bib")   # import into Zotero or JabRef
        """
        from . import citations

        frames.require_one_model(self._frame, "df.dllm.to_bibtex()")
        return citations.to_bibtex(self.wide(), path)

    def to_ris(self, path: str | os.PathLike[str] | None = None) -> str:
        """The papers as RIS records with their answers in an ``N1`` note, one line per
        prompt; written when ``path`` is given.

        >>> df.dllm.to_ris("review.ris")   # Zotero, EndNote, Mendeley
        """
        from . import citations

        frames.require_one_model(self._frame, "df.dllm.to_ris()")
        return citations.to_ris(self.wide(), path)

    def show(self) -> Styler:
        """The table styled for reading in a notebook: long text wrapped, the index sticky,
        status colours (long form) and DOI links.

        >>> df.dllm.show()
        """
        from . import styled

        frames.require_one_model(self._frame, "df.dllm.show()")
        return styled.show(self._frame)
