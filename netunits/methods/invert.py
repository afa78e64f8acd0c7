"""INVERT (Bykov et al., NeurIPS 2023; code lapalap/invert): mask-free compositional explanations.

A unit gets one value per image; every concept is an image-level label (a pixel-level concept
is present on an image above a coverage the caller decides). The atoms are every concept and
its negation; beam search builds formulas left-deep, each round extending every beam formula
with AND and OR of every atom, and keeps the `beam` formulas of highest AUC (the probability that
an image where the formula holds activates the unit more than one where it does not). As the
reference: the first beam holds the best atoms; a formula must hold on a share of the images
within [min_fraction, max_fraction] and strictly between 0 and 1; formulas up to max_length
atoms; no length penalty.

AUC here comes from the unit's tie-averaged ranks (netunits.methods.stats): one sort per unit,
then one matrix product per round for every candidate formula, where the reference sorts once
per formula.

A formula is a list of (connector, concept index, negated) steps, the first connector None:
[(None, 3, False), ("AND", 7, True)] is `c3 AND NOT c7`.
"""
from __future__ import annotations

from typing import Sequence

import torch

from netunits.methods.causal import concept_class
from netunits.methods.stats import average_ranks

Steps = list  # [(connector or None, concept index, negated), ...]


def formula_string(steps: Steps, names: Sequence[str]) -> str:
    """`(a AND NOT b) OR c`: left-deep, each earlier part of two or more atoms in parentheses."""
    text = ""
    for position, (op, index, negated) in enumerate(steps):
        atom = ("NOT " if negated else "") + names[index]
        if op is None:
            text = atom
        else:
            text = f"({text}) {op} {atom}" if position >= 2 else f"{text} {op} {atom}"
    return text


def invert_classes(steps: Steps | None, names: Sequence[str]) -> set[int]:
    """The classes a formula asserts: `digit_k` atoms that are not negated."""
    found = {concept_class(names[index]) for _, index, negated in steps or [] if not negated}
    return {k for k in found if k is not None}


def formula_labels(steps: Steps, labels: torch.Tensor) -> torch.Tensor:
    """bool images: where the formula holds, given bool images x concepts labels."""
    value = None
    for op, index, negated in steps:
        atom = labels[:, index] ^ negated
        value = atom if op is None else (value & atom if op == "AND" else value | atom)
    return value


def _key(steps: Steps):
    """Formulas of one connector are equal whatever the order of their atoms."""
    ops = {op for op, _, _ in steps[1:]}
    if len(ops) == 1:
        return (ops.pop(), frozenset((index, negated) for _, index, negated in steps))
    return tuple(steps)


