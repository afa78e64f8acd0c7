"""Influential filters per class ("Decomposing the Deep", Badola et al., arXiv 2112.07719), as pure
functions on tensors.

Notation as in methods/rof.py: pooled features F (n_samples x n_units, non-negative after ReLU
and pooling), labels y, the final layer W (n_classes x n_units), b.

The class sets. Per image the features are divided by their sum (L1 normalisation, so every
image votes with the same weight) and its `k_image` largest units are its top filters. Per class
the frequency histogram counts, for every unit, the class's training images that have it among
their top filters; the class set S_c is the `k` units with the highest counts. Ties in the count
go to the unit with the larger summed normalised activation over the class, then to the lower
index. This is the reading of the paper's first title ("... with L1 Norm Frequency Histograms");
the reference code released only the per-image step. A frequency histogram, rather than the
summed activation alone, makes a unit count by how many of the class's images rely on it, not
by a few images where it is very large.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from netunits.errors import PipelineError


def l1_normalise(features: torch.Tensor) -> torch.Tensor:
    """Each row divided by its sum (float64); an all-zero row stays zero."""
    features = features.to(torch.float64)
    sums = features.sum(dim=1, keepdim=True)
    return torch.where(sums > 0, features / sums.clamp_min(torch.finfo(torch.float64).tiny), 0.0)


def top_units(values: torch.Tensor, k: int) -> torch.Tensor:
    """Per row, the indices of the k largest values, ties to the lower index (a stable sort)."""
    return torch.sort(-values, dim=1, stable=True).indices[:, :k]


def class_histograms(top: torch.Tensor, labels: torch.Tensor, n_classes: int, n_units: int) -> torch.Tensor:
    """counts[c, j]: how many samples of class c have unit j among their top units."""
    counts = torch.zeros(n_classes * n_units, dtype=torch.int64)
    flat = (labels[:, None] * n_units + top).flatten()
    counts.index_add_(0, flat, torch.ones_like(flat))
    return counts.view(n_classes, n_units)


def class_sets(features: torch.Tensor, labels: torch.Tensor, n_classes: int, k: int,
               k_image: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sets: n_classes x k unit indices, most frequent first; counts: n_classes x n_units)."""
    n_units = features.shape[1]
    if not 1 <= k <= n_units or not 1 <= k_image <= n_units:
        raise PipelineError(f"'influence.k' {k} and 'influence.k_image' {k_image} must be from 1 to "
                            f"the layer's {n_units} units")
    normalised = l1_normalise(features)
    counts = class_histograms(top_units(normalised, k_image), labels, n_classes, n_units)
    mass = torch.zeros(n_classes, n_units, dtype=torch.float64).index_add_(0, labels, normalised)
    sets = []
    for c in range(n_classes):
        # sort by mass first, then stably by count: count decides, mass breaks its ties, index theirs
        by_mass = torch.sort(-mass[c], stable=True).indices
        by_count = by_mass[torch.sort(-counts[c][by_mass], stable=True).indices]
        sets.append(by_count[:k])
    return torch.stack(sets), counts


def membership(sets: torch.Tensor, n_units: int) -> torch.Tensor:
    """Bool n_classes x n_units: unit j is in S_c."""
    mask = torch.zeros(len(sets), n_units, dtype=torch.bool)
    mask[torch.arange(len(sets))[:, None], sets] = True
    return mask


def decomposed_logits(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
    """logit_c = sum over j in S_c of W[c, j] f_j + b_c, in float64 (mask: n_classes x n_units).
    With every unit in every set this is the full layer, computed the same way."""
    w = weight.to(torch.float64) * mask.to(torch.float64)
    return features.to(torch.float64) @ w.T + bias.to(torch.float64)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).double().mean())


def essentiality(features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 sets: torch.Tensor, seed: int, replace: str) -> list[tuple[int, int]]:
    """Per class c: (images of class c, how many are still predicted c) after the features of
    S_c (`replace="set"`) or of every other unit (`replace="others"`) are replaced by seeded
    N(0, 1) noise; the original final layer classifies."""
    generator = torch.Generator().manual_seed(seed)
    n_units = features.shape[1]
    in_set = membership(sets, n_units)
    counts = []
    for c in range(len(sets)):
        rows = features[labels == c].to(torch.float64).clone()
        columns = in_set[c] if replace == "set" else ~in_set[c]
        noise = torch.randn(len(rows), int(columns.sum()), generator=generator, dtype=torch.float64)
        rows[:, columns] = noise
        logits = rows @ weight.to(torch.float64).T + bias.to(torch.float64)
        counts.append((len(rows), int((logits.argmax(dim=1) == c).sum())))
    return counts


def mutual_information(a: torch.Tensor | Sequence[bool], b: torch.Tensor | Sequence[bool]) -> float:
    """Mutual information (nats) between two binary vectors, as sklearn's mutual_info_score
    computes it from their contingency table."""
    a, b = torch.as_tensor(a, dtype=torch.bool), torch.as_tensor(b, dtype=torch.bool)
    n = len(a)
    total = 0.0
    for x in (False, True):
        for y in (False, True):
            joint = int(((a == x) & (b == y)).sum())
            if joint:
                total += joint / n * math.log(joint * n / (int((a == x).sum()) * int((b == y).sum())))
    return total


def mean_pairwise_mi(mask: torch.Tensor, include_self: bool) -> float:
    """Mean mutual information over ordered pairs of classes' membership vectors, with or without
    a class paired with itself (the reference code includes it)."""
    values = [mutual_information(mask[c], mask[d]) for c in range(len(mask)) for d in range(len(mask))
              if include_self or c != d]
    return sum(values) / len(values)


def sweep(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
          test_labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ks: Sequence[int], k_image: int | str,
          seed: int) -> dict[int, dict[str, Any]]:
    """The whole method for every k: {k: {"sets", "counts", "k_image", "decomposed" (test
    predictions), "kept" ({"set", "others"}: essentiality per class), "mi_distinct",
    "mi_with_self"}}. k_image "same" takes each k's own."""
    n_classes, n_units = weight.shape
    result = {}
    for k in ks:
        per_image = k if k_image == "same" else k_image
        sets, counts = class_sets(train_features, train_labels, n_classes, k, per_image)
        mask = membership(sets, n_units)
        result[k] = {
            "sets": sets, "counts": counts, "k_image": per_image,
            "decomposed": decomposed_logits(test_features, weight, bias, mask).argmax(dim=1),
            "kept": {replace: essentiality(test_features, test_labels, weight, bias, sets, seed, replace)
                     for replace in ("set", "others")},
            "mi_distinct": mean_pairwise_mi(mask, include_self=False),
            "mi_with_self": mean_pairwise_mi(mask, include_self=True),
            "units_in_some_set": int(mask.any(dim=0).sum()),
        }
    return result
