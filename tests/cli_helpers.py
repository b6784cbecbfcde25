"""Running ``python -m dllm_notebook`` as a subprocess against loopback fake servers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dllm_notebook.testing import FakeServer

from .conftest import FAST, ROOT


def dllm(
    *args: str, cwd: Path, stdin: str | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command in ``cwd`` (its result store goes there too)."""
    environment = {
        k: v for k, v in os.environ.items() if k not in ("DLLM_CONFIG", "LOG_LEVEL", "COLUMNS")
    }
    environment.update(
        PYTHONPATH=str(ROOT),
        DLLM_STORE=str(cwd / "results.sqlite"),
        PYTHONIOENCODING="utf-8",
        **(env or {}),
    )
    return subprocess.run(
        [sys.executable, "-m", "dllm_notebook", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )


def worker(server: FakeServer | int, worker_id: str, kind: str, **extra: Any) -> dict[str, Any]:
    port = server if isinstance(server, int) else server.port
    return {"id": worker_id, "host": "127.0.0.1", "port": port, "type": kind, **extra}


def write_config(path: Path, workers: Sequence[Mapping[str, Any]], **settings: Any) -> Path:
    path.write_text(json.dumps({"workers": list(workers), **FAST, **settings}), encoding="utf-8")
    return path


def free_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
