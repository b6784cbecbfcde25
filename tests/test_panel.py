"""The worker panel: ``cluster`` as the last line of a cell, live and as text."""

from __future__ import annotations

import gc
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import pytest

import dllm_notebook._display.cluster
import dllm_notebook._display.panel
from dllm_notebook import Cluster, DllmError, Event
from dllm_notebook._loop import run_sync
from dllm_notebook.testing import FakeLab, FakeServer

from .conftest import FAST

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


# -- reading the panel's HTML the way a browser test would -------------------------------
@dataclass
class Row:
    health: str
    light: str = ""
    cells: list[str] = field(default_factory=list)
    reason: str = ""


@dataclass
class Table:
    rows: dict[str, Row] = field(default_factory=dict)
    totals: list[str] = field(default_factory=list)
    caption: str = ""


class _TableParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.table = Table()
        self.tables = 0
        self._row: Row | None = None
        self._cells: list[str] | None = None
        self._in: str | None = None  # "td", "reason" or "caption"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "table" and "dllm-panel" in classes:
            self.tables += 1
        elif tag == "tr" and "dllm-worker" in classes:
            self._row = self.table.rows[a["data-worker"] or ""] = Row(a["data-health"] or "")
            self._cells = self._row.cells
        elif tag == "tr" and "dllm-totals" in classes:
            self._row, self._cells = None, self.table.totals
        elif tag == "td" and self._cells is not None:
            self._cells.append("")
            self._in = "reason" if "dllm-reason" in classes else "td"
        elif tag == "span" and "dllm-dot" in classes and self._row is not None:
            self._row.light = a["data-light"] or ""
        elif tag == "caption":
            self._in = "caption"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "caption"):
            self._in = None
        elif tag == "tr":
            self._row, self._cells = None, None

    def handle_data(self, data: str) -> None:
        if self._in == "caption":
            self.table.caption += data
        elif self._in is not None and self._cells is not None:
            self._cells[-1] += data
            if self._in == "reason" and self._row is not None:
                self._row.reason += data


def parse(markup: str) -> Table:
    parser = _TableParser()
    parser.feed(markup)
    assert parser.tables == 1, markup
    return parser.table


