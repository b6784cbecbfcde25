"""``dllm discover`` and ``dllm init --discover``, on loopback only.

Fake LM Studio, Ollama and exo servers listen on their real default ports on 127.0.0.1;
nothing here probes any address outside 127.0.0.0/8.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from dllm_notebook import Cluster
from dllm_notebook.cli._app import error_lines
from dllm_notebook.cli._bench import suggest_concurrency
from dllm_notebook.cli._discover import parse_networks, parse_ports
from dllm_notebook.cli._init import split_host
from dllm_notebook.testing import FakeLab

from .cli_helpers import dllm, free_port


@pytest.fixture(scope="module")
def default_ports() -> Iterator[FakeLab]:
    """Fake servers on 127.0.0.1:1234 (LM Studio), :11434 (Ollama) and :52415 (exo)."""
    with FakeLab() as lab:
        try:
            lab.add("lm_studio", port=1234, models=["qwen3-8b", "gemma"], loaded=["qwen3-8b"])
            lab.add("ollama", port=11434, models=["llama3.2"])
            lab.add("exo", port=52415, models=["llama-3.2-1b"])
        except OSError as exc:
            pytest.skip(f"a default port on 127.0.0.1 is taken by another program: {exc}")
        yield lab


def test_discover_finds_and_identifies_servers_on_default_ports(
    default_ports: FakeLab, tmp_path: Path
) -> None:
    result = dllm("discover", "127.0.0.1/32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[3:6]}
    assert rows == {
        "127.0.0.1:1234": "lm_studio",
        "127.0.0.1:11434": "ollama",
        "127.0.0.1:52415": "exo",
    }
    assert "qwen3-8b (loaded)" in result.stdout


def test_discover_json_entries_are_a_usable_workers_file(
    default_ports: FakeLab, tmp_path: Path
) -> None:
    result = dllm("discover", "127.0.0.1", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    types = {(w["port"], w["type"], w["model"]) for w in document["workers"]}
    assert types == {
        (1234, "lm_studio", "qwen3-8b"),
        (11434, "ollama", "llama3.2:latest"),
        (52415, "exo", "llama-3.2-1b"),
    }
    path = tmp_path / "workers.json"
    path.write_text(result.stdout, encoding="utf-8")
    with Cluster.from_config(path, probe_timeout=2.0) as cluster:
        assert cluster.check()["healthy"].all()


def test_init_offers_the_servers_discover_finds(default_ports: FakeLab, tmp_path: Path) -> None:
    answers = [
        "y", "", "studio", "3",  # LM Studio: keep its loaded model
        "n",  # not Ollama
        "n",  # not exo
        "",  # no worker by hand
    ]  # fmt: skip
    path = tmp_path / "workers.json"
    result = dllm(
        "init", "-o", str(path), "--discover", "127.0.0.1/32", cwd=tmp_path,
        stdin="\n".join(answers) + "\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (entry,) = json.loads(path.read_text(encoding="utf-8"))["workers"]
    assert entry == {
        "id": "studio",
        "host": "127.0.0.1",
        "port": 1234,
        "type": "lm_studio",
        "model": "qwen3-8b",
        "max_concurrent_requests": 3,
    }


def test_discover_exits_4_when_nothing_answers(tmp_path: Path) -> None:
    result = dllm("discover", "127.0.0.1/32", "--ports", str(free_port()), cwd=tmp_path)
    assert result.returncode == 4
    assert "No LM Studio, Ollama, llama.cpp or exo server answered on 127.0.0.1/32" in result.stderr


def test_discover_refuses_networks_larger_than_a_slash_16(tmp_path: Path) -> None:
    result = dllm("discover", "127.0.0.0/8", cwd=tmp_path)
    assert result.returncode == 2
    assert "16,777,216 addresses" in result.stderr and "at most 65,536" in result.stderr


def test_discover_needs_a_network_and_says_how_to_find_it(tmp_path: Path) -> None:
    result = dllm("discover", cwd=tmp_path)
    assert result.returncode == 2
    help_text = dllm("discover", "--help", cwd=tmp_path).stdout
    assert "ip addr" in help_text and "System Settings" in help_text


# -- the pure parts -----------------------------------------------------------------------
def test_networks_are_parsed_and_bounded() -> None:
    (net,) = parse_networks(["127.0.0.9/24"])  # host bits are fine: the subnet is meant
    assert str(net) == "127.0.0.0/24"
    assert parse_networks(["127.0.0.0/16"])[0].num_addresses == 65536
    with pytest.raises(click.BadParameter, match="at most"):
        parse_networks(["127.0.0.0/15"])
    with pytest.raises(click.BadParameter, match="not a network"):
        parse_networks(["127.0.0.1/33"])
    assert parse_ports(None) == [1234, 11434, 52415, 8080]  # llama-server's default too
    with pytest.raises(click.BadParameter, match="not a port"):
        parse_ports("1234,http")


def test_suggested_concurrency_is_where_doubling_stops_paying() -> None:
    assert suggest_concurrency({1: 20.0, 2: 39.0, 4: 41.0, 8: 40.0}) == 2
    assert suggest_concurrency({1: 20.0, 2: 40.0, 4: 80.0, 8: 150.0}) == 8
    assert suggest_concurrency({1: 20.0, 2: 21.0, 4: 60.0}) == 1
    assert suggest_concurrency({1: 5.0}) == 1


def test_hosts_typed_in_init_may_carry_a_port() -> None:
    assert split_host("192.168.1.5") == ("192.168.1.5", None)
    assert split_host("192.168.1.5:1234") == ("192.168.1.5", 1234)
    assert split_host("http://mac.local:11434") == ("mac.local", 11434)
    assert split_host("fe80::1") == ("fe80::1", None)


def test_error_lines_are_one_line_per_problem() -> None:
    from dllm_notebook import ConfigError, ConfigProblem, TaskFailed

    one = ConfigError([ConfigProblem("w.json: worker 'a' (#1): field 'port'", "expected 1-65535")])
    assert error_lines(one) == [
        "error: invalid configuration: w.json: worker 'a' (#1): field 'port': expected "
        "1-65535. Fix it; `dllm check -c FILE` validates a file."
    ]
    two = ConfigError([ConfigProblem("a", "x"), ConfigProblem("b", "y")])
    assert error_lines(two)[1:3] == ["  - a: x", "  - b: y"]
    assert error_lines(TaskFailed("every try failed;\n  start a worker")) == [
        "error: every try failed; start a worker"
    ]
    assert "run again with --debug" in error_lines(ValueError("boom"))[0]
