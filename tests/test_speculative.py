"""Speculative decoding with an MTP head, on the tiny model with the real MLX libraries: greedy output
equals plain decoding token for token (a trained head whose drafts are kept, a random head whose
drafts are refused), and everything around decoding keeps working."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from media_files import write_image

from engine_mlx.cancel import CancelToken
from engine_mlx.conversation import Conversation, ImageAttachment, Message, Role
from engine_mlx.engine import Engine
from engine_mlx.errors import CheckpointError
from engine_mlx.events import (
    AnswerDelta,
    Event,
    Finished,
    FinishReason,
    Stats,
    ThinkingDelta,
    TokenLogprob,
)
from engine_mlx.forcing import ForcedText
from engine_mlx.mtp_head import MtpMode
from engine_mlx.settings import GenerationSettings
from engine_mlx.tiny_mtp import new_head, train_head, write_head

GREEDY = GenerationSettings(temperature=0.0, presence_penalty=0.0, max_tokens=40, logprobs=1)
TRAINED_ON = ("Hello there", "Write a poem")  # the trained head knows these replies


@dataclass
class Turn:
    ids: list[int]
    thinking: str
    answer: str
    stats: Stats
    finished: Finished

    @property
    def text(self) -> str:
        return self.thinking + self.answer

    def reply(self) -> Message:
        return Message(Role.ASSISTANT, self.answer, thinking=self.thinking)


def run(
    engine: Engine,
    conversation: Conversation,
    settings: GenerationSettings,
    cancel: CancelToken | None = None,
) -> Turn:
    events: list[Event] = list(engine.generate(conversation, settings, cancel))
    return Turn(
        [e.token_id for e in events if isinstance(e, TokenLogprob)],
        "".join(e.text for e in events if isinstance(e, ThinkingDelta)),
        "".join(e.text for e in events if isinstance(e, AnswerDelta)),
        next(e for e in events if isinstance(e, Stats)),
        next(e for e in events if isinstance(e, Finished)),
    )


def ask(text: str, *attachments: ImageAttachment, id: str = "") -> Conversation:
    return Conversation((Message(Role.USER, text, tuple(attachments)),), id=id)


@pytest.fixture(scope="module")
def text_engine(tiny_text_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The text-only tiny model with a head trained on its replies to TRAINED_ON, and a random head."""
    engine = Engine(state_dir=tmp_path_factory.mktemp("state"))
    engine.load(tiny_text_model_dir, mtp=MtpMode.OFF)
    trained = train_head(
        tiny_text_model_dir, TRAINED_ON, out_dir=tmp_path_factory.mktemp("trained")
    )
    random = write_head(
        tiny_text_model_dir, new_head(tiny_text_model_dir), tmp_path_factory.mktemp("random")
    )
    return engine, trained, random


