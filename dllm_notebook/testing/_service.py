"""A small aiohttp service on 127.0.0.1 for the emulated non-LLM services (Zotero, Crossref).

A subclass adds its routes in :meth:`LoopbackService.add_routes`; the service records the
path of every request in ``requests``, so a test can prove what a client asked for.

>>> with FakeCrossref() as crossref:
...     httpx.get(crossref.url + "/works/10.7717/peerj-cs.118")
...     crossref.requests
['/works/10.7717/peerj-cs.118']
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ._server import LoopThread, listening_socket

__all__ = ["LoopbackService"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LoopbackService:
    """An HTTP service on a free loopback port (or ``port``), on its own loop thread."""

    name = "service"

    def __init__(self, *, port: int = 0) -> None:
        self._requested_port = port
        self._port: int | None = None
        self._loop: LoopThread | None = None
        self._runner: web.AppRunner | None = None
        self.requests: list[str] = []
        """The path (with its query) of every request, in order."""

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError(f"{self.name} is not running; call start() first")
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> str:
        if self._loop is None:
            self._loop = LoopThread(f"dllm-fake-{self.name}")
            self._loop.run(self._astart())
        return self.url

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.run(self._astop())
            self._loop.close()
            self._loop = None

    def __enter__(self) -> LoopbackService:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _astart(self) -> None:
        sock = listening_socket(self.name, self._port or self._requested_port)
        self._port = sock.getsockname()[1]

        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.requests.append(request.path_qs)
            return await handler(request)

        app = web.Application(middlewares=[record])
        self.add_routes(app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _astop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
