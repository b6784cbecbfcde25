"""Results: the store on disk and the tables built from it.

Owns: the SQLite store and its task keys (``store``), its append-only migrations
(``schema``), a cell's row (``cells``), the long table's columns (``columns``), the long
and wide DataFrames and the ``.dllm`` accessor (``frames``), ``history()`` (``history``),
the review report (``report``, ``charts``, ``templates/``) and a synthesis's checked
citations (``synthesis``).
May import: the core modules, ``_reading`` and ``_prompts``. Never running, analysis or
display.
"""
