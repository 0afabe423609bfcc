"""One model over two ranks on this machine (MLX's ring backend on 127.0.0.1) against one process.

Runs ``chat --json`` greedily on the tiny text-only model: once in one process, and with
``--parallel pipeline`` (and, without --quick, ``--parallel tensor`` on an unquantized build with an
even vocabulary) on two ranks started by ``mlx.launch``. Each rank counts its own collectives (every
``mx.distributed`` call: the engine's command broadcasts and the model's sends, gathers and sums) and
the bytes of the arrays it sends or receives through them; two answer lengths give the cost of one more token.

Figures: decode tok/s and the ratio to one process; per generated token, the collectives on rank 0
(each one waits for the other rank: a round trip) and their bytes; and from
those, a paper estimate for Qwen3.5-397B-A17B at 8 bits on two 256 GB M3 Ultras over Thunderbolt 5.
Then the tiny vision checkpoint over the pipeline, with and without an image in the same prompt: the
bytes and collectives the image adds on rank 0 (its tokens' features and positions, and the hidden
states the pipeline hands on for its tokens), per image token, and scaled to the 397B.
Loopback on two shared cores says nothing about Thunderbolt: only the counts carry over.
Run: MLX_DISABLE_COMPILE=1 .venv/bin/python bench/cluster.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("MLX_DISABLE_COMPILE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = "Tell me about the quick brown fox and the lazy dog."
COUNTERS = "CLUSTER-BENCH-COUNTERS "

# The paper estimate's assumptions (Qwen3.5-397B-A17B as released; Apple's and Thunderbolt 5's specs).
BIG_HIDDEN = 4096  # the 397B's hidden size: the activations a pipeline passes on
BIG_LAYERS = 60
BIG_ACTIVE_BYTES_8BIT = 17e9 * 1.0625  # 17B active parameters at 8 bits (+ scales) read per token
M3_ULTRA_BYTES_S = 819e9  # memory bandwidth
TB5_BYTES_S = 80e9 / 8  # 80 Gb/s
TB5_ROUND_TRIP_S = 50e-6  # one small collective over TCP/IP on Thunderbolt (RDMA/JACCL: less)


def worker() -> int:
    """A rank (or the single process): ``engine_mlx chat`` with every collective counted."""
    import atexit

    import mlx.core as mx

    counts = {"calls": 0, "bytes": 0}

    def counted(fn):
        def wrapper(x, *args, **kwargs):
            counts["calls"] += 1
            counts["bytes"] += int(x.nbytes) if isinstance(x, mx.array) else 0
            return fn(x, *args, **kwargs)

        return wrapper

    for name in ("all_sum", "all_gather", "send", "recv_like", "all_max", "all_min"):
        if hasattr(mx.distributed, name):
            setattr(mx.distributed, name, counted(getattr(mx.distributed, name)))
    atexit.register(
        lambda: print(
            COUNTERS + json.dumps({"rank": int(os.environ.get("MLX_RANK", 0)), **counts}),
            file=sys.stderr,
            flush=True,
        )
    )
    from engine_mlx.cli import main

    return main(sys.argv[2:])


def run(
    model: Path, parallel: str | None, max_tokens: int, image: Path | None = None
) -> tuple[dict, dict]:
    """(rank 0's stats event, rank 0's counters) of one greedy answer (to PROMPT, with ``image``)."""
    from engine_mlx.distributed.launch import free_port_run, launch_command

    chat = [
        str(Path(__file__).resolve()),
        "--worker",
        "chat",
        "--model",
        str(model),
        "--json",
        "--no-think",
        "--temperature",
        "0",
        "--max-tokens",
        str(max_tokens),
        *(["--image", str(image)] if image is not None else []),
        PROMPT,
    ]
    if parallel is None:
        command = [sys.executable, *chat]
    else:
        command = launch_command(
            [*chat, "--parallel", parallel], ranks=2, starting_port=free_port_run(2)
        )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=env, start_new_session=True
    )
    if result.returncode != 0:
        raise SystemExit(f"{parallel or 'single'} run failed:\n{result.stderr[-3000:]}")
    stats = next(
        json.loads(line)
        for line in result.stdout.splitlines()
        if line.startswith('{"type": "stats"')
    )
    counters = [
        json.loads(line.split(COUNTERS, 1)[1])
        for line in result.stderr.splitlines()
        if COUNTERS in line
    ]
    return stats, next(c for c in counters if c["rank"] == 0)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker()
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="pipeline only, short answers (CI)")
    args = ap.parse_args()
    from engine_mlx.tiny import build_tiny_model

    short, long = (4, 12) if args.quick else (8, 40)
    with tempfile.TemporaryDirectory() as tmp:
        text = build_tiny_model(Path(tmp) / "text", vision=False)
        modes: list[tuple[str, Path]] = [("pipeline", text)]
        if not args.quick:
            modes.append(
                (
                    "tensor",
                    build_tiny_model(Path(tmp) / "even", vision=False, bits=None, vocab_multiple=2),
                )
            )
        single, _ = run(text, None, long)
        print(
            f"one process: {single['generated_tokens']} tokens at {single['decode_tps']:.1f} tok/s"
        )
        for parallel, model in modes:
            s1, c1 = run(model, parallel, short)
            s2, c2 = run(model, parallel, long)
            tokens = max(1, s2["generated_tokens"] - s1["generated_tokens"])
            calls = (c2["calls"] - c1["calls"]) / tokens
            sent = (c2["bytes"] - c1["bytes"]) / tokens
            print(
                f"{parallel}, 2 ranks: {s2['generated_tokens']} tokens at {s2['decode_tps']:.1f} tok/s "
                f"({s2['decode_tps'] / max(single['decode_tps'], 1e-9):.2f} x one process)"
            )
            print(
                f"  per token on rank 0: {calls:.1f} collectives (round trips), {sent:,.0f} bytes"
            )
            print(
                f"  397B 8-bit on two M3 Ultras over Thunderbolt 5 (paper): {_estimate(parallel, calls, sent)}"
            )
        _image_cost(Path(tmp))
    return 0


def _image_cost(tmp: Path) -> None:
    """What one image adds to a prompt's traffic over a pipeline of two ranks (tiny vision model)."""
    from PIL import Image, ImageDraw

    from engine_mlx.tiny import build_tiny_model

    vision = build_tiny_model(tmp / "vision")
    image = tmp / "image.png"
    picture = Image.new("RGB", (256, 192), (200, 30, 30))
    ImageDraw.Draw(picture).rectangle([10, 10, 128, 96], fill=(20, 20, 220))
    picture.save(image)
    s0, c0 = run(vision, "pipeline", 1)
    s1, c1 = run(vision, "pipeline", 1, image)
    tokens = s1["prompt_tokens"] - s0["prompt_tokens"]
    sent, calls = c1["bytes"] - c0["bytes"], c1["calls"] - c0["calls"]
    tiny_hidden = 128  # float32 on CPU; the 397B passes bfloat16 vectors of 4096
    print(
        f"an image of {tokens} tokens, pipeline of 2: +{sent:,} bytes (+{sent / max(tokens, 1):,.0f} "
        f"per image token) and +{calls} collectives on rank 0; at the 397B's hidden size in "
        f"bfloat16: {sent / max(tokens, 1) * BIG_HIDDEN * 2 / (tiny_hidden * 4) / 1024:,.1f} KiB "
        "per image token"
    )


