"""Benchmarks never rot: every ``bench/*.py`` runs with ``--quick`` as a real process and prints its figures.

Quick mode uses small sizes and judges no goal (a timing is no assertion); a crash, a renamed API or a figure
that is no longer printed fails here. A new script is picked up by the glob and must list its figures below.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_"))
NUMBER = r"([\d,]+(?:\.\d+)?)"

# Each script: (a line it prints, its figures as groups; how many such lines). Every figure must parse.
FIGURES: dict[str, list[tuple[str, int]]] = {
    "api_limits.py": [
        (
            rf"^{NUMBER} MB prompt \({NUMBER} tokens, context {NUMBER}\): tokenizing {NUMBER} s; the API's 400 "
            rf"context_length_exceeded in {NUMBER} s \({NUMBER} x\)$",
            1,
        ),
        (
            rf"^chunked body: 413 after {NUMBER} MiB sent of {NUMBER}; server memory grew {NUMBER} MiB "
            rf"\({NUMBER} x the bytes sent\)$",
            1,
        ),
    ],
    "checkpoint_check.py": [
        (rf"^397B 4-bit .*: {NUMBER} tensors in {NUMBER} shards, {NUMBER} GiB", 1),
        (rf"^safety \+ shard headers \(median of 1\):\s+{NUMBER} s$", 1),
        (rf"^\.\.\. \+ architecture check \(median of 1\):\s+{NUMBER} s$", 1),
        (
            rf"^a rescan of the unchanged folder \(median\):\s+{NUMBER} ms \(×{NUMBER} of a full inspection\)$",
            1,
        ),
    ],
    "cluster.py": [
        (rf"^one process: {NUMBER} tokens at {NUMBER} tok/s$", 1),
        (rf"^pipeline, 2 ranks: {NUMBER} tokens at {NUMBER} tok/s \({NUMBER} x one process\)$", 1),
        (rf"^  per token on rank 0: {NUMBER} collectives \(round trips\), {NUMBER} bytes$", 1),
        (
            rf"^  397B 8-bit on two M3 Ultras over Thunderbolt 5 \(paper\): {NUMBER} tok/s \(compute {NUMBER} ms "
            rf"\+ link {NUMBER} ms per token; {NUMBER} round trips, {NUMBER} KiB\)$",
            1,
        ),
        (
            rf"^an image of {NUMBER} tokens, pipeline of 2: \+{NUMBER} bytes \(\+{NUMBER} per image token\) "
            rf"and \+{NUMBER} collectives on rank 0; at the 397B's hidden size in bfloat16: {NUMBER} KiB "
            r"per image token$",
            1,
        ),
    ],
    "engine_overhead.py": [
        (rf"^prompt tokens: {NUMBER} \(raw\) / {NUMBER} \(engine\); 16 decoded", 1),
        (rf"^(?:raw|engine)\s+{NUMBER}\s+{NUMBER}$", 4),  # median and best, for each side
        (rf"^ratio\s+{NUMBER}\s+{NUMBER}\s+\(targets", 2),
    ],
    "follow_up.py": [
        (
            rf"^\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+same$",
            7,
        ),
        (rf"^last-turn TTFT reuse/cold = {NUMBER} \(target", 1),
        (r"^reuse output == cold output on every turn: yes$", 1),
    ],
    "long_message.py": [
        (rf"^\s+open the baseline chat\s+{NUMBER} ms$", 1),
        (rf"^\s+open the long chat\s+{NUMBER} ms\s+ratio {NUMBER}", 1),
        (rf"^\s+'Show all' on the (?:user message|answer)\s+{NUMBER} ms$", 2),
        (rf"^\s+characters shown after 'Show all': {NUMBER} of {NUMBER}$", 1),
    ],
    "memory.py": [
        (rf"^\s+raw library generation\s+peak\s+{NUMBER} MiB$", 2),  # text-only and vision
        (
            rf"^\s+engine, (?:no conversation|with snapshot)\s+peak\s+{NUMBER} MiB\s+ratio {NUMBER}",
            4,
        ),
        (
            rf"^\s+KV bytes per token\s+measured\s+{NUMBER}\s+estimate\s+{NUMBER}\s+ratio {NUMBER}",
            3,
        ),
        (
            rf"^\s+linear-attention state\s+measured\s+{NUMBER}\s+estimate\s+{NUMBER}\s+ratio {NUMBER}",
            3,
        ),
    ],
    "presence_penalty.py": [
        (rf"^presence penalty per decode step, vocabulary {NUMBER}, ", 1),
        (
            rf"^\s+reply\s+{NUMBER} tokens: mlx-lm processor\s+{NUMBER} us, seen vector\s+{NUMBER} us "
            rf"\(ratio {NUMBER}x\)$",
            2,
        ),
    ],
    "mtp.py": [
        (
            rf"^(?:text-only|vision) tiny model, {NUMBER} layers: built and head trained in {NUMBER} s$",
            2,
        ),
        (
            rf"^  engine, (?:text-only|vision), (?:trained|random) head: plain {NUMBER} tok/s; "
            + "; ".join(
                rf"{mode} {NUMBER} tok/s \(ratio {NUMBER}x, acceptance {NUMBER}%, {NUMBER} tokens per "
                rf"round, {NUMBER}% of its tokens from rounds\)"
                for mode in ("on", "auto")
            )
            + "$",
            4,
        ),
        (
            rf"^  raw mlx-vlm, vision, trained head: plain {NUMBER} tok/s, drafter {NUMBER} tok/s \(ratio "
            rf"{NUMBER}x\), acceptance {NUMBER}%$",
            1,
        ),
        (
            rf"^397B on an M3 Ultra \(paper estimate\): acceptance {NUMBER}%, k {NUMBER}: {NUMBER}x$",
            3,
        ),
    ],
    "snapshot_index.py": [
        (
            rf"^workload: {NUMBER} chats x {NUMBER} turns, {NUMBER} prompt tokens; budget {NUMBER} KiB",
            1,
        ),
        (rf"^an unbounded index would prefill {NUMBER} tokens$", 1),
        (
            rf"^(?:ours \(SnapshotStore\)|mlx-lm LRUPromptCache): prefilled {NUMBER} tokens, {NUMBER} when every "
            rf"turn is cut short and continued; lookup median {NUMBER} ms$",
            2,
        ),
        (
            rf"^tokens prefilled, mlx-lm / ours: {NUMBER} x for follow-ups, {NUMBER} x with Continue$",
            1,
        ),
    ],
    "search_stall.py": [
        (rf"^history: {NUMBER} messages in {NUMBER} s$", 1),
        (
            rf"before:\s+{NUMBER} ms \({NUMBER} hits\) \| now: call\s+{NUMBER} ms, worst stall\s+{NUMBER} ms, "
            rf"hits after\s+{NUMBER} ms \({NUMBER} hits\)$",
            5,
        ),
    ],
    "tools.py": [
        (rf"^tiny model, history of {NUMBER} words, {NUMBER} runs each, medians$", 1),
        (rf"^plain turn \(answer only\)\s+{NUMBER} ms$", 1),
        (rf"^tool turn \(call, result, answer\)\s+{NUMBER} ms\s+ratio {NUMBER}$", 1),
        (rf"^\s+the MCP call \(Files, in-process\)\s+{NUMBER} ms$", 1),
        (rf"^\s+the step after the result\s+{NUMBER} ms$", 1),
        (
            rf"^second step prefilled {NUMBER} tokens for a result of {NUMBER} tokens \(\+{NUMBER}: ",
            1,
        ),
    ],
    "ui_stream.py": [
        (rf"^run 1: {NUMBER} answer tokens at {NUMBER} tok/s into a chat of {NUMBER} messages", 1),
        (rf"^\s+event-loop stall: worst {NUMBER} ms, p99 {NUMBER} ms, median {NUMBER} ms", 1),
        (rf"^\s+render time per 1k tokens .*: first {NUMBER} ms, last {NUMBER} ms, ×{NUMBER}", 1),
        (rf"^\s+full GC passes while streaming: {NUMBER}", 1),
    ],
}


def test_every_bench_script_lists_its_figures():
    assert SCRIPTS, "no bench/*.py found"
    missing = [s for s in SCRIPTS if s not in FIGURES]
    assert not missing, (
        f"list the figures each of {missing} prints in FIGURES (tests/test_bench.py)"
    )


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_runs_quick_and_prints_its_figures(script, tmp_path):
    if script not in FIGURES:
        pytest.fail(f"bench/{script} has no entry in FIGURES")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MLX_DISABLE_COMPILE": "1",
        "QT_QPA_PLATFORM": "offscreen",
        "HF_HUB_OFFLINE": "1",
        "TMPDIR": str(tmp_path),
    }  # the scripts' temporary models go with tmp_path
    result = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (
        f"bench/{script} --quick exited {result.returncode}:\n{result.stderr[-4000:]}"
    )
    for pattern, count in FIGURES[script]:
        lines = list(re.finditer(pattern, result.stdout, re.MULTILINE))
        assert len(lines) == count, (
            f"bench/{script}: expected {count} line(s) matching {pattern!r}, found {len(lines)}:\n{result.stdout}"
        )
        for line in lines:
            for figure in line.groups():
                value = float(figure.replace(",", ""))
                assert math.isfinite(value) and value >= 0, (
                    f"bench/{script}: {figure!r} in {pattern!r}"
                )
