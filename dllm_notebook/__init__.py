"""dllm_notebook: spread LLM prompts over the lab's machines from a Jupyter notebook.

>>> from dllm_notebook import Cluster
>>> cluster = Cluster.from_config("config/workers.json")   # or Cluster.local()
>>> df = cluster.analyze("papers/", preset="research")
"""

from __future__ import annotations

from typing import Any as _Any

from ._analysis.jobs import Job
from ._cluster import Cluster
from ._config import ClusterSettings, Secret, WorkerConfig
from ._errors import (
    BadResponse,
    ConfigError,
    ConfigProblem,
    ContextLengthExceeded,
    DllmError,
    JobCancelled,
    LocalWorkerError,
    ModelNotAvailable,
    NoHealthyWorkers,
    PanelUnavailable,
    PresetError,
    RequestRejected,
    SyncCallInLoop,
    TaskFailed,
    TemplateError,
    WorkerError,
    WorkerLoading,
    WorkerOverloaded,
    WorkerUnreachable,
)
from ._events import Event
from ._lazy import when_imported as _when_imported
from ._local.model_files import default_model_path
from ._local.server import LocalServer
from ._prompts.presets import Preset, list_presets, load_preset
from ._prompts.templates import Prompt
from ._reading.papers import Paper, load_papers
from ._results.store import ResultStore
from ._running.earliest_finish import EarliestFinish
from ._running.scheduler import LeastLoaded, Scheduler
from ._types import Answer, ChatRequest

__version__ = "0.1.0"


def _register_accessor() -> None:
    from ._results import frames  # noqa: F401  (registers DataFrame.dllm)


# pandas is imported only when a table is built, so `import dllm_notebook` stays quick; the
# `.dllm` accessor is registered as soon as anyone imports pandas.
_when_imported("pandas", _register_accessor)


def __getattr__(name: str) -> _Any:
    if name == "DllmAccessor":
        from ._results.frames import DllmAccessor

        return DllmAccessor
    raise AttributeError(f"module 'dllm_notebook' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "DllmAccessor"})


__all__ = [
    "Answer",
    "BadResponse",
    "ChatRequest",
    "Cluster",
    "ClusterSettings",
    "ConfigError",
    "ConfigProblem",
    "ContextLengthExceeded",
    "DllmAccessor",
    "DllmError",
    "EarliestFinish",
    "Event",
    "Job",
    "JobCancelled",
    "LeastLoaded",
    "LocalServer",
    "LocalWorkerError",
    "ModelNotAvailable",
    "NoHealthyWorkers",
    "PanelUnavailable",
    "Paper",
    "Preset",
    "PresetError",
    "Prompt",
    "RequestRejected",
    "ResultStore",
    "Scheduler",
    "Secret",
    "SyncCallInLoop",
    "TaskFailed",
    "TemplateError",
    "WorkerConfig",
    "WorkerError",
    "WorkerLoading",
    "WorkerOverloaded",
    "WorkerUnreachable",
    "__version__",
    "default_model_path",
    "list_presets",
    "load_papers",
    "load_preset",
]
