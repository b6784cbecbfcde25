"""The scheduling bench's lab: emulated Macs, synthetic papers, the ideal bound, the checks.

Used by ``bench/bench_schedule.py`` and tested by ``tests/test_bench_lab.py``.

Every machine is a fake server (``dllm_notebook.testing``) whose speed is one base speed
times its tier's factor: prefill, decode *and* the fixed latency all scale together, so a
task of work ``w`` (nominal seconds on a speed-1 machine) takes exactly ``w / speed`` on any
machine. The ideal makespan is then the fluid bound: total work / sum of slots x speed
(with a dead machine's capacity counted only until its death).

>>> machines = mixed_lab(10)
>>> spec = lab_spec(machines, time_scale=0.05)        # for FakeLab.from_spec
>>> ideal = ideal_makespan(total_work, machines)      # nominal seconds
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dllm_notebook import Paper, Prompt, load_papers
from dllm_notebook.testing import (
    CHARS_PER_TOKEN,
    CLIENT_TYPES,
    common_prefix_length,
    count_tokens,
    expected_echo,
    markers,
    prompt_digest,
)

__all__ = [
    "ANSWER_TOKENS",
    "PAPER_FIRST",
    "PROMPTS",
    "TIERS",
    "AnswerCheck",
    "Expected",
    "Machine",
    "Tier",
    "cached_work",
    "check_answers",
    "expected_cells",
    "expected_work",
    "ideal_makespan",
    "lab_spec",
    "logged_work",
    "mixed_lab",
    "settings_for",
    "task_work",
    "worker_configs",
    "write_papers",
]

BASE_PREFILL_TPS = 300.0
"""Prefill tokens per second of the slowest tier (a MacBook Air)."""
BASE_DECODE_TPS = 15.0
BASE_LATENCY_S = 0.05
"""Fixed cost of one request on the slowest tier, nominal seconds."""
ANSWER_TOKENS = 256
CONTEXT_LENGTH = 32768
"""Every server's window: large enough that no paper is chunked."""

# Plain OpenAI servers and exo do not say their window; a user writes it in the config.
_SILENT_WINDOW = ("openai", "exo")


@dataclass(frozen=True)
class Tier:
    """A kind of Mac: server-side parallel slots, and speed relative to the base tier."""

    name: str
    slots: int
    speed: float


TIERS = {
    "air": Tier("air", slots=2, speed=1.0),
    "pro": Tier("pro", slots=4, speed=2.0),
    "studio": Tier("studio", slots=6, speed=3.0),
    "ultra": Tier("ultra", slots=8, speed=4.0),
}

# One group of ten machines; bigger labs repeat it. With ``extra``, the client config of the
# machines marked here allows that many requests beyond the server's slots, and those wait
# in the server's queue (every server queues what it cannot run at once).
_GROUP: tuple[tuple[str, str, bool], ...] = (
    ("air", "lm_studio", False),
    ("pro", "ollama", True),
    ("air", "openai", False),
    ("studio", "llamacpp", True),
    ("pro", "lm_studio", False),
    ("air", "ollama", False),
    ("ultra", "llamacpp", False),
    ("pro", "vllm", False),
    ("air", "ollama", False),
    ("studio", "exo", False),
)


@dataclass(frozen=True)
class Machine:
    """One emulated Mac: its fake server's dialect and tier, and the client's limit."""

    id: str
    dialect: str
    tier: Tier
    client_limit: int
    """``max_concurrent_requests`` in the client's config (may exceed the server's slots)."""

    @property
    def capacity(self) -> float:
        """Work (speed-1 seconds) this machine does per second: slots x speed."""
        return self.tier.slots * self.tier.speed

    def behaviour(self, time_scale: float, *, prefix_cache: bool = False) -> dict[str, Any]:
        """The fake server's :class:`~dllm_notebook.testing.Behaviour` fields."""
        speed = self.tier.speed
        return {
            "prefix_cache": prefix_cache,
            "prefill_tps": BASE_PREFILL_TPS * speed,
            "decode_tps": BASE_DECODE_TPS * speed,
            "base_latency": BASE_LATENCY_S / speed,
            "slots": self.tier.slots,
            "answer_tokens": ANSWER_TOKENS,
            "time_scale": time_scale,
        }


QUEUE_EXTRA = 2
"""Requests beyond its slots that the ``queue10`` scenario lets the client send."""


