"""Follow-up turns: time to first token with state reuse versus a cold prefill of the same prompt.

A scripted conversation on the tiny Qwen3.5 model grows past 4 k prompt tokens over several turns
(long pasted text first, an image in a middle turn, short questions at the end, as in real use).
Each turn runs twice with greedy sampling: with the conversation's id (the engine resumes from its
snapshot) and with an empty id (cold prefill), in alternating order; the answers must be identical.

Targets: tokens prefilled <= new tokens + 16 on every turn after the first; TTFT with reuse
<= 0.2 x cold at the last turn. "New tokens" are the prompt tokens after the longest token-id prefix
shared with the previous turn's prompt (the template may rewrite the end of the history).
Run: MLX_DISABLE_COMPILE=1 .venv/bin/python bench/follow_up.py [--chunk 512] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("MLX_DISABLE_COMPILE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORDS = (
    "the quick brown fox jumps over the lazy dog while a cat sits on a mat and reads the document "
    "about tables charts and videos then QwenDesk runs Qwen locally with MLX on Apple Silicon"
).split()


def filler(n_words: int, seed: int) -> str:
    return " ".join(WORDS[(i * 7 + seed * 13) % len(WORDS)] for i in range(n_words))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunk", type=int, default=512, help="prefill chunk (tokens)")
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--model", type=Path, help="a model folder (default: build the tiny model)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a tenth of the text: CI checks it runs and reuses (the TTFT target is not judged)",
    )
    args = ap.parse_args()
    scale = 10 if args.quick else 1

    from PIL import Image

    from engine_mlx.conversation import Conversation, ImageAttachment, Message, Role
    from engine_mlx.engine import Engine
    from engine_mlx.events import AnswerDelta, Stats, ThinkingDelta
    from engine_mlx.prompt import load_media, render_text
    from engine_mlx.settings import GenerationSettings
    from engine_mlx.snapshots import common_prefix
    from engine_mlx.tiny import build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="qwendesk-follow-up-"))
    model_dir = args.model or build_tiny_model(tmp / "tiny")
    image = tmp / "chart.png"
    Image.new("RGB", (320, 240), (90, 140, 200)).save(image)

    engine = Engine()
    engine.load(model_dir)
    loaded = engine._loaded
    settings = GenerationSettings(
        thinking=True,
        thinking_budget=4,
        max_tokens=args.max_tokens,
        temperature=0.0,
        presence_penalty=0.0,
        prefill_chunk=args.chunk,
    )
    script = [
        Message(Role.USER, "Read this report and summarize it.\n" + filler(1100 // scale, 1)),
        Message(Role.USER, "Here is the second part of the report.\n" + filler(800 // scale, 2)),
        Message(
            Role.USER, "This chart belongs to it. What does it show?", (ImageAttachment(image),)
        ),
        Message(Role.USER, "And the appendix:\n" + filler(700 // scale, 3)),
        Message(Role.USER, "One more note: " + filler(120 // scale, 4)),
        Message(Role.USER, "Which section matters most?"),
        Message(Role.USER, "Thanks. Give me a one-line title."),
    ]

    def ids_of(convo):
        prompt = render_text(convo, loaded.apply_template, thinking=True, text_only=False)
        return loaded.prepare(prompt, load_media(convo.attachments, engine.media_limits)).ids

    def run(convo):
        events = list(engine.generate(convo, settings))
        stats = next(e for e in events if isinstance(e, Stats))
        out = [
            (type(e).__name__, e.text)
            for e in events
            if isinstance(e, (ThinkingDelta, AnswerDelta))
        ]
        return stats, out

    run(Conversation((Message(Role.USER, "warm up"),)))  # load kernels before timing

    convo = Conversation(id="bench")
    previous: list[int] | None = None
    rows = []
    header = f"{'turn':>4} {'prompt':>7} {'new':>6} {'prefilled':>9} {'reused':>7} {'TTFT reuse s':>12} {'TTFT cold s':>11} {'ratio':>6}  ok"
    print(header)
    for n, message in enumerate(script, 1):
        convo = convo.with_message(message)
        cold_convo = Conversation(convo.messages, id="")
        if n % 2:  # alternate the order so both see the same machine state on average
            warm, warm_out = run(convo)
            cold, cold_out = run(cold_convo)
        else:
            cold, cold_out = run(cold_convo)
            warm, warm_out = run(convo)
        ids = ids_of(convo)
        new = len(ids) - (common_prefix(previous, ids) if previous else 0)
        same = warm_out == cold_out and warm.generated_tokens == cold.generated_tokens
        ratio = warm.ttft_s / cold.ttft_s
        rows.append(
            (
                n,
                len(ids),
                new,
                warm.prefilled_tokens,
                warm.reused_tokens,
                warm.ttft_s,
                cold.ttft_s,
                ratio,
                same,
            )
        )
        print(
            f"{n:>4} {len(ids):>7} {new:>6} {warm.prefilled_tokens:>9} {warm.reused_tokens:>7} "
            f"{warm.ttft_s:>12.3f} {cold.ttft_s:>11.3f} {ratio:>6.3f}  {'same' if same else 'DIFFERENT'}",
            flush=True,
        )
        previous = ids
        convo = convo.with_message(
            Message(
                Role.ASSISTANT,
                "".join(t for k, t in warm_out if k == "AnswerDelta"),
                thinking="".join(t for k, t in warm_out if k == "ThinkingDelta"),
            )
        )

    prefill_ok = all(r[3] <= r[2] + 16 for r in rows[1:])
    ttft_ok = rows[-1][7] <= 0.2
    same_ok = all(r[8] for r in rows)
    print(f"final prompt {rows[-1][1]} tokens over {len(rows)} turns (image in turn 3)")
    print(f"prefilled <= new + 16 after turn 1: {'met' if prefill_ok else 'NOT met'}")
    print(
        f"last-turn TTFT reuse/cold = {rows[-1][7]:.3f} (target <= 0.2): {'met' if ttft_ok else 'NOT met'}"
    )
    print(f"reuse output == cold output on every turn: {'yes' if same_ok else 'NO'}")
    return 0 if prefill_ok and (ttft_ok or args.quick) and same_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
