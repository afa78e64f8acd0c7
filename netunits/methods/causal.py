"""What zeroing one unit of the final layer's input does to each class, exactly and for every unit
at once.

The final layer reads the pooled features f (images x units): logits = f W^T + b. Zeroing unit j
(its whole map, so its pooled value) changes every image's logits by -f_j W[:, j], so the
ablated logits of all units come from one broadcast, with no forward pass. Per unit and class k,
over the images of class k: the drop in accuracy (share correct before minus after) and the drop
in the mean logit margin (the true class's logit minus the largest other logit).

An answer that names class k for unit j agrees causally when k is the class whose margin drops
most; its effect is the drop for k minus the mean drop over the other classes.
"""
from __future__ import annotations

import re
from typing import Iterable

import torch

from netunits.methods.formula import Formula

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


def ablation_drops(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, labels: torch.Tensor,
                   n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(accuracy drop, margin drop), each units x classes (float64), of zeroing each unit's pooled
    feature, over the images of each class (NaN for a class with no image).

    features: images x units; weight: classes x units; bias: classes; labels: images."""
    features, weight, bias = features.double(), weight.double(), bias.double()
    logits = features @ weight.T + bias
    correct = (logits.argmax(1) == labels).double()
    margin = margins(logits, labels)
    members = torch.nn.functional.one_hot(labels, n_classes).double()          # images x classes
    count = members.sum(0)
    safe = count.clamp_min(1)
    accuracy_drops, margin_drops = [], []
    for first in range(0, features.shape[1], UNIT_CHUNK):
        f = features[:, first:first + UNIT_CHUNK]                                # images x chunk
        ablated = logits[:, None, :] - f[:, :, None] * weight.T[None, first:first + UNIT_CHUNK, :]
        ablated_correct = (ablated.argmax(2) == labels[:, None]).double()        # images x chunk
        ablated_margin = margins(ablated, labels)
        accuracy_drops.append(((correct[:, None] - ablated_correct).T @ members) / safe)
        margin_drops.append(((margin[:, None] - ablated_margin).T @ members) / safe)
    nan = torch.full((n_classes,), float("nan"), dtype=torch.float64)
    accuracy, margin_drop = torch.cat(accuracy_drops), torch.cat(margin_drops)
    empty = count == 0
    accuracy[:, empty], margin_drop[:, empty] = nan[empty], nan[empty]
    return accuracy, margin_drop


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
