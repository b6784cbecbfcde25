"""The embedded local worker: llama.cpp's own C++ server (via xllamacpp) as a subprocess.

>>> from dllm_notebook import LocalServer
>>> with LocalServer(n_ctx=4096) as server:       # the default model: Gemma 3 270M
...     print(server.url, server.model_id)        # an OpenAI-compatible endpoint
http://127.0.0.1:41237 gemma-3-270m-q4_k_m

It is the server ``llama-server`` runs: ``n_parallel`` slots decoded together (continuous
batching), JSON-schema constrained output, and ``/health``, ``/props``, ``/slots`` and
``/metrics``.

No server outlives its Python process: each one runs in its own process group under a
launcher (:mod:`dllm_notebook._local.launch`) that exits when this process dies, even by
SIGKILL, and the servers still running at interpreter exit are stopped by ``atexit``.
Several servers can run at once, each on its own free loopback port.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from types import TracebackType

import httpx
import psutil

from .._config import WorkerConfig
from .._errors import LocalWorkerError
from .launch import QA_CHAT_FORMAT
from .model_files import INSTALL_HINT, default_model_path

__all__ = ["QA_CHAT_FORMAT", "LocalServer", "busy_cpus", "default_threads", "usable_cpus"]

_LAUNCHER = Path(__file__).with_name("launch.py")
_BOOTSTRAP = (
    "import runpy, sys\n"
    "sys.argv = sys.argv[1:]\n"
    "if sys.path and sys.path[0] == '': del sys.path[0]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)
log = logging.getLogger("dllm_notebook")

_SERVER_MODULES = ("xllamacpp",)
_PORT_RETRIES = 3
_CRASH_RETRIES = 1
_TAIL_LINES = 200
_ERROR_TAIL_LINES = 25

DEFAULT_N_CTX = 4096
DEFAULT_N_PARALLEL = 2
DEFAULT_N_BATCH = 2048
DEFAULT_N_UBATCH = 512
BUSY_SAMPLE_SECONDS = 0.25
"""How long ``busy_cpus()`` watches the CPUs before a server picks its threads."""
"""Defaults chosen by measurement on a 2-core machine: see docs/performance.md."""

_live: set[LocalServer] = set()
_live_lock = threading.Lock()


class LocalServer:
    """A llama.cpp server on this machine, started and stopped from Python.

    ``model_path=None`` uses the default model (Gemma 3 270M, assembled into the cache on
    first use). ``n_ctx`` is the context window of each request (of each slot), and
    ``n_parallel`` how many requests the server decodes at once; the server holds
    ``n_ctx x n_parallel`` tokens of KV cache. ``chat_template=None`` picks ``"dllm-qa"``
    for the default model, a plain ``Q: ... A:`` prompt that suits that base model (with
    its stop words, and llama.cpp's DRY sampler on so it does not loop), and for any other
    model lets llama.cpp use the chat template stored in its GGUF file; any other string is
    a Jinja chat template. ``n_threads=None`` uses the CPUs that other work leaves idle when
    the server starts (:func:`default_threads`, measured on 2 cores: see
    docs/performance.md); give parallel servers a share each. ``n_batch`` and ``n_ubatch``
    are llama.cpp's logical and physical batch sizes for reading prompts.
    ``model_alias`` is the model id the server reports (default: the file's stem).

    ``start()`` returns once ``GET /v1/models`` answers; ``stop()`` ends the server
    (SIGTERM, then SIGKILL after ``stop_timeout`` seconds). Use it as a context manager
    to stop it on leaving the block.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = DEFAULT_N_CTX,
        n_parallel: int = DEFAULT_N_PARALLEL,
        n_threads: int | None = None,
        n_batch: int = DEFAULT_N_BATCH,
        n_ubatch: int = DEFAULT_N_UBATCH,
        chat_template: str | None = None,
        model_alias: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 120.0,
        stop_timeout: float = 5.0,
    ) -> None:
        if n_ctx < 16:
            raise LocalWorkerError(f"n_ctx={n_ctx} is too small; use at least 16 (e.g. 4096)")
        if n_threads is not None and n_threads < 1:
            raise LocalWorkerError(f"n_threads={n_threads} must be at least 1, or None")
        if n_parallel < 1:
            raise LocalWorkerError(f"n_parallel={n_parallel} must be at least 1")
        if not 1 <= n_ubatch <= n_batch:
            raise LocalWorkerError(
                f"n_ubatch={n_ubatch}, n_batch={n_batch}: use 1 <= n_ubatch <= n_batch "
                f"(e.g. {DEFAULT_N_UBATCH} and {DEFAULT_N_BATCH})"
            )
        self._model_path = Path(model_path).expanduser() if model_path is not None else None
        self.n_ctx = n_ctx
        self.n_parallel = n_parallel
        self.n_threads = n_threads if n_threads is not None else default_threads()
        self.n_batch = n_batch
        self.n_ubatch = n_ubatch
        if chat_template is None and model_path is None:
            chat_template = QA_CHAT_FORMAT
        self.chat_template = chat_template
        self._alias = model_alias
        self.host = host
        self._requested_port = port
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._port: int | None = None
        self._owner_pid = os.getpid()
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._output: deque[str] = deque(maxlen=_TAIL_LINES)
        self._lock = threading.RLock()
        self.startup_seconds: float | None = None
        """How long the last ``start()`` took until the server answered."""

    # -- what the server is ---------------------------------------------------------------

    @property
    def model_path(self) -> Path:
        """The GGUF file served (the default model is assembled on first access)."""
        if self._model_path is None:
            self._model_path = default_model_path()
        return self._model_path

    @property
    def model_id(self) -> str:
        """The model id the server reports in ``/v1/models``; send it as ``model``."""
        if self._alias is not None:
            return self._alias
        return self._model_path.stem if self._model_path else "gemma-3-270m-q4_k_m"

    @property
    def port(self) -> int:
        if self._port is None:
            raise LocalWorkerError("this LocalServer was never started; call start() first")
        return self._port

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:41237`` (the API is under ``/v1``)."""
        return f"http://{_connect_host(self.host)}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server process id (of the last run, also after it stopped)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def worker_config(self, id: str = "local-1") -> WorkerConfig:
        """This running server as a cluster worker: ``Cluster([server.worker_config()])``."""
        return WorkerConfig(
            id=id,
            host="127.0.0.1",
            port=self.port,
            type="llama_cpp",
            model=self.model_id,
            max_concurrent_requests=self.n_parallel,
            context_length=self.n_ctx,
        )

    def output_tail(self, lines: int = 50) -> str:
        """The last lines the server printed (llama.cpp's log)."""
        return "\n".join(list(self._output)[-lines:])

    def __repr__(self) -> str:
        where = f"{self.url} pid={self.pid}" if self._port is not None else "not started"
        state = "running" if self.running else "stopped"
        return (
            f"<LocalServer {self.model_id} {where} n_ctx={self.n_ctx} "
            f"n_parallel={self.n_parallel} n_threads={self.n_threads} {state}>"
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> LocalServer:
        """Start the server and wait until it answers; return ``self``.

        Raises :class:`LocalWorkerError` (with the server's last output) if the extra is not
        installed, the model is missing, or the server dies or does not answer in time. A
        server killed by a signal while starting (a crash, not an error it reports) is
        started once more, with a warning that holds its output.
        """
        with self._lock:
            if self.running:
                return self
            self._terminate(force=True)  # reap a previous run that crashed
            _check_installed()
            model = self.model_path
            if not model.is_file():
                raise LocalWorkerError(
                    f"model file {model} does not exist; pass the path of a .gguf file, "
                    "or model_path=None for the default model"
                )
            if self._alias is None:
                self._alias = model.stem
            ports_tried = crashes = 0
            while True:
                port = self._requested_port or _free_port(self.host)
                began = time.monotonic()
                self._spawn(model, port)
                try:
                    self._wait_ready(began)
                except _PortTaken:
                    self._terminate(force=True)
                    ports_tried += 1
                    if self._requested_port is not None or ports_tried == _PORT_RETRIES:
                        raise LocalWorkerError(
                            f"port {port} on {self.host} is already in use; pass another "
                            "port, or port=None to pick a free one"
                        ) from None
                    continue
                except _Crashed as exc:
                    self._terminate(force=True)
                    crashes += 1
                    if crashes == _CRASH_RETRIES + 1:
                        raise LocalWorkerError(
                            f"{exc}\nIt crashed the same way when started again."
                        ) from None
                    log.warning("%s\nStarting it once more.", exc)
                    continue
                except BaseException:
                    self._terminate(force=True)
                    raise
                self.startup_seconds = time.monotonic() - began
                with _live_lock:
                    _live.add(self)
                return self

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``stop_timeout`` s; reap it."""
        self._terminate(force=False)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would; reap it."""
        self._terminate(force=True)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------

    def _command(self, model: Path, port: int) -> list[str]:
        args = [
            "--model", str(model),
            "--alias", self.model_id,
            "--host", self.host,
            "--port", str(port),
            "--ctx-size", str(self.n_ctx * self.n_parallel),
            "--parallel", str(self.n_parallel),
            "--threads", str(self.n_threads),
            "--threads-batch", str(self.n_threads),
            "--batch-size", str(self.n_batch),
            "--ubatch-size", str(self.n_ubatch),
        ]  # fmt: skip
        if self.chat_template is not None:
            args += ["--chat-template", self.chat_template]
        launcher = ["--parent-pid", str(os.getpid()), "--"]
        return [_python(), "-c", _BOOTSTRAP, str(_LAUNCHER), *launcher, *args]

    def _spawn(self, model: Path, port: int) -> None:
        self._output.clear()
        try:
            proc = subprocess.Popen(
                self._command(model, port),
                stdin=subprocess.PIPE,  # the launcher exits when this pipe closes
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=os.name == "posix",
                creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
            )
        except OSError as exc:
            raise LocalWorkerError(f"could not start {_python()}: {exc}") from exc
        self._proc, self._port, self._owner_pid = proc, port, os.getpid()
        self._reader = threading.Thread(
            target=_read_lines, args=(proc, self._output), name="dllm-local-output", daemon=True
        )
        self._reader.start()

    def _wait_ready(self, began: float) -> None:
        proc = self._proc
        assert proc is not None
        url = f"{self.url}/v1/models"
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = proc.poll()
                if code is not None:
                    self._join_reader()
                    tail = self.output_tail(_ERROR_TAIL_LINES)
                    if "address already in use" in tail.lower():
                        raise _PortTaken
                    message = (
                        f"the local llama.cpp server exited with code {code} while starting "
                        f"({self.model_path.name}). Its last output:\n{tail}\n"
                        "Check the model file and the options (n_ctx, n_parallel, chat_template)."
                    )
                    raise _Crashed(message) if code < 0 else LocalWorkerError(message)
                if self._answers(client, url):
                    return
                if time.monotonic() - began > self.startup_timeout:
                    raise LocalWorkerError(
                        f"the local llama.cpp server did not answer within "
                        f"{self.startup_timeout:g} s. Its last output:\n"
                        f"{self.output_tail(_ERROR_TAIL_LINES)}\n"
                        "Pass a larger startup_timeout if this machine is slow."
                    )
                time.sleep(0.1)

    def _answers(self, client: httpx.Client, url: str) -> bool:
        """Whether our server answers (and not another one that took the port meanwhile)."""
        try:
            reply = client.get(url)
            ids = [model.get("id") for model in reply.json().get("data", [])]
        except (httpx.HTTPError, ValueError, AttributeError):
            return False
        return reply.status_code == 200 and self.model_id in ids

    def _terminate(self, *, force: bool) -> None:
        with self._lock:
            with _live_lock:
                _live.discard(self)
            proc = self._proc
            if proc is None or os.getpid() != self._owner_pid:
                return  # never started, or we are a fork: the server is not our child
            if proc.poll() is None and not force:
                _signal_group(proc, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(self.stop_timeout)
            if proc.poll() is None:
                _signal_group(proc, signal.SIGKILL if os.name == "posix" else signal.SIGTERM)
                proc.wait()
            self._join_reader()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=2.0)


class _PortTaken(Exception):
    """The chosen port was taken between picking it and the server binding it."""


class _Crashed(Exception):
    """The server died of a signal while starting (llama.cpp aborted): worth one more try.

    Seen once in CI, two servers starting together on a slowed machine: SIGABRT from
    llama.cpp's own threads, and the next start was fine. A model or an option that it
    cannot take ends it with an exit code instead, and is reported at once."""


def _read_lines(proc: subprocess.Popen[bytes], sink: deque[str]) -> None:
    assert proc.stdout is not None
    with contextlib.suppress(OSError, ValueError):
        for raw in proc.stdout:
            sink.append(raw.decode("utf-8", "replace").rstrip())


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.name == "posix":
            os.killpg(proc.pid, sig)  # the server leads its own process group
        else:
            proc.send_signal(sig)


def _check_installed() -> None:
    missing = [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise LocalWorkerError(
            f"the local llama.cpp server needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed; {INSTALL_HINT}"
        )


def _python() -> str:
    if not sys.executable:
        raise LocalWorkerError(
            "cannot find the Python interpreter (sys.executable is empty), so the local "
            "server cannot be started; run dllm_notebook from a regular Python or Jupyter"
        )
    return sys.executable


def default_threads(servers: int = 1) -> int:
    """The CPUs other work leaves idle now, shared by ``servers``: all of them on a quiet
    machine, one on a busy one.

    Measured on 2 cores (docs/performance.md): quiet, 2 threads answered the same cells
    1.4x faster than 1; with other work keeping the cores busy (load average 7 to 8), 1
    thread read prompts 2.5x faster than 2, since llama.cpp's threads wait for each other
    at every step and one descheduled thread stalls them all.
    """
    cpus = usable_cpus()
    busy = min(round(busy_cpus()), cpus - 1)
    return max(1, (cpus - busy) // max(1, servers))


def busy_cpus() -> float:
    """How many CPUs other work keeps busy, sampled over :data:`BUSY_SAMPLE_SECONDS` (not
    the load average: it still counts, for a minute, work that has just ended, such as
    the install before a first run or the server a benchmark stopped)."""
    try:
        percent = float(psutil.cpu_percent(interval=BUSY_SAMPLE_SECONDS))
    except (OSError, RuntimeError):  # a system psutil cannot read
        return usable_cpus() / 2
    cpus: int = psutil.cpu_count() or usable_cpus()
    return percent / 100 * cpus


def usable_cpus() -> int:
    """How many CPUs this process may run on."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cpus or 1)


def _connect_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@atexit.register
def _stop_all() -> None:
    """Stop every server still running when the interpreter exits."""
    with _live_lock:
        servers = list(_live)
    for server in servers:  # signal them all first, so they shut down in parallel
        if server._owner_pid == os.getpid() and server.running:
            assert server._proc is not None
            _signal_group(server._proc, signal.SIGTERM)
    for server in servers:
        server._terminate(force=False)
