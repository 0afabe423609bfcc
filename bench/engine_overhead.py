"""Engine overhead: the same tiny model, prompt and seed through raw mlx_vlm.stream_generate and through
the engine, alternating, several rounds. Prints prefill and decode tok/s for both and their ratios.

Target: engine >= 0.97 x raw on decode, >= 0.95 x raw on prefill.
Run: .venv/bin/python bench/engine_overhead.py [--rounds 5] [--tokens 200] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLX_DISABLE_COMPILE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, one round: CI checks it runs (figures not meaningful)",
    )
    args = ap.parse_args()
    paragraphs = 60
    if args.quick:
        args.rounds, args.tokens, paragraphs = 1, 16, 10

    from mlx_vlm import stream_generate
    from PIL import Image

    from engine_mlx.conversation import Conversation, ImageAttachment, Message, Role
    from engine_mlx.engine import Engine
    from engine_mlx.events import AnswerDelta, Stats, ThinkingDelta
    from engine_mlx.prompt import MediaLimits, load_media, render_text
    from engine_mlx.settings import GenerationSettings
    from engine_mlx.tiny import build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="qwendesk-bench-"))
    model_dir = build_tiny_model(tmp / "tiny")
    image = tmp / "img.png"
    Image.new("RGB", (448, 336), (90, 140, 200)).save(image)

    engine = Engine()
    engine.load(model_dir)
    loaded = engine._loaded  # the raw path uses the very same model and processor objects
    text = " ".join(
        f"Paragraph {i}: the quick brown fox jumps over the lazy dog." for i in range(paragraphs)
    )
    convo = Conversation((Message(Role.USER, text, (ImageAttachment(image),)),))
    settings = GenerationSettings(
        thinking=True,
        max_tokens=args.tokens,
        presence_penalty=0.0,
        prefill_chunk=args.chunk,
        seed=0,
    )
    # Qwen's thinking defaults: temperature 1.0, top-p 0.95, top-k 20
    sampling = settings.sampling()
    prompt = render_text(convo, loaded.apply_template, thinking=True, text_only=False)
    images = load_media(convo.attachments, MediaLimits()).images

    # Both paths are timed the same way, from the outside: prefill tok/s = prompt tokens / time to the
    # first token; decode tok/s = (tokens - 1) / time from the first to the last token.
    def rates(start, first, last, n_prompt, n_gen):
        return n_prompt / (first - start), (n_gen - 1) / (last - first), n_prompt

    def raw():
        import mlx.core as mx

        mx.random.seed(0)
        start = time.perf_counter()
        stamps, last = [], None
        for last in stream_generate(  # noqa: B007 - the last response carries the stats
            loaded.model,
            loaded.processor,
            prompt,
            image=images,
            max_tokens=args.tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            prefill_step_size=args.chunk,
        ):
            stamps.append(time.perf_counter())
        return rates(start, stamps[0], stamps[-1], last.prompt_tokens, len(stamps))

    def ours():
        start = time.perf_counter()
        stamps, stats = [], None
        for event in engine.generate(convo, settings):
            if isinstance(event, (ThinkingDelta, AnswerDelta)):
                stamps.append(time.perf_counter())
            elif isinstance(event, Stats):
                stats = event
        return rates(start, stamps[0], stamps[-1], stats.prompt_tokens, stats.generated_tokens)

    raw(), ours()  # warm-up
    rows = {"raw": [], "engine": []}
    for _ in range(args.rounds):
        rows["raw"].append(raw())
        rows["engine"].append(ours())
    print(
        f"prompt tokens: {rows['raw'][0][2]} (raw) / {rows['engine'][0][2]} (engine); "
        f"{args.tokens} decoded; {args.rounds} alternating rounds"
    )
    # Medians show the typical run; bests show the intrinsic cost when the shared machine is quiet.
    for label, pick in (("median", statistics.median), ("best", max)):
        med = {k: (pick(r[0] for r in v), pick(r[1] for r in v)) for k, v in rows.items()}
        print(f"\n{label:8}{'prefill tok/s':>15}{'decode tok/s':>15}")
        for k in ("raw", "engine"):
            print(f"{k:8}{med[k][0]:>15.1f}{med[k][1]:>15.1f}")
        pre, dec = med["engine"][0] / med["raw"][0], med["engine"][1] / med["raw"][1]
        print(f"ratio   {pre:>15.3f}{dec:>15.3f}   (targets: prefill >= 0.95, decode >= 0.97)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
