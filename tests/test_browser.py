"""The notebook experience as a person sees it: a real JupyterLab, in headless Chromium.

A notebook connects to three fake workers, one of them killed, and shows ``cluster``; then
it submits a background job and runs ``analyze()`` while the job goes on. The test runs it
in the browser and checks what the page shows: the live panel with one row per worker and
their health, its counts moving as the work is done, the job's and analyze()'s progress
bars, and the job's result. It saves a screenshot of the panel to
docs/img/worker-panel.png.

Needs JupyterLab, Python Playwright and Debian's Chromium (``/usr/bin/chromium``; never a
browser download). Without them the test is skipped, except in CI (``CI`` set), where it
fails so that a missing install step cannot hide it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dllm_notebook.testing import Behaviour, FakeLab

from .conftest import ROOT

pytestmark = [pytest.mark.notebook, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = ROOT / "docs" / "img" / "worker-panel.png"
EXPECTED_HEALTH = {"imac-office": "healthy", "mac-studio": "healthy", "mac-mini": "down"}
STARTUP_TIMEOUT = 90.0
PACE = {"prefill_tps": 800.0, "decode_tps": 60.0, "answer_tokens": 12}
"""Realistic speeds, so that the panel's latency and tokens/s look like a Mac's."""
PANEL_TIMEOUT_MS = 90_000

NOTEBOOK_CELLS = [
    """\
from dllm_notebook import Cluster

cluster = Cluster.from_config("workers.json")
cluster""",
    """\
from pathlib import Path

Path("papers").mkdir(exist_ok=True)
for i in range(5):
    Path(f"papers/p{i}.txt").write_text(f"Paper {i}\\n\\nOn rivers and their floods [[p{i}]].")
PROMPTS = {"topic": "What is the topic? {content}", "method": "Which method? {content}"}
job = cluster.submit("papers", prompts=PROMPTS, cache=False)
job""",
    """\
df = cluster.analyze("papers", prompts=PROMPTS, cache=False)
print("analyze rows:", len(df), "job result:", job.result().dllm.answers().shape)""",
]


def missing_tools() -> list[str]:
    missing = []
    if importlib.util.find_spec("jupyterlab") is None:
        missing.append("JupyterLab (pip install jupyterlab)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("Python Playwright (pip install playwright; no `playwright install`)")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    return missing


@pytest.fixture(scope="module")
def tools() -> None:
    missing = missing_tools()
    if missing:
        why = "the browser test needs " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"{why}; CI must install them (scripts/test does).")
        pytest.skip(why)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_notebook(folder: Path, workers: list[dict[str, Any]]) -> Path:
    (folder / "workers.json").write_text(json.dumps({"workers": workers}))
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": f"cell-{i}",
                "metadata": {},
                "outputs": [],
                "source": source,
            }
            for i, source in enumerate(NOTEBOOK_CELLS)
        ],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = folder / "panel.ipynb"
    path.write_text(json.dumps(notebook))
    return path


@pytest.fixture
def workers() -> Iterator[list[dict[str, Any]]]:
    """Two healthy fake workers and one whose server was killed."""
    with FakeLab() as lab:
        servers = [
            lab.add("lm_studio", id="imac-office", behaviour=Behaviour(slots=2, **PACE)),
            lab.add("ollama", id="mac-studio", models=["llama3.1:8b"], behaviour=Behaviour(**PACE)),
            lab.add("openai", id="mac-mini"),
        ]
        lab.server("mac-mini").kill()
        yield [
            {"id": s.id, "host": "127.0.0.1", "port": s.port, "type": s.dialect} for s in servers
        ]


class JupyterLab:
    """A JupyterLab server on 127.0.0.1 in its own process group, with its own settings."""

    def __init__(self, root: Path, home: Path) -> None:
        self.root = root
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        config = home / "config"
        (config / "labconfig").mkdir(parents=True)
        (config / "labconfig" / "page_config.json").write_text(
            json.dumps(
                {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}
            )
        )
        env = dict(os.environ)
        env.pop("DLLM_CONFIG", None)
        env.update(
            JUPYTER_CONFIG_DIR=str(config),
            JUPYTER_DATA_DIR=str(home / "data"),
            JUPYTER_RUNTIME_DIR=str(home / "runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        )
        self.log = home / "jupyterlab.log"
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
            "--ServerApp.terminals_enabled=False",
        ]
        if os.geteuid() == 0:  # CI runs as root
            command.append("--allow-root")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def api(self, method: str, path: str) -> httpx.Response:
        headers = {"Authorization": f"token {self.token}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=10)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"JupyterLab exited at start:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if self.api("GET", "/api/status").status_code == 200:
                    return
            time.sleep(0.25)
        pytest.fail(f"JupyterLab did not answer within {STARTUP_TIMEOUT:.0f} s")

    def stop(self) -> None:
        """Shut the kernels down, then end the server's whole process group."""
        if self.process.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                for kernel in self.api("GET", "/api/kernels").json():
                    self.api("DELETE", f"/api/kernels/{kernel['id']}")
        for signum, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)
            try:
                self.process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


