"""Memory: the engine's peak against raw mlx-lm / mlx-vlm generation, and the cache against the estimate.

1. Peak memory. The same ~8 k-token prompt (the engine's own rendering of one long user message)
   goes through raw ``mlx_lm.stream_generate`` (text-only conversion) or ``mlx_vlm.stream_generate``
   (vision checkpoint) and through ``Engine.generate``, with the same prefill step size and greedy
   decoding. Each run starts with MLX's buffer cache emptied and its peak counter reset; the peak
   includes the weights. The engine runs twice: without a conversation id (nothing kept) and with
   one (it also keeps a snapshot of the state for the next turn). Goal: engine / raw <= 1.05.
2. Cache size. The model's own cache is filled to two lengths (multiples of the KV allocation
   step); the entries whose ``nbytes`` grow are the KV cache (bytes per token = growth / tokens),
   the ones that stay put are the fixed linear-attention state. Both are printed next to
   ``engine_mlx.memory``'s figures, for both models and for the text-only one cast to bf16 (the
   dtype of the released checkpoints). Goal: within 10%.

The estimate counts keys, values and the conv window at the checkpoint's activation dtype, read from
its safetensors headers (bfloat16 for the released checkpoints, float32 for the tiny model), and the
recurrent state at float32, as both libraries keep it.

Run: MLX_DISABLE_COMPILE=1 .venv/bin/python bench/memory.py [--tokens 8192] [--chunk 512] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("MLX_DISABLE_COMPILE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TEXT = (
    "the quick brown fox jumps over the lazy dog while a cat sits on a mat and reads the document "
    "about tables charts and videos then QwenDesk runs Qwen locally with MLX on Apple Silicon"
)
WORDS = TEXT.split()
MIB = 1024 * 1024


def filler(n_words: int) -> str:
    return " ".join(WORDS[(i * 7) % len(WORDS)] for i in range(n_words))


def fresh_peak() -> None:
    import mlx.core as mx

    gc.collect()
    mx.synchronize()
    mx.clear_cache()
    mx.reset_peak_memory()


def prompt_inputs(loaded, convo, settings):
    """The prompt and token inputs the engine renders for a text-only ``convo``."""
    from engine_mlx.prompt import LoadedMedia, render_text

    prompt = render_text(
        convo, loaded.apply_template, thinking=settings.thinking, text_only=not loaded.is_vision
    )
    return prompt, loaded.prepare(prompt, LoadedMedia())


def long_conversation(loaded, settings, tokens: int):
    """One user message whose prompt is about ``tokens`` tokens long."""
    from engine_mlx.conversation import Conversation, Message, Role

    words = tokens
    for _ in range(6):
        convo = Conversation((Message(Role.USER, filler(words)),))
        n = len(prompt_inputs(loaded, convo, settings)[1].ids)
        if abs(n - tokens) <= 8:
            break
        words = max(1, round(words * tokens / n))
    return convo


def raw_peak(loaded, prompt: str, ids: list[int], args) -> tuple[int, list[int]]:
    """Peak bytes and greedy tokens of the library's own generation on the same prompt."""
    import mlx.core as mx

    fresh_peak()
    out: list[int] = []
    if loaded.is_vision:
        from mlx_vlm import stream_generate

        for r in stream_generate(
            loaded.model,
            loaded.processor,
            prompt,
            max_tokens=args.max_tokens,
            prefill_step_size=args.chunk,
            temperature=0.0,
        ):
            out.append(int(r.token))
    else:
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_sampler

        for r in stream_generate(
            loaded.model,
            loaded.tokenizer,
            mx.array(ids),
            max_tokens=args.max_tokens,
            prefill_step_size=args.chunk,
            sampler=make_sampler(temp=0.0),
        ):
            out.append(int(r.token))
    return int(mx.get_peak_memory()), out


def engine_peak(engine, convo, settings) -> tuple[int, int]:
    import mlx.core as mx

    from engine_mlx.events import Finished, Stats

    fresh_peak()
    events = list(engine.generate(convo, settings))
    assert isinstance(events[-1], Finished) and not events[-1].error, events[-1]
    stats = next(e for e in events if isinstance(e, Stats))
    return max(int(mx.get_peak_memory()), stats.peak_memory_bytes), stats.generated_tokens


def peak_memory(model_dir: Path, args) -> None:
    from engine_mlx.engine import Engine
    from engine_mlx.settings import GenerationSettings

    engine = Engine(state_dir=Path(tempfile.mkdtemp(prefix="qwendesk-mem-state-")))
    engine.load(model_dir, context_tokens=args.tokens + 1024)
    loaded = engine._loaded
    kind = "vision (mlx-vlm)" if loaded.is_vision else "text-only (mlx-lm)"
    settings = GenerationSettings(
        thinking=False,
        temperature=0.0,
        presence_penalty=0.0,
        max_tokens=args.max_tokens,
        prefill_chunk=args.chunk,
    )
    convo = long_conversation(loaded, settings, args.tokens)
    prompt, inputs = prompt_inputs(loaded, convo, settings)
    ids = inputs.ids

    raw, _ = raw_peak(loaded, prompt, ids, args)
    cold, _ = engine_peak(engine, convo, settings)
    from engine_mlx.conversation import Conversation

    kept, _ = engine_peak(engine, Conversation(convo.messages, id="bench-memory"), settings)
    print(
        f"\n{kind}: {len(ids):,}-token prompt, prefill step {args.chunk}, up to {args.max_tokens} new tokens"
    )
    print(f"  raw library generation   peak {raw / MIB:8.1f} MiB")
    print(
        f"  engine, no conversation  peak {cold / MIB:8.1f} MiB   ratio {cold / raw:.3f}  (goal <= 1.05)"
    )
    print(f"  engine, with snapshot    peak {kept / MIB:8.1f} MiB   ratio {kept / raw:.3f}")
    engine.unload()


