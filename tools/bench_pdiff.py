"""Benchmark: parameter sets evaluated per second, batched (vmap over stacked S) versus one model at a time.

For each case a host is built and M parameter vectors of its subset S are drawn around the host's own; both
paths predict the same MNIST test images (real ones from the shared data when present, otherwise random
uint8 images of the same shape):

* ``batched``: :func:`pdiff.evaluate.predict_many` — ``torch.func.vmap(functional_call)`` over chunks of
  stacked vectors; the frozen layers before S see unbatched weights and run once per chunk;
* ``looped``: :func:`pdiff.evaluate.predict_looped` — one ``functional_call`` per model.

The two are timed alternately in every round (order swapped each round), so both see the same machine load;
the speed-up is the median over rounds of looped time / batched time in the same round. Both are checked to
give identical predictions. Prints a table and writes JSON (``--output``).

    OMP_NUM_THREADS=1 flock /tmp/diffnets-cpu.lock uv run python tools/bench_pdiff.py --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from diffcore.runs import format_table
from pdiff.evaluate import predict_looped, predict_many
from pdiff.models import build_host
from pdiff.params import ParamSpec

#: name → (host architecture, selector, input channels, image size)
CASES = {
    "mnist_cnn / last two BNs (S = 128)": ("mnist_cnn", "norm:2", 1, 28),
    "mnist_cnn / whole network": ("mnist_cnn", "all", 1, 28),
    "mnist_cnnmedium / whole network (10,853)": ("mnist_cnnmedium", "all", 3, 32),
    "mnist_mlp / last Linear (330)": ("mnist_mlp", "last", 1, 28),
}


def images(data_root: str | None, count: int) -> tuple[torch.Tensor, str]:
    try:
        from diffcore.data import load_images

        test = load_images("mnist", data_root, train=False, download=False)
        return test.images[:count].permute(0, 3, 1, 2).contiguous(), "MNIST test"
    except OSError:
        g = torch.Generator().manual_seed(0)
        return torch.randint(0, 256, (count, 1, 28, 28), generator=g, dtype=torch.uint8), "random uint8"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--models", type=int, default=64, help="parameter sets per case (M)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", default="packages/pdiff/results/bench_pdiff.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    x_all, source = images(args.data_root, args.images)
    rows, records = [], []
    for name, (arch, selector, chans, size) in CASES.items():
        host = build_host(arch, 10, chans).eval()
        spec = ParamSpec.of(host, arch=arch, dataset="mnist", num_classes=10, in_chans=chans, selector=selector)
        base = spec.flatten(dict(host.named_parameters())).detach()
        flats = base + 0.05 * base.abs().mean() * torch.randn(args.models, spec.dim)

        def prepare(x, size=size, chans=chans):
            x = x.float() / 255
            x = x.expand(-1, chans, -1, -1)
            return torch.nn.functional.interpolate(x, size=(size, size)) if x.shape[-1] != size else x

        timings: dict[str, list[float]] = {"batched": [], "looped": []}
        outputs = {}
        order = ["batched", "looped"]
        for r in range(args.rounds):
            for path in order if r % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                if path == "batched":
                    outputs[path] = predict_many(host, spec, flats, x_all, prepare, args.batch_size, args.chunk)
                else:
                    outputs[path] = predict_looped(host, spec, flats, x_all, prepare, args.batch_size)
                timings[path].append(time.perf_counter() - start)
        assert torch.equal(outputs["batched"], outputs["looped"]), f"{name}: batched and looped predictions differ"
        ratios = [lo / ba for lo, ba in zip(timings["looped"], timings["batched"], strict=True)]
        record = {"case": name, "arch": arch, "selector": selector, "dim": spec.dim, "models": args.models,
                  "images": len(x_all), "batched_models_per_s": args.models / statistics.median(timings["batched"]),
                  "looped_models_per_s": args.models / statistics.median(timings["looped"]),
                  "speedup_median": statistics.median(ratios), "speedup_per_round": ratios,
                  "seconds": timings}
        records.append(record)
        rows.append({"case": name, "D": spec.dim, "batched models/s": record["batched_models_per_s"],
                     "looped models/s": record["looped_models_per_s"], "speed-up": record["speedup_median"]})
    print(f"{args.models} parameter sets × {len(x_all)} {source} images, chunk {args.chunk}, "
          f"batch {args.batch_size}, {args.rounds} alternating rounds, {torch.get_num_threads()} threads")
    print(format_table(rows, floatfmt=".3g"))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "platform": platform.platform(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "images_source": source}
    out.write_text(json.dumps({"meta": meta, "cases": records}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
