"""Speculative decoding with an MTP head against plain decoding, on the tiny model, in one run.

For each case the same prompt is decoded greedily, alternating plain and MTP (mode on and auto,
each mode taking each place in the order in turn), after one unmeasured pass of each: the medians of
the decode rates, the decode ratio (the median over the repeats of MTP tok/s over the plain tok/s
measured in the same repeat, which a machine shared with other work disturbs less than a ratio of
medians), and for on and auto the acceptance (drafts kept), the tokens written per round and the
share of all tokens written by rounds (auto's falls while it decodes plainly). Each mode runs on its
own engine (the same model) that keeps its head loaded through the case, as the app does between
turns: what auto has measured (and the drafts per round it chose) carries over, so a head that does
not pay is probed only now and then (its first judgement falls in the unmeasured pass). Cases: the
text-only and the vision tiny model, each with a head trained on its own greedy reply
(tiny_mtp.train_head) and with a random head. The baseline is the same trained head through raw
``mlx_vlm.stream_generate`` with its drafter (the vision model), in the same run. Last, a paper
estimate for the 397B on an M3 Ultra from the measured acceptance.

The tiny model's vocabulary is small (a few hundred tokens), so a draft costs about what one layer of
the target does, closer in proportion to the real model than a tiny model with the real vocabulary.
The tests' and the demo's tiny model has 4 layers, where a draft costs a quarter of a step (the
397B's one MTP layer against 60 costs about a tenth with its output head); so by default the
benchmark builds it 16 layers deep in the same pattern (``--layers``), and ``--quick`` keeps 4.
Run: .venv/bin/python bench/mtp.py [--quick] [--layers N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = "Hello there"
# The 397B's per-token costs, as published: one MTP layer against 60 layers makes a draft about a
# tenth of a target step; verifying k+1 tokens of an MoE reads more experts (assumed +25% per token).
DRAFT_COST = 0.1
VERIFY_COST_PER_TOKEN = 0.25
DEEP_LAYERS = 16  # the benchmark's tiny model: a draft costs about a sixteenth of a step


@dataclass
class Tally:
    """A drafting mode's turns: their decode rates and counts."""

    tps: list[float] = field(default_factory=list)
    drafted: int = 0
    accepted: int = 0
    rounds: int = 0
    tokens: int = 0  # written in all

    def line(self, plain: list[float]) -> str:
        written = self.accepted + self.rounds  # by rounds: each writes its kept drafts and one more
        return (
            f"{statistics.median(self.tps):.1f} tok/s (ratio {paired_ratio(self.tps, plain):.2f}x, "
            f"acceptance {100 * self.acceptance:.0f}%, {written / max(self.rounds, 1):.2f} tokens per "
            f"round, {100 * written / max(self.tokens, 1):.0f}% of its tokens from rounds)"
        )

    @property
    def acceptance(self) -> float:
        return self.accepted / max(self.drafted, 1)


def engine_case(engines: dict, head: Path, settings, repeats: int) -> dict[str, Tally]:
    """``engines``: one per mode (plain, on, auto), the same model loaded in each."""
    from engine_mlx.conversation import Conversation, Message, Role
    from engine_mlx.events import Stats
    from engine_mlx.mtp_head import MtpMode

    conversation = Conversation((Message(Role.USER, PROMPT),))
    tallies = {mode: Tally() for mode in engines}
    for mode in ("on", "auto"):
        engines[mode].use_mtp(MtpMode(mode), head)
    modes = list(engines)
    for repeat in range(repeats + 1):  # the first pass warms up, unmeasured
        # Each mode takes each place in the order in turn, so none always follows the same one: in
        # a fixed order (plain, on, auto), auto decoding plainly measured 0.85-0.95x the plain engine
        # with a random head; the two alone, alternating, measured 1.01-1.06x.
        for mode in modes[repeat % len(modes) :] + modes[: repeat % len(modes)]:
            engine = engines[mode]
            stats = next(e for e in engine.generate(conversation, settings) if isinstance(e, Stats))
            if not repeat:
                continue
            tally = tallies[mode]
            tally.tps.append(stats.decode_tps)
            tally.tokens += stats.generated_tokens
            if engine._loaded.speculation is not None:
                counts = engine._loaded.speculation.last.counts
                tally.drafted += counts.drafted
                tally.accepted += counts.accepted
                tally.rounds += counts.rounds
    for engine in engines.values():
        engine.use_mtp(MtpMode.OFF)
    return tallies


def paired_ratio(runs: list[float], plain: list[float]) -> float:
    """The median over the repeats of a run's rate over the plain rate measured just before it."""
    return statistics.median(r / p for r, p in zip(runs, plain, strict=True))


