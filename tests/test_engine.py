"""The engine end to end on the tiny Qwen3.5 model, with the real MLX libraries on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
from media_files import write_image, write_pdf, write_video

from engine_mlx.cancel import CancelToken
from engine_mlx.conversation import (
    Conversation,
    ImageAttachment,
    Message,
    PdfAttachment,
    Role,
    VideoAttachment,
)
from engine_mlx.errors import MediaError, ModelNotLoadedError, UnsupportedInputError
from engine_mlx.events import AnswerDelta, Finished, FinishReason, Progress, Stats, ThinkingDelta
from engine_mlx.generation import FORCED_THINKING_CLOSE
from engine_mlx.prompt import template_messages
from engine_mlx.settings import GenerationSettings

GREEDY = dict(temperature=0.0, presence_penalty=0.0, max_tokens=16)


def ask(text, *attachments, id=""):
    return Conversation((Message(Role.USER, text, tuple(attachments)),), id=id)


def collect(events):
    events = list(events)
    assert isinstance(events[-1], Finished) and isinstance(events[-2], Stats)
    assert isinstance(events[0], Progress)
    return events


def texts(events, kind):
    return "".join(e.text for e in events if isinstance(e, kind))


def test_text_prompt_streams_events_in_order(engine):
    events = collect(engine.generate(ask("Hello there"), GenerationSettings(max_tokens=12, seed=1)))
    stats = events[-2]
    assert events[-1].reason in (FinishReason.LENGTH, FinishReason.STOP)
    assert stats.prompt_tokens == stats.prefilled_tokens > 5 and stats.reused_tokens == 0
    assert stats.generated_tokens == stats.thinking_tokens + stats.answer_tokens
    assert 0 < stats.generated_tokens <= 12
    assert (
        stats.decode_tps > 0
        and stats.prefill_tps > 0
        and stats.ttft_s > 0
        and stats.peak_memory_bytes > 0
    )
    progress = [e for e in events if isinstance(e, Progress)]
    assert (
        progress[-1].done == stats.prompt_tokens - 1 and progress[-1].total == stats.prompt_tokens
    )


def test_two_images_take_vision_tokens(engine, tmp_path):
    a = write_image(tmp_path / "a.png")
    b = write_image(tmp_path / "b.jpg", size=(200, 400), color=(0, 120, 0))
    plain = collect(engine.generate(ask("Compare"), GenerationSettings(**GREEDY)))[-2]
    both = collect(
        engine.generate(
            ask("Compare", ImageAttachment(a), ImageAttachment(b)), GenerationSettings(**GREEDY)
        )
    )
    assert both[-1].reason is not FinishReason.ERROR
    assert both[-2].prompt_tokens > plain.prompt_tokens + 2 * 4


def test_pdf_page_and_video(engine, tmp_path):
    pdf = write_pdf(tmp_path / "doc.pdf", pages=3)
    video = write_video(tmp_path / "clip.avi", seconds=3.0)
    one_page = collect(
        engine.generate(ask("Read", PdfAttachment(pdf, 2, 2)), GenerationSettings(**GREEDY))
    )
    two_pages = collect(
        engine.generate(ask("Read", PdfAttachment(pdf, 2, 3)), GenerationSettings(**GREEDY))
    )
    assert one_page[-1].reason is not FinishReason.ERROR
    assert two_pages[-2].prompt_tokens > one_page[-2].prompt_tokens
    clip = collect(
        engine.generate(
            ask("Summarize", VideoAttachment(video, fps=2.0)), GenerationSettings(**GREEDY)
        )
    )
    faster = collect(
        engine.generate(
            ask("Summarize", VideoAttachment(video, fps=4.0)), GenerationSettings(**GREEDY)
        )
    )
    assert clip[-1].reason is not FinishReason.ERROR
    assert faster[-2].prompt_tokens > clip[-2].prompt_tokens  # more frames, more vision tokens


def test_engine_matches_mlx_vlm_greedy_output(engine, tmp_path):
    """Own prefill/decode loop (explicit MRoPE positions, per-item vision features) == mlx-vlm's."""
    from mlx_vlm import stream_generate

    from engine_mlx.prompt import MediaLimits, load_media, render_text

    image = write_image(tmp_path / "x.png", size=(256, 192))
    convo = ask("What is this?", ImageAttachment(image))
    settings = GenerationSettings(thinking=True, prefill_chunk=16, **GREEDY)
    events = collect(engine.generate(convo, settings))
    ours, n = texts(events, ThinkingDelta), events[-2].generated_tokens
    loaded = engine._loaded
    prompt = render_text(convo, loaded.apply_template, thinking=True, text_only=False)
    media = load_media(convo.attachments, MediaLimits())
    ids = [
        r.token
        for r in stream_generate(
            loaded.model,
            loaded.processor,
            prompt,
            image=media.images,
            max_tokens=16,
            temperature=0.0,
        )
    ]
    raw = loaded.tokenizer.decode(ids[:n], skip_special_tokens=True)
    # the streaming detokenizer (mlx-lm's) trims the reply's first space
    raw = raw.removeprefix(" ")
    assert n == 16
    assert ours.replace("\ufffd", "") == raw.replace("\ufffd", "")