def mixed_lab(count: int, *, extra: int = 0, over: str | None = None) -> list[Machine]:
    """``count`` machines of mixed tiers and dialects (groups of ten repeated).

    Ten machines: 4 Air (2 slots, 1x), 3 Pro (4 slots, 2x), 2 Studio (6 slots, 3x) and
    1 Ultra (8 slots, 4x): 40 slots, capacity 100. Each client config says the machine's
    slots, except that with ``extra`` two of every ten allow that many more: those marked
    in the group, or with ``over`` those of that dialect.
    """
    machines = []
    for index in range(count):
        tier_name, dialect, queues = _GROUP[index % len(_GROUP)]
        tier = TIERS[tier_name]
        if over is not None:
            queues = dialect == over
        limit = tier.slots + extra if queues else tier.slots
        machines.append(Machine(f"{tier_name}-{index + 1:02d}", dialect, tier, limit))
    return machines


def lab_spec(
    machines: Sequence[Machine], *, time_scale: float, prefix_cache: bool = False
) -> dict[str, Any]:
    """The JSON-like spec for ``FakeLab.from_spec`` or ``python -m dllm_notebook.testing lab``.

    ``prefix_cache``: every server keeps a prefix cache per slot (``Behaviour.prefix_cache``).
    """
    return {
        "servers": [
            {
                "dialect": m.dialect,
                "id": m.id,
                "context_length": CONTEXT_LENGTH,
                "behaviour": m.behaviour(time_scale, prefix_cache=prefix_cache),
            }
            for m in machines
        ]
    }


def worker_configs(
    machines: Sequence[Machine], ports: Mapping[str, int], *, stream: bool | str | None = None
) -> list[dict[str, Any]]:
    """The client's worker entries (as in workers.json), given each machine's port.
    ``stream``: every worker's ``stream`` setting (``None``: left out, so ``"auto"``)."""
    configs = []
    for m in machines:
        config: dict[str, Any] = {
            "id": m.id,
            "host": "127.0.0.1",
            "port": ports[m.id],
            "type": CLIENT_TYPES[m.dialect],
            "max_concurrent_requests": m.client_limit,
        }
        if m.dialect in _SILENT_WINDOW:
            config["context_length"] = CONTEXT_LENGTH
        if stream is not None:
            config["stream"] = stream
        configs.append(config)
    return configs


def settings_for(machines: Sequence[Machine]) -> dict[str, Any]:
    """The cluster-wide settings the benches run the lab with."""
    return {
        "max_concurrent_batch": sum(m.client_limit for m in machines),
        "health_check_interval": 5.0,
        "request_timeout": 120.0,
        "probe_timeout": 2.0,
        "no_worker_timeout": 30.0,
    }


# -- work and the ideal bound ------------------------------------------------------------
def task_work(prompt_tokens: int, completion_tokens: int) -> float:
    """Nominal seconds one task takes on a speed-1 machine: latency, prefill, decode."""
    return BASE_LATENCY_S + prompt_tokens / BASE_PREFILL_TPS + completion_tokens / BASE_DECODE_TPS


def ideal_makespan(
    total_work: float,
    machines: Sequence[Machine],
    deaths: Mapping[str, float] | None = None,
    ready: Mapping[str, float] | None = None,
) -> float:
    """The fluid lower bound on the makespan, in nominal seconds.

    The smallest ``T`` at which the lab's capacity, integrated from 0 to ``T``, covers
    ``total_work``. ``deaths`` maps a machine id to the nominal second it died: its
    capacity counts until then. ``ready`` maps a machine id to the second its model was
    loaded (a cold start): its capacity counts from then. Raises ValueError if the lab
    dies before the work is done.
    """
    deaths, ready = deaths or {}, ready or {}
    unknown = sorted((set(deaths) | set(ready)) - {m.id for m in machines})
    if unknown:
        raise ValueError(f"deaths or ready name machines not in the lab: {', '.join(unknown)}")
    changes = [(ready.get(m.id, 0.0), m.capacity) for m in machines]
    changes += [
        (max(deaths[m.id], ready.get(m.id, 0.0)), -m.capacity) for m in machines if m.id in deaths
    ]
    capacity, left, now = 0.0, total_work, 0.0
    for at, change in sorted(changes):
        if capacity > 0 and capacity * (at - now) >= left:
            break
        left -= capacity * (at - now)
        now = at
        capacity += change
    if capacity <= 1e-9:
        raise ValueError("every machine died before the work was done: no finite bound")
    return now + left / capacity


# -- papers and prompts ------------------------------------------------------------------
PROMPTS = {
    "q1": "[[prompt-q1]] What is the research question of this paper?\n\n{content}\n\nAnswer:",
    "q2": "[[prompt-q2]] Which methods does the paper use?\n\n{content}\n\nAnswer:",
    "q3": "[[prompt-q3]] Which organism or system was studied?\n\n{content}\n\nAnswer:",
    "q4": "[[prompt-q4]] What are the main findings?\n\n{content}\n\nAnswer:",
    "q5": "[[prompt-q5]] What limitations do the authors state?\n\n{content}\n\nAnswer:",
}
"""Five prompts; each carries a marker the fake servers echo. The marker and question come
first, so no two prompts of a paper share a prefix (the layout before issue #15)."""

