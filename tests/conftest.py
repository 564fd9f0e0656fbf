"""Shared pytest fixtures for srstudy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_data_path() -> Path:
    """Where the shared benchmark/training data lives: ``$SRSTUDY_SHARED_DATA`` or ``<clone>/../shared/data``."""
    env = os.environ.get("SRSTUDY_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``pathlib.Path`` of the shared data folder (see /work/shared/data/README.md); skips if absent."""
    path = shared_data_path()
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} not found (set SRSTUDY_SHARED_DATA to its location)")
    return path
