"""The local API's limits under load: a prompt too long for the context, and a chunked body over the cap.

1. A prompt of --prompt-mb megabytes against the default context (32768): the time to the API's 400,
   against the time tokenizing that text takes (what the server spent on the engine thread before
   it could refuse; the baseline, measured in the same run).
2. A chunked body of 4 x 64 MiB sent as fast as the server reads it: the server's peak memory growth
   while it answers 413, against the bytes the client got to send (before: the whole body was held).

Goal: the 400 in a small fraction of the tokenizing time (before: after it, with the engine thread
held all along); memory growth bounded by the cap, not by the body (before: 200 MiB were read).
Run: .venv/bin/python bench/api_limits.py [--prompt-mb 10] [--quick]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("MLX_DISABLE_COMPILE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # raw_http


def _rss() -> int:
    """This process's resident bytes now (Linux); 0 where /proc is missing."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt-mb", type=float, default=10.0)
    ap.add_argument(
        "--quick", action="store_true", help="a 1 MB prompt (CI: checks the script runs)"
    )
    args = ap.parse_args()
    mb = 1.0 if args.quick else args.prompt_mb

    from raw_http import send_chunked_until_answered

    from engine_mlx.engine import Engine
    from engine_mlx.jobs import EngineThread
    from engine_mlx.server.app import MAX_BODY_BYTES
    from engine_mlx.server.config import ServerConfig
    from engine_mlx.server.runner import ApiServer
    from engine_mlx.settings import DEFAULT_CONTEXT_TOKENS
    from engine_mlx.tiny import build_tiny_model

    engine, jobs = Engine(), EngineThread()
    jobs.call(lambda: engine.load(build_tiny_model(Path(tempfile.mkdtemp()))))
    server = ApiServer(engine, jobs, ServerConfig(port=0, context_tokens=DEFAULT_CONTEXT_TOKENS))
    server.start()
    try:
        text = "All work and no play makes Jack a dull boy. " * int(mb * 1e6 / 44)
        started = time.perf_counter()
        tokens = len(jobs.call(lambda: engine._loaded.encode(text)))
        tokenize_s = time.perf_counter() - started
        body = json.dumps(
            {
                "model": engine.model_info.name,
                "max_tokens": 1,
                "messages": [{"role": "user", "content": text}],
            }
        ).encode()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
        started = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        refuse_s = time.perf_counter() - started
        conn.close()
        print(
            f"{len(text) / 1e6:.1f} MB prompt ({tokens:,} tokens, context {DEFAULT_CONTEXT_TOKENS:,}): "
            f"tokenizing {tokenize_s:.2f} s; the API's {resp.status} {answer['error']['code']} in {refuse_s:.3f} s "
            f"({refuse_s / tokenize_s:.3f} x)"
        )

        peak, stop = [_rss()], threading.Event()
        before = peak[0]

        def sample() -> None:
            while not stop.wait(0.005):
                peak.append(_rss())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        sent, response = send_chunked_until_answered(server.port, 4 * MAX_BODY_BYTES)
        stop.set()
        sampler.join()
        grew = max(peak) - before
        print(
            f"chunked body: {response.split(b' ', 2)[1].decode()} after {sent >> 20} MiB sent of "
            f"{4 * MAX_BODY_BYTES >> 20}; server memory grew {grew >> 20} MiB "
            f"({grew / max(sent, 1):.2f} x the bytes sent)"
            if before
            else "(no /proc: memory not measured)"
        )
    finally:
        server.stop()
        jobs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
