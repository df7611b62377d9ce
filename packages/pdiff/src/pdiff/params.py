"""The generated parameter subset S: selection, flattening, normalisation and the manifest (spec §4–§5, §14.1).

A :class:`ParamSpec` records which tensors of which host S is (names in the model's ``named_parameters()``
order, shapes, the host architecture and dataset, a fingerprint of the frozen rest of the host). Its
:class:`Normaliser` maps K flat vectors to the generator's space and back:

* NEW (``zscore``): per tensor k, (x − μ_k)/σ_k with *scalar* μ_k, σ_k = mean over checkpoints of each
  checkpoint's tensor mean / std.
* OLD (``none``): raw values.

Both pad with zeros to a multiple of ``pad_to`` (tokens of 64 in the NEW code); the inverse is exact up to
float rounding. S holds parameters only: BatchNorm running statistics stay with the host (frozen with
``bn_mode=eval``; with ``bn_mode=train`` they drift during collection while the host keeps its own, exactly
as in the OLD code), so the NEW code's log-map of ``running_var`` is never needed here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from diffcore.errors import CheckpointError, ConfigError
from torch import nn

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.modules.normalization.RMSNorm)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, NORM_TYPES) or "norm" in type(module).__name__.lower()


def select_parameters(model: nn.Module, selector: str) -> list[str]:
    """Names of the parameters S chosen by ``selector``, in ``model.named_parameters()`` order.

    ``norm:N`` — the parameters of the last N normalisation modules (``norm:2``: the paper's default, e.g.
    ``layer4.1.bn1``/``bn2`` of ResNet-18); ``all`` — every parameter; ``last`` — the last module that owns
    parameters (e.g. the classifier); ``re:<regex>`` — parameter names matching the regular expression; any
    other text — a comma-separated list of module or parameter names (``layer4.1.bn2,fc.bias``).
    Raises :class:`ConfigError` when nothing matches, naming some valid names.
    """
    names = [n for n, _ in model.named_parameters()]
    selector = selector.strip()
    if selector == "all":
        chosen = set(names)
    elif selector.startswith("norm:"):
        count = selector[5:]
        if not count.isdigit() or int(count) < 1:
            raise ConfigError(f"selector {selector!r}: write norm:N with N >= 1 (e.g. norm:2)")
        norms = [m for m, mod in model.named_modules() if _is_norm(mod) and any(True for _ in mod.parameters(False))]
        chosen = {f"{m}.{p}" if m else p for m in norms[-int(count):] for p, _ in model.get_submodule(m)
                  .named_parameters(recurse=False)}
    elif selector == "last":
        owners = [m for m, mod in model.named_modules() if any(True for _ in mod.parameters(recurse=False))]
        chosen = {n for n in names if n.rpartition(".")[0] == owners[-1]} if owners else set()
    elif selector.startswith("re:"):
        try:
            pattern = re.compile(selector[3:])
        except re.error as err:
            raise ConfigError(f"selector {selector!r} is not a valid regular expression ({err})") from None
        chosen = {n for n in names if pattern.search(n)}
    else:
        wanted = [w.strip() for w in selector.split(",") if w.strip()]
        chosen = {n for n in names for w in wanted if n == w or n.startswith(w + ".")}
    if not chosen:
        examples = ", ".join(names[-4:])
        raise ConfigError(f"parameter selector {selector!r} matches no parameter of {type(model).__name__} "
                          f"(its last parameters: {examples}); use norm:2, all, last, names or re:<regex>")
    return [n for n in names if n in chosen]


def host_fingerprint(model: nn.Module, selected: Sequence[str]) -> str:
    """sha256 of every state-dict entry *outside* S: two hosts differ iff their frozen parts differ."""
    digest = hashlib.sha256()
    skip = set(selected)
    for name, tensor in model.state_dict().items():
        if name in skip:
            continue
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ParamSpec:
    """Which parameters of which host S is: the part of the manifest every artefact carries."""

    arch: str
    dataset: str
    num_classes: int
    in_chans: int
    selector: str
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    fingerprint: str

    @property
    def numels(self) -> list[int]:
        return [int(torch.Size(s).numel()) for s in self.shapes]

    @property
    def dim(self) -> int:
        return sum(self.numels)

    @classmethod
    def of(cls, model: nn.Module, *, arch: str, dataset: str, num_classes: int, in_chans: int,
           selector: str) -> ParamSpec:
        names = select_parameters(model, selector)
        params = dict(model.named_parameters())
        return cls(arch, dataset, num_classes, in_chans, selector, tuple(names),
                   tuple(tuple(params[n].shape) for n in names), host_fingerprint(model, names))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "names": list(self.names), "shapes": [list(s) for s in self.shapes]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ParamSpec:
        return cls(data["arch"], data["dataset"], int(data["num_classes"]), int(data["in_chans"]), data["selector"],
                   tuple(data["names"]), tuple(tuple(s) for s in data["shapes"]), data["fingerprint"])

    def check_host(self, model: nn.Module, dataset: str, where: str) -> None:
        """Refuse a host this spec was not made for (spec §14.1): other dataset, architecture, S or frozen weights."""
        if dataset != self.dataset:
            raise CheckpointError(f"{where} was made for dataset {self.dataset!r}, not {dataset!r}; use the "
                                  "checkpoints it was trained on")
        params = dict(model.named_parameters())
        missing = [n for n in self.names if n not in params]
        if missing:
            raise CheckpointError(f"{where}: the host has no parameter {missing[0]!r} ({len(missing)} missing); it was "
                                  f"made for {self.arch} with selector {self.selector!r}")
        wrong = [f"{n} {tuple(params[n].shape)} vs {s}" for n, s in zip(self.names, self.shapes, strict=True)
                 if tuple(params[n].shape) != tuple(s)]
        if wrong:
            raise CheckpointError(f"{where}: parameter shapes differ from the host ({wrong[0]}); it was made for "
                                  f"{self.arch} with {self.num_classes} classes")
        if host_fingerprint(model, self.names) != self.fingerprint:
            raise CheckpointError(f"{where} was made for another {self.arch} host (its frozen weights differ); "
                                  "use the host of the checkpoints it was trained on")

    def flatten(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``{name: tensor}`` (one model) → ``(D,)``, or stacked ``{name: (M, *shape)}`` → ``(M, D)``."""
        first = state[self.names[0]]
        batched = first.dim() == len(self.shapes[0]) + 1
        lead = (first.shape[0],) if batched else ()
        return torch.cat([state[n].reshape(*lead, -1) for n in self.names], dim=-1)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(D,)`` → ``{name: tensor}`` or ``(M, D)`` → ``{name: (M, *shape)}`` (views into ``flat``)."""
        if flat.shape[-1] != self.dim:
            raise CheckpointError(f"parameter vectors have {flat.shape[-1]} numbers, this host's S has {self.dim}")
        lead = flat.shape[:-1]
        parts = flat.split(self.numels, dim=-1)
        return {n: p.reshape(*lead, *s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}

    def load_into(self, model: nn.Module, flat: torch.Tensor) -> nn.Module:
        """Write one ``(D,)`` vector into the host's S in place (shape-checked)."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.unflatten(flat).items():
                params[name].copy_(value)
        return model


