"""The dialect-independent core of a fake server: admission, faults, slots and pacing.

A dialect parses its wire format into a :class:`Call`, then enters
:meth:`Engine.generation`. The engine either raises :class:`Refused` (the dialect turns
it into its own error body) or yields a :class:`Generation` while holding a slot; the
dialect writes the answer, streamed or whole, and leaves the block to free the slot.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import math
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._behaviour import Behaviour
from ._log import RequestRecord
from ._slots import BatchClock, ColdStart, QueueFull, SlotCache, SlotGate
from ._structured import structured_text
from ._text import (
    CHARS_PER_TOKEN,
    answer_words,
    content_text,
    count_tokens,
    drawn_answer_tokens,
    last_user_message,
    prompt_digest,
    prompt_text,
    prompt_tokens,
)

__all__ = [
    "Call",
    "ContextPolicy",
    "Engine",
    "Generation",
    "Refusal",
    "Refused",
    "Resolved",
    "Rules",
]


PIECE_SECONDS = 0.02
"""A paced stream writes at most one piece per this many seconds (after its first token)."""


class ContextPolicy(enum.Enum):
    """What a server does with a request that does not fit its context window."""

    REJECT_PROMPT_AND_MAX = "reject when prompt >= window or prompt + max_tokens > window"
    REJECT_PROMPT = "reject when prompt >= window; cut the answer at the window"
    TRUNCATE = "silently keep the tail of the prompt (Ollama)"
    NONE = "no check at all (exo)"


class Refusal(enum.Enum):
    BAD_REQUEST = "bad_request"
    MODEL_NOT_FOUND = "model_not_found"
    MODEL_NOT_LOADED = "model_not_loaded"
    CONTEXT_EXCEEDED = "context_exceeded"
    OVERLOADED = "overloaded"
    SERVER_ERROR = "server_error"


class Refused(Exception):
    """A generation request the server answers with an error; the dialect words it."""

    def __init__(
        self,
        kind: Refusal,
        *,
        model: str | None = None,
        message: str = "",
        prompt_tokens: int = 0,
        window: int = 0,
        max_tokens: int | None = None,
        status: int | None = None,
        retry_after: int = 0,
    ) -> None:
        super().__init__(message or kind.value)
        self.kind = kind
        self.model = model
        self.message = message
        self.prompt_tokens = prompt_tokens
        self.window = window
        self.max_tokens = max_tokens
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class Call:
    """A chat request in a dialect-neutral form. ``max_tokens`` None means unlimited."""

    model: str | None
    messages: list[dict[str, Any]]
    stream: bool
    max_tokens: int | None = None
    num_ctx: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    schema: dict[str, Any] | None = None
    """The JSON schema the answer must follow (``response_format``, Ollama's ``format``)."""
    grammar: re.Pattern[str] | None = None
    """A llama.cpp ``grammar`` as a regular expression: the answer is written compactly
    (no whitespace between JSON tokens) and must match it."""


@dataclass(frozen=True)
class Resolved:
    """The model a request will run on, as the server names it in its answer."""

    name: str
    load_seconds: float = 0.0


class Rules(Protocol):
    """What the engine needs to know about a dialect."""

    context_policy: ContextPolicy

    def resolve_model(self, call: Call) -> Resolved: ...

    def context_window(self, call: Call, model: str) -> int: ...


@dataclass
class Generation:
    """An answer being generated; the slot is held until the ``generation`` block exits."""

    model: str
    pieces: list[str]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    load_s: float
    prefill_s: float
    decode_s: float
    garbage: bool
    empty: bool
    record: RequestRecord
    _decode_tps: float | None
    _time_scale: float
    cached_tokens: int | None = None
    """Prompt tokens the slot had cached (``None``: the server models no prefix cache)."""
    _serve: Callable[[float], Awaitable[None]] | None = None
    """Spends full-speed seconds of work in a shared batch (``Behaviour.batch_size``)."""

    @property
    def content(self) -> str:
        return "".join(self.pieces)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.decode_s if self.decode_s > 0 else 0.0

    async def stream(self) -> AsyncIterator[str]:
        """The answer's pieces, paced at ``decode_tps`` (scaled by ``time_scale``): the first
        token alone, then one piece per token, or per :data:`PIECE_SECONDS` where a scaled
        decode is faster than that (a real server writes at its real speed, 15 to 60
        tokens a second on a Mac; a stream of hundreds of events a second would cost the
        client more than any real server makes it pay)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        total = self._scaled_decode()
        count = max(len(self.pieces), 1)
        per = max(1, math.ceil(PIECE_SECONDS * count / total)) if total > 0 else 1
        bounds = [0, *range(1, len(self.pieces), per), len(self.pieces)]
        for begin, end in itertools.pairwise(bounds):
            if begin == end:
                continue
            if self._serve is not None:  # each piece's share of the batch
                await self._serve(total * (end - begin) / count)
            else:
                delay = start + total * end / count - loop.time()
                if delay > 0.002:
                    await asyncio.sleep(delay)
            yield "".join(self.pieces[begin:end])
        self._measure(loop.time() - start)

    async def finish(self) -> None:
        """Spend the whole decode time at once (non-streaming answers)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        total = self._scaled_decode()
        if self._serve is not None:
            await self._serve(total)
        elif total > 0:
            await asyncio.sleep(total)
        self._measure(loop.time() - start)

    def _scaled_decode(self) -> float:
        if self._decode_tps is None:
            return 0.0
        return self.completion_tokens / self._decode_tps * self._time_scale

    def _measure(self, elapsed: float) -> None:
        if self._decode_tps is None:
            self.decode_s = max(elapsed, 1e-6)


class Engine:
    """One server run's admission and pacing state (recreated on every start)."""

    def __init__(self, behaviour: Callable[[], Behaviour], die: Callable[[], None]) -> None:
        self._behaviour = behaviour
        self._die = die
        self.gate = SlotGate(lambda: self._behaviour().slots, self._running_changed)
        self.batch = BatchClock(lambda: self._behaviour().batch_size, lambda: self.gate.active)
        self._seed = behaviour().seed
        self._rng = random.Random(self._seed)
        self.arrivals = 0
        self.cache = SlotCache()
        self.cold = ColdStart()

    def _running_changed(self) -> None:
        if self._behaviour().batch_size is not None:
            self.batch.changed()

    def reseed(self, seed: int) -> None:
        self._seed = seed
        self._rng = random.Random(seed)

    @asynccontextmanager
    async def generation(
        self, record: RequestRecord, call: Call, rules: Rules
    ) -> AsyncIterator[Generation]:
        b = self._behaviour()
        _describe(record, call)
        self.arrivals += 1
        fails = self._rng.random() < b.error_rate  # drawn for every request: deterministic
        if b.die_after is not None and self.arrivals > b.die_after:
            record.outcome = "killed"
            self._die()
            await asyncio.Event().wait()
        resolved = rules.resolve_model(call)
        record.model = resolved.name
        window = rules.context_window(call, resolved.name)
        plan = _plan(call, window, rules.context_policy, b, resolved.name)
        if b.overload:
            raise Refused(Refusal.OVERLOADED, status=b.overload_status, retry_after=b.retry_after)
        if fails:
            raise Refused(Refusal.SERVER_ERROR, model=resolved.name)
        await _sleep(b.base_latency * b.time_scale)
        record.queued_at = arrived = time.monotonic()
        try:
            await self.gate.acquire(b.max_queue)
        except QueueFull:
            raise Refused(
                Refusal.OVERLOADED,
                message="queue full",
                status=b.overload_status,
                retry_after=b.retry_after,
            ) from None
        record.started_at = time.monotonic()
        slot: int | None = None
        text = ""
        try:
            b = self._behaviour()
            cached: int | None = None
            if b.prefix_cache:
                text = prompt_text(call.messages)
                slot, shared = self.cache.take(text, b.slots)
                # llama.cpp always evaluates at least the prompt's last token
                cached = (
                    0 if plan.truncated else min(shared // CHARS_PER_TOKEN, plan.prompt_used - 1)
                )
                cached = max(cached, 0)
            if b.hang:  # a wedged generation: it keeps its slot until the client gives up
                record.outcome = "hung"
                await asyncio.Event().wait()
            await self.cold.wait(b.cold_start_seconds * b.time_scale)
            waited = (time.monotonic() - arrived) / b.time_scale if b.time_scale > 0 else 0.0
            await _sleep(resolved.load_seconds * b.time_scale)
            prefill_s = _nominal(plan.prompt_used - (cached or 0), b.prefill_tps)
            batched = b.batch_size is not None
            if batched:
                await self.batch.serve(prefill_s * b.time_scale)
            else:
                await _sleep(prefill_s * b.time_scale)
            if slot is not None:
                self.cache.read(slot, text)
            pieces, completion, finish = _answer(call, plan, b)
            generation = Generation(
                model=resolved.name,
                pieces=[] if b.empty_answer else pieces,
                prompt_tokens=plan.prompt_used,
                completion_tokens=completion,
                finish_reason=finish,
                load_s=resolved.load_seconds,
                prefill_s=prefill_s + (waited if b.timings_count_queue else 0.0),
                decode_s=_nominal(completion, b.decode_tps),
                garbage=b.garbage,
                empty=b.empty_answer,
                record=record,
                _decode_tps=b.decode_tps,
                _time_scale=b.time_scale,
                cached_tokens=cached,
                _serve=self.batch.serve if batched else None,
            )
            record.prompt_tokens_used = plan.prompt_used
            record.cached_tokens = cached
            record.truncated = plan.truncated
            record.completion_tokens = completion
            record.outcome = "garbage" if b.garbage else "empty" if b.empty_answer else "ok"
            yield generation
        finally:
            record.released_at = time.monotonic()
            if slot is not None:
                self.cache.release(slot)
            self.gate.release()


@dataclass(frozen=True)
class _Plan:
    prompt_used: int
    completion: int
    finish_reason: str
    truncated: bool
    echo_of: str


def _describe(record: RequestRecord, call: Call) -> None:
    record.model = call.model
    record.stream = call.stream
    record.max_tokens = call.max_tokens
    record.num_ctx = call.num_ctx
    record.options = dict(call.options)
    record.schema = call.schema
    record.digest = prompt_digest(last_user_message(call.messages))
    record.prompt_tokens = prompt_tokens(call.messages)


def _plan(call: Call, window: int, policy: ContextPolicy, b: Behaviour, model: str) -> _Plan:
    prompt = prompt_tokens(call.messages)
    user = last_user_message(call.messages)
    length = b.answer_tokens
    if b.answer_tokens_range is not None:
        length = drawn_answer_tokens(prompt_digest(user), b.seed, *b.answer_tokens_range)
    wanted = length if call.max_tokens is None else min(length, call.max_tokens)
    if policy in (ContextPolicy.REJECT_PROMPT_AND_MAX, ContextPolicy.REJECT_PROMPT):
        too_long = prompt >= window
        if policy is ContextPolicy.REJECT_PROMPT_AND_MAX and call.max_tokens is not None:
            too_long = too_long or prompt + call.max_tokens > window
        if too_long:
            raise Refused(
                Refusal.CONTEXT_EXCEEDED,
                model=model,
                prompt_tokens=prompt,
                window=window,
                max_tokens=call.max_tokens,
            )
        wanted = min(wanted, window - prompt)
    truncated = policy is ContextPolicy.TRUNCATE and prompt > window
    if truncated:
        user = _surviving_tail(call.messages, window)
    finish = "length" if wanted < length else "stop"
    return _Plan(min(prompt, window) if truncated else prompt, wanted, finish, truncated, user)


def _surviving_tail(messages: list[dict[str, Any]], window: int) -> str:
    """What is left of the last user message once the conversation keeps only its tail."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            text = content_text(messages[index].get("content"))
            after = prompt_tokens(messages[index + 1 :])
            room = window - after
            if count_tokens(text) <= room:
                return text
            return text[len(text) - room * CHARS_PER_TOKEN :] if room > 0 else ""
    return ""


def _answer(call: Call, plan: _Plan, b: Behaviour) -> tuple[list[str], int, str]:
    """The answer's pieces, its completion tokens and its finish reason.

    A structured answer (see ``_structured``) is written whole unless ``max_tokens`` cuts
    it, one token per space-separated word; a free-text one is the echo and filler words.
    """
    grammar = call.grammar
    text = structured_text(call.schema, plan.echo_of, b.schema_answers, compact=bool(grammar))
    valid = b.schema_answers == "valid"
    if text is not None and grammar is not None and valid and grammar.fullmatch(text) is None:
        raise RuntimeError(f"the emulated answer {text!r} does not follow the grammar")
    if text is None and (b.cite_prompt_keys or b.cite):
        text = " ".join([*answer_words(plan.echo_of, 0), *_citing_words(plan.echo_of, b)])
    if text is None:
        return _pieces(plan.echo_of, plan.completion), plan.completion, plan.finish_reason
    words = text.split(" ")
    if call.max_tokens is not None and call.max_tokens < len(words):
        words = words[: max(call.max_tokens, 1)]
        return [words[0], *(" " + w for w in words[1:])], len(words), "length"
    return [words[0], *(" " + w for w in words[1:])], len(words), "stop"


_KEY = re.compile(r"(?<!\[)\[([^\[\]\n]+)\](?!\])")


def _citing_words(prompt: str, b: Behaviour) -> list[str]:
    """``Finding [key].`` for each key the prompt gives (``cite_prompt_keys``), then for
    each key of ``b.cite``: each key once, in order."""
    keys = list(_KEY.findall(prompt)) if b.cite_prompt_keys else []
    words: list[str] = []
    for key in dict.fromkeys([*keys, *b.cite]):
        words += ["Finding", f"[{key}]."]
    return words


def _pieces(prompt: str, completion_tokens: int) -> list[str]:
    words = answer_words(prompt, completion_tokens)
    return [words[0], *(" " + word for word in words[1:])]


def _nominal(tokens: int, tps: float | None) -> float:
    return tokens / tps if tps else 0.0


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)
