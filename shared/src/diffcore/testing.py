"""Small helpers shared by the packages' tests (importable without pytest)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

#: The team's read-only resource folder beside the repository (``../shared/data``).
REPO_ROOT = Path(__file__).resolve().parents[3]


def shared_data_root() -> Path | None:
    """``$DIFFNETS_DATA`` if it holds data, else ``<repo>/../shared/data``, else None."""
    for candidate in (os.environ.get("DIFFNETS_DATA"), REPO_ROOT.parent / "shared" / "data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def require_shared_data(*relative: str) -> Path:
    """The shared data root, or skip the calling test with a reason naming what is missing."""
    import pytest

    root = shared_data_root()
    if root is None:
        pytest.skip("real data not available: set $DIFFNETS_DATA or put the team's data in ../shared/data")
    missing = [r for r in relative if not (root / r).exists()]
    if missing:
        pytest.skip(f"real data not available: {', '.join(missing)} missing under {root}")
    return root


def assert_close_state_dicts(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0,
                             rtol: float = 0.0) -> None:
    """Same keys, same shapes, values equal within tolerance (exact by default)."""
    assert a.keys() == b.keys(), f"key sets differ: {sorted(set(a) ^ set(b))}"
    for key in a:
        assert a[key].shape == b[key].shape, f"{key}: shape {tuple(a[key].shape)} vs {tuple(b[key].shape)}"
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=rtol, msg=lambda m, k=key: f"{k}: {m}")


def reset_accelerate_state() -> None:
    """Forget the process-wide Accelerate singletons so the next ``Accelerator`` may use other settings."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
