"""The Cluster against real HTTP servers speaking each dialect."""

from __future__ import annotations

import asyncio
import threading

import pytest

from dllm_notebook import Answer, Cluster, ConfigError, SyncCallInLoop, TaskFailed
from dllm_notebook.testing import Behaviour, FakeLab, expected_echo

from .conftest import FAST

DIALECTS = ["openai", "llamacpp", "vllm", "exo", "lm_studio", "ollama"]
SCHEMES = {
    "openai": "openai",
    "llamacpp": "llamacpp",
    "vllm": "openai",
    "exo": "exo",
    "lm_studio": "lmstudio",
    "ollama": "ollama",
}


def url_for(server_url: str, dialect: str) -> str:
    return server_url.replace("http://", f"{SCHEMES[dialect]}://")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_ask_and_map_on_each_dialect(lab: FakeLab, dialect: str) -> None:
    server = lab.add(dialect, models=["m-1"])
    with Cluster([url_for(server.url, dialect)], **FAST) as cluster:
        answer = cluster.ask("What is the research question? [[q1]]")
        assert answer.text.startswith(expected_echo("What is the research question? [[q1]]"))
        assert answer.worker == cluster.workers[0].id
        assert answer.model and "m-1" in answer.model
        if dialect != "exo":  # exo sends no usage block; the counts stay unknown, not zero
            assert answer.prompt_tokens and answer.completion_tokens
        assert answer.latency_s is not None and answer.latency_s > 0
        assert answer.finish_reason in ("stop", "length")
        answers = cluster.map([f"prompt {i}" for i in range(20)])
    assert [a.text.split()[:2] for a in answers] == [
        expected_echo(f"prompt {i}").split()[:2] for i in range(20)
    ]
    assert server.log.generation_counts() == {
        k: 1 for k in server.log.generation_counts()
    }  # no prompt generated twice


@pytest.mark.parametrize("dialect", ["lm_studio", "ollama", "openai", "llamacpp"])
def test_type_is_detected_by_probing(lab: FakeLab, dialect: str) -> None:
    server = lab.add(dialect)
    with Cluster([server.url], **FAST) as cluster:
        frame = cluster.check()
        expected = {"llamacpp": "llama_cpp"}.get(dialect, dialect)
        assert frame.loc[cluster.workers[0].id, "type"] == expected
        assert cluster.ask("hello").ok


def test_lm_studio_stats_give_tokens_per_second(lab: FakeLab) -> None:
    server = lab.add("lm_studio", models=["m"])
    with Cluster([url_for(server.url, "lm_studio")], **FAST) as cluster:
        answer = cluster.ask("hi")
        assert answer.tokens_per_second and answer.tokens_per_second > 0
        metrics = cluster.metrics(totals=True)
    assert metrics.loc["total", "successes"] == 1
    assert metrics.loc["total", "requests"] == 1


def test_ask_raises_a_clear_error_when_every_try_fails(lab: FakeLab) -> None:
    server = lab.add("openai")
    server.update(error_rate=1.0)
    with (
        Cluster([url_for(server.url, "openai")], max_retries=2, **FAST) as cluster,
        pytest.raises(TaskFailed, match=r"failed after 3 tries.*HTTP 500"),
    ):
        cluster.ask("hi")


def test_async_twins_match_the_sync_api(lab: FakeLab) -> None:
    server = lab.add("ollama")
    with Cluster([url_for(server.url, "ollama")], **FAST) as cluster:
        sync_answers = cluster.map(["a", "b"])

        async def in_a_cell() -> tuple[Answer, list[Answer]]:
            # A running loop on this thread, like Jupyter's.
            return await cluster.aask("a"), await cluster.amap(["a", "b"])

        one, many = asyncio.run(in_a_cell())
        frame = asyncio.run(cluster.acheck())
    assert one.text == sync_answers[0].text
    assert [a.text for a in many] == [a.text for a in sync_answers]
    assert bool(frame["healthy"].all())


def test_sync_call_from_an_event_listener_is_refused(lab: FakeLab) -> None:
    server = lab.add("openai")
    errors: list[BaseException] = []
    with Cluster([url_for(server.url, "openai")], **FAST) as cluster:

        def listener(event: object) -> None:
            try:
                cluster.ask("nested")
            except SyncCallInLoop as exc:
                errors.append(exc)

        cluster.subscribe(listener)
        cluster.ask("outer")
    assert errors and "async twin" in str(errors[0])


def test_repr_shows_a_text_table(lab: FakeLab) -> None:
    server = lab.add("openai")
    with Cluster([url_for(server.url, "openai")], **FAST) as cluster:
        cluster.check()
        text = repr(cluster)
        html = cluster._repr_html_()
    assert "healthy" in text and server.url.split("://")[1] in text
    assert "1/1 healthy" in text
    assert "<table" in html


def test_cluster_works_from_a_thread_while_another_runs(lab: FakeLab) -> None:
    server = lab.add("openai")
    server.update(base_latency=0.02, slots=4)
    with Cluster([url_for(server.url, "openai")], **FAST) as cluster:
        results: dict[str, list[Answer]] = {}

        def run(name: str) -> None:
            results[name] = cluster.map([f"{name}-{i}" for i in range(10)])

        threads = [threading.Thread(target=run, args=(n,)) for n in ("x", "y")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for name in ("x", "y"):
        assert [a.text.split()[1] for a in results[name]] == [
            expected_echo(f"{name}-{i}").split()[1] for i in range(10)
        ]


def test_ask_pinned_to_a_worker_goes_there_and_names_the_workers_when_unknown(
    lab: FakeLab,
) -> None:
    first, second = lab.add("openai", models=["m"]), lab.add("ollama", models=["m"])
    workers = [
        {"id": "first", "host": "127.0.0.1", "port": first.port, "type": "openai"},
        {"id": "second", "host": "127.0.0.1", "port": second.port, "type": "ollama"},
    ]
    with Cluster(workers, **FAST) as cluster:
        answers = [cluster.ask(f"pinned {i} [[k{i}]]", worker="second") for i in range(4)]
        assert {a.worker for a in answers} == {"second"}
        with pytest.raises(ConfigError, match="no worker 'third'; the workers are first, second"):
            cluster.ask("hello", worker="third")
        with pytest.raises(ConfigError, match="no worker 'third'"):
            cluster.stream("hello", worker="third")

        async def pinned_async() -> Answer:
            return await cluster.aask("async [[a1]]", worker="first")

        assert asyncio.run(pinned_async()).worker == "first"
    assert len(first.log.generations()) == 1
    assert len(second.log.generations()) == 4


def test_ask_pinned_to_a_failing_worker_fails_instead_of_moving(lab: FakeLab) -> None:
    broken = lab.add("openai", models=["m"], behaviour=Behaviour(error_rate=1.0))
    good = lab.add("openai", models=["m"])
    workers = [
        {"id": "broken", "host": "127.0.0.1", "port": broken.port, "type": "openai"},
        {"id": "good", "host": "127.0.0.1", "port": good.port, "type": "openai"},
    ]
    with Cluster(workers, **FAST) as cluster, pytest.raises(TaskFailed):
        cluster.ask("only there [[b1]]", worker="broken")
    assert good.log.generations() == []
    assert len(broken.log.generations()) >= 1  # tried (and refused) there only