@dataclass(frozen=True)
class Normaliser:
    """Per-tensor maps between raw flat vectors ``(M, D)`` and generator inputs ``(M, P)``, P = padded D."""

    spec: ParamSpec
    mode: str  # "zscore" | "none"
    pad_to: int
    mu: tuple[float, ...] = field(default=())
    sigma: tuple[float, ...] = field(default=())

    @property
    def padded_dim(self) -> int:
        return -(-self.spec.dim // self.pad_to) * self.pad_to

    @classmethod
    def fit(cls, spec: ParamSpec, checkpoints: torch.Tensor, mode: str = "zscore", pad_to: int = 64) -> Normaliser:
        """Statistics from ``checkpoints`` ``(K, D)`` (spec §5)."""
        if mode not in ("zscore", "none"):
            raise ConfigError(f"normalise={mode!r} must be zscore or none")
        if mode == "none":
            return cls(spec, mode, pad_to)
        mu, sigma = [], []
        for part in spec.unflatten(checkpoints.double()).values():
            part = part.reshape(len(checkpoints), -1)
            mu.append(part.mean(1).mean().item())
            std = part.std(1, unbiased=False).mean().item() if part.shape[1] > 1 else part.std().item()
            sigma.append(std if std > 1e-12 else 1.0)  # a constant tensor: centre only
        return cls(spec, mode, pad_to, tuple(mu), tuple(sigma))

    def encode(self, flat: torch.Tensor) -> torch.Tensor:
        """Raw ``(M, D)`` → normalised, zero-padded ``(M, P)``."""
        if self.mode == "zscore":
            flat = (flat - self._per_coordinate(self.mu)) / self._per_coordinate(self.sigma)
        return torch.nn.functional.pad(flat, (0, self.padded_dim - self.spec.dim))

    def decode(self, coded: torch.Tensor) -> torch.Tensor:
        """Normalised ``(M, P)`` → raw ``(M, D)`` (padding dropped)."""
        flat = coded[:, : self.spec.dim]
        if self.mode == "none":
            return flat.clone()
        return flat * self._per_coordinate(self.sigma) + self._per_coordinate(self.mu)

    def sigma_per_coordinate(self) -> torch.Tensor:
        """``(D,)``: σ_k of each coordinate's tensor (1 for ``none``), for noise in standardised units (§9)."""
        return torch.ones(self.spec.dim) if self.mode == "none" else self._per_coordinate(self.sigma)

    def _per_coordinate(self, values: Sequence[float]) -> torch.Tensor:
        """One scalar per tensor → ``(D,)`` (float64 statistics applied in float32)."""
        return torch.cat([torch.full((n,), v) for n, v in zip(self.spec.numels, values, strict=True)])

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "pad_to": self.pad_to, "mu": list(self.mu), "sigma": list(self.sigma)}

    @classmethod
    def from_json(cls, spec: ParamSpec, data: Mapping[str, Any]) -> Normaliser:
        return cls(spec, data["mode"], int(data["pad_to"]), tuple(data["mu"]), tuple(data["sigma"]))
