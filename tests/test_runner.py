"""The runner (``_analysis/runner.py``): one ``analyze()`` call's traffic with the result
store. Stored answers are reused, every new answer is recorded at once, and tasks are fed
to the dispatcher a window at a time."""

from __future__ import annotations

from pathlib import Path

from dllm_notebook import Cluster, Paper, ResultStore
from dllm_notebook.testing import FakeLab

from .conftest import FAST
from .test_store import PROMPTS, papers, sent, worker


def test_rerun_is_answered_from_the_store(lab: FakeLab, tmp_path: Path) -> None:
    server = lab.add("openai")
    store = ResultStore(tmp_path / "results.sqlite")
    with Cluster([worker(server)], store=store, **FAST) as cluster:
        first = cluster.analyze(papers(), prompts=PROMPTS, long=True, progress=False)
        assert sent(lab) == 6 and set(first["status"]) == {"ok"}
        again = cluster.analyze(papers(), prompts=PROMPTS, long=True, progress=False)
        job = cluster.last_analysis
    assert sent(lab) == 6  # nothing was sent again
    assert set(again["status"]) == {"cached"}
    assert again["answer"].tolist() == first["answer"].tolist()
    assert again["worker"].tolist() == first["worker"].tolist()
    assert job is not None and (job.progress.cached, job.progress.ok) == (6, 0)
    assert "6 from the result store" in again.attrs["dllm_summary"]
    wide = again.dllm.wide()
    assert wide.dllm.answers().notna().all().all() and again.dllm.failures().empty


def test_refresh_and_cache_off(lab: FakeLab, tmp_path: Path) -> None:
    server = lab.add("openai")
    store = ResultStore(tmp_path / "results.sqlite")
    with Cluster([worker(server)], store=store, **FAST) as cluster:
        cluster.analyze(papers(), prompts=PROMPTS, progress=False)
        fresh = cluster.analyze(papers(), prompts=PROMPTS, long=True, refresh=True, progress=False)
        assert sent(lab) == 12 and set(fresh["status"]) == {"ok"}
        logged = len(cluster.history())
        off = cluster.analyze(papers(), prompts=PROMPTS, long=True, cache=False, progress=False)
        assert sent(lab) == 18 and set(off["status"]) == {"ok"}
        assert len(cluster.history()) == logged == 12  # cache=False wrote nothing
        assert len(cluster.runs()) == 2


def test_changed_model_options_or_prompt_are_recomputed(lab: FakeLab, tmp_path: Path) -> None:
    model_a = lab.add("openai", models=["model-a"])
    model_b = lab.add("openai", models=["model-b"])
    path = tmp_path / "results.sqlite"
    with Cluster([worker(model_a, "a")], store=path, **FAST) as cluster:
        cluster.analyze(papers(), prompts=PROMPTS, progress=False)
        warmer = cluster.analyze(
            papers(), prompts=PROMPTS, long=True, progress=False, temperature=0.9
        )
        assert set(warmer["status"]) == {"ok"}  # options are part of the key
        edited = {**PROMPTS, "method": PROMPTS["method"].replace("Which", "What")}
        again = cluster.analyze(papers(), prompts=edited, long=True, progress=False)
        status = dict(zip(again["prompt"], again["status"], strict=False))
        assert status == {"aim": "cached", "method": "ok"}
    assert len(model_a.log.generations()) == 6 + 6 + 3
    with Cluster([worker(model_b, "b")], store=path, **FAST) as cluster:
        other = cluster.analyze(papers(), prompts=PROMPTS, long=True, progress=False)
    assert set(other["status"]) == {"ok"} and set(other["model"]) == {"model-b"}
    assert len(model_b.log.generations()) == 6
    with Cluster([worker(model_a, "a"), worker(model_b, "b")], store=path, **FAST) as cluster:
        both = cluster.analyze(papers(), prompts=PROMPTS, long=True, progress=False)
    assert set(both["status"]) == {"cached"}  # either model in the cluster will do
    assert len(model_a.log.generations()) + len(model_b.log.generations()) == 21


def test_only_failed_tasks_are_sent_again(lab: FakeLab, tmp_path: Path) -> None:
    server = lab.add("openai")
    path = tmp_path / "results.sqlite"
    one_at_a_time = worker(server, max_concurrent_requests=1)
    with Cluster([one_at_a_time], store=path, max_retries=0, **FAST) as cluster:
        server.update(error_rate=0.5, seed=3)
        first = cluster.analyze(papers(4), prompts=PROMPTS, long=True, progress=False)
        failed = int((first["status"] == "failed").sum())
        assert 0 < failed < 8
        server.update(error_rate=0.0)
        before = len(server.log.generations())
        second = cluster.analyze(papers(4), prompts=PROMPTS, long=True, progress=False)
        history = cluster.history()
    assert len(server.log.generations()) - before == failed
    assert (second["status"] == "cached").sum() == 8 - failed
    assert (second["status"] == "ok").sum() == failed
    assert history["error"].notna().sum() == failed
    assert set(history.loc[history["error"].notna(), "error_type"]) == {"BadResponse"}


def test_chunked_cells_resume_without_redoing_chunks(lab: FakeLab, tmp_path: Path) -> None:
    server = lab.add("openai", context_length=2048)
    text = " ".join(f"Sentence {i} reports a measurement of soil moisture." for i in range(900))
    paper = Paper.from_text("long.txt", text, title="A long paper")
    store = ResultStore(tmp_path / "results.sqlite")
    prompts = {"q": "Question about {title}:\n{content}"}
    with Cluster([worker(server, context_length=2048)], store=store, **FAST) as cluster:
        first = cluster.analyze([paper], prompts=prompts, long=True, progress=False)
        assert first.loc[0, "fit"] == "chunked" and first.loc[0, "status"] == "ok"
        steps = cluster.history()["step"].tolist()
        chunks = sum(s.startswith("chunk") for s in steps)
        combines = sum(s.startswith("combine") for s in steps)
        assert chunks > 1 and combines >= 1 and chunks + combines == len(steps)
        # Forget the combine answers only, as if the run had died after the chunks.
        with store.connection() as conn:
            conn.execute(
                "DELETE FROM cache WHERE call_id IN "
                "(SELECT id FROM calls WHERE step LIKE 'combine%')"
            )
        before = len(server.log.generations())
        second = cluster.analyze([paper], prompts=prompts, long=True, progress=False)
    assert len(server.log.generations()) - before == combines
    assert second.loc[0, "status"] == "ok" and second.loc[0, "answer"] == first.loc[0, "answer"]


def test_only_the_tasks_not_in_the_store_reach_the_workers(lab: FakeLab, tmp_path: Path) -> None:
    server = lab.add("openai")
    store = ResultStore(tmp_path / "results.sqlite")
    with Cluster([worker(server)], store=store, **FAST) as cluster:
        cluster.analyze(papers(2), prompts=PROMPTS, progress=False)
        assert sent(lab) == 4
        grown = cluster.analyze(papers(3), prompts=PROMPTS, long=True, progress=False)
    assert sent(lab) == 6  # the third paper's two prompts only
    by_paper = {p: set(g["status"]) for p, g in grown.groupby("paper")}
    assert by_paper == {
        "paper-0.txt": {"cached"},
        "paper-1.txt": {"cached"},
        "paper-2.txt": {"ok"},
    }
