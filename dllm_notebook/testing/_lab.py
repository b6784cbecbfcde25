"""A lab of fake servers sharing one event-loop thread, and the JSON spec that builds one.

>>> with FakeLab() as lab:
...     mac = lab.add("ollama", models=["llama3.2"], behaviour=Behaviour(decode_tps=30))
...     studio = lab.add("lm_studio", id="studio")
...     lab.log.generation_counts()          # across every server

A spec (``python -m dllm_notebook.testing lab --spec lab.json``) is a list of servers,
or ``{"servers": [...]}``; each entry takes ``dialect`` and optionally ``id``, ``port``,
``models``, ``loaded``, ``context_length``, ``behaviour`` (an object of
:class:`Behaviour` fields) and ``count`` (that many copies, ids suffixed ``-01``...)::

    {"servers": [{"dialect": "ollama", "count": 10, "behaviour": {"decode_tps": 25}},
                 {"dialect": "lm_studio", "id": "studio", "models": ["qwen3-8b"]}]}
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from ._behaviour import Behaviour
from ._log import RequestLog
from ._server import FakeServer, LoopThread

__all__ = ["FakeLab", "parse_spec"]

_SPEC_KEYS = {"dialect", "id", "port", "models", "loaded", "context_length", "behaviour", "count"}


class FakeLab:
    """Many fake servers on one background event-loop thread.

    Servers are started as they are added; leaving the ``with`` block (or
    :meth:`close`) stops them all and ends the thread. ``lab.log`` sees every request
    of every server; each server also keeps its own ``server.log``.
    """

    def __init__(self) -> None:
        self.log = RequestLog()
        self._servers: list[FakeServer] = []
        self._loop: LoopThread | None = None

    @classmethod
    def from_spec(cls, spec: Any) -> FakeLab:
        """A started lab built from a JSON-like spec (see the module docstring)."""
        lab = cls()
        try:
            for entry in parse_spec(spec):
                lab.add(**entry)
        except BaseException:
            lab.close()
            raise
        return lab

    @property
    def servers(self) -> list[FakeServer]:
        return list(self._servers)

    def server(self, server_id: str) -> FakeServer:
        for server in self._servers:
            if server.id == server_id:
                return server
        known = ", ".join(s.id for s in self._servers) or "none"
        raise KeyError(f"No fake server {server_id!r} in this lab (servers: {known}).")

    def add(self, dialect: str, **kwargs: Any) -> FakeServer:
        """Create and start a server; keyword arguments are :class:`FakeServer`'s."""
        if self._loop is None or not self._loop.alive:
            self._loop = LoopThread("dllm-fake-lab")
        server = FakeServer(dialect, _loop=self._loop, _parent_log=self.log, **kwargs)
        server.start()
        self._servers.append(server)
        return server

    def close(self, grace: float = 1.0) -> None:
        """Stop every server (in parallel) and end the loop thread."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        servers = list(self._servers)

        async def stop_all() -> None:
            await asyncio.gather(*(s._astop(grace) for s in servers), return_exceptions=True)

        try:
            if loop.alive:
                loop.run(stop_all())
        finally:
            loop.close()

    def __enter__(self) -> FakeLab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FakeLab {len(self._servers)} servers>"


def parse_spec(spec: Any) -> list[dict[str, Any]]:
    """Keyword arguments for :meth:`FakeLab.add`, one dict per server, from a spec."""
    entries = spec.get("servers") if isinstance(spec, Mapping) else spec
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        raise ValueError(
            f'A lab spec is a list of servers or {{"servers": [...]}}; got {type(spec).__name__}.'
        )
    out: list[dict[str, Any]] = []
    for number, entry in enumerate(entries, start=1):
        where = f"lab spec server #{number}"
        if not isinstance(entry, Mapping) or "dialect" not in entry:
            raise ValueError(f"{where}: each server must be an object with a 'dialect'.")
        unknown = sorted(set(entry) - _SPEC_KEYS)
        if unknown:
            raise ValueError(
                f"{where}: unknown key(s) {', '.join(unknown)}; "
                f"known keys: {', '.join(sorted(_SPEC_KEYS))}."
            )
        count = int(entry.get("count", 1))
        base = dict(entry)
        base.pop("count", None)
        if "behaviour" in base:
            try:
                base["behaviour"] = Behaviour.from_dict(base["behaviour"])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where}: {exc}") from exc
        for index in range(count):
            kwargs = dict(base)
            if count > 1:
                kwargs["id"] = f"{entry.get('id', entry['dialect'])}-{index + 1:02d}"
                if kwargs.get("port"):
                    kwargs["port"] = int(kwargs["port"]) + index
            out.append(kwargs)
    return out
