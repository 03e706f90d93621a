"""Shared test fixtures: the built-in sample (made once per session) and the real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GLACIERFACIES_SHARED", REPO.parent / "shared")) / "data"

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip the test with a reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """The built-in sample with seed 0, written once per test session (read-only for tests)."""
    from glacierfacies.sample.generate import write_sample

    out = tmp_path_factory.mktemp("sample") / "sample"
    write_sample(out, seed=0)
    return out
