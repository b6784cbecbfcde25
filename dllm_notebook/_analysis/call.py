"""One ``analyze()`` call: its arguments, and turning them into an :class:`Analysis`.

``analyze()``, ``aanalyze()`` and ``submit()`` take the same arguments, written once as
the signature of :func:`analyze_call` and carried as one :class:`AnalyzeCall`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._display.progress import Progress
from .analysis import Analysis

__all__ = ["AnalyzeCall", "analyze_call", "prepare"]


@dataclass(frozen=True)
class AnalyzeCall:
    """The arguments of one ``analyze()``, ``aanalyze()`` or ``submit()`` call."""

    source: Any
    preset: Any = None
    prompts: Any = None
    recursive: bool = False
    long: bool = False
    fit: str = "chunk"
    progress: bool = True
    password: str | None = None
    refresh: bool = False
    cache: bool = True
    evidence: bool | None = None
    crossref: bool | str = False
    model: str | Sequence[str] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


def analyze_call(
    source: Any,
    *,
    preset: Any = None,
    prompts: Any = None,
    recursive: bool = False,
    long: bool = False,
    fit: str = "chunk",
    progress: bool = True,
    password: str | None = None,
    refresh: bool = False,
    cache: bool = True,
    evidence: bool | None = None,
    crossref: bool | str = False,
    model: str | Sequence[str] | None = None,
    **options: Any,
) -> AnalyzeCall:
    """The arguments of ``analyze()`` and its twins, gathered into one object (see
    :meth:`Cluster.analyze` for what each means)."""
    return AnalyzeCall(
        source,
        preset,
        prompts,
        recursive,
        long,
        fit,
        progress,
        password,
        refresh,
        cache,
        evidence,
        crossref,
        model,
        options,
    )


def prepare(
    call: AnalyzeCall, *, progress: bool, model_groups: Mapping[str, Any] | None = None
) -> Analysis:
    """Resolve the prompts and read the papers: every error here comes before any request.

    ``evidence`` (when not ``None``) turns supporting quotes on or off for every prompt,
    whatever the preset says."""
    from .._prompts.presets import resolve_preset
    from .._reading.papers import load_papers

    chosen = resolve_preset(call.preset, call.prompts)
    prompts = chosen.prompts
    if call.evidence is not None:
        prompts = tuple(p.with_evidence(call.evidence) for p in prompts)
    papers = load_papers(
        call.source, recursive=call.recursive, password=call.password, crossref=call.crossref
    )
    merged = {**chosen.options, **{k: v for k, v in call.options.items() if v is not None}}
    bar = Progress(len(papers) * len(prompts), enabled=progress)
    analysis = Analysis(
        papers,
        prompts,
        system=chosen.system,
        options=merged,
        fit=call.fit,
        progress=bar,
        model=chosen.model if call.model is None or call.model == "" else call.model,
        model_groups=model_groups,
    )
    bar.set_total(analysis.total)  # x models, when models are compared
    return analysis
