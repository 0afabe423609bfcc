"""The ML libraries' first import is safe when several engine users start at once (issue 15, item 1.2).

transformers' lazy top-level module is not safe against a concurrent first import: a thread importing
mlx-vlm while another imports mlx-lm got "cannot import name 'AutoProcessor' from 'transformers'". Each
check runs in a fresh interpreter, where nothing is imported yet.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Four engine users that import mlx-vlm, mlx-lm or transformers, started together after a barrier.
RACE = textwrap.dedent("""
    import sys, threading, traceback
    from pathlib import Path

    vision, text = Path(sys.argv[1]), Path(sys.argv[2])

    def check_vision():
        from engine_mlx.checkpoint import inspect_checkpoint
        inspect_checkpoint(vision)  # its weight check builds the model through mlx-vlm

    def check_text():
        from engine_mlx.checkpoint import inspect_checkpoint
        inspect_checkpoint(text)  # ... and a text-only one through mlx-lm

    def parse_tool_call():
        from engine_mlx.tool_calls import parse_tool_calls
        parse_tool_calls("<tool_call>\\n<function=f>\\n</function>\\n</tool_call>", None)

    def generation_module():
        import engine_mlx.engine  # noqa: F401

    users = [check_vision, check_text, parse_tool_call, generation_module]
    barrier = threading.Barrier(len(users))
    failures = []

    def run(user):
        barrier.wait()
        try:
            user()
        except Exception:
            failures.append(f"{user.__name__}: {traceback.format_exc()}")

    threads = [threading.Thread(target=run, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("\\n".join(failures) or "all imported", flush=True)
""")


def test_engine_users_importing_the_ml_libraries_on_four_threads_at_once_all_succeed(
    tiny_model_dir, tiny_text_model_dir
):
    for attempt in range(3):  # a race: a few fresh interpreters make a miss unlikely
        proc = subprocess.run(
            [sys.executable, "-c", RACE, str(tiny_model_dir), str(tiny_text_model_dir)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.stdout.strip().endswith("all imported"), (
            attempt,
            proc.stdout[-4000:],
            proc.stderr[-2000:],
        )
