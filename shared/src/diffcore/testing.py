"""Small helpers shared by the packages' tests (importable without pytest)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def shared_fixtures_root() -> Path | None:
    """``$DIFFNETS_FIXTURES`` if set and a folder, else ``<repo>/../shared/fixtures``, else None."""
    for candidate in (os.environ.get("DIFFNETS_FIXTURES"), REPO_ROOT.parent / "shared" / "fixtures"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@dataclass
class OfficialCase:
    """One case of ``../shared/fixtures/<package>/``: tensors computed by the official repository's own code.

    ``state`` holds the official module's state dict under its official keys, floating tensors cast to the
    case's ``compute_dtype`` (bfloat16 storage is exact: the official run used the rounded weights);
    ``grads`` holds d ``meta["grad_loss"]`` / d parameter where the case stores gradients.
    """

    package: str
    name: str
    meta: dict[str, Any]
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    grads: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.meta["compute_dtype"])

    def assert_close(self, what: str, actual: torch.Tensor, expected: torch.Tensor, *, atol: float,
                     rtol: float = 0.0) -> None:
        """``actual`` equals the official ``expected`` within tolerance, else an AssertionError naming the case,
        the output, the largest absolute and relative difference and where it is."""
        assert actual.shape == expected.shape, (
            f"official case {self.package}/{self.name}, {what}: shape {tuple(actual.shape)}, "
            f"official {tuple(expected.shape)}")
        actual = actual.detach().to(expected.dtype)
        diff = (actual - expected).abs()
        bound = atol + rtol * expected.abs()
        if not bool(torch.isfinite(actual).all()) or bool((diff > bound).any()):
            worst = int(torch.nan_to_num(diff - bound, nan=float("inf")).flatten().argmax())
            index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), diff.shape))
            rel = (diff / expected.abs().clamp_min(1e-300)).max()
            raise AssertionError(
                f"official case {self.package}/{self.name}, {what}: max |diff| {float(diff.max()):.3g} "
                f"(max rel {float(rel):.3g}) exceeds atol {atol:g} + rtol {rtol:g}; at {index}: ours "
                f"{float(actual.flatten()[worst]):.8g}, official {float(expected.flatten()[worst]):.8g}")


def official_cases(package: str) -> list[str]:
    """The case names stored for ``package`` (sorted), or ``[]`` when the fixtures folder is absent."""
    root = shared_fixtures_root()
    if root is None or not (root / package).is_dir():
        return []
    return sorted(p.stem for p in (root / package).glob("*.json"))


def load_official_case(package: str, name: str) -> OfficialCase:
    """Load ``../shared/fixtures/<package>/<name>.{json,safetensors}`` (skips the test when absent)."""
    import pytest
    from safetensors.torch import load_file

    root = shared_fixtures_root()
    if root is None or not (root / package / f"{name}.json").is_file():
        pytest.skip("official reference fixtures not available: set $DIFFNETS_FIXTURES or put them in "
                    "../shared/fixtures")
    folder = root / package
    meta = json.loads((folder / f"{name}.json").read_text())
    tensors = load_file(str(folder / f"{name}.safetensors"))
    for key, ref in meta.get("state_refs", {}).items():
        file, tensor = ref.split(":")
        tensors[f"state.{key}"] = load_file(str(folder / file))[tensor]
    case = OfficialCase(package, name, meta)
    dtype = case.dtype
    groups = {"input": case.inputs, "state": case.state, "output": case.outputs, "grad": case.grads}
    for key, value in tensors.items():
        prefix, rest = key.split(".", 1)
        if prefix == "state" and value.is_floating_point():
            value = value.to(dtype)
        groups[prefix][rest] = value
    return case


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
