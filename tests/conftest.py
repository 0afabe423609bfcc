"""Shared fixtures: the tiny Qwen3.5 model is built once per session and loaded once per session."""

from __future__ import annotations

import os

os.environ.setdefault("MLX_DISABLE_COMPILE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from engine_mlx.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def engine(tiny_model_dir, tmp_path_factory):
    from engine_mlx.engine import Engine

    eng = Engine(state_dir=tmp_path_factory.mktemp("state"))
    eng.load(tiny_model_dir)
    return eng
