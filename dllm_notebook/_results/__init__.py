"""Results: the store on disk and the tables built from it.

Owns: the SQLite store and its task keys (``store``), its append-only migrations
(``schema``), a cell's row (``cells``), the long table's columns (``columns``), the long
and wide DataFrames and the ``.dllm`` accessor (``frames``, ``accessor``), the exports
(``exports``: CSV, Excel, Markdown; ``citations``: .bib and .ris; ``styled``: ``show()``),
``history()`` (``history``), the review report (``report``, ``charts``, ``templates/``), a
synthesis's checked citations (``synthesis``) and missing values (``values``).
May import: the core modules, ``_reading`` and ``_prompts``. Never running, analysis or
display.
"""
