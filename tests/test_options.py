"""Generation options reach every server that takes them, under that server's name."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from dllm_notebook import Cluster, Paper, PresetError, TaskFailed, load_preset
from dllm_notebook._running.backends.options import OPTION_NAMES
from dllm_notebook.testing import CLIENT_TYPES, FakeLab, FakeServer

from .conftest import FAST

VALUES: dict[str, Any] = {
    "max_tokens": 48,
    "temperature": 0.3,
    "top_p": 0.9,
    "top_k": 40,
    "min_p": 0.05,
    "repeat_penalty": 1.1,
    "seed": 7,
    "stop": ["###"],
    "presence_penalty": 0.1,
    "frequency_penalty": 0.2,
}
# What each emulated server must receive for each option: the field names, or None where
# that server has no such field (the option must then not be sent there at all).
EXPECTED: dict[str, dict[str, tuple[str, ...] | None]] = {
    "llamacpp": {**{o: (o,) for o in VALUES}, "repeat_penalty": ("repeat_penalty",)},
    "vllm": {**{o: (o,) for o in VALUES}, "repeat_penalty": ("repetition_penalty",)},
    "openai": {o: (o,) for o in VALUES},
    "lm_studio": {**{o: (o,) for o in VALUES}, "min_p": None},
    "ollama": {**{o: (o,) for o in VALUES}, "max_tokens": ("num_predict",)},
    "exo": {**{o: (o,) for o in VALUES}, "min_p": None, "repeat_penalty": None},
}


def spec(server: FakeServer, dialect: str, wid: str) -> dict[str, object]:
    return {"id": wid, "host": "127.0.0.1", "port": server.port, "type": CLIENT_TYPES[dialect]}


def test_the_table_covers_exactly_the_options_presets_accept(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[options]\nbogus = 1\n[[prompts]]\nname = "a"\ntemplate = "{content}"\n')
    with pytest.raises(PresetError) as caught:
        load_preset(bad)
    allowed = re.search(r"allowed: ([^)]*)\)", str(caught.value))
    assert allowed is not None
    assert set(allowed.group(1).split(", ")) == set(OPTION_NAMES) == set(VALUES)


@pytest.mark.parametrize("dialect", list(EXPECTED))
def test_each_option_goes_out_under_the_servers_name(lab: FakeLab, dialect: str) -> None:
    server = lab.add(dialect)
    with Cluster([spec(server, dialect, "w")], **FAST) as c:
        answers = {
            option: c.map([f"Say hi. [[{option}]]"], **{option: value})[0]
            for option, value in VALUES.items()
        }
    sent = iter(server.log.generations())
    for option, value in VALUES.items():
        names = EXPECTED[dialect][option]
        answer = answers[option]
        if names is None:
            # Not sent anywhere: the only worker cannot honour it, and the user is told.
            assert not answer.ok and answer.error_type == "RequestRejected"
            assert f"no worker can honour the option {option!r}" in (answer.error or "")
            assert "'w' (" in (answer.error or "")
            continue
        assert answer.ok, (option, answer.error)
        record = next(sent)
        for name in names:
            assert record.options.get(name) == value, (option, name, record.options)
        if dialect == "vllm" and option == "repeat_penalty":
            # the openai type also sends llama.cpp's name, which vLLM ignores
            assert record.options.get("repeat_penalty") == value
    assert next(sent, None) is None  # nothing else went out


def test_a_mixed_lab_sends_min_p_only_where_it_is_honoured(
    lab: FakeLab, caplog: pytest.LogCaptureFixture
) -> None:
    exo = lab.add("exo")
    llama = lab.add("llamacpp")
    workers = [spec(exo, "exo", "mac"), spec(llama, "llamacpp", "pc")]
    prompts = [f"Summarise paper {i}. [[p{i}]]" for i in range(6)]
    with caplog.at_level(logging.WARNING, logger="dllm_notebook"), Cluster(workers, **FAST) as c:
        answers = c.map(prompts, min_p=0.05)
        plain = c.map(prompts[:2])

    assert all(a.ok and a.worker == "pc" for a in answers)
    assert all(r.options.get("min_p") == 0.05 for r in llama.log.generations()[:6])
    warnings = [r.getMessage() for r in caplog.records if "min_p" in r.getMessage()]
    assert len(warnings) == 1 and "mac" in warnings[0] and "no such field" in warnings[0]
    # Without the option, the exo worker takes its share again.
    assert all(a.ok for a in plain)
    assert all("min_p" not in r.options for r in exo.log.generations())


def test_a_presets_options_reach_ollama_under_its_names(lab: FakeLab, tmp_path: Path) -> None:
    preset = tmp_path / "sampling.toml"
    preset.write_text(
        "[options]\nmax_tokens = 40\nmin_p = 0.07\nrepeat_penalty = 1.15\ntop_k = 30\n"
        '[[prompts]]\nname = "gist"\ntemplate = "Gist of: {content}"\n'
    )
    server = lab.add("ollama")
    paper = Paper.from_text("notes.txt", "Soil microbes recover after drought. " * 20)
    with Cluster([spec(server, "ollama", "o")], **FAST) as c:
        frame = c.analyze([paper], preset=str(preset), progress=False, cache=False)

    assert frame.loc["notes.txt", "gist"]
    (record,) = server.log.generations()
    sent = record.options
    assert (sent["num_predict"], sent["min_p"], sent["repeat_penalty"], sent["top_k"]) == (
        40,
        0.07,
        1.15,
        30,
    )
    assert "max_tokens" not in sent and sent["num_ctx"] >= 4096


def test_dllm_chat_answers_from_a_worker_that_takes_the_option(lab: FakeLab) -> None:
    exo = lab.add("exo")
    llama = lab.add("llamacpp")
    workers = [spec(exo, "exo", "mac"), spec(llama, "llamacpp", "pc")]
    with Cluster(workers, **FAST) as c:
        for _ in range(3):  # whichever has more free slots, exo is never chosen
            stream = c.stream("What is soil? [[c1]]", repeat_penalty=1.2)
            assert stream.worker == "pc"
            assert "".join(stream)
    assert exo.log.generations() == []
    assert all(r.options["repeat_penalty"] == 1.2 for r in llama.log.generations())

    with Cluster([spec(exo, "exo", "mac")], **FAST) as c, pytest.raises(TaskFailed) as caught:
        c.stream("What is soil?", repeat_penalty=1.2)
    assert "no worker can honour the option 'repeat_penalty'" in str(caught.value)
    assert exo.log.generations() == []
