"""The first import of mlx-lm, mlx-vlm and transformers: done once, by one thread, before any other use.

transformers publishes its lazy top-level module in ``sys.modules`` before that module has finished
initialising, and resolves names such as ``AutoProcessor`` through further imports. A second thread
that imports it meanwhile gets ``ImportError: cannot import name 'AutoProcessor' from 'transformers'``.
The app did exactly that at start-up: the model rescan (a pool thread) checked a folder's weights
through mlx-vlm while the engine thread imported the engine (mlx-lm) to load the last model.

Every engine module that uses these libraries calls :func:`ensure_runtime_imported` before its own
import of them: the first caller imports them all under a lock, later callers (or a concurrent one,
once it gets the lock) find them in ``sys.modules`` and return at once.
"""

from __future__ import annotations

import threading

_FIRST_IMPORT = threading.Lock()


def ensure_runtime_imported() -> None:
    """Import mlx-lm, mlx-vlm and transformers (and the parts of them the engine uses) on this thread,
    while no other thread imports them."""
    with _FIRST_IMPORT:
        import mlx_lm  # noqa: F401  (mlx_lm.utils imports transformers' tokenizer classes)
        import mlx_lm.models.cache  # noqa: F401
        import mlx_lm.sample_utils  # noqa: F401
        import mlx_lm.tokenizer_utils  # noqa: F401
        import mlx_lm.utils  # noqa: F401
        import mlx_vlm  # noqa: F401  (mlx_vlm.utils: from transformers import AutoProcessor)
        import mlx_vlm.tokenizer_utils  # noqa: F401
        import mlx_vlm.utils  # noqa: F401
        from transformers import AutoProcessor, AutoTokenizer  # noqa: F401