def test_thinking_on_off_and_budget(engine):
    budget = collect(
        engine.generate(ask("Think"), GenerationSettings(thinking_budget=4, max_tokens=24, seed=3))
    )
    stats = budget[-2]
    assert texts(budget, ThinkingDelta) and texts(budget, AnswerDelta)
    assert 4 <= stats.thinking_tokens <= 4 + 3  # the budget, then the engine's own "\n</think>"
    assert stats.answer_tokens > 0
    assert "</think>" not in texts(budget, AnswerDelta) + texts(budget, ThinkingDelta)

    off = collect(
        engine.generate(ask("Quick"), GenerationSettings(thinking=False, max_tokens=10, seed=3))
    )
    assert (
        not texts(off, ThinkingDelta) and off[-2].thinking_tokens == 0 and texts(off, AnswerDelta)
    )

    on = collect(engine.generate(ask("Think"), GenerationSettings(max_tokens=10, **{"seed": 3})))
    assert on[-2].thinking_tokens > 0 and texts(on, ThinkingDelta)


def test_cancel_during_prefill_stops_within_a_chunk(engine):
    cancel = CancelToken()
    long_text = "word " * 300
    events = []
    for event in engine.generate(
        ask(long_text), GenerationSettings(prefill_chunk=32, max_tokens=8), cancel
    ):
        events.append(event)
        if isinstance(event, Progress) and event.done > 0:
            cancel.cancel()
    progress = [e for e in events if isinstance(e, Progress)]
    assert events[-1].reason is FinishReason.CANCELLED
    assert progress[-1].done == 32  # one chunk after the cancel, not the whole prompt
    assert events[-2].generated_tokens == 0 and events[-2].prefilled_tokens == 32


@pytest.mark.parametrize("model", ["vision", "text-only"])
def test_prefill_hands_freed_buffers_back_after_every_chunk(model, request):
    """As mlx-lm's generate_step: MLX's buffer cache is emptied after each prefill chunk."""
    import mlx.core as mx

    eng = request.getfixturevalue("engine" if model == "vision" else "text_engine")
    held = []
    settings = GenerationSettings(prefill_chunk=32, max_tokens=2, thinking=False, seed=0)
    for event in eng.generate(ask("word " * 200, id=f"buffers-{model}"), settings):
        if isinstance(event, Progress) and event.done > 0:
            held.append(mx.get_cache_memory())  # read while the generator waits after the chunk
    assert len(held) >= 5 and held == [0] * len(held)


def test_cancel_during_decode_stops_within_a_token(engine):
    cancel = CancelToken()
    seen = 0
    events = []
    for event in engine.generate(
        ask("Go"), GenerationSettings(thinking=False, max_tokens=200, seed=5), cancel
    ):
        events.append(event)
        if isinstance(event, (AnswerDelta, ThinkingDelta)):
            seen += 1
            if seen == 3:
                cancel.cancel()
    assert events[-1].reason is FinishReason.CANCELLED
    assert events[-2].generated_tokens <= 3 + 8  # a streaming decoder may hold a few bytes back


