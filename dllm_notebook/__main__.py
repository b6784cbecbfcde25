"""``python -m dllm_notebook``: the same as the ``dllm`` command."""

import sys

from .cli import main

sys.exit(main())
