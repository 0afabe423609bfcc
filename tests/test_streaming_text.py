"""Streamed text: the loaders' own streaming detokenizers (engine_mlx.detokenize), on the tiny models'
real byte-level BPE tokenizer, loaded the way the engine loads them (mlx-vlm and mlx-lm)."""

from __future__ import annotations

import pytest

from engine_mlx.conversation import Conversation, Message, Role
from engine_mlx.events import AnswerDelta, Finished, FinishReason, Stats, ThinkingDelta
from engine_mlx.generation import FORCED_THINKING_CLOSE
from engine_mlx.settings import GenerationSettings
from engine_mlx.thinking import ThinkingSplitter

# Characters of 3 and 4 UTF-8 bytes that the tiny BPE has no merged token for: each is split
# across byte tokens, so a per-token decode would show U+FFFD.
SPLIT_TEXT = "你好世界 😀👍🏽 naïve — ok"


@pytest.fixture(scope="module")
def engines(engine, tiny_text_model_dir):
    from engine_mlx.engine import Engine

    text = Engine()
    text.load(tiny_text_model_dir)
    return {"vision": engine, "text": text}


@pytest.fixture(params=["vision", "text"])
def loaded(request, engines):
    return engines[request.param]._loaded


def stream_all(loaded, ids):
    stream = loaded.text_stream()
    deltas = [stream.add(i) for i in ids]
    return deltas, stream.finalize()


def test_the_loaders_own_detokenizers_are_used(engines):
    """Both paths stream through mlx-lm's BPE detokenizer (for vision checkpoints of the kind mlx-vlm's
    loader picked), built once at load; each reply gets a fresh one."""
    from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer as LmBPE
    from mlx_vlm.tokenizer_utils import BPEStreamingDetokenizer as VlmBPE

    assert type(engines["vision"]._loaded.processor.detokenizer) is VlmBPE
    for name in ("vision", "text"):
        loaded = engines[name]._loaded
        first, second = loaded.detokenizer.new_detokenizer(), loaded.detokenizer.new_detokenizer()
        assert type(first) is LmBPE and first is not second
        for i in loaded.encode("one 你好 two"):
            first.add_token(i)
        third = loaded.detokenizer.new_detokenizer()  # replies never share streaming state
        assert (
            first.text and third.text == second.text == "" and third.tokens == second.tokens == []
        )


def test_characters_split_across_tokens_stream_whole(loaded):
    ids = loaded.encode(SPLIT_TEXT)
    tok = loaded.tokenizer
    assert any("\ufffd" in tok.decode([i]) for i in ids), "the sample must split a character"
    deltas, tail = stream_all(loaded, ids)
    assert not any("\ufffd" in d for d in deltas + [tail])
    assert "".join(deltas) + tail == SPLIT_TEXT == tok.decode(ids, skip_special_tokens=True)


def test_special_tokens_are_skipped_and_tags_stay_text(loaded):
    """As decode(skip_special_tokens=True): <|im_end|> and <|vision_pad|> vanish, the non-special
    <think>/</think> reach the thinking splitter as text, and as soon as the model writes them."""
    tok = loaded.tokenizer
    special = [
        tok.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|vision_pad|>", "<|im_end|>")
    ]
    think, close = (tok.convert_tokens_to_ids(t) for t in ("<think>", "</think>"))
    ids = [
        *loaded.encode("a"),
        think,
        *loaded.encode("\nplan 好"),
        close,
        *special,
        *loaded.encode("\n\nok"),
        *special,
    ]
    stream = loaded.text_stream()
    seen = ""
    for i in ids:
        seen += stream.add(i)
        if i == close:
            assert seen.endswith("plan 好</think>")  # not held until the next word
    seen += stream.finalize()
    assert seen == tok.decode(ids, skip_special_tokens=True) == "a<think>\nplan 好</think>\n\nok"
    assert "<|" not in seen


def test_ids_past_the_vocabulary_are_dropped_as_decode_drops_them(loaded):
    tok = loaded.tokenizer
    ids = [*loaded.encode("hi"), len(tok) + 7, *loaded.encode(" there")]
    deltas, tail = stream_all(loaded, ids)
    assert "".join(deltas) + tail == tok.decode(ids, skip_special_tokens=True) == "hi there"