def test_bad_media_raises_before_any_event(engine, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty.png"):
        next(iter(engine.generate(ask("x", ImageAttachment(empty)))))
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(MediaError, match="noise.mp4"):
        next(iter(engine.generate(ask("x", VideoAttachment(noise)))))


def test_text_only_model_refuses_images_clearly():
    convo = ask("x", ImageAttachment(Path("a.png")))
    with pytest.raises(UnsupportedInputError, match="text-only"):
        template_messages(convo, text_only=True)


def test_generate_without_a_model():
    from engine_mlx.engine import Engine

    with pytest.raises(ModelNotLoadedError):
        next(iter(Engine().generate(ask("x"))))


@pytest.fixture(scope="module")
def text_engine(tiny_text_model_dir):
    from engine_mlx.engine import Engine

    eng = Engine()
    eng.load(tiny_text_model_dir)
    return eng


def test_text_only_checkpoint_loads_through_mlx_lm_and_answers(text_engine, tmp_path):
    info = text_engine.model_info
    assert info is not None and not info.is_vision
    assert type(text_engine._loaded.model).__module__.startswith("mlx_lm.")
    events = collect(
        text_engine.generate(
            ask("Hello"), GenerationSettings(thinking_budget=3, max_tokens=10, seed=0)
        )
    )
    assert events[-1].reason is not FinishReason.ERROR and events[-2].generated_tokens > 0
    with pytest.raises(UnsupportedInputError, match="text-only"):
        next(iter(text_engine.generate(ask("x", ImageAttachment(write_image(tmp_path / "a.png"))))))


def test_refuses_a_model_that_does_not_fit_unless_forced(tiny_model_dir):
    from engine_mlx.engine import Engine
    from engine_mlx.errors import MemoryFitError

    eng = Engine()
    with pytest.raises(MemoryFitError, match="does not fit|GiB"):
        eng.load(tiny_model_dir, context_tokens=400_000_000)  # ~100 GiB of KV cache
    assert eng.model_info is None


def test_load_reports_progress_and_unload_frees_memory(tiny_model_dir):
    import gc

    import mlx.core as mx

    from engine_mlx.engine import Engine

    gc.collect()
    before = mx.get_active_memory()
    stages = []
    eng = Engine()
    eng.load(tiny_model_dir, progress=stages.append)
    fractions = [p.fraction for p in stages]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    loaded = mx.get_active_memory()
    assert loaded - before > 500_000  # the weights are resident
    eng.unload()
    gc.collect()
    assert eng.model_info is None
    assert mx.get_active_memory() - before < (loaded - before) / 4


def test_answer_stops_at_the_end_of_the_context(tiny_model_dir):
    """A checkpoint whose context is nearly full gets a shorter answer, and a too-long prompt a clear error."""
    import json
    import shutil

    from engine_mlx.engine import Engine
    from engine_mlx.errors import EngineError

    small = Path(
        shutil.copytree(tiny_model_dir, Path(tiny_model_dir).parent / "tiny-small-context")
    )
    config = json.loads((small / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 40
    (small / "config.json").write_text(json.dumps(config))
    eng = Engine()
    eng.load(small, context_tokens=40)
    events = collect(
        eng.generate(ask("Hi"), GenerationSettings(thinking=False, max_tokens=500, seed=0))
    )
    stats = events[-2]
    assert (
        stats.prompt_tokens + stats.generated_tokens <= 40
        and events[-1].reason is FinishReason.LENGTH
    )
    with pytest.raises(EngineError, match="context"):
        next(iter(eng.generate(ask("word " * 60))))


def test_engine_is_offline_by_default():
    import os
    import subprocess
    import sys

    code = (
        "import os, engine_mlx.engine, huggingface_hub.constants as c;"
        "print(c.HF_HUB_OFFLINE, os.environ['HF_HUB_DISABLE_TELEMETRY'])"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_", "TRANSFORMERS_"))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.stdout.split() == ["True", "1"], result.stderr


def test_follow_up_turns_reuse_decoded_media_until_the_file_changes(tiny_model_dir, tmp_path):
    import os

    from engine_mlx.engine import Engine

    eng = Engine()
    eng.load(tiny_model_dir)
    image = write_image(tmp_path / "shot.png")
    video = write_video(tmp_path / "clip.avi", seconds=2.0)
    first = Conversation(
        (Message(Role.USER, "Look", (ImageAttachment(image), VideoAttachment(video))),), id="m"
    )
    settings = GenerationSettings(thinking=False, max_tokens=4, seed=0)
    collect(eng.generate(first, settings))
    cache = eng.decoded_media
    assert (cache.hits, cache.misses) == (0, 2)
    follow = first.with_message(Message(Role.ASSISTANT, "ok")).with_message(
        Message(Role.USER, "And?")
    )
    collect(eng.generate(follow, settings))
    assert (cache.hits, cache.misses) == (2, 2)  # neither decoded nor sampled again
    write_image(image, color=(0, 0, 0))  # the file changed on disk: decoded afresh
    os.utime(image, ns=(1, 1))
    collect(eng.generate(follow, settings))
    assert (cache.hits, cache.misses) == (3, 3)


FORCED = "Hello, world! Ünïcödé 你好 ✓ <tool_call>\n<function=f>"


def test_forced_text_comes_out_exactly_through_the_detokenizer(engine):
    """The forced-tokens processor: the real tokenizer's tokens of a text, forced through the sampler,
    stream back as that very text (multi-byte characters split across tokens included), then the
    turn ends; with sampling on too, since every other token is masked."""
    from engine_mlx.forcing import ForcedText

    for sampled in (dict(temperature=0.0), dict(seed=4)):
        settings = GenerationSettings(
            thinking=False, max_tokens=64, forced=ForcedText(FORCED), **sampled
        )
        events = collect(engine.generate(ask("Say it"), settings))
        assert texts(events, AnswerDelta) == FORCED
        assert events[-1].reason is FinishReason.STOP
        assert events[-2].generated_tokens == len(engine._loaded.encode(FORCED))


def test_forced_text_goes_through_the_thinking_splitter(engine):
    from engine_mlx.forcing import ForcedText

    forced = ForcedText("Let me see.\n</think>\n\nThe answer is 42.")
    events = collect(
        engine.generate(
            ask("Think"), GenerationSettings(max_tokens=64, forced=forced, **{"seed": 1})
        )
    )
    assert (texts(events, ThinkingDelta), texts(events, AnswerDelta)) == (
        "Let me see.\n",
        "The answer is 42.",
    )
    # Without end_turn the model goes on after the text.
    more = ForcedText("Once upon", end_turn=False)
    events = collect(
        engine.generate(ask("Go"), GenerationSettings(thinking=False, forced=more, **GREEDY))
    )
    assert texts(events, AnswerDelta).startswith("Once upon") and events[-2].generated_tokens == 16
    assert len(texts(events, AnswerDelta)) > len("Once upon")


def test_forced_text_after_thinking_starts_once_the_budget_closes_it(engine):
    from engine_mlx.forcing import ForcedText

    forced = ForcedText("\n\n<tool_call>\n<function=lookup>\n", end_turn=False, after_thinking=True)
    settings = GenerationSettings(thinking_budget=5, forced=forced, **{**GREEDY, "max_tokens": 40})
    events = collect(engine.generate(ask("Call it"), settings))
    assert texts(events, AnswerDelta).startswith("<tool_call>\n<function=lookup>\n")
    assert 5 <= events[-2].thinking_tokens <= 5 + 3


def test_presence_penalty_is_mlx_lms_processor_over_the_whole_reply():
    """Qwen's (vLLM's) presence penalty: every token already in the reply loses the penalty once,
    however often it came and however long ago (mlx-lm's processor with a window as long as the reply)."""
    import mlx.core as mx

    from engine_mlx.generation import presence_penalty

    penalty = presence_penalty(1.5, max_tokens=100)
    reply = mx.array([3, 3] + [5] * 40, dtype=mx.int32)
    out = penalty(reply, mx.zeros((1, 8)))
    assert out.tolist() == [[0.0, 0.0, 0.0, -1.5, 0.0, -1.5, 0.0, 0.0]]


def test_token_logprobs_only_when_asked_and_for_every_token(engine):
    """One TokenLogprob per generated token (sampled, and the close a thinking budget forces), before
    its text; none unless asked."""
    import math

    from engine_mlx.events import TokenLogprob

    plain = collect(engine.generate(ask("Think"), GenerationSettings(thinking_budget=3, **GREEDY)))
    assert not any(isinstance(e, TokenLogprob) for e in plain)
    settings = GenerationSettings(thinking_budget=3, logprobs=2, **GREEDY)
    events = collect(engine.generate(ask("Think"), settings))
    marks = [e for e in events if isinstance(e, TokenLogprob)]
    stats = events[-2]
    assert (
        len(marks) == stats.generated_tokens
        and sum(m.thinking for m in marks) == stats.thinking_tokens
    )
    assert [texts(events, k) for k in (ThinkingDelta, AnswerDelta)] == [
        texts(plain, k) for k in (ThinkingDelta, AnswerDelta)
    ]
    forced = set(engine._loaded.encode(FORCED_THINKING_CLOSE))
    assert engine._loaded.think_close_id in {
        m.token_id for m in marks
    }  # the forced close is measured too
    for m in marks:
        assert math.isfinite(m.logprob) and m.logprob <= 0 and len(m.top) == 2
        assert m.top[0].logprob >= m.top[1].logprob
        if m.token_id not in forced:
            assert m.top[0].token_id == m.token_id  # greedy: the most likely token


def test_token_logprobs_without_alternatives(engine):
    """logprobs=0 (the API's ``logprobs: true`` without ``top_logprobs``): each token's own
    log-probability, no alternatives (it failed with an error: the empty top list was indexed by floats)."""
    from engine_mlx.events import TokenLogprob

    events = collect(
        engine.generate(ask("Think"), GenerationSettings(thinking=False, logprobs=0, **GREEDY))
    )
    assert events[-1].error is None
    marks = [e for e in events if isinstance(e, TokenLogprob)]
    assert marks and all(m.top == () and m.logprob <= 0 for m in marks)
    assert len(marks) == events[-2].generated_tokens


def test_json_schema_constrains_the_answer_on_both_checkpoints(engine, text_engine):
    """The grammar processor on the vision checkpoint's tokenizer and on mlx-lm's wrapped one (the
    text-only checkpoint); the thinking stays free and the answer after it is the schema's JSON."""
    import json

    from engine_mlx.grammar import JsonFormat

    schema = {
        "type": "object",
        "required": ["pick"],
        "additionalProperties": False,
        "properties": {"pick": {"enum": ["left", "right"]}},
    }
    settings = GenerationSettings(
        thinking_budget=3,
        response_format=JsonFormat(json.dumps(schema)),
        **{**GREEDY, "max_tokens": 60},
    )
    for eng in (engine, text_engine):
        events = collect(eng.generate(ask("Choose"), settings))
        assert json.loads(texts(events, AnswerDelta))["pick"] in ("left", "right")
        assert texts(events, ThinkingDelta) and events[-1].reason is FinishReason.STOP


def test_raw_completion_matches_mlx_vlm_and_resumes_as_the_prompt_grows(engine):
    """Engine.complete: a raw prompt, no template, the text verbatim (no thinking split, the leading
    space kept), greedy equal to mlx-vlm's own generation; a longer prompt resumes from a snapshot a
    little before the previous prompt's end and still equals mlx-vlm's output."""
    from mlx_vlm import stream_generate

    loaded = engine._loaded
    first = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if n < 2:\n'
    for prompt in (first, first + "        return n\n    return"):
        events = collect(engine.complete(prompt, GenerationSettings(thinking=False, **GREEDY)))
        assert not texts(events, ThinkingDelta)
        ids = [
            r.token
            for r in stream_generate(
                loaded.model, loaded.processor, prompt, max_tokens=16, temperature=0.0
            )
        ]
        n = events[-2].generated_tokens
        assert texts(events, AnswerDelta) == loaded.tokenizer.decode(
            ids[:n], skip_special_tokens=True
        )
        assert n == 16 or ids[n] in loaded.eos_ids
    assert events[-2].reused_tokens >= len(loaded.encode(first)) - 8


def test_a_cancel_wakes_what_waits_on_it_once_and_at_once():
    """on_cancel: a thread blocked on something else is woken by Stop without polling the flag."""
    import threading

    from engine_mlx.cancel import CancelToken

    token, calls = CancelToken(), []
    woken = threading.Event()
    token.on_cancel(woken.set)
    forget = token.on_cancel(lambda: calls.append("forgotten"))
    forget()
    waiter = threading.Thread(target=lambda: calls.append(woken.wait(30)))
    waiter.start()
    token.cancel()
    waiter.join(30)
    token.cancel()  # a second cancel calls nobody again
    assert calls == [True]
    token.on_cancel(lambda: calls.append("late"))  # registered after the cancel: called at once
    assert calls == [True, "late"]
