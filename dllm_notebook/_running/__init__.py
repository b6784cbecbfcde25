"""Running requests on the lab's workers.

Owns: one backend per wire format (``backends``), each worker's live state (``worker``) and
health checks (``pool``), adaptive concurrency limits (``limits``), learned speeds (``speed``),
the scheduler interface (``scheduler``) and the default scheduler (``earliest_finish``),
the dispatcher that executes a batch exactly once (``dispatch``) and streaming one answer
(``chat``).
May import: the core modules at the top of the package (``_config``, ``_errors``,
``_events``, ``_loop``, ``_types``) and ``_reading.chunking`` for token estimates. Never
the results, analysis or display stages.
"""
