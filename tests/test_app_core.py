"""The app's Qt-free core: the SQLite store, the streaming Markdown renderer, TeX math."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from app.mathtext import tex_to_html
from app.render import CODE_CHUNK_LINES, Renderer, StreamingMarkdown, render_markdown
from app.store import (
    MIGRATIONS,
    AttachmentKind,
    ChatSettings,
    MessageState,
    Store,
    StoredAttachment,
    StoredStats,
    StoreError,
    ThinkingMode,
    search_database,
)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db.sqlite3", tmp_path / "attachments")
    yield s
    s.close()


def test_schema_is_versioned_and_wal(store, tmp_path):
    assert store.schema_version == len(MIGRATIONS)
    mode = store._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode.lower() == "wal"
    store.close()
    again = Store(tmp_path / "db.sqlite3", tmp_path / "attachments")  # re-open: no migration re-run
    assert again.schema_version == len(MIGRATIONS)
    again.close()


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "db.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreError, match="newer QwenDesk"):
        Store(path, tmp_path / "a")


def test_conversations_messages_settings_roundtrip(store):
    settings = ChatSettings(
        system_prompt="Be brief.", thinking=ThinkingMode.BUDGET, thinking_budget=64
    ).with_generation(temperature=0.3)
    cid = store.create_conversation("First", settings)
    store.add_message(cid, "user", "hello")
    answer = store.add_message(cid, "assistant", "", state=MessageState.STREAMING)
    store.update_message(
        answer.id, text="hi there", thinking="greet", state=MessageState.COMPLETE, thinking_s=1.5
    )
    messages = store.messages(cid)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].text == "hi there" and messages[1].thinking == "greet"
    assert messages[1].thinking_s == 1.5
    assert store.settings(cid) == settings
    later = store.create_conversation("Second")
    assert [c.id for c in store.conversations()] == [later, cid]  # newest first


def test_rows_written_before_stats_and_settings_took_the_engines_types_still_read(store):
    """Stats are the engine's ``events.Stats`` serialised, settings hold ``GenerationSettings``: a chat and
    an answer stored in the earlier flat formats read back with every figure and setting they had."""
    from engine_mlx.events import Stats
    from engine_mlx.settings import DEFAULT_MAX_TOKENS

    cid = store.create_conversation("Old")
    answer = store.add_message(cid, "assistant", "hi")
    old_stats = {
        "prompt_tokens": 20,
        "reused_tokens": 8,
        "generated_tokens": 5,
        "thinking_tokens": 2,
        "answer_tokens": 3,
        "decode_tps": 12.5,
        "ttft_s": 0.25,
        "total_s": 0.75,
        "peak_memory_bytes": 1000,
        "run_tokens": 5,
    }
    old_settings = {
        "system_prompt": "Be brief.",
        "thinking": "budget",
        "thinking_budget": 64,
        "max_tokens": 99,
        "temperature": 0.3,
        "top_p": None,
        "top_k": 5,
        "presence_penalty": None,
        "seed": 4,
    }
    store._db.execute("UPDATE messages SET stats=? WHERE id=?", (json.dumps(old_stats), answer.id))
    store._db.execute(
        "UPDATE conversations SET settings=? WHERE id=?", (json.dumps(old_settings), cid)
    )
    stats = store.messages(cid)[0].stats
    assert isinstance(stats, Stats) and (
        stats.prompt_tokens,
        stats.decode_tps,
        stats.run_tokens,
    ) == (20, 12.5, 5)
    assert stats.prefilled_tokens == 12 and stats.prefill_tps == 0.0  # not kept then: implied, or 0
    settings = store.settings(cid)
    assert (settings.thinking, settings.thinking_budget) == (ThinkingMode.BUDGET, 64)
    g = settings.generation
    assert (g.max_tokens, g.temperature, g.top_p, g.top_k, g.seed) == (99, 0.3, None, 5, 4)
    assert json.loads(settings.to_json()) == old_settings  # and written back in the same shape
    assert ChatSettings().generation.max_tokens == DEFAULT_MAX_TOKENS  # one home for the default
    engine_stats = Stats(30, 10, 20, 6, 2, 4, 100.0, 12.0, 0.5, 1.0, 2048)
    store.update_message(answer.id, stats=StoredStats.of(engine_stats))
    again = store.messages(cid)[0].stats
    assert again == StoredStats.of(engine_stats) and again.run_tokens == 6


def test_search_finds_words_and_prefixes_not_deleted(store):
    a = store.create_conversation("Cooking")
    store.add_message(a, "user", "How long do I boil an artichoke?")
    b = store.create_conversation("Travel")
    store.add_message(b, "user", "Trains from Zürich to Milano")
    assert [h.conversation_id for h in store.search("artichoke")] == [a]
    assert [h.conversation_id for h in store.search("artich")] == [a]  # prefix
    assert [h.conversation_id for h in store.search("zurich")] == [b]  # diacritics folded
    assert store.search('" OR NOT (') == []  # FTS syntax in user input cannot break the query
    store.delete(a)
    assert store.search("artichoke") == []
    store.undelete(a)
    assert len(store.search("artichoke")) == 1


def test_search_hits_come_newest_chat_first_in_message_order_with_marked_snippets(store):
    chats = []
    for i in range(3):
        cid = store.create_conversation(f"Chat {i}")
        for j in range(3):
            store.add_message(cid, "user", f"turn {j} of chat {i} mentions the quokka once")
        chats.append(cid)
        time.sleep(0.01)  # distinct updated_at
    hits = store.search("quokka")
    order = [(h.conversation_id, h.message_id) for h in hits]
    expected = [(cid, m.id) for cid in reversed(chats) for m in store.messages(cid)]
    assert order == expected
    assert all("[quokka]" in h.snippet for h in hits)
    assert [
        (h.conversation_id, h.message_id)
        for h in search_database(store.database, "quokka", limit=4)
    ] == expected[:4]


def test_updated_text_is_reindexed(store):
    cid = store.create_conversation()
    m = store.add_message(cid, "assistant", "", state=MessageState.STREAMING)
    store.update_message(m.id, text="the quokka smiles")
    assert store.search("quokka")[0].message_id == m.id


def test_interrupted_and_truncation(store):
    cid = store.create_conversation()
    store.add_message(cid, "user", "one")
    store.add_message(cid, "assistant", "partial", state=MessageState.STREAMING)
    assert store.mark_interrupted() == 1
    assert store.messages(cid)[1].state is MessageState.INTERRUPTED
    store.delete_messages_from(cid, 1)
    assert len(store.messages(cid)) == 1


def test_attachments_are_content_addressed(store, tmp_path):
    src = tmp_path / "photo.PNG"
    src.write_bytes(b"\x89PNG fake")
    copy1 = store.import_file(src)
    copy2 = store.import_file(src)
    assert copy1 == copy2 and copy1.parent.parent == store.attachments_dir
    assert copy1.suffix == ".png" and copy1.read_bytes() == src.read_bytes()
    src.unlink()  # history survives moving the original
    cid = store.create_conversation()
    att = StoredAttachment(
        AttachmentKind.PDF, copy1, "photo.PNG", first_page=2, last_page=3, page_count=5
    )
    store.add_message(cid, "user", "see", attachments=(att,))
    got = store.messages(cid)[0].attachments[0]
    assert got == att
    store.delete(cid)
    store.purge_deleted()
    assert not copy1.exists()  # orphans removed with their last conversation


def test_disk_full_is_one_sentence(store, monkeypatch):
    cid = store.create_conversation()
    m = store.add_message(cid, "user", "x")

    class FullDisk:
        def execute(self, *args):
            raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "_db", FullDisk())
    with pytest.raises(StoreError, match="disk is full"):
        store.update_message(m.id, text="y")


SAMPLE = """# Plan