@pytest.fixture
def jupyterlab(tools: None, tmp_path: Path, workers: list[dict[str, Any]]) -> Iterator[JupyterLab]:
    root = tmp_path / "root"
    root.mkdir()
    write_notebook(root, workers)
    server = JupyterLab(root, tmp_path / "jupyter")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


RUN_ALL = """async () => {
    const app = window.jupyterapp;
    app.shell.collapseLeft();  // room for the whole panel
    const panel = app.shell.currentWidget;
    await panel.context.ready;
    await panel.sessionContext.ready;
    await app.commands.execute("notebook:run-all-cells");
}"""

DONE_TOTAL = """() => {
    const table = document.querySelector("table.dllm-panel");
    const heads = [...table.querySelectorAll("thead th")].map(th => th.innerText.trim());
    const cell = table.querySelector("tr.dllm-totals").children[heads.indexOf("done")];
    return parseInt(cell.innerText, 10);
}"""

PANEL_STATE = """() => Object.fromEntries(
    [...document.querySelectorAll("table.dllm-panel tr.dllm-worker")]
        .map(row => [row.dataset.worker, row.dataset.health]))"""


def test_panel_job_and_progress_in_jupyterlab(jupyterlab: JupyterLab, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(f"{jupyterlab.url}/lab/tree/panel.ipynb?token={jupyterlab.token}")
            page.wait_for_function(
                "() => window.jupyterapp?.shell.currentWidget?.sessionContext !== undefined",
                timeout=PANEL_TIMEOUT_MS,
            )
            page.evaluate(RUN_ALL)
            try:
                page.wait_for_function(
                    f"""expected => {{
                        const shown = ({PANEL_STATE})();
                        return Object.keys(shown).length === Object.keys(expected).length
                            && Object.entries(expected).every(([id, h]) => shown[id] === h);
                    }}""",
                    arg=EXPECTED_HEALTH,
                    timeout=PANEL_TIMEOUT_MS,
                )
            except Exception:
                page.screenshot(path=tmp_path / "page.png")
                state = page.evaluate(PANEL_STATE)
                pytest.fail(
                    f"the panel shows {state}, expected {EXPECTED_HEALTH} "
                    f"(screenshot: {tmp_path / 'page.png'})"
                )
            panel = page.locator("table.dllm-panel")
            assert panel.count() == 1
            assert page.locator(".jupyter-widgets table.dllm-panel").count() == 1  # live widget
            assert page.locator("table.dllm-panel tr.dllm-totals").count() == 1
            reason = panel.locator('tr[data-worker="mac-mini"] td.dllm-reason').inner_text()
            assert reason.strip(), "a worker that is down must say why"

            # The job and analyze() ran while the panel was on screen: the result line
            # shows, both progress bars reached 10 of 10, and the panel counted the work.
            result = page.get_by_text("analyze rows: 5 job result: (5, 2)")
            result.wait_for(timeout=PANEL_TIMEOUT_MS)
            outputs = page.locator(".jp-OutputArea-output")
            texts = outputs.all_inner_texts()
            job_bars = outputs.filter(has_text=re.compile(r"^job\s\w+:\s*100%[\s\S]*10/10"))
            analyze_bars = outputs.filter(has_text=re.compile(r"^analyze:\s*100%[\s\S]*10/10"))
            assert (job_bars.count(), analyze_bars.count()) == (1, 1), texts  # one bar each
            page.wait_for_function(f"() => ({DONE_TOTAL})() >= 20", timeout=10_000)
            shot = tmp_path / "worker-panel.png"
            panel.screenshot(path=shot)
        finally:
            browser.close()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    if not SCREENSHOT.exists() or os.environ.get("DLLM_UPDATE_SCREENSHOTS"):
        shutil.copyfile(shot, SCREENSHOT)
