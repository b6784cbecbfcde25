"""Fake LLM servers for tests, benchmarks and demos: real HTTP on 127.0.0.1.

Each :class:`FakeServer` speaks one dialect faithfully enough for a client to be tested
against it: ``openai``, ``llamacpp``, ``vllm``, ``exo``, ``lm_studio`` or ``ollama``
(routes, answer shapes, error bodies and quirks). A :class:`Behaviour` sets its speed
and the faults it injects; its :class:`RequestLog` records what the client sent.

>>> from dllm_notebook.testing import FakeServer, expected_echo
>>> with FakeServer("ollama", models=["llama3.2"]) as server:
...     reply = httpx.post(server.url + "/api/chat", json={
...         "model": "llama3.2", "stream": False,
...         "messages": [{"role": "user", "content": "Hi [[p1]]"}]}).json()
...     assert reply["message"]["content"].startswith(expected_echo("Hi [[p1]]"))

Asked for a JSON schema (``response_format`` json_schema, Ollama's ``format``, or a schema
written in the prompt), a server answers with a deterministic instance of it whose
``quotes`` are copied from the prompt's paper text; ``Behaviour.schema_answers`` spoils
that on purpose (``invalid_json``, ``out_of_schema``, ``invented_quotes``: one of
:data:`INVENTED_QUOTES`) and ``Behaviour.reject_schema`` refuses the field with a 400.

:func:`instant_answers` makes a cluster's workers answer in-process at once, to measure
what the client itself costs (``bench/bench_schedule.py cpu``).

:class:`FakeZotero` (Zotero 7's local API) and :class:`FakeCrossref` (Crossref's
``/works/{doi}``) emulate the services papers and their metadata come from.

Run servers in another process with ``python -m dllm_notebook.testing serve ...`` or
``... lab --spec lab.json``. Needs the ``lab`` extra (aiohttp).
"""

from __future__ import annotations

try:
    import aiohttp  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "dllm_notebook.testing needs aiohttp. Install the lab extra: "
        "pip install 'dllm-notebook[lab]'"
    ) from exc

from ._behaviour import Behaviour
from ._crossref import FakeCrossref
from ._dialects import CLIENT_TYPES, DEFAULT_PORTS, DIALECTS
from ._instant import InstantBackend, instant_answers
from ._lab import FakeLab, parse_spec
from ._log import RequestLog, RequestRecord, peak_in_flight, peak_queued
from ._server import FakeServer
from ._structured import INVENTED_QUOTES
from ._text import (
    CHARS_PER_TOKEN,
    common_prefix_length,
    count_tokens,
    drawn_answer_tokens,
    expected_echo,
    markers,
    prompt_digest,
    prompt_tokens,
)
from ._zotero import FakeZotero

__all__ = [
    "CHARS_PER_TOKEN",
    "CLIENT_TYPES",
    "DEFAULT_PORTS",
    "DIALECTS",
    "INVENTED_QUOTES",
    "Behaviour",
    "FakeCrossref",
    "FakeLab",
    "FakeServer",
    "FakeZotero",
    "InstantBackend",
    "RequestLog",
    "RequestRecord",
    "common_prefix_length",
    "count_tokens",
    "drawn_answer_tokens",
    "expected_echo",
    "instant_answers",
    "markers",
    "parse_spec",
    "peak_in_flight",
    "peak_queued",
    "prompt_digest",
    "prompt_tokens",
]