PAPER_FIRST = {
    name: "Title: {title}\n\n{content}\n\nQuestion: " + text.split("\n\n")[0] + "\nAnswer:"
    for name, text in PROMPTS.items()
}
"""The same five prompts in the built-in presets' layout: title and paper first, then the
marked question, so a paper's prompts share everything up to the question."""

_VOCABULARY = (
    "soil moisture crop yield drought stress root growth nitrogen uptake canopy cover leaf area "
    "index field trial plot sample model regression variance treatment control season rainfall "
    "temperature irrigation biomass grain protein microbial community sequencing analysis "
    "measurement sensor satellite estimate uncertainty result effect significant increase "
    "decrease response climate region site year method data"
)
_WORDS = _VOCABULARY.split()


def write_papers(
    folder: Path,
    count: int,
    *,
    seed: int = 7,
    tokens: tuple[int, int] = (2000, 15000),
    first: int = 0,
) -> dict[str, str]:
    """Write ``count`` synthetic ``.txt`` papers, numbered from ``first``; returns each
    file's unique marker.

    Lengths are drawn uniformly from ``tokens`` (as the fake servers count them: 4
    characters a token). The marker sits in the middle of the body, not in the title.
    """
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}
    for number in range(first, first + count):
        name = f"paper-{number:03d}.txt"
        marker = f"[[paper-{number:03d}-{rng.getrandbits(32):08x}]]"
        target = rng.randint(*tokens) * 4
        title = f"Paper {number}: " + " ".join(rng.choice(_WORDS) for _ in range(6))
        words: list[str] = []
        size = len(title) + len(marker) + 4
        while size < target:
            word = rng.choice(_WORDS)
            words.append(word)
            size += len(word) + 1
        half = len(words) // 2
        body = (
            _paragraphs(words[:half]) + f"\n\nReference {marker}.\n\n" + _paragraphs(words[half:])
        )
        (folder / name).write_text(title + "\n\n" + body + "\n", encoding="utf-8")
        out[name] = marker
    return out


def _paragraphs(words: Sequence[str], size: int = 120) -> str:
    return "\n\n".join(" ".join(words[i : i + size]) for i in range(0, len(words), size))


@dataclass(frozen=True)
class Expected:
    """What the servers must see and answer for one paper x prompt."""

    paper: str
    prompt: str
    markers: tuple[str, ...]
    """The markers of the prompt as sent, in order (the prompt's, then the paper's)."""
    digest: str
    echo: str
    prompt_tokens: int
    shared_tokens: int = 0
    """Tokens at the start of the prompt that every prompt of its paper shares."""


def expected_cells(
    folder: Path | Iterable[Paper], prompts: Mapping[str, str] = PROMPTS
) -> dict[tuple[str, str], Expected]:
    """Every (paper, prompt) of ``analyze(folder, prompts=prompts)`` and its prompt as sent;
    ``folder`` may also be the papers themselves (in-memory ones, ``Paper.from_text``)."""
    out: dict[tuple[str, str], Expected] = {}
    for paper in load_papers(folder) if isinstance(folder, Path) else folder:
        fields = {"content": paper.text, "filename": paper.name, "title": paper.title}
        texts = {name: Prompt(name, t).render(fields) for name, t in prompts.items()}
        first = next(iter(texts.values()))
        shared = min(common_prefix_length(first, t) for t in texts.values()) // CHARS_PER_TOKEN
        for name, text in texts.items():
            out[(paper.name, name)] = Expected(
                paper=paper.name,
                prompt=name,
                markers=tuple(markers(text)),
                digest=prompt_digest(text),
                echo=expected_echo(text),
                prompt_tokens=count_tokens(text),
                shared_tokens=shared if len(texts) > 1 else 0,
            )
    return out


# -- checking the answers ----------------------------------------------------------------
@dataclass
class AnswerCheck:
    """What the marker check found. ``ok`` when no answer is lost, doubled or misplaced."""

    problems: list[str] = field(default_factory=list)
    generations: int = 0
    """Answers the servers generated for our prompts (hedged or retried ones included)."""
    duplicated: int = 0
    """Cells whose prompt was generated more than once (allowed: hedging)."""

    @property
    def ok(self) -> bool:
        return not self.problems


