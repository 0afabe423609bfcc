"""Structured output: the answer constrained to JSON (a schema, or any object) by llguidance.

llguidance (Microsoft's grammar engine, behind vLLM's and SGLang's structured outputs) computes,
for each step, the set of tokens that keep the text inside the grammar; the processor here masks the
rest. It runs on the CPU (the mask is a numpy bitmask), so it serves the CPU and Metal backends alike.
mlx-vlm's integration (``mlx_vlm.structured``) is not reused: it applies the mask with a Metal-only
kernel, reads only the last token per step (tokens the engine feeds without sampling, such as the
thinking budget's close, would be missed), and caches tokenizers in a module-level dict.

The constraint starts after the thinking block (``</think>``), allows the blank line the template
puts there, then the JSON, then only the end of the turn.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

ANY_OBJECT = '{"type": "object"}'


@dataclass(frozen=True)
class JsonFormat:
    """Constrain the answer to JSON matching ``schema`` (JSON schema text); any object by default."""

    schema: str = ANY_OBJECT


@dataclass(frozen=True)
class ToolCallStart:
    """Make the answer open a call of one of ``names`` (Qwen3.5's XML format), then let it go on
    freely: the model writes the arguments and closes the call."""

    names: tuple[str, ...]

    def lark(self, call_id: int) -> str:
        # <tool_call> is an added token, which llguidance matches by id only.
        names = " | ".join(json.dumps(n) for n in self.names)
        return f'start: /\\n*/ <[{call_id}]> "\\n<function=" ({names}) ">\\n"'


# Compact JSON, as mlx-vlm asks for it: no free whitespace for a model to loop in.
_COMPACT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def json_lark(fmt: JsonFormat) -> str:
    schema = json.loads(fmt.schema)
    if isinstance(schema, dict):
        schema = {**schema, "x-guidance": {**_COMPACT, **schema.get("x-guidance", {})}}
    return "start: /\\n*/ %json " + json.dumps(schema)


def schema_error(schema: Any) -> str:
    """Why llguidance cannot constrain to ``schema`` (a parsed JSON schema), or "" when it can."""
    import llguidance

    try:
        grammar = llguidance.grammar_from("lark", json_lark(JsonFormat(json.dumps(schema))))
    except (TypeError, ValueError) as exc:
        return str(exc)
    return llguidance.LLMatcher.validate_grammar(grammar)


def llg_tokenizer(tokenizer: Any, end_id: int) -> Any:
    """llguidance's view of a Hugging Face tokenizer (mlx-lm's wrapper unwrapped), ending turns with
    ``end_id``. Building it walks the vocabulary: build once per loaded model."""
    import llguidance.hf
    from transformers import PreTrainedTokenizerFast

    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        tokenizer = tokenizer._tokenizer  # mlx-lm's TokenizerWrapper holds the HF tokenizer here
    return llguidance.hf.from_tokenizer(tokenizer, eos_token=end_id)


class GrammarProcessor:
    """mlx-lm logits-processor shape. Before ``trigger`` (the ``</think>`` id, when the turn thinks)
    it leaves the logits alone; then every token of the reply goes to the matcher and only the
    tokens it allows stay. When the grammar is complete it allows only the end of the turn, or with
    ``then_free`` it lets the model go on unconstrained. Reading the tokens waits for each step:
    only constrained requests pay."""

    def __init__(self, lark: str, tokenizer: Any, trigger: int | None, *, then_free: bool = False):
        import llguidance
        import llguidance.numpy

        self._matcher = llguidance.LLMatcher(tokenizer, llguidance.grammar_from("lark", lark))
        self._then_free = then_free
        self._bitmask = llguidance.numpy.allocate_token_bitmask(1, tokenizer.vocab_size)
        self._vocab = tokenizer.vocab_size
        self.trigger = trigger
        self._seen = 0
        self._started = trigger is None
        self._off = False  # nothing (more) to constrain

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import llguidance.numpy
        import mlx.core as mx
        import numpy as np

        n = int(tokens.shape[0])
        new = tokens[self._seen :].tolist() if n > self._seen else []
        self._seen = n
        if not self._started:
            if self.trigger not in new:
                return logits
            self._started = True
            new = new[new.index(self.trigger) + 1 :]
        if self._off or self._matcher.is_stopped():  # the turn's end was the only choice, and taken
            return logits
        if new and not self._matcher.consume_tokens(new):
            # A token the grammar did not allow (one the engine forced): stop constraining.
            log.warning("structured output stopped: %s", self._matcher.get_error())
            self._off = True
            return logits
        if self._then_free and self._matcher.is_accepting():
            self._off = True  # the constrained part is written: the model goes on freely
            return logits
        llguidance.numpy.fill_next_token_bitmask(self._matcher, self._bitmask, 0)
        bits = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")[: self._vocab].astype(
            bool
        )
        width = logits.shape[-1]
        allowed = np.zeros(width, dtype=bool)
        allowed[: min(width, self._vocab)] = bits[:width]
        return mx.where(mx.array(allowed), logits, mx.array(-float("inf"), dtype=logits.dtype))
