"""The probe set network dissection compares units with: images, their pixel-level concept masks
and image-level labels (netunits/data/probe.py), and a figure of a few images with their masks.

mnist: official test digits that the ROF test subset does not use, with the concepts of
netunits/concepts.py computed at probe.mask_size. broden: the first probe.size images of a
Broden-format folder (netunits/data/broden.py). From a notebook: `run_probe_concepts(
ProbeConceptsInputs(images=..., labels=...), ProbeParams(...), DataParams(...))` with the MNIST
test split as uint8 images and labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from netunits.concepts import CONCEPTS, concept_annotations
from netunits.data.broden import load_broden
from netunits.data.probe import pack_masks
from netunits.data.registry import get_dataset
from netunits.data.subsets import resize_uint8, select_indices
from netunits.errors import PipelineError
from netunits.files import save_torch
from netunits.params import DataParams, ProbeParams
from netunits.plots import close, probe_figure, save_figure
from netunits.runtime import check_fits

SHOWN_IMAGES, SHOWN_CONCEPTS = 6, 16


@dataclass
class ProbeConceptsInputs:
    images: torch.Tensor | None = None     # mnist: the official test split (uint8), whose free digits are drawn
    labels: torch.Tensor | None = None
    probe: dict | None = None              # broden: the probe set as read from the folder ...
    masks: np.ndarray | None = None        # ... and its pixel masks (images x concepts x S x S)


@dataclass
class ProbeConceptsResult:
    probe: dict                            # the probe set (data/probe/probe.pt)
    masks: np.ndarray                      # pixel masks, images x pixel concepts x S x S
    figure: object                         # a few images and their masks

    def summary(self) -> str:
        probe, masks = self.probe, self.masks
        shares = masks.reshape(*masks.shape[:2], -1).mean(axis=(0, 2))
        n_pixel = masks.shape[1]
        return (f"probe: {len(probe['labels'])} digits at {probe['images'].shape[-1]} px, masks at "
                f"{masks.shape[-1]} px; " + ", ".join(f"{c['name']} {s:.3f}" for c, s in zip(probe["concepts"], shares))
                + "\nimage-level concepts: "
                + ", ".join(f"{c['name']} {int(n)}"
                            for c, n in zip(probe["concepts"][n_pixel:], probe["image_labels"].sum(0))))


def load_probe_concepts_inputs(config: ProbeParams, data: DataParams, raw_dir: Path, source: str = "params.yaml",
                               out_dir: Path | None = None) -> ProbeConceptsInputs:
    """The images the probe set is drawn from, after the request is checked (and its size against
    memory and `out_dir`'s disk)."""
    check_fits(config.size * (3 * data.image_size ** 2 + len(CONCEPTS) * config.mask_size ** 2), out_dir,
               "the probe set")
    if config.source == "broden":
        probe, masks = load_broden(config.dir, data.image_size, config.mask_size, config.size, source)
        return ProbeConceptsInputs(probe=probe, masks=masks)
    spec = get_dataset(data.dataset, source=source)
    if spec.name != "mnist":
        raise PipelineError(f"{source}: 'probe.source' is 'mnist' but 'data.dataset' is {spec.name!r}; the "
                            f"computed concepts are those of handwritten digits")
    left = spec.split_sizes["test"] - data.test_size
    if config.size > left:
        raise PipelineError(f"{source}: 'probe.size' is {config.size}; after the {data.test_size} ROF "
                            f"test digits the test split has {left} left")
    images, labels = spec.load(data.source, data.dir, raw_dir)["test"]
    return ProbeConceptsInputs(images=images, labels=labels)


def mnist_probe(images: torch.Tensor, labels: torch.Tensor, config: ProbeParams, data: DataParams,
                source: str = "params.yaml") -> tuple[dict, np.ndarray]:
    """The first digits that the ROF test subset does not use (with selection first: those after
    it), with the computed concepts."""
    used = select_indices(labels, data.test_size, data.selection, data.seed, "data.test_size",
                          get_dataset(data.dataset).n_classes, source)
    free = torch.ones(len(labels), dtype=torch.bool)
    free[used] = False
    indices = torch.nonzero(free).flatten()[:config.size]
    images, labels = images[indices], labels[indices]
    greys = resize_uint8(images, config.mask_size)[:, 0].float().numpy() / 255.0
    masks, image_labels = concept_annotations(greys, labels.numpy())
    categories = list(dict.fromkeys(c[1] for c in CONCEPTS))
    return {"images": resize_uint8(images, data.image_size), "labels": labels.clone(),
            "indices": indices, "mask_size": config.mask_size,
            "pixel_masks": pack_masks(masks), "image_labels": torch.from_numpy(image_labels),
            "annotated": torch.ones(len(labels), len(categories), dtype=torch.bool),
            "concepts": [{"name": n, "category": c, "level": lv, "description": d} for n, c, lv, d in CONCEPTS],
            "categories": categories, "source": "mnist"}, masks


def run_probe_concepts(inputs: ProbeConceptsInputs, config: ProbeParams, data: DataParams,
                       source: str = "params.yaml") -> ProbeConceptsResult:
    if inputs.probe is not None:
        probe, masks = inputs.probe, inputs.masks
        probe["pixel_masks"] = pack_masks(masks)
    else:
        probe, masks = mnist_probe(inputs.images, inputs.labels, config, data, source)
    shown = probe["images"][:SHOWN_IMAGES].permute(0, 2, 3, 1).numpy()
    figure = probe_figure(shown[..., 0] if shown.shape[-1] == 1 else shown, masks[:SHOWN_IMAGES, :SHOWN_CONCEPTS],
                          [c["name"] for c in probe["concepts"] if c["level"] == "pixel"][:SHOWN_CONCEPTS])
    return ProbeConceptsResult(probe, masks, figure)


def write_probe_concepts(result: ProbeConceptsResult, paths: dict[str, Path]) -> None:
    save_torch(result.probe, paths["probe"])
    save_figure(result.figure, paths["probe_figure"], 100)
    close(result.figure)
