"""The generation loop: chunked prefill with progress, cancel and snapshot points, then decode.

mlx-vlm's ``stream_generate`` reports no prefill progress and cannot be cancelled mid-prompt, so the
engine runs its own loop: the prompt goes through the model in chunks (progress and a cancel check
after each), then tokens are decoded one at a time with the next step queued before the current
token is read (as mlx-lm does), so the device never waits on Python.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from engine_mlx import cache_protocol
from engine_mlx.cancel import CancelToken
from engine_mlx.events import (
    AnswerDelta,
    Event,
    Finished,
    FinishReason,
    Progress,
    Stats,
    ThinkingDelta,
    TokenLogprob,
    TopLogprob,
)
from engine_mlx.plan import PrefillPlan
from engine_mlx.runtime import LoadedModel, PromptInputs
from engine_mlx.runtime_imports import ensure_runtime_imported
from engine_mlx.settings import GenerationSettings
from engine_mlx.snapshots import Snapshot, snapshot_cache
from engine_mlx.speculative import draft_picker, speculation_safe
from engine_mlx.thinking import Split, ThinkingSplitter

# A stream of its own (one per thread, as mlx-vlm's) lets queued decode steps run while Python
# prepares the next.
_GENERATION_STREAM = mx.new_thread_local_stream(mx.default_device())

# Tokens of a carried-on reply the text stream is primed with (enough to end any held-back character).
PRIME_TOKENS = 8
# What the engine writes to end a thinking block when the budget runs out.
FORCED_THINKING_CLOSE = "\n</think>\n\n"


# A logits processor, in mlx-lm's shape: (the tokens generated this turn so far, the next token's
# log-probabilities, shape (1, vocab)) -> the log-probabilities to sample from. A processor may
# change its input in place, as mlx-lm's do. Forced text, a grammar and the presence penalty are
# processors; they run in list order.
LogitsProcessor = Callable[[mx.array, mx.array], mx.array]


def presence_penalty(penalty: float, max_tokens: int) -> LogitsProcessor:
    """Qwen's presence penalty (as vLLM applies it): subtract ``penalty`` from every token already in
    this reply. mlx-lm's own processor does exactly that for the tokens it is given; it is given
    only the reply's tokens (not the prompt's) and a window as long as the reply can be."""
    ensure_runtime_imported()
    from mlx_lm.sample_utils import make_presence_penalty

    return make_presence_penalty(penalty, context_size=max(1, max_tokens))


def generate(
    loaded: LoadedModel,
    inputs: PromptInputs,
    settings: GenerationSettings,
    plan: PrefillPlan,
    *,
    cancel: CancelToken | None = None,
    on_snapshot: Callable[[Snapshot], None] | None = None,
    started_at: float | None = None,
    processors: Sequence[LogitsProcessor] = (),
    split_thinking: bool = True,
) -> Iterator[Event]:
    """Yield Progress*, then ThinkingDelta/AnswerDelta* (and TokenLogprob* when asked), then Stats
    and Finished. ``processors`` change each sampled token's log-probabilities, in order, after the
    presence penalty of ``settings``. Without ``split_thinking`` (a raw completion) all text is
    AnswerDelta, verbatim."""
    with mx.stream(_GENERATION_STREAM):
        yield from _generate(
            loaded,
            inputs,
            settings,
            plan,
            cancel,
            on_snapshot,
            started_at,
            processors,
            split_thinking,
        )


def _generate(
    loaded: LoadedModel,
    inputs: PromptInputs,
    settings: GenerationSettings,
    plan: PrefillPlan,
    cancel: CancelToken | None,
    on_snapshot: Callable[[Snapshot], None] | None,
    started_at: float | None,
    processors: Sequence[LogitsProcessor],
    split: bool,
) -> Iterator[Event]:
    started_at = time.perf_counter() if started_at is None else started_at
    cancel = cancel or CancelToken()
    mx.reset_peak_memory()
    prefill_started = time.perf_counter()
    done, stopped = yield from _prefill(loaded, inputs, settings, plan, cancel, on_snapshot)
    if stopped:
        yield from _finish_early(inputs, plan, started_at, prefill_started, done)
        return
    decoded = yield from _decode(loaded, inputs, settings, plan, cancel, processors, split)
    yield from _finish(inputs, plan, decoded, on_snapshot, started_at, prefill_started)


def _prefill(
    loaded: LoadedModel,
    inputs: PromptInputs,
    settings: GenerationSettings,
    plan: PrefillPlan,
    cancel: CancelToken,
    on_snapshot: Callable[[Snapshot], None] | None,
) -> Generator[Event, None, tuple[int, bool]]:
    """Run the prompt but its last token through the model in chunks (Progress after each, a
    snapshot at each of the plan's points); returns how many prompt tokens are in the cache, and
    whether a cancel stopped it after a chunk."""
    total = len(inputs)
    cache = plan.cache
    prompt_end = total - 1  # the last prompt token goes through the first decode step
    done = plan.start
    yield Progress(done=done, total=total)
    while done < prompt_end:
        end = min(done + settings.prefill_chunk, prompt_end)
        for point in plan.snapshot_at:
            if done < point < end:
                end = point  # end a chunk exactly at a snapshot point
        loaded.run_prompt(inputs, done, end, cache)
        mx.eval([c.state for c in cache])
        done = end
        if done in plan.snapshot_at and on_snapshot is not None:
            on_snapshot(snapshot_cache(cache, done))
        mx.clear_cache()  # hand the chunk's freed buffers back, as mlx-lm's generate_step does
        yield Progress(done=done, total=total)
        if cancel.cancelled:
            return done, True
    return done, False


@dataclass(frozen=True)
class Decoded:
    """How a decode ended, for the turn's end snapshot and stats."""

    reason: FinishReason
    generated_ids: tuple[int, ...]  # every token written, forced ones included
    thinking_tokens: int
    answer_tokens: int
    first_token_at: float | None
    index: int  # sequence positions now in the cache
    last_logits: Any  # the logits for the token after ``index``
    closing: bool  # stopped halfway through a close the engine was writing
    end_token: int | None = (
        None  # the end-of-turn token that stopped it (fed to the cache, not written)
    )
    drafted: int = 0  # tokens the MTP head drafted
    accepted: int = 0  # of them, those the model kept


def _decode(
    loaded: LoadedModel,
    inputs: PromptInputs,
    settings: GenerationSettings,
    plan: PrefillPlan,
    cancel: CancelToken,
    extra: Sequence[LogitsProcessor],
    split: bool,
) -> Generator[Event, None, Decoded]:
    """Sample, feed and stream tokens until the end of the turn, the token limit or a cancel."""
    total = len(inputs)
    cache = plan.cache
    prompt_end = total - 1
    sampling = settings.sampling()
    ensure_runtime_imported()
    from mlx_lm.sample_utils import make_sampler

    sampler = make_sampler(temp=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
    if settings.seed is not None:
        mx.random.seed(settings.seed)
    processors: list[LogitsProcessor] = []
    if sampling.presence_penalty:
        processors.append(presence_penalty(sampling.presence_penalty, settings.max_tokens))
    processors += extra
    reply = mx.zeros((0,), dtype=mx.int32)  # this reply's tokens so far, for the processors
    top_n = settings.logprobs

    def sample(logits, tokens=None):
        """The next token (lazy) and, when log-probabilities are asked for, its measures (lazy);
        ``tokens``: the reply before it (default: the reply so far)."""
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        scored = logprobs
        if processors:
            scored = mx.stop_gradient(logprobs)  # a processor may write into it; keep the model's
            for processor in processors:
                scored = processor(reply if tokens is None else tokens, scored)
        token = sampler(scored)
        return token, (None if top_n is None else measure(token, logprobs))

    def sample_rows(rows):
        """The next token after each row of logits (n, V), each as ``sample`` picks it."""
        return sampler(rows - mx.logsumexp(rows, axis=-1, keepdims=True))

    def measure(token, logprobs):
        """(the token's log-probability, the top ids, their log-probabilities, all of them)."""
        chosen = mx.take_along_axis(logprobs, token.reshape(1, 1), axis=-1).reshape(-1)
        # indices, even when none are asked for
        top_ids = (
            mx.argpartition(-logprobs, kth=top_n - 1, axis=-1)[0, :top_n]
            if top_n
            else mx.zeros((0,), dtype=mx.uint32)
        )
        return chosen, top_ids, logprobs[0, top_ids], logprobs

    def extend(token_array) -> None:
        nonlocal reply
        if processors:
            reply = mx.concatenate([reply, token_array.reshape(-1).astype(mx.int32)])

    index = prompt_end  # sequence position of the next token fed to the model
    last_logits = plan.logits
    spec = loaded.speculation.start(inputs, cache) if loaded.speculation is not None else None

    def feed(token_array):
        nonlocal index, last_logits
        last_logits = (
            spec.step(token_array, index)
            if spec
            else loaded.step(token_array, index, inputs, cache)
        )
        index += 1
        return last_logits

    text = loaded.text_stream()
    if plan.continues_reply:
        text.prime(inputs.ids[-PRIME_TOKENS:])
    splitter = ThinkingSplitter(starts_in_thinking=settings.thinking) if split else _Verbatim()
    close_ids = loaded.encode(FORCED_THINKING_CLOSE)
    budget = settings.thinking_budget if settings.thinking else None
    forced: list[
        int
    ] = []  # tokens the engine writes itself (closing an over-budget thinking block)
    if plan.logits is not None and plan.start == total:
        first_logits, index = plan.logits, total
    else:
        first_logits = feed(mx.array(inputs.ids[prompt_end:]))
    # The log-probabilities for the next position, kept for a forced token's measure.
    next_logprobs = None
    if budget is not None and budget <= 0:
        forced, budget = list(close_ids), None
        y = measured = None
        if top_n is not None:
            next_logprobs = first_logits - mx.logsumexp(first_logits, axis=-1, keepdims=True)
    else:
        y, measured = sample(first_logits)
        mx.async_eval(y, *(measured or ()))

    first_token_at: float | None = None
    generated = thinking_tokens = answer_tokens = 0
    generated_ids: list[int] = []
    reason, end_token = FinishReason.LENGTH, None
    queue: list[tuple[int, Any]] = []  # a speculative round's tokens not yet written
    rnd = None
    written = 0
    while generated < settings.max_tokens:
        if cancel.cancelled:
            reason = FinishReason.CANCELLED
            break
        if (
            not forced
            and spec is not None
            and (
                queue
                or spec.wants_round(
                    generated, settings.max_tokens - generated, speculation_safe(extra)
                )
            )
        ):
            if not queue:
                rnd = spec.run_round(
                    y,
                    measured,
                    index,
                    reply,
                    settings.max_tokens - generated,
                    lambda tokens, logits: sample(logits, tokens),
                    draft_picker(processors) if processors else None,
                    sample_rows if not processors and top_n is None else None,
                )
                queue, written = list(zip(rnd.tokens, rnd.measures, strict=True)), 0
                index, last_logits = rnd.index + len(queue), rnd.logits[:, len(queue) - 1, :]
                y, measured = rnd.next_token, rnd.next_measure
            token, token_measure = queue.pop(0)
            written += 1
            extend(mx.array([token]))
            if first_token_at is None:
                first_token_at = time.perf_counter()
            if token in loaded.eos_ids:
                reason, end_token = FinishReason.STOP, token
                break
        elif forced:
            token = forced.pop(0)
            token_array = mx.array([token])
            if top_n is not None:
                if next_logprobs is None and measured is not None:
                    next_logprobs = measured[3]  # the dropped step's
                token_measure = measure(token_array, next_logprobs)
            extend(token_array)
            logits = feed(token_array)
            if top_n is not None:
                next_logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            if not forced:
                y, measured = sample(logits)
                mx.async_eval(y, *(measured or ()))
                next_logprobs = None
        else:
            # Queue the next step before reading this token, so the device never waits on Python.
            extend(y)
            next_y, next_measured = sample(feed(y))
            mx.async_eval(next_y, *(next_measured or ()))
            token = y.item()
            token_measure = measured
            y, measured = next_y, next_measured
            if first_token_at is None:
                first_token_at = time.perf_counter()
            if token in loaded.eos_ids:
                reason, end_token = FinishReason.STOP, token
                break
        if first_token_at is None:
            first_token_at = time.perf_counter()
        generated += 1
        generated_ids.append(token)
        in_thinking = splitter.in_thinking
        if in_thinking:
            thinking_tokens += 1
        else:
            answer_tokens += 1
        if top_n is not None:
            yield _token_logprob(loaded, token, token_measure, in_thinking)
        part = splitter.feed(text.add(token))
        if part.thinking:
            yield ThinkingDelta(part.thinking)
        if part.answer:
            yield AnswerDelta(part.answer)
        if budget is not None and splitter.in_thinking and thinking_tokens >= budget:
            # This token is already in the cache; the queued step after it is dropped and the
            # closing tag follows instead, so the model goes on to answer.
            forced, budget = list(close_ids), None
            next_logprobs = None  # the dropped step's, in ``measured``
            if queue:  # the round's later tokens are dropped too
                index, last_logits = spec.settle(rnd, written)
                queue = []
                next_logprobs = last_logits - mx.logsumexp(last_logits, axis=-1, keepdims=True)

    if queue:  # stopped inside a round: the cache keeps what was written
        index, last_logits = spec.settle(rnd, written)

    tail = splitter.feed(text.finalize())  # stop, length and cancel all end here
    rest = splitter.flush()
    thinking_text = tail.thinking + rest.thinking
    answer_text = tail.answer + rest.answer
    if thinking_text:
        yield ThinkingDelta(thinking_text)
    if answer_text:
        yield AnswerDelta(answer_text)
    counts = spec.counts if spec is not None else None
    return Decoded(
        reason,
        tuple(generated_ids),
        thinking_tokens,
        answer_tokens,
        first_token_at,
        index,
        last_logits,
        bool(forced),
        end_token,
        counts.drafted if counts else 0,
        counts.accepted if counts else 0,
    )


def _finish(
    inputs: PromptInputs,
    plan: PrefillPlan,
    decoded: Decoded,
    on_snapshot: Callable[[Snapshot], None] | None,
    started_at: float,
    prefill_started: float,
) -> Iterator[Event]:
    """The end snapshot of a turn cut short (so carrying it on needs no prefill) or of a finished reply
    the plan keeps (a tool step), Stats, Finished."""
    total = len(inputs)
    generated = len(decoded.generated_ids)
    cut_short = decoded.reason is not FinishReason.STOP and not decoded.closing
    if (
        plan.keep_end
        and cut_short
        and on_snapshot is not None
        and decoded.index == total + generated > total
    ):
        mx.eval(decoded.last_logits)  # computed, not a graph that holds on to the live cache
        on_snapshot(
            Snapshot(
                decoded.index,
                cache_protocol.copy_cache(plan.cache),
                decoded.generated_ids,
                decoded.last_logits,
            )
        )
    elif (
        plan.keep_reply
        and decoded.end_token is not None
        and on_snapshot is not None
        and decoded.index == total + generated + 1
    ):
        # the reply and its end-of-turn token, as the next prompt renders them
        mx.eval(decoded.last_logits)
        on_snapshot(
            Snapshot(
                decoded.index,
                cache_protocol.copy_cache(plan.cache),
                (*decoded.generated_ids, decoded.end_token),
                finished=True,
            )
        )

    finished_at = time.perf_counter()
    first = decoded.first_token_at or finished_at
    prefilled = max(0, total - plan.start)
    prefill_s = max(first - prefill_started, 1e-9)
    decode_s = finished_at - first
    yield Stats(
        prompt_tokens=total,
        reused_tokens=plan.start,
        prefilled_tokens=prefilled,
        generated_tokens=generated,
        thinking_tokens=decoded.thinking_tokens,
        answer_tokens=decoded.answer_tokens,
        prefill_tps=prefilled / prefill_s,
        decode_tps=(generated - 1) / decode_s if generated > 1 and decode_s > 0 else 0.0,
        ttft_s=first - started_at,
        total_s=finished_at - started_at,
        peak_memory_bytes=int(mx.get_peak_memory()),
        drafted_tokens=decoded.drafted,
        accepted_tokens=decoded.accepted,
    )
    yield Finished(decoded.reason)


class _Verbatim:
    """The thinking splitter's interface for raw text: all of it is answer, as written."""

    in_thinking = False

    def feed(self, chunk: str) -> Split:
        return Split(answer=chunk)

    def flush(self) -> Split:
        return Split()


def _finish_early(
    inputs: PromptInputs, plan: PrefillPlan, started_at: float, prefill_started: float, done: int
) -> Iterator[Event]:
    now = time.perf_counter()
    yield Stats(
        prompt_tokens=len(inputs),
        reused_tokens=plan.start,
        prefilled_tokens=done - plan.start,
        generated_tokens=0,
        thinking_tokens=0,
        answer_tokens=0,
        prefill_tps=(done - plan.start) / max(now - prefill_started, 1e-9),
        decode_tps=0.0,
        ttft_s=0.0,
        total_s=now - started_at,
        peak_memory_bytes=int(mx.get_peak_memory()),
    )
    yield Finished(FinishReason.CANCELLED)


def _token_logprob(loaded: LoadedModel, token: int, measured, thinking: bool) -> TokenLogprob:
    from engine_mlx.detokenize import token_bytes

    chosen, top_ids, top_values, _ = measured

    def entry(token_id: int) -> tuple[str, tuple[int, ...]]:
        raw = token_bytes(loaded.tokenizer, token_id)
        return raw.decode("utf-8", errors="replace"), tuple(raw)

    pairs = sorted(zip(top_ids.tolist(), top_values.tolist(), strict=True), key=lambda p: -p[1])
    top = tuple(TopLogprob(i, *entry(i), logprob=v) for i, v in pairs)
    text, raw = entry(token)
    return TokenLogprob(token, text, raw, float(chosen.item()), top, thinking)
