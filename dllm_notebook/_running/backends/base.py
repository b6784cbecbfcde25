"""The one small interface every backend implements, and the shared HTTP error mapping.

A backend speaks one wire format. It does two things: ``probe()`` (cheap: which models are
there, what context window) and ``chat()`` (one generation). Everything else (retries,
health, scheduling) lives in the cluster, so adding a dialect means writing these two.
``stream()`` (the answer piece by piece, for ``dllm chat``) is optional: by default it
yields ``chat()``'s whole answer at once. So is ``streamed()``: ``chat()``'s answer, read
from a stream so that the client sees when its first token comes (a wait in the server's
queue shows there at once); :meth:`Backend.generate` picks it for a worker that streams.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import httpx
import orjson

from ..._config import WorkerConfig
from ..._errors import (
    BadResponse,
    ContextLengthExceeded,
    ModelNotAvailable,
    RequestRejected,
    WorkerError,
    WorkerOverloaded,
    WorkerUnreachable,
)
from ..._types import ChatRequest, Completion, ServerInfo
from .structured import rejects_schema, schema_in_prompt

__all__ = ["Backend", "FirstToken", "classify_error", "reported_window"]

log = logging.getLogger("dllm_notebook")

_CONTEXT_PATTERNS = re.compile(
    r"context (length|window|size|overflow)|exceed_context_size|maximum context length"
    r"|context_length_exceeded|n_ctx|tokens to keep|prompt is too long"
    r"|exceeds? the available context"
    r"|requested tokens .* exceed",
    re.IGNORECASE,
)
_MODEL_PATTERNS = re.compile(
    r"model .*not (found|loaded)|not found.*model|no models? (is )?loaded|model_not_found"
    r"|try pulling it|model .* does not exist|unknown model|failed to load model",
    re.IGNORECASE,
)
# The window a server names when it refuses a prompt as too long, one pattern per wording.
# Ollama's ("prompt too long; exceeded max context length by N tokens") names only the
# overflow, so it gives none; a number that is not the window is never taken for it.
_WINDOW_PATTERNS = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"maximum context length is (\d[\d,]*)",  # OpenAI, vLLM
        r"available context size \((\d[\d,]*) tokens\)",  # llama.cpp's server
        r"\bn_ctx: *(\d[\d,]*)",  # LM Studio's llama.cpp engine: "(n_keep: N>= n_ctx: M)"
        r"context length of only (\d[\d,]*)",  # LM Studio 0.3 and later
        r"exceeds context length (\d[\d,]*)",  # LM Studio before 0.3
        r"maximum context length of (\d[\d,]*)",  # LiteLLM and the proxies that copy it
    )
)


FirstToken = Callable[[float], None]
"""Called once, with the seconds from sending a streamed request to its first token."""
Content = Callable[[dict[str, Any]], str | None]
"""The text piece in one decoded message of a stream, if any."""


def positive_int(value: object) -> int | None:
    """A JSON field that should be a positive count (a window, tokens), or ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    return int(value)


def _body_message(body: str) -> str:
    """The human message inside an error body, whatever shape the server used."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:500]
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message")))
        if isinstance(err, dict):
            return str(err.get("message") or err)
        if err is not None:
            return str(err)
    return body.strip()[:500]


def reported_window(body: str, message: str) -> int | None:
    """The context window a refusal names: llama.cpp's ``n_ctx`` field, or the number in
    each server's wording (``"maximum context length is 4096 tokens"``); else ``None``."""
    with contextlib.suppress(ValueError, TypeError, KeyError):
        n_ctx = json.loads(body)["error"]["n_ctx"]
        if isinstance(n_ctx, int) and not isinstance(n_ctx, bool) and n_ctx > 0:
            return n_ctx
    for pattern in _WINDOW_PATTERNS:
        match = pattern.search(message)
        if match:
            return int(match.group(1).replace(",", "")) or None
    return None


def classify_error(
    status: int, body: str, *, worker: str, model: str | None, retry_after: str | None = None
) -> WorkerError:
    """Turn a non-2xx answer into the error class the cluster acts on."""
    message = _body_message(body) or f"HTTP {status}"
    kw: dict[str, Any] = {"worker": worker, "model": model, "status_code": status}
    if status in (429, 503):
        wait = None
        if retry_after:
            try:
                wait = float(retry_after)
            except ValueError:
                wait = None
        return WorkerOverloaded(f"overloaded (HTTP {status}): {message}", retry_after=wait, **kw)
    if (_CONTEXT_PATTERNS.search(message) and status < 500) or status == 413:
        return ContextLengthExceeded(
            f"the prompt does not fit the model's context window (HTTP {status}): {message}",
            context_length=reported_window(body, message),
            **kw,
        )
    if status == 404 or _MODEL_PATTERNS.search(message):
        return ModelNotAvailable(
            f"model {model!r} is not available (HTTP {status}): {message}. Load or pull it on "
            'that machine, or set the worker\'s "model" to one it has',
            **kw,
        )
    if status in (401, 403):
        return RequestRejected(
            f"not authorised (HTTP {status}): {message}. Check the worker's api_key or api_key_env",
            **kw,
        )
    if status >= 500:
        return BadResponse(f"server error (HTTP {status}): {message}", **kw)
    return RequestRejected(f"request rejected (HTTP {status}): {message}", **kw)


