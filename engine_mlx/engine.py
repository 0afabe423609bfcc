"""The engine's public API: load a checkpoint, generate for a conversation, keep state between turns.

Blocking calls: the app runs them on a worker thread, the CLI on its main thread. One generation at
a time per Engine.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from engine_mlx import platform
from engine_mlx.cache import SnapshotStore
from engine_mlx.cancel import CancelToken
from engine_mlx.checkpoint import ModelInfo, inspect_checkpoint, read_chat_template
from engine_mlx.conversation import Conversation, Message, Role
from engine_mlx.errors import EngineError, ModelNotLoadedError
from engine_mlx.events import Event, Finished, FinishReason
from engine_mlx.memory import check_fit, estimate_fit
from engine_mlx.prompt import MediaLimits, load_media, render_text
from engine_mlx.settings import GenerationSettings

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_TOKENS = 32768
_PROBE = "\x1f"  # an assistant reply no real conversation contains, to find the generation tail


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
    ):
        from engine_mlx.cache import DEFAULT_BUDGET_BYTES

        self.snapshots = SnapshotStore(
            budget_bytes=cache_budget_bytes or DEFAULT_BUDGET_BYTES, disk_dir=state_dir
        )
        self.media_limits = media_limits
        self._loaded = None  # runtime.LoadedModel
        self._fingerprint = ""

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
    ) -> ModelInfo:
        """Check, fit-test and load a checkpoint; raises CheckpointError / MemoryFitError."""
        report = progress or (lambda _p: None)
        report(LoadProgress("Checking the model folder", 0.0))
        info = inspect_checkpoint(Path(path))
        fit = estimate_fit(info, context_tokens)
        check_fit(fit, force)
        self.unload()
        if platform.metal_available():
            platform.set_wired_limit(fit.budget_bytes)
        report(LoadProgress("Reading weights", 0.02))
        from engine_mlx.runtime import LoadedModel

        loaded = LoadedModel.load(info, progress=lambda f: report(LoadProgress("Reading weights", 0.02 + 0.96 * f)), cancel=cancel)
        self._loaded = loaded
        self._fingerprint = _fingerprint(info)
        report(LoadProgress("Ready", 1.0))
        log.info("loaded %s (%s)", info.name, fit.summary())
        return info

    def unload(self) -> None:
        if self._loaded is None:
            return
        self._loaded = None
        self.snapshots.clear()
        gc.collect()
        import mlx.core as mx

        mx.clear_cache()

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
        from engine_mlx import generation

        loaded = self._loaded
        if loaded is None:
            raise ModelNotLoadedError("No model is loaded; load a Qwen3.5 checkpoint first.")
        started = time.perf_counter()
        text_only = not loaded.is_vision
        prompt = render_text(conversation, loaded.apply_template, thinking=settings.thinking, text_only=text_only)
        inputs = loaded.prepare(prompt, load_media(conversation.attachments, self.media_limits))
        limit = loaded.info.context_length
        if limit and len(inputs) + 1 > limit:
            raise EngineError(
                f"The conversation is {len(inputs):,} tokens, more than this model's context of "
                f"{limit:,}; start a new chat or remove attachments."
            )

        key = conversation.id
        restored = self.snapshots.lookup(key, self._fingerprint, inputs.ids)
        start = restored.length if restored else 0
        cache = restored.cache if restored else loaded.make_cache()
        snapshot_at = None
        if key:
            point = self._snapshot_point(conversation, settings, inputs, prompt)
            if point is not None and point > start:
                snapshot_at = point
        plan = generation.PrefillPlan(cache=cache, start=start, snapshot_at=snapshot_at)

        def keep(snapshot: generation.Snapshot) -> None:
            self.snapshots.add(key, self._fingerprint, inputs.ids, snapshot)

        try:
            yield from generation.generate(
                loaded, inputs, settings, plan, cancel=cancel, on_snapshot=keep, started_at=started
            )
        except Exception as exc:  # noqa: BLE001 - a crash mid-answer ends the stream, not the app
            log.exception("generation failed")
            yield Finished(FinishReason.ERROR, f"Generation failed: {exc}")

    def persist(self, conversation_id: str) -> Path | None:
        """Save the conversation's newest state snapshot to disk (call when it goes idle)."""
        if self._loaded is None or not conversation_id:
            return None
        return self.snapshots.save(conversation_id)

    def count_tokens(self, conversation: Conversation, settings: GenerationSettings) -> int:
        loaded = self._require()
        prompt = render_text(
            conversation, loaded.apply_template, thinking=settings.thinking, text_only=not loaded.is_vision
        )
        return len(loaded.prepare(prompt, load_media(conversation.attachments, self.media_limits)))

    def _require(self):
        if self._loaded is None:
            raise ModelNotLoadedError("No model is loaded; load a Qwen3.5 checkpoint first.")
        return self._loaded

    def _snapshot_point(self, conversation, settings, inputs, prompt: str) -> int | None:
        """The number of prompt tokens the next turn will share with this one.

        Rendering the conversation with a placeholder assistant reply shows where the template's
        generation prompt starts (``<think>\\n``, or an empty think block with thinking off); the
        snapshot goes just before it, and never inside a run of image or video tokens. The next turn
        checks the snapshot's token ids against its own prompt, so a wrong guess costs only reuse.
        """
        loaded = self._loaded
        probe_convo = conversation.with_message(Message(Role.ASSISTANT, _PROBE))
        try:
            probe = loaded.apply_template(
                _probe_messages(probe_convo, text_only=not loaded.is_vision),
                tokenize=False,
                add_generation_prompt=False,
                enable_thinking=settings.thinking,
            )
        except Exception:  # noqa: BLE001 - a template that can't render the probe just loses reuse
            return None
        shared = 0
        for a, b in zip(prompt, probe):
            if a != b:
                break
            shared += 1
        tail = loaded.encode(prompt[shared:]) if shared < len(prompt) else []
        point = len(inputs) - len(tail)
        if tail and inputs.ids[point:] != tail:
            return None
        for lo, hi in inputs.media_token_ranges():
            if lo < point < hi:
                point = lo
        return point if point > 0 else None


def _probe_messages(conversation: Conversation, *, text_only: bool):
    from engine_mlx.prompt import template_messages

    return template_messages(conversation, text_only=text_only)


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