def invert_search(values: torch.Tensor, labels: torch.Tensor, beam: int = 5, max_length: int = 3,
                  min_fraction: float = 0.0, max_fraction: float = 0.5,
                  chunk: int = 16) -> list[tuple[Steps | None, float]]:
    """Per unit (values: images x units) the best formula over the concepts (labels: bool images x
    concepts) and its AUC; (None, 0.5) where no atom's share lies within the bounds. Units are
    searched `chunk` at a time, every beam formula of every unit extended in one product."""
    ranks = average_ranks(values)[0].T.contiguous()                               # units x images
    n_images, n_concepts = labels.shape
    present = torch.cat([labels, ~labels], dim=1)                                 # images x 2K atoms
    atom_steps = [(index % n_concepts, index >= n_concepts) for index in range(2 * n_concepts)]
    # rank sums of at most n^2 / 2 half-integers are exact in float32 below 4000 images
    dtype = torch.float32 if n_images < 4000 else torch.float64
    atoms = present.to(dtype)
    atom_count = atoms.sum(0).double()[None]                                      # 1 x 2K
    atom_ranks = (ranks.to(dtype) @ atoms).double()                               # units x 2K

    def within(share):
        return (share > 0) & (share < 1) & (share >= min_fraction) & (share <= max_fraction)

    results = []
    for first in range(0, len(ranks), chunk):
        rank = ranks[first:first + chunk]
        atom_ranks_chunk = atom_ranks[first:first + chunk]
        n1 = atom_count.expand(len(rank), -1)
        pairs = n1 * (n_images - n1)
        auc = torch.where(pairs > 0, (atom_ranks_chunk - n1 * (n1 + 1) / 2) / pairs.clamp_min(1),
                          torch.full_like(pairs, 0.5))
        share = n1 / n_images
        scored = torch.where(within(share), auc, torch.full_like(auc, -1.0))
        beams, seen = [], [set() for _ in range(len(rank))]
        for unit in range(len(rank)):
            order = [i for i in torch.sort(-scored[unit], stable=True).indices[:beam].tolist() if scored[unit, i] >= 0]
            beams.append([([(None, *atom_steps[i])], float(auc[unit, i]), present[:, i],
                           torch.arange(n_concepts) == atom_steps[i][0]) for i in order])
        for _ in range(max_length - 1):
            active = [unit for unit in range(len(rank)) if beams[unit]]
            if not active:
                break
            width = max(len(beams[unit]) for unit in active)
            # every unit's beam formulas (padded to the widest beam) extended by every atom, AND then OR
            holds = torch.zeros(len(active), width, n_images, dtype=torch.bool)
            blocked = torch.ones(len(active), width, n_concepts, dtype=torch.bool)    # padding and used concepts
            for row, unit in enumerate(active):
                for slot, entry in enumerate(beams[unit]):
                    holds[row, slot], blocked[row, slot] = entry[2], entry[3]
            # rank sums and counts of every extension by inclusion-exclusion, without building its labels:
            # AND: sum over (F and A); OR: sum over F + sum over A - sum over (F and A)
            weighted = torch.stack([holds.to(dtype), holds.to(dtype) * rank[active, None, :].to(dtype)], dim=1)
            both = (weighted.view(-1, n_images) @ atoms).view(len(active), 2, width, -1).double()  # count, rank sum
            own = weighted.sum(3).double()[:, :, :, None]                                     # F alone
            alone = torch.stack([atom_count.expand(len(active), -1), atom_ranks_chunk[active]], dim=1)[:, :, None, :]
            either = own + alone - both
            n1 = torch.cat([both[:, 0], either[:, 0]], dim=1).flatten(1)                      # AND rows, then OR
            rank_sum = torch.cat([both[:, 1], either[:, 1]], dim=1).flatten(1)
            pairs = n1 * (n_images - n1)
            auc = torch.where(pairs > 0, (rank_sum - n1 * (n1 + 1) / 2) / pairs.clamp_min(1), torch.full_like(n1, 0.5))
            share = n1 / n_images
            blocked = blocked.repeat(1, 2, 2)                                      # both connectors, both signs
            scored = torch.where(within(share) & ~blocked.flatten(1), auc, torch.full_like(auc, -1.0))
            order = torch.sort(-scored, dim=1, stable=True).indices[:, :4 * beam].tolist()
            values_sorted = scored.gather(1, torch.tensor(order)).tolist()
            for row, unit in enumerate(active):
                kept, new = beams[unit], []
                # only the best few can enter the beam; repeats (one formula in another order) drop out
                for position, value in zip(order[row], values_sorted[row]):
                    if value < 0 or len(new) >= beam:
                        break
                    slot, i = divmod(position, 2 * n_concepts)
                    base = kept[slot % width]
                    extended = base[0] + [("AND" if slot < width else "OR", *atom_steps[i])]
                    key = _key(extended)
                    if key in seen[unit]:
                        continue
                    seen[unit].add(key)
                    holds_new = base[2] & present[:, i] if slot < width else base[2] | present[:, i]
                    new.append((extended, value, holds_new,
                                base[3] | (torch.arange(n_concepts) == atom_steps[i][0])))
                beams[unit] = sorted(kept + new, key=lambda entry: -entry[1])[:beam]   # stable: earlier first
        results.extend((entries[0][0], entries[0][1]) if entries else (None, 0.5) for entries in beams)
    return results
