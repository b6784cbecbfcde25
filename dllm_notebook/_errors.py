"""The one tree of errors that dllm_notebook raises.

Every error a user can meet is a :class:`DllmError`, and its message says what to do next.
Errors from the libraries below (httpx, PyMuPDF, sqlite3) are translated once, at the
boundary, with ``raise ... from exc``::

    DllmError
    ├── ConfigError                  a bad workers.json, URL or keyword (lists every problem)
    ├── PresetError                  an unknown preset or a malformed preset file
    ├── TemplateError                an unknown placeholder in a prompt template
    ├── LocalWorkerError             the embedded llama.cpp server could not start
    ├── NoHealthyWorkers             no worker could take a task within the wait limit
    │   └── ModelNotServed           ``model=`` names a model no healthy worker serves
    ├── ModelListError               ``model=[...]`` is empty, or names one model twice
    ├── OneModelNeeded               an export of a model comparison that takes one model
    ├── TaskFailed                   every try of a task failed; ``.last_error`` says why
    ├── SyncCallInLoop               a blocking call made from the library's own event loop
    ├── JobCancelled                 ``job.result()`` of a cancelled background job
    ├── PanelUnavailable             ``cluster.panel()`` without ipywidgets (also an ImportError)
    ├── ChartsUnavailable            a review report's charts without matplotlib (an ImportError)
    ├── SynthesisFileError           a synthesis file (``dllm report --synthesis``) is not one
    ├── SynthesisFailed              ``synthesize()`` could not finish: an empty table, a group
    │                                that failed on every worker, windows too small
    ├── StylerUnavailable            ``df.dllm.show()`` without jinja2 (also an ImportError)
    ├── ReferenceLibraryError        a reference library could not be read; ``.source`` names it
    │   ├── ReferenceFileError       a bad .bib or .ris file; ``.path``, ``.entry``, ``.line``
    │   └── ZoteroUnavailable        Zotero's local API is off, unreachable, or lacks the collection
    ├── CrossrefUnavailable          Crossref (asked for explicitly) could not be reached
    └── WorkerError                  one worker failed one request; ``.worker`` names it
        ├── WorkerUnreachable        refused, reset or timed out: retried on another worker
        ├── WorkerOverloaded         429 or 503: backed off and requeued
        │   └── WorkerLoading        503 from llama.cpp's /health: the model is loading
        ├── ModelNotAvailable        404, model not found or not loaded: not retried there
        ├── ContextLengthExceeded    the prompt does not fit the worker's context window
        ├── RequestRejected          another 4xx (bad request, not authorised): not retried
        └── BadResponse              other 5xx, malformed JSON or an empty answer

A :class:`WorkerError` carries ``retryable`` (may another worker succeed?) and
``worker_fault`` (does this count against the worker's health?).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BadResponse",
    "ChartsUnavailable",
    "ConfigError",
    "ConfigProblem",
    "ContextLengthExceeded",
    "CrossrefUnavailable",
    "DllmError",
    "JobCancelled",
    "LocalWorkerError",
    "ModelListError",
    "ModelNotAvailable",
    "ModelNotServed",
    "NoHealthyWorkers",
    "OneModelNeeded",
    "PanelUnavailable",
    "PresetError",
    "ReferenceFileError",
    "ReferenceLibraryError",
    "RequestRejected",
    "StylerUnavailable",
    "SyncCallInLoop",
    "SynthesisFailed",
    "SynthesisFileError",
    "TaskFailed",
    "TemplateError",
    "WorkerError",
    "WorkerLoading",
    "WorkerOverloaded",
    "WorkerUnreachable",
    "ZoteroUnavailable",
]


class DllmError(Exception):
    """Base class of every error raised by dllm_notebook."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem found in a configuration: where it is, and what was expected."""

    where: str
    """The file, worker and field, e.g. ``config/workers.json: worker 'imac' (#1): port``."""
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class ConfigError(DllmError):
    """The configuration is invalid. ``.problems`` lists every problem found, one per line."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(
            f"invalid configuration ({len(self.problems)} {noun}):\n{lines}\n"
            "Fix these and try again; `dllm check --config FILE` validates a file "
            "without sending any prompt."
        )


class PresetError(DllmError):
    """A preset could not be found or its file is malformed."""


class TemplateError(DllmError):
    """A prompt template uses a placeholder that does not exist."""


class LocalWorkerError(DllmError):
    """The embedded llama.cpp server could not be started or stopped cleanly."""


class NoHealthyWorkers(DllmError):
    """No worker was healthy (or able to take the task) within the wait limit."""


class ModelNotServed(NoHealthyWorkers):
    """``analyze(model=...)`` names a model that no healthy worker serves (raised before any
    request; the message lists each worker's model)."""


class ModelListError(DllmError, ValueError):
    """``analyze(model=[...])`` (or a preset's ``model = [...]``) is empty, holds something
    that is not a model name, or names one model twice (also through a model group)."""


class OneModelNeeded(DllmError):
    """A table comparing models (columns ``(prompt, model)``) was given to an export that
    takes one model's columns; the message says how to pick one."""


class SyncCallInLoop(DllmError):
    """A blocking method was called from inside the library's own event loop."""


class WorkerError(DllmError):
    """One request to one worker failed."""

    retryable: bool = True
    """Whether another worker (or a later try) may succeed."""
    worker_fault: bool = True
    """Whether the failure counts against the worker's health."""

    def __init__(
        self,
        message: str,
        *,
        worker: str = "",
        model: str | None = None,
        status_code: int | None = None,
    ) -> None:
        self.worker = worker
        self.model = model
        self.status_code = status_code
        self.detail = message
        prefix = f"worker {worker!r}: " if worker else ""
        super().__init__(prefix + message)


class WorkerUnreachable(WorkerError):
    """Connection refused, reset or timed out. Retried on another worker; the worker is
    taken out of rotation until a health check passes."""


class WorkerOverloaded(WorkerError):
    """The server answered 429 or 503. The task is requeued and the worker backs off."""

    worker_fault = False

    def __init__(
        self,
        message: str,
        *,
        worker: str = "",
        model: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, worker=worker, model=model, status_code=status_code)
        self.retry_after = retry_after


class WorkerLoading(WorkerOverloaded):
    """The server is up but still loading its model (llama.cpp's ``/health`` answers 503).

    The worker shows as ``loading``, not down, takes no work, and is checked again every
    second or two until it is ready."""


class ModelNotAvailable(WorkerError):
    """The worker does not have the model, or has not loaded it. Not retried there."""

    worker_fault = False


class ContextLengthExceeded(WorkerError):
    """The prompt does not fit the worker's context window. Not retried on that worker."""

    worker_fault = False

    def __init__(
        self,
        message: str,
        *,
        worker: str = "",
        model: str | None = None,
        status_code: int | None = None,
        context_length: int | None = None,
    ) -> None:
        super().__init__(message, worker=worker, model=model, status_code=status_code)
        self.context_length = context_length


class RequestRejected(WorkerError):
    """The server refused the request itself (another 4xx). Retrying would not help."""

    retryable = False
    worker_fault = False


class BadResponse(WorkerError):
    """A 5xx, malformed JSON, or an empty answer. Retried elsewhere; counts as a fault."""


class JobCancelled(DllmError):
    """``job.result()`` of a job that was cancelled; ``job.partial()`` has its answers."""


class PanelUnavailable(DllmError, ImportError):
    """ipywidgets is not installed, so there is no live panel."""

    def __init__(self) -> None:
        super().__init__(
            "the live worker panel needs ipywidgets; install it with "
            "pip install 'dllm-notebook[notebook]' (then restart the kernel). "
            "print(cluster) shows the same table as text meanwhile."
        )


class ChartsUnavailable(DllmError, ImportError):
    """matplotlib is not installed, so a review report cannot draw its charts."""

    def __init__(self) -> None:
        super().__init__(
            "the review report draws its charts with matplotlib; install it with "
            "pip install 'dllm-notebook[notebook]' (or pip install matplotlib), or pass "
            "charts=False to write the report without charts."
        )


class SynthesisFailed(DllmError):
    """``synthesize()`` could not finish; the message says why and what to do."""


class SynthesisFileError(DllmError):
    """A file given as a synthesis (``dllm report --synthesis``) could not be read as one."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"{path} is not a synthesis file ({reason}); write one with "
            "`dllm synthesize results.parquet -o synthesis.json` or Synthesis.to_json()."
        )
        self.path = path


class StylerUnavailable(DllmError, ImportError):
    """jinja2 is not installed, and pandas' Styler (``df.dllm.show()``) needs it."""

    def __init__(self) -> None:
        super().__init__(
            "df.dllm.show() styles the table with pandas' Styler, which needs jinja2; "
            "install it with pip install 'dllm-notebook[notebook]' (then restart the "
            "kernel). The table itself still shows as a plain DataFrame meanwhile."
        )


class ReferenceLibraryError(DllmError):
    """A reference library (a .bib or .ris file, Zotero) could not be read."""

    def __init__(self, message: str, *, source: str = "") -> None:
        super().__init__(message)
        self.source = source
        """The file or the Zotero collection that failed."""


class ReferenceFileError(ReferenceLibraryError):
    """A .bib or .ris file is malformed. ``.entry`` is the entry's key (or number) and
    ``.line`` its first line, when the problem is in one entry."""

    def __init__(
        self, message: str, *, path: str, entry: str | None = None, line: int | None = None
    ) -> None:
        where = path + (f", line {line}" if line else "")
        where += f", entry {entry!r}" if entry else ""
        super().__init__(f"{where}: {message}", source=path)
        self.path = path
        self.entry = entry
        self.line = line


class ZoteroUnavailable(ReferenceLibraryError):
    """Zotero's local API did not answer, is not enabled, or has no such collection."""


class CrossrefUnavailable(DllmError):
    """Crossref enrichment was asked for and the service could not be reached."""


class TaskFailed(DllmError):
    """Every try of a task failed. ``.last_error`` is the error of the last try."""

    def __init__(self, message: str, *, last_error: BaseException | None = None) -> None:
        super().__init__(message)
        self.last_error = last_error
