"""Configuration: the lab's ``workers.json``, quick URL forms, and cluster-wide settings.

Everything is validated before any request is sent. All problems are collected and raised
together as one :class:`~dllm_notebook.ConfigError`, one line per problem, each naming the
file, the worker (by id and position) and the field.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from ._errors import ConfigError, ConfigProblem

__all__ = [
    "CACHE_ENV",
    "DEFAULT_PORTS",
    "WORKER_TYPES",
    "ClusterSettings",
    "Secret",
    "WorkerConfig",
    "cache_dir",
]

CACHE_ENV = "DLLM_CACHE_DIR"


def cache_dir() -> Path:
    """The user cache folder (models, the user result store, shared files): ``$DLLM_CACHE_DIR``
    if set, else the platform's user cache."""
    from platformdirs import user_cache_dir

    override = os.environ.get(CACHE_ENV)
    return Path(override).expanduser() if override else Path(user_cache_dir("dllm_notebook"))


log = logging.getLogger("dllm_notebook")

WORKER_TYPES = ("lm_studio", "ollama", "exo", "openai", "llama_cpp")
DEFAULT_PORTS = {"lm_studio": 1234, "ollama": 11434, "exo": 52415, "llama_cpp": 8080}
_URL_SCHEMES = {
    "lmstudio": "lm_studio",
    "lm_studio": "lm_studio",
    "ollama": "ollama",
    "exo": "exo",
    "openai": "openai",
    "llamacpp": "llama_cpp",
    "llama_cpp": "llama_cpp",
}


