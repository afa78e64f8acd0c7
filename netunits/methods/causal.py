"""What zeroing one unit of the final layer's input does to each class, exactly and for every unit
at once.

The final layer reads the pooled features f (images x units): logits = f W^T + b. Zeroing unit j
(its whole map, so its pooled value) changes every image's logits by -f_j W[:, j], so the
ablated logits of all units come from one broadcast, with no forward pass. Per unit and class k,
over the images of class k: the drop in accuracy (share correct before minus after) and the drop
in the mean logit margin (the true class's logit minus the largest other logit).

Before that block there is no such shortcut: zeroing a channel of an earlier layer changes every
later activation, so `forward_drops` runs the rest of the network once per channel on the
layer's cached maps (netunits.layer_rof.tail_logits), and the same drops are taken from the
logits.

An answer that names class k for unit j agrees causally when k is the class whose margin drops
most; its effect is the drop for k minus the mean drop over the other classes.
"""
from __future__ import annotations

import re
from typing import Iterable

import torch

from netunits.layer_rof import tail_logits
from netunits.methods.formula import Formula
from netunits.runtime import progress

CLASS_CONCEPT = re.compile(r"digit_(\d+)")
UNIT_CHUNK = 64           # units whose ablated logits (images x units x classes) are held at once


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """... x classes logits -> the true class's logit minus the largest other (... ), labels
    broadcast over the leading dimension."""
    index = labels.view(-1, *([1] * (logits.dim() - 1)))
    index = index.expand(*logits.shape[:-1], 1)
    true = logits.gather(-1, index)
    others = logits.scatter(-1, index, float("-inf"))
    return (true - others.amax(dim=-1, keepdim=True)).squeeze(-1)


def logit_drops(logits: torch.Tensor, ablated: torch.Tensor, labels: torch.Tensor,
                n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(accuracy drop, margin drop), each units x classes (float64), from the logits (images x
    classes) and the logits with each unit zeroed (images x units x classes), over the images of
    each class (NaN for a class with no image)."""
    logits, ablated = logits.double(), ablated.double()
    correct = (logits.argmax(1) == labels).double()
    margin = margins(logits, labels)
    members = torch.nn.functional.one_hot(labels, n_classes).double()          # images x classes
    count = members.sum(0)
    ablated_correct = (ablated.argmax(2) == labels[:, None]).double()           # images x units
    ablated_margin = margins(ablated, labels)
    accuracy = ((correct[:, None] - ablated_correct).T @ members) / count.clamp_min(1)
    margin_drop = ((margin[:, None] - ablated_margin).T @ members) / count.clamp_min(1)
    empty = count == 0
    accuracy[:, empty], margin_drop[:, empty] = float("nan"), float("nan")
    return accuracy, margin_drop


def ablation_drops(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, labels: torch.Tensor,
                   n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logit_drops of zeroing each unit's pooled feature, exactly: features: images x units;
    weight: classes x units; bias: classes; labels: images."""
    features, weight, bias = features.double(), weight.double(), bias.double()
    logits = features @ weight.T + bias
    accuracy_drops, margin_drops = [], []
    for first in range(0, features.shape[1], UNIT_CHUNK):
        f = features[:, first:first + UNIT_CHUNK]                                # images x chunk
        ablated = logits[:, None, :] - f[:, :, None] * weight.T[None, first:first + UNIT_CHUNK, :]
        accuracy, margin = logit_drops(logits, ablated, labels, n_classes)
        accuracy_drops.append(accuracy)
        margin_drops.append(margin)
    return torch.cat(accuracy_drops), torch.cat(margin_drops)


def forward_drops(model: torch.nn.Module, layer: str, maps: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                  n_classes: int, batch_size: int, device: torch.device, precision: str,
                  desc: str = "ablation") -> tuple[torch.Tensor, torch.Tensor]:
    """logit_drops of zeroing each channel of `layer`'s maps (images x channels x H x W, as the
    forward gave them; logits: the model's own on those images, which the rest of the network run
    on the unchanged maps must reproduce), one forward pass of the rest of the network per channel."""
    n_channels = maps.shape[1]
    every = torch.ones(n_channels, dtype=torch.bool)
    tail_logits(model, layer, maps, every, batch_size, device, precision, reference_logits=logits,
                key="dissect.layers")
    ablated = torch.empty(len(maps), n_channels, logits.shape[1], dtype=torch.float32)
    for unit in progress(range(n_channels), f"{desc} {layer}"):
        keep = every.clone()
        keep[unit] = False
        ablated[:, unit] = tail_logits(model, layer, maps, keep, batch_size, device, precision, key="dissect.layers")
    return logit_drops(logits, ablated, labels, n_classes)


def class_effect(drops: torch.Tensor, unit: int, k: int) -> float:
    """The drop for class k minus the mean drop over the other classes (units x classes drops)."""
    row = drops[unit]
    others = torch.cat([row[:k], row[k + 1:]])
    return float(row[k] - others.nanmean())


def most_hurt(drops: torch.Tensor) -> torch.Tensor:
    """Per unit the class whose drop is largest (the first among equals)."""
    return torch.nan_to_num(drops, nan=float("-inf")).argmax(dim=1)


def concept_class(name: str) -> int | None:
    """The class a concept name stands for (`digit_7` -> 7), or None."""
    match = CLASS_CONCEPT.fullmatch(name or "")
    return int(match.group(1)) if match else None


def formula_classes(formula: Formula | None) -> set[int]:
    """The classes a formula asserts: class concepts among its leaves, except those it negates (the
    right operand of AND NOT)."""
    if formula is None:
        return set()
    if isinstance(formula, str):
        found = concept_class(formula)
        return set() if found is None else {found}
    op, left, right = formula
    return formula_classes(left) | (set() if op == "AND NOT" else formula_classes(right))


def named_class(classes: Iterable[int]) -> int | None:
    """The one class an answer names, or None where it names none or several."""
    classes = set(classes)
    return next(iter(classes)) if len(classes) == 1 else None
