"""Follow-up turns reuse the model state: output equals a cold prefill, token for token (issue 3).

Every check runs a turn twice on the tiny Qwen3.5 model with greedy sampling: once with the
conversation's id (the engine resumes from its snapshot and prefills only what is new) and once with
an empty id (a cold prefill of the same prompt). The streamed text and the token counts must match.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace

import pytest
from media_files import write_image, write_video

from engine_mlx.cancel import CancelToken
from engine_mlx.conversation import Conversation, ImageAttachment, Message, Role, VideoAttachment
from engine_mlx.events import AnswerDelta, Finished, FinishReason, Stats, ThinkingDelta
from engine_mlx.prompt import load_media, render_text
from engine_mlx.settings import GenerationSettings
from engine_mlx.snapshots import SnapshotStore, common_prefix

# A small prefill chunk so that snapshots land in the middle of a prefill, between chunks.
ON = GenerationSettings(
    thinking=True,
    thinking_budget=4,
    temperature=0.0,
    presence_penalty=0.0,
    max_tokens=12,
    prefill_chunk=24,
)
OFF = GenerationSettings(
    thinking=False, temperature=0.0, presence_penalty=0.0, max_tokens=10, prefill_chunk=24
)
SLACK = 16  # prefilled tokens allowed beyond the new ones (the generation-prompt tail and seams)


@dataclass
class Turn:
    stats: Stats
    thinking: str
    answer: str
    stream: list  # (kind, text) in order

    def reply(self) -> Message:
        return Message(Role.ASSISTANT, self.answer, thinking=self.thinking)


def run(engine, convo: Conversation, settings: GenerationSettings) -> Turn:
    events = list(engine.generate(convo, settings))
    assert isinstance(events[-1], Finished) and events[-1].reason is not FinishReason.ERROR, events[
        -1
    ]
    stream = [
        (type(e).__name__, e.text) for e in events if isinstance(e, (ThinkingDelta, AnswerDelta))
    ]
    return Turn(
        events[-2],
        "".join(t for k, t in stream if k == "ThinkingDelta"),
        "".join(t for k, t in stream if k == "AnswerDelta"),
        stream,
    )


def prompt_ids(engine, convo: Conversation, settings: GenerationSettings) -> list[int]:
    loaded = engine._loaded
    prompt = render_text(convo, loaded.apply_template, thinking=settings.thinking, text_only=False)
    return loaded.prepare(prompt, load_media(convo.attachments, engine.media_limits)).ids


def same_as_cold(
    engine, convo: Conversation, settings: GenerationSettings, *, previous_ids=None
) -> Turn:
    """Run ``convo`` with reuse and cold; assert identical output and (with ``previous_ids``) that
    only the tokens after the shared prefix, plus a small slack, were prefilled."""
    warm = run(engine, convo, settings)
    cold = run(engine, replace(convo, id=""), settings)
    assert cold.stats.reused_tokens == 0
    assert warm.stream == cold.stream
    assert warm.stats.generated_tokens == cold.stats.generated_tokens > 0
    assert warm.stats.prompt_tokens == cold.stats.prompt_tokens
    assert warm.stats.reused_tokens + warm.stats.prefilled_tokens == warm.stats.prompt_tokens
    if previous_ids is not None:
        ids = prompt_ids(engine, convo, settings)
        new = len(ids) - common_prefix(previous_ids, ids)
        assert warm.stats.reused_tokens > 0
        assert warm.stats.prefilled_tokens <= new + SLACK, (warm.stats, new)
    return warm


def converse(engine, cid: str, settings: GenerationSettings, user_turns, start=()) -> Conversation:
    """Play ``user_turns`` (Message or text) as the app would, checking every turn against cold."""
    convo = Conversation(tuple(start), id=cid)
    previous = None
    for user in user_turns:
        message = user if isinstance(user, Message) else Message(Role.USER, user)
        convo = convo.with_message(message)
        turn = same_as_cold(engine, convo, settings, previous_ids=previous)
        previous = prompt_ids(engine, convo, settings)
        convo = convo.with_message(turn.reply())
    return convo


TEXTS = [
    "Hello there, what is MLX?",
    "Tell me more about the fox and the dog.",
    "And the cat on the mat?",
]


@pytest.mark.parametrize("settings", [ON, OFF], ids=["thinking-on", "thinking-off"])
def test_follow_up_turns_equal_cold_prefill(engine, settings):
    convo = converse(engine, f"follow-{settings.thinking}", settings, TEXTS)
    assert len(convo.messages) == 2 * len(TEXTS)


def _last_marker(engine, ids: list[int]) -> int:
    (marker,) = engine._loaded.encode("<|im_start|>")
    return max(i for i, t in enumerate(ids) if t == marker)


@pytest.mark.parametrize("settings", [ON, OFF], ids=["thinking-on", "thinking-off"])
def test_a_follow_up_resumes_at_the_generation_prompts_turn_marker(engine, settings):
    """Exactly there, not just within the slack: the first follow-up prefills what is new plus the
    role header after the marker ("assistant\\n": 2 tokens with the real vocabulary). Later turns
    resume earlier, where the template rewrites an earlier reply (the slack tests cover them)."""
    convo = Conversation((Message(Role.USER, TEXTS[0]),), id=f"marker-{settings.thinking}")
    previous = prompt_ids(engine, convo, settings)
    convo = convo.with_message(run(engine, convo, settings).reply())
    turn = run(engine, convo.with_message(Message(Role.USER, TEXTS[1])), settings)
    assert turn.stats.reused_tokens == _last_marker(engine, previous), turn.stats


def test_a_follow_up_that_leaves_the_last_reply_out_still_resumes(engine):
    """The app leaves an empty or failed answer out of the history: the next prompt then has the new
    user message where the reply was, and resumes at the same marker."""
    convo = Conversation((Message(Role.USER, TEXTS[0]),), id="dropped-reply")
    previous = prompt_ids(engine, convo, ON)
    run(engine, convo, ON)  # its reply is not kept
    nxt = convo.with_message(Message(Role.USER, TEXTS[1]))
    turn = run(engine, nxt, ON)
    assert turn.stats.reused_tokens == _last_marker(engine, previous) > 0, turn.stats


@pytest.fixture(scope="module")
def text_engine(tiny_text_model_dir, tmp_path_factory):
    """A text-only conversion (mlx-lm's model and cache classes), with a state folder."""
    from engine_mlx.engine import Engine

    eng = Engine(state_dir=tmp_path_factory.mktemp("text-state"))
    eng.load(tiny_text_model_dir)
    return eng


@pytest.mark.parametrize("settings", [ON, OFF], ids=["thinking-on", "thinking-off"])
def test_text_only_follow_up_turns_equal_cold_prefill(text_engine, settings):
    assert not text_engine.model_info.is_vision
    convo = converse(text_engine, f"text-{settings.thinking}", settings, TEXTS)
    assert len(convo.messages) == 2 * len(TEXTS)


def _reopen(tiny_model_dir, state_dir):
    from engine_mlx.engine import Engine

    fresh = Engine(state_dir=state_dir)
    fresh.load(tiny_model_dir)
    return fresh


def _saved_chat(engine, cid: str):
    """A two-turn chat whose state is persisted: (conversation, the snapshot file)."""
    convo = converse(engine, cid, ON, TEXTS[:2])
    path = engine.persist(cid)
    assert path is not None and path.exists()
    return convo, path


def test_text_only_restart_restores_the_snapshot_from_disk(tiny_text_model_dir, tmp_path):
    first = _reopen(tiny_text_model_dir, tmp_path / "state")
    convo, _path = _saved_chat(first, "text-saved")
    previous = prompt_ids(first, Conversation(convo.messages[:-1]), ON)
    first.unload()

    second = _reopen(tiny_text_model_dir, tmp_path / "state")
    nxt = convo.with_message(Message(Role.USER, TEXTS[2]))
    warm = same_as_cold(second, nxt, ON, previous_ids=previous)
    # The restored state came from the file and goes on serving the conversation.
    again = nxt.with_message(warm.reply()).with_message(Message(Role.USER, "One more."))
    same_as_cold(second, again, ON, previous_ids=prompt_ids(second, nxt, ON))


def test_thinking_budget_answers_so_history_has_an_answer(engine):
    turn = run(engine, Conversation((Message(Role.USER, "Hi"),)), ON)
    assert turn.thinking and turn.answer and turn.stats.thinking_tokens >= 4


def test_switching_thinking_mode_between_turns_still_reuses(engine):
    convo = Conversation((Message(Role.USER, TEXTS[0]),), id="mode-switch")
    first = run(engine, convo, ON)
    previous = prompt_ids(engine, convo, ON)
    convo = convo.with_message(first.reply()).with_message(Message(Role.USER, TEXTS[1]))
    same_as_cold(engine, convo, OFF, previous_ids=previous)


def test_turn_adding_an_image_prefills_only_the_new_part(engine, tmp_path, monkeypatch):
    from engine_mlx.runtime import LoadedModel

    a = write_image(tmp_path / "a.png", size=(128, 96))
    b = write_image(tmp_path / "b.png", size=(96, 128), color=(0, 120, 0))
    encoded = []
    real = LoadedModel._features

    def counting(self, rows, item):
        if item not in rows.features:
            encoded.append(item)
        return real(self, rows, item)

    monkeypatch.setattr(LoadedModel, "_features", counting)
    turns = [
        Message(Role.USER, "What is in this image?", (ImageAttachment(a),)),
        "Describe it in more detail.",
        Message(Role.USER, "And this one, compared with the first?", (ImageAttachment(b),)),
        "Which one is greener?",
    ]
    convo = Conversation(id="images")
    previous = None
    for i, user in enumerate(turns):
        message = user if isinstance(user, Message) else Message(Role.USER, user)
        convo = convo.with_message(message)
        encoded.clear()
        warm = run(engine, convo, ON)
        warm_encoded = list(encoded)
        cold = run(engine, Conversation(convo.messages), ON)
        assert (
            warm.stream == cold.stream
            and warm.stats.generated_tokens == cold.stats.generated_tokens
        )
        ids = prompt_ids(engine, convo, ON)
        if previous is not None:
            assert warm.stats.reused_tokens > 0
            assert warm.stats.prefilled_tokens <= len(ids) - common_prefix(previous, ids) + SLACK
        # Vision features only for media in the prefilled part: the first image is encoded on the
        # first turn only; the second from the turn that adds it, and again only if the template
        # rewrote the history before it (the tiny template drops reasoning one turn late).
        ranges = engine._loaded.prepare(
            render_text(convo, engine._loaded.apply_template, thinking=True, text_only=False),
            load_media(convo.attachments, engine.media_limits),
        ).media_token_ranges()
        assert warm_encoded == [
            n for n, (lo, _) in enumerate(ranges) if lo >= warm.stats.reused_tokens
        ]
        assert i == 0 or 0 not in warm_encoded
        assert i != 2 or warm_encoded == [1]
        previous = ids
        convo = convo.with_message(warm.reply())


def test_turn_adding_a_video_equals_cold(engine, tmp_path):
    clip = write_video(tmp_path / "clip.avi", seconds=2.0, size=(96, 64))
    turns = [
        "Hello, I will send a clip.",
        Message(Role.USER, "Summarize the video.", (VideoAttachment(clip, fps=2.0),)),
        "What happens at the end?",
    ]
    convo = converse(engine, "video", OFF, turns)
    loaded = engine._loaded
    convo_inputs = loaded.prepare(
        render_text(convo, loaded.apply_template, thinking=False, text_only=False),
        load_media(convo.attachments, engine.media_limits),
    )
    ranges = convo_inputs.media_token_ranges()
    assert len(ranges) >= 2  # one run of video tokens per frame group, timestamps in between


def test_replacing_an_image_with_one_of_the_same_size_does_not_reuse_the_old_one(engine, tmp_path):
    red = write_image(tmp_path / "red.png", size=(96, 96), color=(200, 30, 30))
    blue = write_image(tmp_path / "blue.png", size=(96, 96), color=(30, 30, 200))
    first = Conversation((Message(Role.USER, "Look", (ImageAttachment(red),)),), id="swap")
    turn = run(engine, first, OFF)
    follow = (first.messages[0], turn.reply(), Message(Role.USER, "Again"))
    swapped = (Message(Role.USER, "Look", (ImageAttachment(blue),)),) + follow[1:]
    # Same token ids, other pixels: the snapshot that saw the red image must not be used.
    assert prompt_ids(engine, Conversation(swapped), OFF) == prompt_ids(
        engine, Conversation(follow), OFF
    )
    warm = same_as_cold(engine, Conversation(swapped, id="swap"), OFF)
    image_start = prompt_ids(engine, first, OFF).index(engine._loaded.model.config.image_token_id)
    assert warm.stats.reused_tokens <= image_start


def test_edited_and_regenerated_messages_reuse_everything_before_the_change(engine):
    convo = converse(engine, "edit", ON, TEXTS)
    # Regenerate the last answer twice: the same snapshot serves both (it is not mutated by use).
    regen = Conversation(convo.messages[:-1], id="edit")
    full = prompt_ids(engine, regen, ON)
    again = [same_as_cold(engine, regen, ON) for _ in range(2)]
    assert again[0].stream == again[1].stream
    assert all(t.stats.reused_tokens > len(full) // 2 for t in again)
    # Edit the second user message: resume from the first turn's snapshot, before the change.
    edited = Conversation(
        convo.messages[:2] + (Message(Role.USER, "Something else entirely."),), id="edit"
    )
    ids = prompt_ids(engine, edited, ON)
    new = len(ids) - common_prefix(full, ids)
    warm = same_as_cold(engine, edited, ON)
    assert 0 < warm.stats.reused_tokens and warm.stats.prefilled_tokens <= new + SLACK
    # And the original branch's later snapshots are gone; the edited branch goes on reusing.
    nxt = edited.with_message(warm.reply()).with_message(Message(Role.USER, "Thanks."))
    same_as_cold(engine, nxt, ON, previous_ids=ids)


def _turn_starts(engine, convo: Conversation, settings: GenerationSettings) -> list[int]:
    marker = engine._loaded.encode("<|im_start|>")[0]
    return [i for i, t in enumerate(prompt_ids(engine, convo, settings)) if t == marker]


@pytest.mark.parametrize("settings", [ON, OFF], ids=["thinking-on", "thinking-off"])
def test_an_edited_or_repeated_last_message_reuses_everything_before_it(engine, settings):
    """Every turn keeps a snapshot at the start and at the end of its last message, so an edited last
    message resumes right before it, and a second user message in a row right after the first."""
    convo = converse(engine, f"last-{settings.thinking}", settings, TEXTS[:2])
    edited = Conversation(
        convo.messages[:2] + (Message(Role.USER, "Something else entirely."),), id=convo.id
    )
    warm = same_as_cold(engine, edited, settings)
    # all before the message
    assert warm.stats.reused_tokens == _turn_starts(engine, edited, settings)[-2]
    # The same edit again (a retry) resumes from the end of the message: only the generation prompt.
    again = same_as_cold(engine, edited, settings)
    assert again.stats.reused_tokens == _turn_starts(engine, edited, settings)[-1]

    row = Conversation((Message(Role.USER, TEXTS[0]),), id=f"row-{settings.thinking}")
    run(engine, row, settings)
    twice = row.with_message(Message(Role.USER, "And once more, in other words."))
    warm = same_as_cold(engine, twice, settings)
    # all of the first message
    assert warm.stats.reused_tokens == _turn_starts(engine, twice, settings)[-2]


def _cut(engine, convo: Conversation, settings: GenerationSettings, how: str) -> Turn:
    """A turn cut short by the token limit, or by Stop (a cancel) after as many tokens."""
    if how == "limit":
        return run(engine, convo, settings)
    cancel, events = CancelToken(), []
    for event in engine.generate(
        convo, replace(settings, max_tokens=4 * settings.max_tokens), cancel
    ):
        events.append(event)
        if sum(isinstance(e, (ThinkingDelta, AnswerDelta)) for e in events) == settings.max_tokens:
            cancel.cancel()
    assert events[-1].reason is FinishReason.CANCELLED
    stream = [
        (type(e).__name__, e.text) for e in events if isinstance(e, (ThinkingDelta, AnswerDelta))
    ]
    return Turn(
        events[-2],
        "".join(t for k, t in stream if k == "ThinkingDelta"),
        "".join(t for k, t in stream if k == "AnswerDelta"),
        stream,
    )


@pytest.mark.parametrize("model", ["vision", "text-only"])
@pytest.mark.parametrize("how", ["limit", "stop"])
@pytest.mark.parametrize("settings", [ON, OFF], ids=["thinking", "no-thinking"])
def test_a_cut_short_turn_carries_on_exactly_where_it_stopped(request, model, settings, how):
    """Continue resumes from the very tokens the turn wrote, from the state at its end: twice carried
    on, the turn equals one that was never cut, token for token, and nothing is prefilled again."""
    engine = request.getfixturevalue("engine" if model == "vision" else "text_engine")
    settings = replace(settings, thinking_budget=None, max_tokens=6)
    user = Message(Role.USER, TEXTS[0] + f" ({how})")
    name = f"{how}-{settings.thinking}"  # conversation ids of this case's own
    whole = run(engine, Conversation((user,), id=f"whole-{name}"), replace(settings, max_tokens=40))
    first = _cut(engine, Conversation((user,), id=f"cut-{name}"), settings, how)
    assert first.stats.generated_tokens >= 6
    if settings.thinking:
        assert first.thinking and not first.answer  # still thinking
    turn, written = first, first.stats.prompt_tokens + first.stats.generated_tokens
    for _ in range(2):
        cut = Conversation((user, turn.reply()), id=f"cut-{name}", continue_last=True)
        more = run(engine, cut, settings)
        assert (more.stats.prompt_tokens, more.stats.reused_tokens) == (written, written)
        assert more.stats.prefilled_tokens == 0
        written += more.stats.generated_tokens
        turn = Turn(
            more.stats,
            turn.thinking + more.thinking,
            turn.answer + more.answer,
            turn.stream + more.stream,
        )
    # Without the end-of-turn state (another chat, a restart), the same tokens are prefilled instead.
    elsewhere = run(
        engine, Conversation((user, turn.reply()), id=f"other-{name}", continue_last=True), settings
    )
    assert (elsewhere.stats.reused_tokens, elsewhere.stats.prompt_tokens) == (0, written)
    assert whole.stats.generated_tokens > written - first.stats.prompt_tokens + 6
    # Token for token: the tokens the turn holds after three cuts are the uncut turn's first ones.
    tokens = engine._cut_turns._turns[f"other-{name}"].generated
    assert len(tokens) == written - first.stats.prompt_tokens + elsewhere.stats.generated_tokens
    assert tokens == engine._cut_turns._turns[f"whole-{name}"].generated[: len(tokens)]
    if model == "text-only":
        return  # its text is cut inside a character at the second cut: U+FFFD where the uncut turn has one
    thinking, answer = turn.thinking + elsewhere.thinking, turn.answer + elsewhere.answer
    if answer:  # the uncut turn's first tokens
        assert thinking == whole.thinking and whole.answer.startswith(answer)
    else:
        assert len(thinking) > len(first.thinking) and whole.thinking.startswith(thinking)


@pytest.mark.parametrize("model", ["vision", "text-only"])
def test_after_a_continue_the_next_turn_resumes_from_disk_after_a_restart(request, model, tmp_path):
    """The end-of-turn state stays in memory; what is saved serves the next user turn after a restart."""
    model_dir = request.getfixturevalue(
        "tiny_model_dir" if model == "vision" else "tiny_text_model_dir"
    )
    first = _reopen(model_dir, tmp_path / "state")
    settings = replace(ON, thinking_budget=None, max_tokens=6)
    user = Message(Role.USER, TEXTS[0])
    cut = run(first, Conversation((user,), id="carried"), settings)
    more = run(first, Conversation((user, cut.reply()), id="carried", continue_last=True), settings)
    assert more.stats.prefilled_tokens == 0
    answer = Message(
        Role.ASSISTANT, cut.answer + more.answer, thinking=cut.thinking + more.thinking
    )
    assert first.persist("carried") is not None
    first.unload()

    second = _reopen(model_dir, tmp_path / "state")
    nxt = Conversation((user, answer, Message(Role.USER, TEXTS[1])), id="carried")
    same_as_cold(second, nxt, ON, previous_ids=prompt_ids(second, Conversation((user,)), ON))


def test_a_turn_cut_right_after_its_thinking_closed_carries_on_as_answer(engine):
    from engine_mlx.generation import FORCED_THINKING_CLOSE

    user = Message(Role.USER, TEXTS[2])
    closing = len(engine._loaded.encode(FORCED_THINKING_CLOSE))
    # the limit falls right after the close
    settings = replace(ON, thinking_budget=3, max_tokens=3 + closing)
    first = run(engine, Conversation((user,), id="closed"), settings)
    assert (
        first.thinking and not first.answer.strip() and first.stats.generated_tokens == 3 + closing
    )
    more = run(
        engine,
        Conversation((user, first.reply()), id="closed", continue_last=True),
        replace(ON, max_tokens=4),
    )
    assert (
        more.stats.prefilled_tokens == 0
        and more.stream
        and {k for k, _ in more.stream} == {"AnswerDelta"}
    )


@pytest.mark.parametrize("settings", [ON, OFF], ids=["thinking", "no-thinking"])
def test_an_edited_cut_turn_is_continued_from_its_text(engine, settings):
    """A turn whose text was changed (or one the engine never saw) is re-encoded: the prompt is the
    turn so far, equal to a cold prefill, prefilling only the turn's text."""
    settings = replace(settings, thinking_budget=None, max_tokens=6)
    user = Message(Role.USER, TEXTS[1])
    first = run(engine, Conversation((user,), id="edited"), settings)
    edited = Message(
        Role.ASSISTANT,
        first.answer + " edited" if first.answer else "",
        thinking=first.thinking + " edited" if first.thinking else "",
    )
    cut = Conversation((user, edited), id="edited", continue_last=True)
    prompt = render_text(
        cut, engine._loaded.apply_template, thinking=settings.thinking, text_only=False
    )
    # the same turn
    assert prompt.endswith(" edited") and prompt.count("<|im_start|>assistant") == 1
    more = same_as_cold(
        engine, cut, settings, previous_ids=prompt_ids(engine, Conversation((user,)), settings)
    )
    assert more.stats.prefilled_tokens > 0
    assert all("<think>" not in text for _kind, text in more.stream)


def test_continue_needs_an_assistant_turn_last(engine):
    from engine_mlx.errors import UnsupportedInputError

    with pytest.raises(UnsupportedInputError, match="assistant message last"):
        list(engine.generate(Conversation((Message(Role.USER, "Hi"),), continue_last=True), OFF))


def test_switching_between_two_conversations_stays_instant(engine):
    a = Conversation((Message(Role.USER, TEXTS[0]),), id="chat-a")
    b = Conversation((Message(Role.USER, "A different chat about code."),), id="chat-b")
    a = a.with_message(run(engine, a, OFF).reply()).with_message(Message(Role.USER, TEXTS[1]))
    b = b.with_message(run(engine, b, OFF).reply()).with_message(Message(Role.USER, "def main():"))
    assert run(engine, a, OFF).stats.reused_tokens > 0
    assert run(engine, b, OFF).stats.reused_tokens > 0


# ---------------------------------------------------------------------- the store on its own


def _fake_snapshot(length: int, nbytes: int):
    import mlx.core as mx
    from mlx_vlm.models.cache import ArraysCache

    from engine_mlx.snapshots import Snapshot

    entry = ArraysCache(1)
    entry[0] = mx.zeros((nbytes // 4,), dtype=mx.float32)
    return Snapshot(length=length, cache=[entry])


def test_store_end_of_turn_snapshot_serves_only_its_whole_prompt_and_stays_in_memory(tmp_path):
    import mlx.core as mx

    store = SnapshotStore(disk_dir=tmp_path)
    # the turn's prompt, before its tail
    store.add("a", "fp", [1, 2, 3, 4], _fake_snapshot(2, 1000))
    end = replace(_fake_snapshot(6, 1000), generated=(5, 6), logits=mx.ones((1, 8)))
    store.add("a", "fp", [1, 2, 3, 4, 5, 6], end)
    whole = store.lookup("a", "fp", [1, 2, 3, 4, 5, 6])
    assert whole.length == 6 and whole.logits is end.logits  # carried on: nothing to prefill
    # it extends the turn: resume at its end
    longer = store.lookup("a", "fp", [1, 2, 3, 4, 5, 6, 7])
    assert longer.length == 6 and longer.logits is None
    assert store.lookup("a", "fp", [1, 2, 3, 4, 5, 9]).length == 2
    # carried on, cut again
    store.add(
        "a",
        "fp",
        [1, 2, 3, 4, 5, 6, 7, 8],
        replace(_fake_snapshot(8, 1000), generated=(7, 8), logits=mx.ones((1, 8))),
    )
    assert store.lookup("a", "fp", [1, 2, 3, 4, 5, 6]).logits is None  # the older end is superseded
    path = store.save("a")  # the next turn resumes from the prompt's snapshot: that one is saved
    restored = SnapshotStore(disk_dir=tmp_path).lookup("a", "fp", [1, 2, 3, 4, 5, 6])
    assert path is not None and restored.length == 2 and restored.logits is None


def test_store_evicts_least_recently_used_by_bytes():
    store = SnapshotStore(budget_bytes=2500)
    store.add("a", "fp", [1, 2, 3, 4], _fake_snapshot(2, 1000))
    store.add("b", "fp", [5, 6, 7, 8], _fake_snapshot(2, 1000))
    assert store.lookup("a", "fp", [1, 2, 3]) is not None  # "a" is now the most recent
    store.add("c", "fp", [9, 9, 9, 9], _fake_snapshot(2, 1000))
    assert store.nbytes <= 2500
    assert store.lookup("b", "fp", [5, 6, 7]) is None  # least recently used: evicted
    assert store.lookup("a", "fp", [1, 2, 3]).length == 2
    assert store.lookup("c", "fp", [9, 9, 9]).length == 2


def test_store_drops_older_turns_before_other_conversations():
    store = SnapshotStore(budget_bytes=3500)
    store.add("a", "fp", list(range(10)), _fake_snapshot(2, 1000))
    store.add("b", "fp", list(range(10)), _fake_snapshot(2, 1000))
    store.add("b", "fp", list(range(10)), _fake_snapshot(5, 1000))
    store.add("b", "fp", list(range(10)), _fake_snapshot(8, 1000))  # 4000 bytes: one must go
    assert store.lookup("a", "fp", list(range(10))).length == 2
    assert store.lookup("b", "fp", list(range(10))).length == 8
    assert store.lookup("b", "fp", [0, 1, 2, 3, 4, 5, 99]).length == 5
    assert store.lookup("b", "fp", [0, 1, 2, 99]) is None  # b's oldest turn went first


def test_store_lookup_never_hands_out_its_own_copy():
    store = SnapshotStore()
    store.add("a", "fp", [1, 2, 3, 4], _fake_snapshot(3, 64))
    got = store.lookup("a", "fp", [1, 2, 3, 4])
    got.cache[0][0] += 1
    again = store.lookup("a", "fp", [1, 2, 3, 4])
    assert float(again.cache[0][0].sum()) == 0.0
    assert store.lookup("a", "other-model", [1, 2, 3, 4]) is None
    assert store.lookup("a", "fp", [1, 2, 3]) is None  # a snapshot must leave a token to decode
    assert store.lookup("", "fp", [1, 2, 3, 4]) is None


def test_kv_snapshot_is_compacted_and_counted_as_held(engine):
    from engine_mlx.cache_protocol import cache_nbytes

    convo = Conversation((Message(Role.USER, TEXTS[0]),), id="bytes")
    # cut: an end-of-turn snapshot too
    assert run(engine, convo, OFF).stats.generated_tokens == OFF.max_tokens
    entries = engine.snapshots._conversations["bytes"].entries
    assert [bool(e.snapshot.generated) for e in entries] == [False, True]
    for entry in entries:
        kv = [c for c in entry.snapshot.cache if c.size()]  # the attention layers
        assert kv and all(c.size() == entry.snapshot.length for c in kv)
        # mlx-vlm's KV state is cut to the tokens held: the snapshot keeps no preallocated tail.
        assert all(c.nbytes == sum(a.nbytes for a in c.state) for c in kv)
    seam, end = entries
    assert seam.nbytes == cache_nbytes(seam.snapshot.cache) > 0
    # its logits count
    assert end.nbytes == cache_nbytes(end.snapshot.cache) + end.snapshot.logits.nbytes


# ---------------------------------------------------------------------- disk


def test_restart_restores_the_snapshot_from_disk(tiny_model_dir, tmp_path):
    first = _reopen(tiny_model_dir, tmp_path / "state")
    convo, path = _saved_chat(first, "saved")
    assert path.suffix == ".safetensors"
    assert first.persist("saved") is None  # nothing new to write
    previous = prompt_ids(first, Conversation(convo.messages[:-1]), ON)
    first.unload()

    second = _reopen(tiny_model_dir, tmp_path / "state")
    nxt = convo.with_message(Message(Role.USER, TEXTS[2]))
    same_as_cold(second, nxt, ON, previous_ids=previous)

    # A model or template change: the file is not used, the turn is a silent cold prefill.
    third = _reopen(tiny_model_dir, tmp_path / "state")
    third._fingerprint = "another-model"
    warm = run(third, nxt, ON)
    assert warm.stats.reused_tokens == 0

    # A damaged file: cold prefill, no error, and the file is cleaned up.
    path.write_bytes(b"\x00garbage" * 32)
    fourth = _reopen(tiny_model_dir, tmp_path / "state")
    warm = run(fourth, nxt, ON)
    assert warm.stats.reused_tokens == 0 and not path.exists()


def test_forget_drops_a_deleted_chat_in_memory_and_on_disk(tiny_model_dir, tmp_path):
    engine = _reopen(tiny_model_dir, tmp_path / "state")
    convo, path = _saved_chat(engine, "gone")
    engine.forget("gone")
    assert not path.exists()
    nxt = convo.with_message(Message(Role.USER, TEXTS[2]))
    assert run(engine, nxt, ON).stats.reused_tokens == 0


def test_disk_budget_and_stale_files_are_cleaned(tmp_path):
    import os
    import time

    state = tmp_path / "state"
    store = SnapshotStore(disk_dir=state, disk_budget_bytes=10_000)
    for name in "abc":
        store.add(name, "fp", [1, 2, 3, 4], _fake_snapshot(3, 4000))
    old = store.save("a")
    os.utime(old, (time.time() - 100, time.time() - 100))
    store.save("b")
    (state / "leftover.tmp.safetensors").write_bytes(b"x")
    store.save("c")  # three files of ~4 KB exceed 10 KB: the oldest goes
    names = {p.name for p in state.iterdir()}
    assert not old.exists() and len(names) == 2 and not any(".tmp" in n for n in names)

    aged = SnapshotStore(disk_dir=state, disk_max_age_s=50)
    aged.add("d", "fp", [1, 2, 3, 4], _fake_snapshot(3, 100))
    b_file = store._path("b")
    os.utime(b_file, (time.time() - 100, time.time() - 100))
    aged.save("d")
    assert not b_file.exists() and aged._path("d").exists()

    # A file restores in a fresh store (same fingerprint) with mlx-vlm's own cache classes.
    restored = SnapshotStore(disk_dir=state).lookup("c", "fp", [1, 2, 3, 4])
    assert restored is not None and restored.length == 3
    assert type(restored.cache[0]).__module__ == "mlx_vlm.models.cache"


# ---------------------------------------------------------------------- command line


@pytest.mark.parametrize("model", ["vision", "text-only"])
def test_cli_interactive_json_reports_reuse(model, request):
    engine = request.getfixturevalue("engine" if model == "vision" else "text_engine")
    model_dir = engine.model_info.path
    lines = ["hello", "more words here", "and a third line of text"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine_mlx",
            "chat",
            "--model",
            str(model_dir),
            "--json",
            "--max-tokens",
            "8",
            "--thinking-budget",
            "3",
            "--temperature",
            "0",
        ],
        input="".join(line + "\n" for line in lines),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MLX_DISABLE_COMPILE": "1"},
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert sum(e["type"] == "stats" for e in events) == 3
    # Rebuild each turn's prompt from the streamed answers to count the tokens that are new.
    settings = GenerationSettings(thinking=True)
    convo, previous, turn = Conversation(), None, {"thinking": "", "answer": ""}
    texts = iter(lines)
    for event in events:
        if event["type"] in ("thinking", "answer"):
            turn[event["type"]] += event["text"]
        elif event["type"] == "stats":
            convo = convo.with_message(Message(Role.USER, next(texts)))
            ids = prompt_ids(engine, convo, settings)
            assert event["prompt_tokens"] == len(ids)
            if previous is None:
                assert event["reused_tokens"] == 0
            else:
                new = len(ids) - common_prefix(previous, ids)
                assert event["reused_tokens"] > 0 and event["prefilled_tokens"] <= new + SLACK, (
                    event,
                    new,
                )
            previous = ids
            convo = convo.with_message(
                Message(Role.ASSISTANT, turn["answer"], thinking=turn["thinking"])
            )
            turn = {"thinking": "", "answer": ""}


def test_cli_continue_carries_on_the_last_answer(engine):
    """``/continue`` in an interactive chat: the same turn goes on, reusing the prompt before it."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine_mlx",
            "chat",
            "--model",
            str(engine.model_info.path),
            "--json",
            "--max-tokens",
            "6",
            "--temperature",
            "0",
        ],
        input="/continue\nTell a long story\n/continue\n",
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MLX_DISABLE_COMPILE": "1"},
    )
    # nothing to continue at first
    assert result.returncode == 2 and "there is none yet" in result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    stats = [e for e in events if e["type"] == "stats"]
    assert len(stats) == 2 and stats[0]["generated_tokens"] == 6
    first_thinking = "".join(
        e["text"] for e in events[: events.index(stats[0])] if e["type"] == "thinking"
    )
    user = Message(Role.USER, "Tell a long story")
    cut = Conversation(
        (user, Message(Role.ASSISTANT, "", thinking=first_thinking)), continue_last=True
    )
    assert stats[1]["prompt_tokens"] == len(
        prompt_ids(engine, cut, GenerationSettings(thinking=True))
    )
    assert stats[1]["reused_tokens"] >= stats[0]["prompt_tokens"] - SLACK


def test_cli_one_shot_chat_on_a_text_only_model(tiny_text_model_dir):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine_mlx",
            "chat",
            "--model",
            str(tiny_text_model_dir),
            "--max-tokens",
            "6",
            "--thinking-budget",
            "2",
            "Hello",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MLX_DISABLE_COMPILE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower() and "prompt tokens" in result.stdout
