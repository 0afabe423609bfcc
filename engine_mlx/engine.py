"""The engine's public API: load a checkpoint, generate for a conversation, keep state between turns.

Blocking calls: the app runs them on a worker thread, the CLI on its main thread. One generation at
a time per Engine.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from engine_mlx import platform
from engine_mlx.cancel import CancelToken
from engine_mlx.checkpoint import ModelInfo, inspect_checkpoint, read_chat_template
from engine_mlx.continuation import CutTurn, CutTurns
from engine_mlx.conversation import ANONYMOUS, Conversation, Message, Role
from engine_mlx.errors import ContextOverflowError, ModelNotLoadedError, UnsupportedInputError
from engine_mlx.events import AnswerDelta, Event, Finished, FinishReason, ThinkingDelta
from engine_mlx.forcing import forced_tokens
from engine_mlx.memory import check_fit, estimate_fit
from engine_mlx.mtp_head import MtpHead, MtpMode, inspect_drafter
from engine_mlx.plan import PrefillPlan, TurnPlan
from engine_mlx.prompt import (
    DecodedMedia,
    MediaLimits,
    before_unfinished,
    continues_in_thinking,
    load_media,
    render_text,
    template_messages,
    template_tools,
    written_so_far,
)
from engine_mlx.prompt_size import min_prompt_tokens
from engine_mlx.settings import DEFAULT_CONTEXT_TOKENS, GenerationSettings
from engine_mlx.snapshots import Snapshot, SnapshotStore, common_prefix

if TYPE_CHECKING:
    from engine_mlx.runtime import LoadedModel

log = logging.getLogger(__name__)

_PROBE = "\x1f"  # an assistant reply no real conversation contains, to find the generation tail
_TURN_START = "<|im_start|>"  # Qwen's turn marker, a special token: no merge crosses it
_TURN_END = "<|im_end|>"  # and the token that ends a turn
_TOOL_CALL = "<tool_call>"  # an added token: the start of a call
_ANONYMOUS_PREFIX = "anonymous-"
# A raw completion's snapshots: at the last multiple of this many tokens, and this many tokens before
# the prompt's end.
_COMPLETION_SNAPSHOT_STEP = 256
_COMPLETION_TAIL = 8


class ModelLoader(Protocol):
    """Loads a checked checkpoint into memory, as ``LoadedModel.load`` does."""

    ranks: int  # how many processes share the model (the memory estimate divides by it)

    def __call__(
        self,
        info: ModelInfo,
        *,
        progress: Callable[[float], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> LoadedModel: ...


@dataclass(frozen=True)
class LoadProgress:
    stage: str
    fraction: float  # 0..1


class Engine:
    """Owns at most one loaded model and the per-conversation state snapshots."""

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        cache_budget_bytes: int | None = None,
        media_limits: MediaLimits = MediaLimits(),
        loader: ModelLoader | None = None,
    ):
        """``loader`` loads a checkpoint (default ``LoadedModel.load``): the distributed runtime gives
        one that loads this rank's shard."""
        from engine_mlx.snapshots import DEFAULT_BUDGET_BYTES

        self.snapshots = SnapshotStore(
            budget_bytes=cache_budget_bytes or DEFAULT_BUDGET_BYTES, disk_dir=state_dir
        )
        self.media_limits = media_limits
        self._loader = loader
        self.decoded_media = DecodedMedia()
        self._loaded = None  # runtime.LoadedModel
        self._fingerprint = ""
        self._previous_wired_limit: int | None = None  # to put back on unload (Metal only)
        self._cut_turns = CutTurns()
        self._llg_tokenizer = None  # llguidance's view of the loaded tokenizer, built on first use

    # ------------------------------------------------------------------ models

    @property
    def model_info(self) -> ModelInfo | None:
        return self._loaded.info if self._loaded else None

    def load(
        self,
        path: Path | str,
        *,
        context_tokens: int = DEFAULT_CONTEXT_TOKENS,
        force: bool = False,
        progress: Callable[[LoadProgress], None] | None = None,
        cancel: CancelToken | None = None,
        mtp: MtpMode = MtpMode.AUTO,
        mtp_from: Path | None = None,
    ) -> ModelInfo:
        """Check, fit-test and load a checkpoint; raises CheckpointError / MemoryFitError. With an
        MTP head (the model's own, or the drafter folder ``mtp_from``) it decodes speculatively as
        ``mtp`` says (:meth:`use_mtp`)."""
        report = progress or (lambda _p: None)
        report(LoadProgress("Checking the model folder", 0.0))
        info = inspect_checkpoint(Path(path))
        fit = estimate_fit(info, context_tokens, ranks=self._loader.ranks if self._loader else 1)
        check_fit(fit, force)
        self.unload()
        self._previous_wired_limit = platform.set_wired_limit(fit.budget_bytes)
        report(LoadProgress("Reading weights", 0.02))
        from engine_mlx.runtime import LoadedModel

        try:
            loaded = (self._loader or LoadedModel.load)(
                info,
                progress=lambda f: report(LoadProgress("Reading weights", 0.02 + 0.96 * f)),
                cancel=cancel,
            )
            self._loaded = loaded
            self.use_mtp(mtp, mtp_from)
        except BaseException:
            self._loaded = None
            self._restore_wired_limit()
            raise
        self._loaded = loaded
        self._fingerprint = _fingerprint(info)
        report(LoadProgress("Ready", 1.0))
        log.info("loaded %s (%s)", info.name, fit.summary())
        return info

    def use_mtp(self, mode: MtpMode, mtp_from: Path | None = None) -> MtpHead | None:
        """Decode the loaded model speculatively with its MTP head, or with the drafter folder
        ``mtp_from`` (refused with a CheckpointError when it is not one for this model); ``off``
        decodes plainly. Returns the head in use."""
        loaded = self._loaded
        if loaded is None:
            raise ModelNotLoadedError("No model is loaded; load a Qwen3.5 checkpoint first.")
        info = loaded.info
        if mtp_from is not None:
            head: MtpHead | None = inspect_drafter(Path(mtp_from), info.hidden_size or None)
        else:
            head = info.mtp
            if info.mtp_error:
                log.warning("MTP head not used: %s", info.mtp_error)
        loaded.use_head(head, mode)
        return head if loaded.speculation is not None else None

    def unload(self) -> None:
        """Free the model, its snapshots in memory and MLX's buffer cache; restore the wired limit."""
        if self._loaded is None:
            return
        self._loaded = None
        self.snapshots.clear()
        self._cut_turns.clear()
        self._llg_tokenizer = None
        self.decoded_media.clear()
        gc.collect()
        import mlx.core as mx

        mx.clear_cache()
        self._restore_wired_limit()

    def _restore_wired_limit(self) -> None:
        previous, self._previous_wired_limit = self._previous_wired_limit, None
        platform.restore_wired_limit(previous)

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        conversation: Conversation,
        settings: GenerationSettings = GenerationSettings(),
        cancel: CancelToken | None = None,
    ) -> Iterator[Event]:
        """Stream events for the next assistant turn of ``conversation``.

        Bad input (an unreadable attachment, an image for a text-only model, a prompt longer than the
        context) raises an EngineError before the first event; a failure inside MLX afterwards ends
        the stream with ``Finished(ERROR, message)``.
        """
        started = time.perf_counter()
        self.check_prompt_size(conversation, settings)
        yield from self._run_turn(self._plan_turn(conversation, settings), cancel, started)

    def _plan_turn(self, conversation: Conversation, settings: GenerationSettings) -> TurnPlan:
        """Decide the turn: its prompt and inputs, where it resumes from, where to take snapshots."""
        try:
            template_thinking, resumes_in_thinking = continues_in_thinking(
                conversation, settings.thinking
            )
        except ValueError as exc:
            raise UnsupportedInputError(f"Cannot continue: {exc}.") from None
        exact = (
            self._exact_continuation(conversation, template_thinking)
            if conversation.continue_last
            else None
        )
        if exact is not None:
            prompt, inputs, turn_start, earlier = exact
            if resumes_in_thinking and self._loaded.think_close_id in earlier.generated:
                resumes_in_thinking = (
                    False  # cut right after closing its thinking, before any answer text
                )
        else:
            prompt, inputs = self._prepare(conversation, template_thinking)
            turn_start, earlier = len(inputs), CutTurn((), (), "", "", template_thinking)
        settings = replace(
            self._fit(
                inputs, settings, "The conversation", "start a new chat or remove attachments"
            ),
            thinking=resumes_in_thinking,
        )
        key = conversation.id
        reuse_ids = inputs.reuse_ids() if key else inputs.ids
        source = key  # the conversation the turn resumes from
        if key == ANONYMOUS:
            source, key = self._anonymous_keys(reuse_ids)
        restored = self.snapshots.lookup(source, self._fingerprint, reuse_ids)
        start = restored.length if restored else 0
        snapshot_at: tuple[int, ...] = ()
        if key:
            points = self._snapshot_points(
                before_unfinished(conversation) if conversation.continue_last else conversation,
                template_thinking,
                inputs,
                prompt,
            )
            snapshot_at = tuple(p for p in points if p > start)
        return TurnPlan(
            prompt=prompt,
            inputs=inputs,
            settings=settings,
            turn_start=turn_start,
            reuse_ids=tuple(reuse_ids),
            key=key,
            restored=restored,
            snapshot_at=snapshot_at,
            earlier=earlier,
            template_thinking=template_thinking,
            continues_reply=conversation.continue_last,
            keep_reply=bool(conversation.tools),
        )

    def _run_turn(
        self, plan: TurnPlan, cancel: CancelToken | None, started: float
    ) -> Iterator[Event]:
        """Run a planned turn: stream its events, keep its snapshots (and a cut turn's text)."""
        from engine_mlx import generation

        loaded, key, reuse_ids = self._loaded, plan.key, list(plan.reuse_ids)
        streamed: dict[type, list[str]] = {ThinkingDelta: [], AnswerDelta: []}

        def keep(snapshot: Snapshot) -> None:
            if (
                not snapshot.generated or snapshot.finished
            ):  # a prompt point, or a finished reply's end
                self.snapshots.add(
                    key, self._fingerprint, [*reuse_ids, *snapshot.generated], snapshot
                )
                return
            # The end of a turn cut short: kept with the tokens it wrote, and remembered with its text.
            self.snapshots.add(key, self._fingerprint, [*reuse_ids, *snapshot.generated], snapshot)
            self._cut_turns.remember(
                key,
                CutTurn(
                    prompt_ids=tuple(reuse_ids[: plan.turn_start]),
                    generated=tuple(reuse_ids[plan.turn_start :]) + snapshot.generated,
                    thinking=plan.earlier.thinking + "".join(streamed[ThinkingDelta]),
                    answer=plan.earlier.answer + "".join(streamed[AnswerDelta]),
                    template_thinking=plan.template_thinking,
                ),
            )

        try:
            for event in generation.generate(
                loaded,
                plan.inputs,
                plan.settings,
                plan.prefill(loaded.make_cache),
                cancel=cancel,
                on_snapshot=keep,
                started_at=started,
                processors=self._processors(plan.settings),
            ):
                if type(event) in streamed:
                    streamed[type(event)].append(event.text)
                yield event
        except Exception as exc:  # noqa: BLE001 - a crash mid-answer ends the stream, not the app
            log.exception("generation failed")
            yield Finished(FinishReason.ERROR, f"Generation failed: {exc}")

    def count_tokens(
        self, conversation: Conversation, settings: GenerationSettings = GenerationSettings()
    ) -> int:
        """How many prompt tokens ``generate(conversation, settings)`` would start from, media included."""
        return len(self.prompt_ids(conversation, settings))

    def prompt_ids(
        self, conversation: Conversation, settings: GenerationSettings = GenerationSettings()
    ) -> list[int]:
        """The prompt token ids ``generate(conversation, settings)`` would start from (an image is its
        run of image tokens).

        Renders and tokenizes as ``generate`` does (decoded media are cached for the turn that follows),
        but runs nothing through the model. Raises the EngineError ``generate`` would raise for bad input.
        """
        try:
            template_thinking, _ = continues_in_thinking(conversation, settings.thinking)
        except ValueError as exc:
            raise UnsupportedInputError(f"Cannot continue: {exc}.") from None
        return list(self._prepare(conversation, template_thinking)[1].ids)

    def text_ids(self, prompt: str) -> list[int]:
        """The token ids of a raw prompt, as ``complete`` reads it (no chat template)."""
        from engine_mlx.prompt import LoadedMedia

        loaded = self._loaded
        if loaded is None:
            raise ModelNotLoadedError("No model is loaded; load a Qwen3.5 checkpoint first.")
        return list(loaded.prepare(prompt, LoadedMedia()).ids)

    def context_limit(self, settings: GenerationSettings) -> int:
        """Prompt + reply tokens a generation may use (0 = unknown): the model's context, or less
        if ``settings.context_limit`` asks."""
        loaded = self._loaded
        limits = [
            n for n in (loaded.info.context_length if loaded else 0, settings.context_limit) if n
        ]
        return min(limits, default=0)

    def check_prompt_size(self, conversation: Conversation, settings: GenerationSettings) -> None:
        """Refuse (ContextOverflowError) a conversation whose text alone cannot fit the context,
        without tokenizing it: cheap enough for any thread, before the request is queued."""
        loaded, limit = self._loaded, self.context_limit(settings)
        if not limit or loaded is None:
            return
        floor = min_prompt_tokens(conversation, loaded.max_token_bytes)
        if floor + 1 > limit:
            raise ContextOverflowError(floor, limit, at_least=True)

    def complete(
        self,
        prompt: str,
        settings: GenerationSettings = GenerationSettings(thinking=False),
        cancel: CancelToken | None = None,
    ) -> Iterator[Event]:
        """Stream the continuation of a raw ``prompt`` (no chat template), for editors' autocomplete
        (``/v1/completions``): AnswerDelta text exactly as the model writes it, no thinking split, a
        leading space kept. Like an API chat it resumes from any recent anonymous snapshot the prompt
        extends, and keeps snapshots a little before its end, where the next keystroke's prompt
        still agrees (the last tokens may merge with what is typed next)."""
        from engine_mlx import generation
        from engine_mlx.prompt import LoadedMedia

        started = time.perf_counter()
        loaded = self._loaded
        if loaded is None:
            raise ModelNotLoadedError("No model is loaded; load a Qwen3.5 checkpoint first.")
        inputs = loaded.prepare(prompt, LoadedMedia())
        if not inputs.ids:
            raise UnsupportedInputError("The prompt is empty; send some text to complete.")
        settings = replace(
            self._fit(inputs, settings, "The prompt", "send a shorter prompt"),
            thinking=False,
            thinking_budget=None,
        )
        source, key = self._anonymous_keys(inputs.ids)
        restored = self.snapshots.lookup(source, self._fingerprint, inputs.ids)
        start = restored.length if restored else 0
        n = len(inputs)
        points = {
            (n - 1) // _COMPLETION_SNAPSHOT_STEP * _COMPLETION_SNAPSHOT_STEP,
            n - _COMPLETION_TAIL,
        }
        plan = PrefillPlan(
            cache=restored.cache if restored else loaded.make_cache(),
            start=start,
            snapshot_at=tuple(sorted(p for p in points if start < p < n)),
            logits=restored.logits if restored else None,
            keep_end=True,
            continues_reply=True,
        )

        def keep(snapshot: Snapshot) -> None:
            self.snapshots.add(key, self._fingerprint, [*inputs.ids, *snapshot.generated], snapshot)

        try:
            yield from generation.generate(
                loaded,
                inputs,
                settings,
                plan,
                cancel=cancel,
                on_snapshot=keep,
                started_at=started,
                processors=self._processors(settings),
                split_thinking=False,
            )
        except Exception as exc:  # noqa: BLE001 - a crash mid-answer ends the stream, not the app
            log.exception("completion failed")
            yield Finished(FinishReason.ERROR, f"Generation failed: {exc}")

    def _fit(
        self, inputs, settings: GenerationSettings, what: str, remedy: str
    ) -> GenerationSettings:
        """Refuse a prompt the context cannot hold; stop the answer at the context's end."""
        limit = self.context_limit(settings)
        if limit and len(inputs) + 1 > limit:
            raise ContextOverflowError(len(inputs), limit, what=what, remedy=remedy)
        if limit and len(inputs) + settings.max_tokens > limit:
            settings = replace(settings, max_tokens=limit - len(inputs))
        return settings

    def _processors(self, settings: GenerationSettings) -> list:
        """The logits processors ``settings`` ask for beyond sampling: forced text, grammars (JSON, the
        opening of a call)."""
        loaded = self._loaded
        processors = []
        end = loaded.encode(_TURN_END)[0]
        if settings.forced is not None:
            processors.append(
                forced_tokens(
                    settings.forced, loaded.encode, end, loaded.think_close_id, settings.thinking
                )
            )
        grammars = []
        if settings.response_format is not None:
            from engine_mlx.grammar import json_lark

            grammars.append((json_lark(settings.response_format), False))
        if settings.tool_call is not None:
            grammars.append((settings.tool_call.lark(loaded.encode(_TOOL_CALL)[0]), True))
        for lark, then_free in grammars:
            from engine_mlx.grammar import GrammarProcessor, llg_tokenizer

            if self._llg_tokenizer is None:
                self._llg_tokenizer = llg_tokenizer(loaded.tokenizer, end)
            trigger = loaded.think_close_id if settings.thinking else None
            processors.append(
                GrammarProcessor(lark, self._llg_tokenizer, trigger, then_free=then_free)
            )
        return processors

    def _exact_continuation(self, conversation: Conversation, template_thinking: bool):
        """For a turn the engine cut short itself and that reads exactly as streamed: the prompt, the
        inputs made of that turn's prompt and its very tokens, where the turn starts in them, and the
        remembered turn; else None (the turn's text is then re-encoded)."""
        unfinished = conversation.unfinished
        candidates = self._cut_turns.matching_text(
            unfinished.thinking, unfinished.text, template_thinking
        )
        if not candidates:
            return None
        base_prompt, base = self._prepare(before_unfinished(conversation), template_thinking)
        base_ids = tuple(base.reuse_ids())
        for turn in candidates:
            if turn.prompt_ids == base_ids and not set(turn.generated) & base.media_token_ids():
                prompt = base_prompt + written_so_far(unfinished, template_thinking)
                return prompt, base.extended(list(turn.generated)), len(base), turn
        return None

    def _anonymous_keys(self, reuse_ids: list[int]) -> tuple[str, str]:
        """For an ANONYMOUS prompt: the recent anonymous conversation to resume from (any of its
        snapshots: an edited or repeated last message resumes from the one before it) and the key
        to keep this turn's snapshots under: the same conversation when the prompt goes on from its
        newest snapshot, else a new one, so a branch (or another client sharing a system prompt)
        never drops the line it branched from. How many are kept is the snapshot budget's business."""
        anonymous = [k for k in self.snapshots.keys() if k.startswith(_ANONYMOUS_PREFIX)]
        match = self.snapshots.best_match(anonymous, self._fingerprint, reuse_ids)
        new = f"{_ANONYMOUS_PREFIX}{uuid.uuid4().hex}"
        if match is None:
            return "", new
        return match.key, match.key if match.extends_newest else new

    def persist(self, conversation_id: str) -> Path | None:
        """Save the conversation's newest state snapshot to disk (call when it goes idle)."""
        if self._loaded is None or not conversation_id:
            return None
        return self.snapshots.save(conversation_id)

    def forget(self, conversation_id: str) -> None:
        """Drop a deleted conversation's saved state, in memory and on disk."""
        self.snapshots.forget(conversation_id)
        self._cut_turns.forget(conversation_id)

    def _prepare(self, conversation: Conversation, thinking: bool):
        loaded = self._loaded
        if loaded is None:
            raise ModelNotLoadedError("No model is loaded; load a Qwen3.5 checkpoint first.")
        loaded.check_usable()
        prompt = render_text(
            conversation, loaded.apply_template, thinking=thinking, text_only=not loaded.is_vision
        )
        return prompt, loaded.prepare(
            prompt, load_media(conversation.attachments, self.media_limits, self.decoded_media)
        )

    def _snapshot_points(
        self, conversation, thinking: bool, inputs, prompt: str
    ) -> tuple[int, ...]:
        """Where to take this turn's snapshots: the end of the conversation's last message (the next
        turn, or a repeated last message, resumes there) and its start (an edited last message
        resumes there), each no later than the number of prompt tokens the next turn will share.

        The conversation is rendered as the next turns will see it (placeholder replies and user
        messages, one and two turns on): where that rendering stops matching this prompt is where the
        template's generation prompt starts (``<think>\\n``, or an empty think block with thinking
        off), or where the template rewrites an earlier turn (dropping its reasoning). The seam is
        found by comparing token ids, not text; the earlier of the two wins, and the snapshot never
        falls inside a run of image or video tokens. The next turn checks the snapshot's token ids
        against its own prompt, so a wrong guess costs only reuse.
        """
        loaded = self._loaded
        text_only = not loaded.is_vision
        probes = (
            # the next turn: a reply, then a user message
            (Message(Role.ASSISTANT, _PROBE, thinking=_PROBE), Message(Role.USER, _PROBE)),
            # two turns on, for templates that rewrite an assistant turn only later; its reply
            # starts with a letter, in case the tokenizer merges across the seam
            (
                Message(Role.ASSISTANT, "a" + _PROBE),
                Message(Role.USER, _PROBE),
                Message(Role.ASSISTANT, _PROBE, thinking=_PROBE),
                Message(Role.USER, _PROBE),
            ),
        )
        marker = loaded.encode(_TURN_START)
        boundaries = [i for i, t in enumerate(inputs.ids) if len(marker) == 1 and t == marker[0]]
        seams = []
        for extra in probes:
            probe_convo = replace(conversation, messages=conversation.messages + extra)
            try:
                probe = loaded.apply_template(
                    template_messages(probe_convo, text_only=text_only),
                    tokenize=False,
                    add_generation_prompt=True,
                    enable_thinking=thinking,
                    tools=template_tools(probe_convo),
                )
            except Exception:  # noqa: BLE001 - a template that can't render the probe just loses reuse
                return ()
            shared = common_prefix(prompt, probe)
            # Compare token ids from the last turn boundary before the seam (a special token, which
            # no merge crosses; the processor expands media placeholders, so count from there).
            cut = prompt.rfind(_TURN_START, 0, shared)
            k = prompt.count(_TURN_START, 0, cut) if cut > 0 else len(boundaries)
            base = boundaries[k] if k < len(boundaries) else 0
            if base == 0:
                cut = 0
            tail = loaded.encode(prompt[cut:])
            same = common_prefix(tail, loaded.encode(probe[cut:]))
            if inputs.ids[base : base + same] != tail[:same]:
                same = 0  # media expanded between the boundary and the seam: resume at the boundary
            seams.append(base + same)
        seam = min(seams)
        # The generation prompt (or the carried-on reply's turn) starts at the last turn marker, the
        # last message at the one before. The end snapshot stays at the marker, not at the seam past
        # it: a few tokens of role header are prefilled again (2 with the real vocabulary), but it
        # also serves a next prompt that leaves this reply out (the app drops an empty answer).
        wanted = boundaries[-2:] if boundaries else [seam]
        points = set()
        for point in wanted:
            # the last prompt token goes through the first decode step
            point = min(point, seam, len(inputs) - 1)
            for lo, hi in inputs.media_token_ranges():
                if lo < point < hi:
                    point = lo
            if point > 0:
                points.add(point)
        return tuple(sorted(points))


def _fingerprint(info: ModelInfo) -> str:
    """Identifies model + template: a saved state is reused only with the same ones."""
    h = hashlib.sha256()
    h.update(str(Path(info.path).resolve()).encode())
    for name in ("config.json", "model.safetensors.index.json"):
        p = Path(info.path) / name
        if p.exists():
            h.update(p.read_bytes())
    h.update((read_chat_template(Path(info.path)) or "").encode())
    return h.hexdigest()[:24]