def raw_case(
    model_dir: Path, head: Path, prompt: str, max_tokens: int, repeats: int
) -> dict[str, float]:
    """The same head through mlx-vlm's own speculative generation (its drafter, its verify)."""
    import mlx.core as mx
    from mlx_vlm import load, stream_generate
    from mlx_vlm.speculative.drafters import load_drafter

    model, processor = load(str(model_dir))
    drafter, _ = load_drafter(str(head), kind="mtp")
    mx.eval(drafter.parameters())
    plain, spec = [], []
    kept = drafts = 0
    for repeat in range(repeats + 1):  # the first pass warms up, unmeasured
        for runs, extra in (
            (plain, {}),
            (spec, {"draft_model": drafter, "draft_kind": "mtp", "draft_block_size": 3}),
        ):
            results = list(
                stream_generate(
                    model, processor, prompt, max_tokens=max_tokens, temperature=0.0, **extra
                )
            )
            if repeat:
                runs.append(results[-1].generation_tps)
        if not repeat:
            continue
        kept += sum(drafter.accept_lens)
        drafts += sum(drafter.draft_lens)
    return {
        "plain": statistics.median(plain),
        "mtp": statistics.median(spec),
        "ratio": paired_ratio(spec, plain),
        "acceptance": kept / max(drafts, 1),
    }


def paper_estimate(acceptance: float, k: int) -> float:
    """Speed-up of k drafts per round at this acceptance (independent per draft) with the 397B's costs."""
    written = sum(acceptance**i for i in range(k + 1))  # expected tokens per round
    cost = 1 + VERIFY_COST_PER_TOKEN * k + DRAFT_COST * k
    return written / cost


def main() -> int:
    from engine_mlx.conversation import Conversation, Message, Role
    from engine_mlx.engine import Engine
    from engine_mlx.mtp_head import MtpMode
    from engine_mlx.prompt import render_text
    from engine_mlx.settings import GenerationSettings
    from engine_mlx.tiny import TINY_LAYERS, build_tiny_model
    from engine_mlx.tiny_mtp import new_head, train_head, write_head

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (CI)")
    ap.add_argument(
        "--layers",
        type=int,
        help=f"the tiny model's depth (default {DEEP_LAYERS}, quick {TINY_LAYERS})",
    )
    args = ap.parse_args()
    repeats, max_tokens, steps = (1, 24, 15) if args.quick else (15, 40, 60)
    layers = args.layers or (TINY_LAYERS if args.quick else DEEP_LAYERS)
    settings = GenerationSettings(temperature=0.0, presence_penalty=0.0, max_tokens=max_tokens)
    best = (0.0, 0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for kind, vision in (("text-only", False), ("vision", True)):
            started = time.perf_counter()
            model = build_tiny_model(root / kind, vision=vision, layers=layers)
            engines = {mode: Engine() for mode in ("plain", "on", "auto")}
            for engine in engines.values():
                engine.load(model, mtp=MtpMode.OFF)
            trained = train_head(
                model, [PROMPT], tokens=max_tokens, steps=steps, out_dir=root / f"{kind}-trained"
            )
            random = write_head(model, new_head(model), root / f"{kind}-random")
            print(
                f"{kind} tiny model, {layers} layers: built and head trained in "
                f"{time.perf_counter() - started:.0f} s"
            )
            for name, head in (("trained", trained), ("random", random)):
                r = engine_case(engines, head, settings, repeats)
                plain = r["plain"].tps
                print(
                    f"  engine, {kind}, {name} head: plain {statistics.median(plain):.1f} tok/s; "
                    f"on {r['on'].line(plain)}; auto {r['auto'].line(plain)}"
                )
                on = r["on"]
                if name == "trained" and on.acceptance > best[0]:
                    best = (on.acceptance, max(1, round(on.drafted / max(on.rounds, 1))))
            if vision:
                prompt = render_text(
                    Conversation((Message(Role.USER, PROMPT),)),
                    engines["plain"]._loaded.apply_template,
                    thinking=True,
                    text_only=False,
                )
                raw = raw_case(model, trained, prompt, max_tokens, repeats)
                print(
                    f"  raw mlx-vlm, {kind}, trained head: plain {raw['plain']:.1f} tok/s, drafter "
                    f"{raw['mtp']:.1f} tok/s (ratio {raw['ratio']:.2f}x), acceptance "
                    f"{100 * raw['acceptance']:.0f}%"
                )
            for engine in engines.values():
                engine.unload()
    for acceptance in (best[0], 0.75, 0.88):
        k = best[1]
        print(
            f"397B on an M3 Ultra (paper estimate): acceptance {100 * acceptance:.0f}%, k {k}: "
            f"{paper_estimate(acceptance, k):.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
