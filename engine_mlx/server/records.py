"""What the API reports of each request, for the app's log (no web framework here: the app imports it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestRecord:
    """One API request, for the app's log: when, who, how many tokens, how long."""

    time: float  # wall clock, when it arrived
    client: str  # address and User-Agent
    path: str
    status: int
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    duration_s: float = 0.0
    finish_reason: str = ""
    error: str = ""
    # perf_counter times the engine started and ended this request's generation (0 = never ran)
    engine_started: float = 0.0
    engine_ended: float = 0.0
