"""An MTP head for the tiny model, written as mlx-vlm's split drafter (``<model>/mtp/``).

``write_head`` writes the head with the given (or random) weights; ``train_head`` fits it to the tiny
model's own greedy continuations, so speculative decoding sees real acceptance in tests and
benchmarks: the drafter at position t sees the target's last hidden state and token t+1 and learns
token t+2, exactly what mlx-vlm's drafter is asked at run time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine_mlx.mtp_head import DRAFTER_MODEL_TYPE, MTP_FOLDER
from engine_mlx.runtime_imports import ensure_runtime_imported


def _text_config(model_dir: Path) -> dict[str, Any]:
    config = json.loads((model_dir / "config.json").read_text())
    text = config.get("text_config", config)
    return {k: v for k, v in text.items() if k not in ("quantization", "quantization_config")}


def new_head(model_dir: Path, *, seed: int = 0) -> Any:
    """A randomly initialised mlx-vlm Qwen3.5 MTP drafter shaped for the model in ``model_dir``."""
    ensure_runtime_imported()
    import mlx.core as mx
    from mlx.utils import tree_map
    from mlx_vlm.speculative.drafters.qwen3_5_mtp import Qwen3_5MTPDraftModel
    from mlx_vlm.speculative.drafters.qwen3_5_mtp.config import Qwen3_5MTPConfig

    mx.random.seed(seed)
    head = Qwen3_5MTPDraftModel(
        Qwen3_5MTPConfig.from_dict({"text_config": _text_config(model_dir)})
    )
    head.update(tree_map(lambda p: p * 0.5 if p.ndim > 1 else p, head.parameters()))
    mx.eval(head.parameters())
    return head


def write_head(model_dir: Path, head: Any, out_dir: Path | None = None) -> Path:
    """Save ``head`` in mlx-vlm's drafter layout, by default as ``model_dir/mtp``; returns the folder."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    out = out_dir or (model_dir / MTP_FOLDER)
    out.mkdir(parents=True, exist_ok=True)
    weights = dict(tree_flatten(head.parameters()))
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    text = _text_config(model_dir)
    config = {
        "model_type": DRAFTER_MODEL_TYPE,
        "text_config": text,
        "block_size": int(head.config.block_size),
        "tie_word_embeddings": bool(text.get("tie_word_embeddings", False)),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return out


# What the demo model's head is trained on (``python -m engine_mlx tiny --mtp``): the replies to
# these first messages, with thinking on, are the ones it predicts.
DEMO_PROMPTS = ("Hello there", "Write a poem", "What is in this image?", "Summarize the document.")


def _trajectories(
    model_dir: Path, prompts: Sequence[Sequence[int] | str], tokens: int
) -> tuple[Any, list[tuple[int, Any, Any]]]:
    """The model's greedy continuation of each prompt (token ids, or a first user message rendered
    with thinking on as the engine renders it): (prompt length, tokens x0..xN, the hidden state
    before each of them (1, N+1, H))."""
    import mlx.core as mx

    from engine_mlx.checkpoint import inspect_checkpoint
    from engine_mlx.conversation import Conversation, Message, Role
    from engine_mlx.prompt import LoadedMedia, render_text
    from engine_mlx.runtime import LoadedModel
    from engine_mlx.speculative import TargetForward

    loaded = LoadedModel.load(inspect_checkpoint(model_dir))
    forward = TargetForward(loaded.model, loaded.is_vision)
    out = []
    for prompt in prompts:
        if isinstance(prompt, str):
            text = render_text(
                Conversation((Message(Role.USER, prompt),)),
                loaded.apply_template,
                thinking=True,
                text_only=not loaded.is_vision,
            )
            ids: Sequence[int] = loaded.prepare(text, LoadedMedia()).ids
        else:
            ids = prompt
        cache = loaded.make_cache()
        hidden, logits = forward(mx.array(list(ids)), 0, 0, cache)
        h, x = hidden[:, -1:, :], mx.argmax(logits[:, -1, :], axis=-1).astype(mx.int32)
        xs, hs = [], []
        for i in range(tokens + 1):
            xs.append(x)
            hs.append(h)
            hidden, logits = forward(x, len(ids) + i, 0, cache)
            h, x = hidden, mx.argmax(logits[:, -1, :], axis=-1).astype(mx.int32)
            mx.eval(h, x)
        out.append((len(ids), mx.concatenate(xs), mx.concatenate(hs, axis=1)))
    return loaded.model, out


# Where the drafter may start following a reply (the first round, or after plain steps or forced
# text): it learns from each of these offsets, over windows of this many tokens.
_STARTS = (0, 1, 2, 3, 4, 6, 9, 13)
_WINDOW = 24


def train_head(
    model_dir: Path,
    prompts: Sequence[Sequence[int] | str] = DEMO_PROMPTS,
    *,
    tokens: int = 40,
    steps: int = 60,
    seed: int = 0,
    out_dir: Path | None = None,
) -> Path:
    """Fit a new head to the model's own greedy continuations of ``prompts`` (token ids as the engine
    renders them, or first user messages) and write it (:func:`write_head`). Deterministic for a seed.

    A random-weight model's next token is a chaotic function of its whole state, so the head learns
    these continuations, not the model: it predicts them (acceptance near 100%) and little else,
    which is what tests and benchmarks need to see rounds that keep their drafts."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim

    model, data = _trajectories(model_dir, prompts, tokens)
    head = new_head(model_dir, seed=seed)
    head.bind(model)
    window = min(_WINDOW, tokens)
    rows = [
        (n + s, xs[s : s + window + 1], hs[:, s : s + window])
        for n, xs, hs in data
        for s in _STARTS
        if s + window <= tokens
    ]
    token_in = mx.stack([xs[:-1] for _, xs, _ in rows])
    labels = mx.stack([xs[1:] for _, xs, _ in rows])
    hidden = mx.concatenate([hs for _, _, hs in rows], axis=0)
    positions = mx.stack([mx.arange(window) + start for start, _, _ in rows])

    def loss(head: Any) -> mx.array:
        h = head._forward_hidden(head._input_embed(token_in), hidden, None, positions)
        return nn.losses.cross_entropy(head._lm_head_fn(h), labels).mean()

    step = nn.value_and_grad(head, loss)
    optimizer = optim.Adam(learning_rate=3e-3)
    for _ in range(steps):
        _, grads = step(head)
        optimizer.update(head, grads)
        mx.eval(head.parameters(), optimizer.state)
    return write_head(model_dir, head, out_dir)
