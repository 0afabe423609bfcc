"""The wired (GPU-resident) memory limit is set on load and put back on unload.

Metal is Mac-only, so MLX's own functions are stubbed at the boundary (``mx.metal.is_available``
and ``mx.set_wired_limit``, which returns the previous limit as documented); everything between
them and the Engine is the real code, loading the real tiny text-only model.
"""

from __future__ import annotations

import mlx.core as mx
import pytest

from engine_mlx.cancel import CancelToken
from engine_mlx.engine import Engine
from engine_mlx.errors import EngineError
from engine_mlx.memory import estimate_fit

SYSTEM_DEFAULT = 0  # MLX's documented default wired limit


@pytest.fixture
def fake_metal(monkeypatch):
    """A wired limit as MLX keeps it: set_wired_limit stores the value and returns the old one."""
    state = {"limit": SYSTEM_DEFAULT, "calls": [], "refuse": False}

    def set_wired_limit(limit):
        if state["refuse"]:
            raise ValueError(
                "[metal::set_wired_limit] Setting a wired limit larger than the maximum"
            )
        state["calls"].append(limit)
        previous, state["limit"] = state["limit"], limit
        return previous

    monkeypatch.setattr(mx.metal, "is_available", lambda: True)
    monkeypatch.setattr(mx, "set_wired_limit", set_wired_limit)
    return state


def test_load_sets_the_budget_and_unload_restores_the_limit(fake_metal, tiny_text_model_dir):
    from engine_mlx.checkpoint import inspect_checkpoint

    budget = estimate_fit(inspect_checkpoint(tiny_text_model_dir), 4096).budget_bytes
    eng = Engine()
    eng.load(tiny_text_model_dir, context_tokens=4096)
    assert fake_metal["limit"] == budget > 0
    eng.load(tiny_text_model_dir, context_tokens=4096)  # a reload restores, then sets again
    assert fake_metal["calls"] == [budget, SYSTEM_DEFAULT, budget]
    eng.unload()
    assert fake_metal["limit"] == SYSTEM_DEFAULT
    eng.unload()  # nothing loaded: nothing to restore twice
    assert fake_metal["calls"] == [budget, SYSTEM_DEFAULT, budget, SYSTEM_DEFAULT]


def test_a_cancelled_load_restores_the_limit(fake_metal, tiny_text_model_dir):
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(EngineError, match="cancelled"):
        Engine().load(tiny_text_model_dir, cancel=cancel)
    assert fake_metal["limit"] == SYSTEM_DEFAULT and len(fake_metal["calls"]) == 2


def test_a_refused_limit_still_loads_and_restores_nothing(fake_metal, tiny_text_model_dir):
    fake_metal["refuse"] = True
    eng = Engine()
    eng.load(tiny_text_model_dir)
    assert eng.model_info is not None
    eng.unload()
    assert fake_metal["calls"] == [] and fake_metal["limit"] == SYSTEM_DEFAULT