def wait_until(what: str, check: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait for a state the panel reaches on its own schedule (fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def text_cells(line: str) -> list[str]:
    """The cells of a text-table line (cells are at least two spaces apart)."""
    return re.split(r"\s{2,}", line.strip())


def spec(server: FakeServer, worker_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": worker_id, "host": "127.0.0.1", "port": server.port, "type": "openai", **extra}


def panel_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "dllm-panel" and t.is_alive()]


@pytest.fixture
def two_workers(lab: FakeLab) -> Iterator[tuple[Cluster, FakeServer, FakeServer]]:
    alpha, beta = lab.add("openai", models=["m"]), lab.add("openai", models=["m"])
    specs = [spec(alpha, "alpha", max_concurrent_requests=2), spec(beta, "beta")]
    with Cluster(specs, **FAST) as cluster:
        cluster.check()
        yield cluster, alpha, beta


# -- text ----------------------------------------------------------------------------------
def test_text_table_has_a_row_per_worker_and_a_totals_row(
    two_workers: tuple[Cluster, FakeServer, FakeServer],
) -> None:
    cluster, alpha, beta = two_workers
    cluster.map([f"p{i}" for i in range(6)])
    lines = repr(cluster).splitlines()
    assert lines[0] == "<Cluster: 2 workers>"
    columns = lines[1].split("  ")
    assert [c.strip() for c in columns if c.strip()] == [
        "worker",
        "address",
        "type",
        "model",
        "health",
        "in flight",
        "done",
        "failed",
        "avg latency s",
        "tok/s",
        "reason",
    ]
    assert set(lines[2]) == set(lines[5]) == {"-", " "}  # rules under the header and above
    rows = {cells[0]: cells for cells in (text_cells(line) for line in lines[3:5])}
    assert rows["alpha"][1:5] == [f"127.0.0.1:{alpha.port}", "openai", "m", "healthy"]
    assert rows["beta"][1:5] == [f"127.0.0.1:{beta.port}", "openai", "m", "healthy"]
    # beta has no max_concurrent_requests: its limit is learned, below its cap of 1024
    assert rows["alpha"][5].startswith("0/2") and rows["beta"][5].startswith("0/1024 (limit")
    done = int(rows["alpha"][6]) + int(rows["beta"][6])
    assert done >= 6  # a hedged copy that also succeeded counts where it ran
    assert float(rows["alpha"][8]) > 0  # average latency in seconds
    total = text_cells(lines[6])
    assert total[:2] == ["total", "2/2 healthy"] and total[2].startswith("0/1026 (limit")
    assert total[-4:-2] == [str(done), "0"]
    assert len(lines) == 7


def test_outside_a_kernel_the_bundle_is_text_and_html_only(
    two_workers: tuple[Cluster, FakeServer, FakeServer],
) -> None:
    cluster, _, _ = two_workers
    bundle = cluster._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}
    assert bundle["text/plain"] == repr(cluster)
    assert set(parse(bundle["text/html"]).rows) == {"alpha", "beta"}
    assert panel_threads() == []  # nothing live was started for a text display


# -- HTML ----------------------------------------------------------------------------------
def test_panel_has_a_row_per_worker_with_its_health_and_reason(lab: FakeLab) -> None:
    good = lab.add("openai", models=["m"])
    wrong_model = lab.add("ollama", models=["llama3.2"])
    specs = [
        spec(good, "good"),
        {**spec(wrong_model, "wrong"), "type": "ollama", "model": "qwen3:8b"},
    ]
    with Cluster(specs, **FAST) as cluster:
        cluster.check()
        for markup in (cluster.panel().value, cluster._repr_html_()):
            table = parse(markup)
            assert set(table.rows) == {"good", "wrong"}
            assert (table.rows["good"].health, table.rows["good"].light) == ("healthy", "green")
            assert table.rows["good"].reason == ""
            wrong = table.rows["wrong"]
            assert (wrong.health, wrong.light) == ("down", "red")
            assert "qwen3:8b" in wrong.reason and "llama3.2" in wrong.reason
            assert table.totals[:1] == ["total"] and "1/2 healthy" in table.totals
            assert table.caption == "Cluster: 2 workers"


def test_a_killed_worker_turns_red_with_its_reason_and_green_again(
    two_workers: tuple[Cluster, FakeServer, FakeServer],
) -> None:
    cluster, alpha, _ = two_workers
    widget = cluster.panel()

    def row() -> Row:
        return parse(widget.value).rows["alpha"]

    assert (row().health, row().light) == ("healthy", "green")
    alpha.kill()
    wait_until("the killed worker shows red", lambda: row().health in ("down", "suspect"))
    assert row().light == "red"
    assert f"127.0.0.1:{alpha.port}" in row().reason
    assert parse(widget.value).rows["beta"].light == "green"
    alpha.restart()
    wait_until("the worker is green again", lambda: row().light == "green")
    assert (row().health, row().reason) == ("healthy", "")


def test_an_overloaded_worker_rests_in_amber_with_a_countdown(
    two_workers: tuple[Cluster, FakeServer, FakeServer],
) -> None:
    cluster, alpha, _ = two_workers
    alpha.update(overload=True, overload_status=503, retry_after=30)
    widget = cluster.panel()
    answers = cluster.map([f"p{i}" for i in range(8)])
    assert all(a.ok for a in answers)  # beta answered what alpha refused

    def row() -> Row:
        return parse(widget.value).rows["alpha"]

    wait_until("alpha rests", lambda: row().light == "amber")
    first = row()
    assert first.health == "healthy" and first.reason.startswith("resting ")
    assert "resting " in text_cells(repr(cluster).splitlines()[3])[-1]
    # No event comes while it rests, yet the countdown moves on.
    wait_until("the countdown moves", lambda: row().reason != first.reason)


def test_panel_shows_requests_in_flight_then_done(
    two_workers: tuple[Cluster, FakeServer, FakeServer],
) -> None:
    cluster, alpha, beta = two_workers
    beta.kill()  # everything goes to alpha, which takes 2 at a time
    wait_until("beta is out", lambda: cluster.snapshot()[1]["health"] != "healthy")
    alpha.update(base_latency=2.0, slots=2)
    widget = cluster.panel()
    answers: list[Any] = []
    work = threading.Thread(target=lambda: answers.extend(cluster.map(["a", "b", "c", "d"])))
    work.start()
    try:
        wait_until(
            "alpha shows 2 of 2 in flight",
            lambda: parse(widget.value).rows["alpha"].cells[5].startswith("2/2"),
        )
    finally:
        work.join()
    assert [a.ok for a in answers] == [True] * 4
    wait_until(
        "alpha shows the 4 done", lambda: int(parse(widget.value).rows["alpha"].cells[6]) >= 4
    )
    table = parse(widget.value)
    assert table.rows["alpha"].cells[5].startswith("0/2")
    assert table.rows["beta"].cells[6] == "0"
    assert table.totals[5].startswith("0/1026 (limit")  # 2 + beta's learning cap
    assert table.totals[6:8] == [table.rows["alpha"].cells[6], "0"]


def test_redraws_are_throttled_while_work_runs(
    two_workers: tuple[Cluster, FakeServer, FakeServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, _, _ = two_workers
    # A redraw, then a long rest: whatever the machine's speed, a 200-task map fits in
    # one rest, so every event after the first redraw only marks the panel dirty.
    monkeypatch.setattr(dllm_notebook._display.panel, "REDRAW_INTERVAL", 600.0)
    widget = cluster.panel()
    events: list[Event] = []
    cluster.subscribe(events.append)
    redraws: list[str] = []
    widget.observe(lambda change: redraws.append(change["new"]), names="value")

    answers = cluster.map([f"p{i}" for i in range(200)])

    assert sum(a.ok for a in answers) == 200
    assert sum(e.kind in ("task_started", "task_finished") for e in events) >= 400
    assert len(redraws) <= 1
    cluster.close()  # wakes the panel from its rest for one last redraw
    assert len(redraws) <= 2
    final = parse(widget.value)
    done = [int(row.cells[6]) for row in final.rows.values()]
    assert sum(done) >= 200 and final.totals[6] == str(sum(done))
    assert final.caption == "Cluster: 2 workers, closed"


# -- the live widget and its thread ---------------------------------------------------------
def test_one_panel_per_cluster_and_its_thread_ends_on_close(
    two_workers: tuple[Cluster, FakeServer, FakeServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, _, _ = two_workers
    monkeypatch.setattr(dllm_notebook._display.cluster, "_in_kernel", lambda: True)
    first, second = cluster._repr_mimebundle_(), cluster._repr_mimebundle_()
    assert first[WIDGET_VIEW]["model_id"] == cluster.panel().model_id
    assert second[WIDGET_VIEW] == first[WIDGET_VIEW]  # a new view of the same widget
    assert set(parse(first["text/html"]).rows) == {"alpha", "beta"}  # for nbconvert/GitHub
    assert first["text/plain"].startswith("<Cluster: 2 workers>")
    assert set(cluster._repr_mimebundle_(include={"text/plain"})) == {"text/plain"}
    assert len(panel_threads()) == 1
    cluster.close()
    assert panel_threads() == []


def test_the_panel_lets_an_unclosed_cluster_be_collected(lab: FakeLab) -> None:
    server = lab.add("openai")
    cluster = Cluster([spec(server, "w")], store=None, **FAST)
    cluster.check()
    widget = cluster.panel()
    pool, ref = cluster._pool, weakref.ref(cluster)
    (thread,) = panel_threads()
    del cluster
    gc.collect()
    try:
        assert ref() is None
        thread.join(timeout=10)  # it notices within a second
        assert not thread.is_alive()
        assert parse(widget.value).caption == "Cluster: 1 worker, closed"
    finally:
        run_sync(pool.aclose(), what="close()")


def test_without_ipywidgets_panel_says_what_to_install(
    lab: FakeLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = lab.add("openai")
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # as if not installed
    with Cluster([spec(server, "w")], **FAST) as cluster:
        with pytest.raises(ImportError, match=r"pip install 'dllm-notebook\[notebook\]'") as err:
            cluster.panel()
        assert isinstance(err.value, DllmError)
        monkeypatch.setattr(dllm_notebook._display.cluster, "_in_kernel", lambda: True)
        assert set(cluster._repr_mimebundle_()) == {"text/plain", "text/html"}
