"""The ``sample`` command: a PNG grid from a trained DDPM or VAE, so a user sees what the model learned."""

from __future__ import annotations

import time
from typing import Any

from diffcore.runs import RunDir

from diffclassify.config import SampleConfig
from diffclassify.data import ImageSpec
from diffclassify.extract import Generative


def run_sample(config: SampleConfig, run: RunDir, generative: Generative) -> dict[str, Any]:
    from diffclassify.plots import save_image_grid
    from diffclassify.train import _signed, _unit, draw_samples, vae_samples

    started = time.perf_counter()
    info = generative.info
    spec = ImageSpec(info["image"]["channels"], info["image"]["size"], len(info.get("classes", [])) or 10)
    results: dict[str, Any] = {"kind": info["kind"], "model": str(generative.folder), "count": config.count}
    if info["kind"] == "ddpm":
        from diffclassify.diffusion import make_process

        process = make_process(info["process"])
        vdiff = info["process"]["type"] == "vdiff"
        steps = config.steps or (500 if vdiff else 50 if config.sampler == "ddim" else None)
        conditional = getattr(generative.model, "label_conditioned", False)
        images = draw_samples(generative.model, process, spec, config.count, config.sampler, steps,
                              clip=config.clip_x0, seed=config.seed, eta=config.eta,
                              num_classes=spec.num_classes if conditional else None)
        results.update(sampler="v-ddim" if vdiff else config.sampler, steps=steps or info["process"]["num_steps"])
        title = f"{info['dataset']}: {results['sampler']}, {results['steps']} steps"
    else:
        scale = _unit if type(generative.model).__name__ == "MnistConvVAE" else _signed
        images = vae_samples(generative.model, config.count, None, scale, config.seed)
        results.update(sampler="prior", steps=None)
        title = f"{info['dataset']}: VAE prior samples"
    if run.is_main:
        save_image_grid(images, run.path / "samples.png", title=title)
    results["samples"] = "samples.png"
    results["seconds"] = time.perf_counter() - started
    return results
