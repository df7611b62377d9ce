"""Root pytest setup for every package: processed data and figures go to temporary folders."""

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Processed datasets go to a per-session cache, never to ~/.cache or to a read-only data root."""
    os.environ["DIFFNETS_CACHE"] = str(tmp_path_factory.mktemp("diffnets-cache"))
    os.environ.setdefault("MPLBACKEND", "Agg")
    yield
