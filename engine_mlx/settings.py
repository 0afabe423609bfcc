"""Generation settings, with Qwen's recommended sampling for thinking and non-thinking modes."""

from __future__ import annotations

from dataclasses import dataclass

from engine_mlx.forcing import ForcedText
from engine_mlx.grammar import JsonFormat, ToolCallStart


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    top_k: int
    presence_penalty: float


# The context length the app and the command line load a model with unless told otherwise.
DEFAULT_CONTEXT_TOKENS = 32768
# The longest answer (thinking included) unless told otherwise.
DEFAULT_MAX_TOKENS = 8192

# Qwen3.5 model card recommendations.
THINKING_SAMPLING = Sampling(temperature=1.0, top_p=0.95, top_k=20, presence_penalty=1.5)
NON_THINKING_SAMPLING = Sampling(temperature=0.7, top_p=0.8, top_k=20, presence_penalty=1.5)


@dataclass(frozen=True)
class GenerationSettings:
    """What to generate. Sampling fields left as None take Qwen's default for the thinking mode."""

    thinking: bool = True
    thinking_budget: int | None = None  # close the thinking block after this many thinking tokens
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    prefill_chunk: int = (
        512  # prompt tokens per prefill step: the granularity of progress and cancel
    )
    context_limit: int | None = (
        None  # prompt + reply tokens allowed; None = the model's own context
    )
    forced: ForcedText | None = None  # text the model is made to write (tests, a forced tool call)
    response_format: JsonFormat | None = (
        None  # the answer (after any thinking) is JSON, constrained
    )
    tool_call: ToolCallStart | None = (
        None  # the answer (after any thinking) opens a call of one of these
    )
    # Log-probabilities of each generated token (events.TokenLogprob), with this many alternatives;
    # None computes none.
    logprobs: int | None = None

    def sampling(self) -> Sampling:
        base = THINKING_SAMPLING if self.thinking else NON_THINKING_SAMPLING
        return Sampling(
            temperature=base.temperature if self.temperature is None else self.temperature,
            top_p=base.top_p if self.top_p is None else self.top_p,
            top_k=base.top_k if self.top_k is None else self.top_k,
            presence_penalty=(
                base.presence_penalty if self.presence_penalty is None else self.presence_penalty
            ),
        )