Intro paragraph with **bold** and $E = mc^2$ and `code $x$`.

```python
def square(x):
    return x * x
```

1. first
2. second

| a | b |
|---|---|
| 1 | 2 |

$$\\sum_{i=1}^{n} i = \\frac{n(n+1)}{2}$$
"""


def test_streaming_equals_whole_render_for_any_chunking():
    whole, codes = render_markdown(SAMPLE)
    for size in (1, 3, 17):
        stream = StreamingMarkdown(Renderer())
        blocks = []
        for i in range(0, len(SAMPLE), size):
            blocks += stream.feed(SAMPLE[i : i + size])
            stream.tail_html()
        blocks += stream.finish()
        assert "".join(b.html for b in blocks) == whole
        assert stream.codes == codes == ["def square(x):\n    return x * x"]
    assert "<table" in whole and "<h1>Plan</h1>" in whole and "<ol>" in whole
    assert "∑" in whole and "⁄" in whole  # display math rendered to Unicode
    assert "<code>code $x$</code>" in whole  # math inside code spans is left alone


def test_tail_stays_short_in_a_long_answer():
    """The per-update cost is bounded: the open tail never holds more than one block or code chunk."""
    stream = StreamingMarkdown(Renderer())
    longest_tail = 0
    text = "".join(f"Paragraph {i} has some words in it.\n\n" for i in range(200))
    text += "```\n" + "".join(f"line {i}\n" for i in range(500)) + "```\n"
    for i in range(0, len(text), 7):
        stream.feed(text[i : i + 7])
        longest_tail = max(longest_tail, len(stream.text) - stream._stable)
    assert longest_tail < 60 * CODE_CHUNK_LINES
    assert stream.code(0).count("\n") >= 499  # the whole long code block is copyable


def test_unclosed_fence_and_html_are_safe():
    html_, codes = render_markdown("<script>alert(1)</script>\n\n```js\nlet a = 1;")
    assert "<script>" not in html_ and "&lt;script&gt;" in html_
    assert codes == ["let a = 1;"]


@pytest.mark.parametrize(
    "tex, expected",
    [
        (r"\alpha + \beta \leq \gamma", "α + β ≤ γ"),
        (r"x^{2}", "<i>x</i><sup>2</sup>"),
        (r"\sqrt{2}", "√2"),
        (r"\mathbb{R}^n", "ℝ<sup><i>n</i></sup>"),
        (r"\text{if } a \to \infty", "if <i>a</i> → ∞"),
        (r"\unknowncmd", "\\unknowncmd"),
    ],
)
def test_tex_to_html(tex, expected):
    assert tex_to_html(tex) == expected
