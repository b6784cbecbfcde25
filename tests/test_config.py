"""workers.json validation: every bad file gets its own clear message, before any request."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from dllm_notebook import Cluster, ConfigError, Secret, WorkerConfig
from dllm_notebook._config import load_config, parse_worker_spec
from dllm_notebook.testing import Behaviour, FakeLab

from .conftest import FAST

LAB_FILE = {
    "workers": [
        {
            "id": "imac-office",
            "host": "192.168.1.105",
            "port": 1234,
            "type": "lm_studio",
            "model": "mistral-7b-instruct-v0.2",
            "max_concurrent_requests": 3,
        }
    ]
}


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "workers.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
    return path


def problems(tmp_path: Path, data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data))
    return [str(p) for p in info.value.problems]


def test_reads_the_labs_existing_file_unchanged(tmp_path: Path) -> None:
    workers, settings = load_config(write(tmp_path, LAB_FILE))
    (w,) = workers
    assert w.id == "imac-office"
    assert w.base_url == "http://192.168.1.105:1234"
    assert w.type == "lm_studio" and w.model == "mistral-7b-instruct-v0.2"
    assert w.max_concurrent_requests == 3
    assert settings.health_check_interval == 30
    assert settings.request_timeout == 300
    assert settings.max_retries == 3
    assert settings.max_concurrent_batch == "auto"  # every slot of every healthy worker


def test_defaults_by_type(tmp_path: Path) -> None:
    data = {
        "workers": [
            {"id": "a", "host": "h1", "type": "lm_studio"},
            {"id": "b", "host": "h2", "type": "ollama"},
            {"id": "c", "host": "h3", "type": "exo"},
        ]
    }
    workers, _ = load_config(write(tmp_path, data))
    assert [w.base_url for w in workers] == ["http://h1:1234", "http://h2:11434", "http://h3:52415"]
    assert all(w.max_concurrent_requests == 5 for w in workers)


def test_settings_from_file_and_keywords(tmp_path: Path) -> None:
    data = {**LAB_FILE, "max_retries": 5, "request_timeout": 60}
    _, settings = load_config(write(tmp_path, data), overrides={"request_timeout": 10})
    assert settings.max_retries == 5
    assert settings.request_timeout == 10


def test_hedging_is_on_unless_the_file_turns_it_off(tmp_path: Path) -> None:
    _, settings = load_config(write(tmp_path, LAB_FILE))
    assert settings.hedge is True
    _, settings = load_config(write(tmp_path, {**LAB_FILE, "hedge": False}))
    assert settings.hedge is False
    (msg,) = problems(tmp_path, json.dumps({**LAB_FILE, "hedge": "no"}))
    assert "setting 'hedge'" in msg and "expected true or false" in msg


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    text = '{\n  "workers": [\n    {"id": "a", "host": "h" "type": "ollama"}\n  ]\n}'
    (msg,) = problems(tmp_path, text)
    assert "workers.json: line 3, column 29" in msg
    assert "invalid JSON" in msg


def test_missing_required_field_names_worker_and_field(tmp_path: Path) -> None:
    (msg,) = problems(tmp_path, {"workers": [{"id": "mini", "type": "ollama"}]})
    assert "worker 'mini' (#1): field 'host'" in msg
    assert "missing required field" in msg


def test_wrong_type_says_what_was_expected(tmp_path: Path) -> None:
    data = {"workers": [{"id": "a", "host": "h", "type": "ollama", "max_concurrent_requests": "3"}]}
    (msg,) = problems(tmp_path, data)
    assert "field 'max_concurrent_requests'" in msg
    assert "expected a whole number, got a string ('3')" in msg


def test_unknown_type_lists_allowed_ones(tmp_path: Path) -> None:
    (msg,) = problems(tmp_path, {"workers": [{"id": "a", "host": "h", "type": "lmstudio"}]})
    assert "unknown type 'lmstudio'" in msg
    for allowed in ("'lm_studio'", "'ollama'", "'exo'", "'openai'"):
        assert allowed in msg
    assert "did you mean 'lm_studio'?" in msg


def test_duplicate_ids(tmp_path: Path) -> None:
    data = {
        "workers": [
            {"id": "mac", "host": "h1", "type": "ollama"},
            {"id": "mac", "host": "h2", "type": "ollama"},
        ]
    }
    (msg,) = problems(tmp_path, data)
    assert "worker 'mac' (#2): field 'id'" in msg and "duplicate id" in msg


@pytest.mark.parametrize("port", [0, 70000, -1])
def test_port_out_of_range(tmp_path: Path, port: int) -> None:
    (msg,) = problems(
        tmp_path, {"workers": [{"id": "a", "host": "h", "type": "ollama", "port": port}]}
    )
    assert "field 'port'" in msg and "from 1 to 65535" in msg


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    data = {
        "workers": [
            {"id": "a", "host": "h", "type": "vllm"},
            {"id": "b", "type": "ollama", "port": 99999},
            {"id": "a", "host": "h", "type": "ollama"},
        ]
    }
    msgs = problems(tmp_path, data)
    assert len(msgs) == 4  # unknown type, missing host, bad port, duplicate id
    assert any("unknown type 'vllm'" in m for m in msgs)
    assert str(tmp_path / "workers.json") in str(load_config_error(tmp_path, data))


def load_config_error(tmp_path: Path, data: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data))
    return info.value


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dllm init"):
        Cluster.from_config(tmp_path / "nope.json")


def test_typo_in_field_name_is_caught(tmp_path: Path) -> None:
    data = {"workers": [{"id": "a", "host": "h", "type": "ollama", "prot": 1}]}
    (msg,) = problems(tmp_path, data)
    assert "did you mean 'port'?" in msg


def test_unrelated_extra_fields_are_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = {"workers": [{"id": "a", "host": "h", "type": "ollama", "notes": "desk by the window"}]}
    with caplog.at_level(logging.WARNING, logger="dllm_notebook"):
        workers, _ = load_config(write(tmp_path, data))
    assert workers[0].id == "a"
    assert "ignoring unknown field 'notes'" in caplog.text


def test_openai_type_needs_a_port(tmp_path: Path) -> None:
    (msg,) = problems(tmp_path, {"workers": [{"id": "a", "host": "h", "type": "openai"}]})
    assert "required for type 'openai'" in msg


def test_bad_keyword_setting() -> None:
    with pytest.raises(ConfigError, match="did you mean 'max_retries'"):
        Cluster(["ollama://127.0.0.1:9"], max_retry=2)


def test_api_key_never_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_KEY", "sk-very-secret-1234")
    data = {
        "workers": [
            {"id": "a", "host": "h", "type": "openai", "port": 8000, "api_key_env": "LAB_KEY"},
            {"id": "b", "host": "h", "type": "openai", "port": 8001, "api_key": "sk-inline-5678"},
        ]
    }
    workers, _ = load_config(write(tmp_path, data))
    assert isinstance(workers[0].api_key, Secret)
    assert workers[0].api_key.reveal() == "sk-very-secret-1234"
    for w in workers:
        assert "sk-" not in repr(w) and "sk-" not in str(w)
        assert "sk-" not in repr(w.api_key)


def test_api_key_env_not_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MISSING_KEY", raising=False)
    data = {"workers": [{"id": "a", "host": "h", "type": "exo", "api_key_env": "MISSING_KEY"}]}
    (msg,) = problems(tmp_path, data)
    assert "'MISSING_KEY' is not set" in msg


@pytest.mark.parametrize(
    ("spec", "url", "kind"),
    [
        ("http://192.168.1.105:1234", "http://192.168.1.105:1234", "auto"),
        ("ollama://192.168.1.106", "http://192.168.1.106:11434", "ollama"),
        ("lmstudio://mac-mini", "http://mac-mini:1234", "lm_studio"),
        ("exo://studio", "http://studio:52415", "exo"),
        ("openai://box:8080", "http://box:8080", "openai"),
        ("https://gpu.lab:8443", "https://gpu.lab:8443", "auto"),
    ],
)
def test_url_quick_form(spec: str, url: str, kind: str) -> None:
    cfg = parse_worker_spec(spec, 0)
    assert isinstance(cfg, WorkerConfig)
    assert cfg.base_url == url and cfg.type == kind


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("ftp://host", "unknown scheme 'ftp'"),
        ("http://host:99999", "port out of range"),
        ("openai://box", "needs a port"),
    ],
)
def test_bad_urls(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        Cluster([spec])


def test_a_path_string_is_not_a_worker_list() -> None:
    with pytest.raises(ConfigError, match=r"Cluster\.from_config"):
        Cluster("config/workers.json")


def test_a_cap_below_the_workers_slots_is_pointed_out(caplog: pytest.LogCaptureFixture) -> None:
    workers = [f"ollama://127.0.0.1:{port}" for port in (9, 10, 11)]  # 5 slots each
    with caplog.at_level(logging.WARNING, logger="dllm_notebook"):
        Cluster(workers, store=None, max_concurrent_batch=8).close()
    assert any("caps the cluster at 8" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dllm_notebook"):
        Cluster(workers, store=None, max_concurrent_batch=15).close()
    assert not any("caps the cluster" in r.getMessage() for r in caplog.records)


def test_by_default_a_big_lab_uses_every_slot(lab: FakeLab) -> None:
    # 12 workers x 5 slots = 60 requests at once: more than the old fixed cap of 50.
    behaviour = Behaviour(slots=5, decode_tps=8)  # two seconds per answer
    servers = [lab.add("openai", behaviour=behaviour) for _ in range(12)]
    workers = [f"openai://127.0.0.1:{s.port}" for s in servers]
    settings = {**FAST, "probe_timeout": 10.0}  # twelve servers on a busy 2-core machine
    with Cluster(workers, store=None, **settings) as cluster:
        assert cluster.settings.max_concurrent_batch == "auto"
        answers = cluster.map([f"question {i} [[b{i}]]" for i in range(180)])
    assert all(a.ok for a in answers)
    assert lab.log.max_in_flight() > 50  # the old cap; 60 on a quiet machine


def test_a_workers_stream_setting_is_true_false_or_auto(tmp_path: Path) -> None:
    entry = {"id": "mac", "host": "10.0.0.2", "type": "ollama"}
    workers, _ = load_config(write(tmp_path, {"workers": [entry]}))
    assert workers[0].stream == "auto"
    for value in (True, False, "auto"):
        workers, _ = load_config(write(tmp_path, {"workers": [{**entry, "stream": value}]}))
        assert workers[0].stream == value
    (msg,) = problems(tmp_path, {"workers": [{**entry, "stream": "yes"}]})
    assert "field 'stream'" in msg and 'expected true, false or "auto"' in msg
