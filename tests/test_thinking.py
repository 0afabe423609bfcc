"""The thinking/answer splitter on scripted streams."""

from engine_mlx.thinking import ThinkingSplitter


def run(chunks, starts_in_thinking=True):
    splitter = ThinkingSplitter(starts_in_thinking)
    thinking, answer = [], []
    for chunk in chunks:
        part = splitter.feed(chunk)
        thinking.append(part.thinking)
        answer.append(part.answer)
    end = splitter.flush()
    return "".join(thinking) + end.thinking, "".join(answer) + end.answer


def test_thinking_then_answer():
    assert run(["Let me see.", "\n</think>\n\n", "Paris."]) == ("Let me see.\n", "Paris.")


def test_closing_tag_split_across_tokens():
    assert run(["hmm", "</", "thi", "nk", ">", "\n\nYes"]) == ("hmm", "Yes")


def test_partial_tag_that_is_not_a_tag_is_kept():
    assert run(["a </b> c", "</thin", "king is fun"]) == ("a </b> c</thinking is fun", "")


def test_no_closing_tag_is_all_thinking():
    assert run(["I keep", " thinking"]) == ("I keep thinking", "")


def test_empty_thinking():
    assert run(["</think>", "\n\nAnswer"]) == ("", "Answer")


def test_thinking_off_is_all_answer():
    assert run(["Hello", " </think> world"], starts_in_thinking=False) == (
        "",
        "Hello </think> world",
    )


def test_thinking_off_model_opens_its_own_block():
    assert run(["<th", "ink>\nplan</think>\n\nDone"], starts_in_thinking=False) == ("plan", "Done")


def test_leading_newline_of_thinking_is_dropped_once():
    assert run(["\n", "step 1\n", "\nstep 2", "</think>ok"]) == ("step 1\n\nstep 2", "ok")
