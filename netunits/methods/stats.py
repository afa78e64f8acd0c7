"""Rank statistics for many units and many binary labels at once, multiple testing, and the
held-out split of a probe set.

AUC(unit, label) is the probability that an image where the label holds activates the unit more
than one where it does not (ties count one half). It is the Mann-Whitney U statistic of the
positives divided by n1 * n0, and U comes from the ranks of the unit's activations: with the
tie-averaged ranks r (1 .. n) of one unit over the images, U = sum of r over the positives
- n1 (n1 + 1) / 2. One sort per unit gives the ranks; one matrix product (ranks x labels) gives
every label's rank sum, so there is no loop over units or labels.

The two-sided p-value is Mann-Whitney's normal approximation with the tie correction and the
continuity correction, as scipy.stats.mannwhitneyu(method="asymptotic") computes it.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


def average_ranks(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ranks, tie_term) of images x units values: each column's ranks 1 .. n, tied values sharing
    their average rank (float64, images x units), and per unit sum over tie groups of t^3 - t."""
    columns = values.T.contiguous().double()                              # units x images
    ordered = columns.sort(dim=1).values
    first = torch.searchsorted(ordered, columns, right=False)             # 0-based start of the tie group
    after = torch.searchsorted(ordered, columns, right=True)              # one past its end
    ranks = (first + after + 1).double() / 2
    size = (after - first).double()
    # each member of a group of t adds t^2 - 1: the group adds t^3 - t
    tie_term = (size * size - 1).sum(dim=1)
    return ranks.T, tie_term


def mann_whitney(values: torch.Tensor, labels: torch.Tensor, paired: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(AUC, two-sided p) of every unit against every label.

    values: images x units activations; labels: bool images x labels. Returns units x labels
    float64 tensors, or, with paired (labels images x units: one label per unit), one value per
    unit. A label present on no image or on every image has AUC 0.5 and p-value 1."""
    ranks, tie_term = average_ranks(values)
    positive = labels.double()
    n = values.shape[0]
    n1 = positive.sum(dim=0)                                              # labels
    if paired:
        rank_sum = (ranks * positive).sum(dim=0)                          # units
    else:
        rank_sum = ranks.T @ positive                                     # units x labels
        tie_term = tie_term[:, None]
    n0 = n - n1
    u = rank_sum - n1 * (n1 + 1) / 2
    pairs = n1 * n0
    defined = pairs > 0
    safe = torch.where(defined, pairs, torch.ones_like(pairs))
    auc = torch.where(defined, u / safe, torch.full_like(u, 0.5))
    # variance of U under the null with tied ranks: n1 n0 / 12 ((n + 1) - sum (t^3 - t) / (n (n - 1)))
    variance = safe / 12 * ((n + 1) - tie_term / max(n * (n - 1), 1))
    spread = variance.clamp_min(0).sqrt()
    distance = (u - safe / 2).abs() - 0.5                                 # the continuity correction
    z = torch.where(spread > 0, distance / spread.clamp_min(1e-300), torch.zeros_like(distance))
    p = torch.special.erfc(z / math.sqrt(2)).clamp(max=1.0)               # 2 * P(Z > z)
    p = torch.where(defined & (spread > 0), p, torch.ones_like(p))
    return auc, p


def min_pvalue(n1: int, n0: int) -> float:
    """The smallest two-sided p-value mann_whitney can give for n1 positives and n0 negatives
    (complete separation, no ties)."""
    if n1 == 0 or n0 == 0:
        return 1.0
    n = n1 + n0
    z = (n1 * n0 / 2 - 0.5) / math.sqrt(n1 * n0 * (n + 1) / 12)
    return min(1.0, math.erfc(z / math.sqrt(2)))


def benjamini_hochberg(p: torch.Tensor, q: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """(significant, adjusted) for a vector of p-values: the Benjamini-Hochberg step-up procedure
    at false-discovery rate q. The k smallest are significant for the largest k with
    p_(k) <= q k / m; adjusted p_(i) = min over j >= i of m p_(j) / j, capped at 1."""
    p = p.double().flatten()
    m = len(p)
    if m == 0:
        return torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.float64)
    order = torch.argsort(p, stable=True)
    ordered = p[order]
    rank = torch.arange(1, m + 1, dtype=torch.float64)
    passing = torch.nonzero(ordered <= q * rank / m)
    significant = torch.zeros(m, dtype=torch.bool)
    if len(passing):
        significant[order[:int(passing[-1]) + 1]] = True
    scaled = ordered * m / rank
    adjusted_sorted = torch.flip(torch.cummin(torch.flip(scaled, [0]), dim=0).values, [0]).clamp(max=1.0)
    adjusted = torch.empty(m, dtype=torch.float64)
    adjusted[order] = adjusted_sorted
    return significant, adjusted


def empirical_p(observed: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
    """One-sided empirical p-values of observed scores against a null sample (higher is more
    extreme): (1 + #{null >= observed}) / (1 + n_null), so never 0."""
    null = null.double().flatten().sort().values
    below = torch.searchsorted(null, observed.double().contiguous(), right=False)   # null values < observed
    return (1 + (len(null) - below)).double() / (1 + len(null))


def balanced_split(labels: Sequence[int] | torch.Tensor, fraction: float,
                   seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, held_out) image indices, each ascending: of every class's images a seeded random
    round(fraction x count) are held out (at least one and at most count - 1 where the class has
    two or more), the rest fit. The same labels, fraction and seed give the same split."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed)
    held = torch.zeros(len(labels), dtype=torch.bool)
    for value in torch.unique(labels):                  # ascending: the random stream's order is fixed
        members = torch.nonzero(labels == value).flatten()
        count = len(members)
        take = round(fraction * count)
        if count >= 2:
            take = min(max(take, 1), count - 1)
        chosen = members[torch.randperm(count, generator=generator)[:take]]
        held[chosen] = True
    return torch.nonzero(~held).flatten(), torch.nonzero(held).flatten()