def json_content(json_body: Any) -> dict[str, Any]:
    """A request's JSON body, for httpx: encoded by orjson (a paper's prompt is tens of
    kilobytes, which ``json.dumps`` encodes eight times slower), or none."""
    if json_body is None:
        return {}
    return {"content": orjson.dumps(json_body), "headers": _JSON_HEADERS}


_JSON_HEADERS = {"content-type": "application/json"}


class Backend(ABC):
    """One wire format. Subclasses implement :meth:`probe` and :meth:`chat`."""

    type: ClassVar[str]
    constrains_output: ClassVar[bool] = True
    """Whether the server can hold its answer to a JSON schema (exo cannot)."""
    streams_by_default: ClassVar[bool] = False
    """Whether ``stream: "auto"`` streams: only where the stream is the one way to see the
    server's queue early (Ollama, which does not say how many requests it runs at once,
    and ends its stream with the same counts and durations as a whole answer). Not
    llama.cpp, whose ``/slots`` caps the limit before any request; not LM Studio, whose
    streams end without ``stats`` or ``usage`` (lmstudio-bug-tracker#676); not ``openai``
    or ``exo``: a vLLM server streams hundreds of answers at once, which costs the client
    CPU for every token, and its learned limit finds its batch from whole answers."""

    def __init__(self, config: WorkerConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self.client = client
        self.schema_on_wire = self.constrains_output
        """False once the server refused the schema field: it then goes in the prompt."""
        self._urls: dict[str, httpx.URL] = {}

    def url(self, path: str) -> httpx.URL:
        """The absolute URL of ``path`` on this server, parsed once: httpx would parse the
        base URL and the path again for every request (a fifth of a request's CPU)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = self.client.base_url.join(path.lstrip("/"))
        return url

    def prepared(self, request: ChatRequest) -> ChatRequest:
        """The request as this server gets it: a schema it cannot take goes in the prompt."""
        if request.schema is not None and not self.schema_on_wire:
            return schema_in_prompt(request)
        return request

    async def send_structured(
        self, request: ChatRequest, send: Callable[[ChatRequest], Awaitable[Completion]]
    ) -> Completion:
        """``send(prepared request)``; a server that refuses the schema field is asked again
        at once with the schema in the prompt, and never gets the field again."""
        try:
            return await send(self.prepared(request))
        except WorkerError as exc:
            if request.schema is None or not self.schema_on_wire or not rejects_schema(exc):
                raise
            self.schema_on_wire = False
            log.warning(
                "worker %s refused the JSON schema (%s); it gets the schema in the prompt "
                "from now on",
                self.config.id,
                exc.detail,
            )
        return await send(self.prepared(request))

    @abstractmethod
    async def probe(self, *, detailed: bool = False) -> ServerInfo:
        """List the models (cheap). With ``detailed``, also learn context windows."""

    @abstractmethod
    async def chat(
        self, request: ChatRequest, *, model: str, context_length: int | None
    ) -> Completion:
        """Generate one answer."""

    @property
    def streams(self) -> bool:
        """Whether batch answers are read from a stream (the worker's ``stream`` setting)."""
        chosen = self.config.stream
        return self.streams_by_default if chosen == "auto" else bool(chosen)

    async def generate(
        self,
        request: ChatRequest,
        *,
        model: str,
        context_length: int | None,
        first_token: FirstToken | None = None,
    ) -> Completion:
        """One batch answer: :meth:`streamed` where this worker streams (``first_token`` is
        then called when the first token comes), else :meth:`chat`. The same
        :class:`Completion` either way; a streamed one also has ``first_token_seconds``."""
        if not self.streams:
            return await self.chat(request, model=model, context_length=context_length)

        async def send(prepared: ChatRequest) -> Completion:
            return await self.streamed(
                prepared, model=model, context_length=context_length, first_token=first_token
            )

        return await self.send_structured(request, send)

    async def streamed(
        self,
        request: ChatRequest,
        *,
        model: str,
        context_length: int | None,
        first_token: FirstToken | None = None,
    ) -> Completion:
        """:meth:`chat`'s answer to a prepared request, read from the server's stream. This
        default is :meth:`chat` itself, for a dialect without streaming."""
        return await self.chat(request, model=model, context_length=context_length)

    async def stream(
        self, request: ChatRequest, *, model: str, context_length: int | None
    ) -> AsyncIterator[str]:
        """Generate one answer piece by piece, as the server writes it.

        Failures raise the same :class:`WorkerError` classes as :meth:`chat`, before the
        first piece or in the middle. This default yields :meth:`chat`'s whole answer at
        once, so a dialect without streaming still works.
        """
        completion = await self.chat(request, model=model, context_length=context_length)
        yield completion.text

    async def stream_pieces(
        self, messages: AsyncGenerator[dict[str, Any]], content: Content, model: str
    ) -> AsyncGenerator[str]:
        """The text pieces of a stream's decoded ``messages`` (``content`` finds each one's);
        a stream without any text is an empty answer."""
        wrote = False
        async with contextlib.aclosing(messages):
            async for message in messages:
                piece = content(message)
                if piece:
                    wrote = True
                    yield piece
        if not wrote:
            raise self.empty_answer(model)

    @staticmethod
    async def read_stream(
        messages: AsyncGenerator[dict[str, Any]],
        content: Content,
        *,
        first_token: FirstToken | None = None,
        each: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[str, float | None]:
        """The whole text of a stream's decoded ``messages`` (the request is sent when the
        first is asked for), and the seconds from then to its first piece of text, when
        ``first_token`` is called. ``each`` sees every message (the last has the counts)."""
        started = time.monotonic()
        first: float | None = None
        pieces: list[str] = []
        async with contextlib.aclosing(messages):
            async for message in messages:
                piece = content(message)
                if piece:
                    if first is None:
                        first = time.monotonic() - started
                        if first_token is not None:
                            first_token(first)
                    pieces.append(piece)
                if each is not None:
                    each(message)
        return "".join(pieces), first

    async def stream_lines(
        self, path: str, *, json_body: Any, model: str | None, timeout: float | None = None
    ) -> AsyncGenerator[str, None]:
        """POST ``json_body`` and yield the answer's lines as they arrive (SSE or NDJSON).

        An error status is read whole and translated by :func:`classify_error`; a broken
        connection, before or during the answer, becomes :class:`WorkerUnreachable`.
        """
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        try:
            request = self.client.stream("POST", self.url(path), **json_content(json_body), **extra)
            async with request as response:
                if response.status_code >= 400:
                    body = (await response.aread()).decode("utf-8", errors="replace")
                    raise classify_error(
                        response.status_code,
                        body,
                        worker=self.config.id,
                        model=model,
                        retry_after=response.headers.get("retry-after"),
                    )
                async for line in response.aiter_lines():
                    yield line
        except (httpx.TransportError, OSError) as exc:
            raise self.unreachable(exc, model, "lost the connection to") from exc

    def stream_error(self, data: Any, model: str | None) -> WorkerError | None:
        """The error a server wrote into its stream (``{"error": ...}``), if any."""
        if not isinstance(data, dict) or data.get("error") is None:
            return None
        error = data["error"]
        code = error.get("code") if isinstance(error, dict) else None
        status = code if isinstance(code, int) and 400 <= code < 600 else 500
        return classify_error(status, json.dumps(data), worker=self.config.id, model=model)

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        timeout: float | None = None,
        model: str | None = None,
    ) -> Any:
        """Send one request and decode its JSON, translating every failure to a WorkerError."""
        wid = self.config.id
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        try:
            response = await self.client.request(
                method, self.url(path), **json_content(json_body), **extra
            )
        except (httpx.TransportError, OSError) as exc:
            raise self.unreachable(exc, model, "cannot reach") from exc
        if response.status_code >= 400:
            raise classify_error(
                response.status_code,
                response.text,
                worker=wid,
                model=model,
                retry_after=response.headers.get("retry-after"),
            )
        try:
            return response.json()
        except ValueError as exc:
            snippet = response.text[:80].replace("\n", " ")
            raise BadResponse(
                f"malformed JSON from {path} (HTTP {response.status_code}): {snippet!r}",
                worker=wid,
                model=model,
                status_code=response.status_code,
            ) from exc

    def unreachable(self, exc: BaseException, model: str | None, failure: str) -> WorkerUnreachable:
        """The one translation of a transport failure (``failure``: what went wrong)."""
        url = self.config.base_url
        if isinstance(exc, httpx.TimeoutException):
            message = f"no answer from {url} in time ({type(exc).__name__}); is it asleep or busy?"
        else:
            message = (
                f"{failure} {url} ({type(exc).__name__}: {exc or 'no detail'}); "
                "is the server running and the machine awake?"
            )
        return WorkerUnreachable(message, worker=self.config.id, model=model)

    def malformed(self, what: str, model: str | None = None) -> BadResponse:
        return BadResponse(f"unexpected answer shape: {what}", worker=self.config.id, model=model)

    def empty_answer(self, model: str) -> BadResponse:
        return BadResponse(
            "the server answered 200 with an empty message (a known LM Studio quirk when a "
            "model stops at once or is unloading)",
            worker=self.config.id,
            model=model,
        )
