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
    ChartsUnavailable,
    ConfigError,
    ConfigProblem,
    ContextLengthExceeded,
    CrossrefUnavailable,
    DllmError,
    JobCancelled,
    LocalWorkerError,
    ModelListError,
    ModelNotAvailable,
    ModelNotServed,
    NoHealthyWorkers,
    OneModelNeeded,
    PanelUnavailable,
    PresetError,
    ReferenceFileError,
    ReferenceLibraryError,
    RequestRejected,
    StylerUnavailable,
    SyncCallInLoop,
    SynthesisFailed,
    SynthesisFileError,
    TaskFailed,
    TemplateError,
    WorkerError,
    WorkerLoading,
    WorkerOverloaded,
    WorkerUnreachable,
    ZoteroUnavailable,
)
from ._events import Event
from ._lazy import when_imported as _when_imported
from ._local.model_files import default_model_path
from ._local.server import LocalServer
from ._prompts.presets import Preset, list_presets, load_preset
from ._prompts.templates import Prompt
from ._reading.chunking import estimate_tokens
from ._reading.paper import Paper
from ._reading.papers import load_papers
from ._reading.zotero import Zotero, zotero
from ._results.store import ResultStore
from ._running.affinity import PrefixAffinity
from ._running.chat import ChatStream
from ._running.earliest_finish import EarliestFinish
from ._running.probe import ServerProbe, aprobe, probe
from ._running.scheduler import LeastLoaded, Scheduler, TaskQueue
from ._running.tasks import Attempt, LabView, Placement, Task
from ._running.views import WorkerView
from ._types import Answer, ChatRequest, ModelInfo

__version__ = "0.1.0"


def _register_accessor() -> None:
    from ._results import accessor  # noqa: F401  (registers DataFrame.dllm)


# pandas is imported only when a table is built, so `import dllm_notebook` stays quick; the
# `.dllm` accessor is registered as soon as anyone imports pandas.
_when_imported("pandas", _register_accessor)


def __getattr__(name: str) -> _Any:
    # Both need pandas, which `import dllm_notebook` does not load.
    if name == "DllmAccessor":
        from ._results.accessor import DllmAccessor

        return DllmAccessor
    if name == "Synthesis":
        from ._results.synthesis import Synthesis

        return Synthesis
    raise AttributeError(f"module 'dllm_notebook' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "DllmAccessor", "Synthesis"})


__all__ = [
    "Answer",
    "Attempt",
    "BadResponse",
    "ChartsUnavailable",
    "ChatRequest",
    "ChatStream",
    "Cluster",
    "ClusterSettings",
    "ConfigError",
    "ConfigProblem",
    "ContextLengthExceeded",
    "CrossrefUnavailable",
    "DllmAccessor",
    "DllmError",
    "EarliestFinish",
    "Event",
    "Job",
    "JobCancelled",
    "LabView",
    "LeastLoaded",
    "LocalServer",
    "LocalWorkerError",
    "ModelInfo",
    "ModelListError",
    "ModelNotAvailable",
    "ModelNotServed",
    "NoHealthyWorkers",
    "OneModelNeeded",
    "PanelUnavailable",
    "Paper",
    "Placement",
    "PrefixAffinity",
    "Preset",
    "PresetError",
    "Prompt",
    "ReferenceFileError",
    "ReferenceLibraryError",
    "RequestRejected",
    "ResultStore",
    "Scheduler",
    "Secret",
    "ServerProbe",
    "StylerUnavailable",
    "SyncCallInLoop",
    "Synthesis",
    "SynthesisFailed",
    "SynthesisFileError",
    "Task",
    "TaskFailed",
    "TaskQueue",
    "TemplateError",
    "WorkerConfig",
    "WorkerError",
    "WorkerLoading",
    "WorkerOverloaded",
    "WorkerUnreachable",
    "WorkerView",
    "Zotero",
    "ZoteroUnavailable",
    "__version__",
    "aprobe",
    "default_model_path",
    "estimate_tokens",
    "list_presets",
    "load_papers",
    "load_preset",
    "probe",
    "zotero",
]