def _estimate(parallel: str, calls: float, sent: float) -> str:
    """Tokens per second from the measured counts, scaled from the tiny model (hidden 128, float32
    on CPU, 4 layers) to the 397B (hidden 4096 in bfloat16, 60 layers)."""
    tiny_hidden, tiny_layers = 128, 4
    scale = BIG_HIDDEN * 2 / (tiny_hidden * 4)
    if parallel == "pipeline":
        big_calls, big_bytes = calls, sent * scale  # per token: a fixed number of hand-overs
        compute = BIG_ACTIVE_BYTES_8BIT / M3_ULTRA_BYTES_S  # the two halves run one after the other
    else:
        big_calls = calls * BIG_LAYERS / tiny_layers  # sums per layer
        big_bytes = sent * scale * BIG_LAYERS / tiny_layers
        compute = BIG_ACTIVE_BYTES_8BIT / 2 / M3_ULTRA_BYTES_S  # each Mac reads half of every layer
    link = big_calls * TB5_ROUND_TRIP_S + big_bytes / TB5_BYTES_S
    return (
        f"{1 / (compute + link):.0f} tok/s (compute {compute * 1e3:.1f} ms + link {link * 1e3:.2f} ms "
        f"per token; {big_calls:.0f} round trips, {big_bytes / 1024:,.0f} KiB)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
