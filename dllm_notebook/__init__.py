"""dllm_notebook: spread LLM prompts over the lab's machines from a Jupyter notebook.

>>> from dllm_notebook import Cluster
>>> cluster = Cluster.from_config("config/workers.json")   # or Cluster.local()
>>> df = cluster.analyze("papers/", preset="research")
"""

from __future__ import annotations

from ._cluster import Cluster
from ._config import ClusterSettings, Secret, WorkerConfig
from ._errors import (
    BadResponse,
    ConfigError,
    ConfigProblem,
    ContextLengthExceeded,
    DllmError,
    LocalWorkerError,
    ModelNotAvailable,
    NoHealthyWorkers,
    PresetError,
    RequestRejected,
    SyncCallInLoop,
    TaskFailed,
    TemplateError,
    WorkerError,
    WorkerOverloaded,
    WorkerUnreachable,
)
from ._events import Event
from ._local import LocalServer
from ._model_files import default_model_path
from ._papers import Paper, load_papers
from ._presets import Preset, list_presets, load_preset
from ._results import DllmAccessor
from ._store import ResultStore
from ._templates import Prompt
from ._types import Answer, ChatRequest

__version__ = "0.1.0"

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
    "Event",
    "LocalServer",
    "LocalWorkerError",
    "ModelNotAvailable",
    "NoHealthyWorkers",
    "Paper",
    "Preset",
    "PresetError",
    "Prompt",
    "RequestRejected",
    "ResultStore",
    "Secret",
    "SyncCallInLoop",
    "TaskFailed",
    "TemplateError",
    "WorkerConfig",
    "WorkerError",
    "WorkerOverloaded",
    "WorkerUnreachable",
    "__version__",
    "default_model_path",
    "list_presets",
    "load_papers",
    "load_preset",
]
