"""The cost of one tool round trip against a plain turn, and the prefill per tool step.

On the tiny Qwen3.5 model with the built-in Files tool (an in-process MCP server), a chat with a long
earlier history asks one question. The tool turn's first step is forced to call ``read_text`` (the
random model cannot choose to) and its second step to answer; the plain turn is forced to the same
final answer without a call. Both run with greedy sampling, alternating, several times; medians.

It reports the round trip's parts (the call through MCP, the second step's prefill), the whole tool
turn against the plain one, and the second step's prefill against the tool result's own tokens (the
goal: the result plus the template's few tokens around it, nothing of the history).
Run: MLX_DISABLE_COMPILE=1 .venv/bin/python bench/tools.py [--runs 5] [--quick]
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

CALL = "<tool_call>\n<function=read_text>\n<parameter=path>\nnotes.md\n</parameter>\n</function>\n</tool_call>"
ANSWER = "Your notes say the quokka lives on Rottnest Island."


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--history-words", type=int, default=1500)
    ap.add_argument("--quick", action="store_true", help="2 runs and a short history (CI: it runs)")
    args = ap.parse_args()
    runs, words = (2, 150) if args.quick else (args.runs, args.history_words)

    from engine_mlx.conversation import Conversation, Message, Role
    from engine_mlx.engine import Engine
    from engine_mlx.events import Stats
    from engine_mlx.forcing import ForcedText
    from engine_mlx.settings import GenerationSettings
    from engine_mlx.tiny import build_tiny_model
    from engine_mlx.tools.consent import Consent, ConsentTable
    from engine_mlx.tools.host import ToolHost
    from engine_mlx.tools.loop import ToolCallFinished, ToolLoop

    tmp = Path(tempfile.mkdtemp(prefix="qwendesk-tools-"))
    shared = tmp / "shared"
    shared.mkdir()
    notes = "The quokka lives on Rottnest Island, off Perth.\n" * 4
    (shared / "notes.md").write_text(notes, encoding="utf-8")
    engine = Engine()
    engine.load(build_tiny_model(tmp / "tiny"))
    host = ToolHost(tmp / "logs", files_roots=[shared])
    host.configure([], builtin_files=True)
    host.wait_ready(30)
    history = " ".join(f"word{i % 97}" for i in range(words))
    allow = ConsentTable().with_server("files", Consent.ALLOW)

    def settings(text: str) -> GenerationSettings:
        return GenerationSettings(
            thinking=False, max_tokens=200, temperature=0.0, forced=ForcedText(text)
        )

    plain_s, tool_s, call_s, step2_prefill, step2_s = [], [], [], [], []
    result_tokens = 0
    try:
        for run in range(runs):
            base = (
                Message(Role.USER, history),
                Message(Role.ASSISTANT, "Noted."),
                Message(Role.USER, "What do my notes say?"),
            )
            for kind in ("plain", "tool") if run % 2 == 0 else ("tool", "plain"):
                # a warm start for both: the history's state is there (a conversation seen before, with
                # its tools from the start for the tool chat: they are rendered at the top of the prompt)
                convo = Conversation(base, id=f"{kind}-{run}")
                loop = ToolLoop(engine, host, consent=allow)
                earlier = Conversation(base[:1], id=convo.id)
                warm = settings("Noted.")
                list(engine.generate(earlier, warm) if kind == "plain" else loop.run(earlier, warm))
                started = time.perf_counter()
                if kind == "plain":
                    list(engine.generate(convo, settings(ANSWER)))
                    plain_s.append(time.perf_counter() - started)
                    continue
                stats: list[Stats] = []
                step_started = 0.0
                for event in loop.run(
                    convo,
                    settings(ANSWER),
                    step_settings=lambda i: settings(CALL if i == 0 else ANSWER),
                ):
                    if isinstance(event, ToolCallFinished):
                        call_s.append(event.duration_s)
                        step_started = time.perf_counter()
                    elif isinstance(event, Stats):
                        stats.append(event)
                tool_s.append(time.perf_counter() - started)
                step2_s.append(time.perf_counter() - step_started)
                step2_prefill.append(stats[1].prefilled_tokens)
                result_tokens = len(engine._loaded.encode(notes))
    finally:
        host.close()

    med = statistics.median
    print(f"tiny model, history of {words} words, {runs} runs each, medians")
    print(f"plain turn (answer only)            {med(plain_s) * 1000:8.1f} ms")
    print(
        f"tool turn (call, result, answer)    {med(tool_s) * 1000:8.1f} ms   ratio {med(tool_s) / med(plain_s):.2f}"
    )
    print(f"  the MCP call (Files, in-process)  {med(call_s) * 1000:8.1f} ms")
    print(f"  the step after the result         {med(step2_s) * 1000:8.1f} ms")
    print(
        f"second step prefilled {med(step2_prefill):.0f} tokens for a result of {result_tokens} tokens "
        f"(+{med(step2_prefill) - result_tokens:.0f}: the template's tokens around it)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