class Secret:
    """A string that never shows itself in a ``repr``, a log line or an export."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class WorkerConfig:
    """One LLM server in the lab.

    >>> WorkerConfig(id="imac-office", host="192.168.1.105", type="lm_studio",
    ...              model="mistral-7b-instruct-v0.2", max_concurrent_requests=3)
    """

    id: str
    host: str
    type: str = "openai"
    """``lm_studio``, ``ollama``, ``exo``, ``openai``, ``llama_cpp`` (``llama-server``);
    ``auto`` means: detect by probing."""
    port: int | None = None
    model: str | None = None
    """The model to use; when missing, the server's loaded (or first) model."""
    max_concurrent_requests: int = 5
    api_key: Secret | None = field(default=None, repr=False)
    scheme: str = "http"
    context_length: int | None = None
    """Overrides (caps) the context window the server reports."""
    timeout: float | None = None
    """Seconds to wait for one answer; defaults to the cluster's ``request_timeout``."""
    slots_from_server: bool = False
    """The config gave no ``max_concurrent_requests``: where the server reports how many
    requests it decodes at once (llama.cpp's ``/slots``), that number is used instead, and
    an ``openai`` worker learns it (see :attr:`learns_concurrency`)."""
    stream: bool | Literal["auto"] = "auto"
    """Whether batch answers are streamed: the time to the first token then shows a wait
    in the server's queue at once, not when the answer ends. ``"auto"``: for ``ollama``
    (it does not say its slots, and its stream ends with the same counts and durations as
    a whole answer); not for ``llama_cpp`` (its ``/slots`` caps the limit), ``lm_studio``
    (its streams carry no ``stats``), ``openai`` or ``exo`` (a vLLM server streams
    hundreds of answers at once: client CPU for every token)."""

    @property
    def learns_concurrency(self) -> bool:
        """Whether the number of requests in flight is learned from the server's answers:
        an ``openai`` worker (vLLM, SGLang, a Mac's LM Studio: from 4 slots to hundreds)
        whose config gives no ``max_concurrent_requests``. Other types default to 5 (or,
        for ``llama_cpp``, the server's slot count)."""
        return self.slots_from_server and self.type == "openai"

    @property
    def base_url(self) -> str:
        port = self.port if self.port is not None else DEFAULT_PORTS.get(self.type, 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{port}"

    def __repr__(self) -> str:
        key = ", api_key=<set>" if self.api_key is not None else ""
        model = f", model={self.model!r}" if self.model else ""
        return (
            f"WorkerConfig(id={self.id!r}, url={self.base_url!r}, type={self.type!r}{model}{key})"
        )


@dataclass(frozen=True)
class ClusterSettings:
    """Cluster-wide settings. Each can come from the config file or a keyword argument."""

    health_check_interval: float = 30.0
    request_timeout: float = 300.0
    max_retries: int = 3
    max_concurrent_batch: int | Literal["auto"] = "auto"
    """At most this many requests in flight over the whole cluster. ``"auto"`` (the
    default): every slot of every healthy worker, as workers come and go."""
    no_worker_timeout: float = 120.0
    """How long a task waits for a healthy worker before it fails."""
    probe_timeout: float = 10.0
    """Seconds a health check may take."""
    hedge: bool = True
    """At the end of a batch, start a second copy of a straggler on an idle faster worker
    (the first answer wins, the other is cancelled). Off: each prompt is sent once, except
    for retries."""
    models: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Model groups: one name for the same model as different servers call it, e.g.
    ``{"mistral": ("mistral-7b-instruct-v0.2", "mistral:7b")}`` (LM Studio ids and Ollama
    tags differ). ``analyze(model="mistral")`` then uses every worker serving either."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


_WORKER_FIELDS = (
    "id",
    "host",
    "port",
    "type",
    "model",
    "max_concurrent_requests",
    "api_key",
    "api_key_env",
    "scheme",
    "context_length",
    "timeout",
    "stream",
)
_REQUIRED = ("id", "host", "type")


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


class _Checker:
    """Collects problems while reading one configuration."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[ConfigProblem] = []

    def add(self, where: str, message: str) -> None:
        self.problems.append(ConfigProblem(f"{self.source}: {where}", message))

    def integer(self, where: str, value: object, lo: int, hi: int | None = None) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(where, f"expected a whole number, got {_type_name(value)} ({value!r})")
            return None
        if value < lo or (hi is not None and value > hi):
            bound = f"from {lo} to {hi}" if hi is not None else f"of at least {lo}"
            self.add(where, f"expected a number {bound}, got {value}")
            return None
        return value

    def boolean(self, where: str, value: object) -> bool | None:
        if not isinstance(value, bool):
            self.add(where, f"expected true or false, got {_type_name(value)}")
            return None
        return value

    def number(self, where: str, value: object) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            self.add(where, f"expected a positive number of seconds, got {value!r}")
            return None
        return float(value)

    def string(self, where: str, value: object) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.add(where, f"expected a non-empty string, got {_type_name(value)} ({value!r})")
            return None
        return value.strip()


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def _read_worker(chk: _Checker, index: int, raw: object) -> WorkerConfig | None:
    label = f"worker #{index + 1}"
    if not isinstance(raw, Mapping):
        chk.add(label, f"expected an object with id, host and type, got {_type_name(raw)}")
        return None
    if isinstance(raw.get("id"), str) and raw["id"].strip():
        label = f"worker {raw['id'].strip()!r} (#{index + 1})"
    before = len(chk.problems)
    for key in raw:
        if key not in _WORKER_FIELDS:
            hint = _suggest(str(key), _WORKER_FIELDS)
            if hint:
                chk.add(f"{label}: field {key!r}", f"unknown field{hint}")
            else:
                log.warning("%s: %s: ignoring unknown field %r", chk.source, label, key)
    for key in _REQUIRED:
        if key not in raw:
            chk.add(f"{label}: field {key!r}", "missing required field")
    values: dict[str, Any] = {}
    for key in ("id", "host", "model"):
        if key in raw and raw[key] is not None:
            values[key] = chk.string(f"{label}: field {key!r}", raw[key])
    if "type" in raw:
        kind = raw["type"]
        if not isinstance(kind, str) or kind not in WORKER_TYPES:
            allowed = ", ".join(repr(t) for t in WORKER_TYPES)
            hint = _suggest(str(kind), WORKER_TYPES) if isinstance(kind, str) else ""
            chk.add(
                f"{label}: field 'type'", f"unknown type {kind!r}; expected one of {allowed}{hint}"
            )
        else:
            values["type"] = kind
    if raw.get("port") is not None:
        values["port"] = chk.integer(f"{label}: field 'port'", raw["port"], 1, 65535)
    elif values.get("type") == "openai":
        chk.add(
            f"{label}: field 'port'",
            "required for type 'openai' (llama.cpp serves on 8080, vLLM on 8000)",
        )
    if "max_concurrent_requests" in raw:
        values["max_concurrent_requests"] = chk.integer(
            f"{label}: field 'max_concurrent_requests'", raw["max_concurrent_requests"], 1, 1024
        )
    else:
        values["slots_from_server"] = True
    if raw.get("context_length") is not None:
        values["context_length"] = chk.integer(
            f"{label}: field 'context_length'", raw["context_length"], 256
        )
    if raw.get("timeout") is not None:
        values["timeout"] = chk.number(f"{label}: field 'timeout'", raw["timeout"])
    if raw.get("stream") is not None:
        if raw["stream"] == "auto" or isinstance(raw["stream"], bool):
            values["stream"] = raw["stream"]
        else:
            chk.add(
                f"{label}: field 'stream'",
                f'expected true, false or "auto", got {raw["stream"]!r}',
            )
    if "scheme" in raw:
        if raw["scheme"] not in ("http", "https"):
            chk.add(
                f"{label}: field 'scheme'", f"expected 'http' or 'https', got {raw['scheme']!r}"
            )
        else:
            values["scheme"] = raw["scheme"]
    values["api_key"] = _read_api_key(chk, label, raw)
    if len(chk.problems) > before:
        return None
    return WorkerConfig(**{k: v for k, v in values.items() if v is not None})


def _read_api_key(chk: _Checker, label: str, raw: Mapping[str, Any]) -> Secret | None:
    if raw.get("api_key") is not None:
        if not isinstance(raw["api_key"], str):
            chk.add(
                f"{label}: field 'api_key'", f"expected a string, got {_type_name(raw['api_key'])}"
            )
            return None
        return Secret(raw["api_key"])
    env = raw.get("api_key_env")
    if env is None:
        return None
    if not isinstance(env, str) or not env:
        chk.add(f"{label}: field 'api_key_env'", "expected the name of an environment variable")
        return None
    value = os.environ.get(env)
    if not value:
        chk.add(
            f"{label}: field 'api_key_env'",
            f"environment variable {env!r} is not set; export it before starting the notebook",
        )
        return None
    return Secret(value)


def _read_settings(chk: _Checker, raw: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ClusterSettings.names():
        if key not in raw:
            continue
        where = f"setting {key!r}"
        if key == "max_concurrent_batch" and raw[key] == "auto":
            out[key] = "auto"
        elif key in ("max_retries", "max_concurrent_batch"):
            out[key] = chk.integer(where, raw[key], 0 if key == "max_retries" else 1)
        elif key == "hedge":
            out[key] = chk.boolean(where, raw[key])
        elif key == "models":
            out[key] = _model_groups(chk, raw[key])
        else:
            out[key] = chk.number(where, raw[key])
    return {k: v for k, v in out.items() if v is not None}


def _model_groups(chk: _Checker, raw: object) -> dict[str, tuple[str, ...]] | None:
    where = "setting 'models'"
    if not isinstance(raw, Mapping):
        chk.add(where, 'expected an object like {"mistral": ["mistral-7b-instruct-v0.2", ...]}')
        return None
    groups: dict[str, tuple[str, ...]] = {}
    for name, aliases in raw.items():
        if (
            not isinstance(aliases, Sequence)
            or isinstance(aliases, str)
            or not all(isinstance(a, str) and a for a in aliases)
        ):
            chk.add(f"{where}: group {name!r}", "expected a list of model names")
            continue
        groups[str(name)] = tuple(aliases)
    return groups


def parse_config(
    data: object, *, source: str = "<config>", overrides: Mapping[str, Any] | None = None
) -> tuple[list[WorkerConfig], ClusterSettings]:
    """Validate a decoded config object; raise ConfigError listing every problem."""
    chk = _Checker(source)
    workers: list[WorkerConfig] = []
    settings: dict[str, Any] = {}
    if not isinstance(data, Mapping):
        chk.add(
            "top level", f'expected an object like {{"workers": [...]}}, got {_type_name(data)}'
        )
    else:
        for key in data:
            if key != "workers" and key not in ClusterSettings.names():
                hint = _suggest(str(key), ("workers", *ClusterSettings.names()))
                if hint:
                    chk.add(f"field {key!r}", f"unknown field{hint}")
        raw_workers = data.get("workers")
        if raw_workers is None:
            chk.add("field 'workers'", "missing required field (a list of worker objects)")
        elif not isinstance(raw_workers, list):
            chk.add(
                "field 'workers'",
                f"expected a list of worker objects, got {_type_name(raw_workers)}",
            )
        elif not raw_workers:
            chk.add("field 'workers'", "the list is empty; add at least one worker")
        else:
            for i, raw in enumerate(raw_workers):
                cfg = _read_worker(chk, i, raw)
                if cfg is not None:
                    workers.append(cfg)
            _check_duplicates(chk, raw_workers)
        settings = _read_settings(chk, data)
    if chk.problems:
        raise ConfigError(chk.problems)
    return workers, make_settings(overrides or {}, ClusterSettings(**settings))


def make_settings(
    options: Mapping[str, Any], base: ClusterSettings | None = None
) -> ClusterSettings:
    """Settings from keyword arguments, over ``base``; raise ConfigError on bad ones."""
    chk = _Checker("keyword arguments")
    for key in sorted(set(options) - set(ClusterSettings.names())):
        chk.add(f"{key!r}", f"unknown setting{_suggest(key, ClusterSettings.names())}")
    values = _read_settings(chk, options)
    if chk.problems:
        raise ConfigError(chk.problems)
    return replace(base or ClusterSettings(), **values)


def _check_duplicates(chk: _Checker, raw_workers: Sequence[object]) -> None:
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_workers):
        wid = raw.get("id") if isinstance(raw, Mapping) else None
        if not isinstance(wid, str) or not wid.strip():
            continue
        wid = wid.strip()
        if wid in seen:
            chk.add(
                f"worker {wid!r} (#{i + 1}): field 'id'",
                f"duplicate id; worker #{seen[wid] + 1} has it already. Each id must be unique",
            )
        else:
            seen[wid] = i


def load_config(
    path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None
) -> tuple[list[WorkerConfig], ClusterSettings]:
    """Read and validate a workers.json file."""
    p = Path(path)
    source = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [
                ConfigProblem(
                    source, "file not found; create it with `dllm init` or pass another path"
                )
            ]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(source, f"cannot read the file: {exc}")]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [
                ConfigProblem(
                    f"{source}: line {exc.lineno}, column {exc.colno}", f"invalid JSON: {exc.msg}"
                )
            ]
        ) from None
    return parse_config(data, source=source, overrides=overrides)


def parse_worker_spec(spec: object, index: int) -> WorkerConfig:
    """One entry of ``Cluster([...])``: a URL string, a dict like in workers.json, or a
    WorkerConfig. URLs: ``http://host:1234`` (type detected by probing), or
    ``ollama://host``, ``lmstudio://host``, ``exo://host``, ``llamacpp://host`` (port 8080),
    ``openai://host:port``."""
    if isinstance(spec, WorkerConfig):
        return spec
    if isinstance(spec, Mapping):
        raw = dict(spec)
        raw.setdefault("id", f"worker-{index + 1}")
        workers, _ = parse_config({"workers": [raw]}, source=f"worker #{index + 1}")
        return workers[0]
    where = f"worker #{index + 1}"
    if not isinstance(spec, str):
        raise ConfigError(
            [ConfigProblem(where, f"expected a URL string or a dict, got {_type_name(spec)}")]
        )
    text = spec if "://" in spec else f"http://{spec}"
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(
            [ConfigProblem(f"{where} ({spec!r})", "port out of range 1-65535")]
        ) from None
    if not parts.hostname:
        raise ConfigError([ConfigProblem(f"{where} ({spec!r})", "no host name in the URL")])
    if scheme in ("http", "https"):
        kind, http_scheme = "auto", scheme
    elif scheme in _URL_SCHEMES:
        kind, http_scheme = _URL_SCHEMES[scheme], "http"
    else:
        allowed = "http, https, " + ", ".join(sorted(_URL_SCHEMES))
        raise ConfigError(
            [ConfigProblem(f"{where} ({spec!r})", f"unknown scheme {scheme!r}; use {allowed}")]
        )
    if port is None:
        if kind == "openai":
            raise ConfigError(
                [
                    ConfigProblem(
                        f"{where} ({spec!r})",
                        "an openai:// URL needs a port, e.g. openai://host:8080",
                    )
                ]
            )
        port = DEFAULT_PORTS.get(kind, 443 if http_scheme == "https" else 80)
    host = parts.hostname
    return WorkerConfig(
        id=f"{host}:{port}",
        host=host,
        port=port,
        type=kind,
        scheme=http_scheme,
        slots_from_server=True,
    )


def with_type(config: WorkerConfig, kind: str) -> WorkerConfig:
    """The same worker with its detected type."""
    return replace(config, type=kind)
