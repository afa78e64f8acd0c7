"""What zeroing each dissected unit does to each class (stage ablate), on the held-out probe images
of evaluate's split (so that the answers evaluate scores were chosen on other images).

Per layer of dissect.layers, per unit and class: the drop in accuracy and in the mean logit margin
over that class's images when the unit's whole map is zeroed (netunits.methods.causal):
  the block feeding the final layer (the architecture's last_block): exactly, on every held-out
      image, through the pooled features and the final layer;
  earlier layers: the rest of the network run once per unit on the layer's maps of a seeded,
      class-balanced sample of ablate.images_per_class held-out images per class.
evaluate reads the result for its causal agreement per method and layer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from netunits.activations import iterate_activations
from netunits.data.probe import load_probe
from netunits.errors import PipelineError
from netunits.files import remove_stale_temps, save_torch
from netunits.layer_rof import layer_maps
from netunits.methods.causal import ablation_drops, forward_drops
from netunits.methods.stats import balanced_split, min_pvalue
from netunits.models.registry import get_architecture, load_checkpoint
from netunits.params import PARAMS_FILE
from netunits.runtime import Runtime


@dataclass
class AblateInputs:
    model: torch.nn.Module
    checkpoint: Mapping[str, Any]
    probe: Mapping[str, Any]


@dataclass
class AblateResult:
    result: dict                          # ablation.pt: the split, per layer the drops
    seconds: dict[str, float]

    def summary(self) -> str:
        lines = []
        for layer, entry in self.result["per_layer"].items():
            margin = entry["margin"]
            worst = float(margin.nan_to_num(-1e9).amax(1).mean())
            lines.append(f"{layer}: {margin.shape[0]} units zeroed ({entry['how']}, {entry['images']} held-out "
                         f"images); mean margin drop of the most hurt class {worst:.3f} in {self.seconds[layer]:.1f} s")
        return "\n".join(lines) or f"no ablation: {self.result['skipped']}"


def load_ablate_inputs(paths: Mapping[str, Path]) -> AblateInputs:
    model, checkpoint = load_checkpoint(paths["model"])
    probe = load_probe(paths["probe"])
    if probe["images"].shape[-1] != checkpoint["image_size"]:
        raise PipelineError(f"{paths['probe']}: images are {probe['images'].shape[-1]} px but the model was "
                            f"trained on {checkpoint['image_size']} px; rerun `dvc repro probe_concepts`")
    return AblateInputs(model, checkpoint, probe)


def heldout_split(probe: Mapping[str, Any], config: Any,
                  source: str = PARAMS_FILE) -> tuple[torch.Tensor, torch.Tensor]:
    """evaluate's (fit, held-out) split of the probe (config: the evaluate section), after checking
    that the held-out part can reach significance and the fit part has images to fit on."""
    fit, held = balanced_split(probe["labels"], config.heldout_fraction, config.seed)
    labels = probe["labels"][held]
    typical = len(held) // max(1, len(torch.unique(labels)))
    smallest = min_pvalue(typical, len(held) - typical)
    # an answer present on as many held-out images as an average class, separating them perfectly,
    # gets this p-value; where it misses the level, the held-out part can show nothing significant
    if smallest > config.fdr:
        raise PipelineError(f"{source}: 'evaluate.heldout_fraction' is {config.heldout_fraction}: the held-out part "
                            f"has {len(held)} of {len(probe['images'])} probe images, {typical} per class, whose "
                            f"smallest Mann-Whitney p-value ({smallest:.2g}) is above evaluate.fdr ({config.fdr}); "
                            f"it must hold out more images (raise it or probe.size)")
    if len(fit) < 2:
        raise PipelineError(f"{source}: 'evaluate.heldout_fraction' is {config.heldout_fraction}: it leaves "
                            f"{len(fit)} probe images to fit on; it must leave at least 2")
    return fit, held


def class_sample(labels: torch.Tensor, per_class: int | str, seed: int) -> torch.Tensor:
    """Positions (ascending) of a seeded random `per_class` of each class's entries in labels (all
    of a class with fewer; every position for 'all')."""
    if per_class == "all":
        return torch.arange(len(labels))
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for value in torch.unique(labels):                  # ascending: the random stream's order is fixed
        members = torch.nonzero(labels == value).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


def pooled_on(model: torch.nn.Module, images: torch.Tensor, pooled_layer: str, input_spec: Any, batch_size: int,
              runtime: Runtime) -> torch.Tensor:
    """The pooled features (images x units, fp32) the final layer reads."""
    pooled = []
    for _, outputs, _ in iterate_activations(model, images, [pooled_layer], batch_size, runtime.device,
                                             runtime.precision, input_spec, desc="pooled", key="dissect.layers"):
        pooled.append(outputs[pooled_layer].float().flatten(1).cpu())
    return torch.cat(pooled)


def run_ablate(inputs: AblateInputs, config: Any, evaluate: Any, layers: list[str], runtime: Runtime,
               source: str = PARAMS_FILE) -> AblateResult:
    """config: the ablate section; evaluate: its section (the split); layers: dissect.layers."""
    probe, checkpoint = inputs.probe, inputs.checkpoint
    fit, held = heldout_split(probe, evaluate, source)
    result: dict[str, Any] = {"checkpoint_sha256": checkpoint["sha256"],
                              "split": {"heldout_fraction": evaluate.heldout_fraction, "seed": evaluate.seed,
                                        "heldout": len(held)},
                              "per_layer": {}, "skipped": ""}
    seconds: dict[str, float] = {}
    if not bool((probe["labels"] >= 0).all()):
        result["skipped"] = "the probe's images have no class labels (a Broden probe): no class to hurt"
        return AblateResult(result, seconds)
    architecture = get_architecture(checkpoint["arch"])
    model = inputs.model.eval().to(runtime.device, memory_format=torch.channels_last)
    n_classes = checkpoint["n_classes"]
    labels = probe["labels"][held]
    sample = held[class_sample(labels, config.images_per_class, config.seed)]
    for layer in layers:
        started = time.perf_counter()
        if layer == architecture.last_block:
            # zeroing a channel of this block zeroes its pooled feature: exact on every held-out image
            features = pooled_on(model, probe["images"][held], architecture.pooled_layer, checkpoint["input"],
                                 config.batch_size, runtime)
            head = model.fc
            accuracy, margin = ablation_drops(features, head.weight.detach().float().cpu(),
                                              head.bias.detach().float().cpu(), labels, n_classes)
            entry = {"how": "exact", "images": len(held), "image_indices": held.clone()}
        else:
            maps, logits = layer_maps(model, probe["images"][sample], layer, config.batch_size, runtime.device,
                                      runtime.precision, checkpoint["input"], key="dissect.layers")
            accuracy, margin = forward_drops(model, layer, maps, logits, probe["labels"][sample], n_classes,
                                             config.batch_size, runtime.device, runtime.precision)
            entry = {"how": "forward", "images": len(sample), "image_indices": sample.clone()}
        entry.update(accuracy=accuracy, margin=margin)
        result["per_layer"][layer] = entry
        seconds[layer] = time.perf_counter() - started
    return AblateResult(result, seconds)


def write_ablate(result: AblateResult, paths: Mapping[str, Path]) -> None:
    remove_stale_temps(paths["ablation"])
    save_torch(result.result, paths["ablation"])