def check_answers(
    frame: pd.DataFrame,
    expected: Mapping[tuple[str, str], Expected],
    generated: Counter[str],
    *,
    max_generations: int = 2,
) -> AnswerCheck:
    """Check analyze()'s long form against the expected cells and the servers' logs.

    ``generated`` counts the servers' successful generations per prompt digest. Each cell
    must be recorded once, answered ``ok`` with its prompt unchunked, and its answer must
    start with the echo of its own prompt (digest and markers) and carry no other markers.
    Each cell's prompt must have been generated 1 to ``max_generations`` times, and
    nothing else generated.
    """
    check = AnswerCheck()
    problems = check.problems
    keys = list(zip(frame["paper"].astype(str), frame["prompt"].astype(str), strict=True))
    doubled = [k for k, n in Counter(keys).items() if n > 1]
    if doubled:
        problems.append(f"{len(doubled)} cells recorded more than once, e.g. {doubled[0]}")
    missing = set(expected) - set(keys)
    if missing:
        problems.append(f"{len(missing)} cells lost, e.g. {sorted(missing)[0]}")
    extra = set(keys) - set(expected)
    if extra:
        problems.append(f"{len(extra)} unexpected rows, e.g. {sorted(extra)[0]}")
    rows = frame[["paper", "prompt", "answer", "status", "fit"]].itertuples(index=False)
    for paper, prompt, answer, status, fit in rows:
        want = expected.get((str(paper), str(prompt)))
        where = f"{paper} x {prompt}"
        if want is None:
            continue
        if status != "ok":
            problems.append(f"{where}: status {status!r}, not 'ok'")
            continue
        if fit != "whole":
            problems.append(f"{where}: fit {fit!r}; the bench needs every paper whole")
        text = "" if pd.isna(answer) else str(answer)
        if not text.startswith(want.echo) or tuple(markers(text)) != want.markers:
            problems.append(f"{where}: misplaced answer {text[:60]!r}")
    digests = {e.digest: key for key, e in expected.items()}
    for digest, count in generated.items():
        key = digests.get(digest)
        if key is None:
            problems.append(f"the servers generated an unknown prompt {digest[:16]} {count}x")
            continue
        check.generations += count
        if count > 1:
            check.duplicated += 1
        if count > max_generations:
            problems.append(f"{key[0]} x {key[1]}: generated {count} times")
    never = [key for key, e in expected.items() if generated[e.digest] == 0]
    if never:
        problems.append(f"{len(never)} cells never generated by a server, e.g. {never[0]}")
    return check


def logged_work(
    records: Iterable[Any], expected: Mapping[tuple[str, str], Expected]
) -> tuple[float, list[str]]:
    """Total work (nominal speed-1 seconds) of the expected cells, from the servers' logs.

    Uses the tokens the servers counted for each prompt's first successful generation.
    Returns the work and the problems found (a prompt counted differently from the
    bench's expectation, or never answered).
    """
    seen: dict[str, tuple[int, int]] = {}
    for r in records:
        if r.digest and r.generated and r.digest not in seen:
            seen[r.digest] = (int(r.prompt_tokens or 0), int(r.completion_tokens or 0))
    work, problems = 0.0, []
    for key, cell in expected.items():
        tokens = seen.get(cell.digest)
        if tokens is None:
            problems.append(f"{key[0]} x {key[1]}: no generation in the servers' logs")
            continue
        if tokens[0] != cell.prompt_tokens:
            problems.append(
                f"{key[0]} x {key[1]}: the server counted {tokens[0]} prompt tokens, "
                f"the bench expected {cell.prompt_tokens}"
            )
        work += task_work(*tokens)
    return work, problems


def cached_work(records: Iterable[Any], expected: Mapping[tuple[str, str], Expected]) -> float:
    """Total work if each paper's shared prefix were read once: the ideal with a perfect
    prefix cache (the servers' counted tokens, as in :func:`logged_work`)."""
    seen: dict[str, tuple[int, int]] = {}
    for r in records:
        if r.digest and r.generated and r.digest not in seen:
            seen[r.digest] = (int(r.prompt_tokens or 0), int(r.completion_tokens or 0))
    work, read = 0.0, set()
    for cell in expected.values():
        prompt, answer = seen.get(cell.digest, (cell.prompt_tokens, ANSWER_TOKENS))
        if cell.paper in read:
            prompt -= cell.shared_tokens
        read.add(cell.paper)
        work += task_work(prompt, answer)
    return work


def expected_work(expected: Mapping[tuple[str, str], Expected]) -> float:
    """Total work predicted before a run (every answer ``ANSWER_TOKENS`` long)."""
    return sum(task_work(e.prompt_tokens, ANSWER_TOKENS) for e in expected.values())
