"""Planted units: a stand-in network whose channels at one layer are known functions of the probe
set's annotations, so that every method's own code can be checked against a known answer.

A planted unit is a formula over the probe's concepts (`hole`, `digit_3`, `hole AND NOT digit_0`,
in netunits.methods.formula's syntax) or `noise`. Its map on an image is the share of each cell of
the layer's grid that the formula's mask covers (the mask at the probe's mask resolution,
average-pooled to the grid; an image-level concept covers the whole image), times 1 + 0.01 x a
seeded uniform ramp, so that no two values tie and a quantile threshold falls inside the planted
region rather than on a plateau. `noise` is the seeded uniform values alone.

The planted channels replace the first channels of a real network's layer (a forward hook), so
that the methods that compare a unit with the rest of its layer (CLIP-Dissect's P(c) is a mean
over the layer's units) see them among real units.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from netunits.activations import get_layer
from netunits.errors import PipelineError
from netunits.methods.formula import Formula, formula_length, leaves, parse
from netunits.methods.formula_masks import formula_mask_on

NOISE = "noise"
RAMP = 0.01


def parse_planted(texts: Sequence[str]) -> list[Formula | None]:
    """Each planted unit's formula (None for noise)."""
    return [None if text == NOISE else parse(text) for text in texts]


def missing_concepts(formulas: Sequence[Formula | None], names: Sequence[str]) -> list[str]:
    """The concepts the formulas name that the probe lacks."""
    known = set(names)
    return [name for formula in formulas if formula is not None for name in leaves(formula) if name not in known]


def planted_maps(probe: Mapping, formulas: Sequence[Formula | None], grid: int, seed: int) -> torch.Tensor:
    """float images x units x grid x grid: each formula's coverage of every cell (noise: none),
    times 1 + RAMP x uniform noise; for noise the uniform values."""
    n = len(probe["images"])
    generator = torch.Generator().manual_seed(seed)
    maps = torch.empty(n, len(formulas), grid, grid)
    everything = torch.arange(n)
    for unit, formula in enumerate(formulas):
        ramp = torch.rand(n, grid, grid, generator=generator)
        if formula is None:
            maps[:, unit] = ramp
            continue
        mask = formula_mask_on(probe, everything, formula, "mask", probe["mask_size"], 0.0, grid)
        coverage = F.adaptive_avg_pool2d(mask.float()[:, None], grid)[:, 0]
        maps[:, unit] = coverage * (1 + RAMP * ramp)
    return maps


def image_presence(formula: Formula, present: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
    """bool images: where a formula holds on image-level presence (images x concepts, `names`'
    order), for AND, OR and AND NOT."""
    if isinstance(formula, str):
        return present[:, list(names).index(formula)]
    op, left, right = formula
    a, b = image_presence(left, present, names), image_presence(right, present, names)
    return {"AND": a & b, "OR": a | b, "AND NOT": a & ~b}[op]


def connectors(formula: Formula) -> set[str]:
    if isinstance(formula, str):
        return set()
    op, left, right = formula
    return {op} | connectors(left) | connectors(right)


def fits(formula: Formula, max_length: int, allowed: Sequence[str]) -> bool:
    """Whether a search of formulas up to max_length concepts over these connectors can name it."""
    return formula_length(formula) <= max_length and connectors(formula) <= set(allowed)


@contextmanager
def planted(model: nn.Module, layer: str, maps: torch.Tensor) -> Iterator[nn.Module]:
    """The model with the first channels of `layer`'s output replaced by `maps` (images x units x
    grid x grid, for the probe's images in order) while the context lasts. The probe must be fed
    in order from its first image, every pass over all of it (as the activation passes do): a
    counter of the images seen says which maps a batch gets."""
    seen = [0]

    def replace(module, inputs, output):
        start = seen[0] % len(maps)
        seen[0] = start + len(output)
        if output.shape[-2:] != maps.shape[-2:]:
            raise PipelineError(f"planted units: {layer!r} gives {tuple(output.shape[-2:])} maps, the planted ones "
                                f"are {tuple(maps.shape[-2:])}")
        output = output.clone()
        output[:, :maps.shape[1]] = maps[start:start + len(output)].to(output.device, output.dtype)
        return output

    handle = get_layer(model, layer, "compose.layers").register_forward_hook(replace)
    try:
        yield model
    finally:
        handle.remove()
