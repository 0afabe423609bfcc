"""A floor on a prompt's token count without tokenizing it: so a prompt too long for the context is
refused before the tokenizer spends seconds on it (and before it holds the engine thread).

Every token decodes to at most ``max_token_bytes`` UTF-8 bytes, so text of B bytes (as the
tokenizer's NFC normalizer leaves it) takes at least B / max_token_bytes tokens. Only the text the
chat template renders verbatim counts (system, user and tool messages): earlier replies may be
rewritten (their reasoning dropped), and what is left out only lowers the floor.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any

from engine_mlx.conversation import Conversation, Role

_VERBATIM = (Role.SYSTEM, Role.USER, Role.TOOL)


def max_token_bytes(tokenizer: Any) -> int:
    """The most UTF-8 bytes any one token of ``tokenizer`` decodes to."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        size = backend.get_vocab_size(with_added_tokens=True)
        texts = backend.decode_batch([[i] for i in range(size)], skip_special_tokens=False)
    else:  # a slow tokenizer: its vocabulary's strings, at their longest in UTF-8
        texts = list(tokenizer.get_vocab())
    return max(1, max((len(t.encode("utf-8", "replace")) for t in texts), default=1))


def text_bytes(text: str) -> int:
    text = text.strip()
    if text.isascii():
        return len(text)
    return len(unicodedata.normalize("NFC", text).encode("utf-8", "surrogatepass"))


def min_prompt_tokens(conversation: Conversation, token_bytes: int) -> int:
    """The fewest tokens the conversation's prompt can take with this tokenizer."""
    total = sum(text_bytes(m.text) for m in conversation.messages if m.role in _VERBATIM)
    return math.ceil(total / token_bytes)