def test_forced_thinking_close_flows_through_the_detokenizer(loaded):
    stream, splitter = loaded.text_stream(), ThinkingSplitter(starts_in_thinking=True)
    close = loaded.tokenizer.convert_tokens_to_ids("</think>")
    thinking = answer = ""
    for i in [
        *loaded.encode("long 思考"),
        *loaded.encode(FORCED_THINKING_CLOSE),
        *loaded.encode("Answer 😀"),
    ]:
        part = splitter.feed(stream.add(i))
        thinking, answer = thinking + part.thinking, answer + part.answer
        if i == close:
            assert not splitter.in_thinking  # the budget's token count switches to answer here
    part, rest = splitter.feed(stream.finalize()), splitter.flush()
    assert thinking + part.thinking + rest.thinking == "long 思考\n"
    assert answer + part.answer + rest.answer == "Answer 😀"


def test_library_detokenizer_contract():
    """What engine_mlx.detokenize relies on, pinned to the installed mlx-lm and mlx-vlm: add_token,
    last_segment (only new text), finalize (flushes held text, and the stream goes on after it),
    a fresh reset copy per stream; mlx-lm's BPE spells special tokens out (hence our skip) and trims
    one leading space at the start of a stream, mlx-vlm's does not."""
    from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer as LmBPE
    from mlx_lm.tokenizer_utils import TokenizerWrapper
    from mlx_vlm.tokenizer_utils import BPEStreamingDetokenizer as VlmBPE
    from mlx_vlm.tokenizer_utils import make_streaming_detokenizer
    from transformers import PreTrainedTokenizerFast

    from engine_mlx.tiny import _build_tokenizer

    tok = PreTrainedTokenizerFast(tokenizer_object=_build_tokenizer())
    ids = tok.encode(" 你好 <|im_end|>x", add_special_tokens=False)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")

    def run(det):
        out = []
        for i in ids:
            det.add_token(i)
            out.append(det.last_segment)
            if i == im_end:
                det.finalize()  # mid-stream: flush, and keep going
                out.append(det.last_segment)
        det.finalize()
        return "".join(out) + det.last_segment, out

    wrapper = TokenizerWrapper(tok, LmBPE)
    first = wrapper.detokenizer
    first.add_token(ids[0])
    lm = wrapper.detokenizer
    assert lm is not first and lm.tokens == []  # a fresh, reset copy each time
    text, segments = run(lm)
    assert text == " 你好 <|im_end|>x".removeprefix(" ")
    assert not any("\ufffd" in s for s in segments)

    class Processor:
        detokenizer = VlmBPE(tok)

    vlm = make_streaming_detokenizer(Processor)
    assert vlm is not Processor.detokenizer
    text, segments = run(vlm)
    assert text == " 你好 <|im_end|>x" and not any("\ufffd" in s for s in segments)
    # Why the vision path streams through mlx-lm's class: mlx-vlm's holds text until a token that
    # starts with a space, so CJK text comes out only at the end.
    vlm.reset()
    for i in tok.encode("你好世界。再见", add_special_tokens=False):
        vlm.add_token(i)
        assert vlm.last_segment == ""
    assert len(VlmBPE(tok).tokenmap) == len(tok)


def ask(text):
    return Conversation((Message(Role.USER, text),))


@pytest.mark.parametrize("model", ["vision", "text"])
@pytest.mark.parametrize("thinking", [True, False])
def test_greedy_stream_equals_decode_of_the_generated_ids(engines, model, thinking, monkeypatch):
    """Concatenated deltas == tokenizer.decode(generated ids, skip_special_tokens=True), with the
    ids read where the engine feeds them to the detokenizer."""
    eng = engines[model]
    loaded = eng._loaded
    generated: list[int] = []
    original = type(loaded).text_stream

    def recording_stream(self):
        stream = original(self)
        add = stream.add
        stream.add = lambda token: (generated.append(token), add(token))[1]
        return stream

    monkeypatch.setattr(type(loaded), "text_stream", recording_stream)
    settings = GenerationSettings(
        thinking=thinking, temperature=0.0, presence_penalty=0.0, max_tokens=40
    )
    events = list(eng.generate(ask("Tell me a story 你好 😀"), settings))
    assert isinstance(events[-1], Finished) and events[-1].reason is not FinishReason.ERROR
    stats = next(e for e in events if isinstance(e, Stats))
    assert len(generated) == stats.generated_tokens > 0
    decoded = loaded.tokenizer.decode(generated, skip_special_tokens=True)
    decoded = decoded.removeprefix(" ")  # mlx-lm's detokenizer trims the stream's first space
    # Streamed piece by piece == the whole decoded text through the same thinking splitter at once.
    whole = ThinkingSplitter(starts_in_thinking=thinking)
    parts = [whole.feed(decoded), whole.flush()]
    for kind, field in ((ThinkingDelta, "thinking"), (AnswerDelta, "answer")):
        streamed = "".join(e.text for e in events if isinstance(e, kind))
        assert streamed == "".join(getattr(p, field) for p in parts)
