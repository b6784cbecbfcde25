"""Whether the library runs in a Jupyter kernel, asked without importing IPython.

A panel needs a kernel that talks to widgets; a progress bar is a widget where tqdm.auto
draws one; a job's bar is already on screen in the cell that submitted it.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["execution_count", "in_kernel", "tqdm_draws_widgets"]


def _shell() -> Any:
    """IPython's shell, or None (never imports IPython: if nobody did, there is none)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    try:
        return ipython.get_ipython()
    except Exception:  # an unusual IPython: take it for a terminal
        return None


def in_kernel() -> bool:
    """An IPython kernel that can talk to widgets (not a terminal IPython)."""
    shell = _shell()
    return shell is not None and getattr(shell, "kernel", None) is not None


def tqdm_draws_widgets() -> bool:
    """True where tqdm.auto draws a notebook widget (it asks the same question)."""
    shell = _shell()
    try:
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:
        return False


def execution_count() -> int | None:
    """The number of the notebook cell running now (``None`` outside IPython)."""
    shell = _shell()
    try:
        return None if shell is None else int(shell.execution_count)
    except Exception:
        return None
