"""The presence penalty's cost per decode step: mlx-lm's processor (what the engine uses) versus a
running "seen" vector (what the engine used before it composed processors), on the real 248,320-token
vocabulary, at several reply lengths.

mlx-lm's processor subtracts the penalty at every token of the reply each step, so its cost grows with
the reply; the seen vector costs the same at any length. The figures say when that matters: compare
the per-step microseconds with a decode step of the model in use (tens of ms for the large MoE).
Run: .venv/bin/python bench/presence_penalty.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VOCAB = 248_320


def per_step_us(fn, steps: int) -> float:
    import mlx.core as mx

    mx.eval(fn())  # warm up
    start = time.perf_counter()
    for _ in range(steps):
        mx.eval(fn())
    return (time.perf_counter() - start) / steps * 1e6


def main() -> int:
    import mlx.core as mx

    from engine_mlx.generation import presence_penalty

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (CI)")
    args = ap.parse_args()
    lengths, steps = ((64, 512), 5) if args.quick else ((256, 4096, 16384), 200)
    logits = mx.random.normal((1, VOCAB))
    print(f"presence penalty per decode step, vocabulary {VOCAB:,}, {mx.default_device()}")
    for n in lengths:
        reply = mx.random.randint(0, VOCAB, (n,)).astype(mx.int32)
        seen = mx.zeros((VOCAB,))
        seen[reply] = 1.0
        processor = presence_penalty(1.5, max_tokens=n)
        mx.eval(logits, reply, seen)
        ours = per_step_us(lambda: processor(reply, mx.stop_gradient(logits)), steps)  # noqa: B023
        baseline = per_step_us(lambda: logits - 1.5 * seen, steps)  # noqa: B023
        print(
            f"  reply {n:>6,} tokens: mlx-lm processor {ours:8.0f} us, seen vector {baseline:8.0f} us "
            f"(ratio {ours / baseline:.2f}x)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
