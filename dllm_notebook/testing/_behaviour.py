"""How a fake server behaves: its models, its speed and the faults it injects.

A :class:`Behaviour` is a plain mutable dataclass. A running server reads it afresh for
every request, so a test may change it at any time, from any thread, with
:meth:`FakeServer.update`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ._structured import SCHEMA_ANSWERS

__all__ = ["Behaviour"]


@dataclass
class Behaviour:
    """Knobs of one fake server. Every field has a harmless, instant default.

    >>> Behaviour(decode_tps=20, slots=2, error_rate=0.1, seed=7)

    Models
        ``models`` are the models the server has (downloaded); ``loaded`` the ones in
        memory (``None``: all of them). ``context_length`` is the window the server runs
        with (LM Studio's loaded context, llama.cpp's ``n_ctx``, vLLM's
        ``max_model_len``); ``max_context_length`` the model's trained maximum (LM
        Studio's ``max_context_length``, Ollama's ``<arch>.context_length``; ``None``:
        same as ``context_length``). ``auto_load`` loads a model that is not loaded on
        first use (LM Studio's JIT loading; Ollama always does), taking ``load_seconds``.
        ``ollama_default_num_ctx`` is the window Ollama uses when a request sets no
        ``options.num_ctx``.

    Speed
        ``prefill_tps`` and ``decode_tps`` are tokens per second (``None``: instant);
        ``base_latency`` seconds are added to every generation; all sleeps are multiplied
        by ``time_scale`` while reported timings stay nominal. ``slots`` requests are
        generated at once, the rest queue inside the server; with ``max_queue`` set, a
        request that would wait behind that many others is refused as overloaded.
        ``answer_tokens`` is the length of an answer when ``max_tokens`` does not cut it;
        with ``answer_tokens_range`` (low, high) each answer's length is drawn instead,
        skewed short, from ``random.Random`` keyed by ``seed`` and the prompt's digest: no
        client can predict it from the prompt, yet a hedged copy writes the same length
        (``drawn_answer_tokens``). ``cold_start_seconds``: the model loads when the first
        generation arrives after the server started, and every request waits for it (in
        its slot). ``timings_count_queue``: the reported prefill time includes the time
        the request waited in the server's queue and for that load, as some servers count
        it; otherwise only the prefill itself.
        ``slots_endpoint``: llama.cpp's ``/slots`` is on (``False``: ``--no-slots``).
        ``batch_size`` (continuous batching, as vLLM and SGLang do): up to that many
        requests holding slots run at full speed at once; past it each one slows in
        proportion (with ``n`` in flight, each goes ``batch_size / n`` times as fast), so
        the server's throughput rises with concurrency up to ``batch_size`` and stays
        flat beyond. ``None``: every slot runs at full speed whatever the others do.

        >>> Behaviour(slots=256, batch_size=128, max_queue=64, decode_tps=64)  # like vLLM

    Prefix cache
        ``prefix_cache``: each slot keeps the prompt it read last, as llama.cpp's server
        (and LM Studio, Ollama, vLLM) do. A request goes to the free slot whose prompt
        shares the longest beginning with its own (else the least recently used one),
        prefills only the rest, and reports the cached tokens in the dialect's own field
        (llama.cpp ``timings.cache_n``, OpenAI-style
        ``usage.prompt_tokens_details.cached_tokens``, Ollama's smaller
        ``prompt_eval_count``, LM Studio's shorter ``time_to_first_token``; exo reports
        nothing). Off by default: every request then prefills its whole prompt.

    Faults (generation requests only)
        ``error_rate``: fraction answered 500 (drawn from ``random.Random(seed)`` once per
        request, in arrival order). ``hang``: accept, take a slot and never answer (the slot is
        freed when the client disconnects). ``garbage``: 200
        with malformed JSON. ``empty_answer``: 200 with empty content. ``overload``:
        refuse with ``overload_status`` (429 or 503) and ``Retry-After: retry_after``.
        ``die_after``: answer that many requests, then on the next one close the listener
        and reset every open connection.

    Structured answers (see ``_structured``)
        A request with a JSON schema (``response_format`` json_schema, Ollama's
        ``format``), or with a schema written in its prompt, is answered with an instance
        of it. ``schema_answers`` spoils that answer: ``valid`` (default),
        ``invalid_json``, ``out_of_schema`` or ``invented_quotes``. ``reject_schema``
        refuses a request that carries a schema with 400, like a server without
        structured output.

    Citations (for synthesis tests)
        ``cite_prompt_keys``: a free-text answer ends with one short sentence per
        ``[key]`` in the prompt (single brackets, not ``[[markers]]``), citing it, like a
        model that cites its input. ``cite``: keys every free-text answer also cites
        (a key not in the table, or a paper outside the request's group).
    """

    models: tuple[str, ...] = ("fake-model",)
    loaded: tuple[str, ...] | None = None
    context_length: int = 4096
    max_context_length: int | None = None
    auto_load: bool = True
    load_seconds: float = 0.0
    ollama_default_num_ctx: int = 2048

    prefill_tps: float | None = None
    decode_tps: float | None = None
    base_latency: float = 0.0
    time_scale: float = 1.0
    slots: int = 1
    batch_size: int | None = None
    max_queue: int | None = None
    answer_tokens: int = 16
    answer_tokens_range: tuple[int, int] | None = None
    cold_start_seconds: float = 0.0
    timings_count_queue: bool = False
    slots_endpoint: bool = True
    prefix_cache: bool = False

    error_rate: float = 0.0
    seed: int = 0
    hang: bool = False
    garbage: bool = False
    empty_answer: bool = False
    overload: bool = False
    overload_status: int = 503
    retry_after: int = 1
    die_after: int | None = None

    schema_answers: str = "valid"
    reject_schema: bool = False
    # citations
    cite_prompt_keys: bool = False
    cite: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.models = tuple(self.models)
        self.cite = tuple(self.cite)
        if self.answer_tokens_range is not None:
            low, high = self.answer_tokens_range
            self.answer_tokens_range = (int(low), int(high))
        if self.loaded is not None:
            self.loaded = tuple(self.loaded)
        problems = _problems(self)
        if problems:
            raise ValueError(
                "Invalid fake-server behaviour: " + "; ".join(problems) + ". Fix these fields."
            )

    @property
    def trained_context(self) -> int:
        """The model's maximum context (``max_context_length`` or ``context_length``)."""
        return self.max_context_length or self.context_length

    def is_loaded(self, model: str) -> bool:
        return self.loaded is None or model in self.loaded

    def loaded_models(self) -> tuple[str, ...]:
        return self.models if self.loaded is None else self.loaded

    def replace(self, **changes: Any) -> Behaviour:
        """A validated copy with ``changes`` applied (unknown names raise ``TypeError``)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(
                f"Unknown behaviour field(s): {', '.join(unknown)}. "
                f"Known fields: {', '.join(sorted(known))}."
            )
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Behaviour:
        """Build from JSON-like data (lists become tuples); unknown keys raise ``TypeError``."""
        return cls().replace(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, the inverse of :meth:`from_dict`."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def _problems(b: Behaviour) -> list[str]:
    problems: list[str] = []
    if not b.models or not all(isinstance(m, str) and m for m in b.models):
        problems.append("models must be a non-empty list of model names")
    if b.loaded is not None and not set(b.loaded) <= set(b.models):
        problems.append("loaded must be a subset of models")
    for name in ("context_length", "slots", "ollama_default_num_ctx"):
        if getattr(b, name) < 1:
            problems.append(f"{name} must be at least 1")
    if b.max_context_length is not None and b.max_context_length < b.context_length:
        problems.append("max_context_length must be at least context_length")
    for name in ("prefill_tps", "decode_tps"):
        value = getattr(b, name)
        if value is not None and value <= 0:
            problems.append(f"{name} must be positive or None (instant)")
    for name in ("base_latency", "time_scale", "load_seconds", "cold_start_seconds"):
        if getattr(b, name) < 0:
            problems.append(f"{name} must not be negative")
    if not 0.0 <= b.error_rate <= 1.0:
        problems.append("error_rate must be between 0 and 1")
    if b.overload_status not in (429, 503):
        problems.append("overload_status must be 429 or 503")
    if b.answer_tokens < 0 or b.retry_after < 0:
        problems.append("answer_tokens and retry_after must not be negative")
    span = b.answer_tokens_range
    if span is not None and not 0 <= span[0] <= span[1]:
        problems.append("answer_tokens_range must be (low, high) with 0 <= low <= high")
    if b.die_after is not None and b.die_after < 0:
        problems.append("die_after must be None or at least 0")
    if b.batch_size is not None and b.batch_size < 1:
        problems.append("batch_size must be None or at least 1")
    if b.max_queue is not None and b.max_queue < 0:
        problems.append("max_queue must be None or at least 0")
    if b.schema_answers not in SCHEMA_ANSWERS:
        problems.append(f"schema_answers must be one of {', '.join(SCHEMA_ANSWERS)}")
    return problems