@pytest.fixture(scope="module")
def vision_engine(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    engine = Engine(state_dir=tmp_path_factory.mktemp("state"))
    engine.load(tiny_model_dir, mtp=MtpMode.OFF)
    random = write_head(tiny_model_dir, new_head(tiny_model_dir), tmp_path_factory.mktemp("random"))
    trained = train_head(tiny_model_dir, TRAINED_ON[:1], out_dir=tmp_path_factory.mktemp("trained"))
    return engine, random, trained


def both(
    engine: Engine, head: Path, conversation: Conversation, settings: GenerationSettings
) -> tuple[Turn, Turn]:
    """The turn decoded plainly, then speculatively with ``head`` (mode on: every step drafts)."""
    engine.use_mtp(MtpMode.OFF)
    plain = run(engine, conversation, settings)
    engine.use_mtp(MtpMode.ON, head)
    try:
        spec = run(engine, conversation, settings)
    finally:
        engine.use_mtp(MtpMode.OFF)
    return plain, spec


CASES = {
    "thinking": GREEDY,
    "no thinking": GenerationSettings(
        thinking=False, temperature=0.0, presence_penalty=0.0, max_tokens=30, logprobs=1
    ),
    "budget": GenerationSettings(
        thinking_budget=6, temperature=0.0, presence_penalty=0.0, max_tokens=30, logprobs=1
    ),
    "presence penalty": GenerationSettings(
        temperature=0.0, presence_penalty=1.5, max_tokens=30, logprobs=1
    ),
    "forced text": GenerationSettings(
        temperature=0.0,
        max_tokens=30,
        logprobs=1,
        forced=ForcedText("The answer is 42.", end_turn=False),
    ),
}


@pytest.mark.parametrize("head", ["trained", "random"])
@pytest.mark.parametrize("case", list(CASES))
def test_greedy_output_is_plain_decodings(text_engine, head: str, case: str) -> None:
    engine, trained, random = text_engine
    plain, spec = both(
        engine, trained if head == "trained" else random, ask("Hello there"), CASES[case]
    )
    assert spec.ids == plain.ids and spec.text == plain.text
    assert spec.finished.reason is plain.finished.reason
    assert (spec.stats.thinking_tokens, spec.stats.answer_tokens) == (
        plain.stats.thinking_tokens,
        plain.stats.answer_tokens,
    )
    assert spec.stats.drafted_tokens > 0 and plain.stats.drafted_tokens == 0
    if head == "random":
        assert spec.stats.accepted_tokens < spec.stats.drafted_tokens


def test_trained_head_is_accepted(text_engine) -> None:
    engine, trained, _ = text_engine
    for text in TRAINED_ON:
        _, spec = both(engine, trained, ask(text), GREEDY)
        assert spec.stats.accepted_tokens > 0.6 * spec.stats.drafted_tokens


def test_output_crossing_prefill_chunks_and_the_follow_up_turn(text_engine) -> None:
    engine, trained, random = text_engine
    settings = GenerationSettings(
        temperature=0.0, presence_penalty=0.0, max_tokens=24, prefill_chunk=8, logprobs=1
    )
    for head, name in ((trained, "t"), (random, "r")):
        first_plain, first_spec = both(engine, head, ask("Hello there", id=f"a-{name}"), settings)
        assert first_spec.ids == first_plain.ids
        follow = Conversation(
            (
                Message(Role.USER, "Hello there"),
                Message(Role.ASSISTANT, first_plain.text),
                Message(Role.USER, "And then?"),
            ),
            id=f"a-{name}",
        )
        engine.use_mtp(MtpMode.ON, head)
        spec_next = run(engine, follow, settings)
        engine.use_mtp(MtpMode.OFF)
        plain_next = run(engine, Conversation(follow.messages, id=f"b-{name}"), settings)
        assert spec_next.ids == plain_next.ids
        assert spec_next.stats.reused_tokens > 0  # resumed from the snapshots the first turn kept


def test_continue_resumes_exactly_from_a_speculative_turn(text_engine) -> None:
    """A turn cut by the token limit keeps an end snapshot; Continue resumes from it with no prefill
    and writes what one longer plain turn writes."""
    engine, trained, random = text_engine
    short = GenerationSettings(temperature=0.0, presence_penalty=0.0, max_tokens=9, logprobs=1)
    for head, name in ((trained, "t"), (random, "r")):
        engine.use_mtp(MtpMode.OFF)
        whole = run(
            engine,
            ask("Hello there"),
            GenerationSettings(temperature=0.0, presence_penalty=0.0, max_tokens=20, logprobs=1),
        )
        engine.use_mtp(MtpMode.ON, head)
        cut = run(engine, ask("Hello there", id=f"cut-{name}"), short)
        assert cut.finished.reason is FinishReason.LENGTH and cut.ids == whole.ids[:9]
        more = run(
            engine,
            Conversation(
                (Message(Role.USER, "Hello there"), cut.reply()),
                id=f"cut-{name}",
                continue_last=True,
            ),
            short,
        )
        engine.use_mtp(MtpMode.OFF)
        assert more.stats.prefilled_tokens == 0
        assert cut.ids + more.ids == whole.ids[:18]


def test_vision_with_an_image(vision_engine, tmp_path: Path) -> None:
    engine, random, trained = vision_engine
    image = ImageAttachment(write_image(tmp_path / "cat.png"))
    for head in (random, trained):
        plain, spec = both(engine, head, ask("What is in this image?", image), GREEDY)
        assert spec.ids == plain.ids and spec.stats.drafted_tokens > 0


def test_vision_checkpoint_with_kept_drafts(vision_engine) -> None:
    engine, _, trained = vision_engine
    plain, spec = both(engine, trained, ask(TRAINED_ON[0]), GREEDY)
    assert spec.ids == plain.ids
    assert spec.stats.accepted_tokens > 0.6 * spec.stats.drafted_tokens


@pytest.mark.parametrize("case", ["budget", "no thinking"])
def test_vision_checkpoint_thinking_budget_and_off(vision_engine, case: str) -> None:
    """The budget closes thinking inside a round: the vision cache keeps only the round's written
    tokens (re-run through mlx-vlm's verifier) and decoding goes on as plain decoding does."""
    engine, random, trained = vision_engine
    for head in (trained, random):
        plain, spec = both(engine, head, ask(TRAINED_ON[0]), CASES[case])
        assert spec.ids == plain.ids and spec.stats.drafted_tokens > 0


def test_cancel_stops_within_a_round(text_engine) -> None:
    engine, trained, _ = text_engine
    engine.use_mtp(MtpMode.ON, trained)
    cancel = CancelToken()
    seen = 0
    try:
        for event in engine.generate(
            ask("Hello there"),
            GenerationSettings(temperature=0.0, presence_penalty=0.0, max_tokens=200, logprobs=1),
            cancel,
        ):
            if isinstance(event, TokenLogprob):
                seen += 1
                if seen == 3:
                    cancel.cancel()
            if isinstance(event, Stats):
                stats = event
    finally:
        engine.use_mtp(MtpMode.OFF)
    assert 3 <= stats.generated_tokens <= 3 + 4  # the round it was in: at most k = 4 more


def test_sampling_runs_and_keeps_drafts(text_engine) -> None:
    engine, trained, _ = text_engine
    engine.use_mtp(MtpMode.ON, trained)
    try:
        turn = run(
            engine,
            ask("Hello there"),
            GenerationSettings(temperature=0.7, seed=3, max_tokens=30, logprobs=1),
        )
    finally:
        engine.use_mtp(MtpMode.OFF)
    assert len(turn.ids) == 30 and turn.stats.drafted_tokens > 0


def test_auto_turns_itself_off_with_a_random_head(text_engine) -> None:
    engine, _, random = text_engine
    engine.use_mtp(MtpMode.AUTO, random)
    try:
        turn = run(
            engine,
            ask("Write a poem"),
            GenerationSettings(temperature=0.0, presence_penalty=0.0, max_tokens=60, logprobs=1),
        )
    finally:
        engine.use_mtp(MtpMode.OFF)
    # A random head is refused: after its first rounds auto decodes plainly (and probes later).
    assert 0 < turn.stats.drafted_tokens < 30


def test_auto_judges_drafting_from_measured_round_times(text_engine) -> None:
    """auto's judgement, from round and plain-step times given here (pure logic): a first round whose
    drafts are all refused stops drafting at once; a few refused rounds among rounds that pay do not;
    a window of rounds slower than plain decoding has plain decoding timed again and is judged
    against that; each failed probe doubles the pause."""
    import mlx.core as mx

    from engine_mlx.speculative import PAUSE_TOKENS, PLAIN_WARMUP, STEADY_STEPS, Pace, Speculator

    engine, _, _ = text_engine
    pace = Pace()
    spec = Speculator(engine._loaded.model, False, None, MtpMode.AUTO, 0, [], pace)
    spec.hidden = mx.zeros((1, 1, 1))  # as after a step: a round may follow
    clock = 100.0

    def plain(seconds: float, steps: int = 1) -> None:
        nonlocal clock
        for _ in range(steps):
            spec._time_step(clock, 1)
            clock += seconds

    def round_(written: int, seconds: float) -> None:
        nonlocal clock
        spec._open_round = (clock, written)
        spec._plain_at, spec._steady = None, 0
        clock += seconds
        spec._close_round(clock)

    def drafts() -> bool:
        return spec.wants_round(0, 100, True)

    spec._time_step(clock, 40)  # the prompt's tail, then plain steps: the first are not timed
    clock += 0.5
    plain(0.010, STEADY_STEPS + PLAIN_WARMUP - 1)
    assert not drafts() and len(pace.plain) == PLAIN_WARMUP - 1
    plain(0.010)
    assert drafts() and pace.plain_s == pytest.approx(0.010)

    round_(1, 0.015)  # a random head's first round: refused, slower than a plain step
    assert (pace.pause_left, pace.pause) == (PAUSE_TOKENS, 2 * PAUSE_TOKENS) and not drafts()
    pace.pause_left = 0
    round_(2, 0.015)  # a probe that writes 2 tokens is judged with the next rounds
    assert pace.pause_left == 0 and len(pace.recent) == 1
    for _ in range(3):
        round_(4, 0.020)  # 2x plain decoding
    round_(1, 0.020)
    round_(1, 0.020)  # refused rounds among good ones: 16 tokens in 0.115 s, still 1.4x
    assert pace.pause_left == 0 and pace.pause == PAUSE_TOKENS and drafts()

    # The machine slows down: rounds take twice as long, and look slower than the old plain pace;
    # timed again, plain decoding is slower too, and the rounds still pay: drafting goes on.
    while not pace.doubted:
        round_(4, 0.040)
    assert not drafts()
    plain(0.030, STEADY_STEPS + PLAIN_WARMUP)
    assert drafts() and not pace.doubted and pace.pause_left == 0
    # Then the rounds really stop paying: timed again, plain decoding is faster: a pause.
    while not pace.doubted:
        round_(1, 0.040)
    plain(0.030, STEADY_STEPS + PLAIN_WARMUP)
    assert not drafts() and pace.pause_left == PAUSE_TOKENS and not pace.recent
    pace.pause_left = 0
    round_(1, 0.045)  # the probe fails: a longer pause
    assert pace.pause_left == 2 * PAUSE_TOKENS


def test_a_drafter_for_another_model_is_refused(text_engine, tmp_path: Path) -> None:
    engine, _, random = text_engine
    other = shutil.copytree(random, tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    config["text_config"]["hidden_size"] = 256
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="is an MTP drafter for another model"):
        engine.use_mtp(MtpMode.ON, other)
    with pytest.raises(CheckpointError, match="has no config.json"):
        engine.use_mtp(MtpMode.ON, tmp_path)


def test_mlx_vlm_contract() -> None:
    """The mlx-vlm 0.7.10 members engine_mlx.speculative and engine_mlx.tiny_mtp use."""
    from mlx_vlm.speculative.drafters import load_drafter
    from mlx_vlm.speculative.drafters.qwen3_5_mtp import Qwen3_5MTPDraftModel
    from mlx_vlm.speculative.drafters.qwen3_5_mtp.config import Qwen3_5MTPConfig

    assert list(inspect.signature(load_drafter).parameters)[:2] == ["path_or_repo", "kind"]
    params = {
        name: list(inspect.signature(getattr(Qwen3_5MTPDraftModel, name)).parameters)
        for name in (
            "bind",
            "reset",
            "set_shared_kv",
            "draft_block",
            "accept_verified_tokens",
            "_forward_hidden",
        )
    }
    assert params["bind"] == ["self", "target_model"]
    assert params["reset"][:2] == ["self", "target_model"]
    assert params["set_shared_kv"] == [
        "self",
        "shared_kv_states",
        "kv_offset",
        "position",
        "kv_valid_len",
        "left_padding",
    ]
    assert params["draft_block"] == [
        "self",
        "last_bonus",
        "hidden",
        "cache",
        "block_size",
        "sampler",
        "token_dtype",
        "greedy",
    ]
    assert params["accept_verified_tokens"] == [
        "self",
        "verify_hidden",
        "draft_tokens",
        "accepted",
        "new_tokens",
        "sampler",
        "token_dtype",
        "greedy",
    ]
    assert params["_forward_hidden"] == ["self", "token_embed", "hidden", "cache", "position_ids"]
    assert "from_dict" in vars(Qwen3_5MTPConfig)
    source = inspect.getsource(Qwen3_5MTPDraftModel.bind)
    assert "self._input_embed" in source and "self._lm_head_fn" in source


def test_api_usage_counts_the_drafts(text_engine) -> None:
    openai = pytest.importorskip("openai")
    from engine_mlx.jobs import EngineThread
    from engine_mlx.server.config import ServerConfig
    from engine_mlx.server.runner import ApiServer

    engine, trained, _ = text_engine
    engine.use_mtp(MtpMode.ON, trained)
    jobs = EngineThread()
    server = ApiServer(engine, jobs, ServerConfig(port=0))
    server.start()
    try:
        client = openai.OpenAI(
            base_url=server.base_url, api_key="unused", max_retries=0, timeout=120
        )
        reply = client.chat.completions.create(
            model=engine.model_info.name,
            messages=[{"role": "user", "content": "Hello there"}],
            max_tokens=30,
            temperature=0.0,
            presence_penalty=0.0,
        )
        engine.use_mtp(MtpMode.ON, trained)  # afresh: auto's measurements (k) start over
        direct = run(engine, ask("Hello there"), replace(GREEDY, max_tokens=30))
    finally:
        server.stop()
        jobs.close()
        engine.use_mtp(MtpMode.OFF)
    details = reply.usage.completion_tokens_details
    assert details.accepted_prediction_tokens == direct.stats.accepted_tokens > 0
    assert (
        details.rejected_prediction_tokens
        == direct.stats.drafted_tokens - direct.stats.accepted_tokens
    )


def test_stop_strings_end_the_answer_as_without_mtp(
    text_engine, tiny_text_model_dir: Path, tmp_path: Path
) -> None:
    """A stop string met inside a speculative round cuts the answer where plain decoding's cut falls,
    with the same finish reason (the rest of the round is never sent), streamed or not."""
    openai = pytest.importorskip("openai")
    from engine_mlx.jobs import EngineThread
    from engine_mlx.prompt import render_text
    from engine_mlx.server.config import ServerConfig
    from engine_mlx.server.runner import ApiServer

    engine, _, _ = text_engine
    body = {"enable_thinking": False, "temperature": 0.0, "presence_penalty": 0.0}
    messages = [{"role": "user", "content": TRAINED_ON[0]}]
    # A head that knows the answer written without thinking (stop strings cut the answer).
    prompt = render_text(
        ask(TRAINED_ON[0]), engine._loaded.apply_template, thinking=False, text_only=True
    )
    trained = train_head(tiny_text_model_dir, [engine._loaded.encode(prompt)], out_dir=tmp_path)
    jobs = EngineThread()
    server = ApiServer(engine, jobs, ServerConfig(port=0))
    server.start()
    replies = {}
    try:
        client = openai.OpenAI(
            base_url=server.base_url, api_key="unused", max_retries=0, timeout=120
        )

        def ask_api(mode: MtpMode, stop: list[str] | None, stream: bool = False):
            engine.use_mtp(mode, None if mode is MtpMode.OFF else trained)
            call = client.chat.completions.create
            if stream:
                chunks = list(
                    call(
                        model=engine.model_info.name,
                        messages=messages,
                        max_tokens=40,
                        stop=stop,
                        stream=True,
                        extra_body=body,
                    )
                )
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                return text, next(c.choices[0].finish_reason for c in chunks[::-1] if c.choices)
            reply = call(
                model=engine.model_info.name,
                messages=messages,
                max_tokens=40,
                stop=stop,
                extra_body=body,
            )
            return reply.choices[0].message.content, reply.choices[0].finish_reason, reply.usage

        answer, _, _ = ask_api(MtpMode.OFF, None)
        stops = [answer[12:15], answer[-4:]]  # one inside the answer, one at its very end
        assert all(len(s) >= 3 for s in stops)
        for stop in stops:
            for mode in (MtpMode.OFF, MtpMode.ON):
                text, reason, usage = ask_api(mode, [stop])
                replies[mode, stop] = (text, reason)
                if mode is MtpMode.ON:
                    details = usage.completion_tokens_details
                    assert details.accepted_prediction_tokens > 0  # the rounds drafted and kept
                replies[mode, stop, "stream"] = ask_api(mode, [stop], stream=True)
    finally:
        server.stop()
        jobs.close()
        engine.use_mtp(MtpMode.OFF)
    for stop in stops:
        cut = (answer[: answer.index(stop)], "stop")
        for kind in ((), ("stream",)):
            assert replies[(MtpMode.OFF, stop, *kind)] == cut
            assert replies[(MtpMode.ON, stop, *kind)] == cut


def test_cli_chat_json_stats_and_flags(tiny_text_model_dir: Path, text_engine) -> None:
    _, trained, _ = text_engine
    cmd = [
        sys.executable,
        "-m",
        "engine_mlx",
        "chat",
        "--model",
        str(tiny_text_model_dir),
        "--json",
        "--temperature",
        "0",
        "--max-tokens",
        "20",
        "--seed",
        "1",
        "--mtp",
        "on",
        "--mtp-from",
        str(trained),
        "Hello there",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    stats = next(e for e in map(json.loads, out.stdout.splitlines()) if e["type"] == "stats")
    assert stats["drafted_tokens"] > 0 and 0 <= stats["accepted_tokens"] <= stats["drafted_tokens"]

    bad = subprocess.run(
        [*cmd[:-3], "--mtp-from", str(tiny_text_model_dir), "Hello there"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert bad.returncode != 0 and "is not a Qwen3.5 MTP drafter" in bad.stderr


def test_the_demo_model_ships_with_a_head_that_predicts(tmp_path: Path) -> None:
    """``tiny --mtp`` trains the head on the model's own replies; chat then keeps most drafts."""
    model = tmp_path / "demo"
    env = dict(os.environ)
    built = subprocess.run(
        [sys.executable, "-m", "engine_mlx", "tiny", str(model), "--text-only", "--mtp"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert built.returncode == 0, built.stderr
    assert (model / "mtp" / "config.json").is_file()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine_mlx",
            "chat",
            "--model",
            str(model),
            "--json",
            "--temperature",
            "0",
            "--presence-penalty",
            "0",
            "--max-tokens",
            "30",
            "--mtp",
            "on",
            "Hello there",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    stats = next(e for e in map(json.loads, out.stdout.splitlines()) if e["type"] == "stats")
    assert stats["accepted_tokens"] > 0.6 * stats["drafted_tokens"] > 0


def test_sampling_keeps_the_models_distribution(text_engine) -> None:
    """With sampling, the token a round writes after a kept draft is drawn from the model's own
    distribution: over many seeds, the second and third tokens' frequencies with MTP (drafts kept when
    the sample is the likeliest token) and without agree
    within a chi-square bound (the seeds are fixed, so the test is deterministic)."""
    engine, trained, _ = text_engine
    settings = GenerationSettings(
        temperature=1.0, top_k=3, top_p=1.0, presence_penalty=0.0, max_tokens=3, logprobs=1
    )
    samples = 150
    kept = 0  # drafts kept over the MTP samples
    counts: dict[str, list[dict[int, int]]] = {}
    for mode, head in (("plain", None), ("mtp", trained)):
        engine.use_mtp(MtpMode.OFF if head is None else MtpMode.ON, head)
        tallies: list[dict[int, int]] = [{}, {}]
        for seed in range(samples):
            turn = run(engine, ask("Hello there", id="chi"), replace(settings, seed=seed))
            kept += turn.stats.accepted_tokens
            for position, tally in zip((1, 2), tallies, strict=True):
                if len(turn.ids) <= position:  # the turn ended first
                    continue
                key = turn.ids[position]
                tally[key] = tally.get(key, 0) + 1
        counts[mode] = tallies
    engine.use_mtp(MtpMode.OFF)
    for plain, spec in zip(counts["plain"], counts["mtp"], strict=True):
        keys = [k for k in set(plain) | set(spec) if plain.get(k, 0) + spec.get(k, 0) >= 10]
        chi2 = sum(
            (plain.get(k, 0) - spec.get(k, 0)) ** 2 / (plain.get(k, 0) + spec.get(k, 0))
            for k in keys
        )
        # Two samples of equal size: sum (a-b)^2/(a+b) is chi-square with len(keys)-1 degrees of freedom;
        # its 99.9th percentile by Wilson-Hilferty.
        df = len(keys) - 1
        bound = df * (1 - 2 / (9 * df) + 3.09 * (2 / (9 * df)) ** 0.5) ** 3
        assert df >= 2 and chi2 < bound, (chi2, bound, df)


def test_serve_takes_the_mtp_flags(tiny_text_model_dir: Path) -> None:
    """serve loads the drafter it is given before it listens: a folder that is not one is refused."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine_mlx",
            "serve",
            "--model",
            str(tiny_text_model_dir),
            "--port",
            "0",
            "--mtp",
            "on",
            "--mtp-from",
            str(tiny_text_model_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert out.returncode != 0 and "is not a Qwen3.5 MTP drafter" in out.stderr
