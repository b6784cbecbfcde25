"""Fake LLM servers on 127.0.0.1, each an aiohttp application on a background loop.

>>> with FakeServer("ollama", models=["llama3.2"]) as server:
...     httpx.post(server.url + "/api/chat", json={...})
...     server.log.generation_counts()

A :class:`FakeLab` runs many servers on one shared event-loop thread.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from aiohttp import web

from ._behaviour import Behaviour
from ._dialects import check_dialect, make_dialect
from ._engine import Engine
from ._listener import Listener
from ._log import RequestLog, RequestRecord
from ._openai import CURRENT_RECORD

__all__ = ["FakeServer", "LoopThread", "listening_socket"]

T = TypeVar("T")
_ids = itertools.count(1)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LoopThread:
    """An asyncio event loop running in a daemon thread, for fake servers to share."""

    def __init__(self, name: str = "dllm-fake-servers") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coro`` on the loop and wait for its result (from any other thread)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "A blocking fake-server call was made from the fake servers' own event loop; "
                "use the server's async internals or call it from another thread."
            )
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)


class FakeServer:
    """A real HTTP server on loopback that speaks one LLM server's dialect.

    ``dialect`` is one of ``openai``, ``llamacpp``, ``vllm``, ``exo``, ``lm_studio``,
    ``ollama``. ``models``, ``loaded`` and ``context_length`` are shortcuts for the
    same :class:`Behaviour` fields. ``port=0`` picks a free port; :meth:`restart`
    keeps it.

    >>> server = FakeServer("lm_studio", models=["qwen3-8b"], context_length=8192)
    >>> url = server.start()          # "http://127.0.0.1:PORT"
    >>> server.update(error_rate=0.2, seed=1)
    >>> server.kill(); server.restart(); server.stop()
    """

    def __init__(
        self,
        dialect: str,
        *,
        models: Sequence[str] | None = None,
        loaded: Sequence[str] | None = None,
        context_length: int | None = None,
        behaviour: Behaviour | None = None,
        port: int = 0,
        id: str | None = None,
        _loop: LoopThread | None = None,
        _parent_log: RequestLog | None = None,
    ) -> None:
        self.dialect = check_dialect(dialect)
        changes: dict[str, Any] = {}
        if models is not None:
            changes["models"] = tuple(models)
        if loaded is not None:
            changes["loaded"] = tuple(loaded)
        if context_length is not None:
            changes["context_length"] = context_length
        self._behaviour = (behaviour or Behaviour()).replace(**changes)
        self.id = id or f"{dialect}-{next(_ids)}"
        self.log = RequestLog(parent=_parent_log)
        self._requested_port = port
        self._port: int | None = None
        self._loop = _loop
        self._owns_loop = _loop is None
        self._runner: web.AppRunner | None = None
        self._listener: Listener | None = None
        self._engine: Engine | None = None
        self._inflight: dict[asyncio.Task[Any], RequestRecord] = {}
        self._kill_task: asyncio.Task[None] | None = None

    # -- state --------------------------------------------------------------------------

    @property
    def behaviour(self) -> Behaviour:
        """The live behaviour; prefer :meth:`update` to change it (it validates)."""
        return self._behaviour

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError(f"Fake server {self.id} is not running; call start() first.")
        return self._engine

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"Fake server {self.id} has no port yet; call start() first.")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        return f"<FakeServer {self.id} {self.dialect} {where}>"

    def update(self, **changes: Any) -> Behaviour:
        """Change behaviour fields at runtime, validated. Returns the live behaviour."""
        new = self._behaviour.replace(**changes)
        for name in changes:
            setattr(self._behaviour, name, getattr(new, name))
        loop = self._loop
        if loop is not None and loop.alive:
            loop.loop.call_soon_threadsafe(self._after_update, "seed" in changes)
        return self._behaviour

    def _after_update(self, reseed: bool) -> None:
        if self._engine is not None:
            if reseed:
                self._engine.reseed(self._behaviour.seed)
            self._engine.gate.wake()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> str:
        """Listen and serve; returns the base URL. Does nothing if already running."""
        if self._loop is None or not self._loop.alive:
            self._loop = LoopThread(f"dllm-fake-{self.id}")
        if not self.running:
            self._loop.run(self._astart())
        return self.url

    def stop(self, grace: float = 1.0) -> None:
        """Stop listening, let requests in progress finish for up to ``grace`` seconds,
        then cut the rest. Hung requests are cut at once."""
        if self._loop is not None and self._loop.alive:
            self._loop.run(self._astop(grace))
            if self._owns_loop:
                self._loop.close()
                self._loop = None

    def kill(self) -> None:
        """Die abruptly: close the listener and reset every open connection."""
        if self._loop is not None and self._loop.alive:
            self._loop.run(self._akill())

    def restart(self) -> str:
        """Kill if running, then start again on the same port."""
        self.kill()
        return self.start()

    def __enter__(self) -> FakeServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- on the loop --------------------------------------------------------------------

    async def _astart(self) -> None:
        if self._kill_task is not None:
            await asyncio.shield(self._kill_task)
        port = self._port if self._port is not None else self._requested_port
        sock = listening_socket(self.id, port)
        self._port = sock.getsockname()[1]
        self._engine = Engine(lambda: self._behaviour, self._self_destruct)
        dialect = make_dialect(self.dialect, self)
        app = web.Application(middlewares=[self._middleware()], client_max_size=64 * 2**20)
        dialect.add_routes(app)
        _add_control_routes(app, self)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=1.0,
        )
        await runner.setup()
        assert runner.server is not None  # set by setup()
        self._listener = Listener(sock, runner.server, backlog=1024)
        self._runner = runner

    async def _astop(self, grace: float) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._listener is not None:
            self._listener.stop_accepting()
        for task, record in list(self._inflight.items()):
            if record.outcome == "hung":
                task.cancel()
        if self._inflight and grace > 0:
            await asyncio.wait(list(self._inflight), timeout=grace)
        await self._cut(runner, reset=False)

    async def _akill(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._listener is not None:
            self._listener.stop_accepting()
        await self._cut(runner, reset=True)

    async def _cut(self, runner: web.AppRunner, *, reset: bool) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close(reset=reset)
        current = asyncio.current_task()
        for task in list(self._inflight):
            if task is not current:
                task.cancel()
        await runner.cleanup()
        self._engine = None

    def _self_destruct(self) -> None:
        if self._kill_task is None or self._kill_task.done():
            self._kill_task = asyncio.get_running_loop().create_task(self._akill())

    def _middleware(self) -> Any:
        @web.middleware
        async def record_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path.startswith("/_fake/"):
                return await handler(request)
            record = self.log.new(
                server=self.id, dialect=self.dialect, method=request.method, path=request.path
            )
            CURRENT_RECORD.set(record)
            task = asyncio.current_task()
            if task is not None:
                self._inflight[task] = record
            try:
                response = await handler(request)
                record.status = response.status
                return response
            except web.HTTPException as exc:
                record.status = exc.status
                raise
            except (asyncio.CancelledError, ConnectionResetError):
                if record.outcome not in ("killed", "hung"):
                    record.outcome = "client_gone"
                raise
            except Exception:
                record.status, record.outcome = 500, "crashed"
                raise
            finally:
                if record.outcome == "pending":
                    record.outcome = "info"
                record.finished_at = time.monotonic()
                if task is not None:
                    self._inflight.pop(task, None)

        return record_requests


def listening_socket(server_id: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise OSError(
            f"Fake server {server_id} cannot listen on 127.0.0.1:{port} ({exc}). "
            "Pick another port, or port=0 for a free one."
        ) from exc
    return sock


def _add_control_routes(app: web.Application, server: FakeServer) -> None:
    """``/_fake/*``: read the log, change behaviour or kill a server in another process."""

    async def get_log(request: web.Request) -> web.Response:
        return web.json_response({"records": [r.to_dict() for r in server.log.records()]})

    async def get_behaviour(request: web.Request) -> web.Response:
        return web.json_response(server.behaviour.to_dict())

    async def post_behaviour(request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            server.update(**changes)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(server.behaviour.to_dict())

    async def post_kill(request: web.Request) -> web.Response:
        asyncio.get_running_loop().call_later(0.05, server._self_destruct)
        return web.json_response({"killing": server.id})

    app.router.add_get("/_fake/log", get_log)
    app.router.add_get("/_fake/behaviour", get_behaviour)
    app.router.add_post("/_fake/behaviour", post_behaviour)
    app.router.add_post("/_fake/kill", post_kill)
