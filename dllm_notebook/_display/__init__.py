"""How things show themselves: the cluster's text and HTML tables, the live panel, the
progress bar, and whether we run in a Jupyter kernel.

Owns: ``cluster`` (the repr of a Cluster), ``panel`` (ipywidgets), ``progress`` (tqdm),
``reports`` (the check() and metrics() tables) and ``kernel``.
May import: the core modules and read-only views from ``_running``. It only watches
events; it never changes what runs.
"""
