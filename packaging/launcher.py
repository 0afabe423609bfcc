"""Entry point of the frozen QwenDesk executable (PyInstaller's script; see qwendesk.spec).

It starts the app exactly as ``python -m app`` does: ``app.main`` is the one place that dispatches
``--self-test``, and ``engine_mlx`` is the one home of the offline environment (the runtime hook
imports it too, before any other bundled module runs).
"""

import sys

import engine_mlx  # noqa: F401 - the offline environment, before anything imports huggingface_hub
from app.main import main

if __name__ == "__main__":
    sys.exit(main())