def cache_growth(model_dir: Path, args) -> None:
    import mlx.core as mx

    from engine_mlx.engine import Engine
    from engine_mlx.memory import kv_bytes_per_token, linear_state_bytes, machine_memory
    from engine_mlx.runtime import PromptInputs

    engine = Engine()
    engine.load(model_dir)
    loaded, info = engine._loaded, engine.model_info
    n1, n2 = args.growth, 2 * args.growth
    ids = [int(t) for t in (mx.random.randint(0, 1000, (n2,)) + 200).tolist()]
    if loaded.is_vision:  # positions for the whole run (the three MRoPE axes coincide for text)
        pos = mx.broadcast_to(mx.arange(n2)[None, None], (3, 1, n2))
        inputs = PromptInputs(ids=ids, positions=pos)
    else:
        inputs = PromptInputs(ids=ids)
    cache = loaded.make_cache()
    sizes = {}
    done = 0
    for target in (n1, n2):
        while done < target:
            end = min(done + args.chunk, target)
            loaded.run_prompt(inputs, done, end, cache)
            mx.eval([c.state for c in cache])
            done = end
        sizes[target] = [int(c.nbytes) for c in cache]
    growing = [i for i, (a, b) in enumerate(zip(sizes[n1], sizes[n2])) if b > a]
    fixed = [i for i in range(len(cache)) if i not in growing]
    per_token = sum(sizes[n2][i] - sizes[n1][i] for i in growing) / (n2 - n1)
    state = sum(sizes[n2][i] for i in fixed)
    here = machine_memory()  # on MLX's CPU backend a bf16 checkpoint computes in float32
    est_kv, est_state = kv_bytes_per_token(info, here), linear_state_bytes(info, here)
    kind = "vision (mlx-vlm)" if loaded.is_vision else "text-only (mlx-lm)"
    print(
        f"\n{kind} cache, measured from growth between {n1} and {n2} tokens"
        f" ({len(growing)} KV entries, {len(fixed)} fixed; keys/values in {_kv_dtype(cache, growing)},"
        f" estimate at the checkpoint's {info.activation_dtype}"
        f"{', float32 on the CPU backend' if here.cpu_backend else ''}):"
    )
    print(
        f"  KV bytes per token      measured {per_token:10.1f}   estimate {est_kv:10d}"
        f"   ratio {per_token / est_kv:.3f}   (goal 0.9-1.1)"
    )
    print(
        f"  linear-attention state  measured {state:10d}   estimate {est_state:10d}"
        f"   ratio {state / est_state:.3f}   (goal 0.9-1.1)"
    )
    engine.unload()


def _kv_dtype(cache, growing) -> str:
    """The dtype of the growing entries' arrays, as the cache holds them."""
    import mlx.core as mx

    dtypes = {
        str(a.dtype).removeprefix("mlx.core.")
        for i in growing
        for a in cache[i].state
        if isinstance(a, mx.array)
    }
    return "/".join(sorted(dtypes)) or "?"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--tokens", type=int, default=8192, help="prompt length for the peak comparison"
    )
    ap.add_argument("--chunk", type=int, default=512, help="prefill step size (both sides)")
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--skip", choices=["vision", "text"], help="leave one model kind out")
    ap.add_argument(
        "--growth",
        type=int,
        default=1024,
        help="the cache is measured at this many tokens and twice as many (a multiple of 256)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small sizes: CI checks it runs (figures not meaningful)",
    )
    args = ap.parse_args()
    if args.quick:
        args.tokens, args.growth = 1024, 256

    from engine_mlx.tiny import build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="qwendesk-memory-"))
    models = []
    if args.skip != "text":
        models.append(build_tiny_model(tmp / "tiny-text", vision=False))
    if args.skip != "vision":
        models.append(build_tiny_model(tmp / "tiny"))
    for model_dir in models:
        peak_memory(model_dir, args)
        cache_growth(model_dir, args)
    if args.skip != "text":  # the released checkpoints' dtype: the text model cast to bf16
        cache_growth(bf16_copy(models[0], tmp / "tiny-text-bf16"), args)
    return 0


def bf16_copy(model_dir: Path, out: Path) -> Path:
    """``model_dir`` cast to bfloat16 by ``mlx_lm.convert --dtype bfloat16``."""
    import contextlib
    import io

    from mlx_lm import convert

    with contextlib.redirect_stdout(io.StringIO()):
        convert(str(model_dir), mlx_path=str(out), dtype="bfloat16")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
