"""Compositional explanations: for each unit, the logical formula over concepts whose mask best
matches the unit's mask, found by beam search (Mu & Andreas 2020, code jayelm/compexp), with
Harth's extensions (rafaelharth/indres): spatial connectors, expanded primitives, the imRoU score
and a length penalty. The grammar is netunits.methods.formula's, the masks' definitions
netunits.methods.formula_masks'.

Beam search builds formulas left-deep, one primitive at a time: ((A OR B) AND NOT C).

The search never builds a mask per (unit, formula) pair: a unit's score needs only counts,
  |U and F|  from the primitives' bits at the unit's own positions (a unit fires on a small share
             of positions), and
  |F|, and the per-image areas imRoU needs, from a formula's bit-packed mask against every
             primitive's (popcount, netunits.methods.bitmasks), computed once per distinct
             formula in any unit's beam,
and inclusion-exclusion turns those into the counts of every extension (F op B) at once.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from netunits.errors import PipelineError
from netunits.methods.bitmasks import gather, pack, popcount_per_image, unpack
from netunits.methods.formula import CONNECTORS, EXPANDED, Formula, canonical, formula_length, leaves
from netunits.methods.formula_masks import expand, near, score_from_counts

SCORES = ("iou", "imrou")


class Primitives:
    """The concept masks a search combines, bit-packed, with what every formula's counts need.

    masks: an iterable of (name, bool images x S x S); grid: the layer's cells per side (for
    CLOSE TO and expansion); expand: add `<name>-X` for every primitive that is not the same
    on every image position (image-level concepts are); connectors: those the search uses.
    """

    def __init__(self, masks: Iterable[tuple[str, torch.Tensor]], grid: int, connectors: Sequence[str],
                 expand_primitives: bool = False):
        self.names, bits, near_bits = [], [], []
        self.grid = grid
        self.with_near = "CLOSE TO" in connectors or "CLOSE" in connectors
        for name, mask in masks:
            self.size = mask.shape[-1]
            versions = [(name, mask)]
            if expand_primitives and not bool((mask.flatten(1).all(1) | ~mask.flatten(1).any(1)).all()):
                versions.append((name + EXPANDED, expand(mask, max(1, round(self.size / grid)))))
            for version_name, version in versions:
                self.names.append(version_name)
                bits.append(pack(version))
                if self.with_near:
                    near_bits.append(pack(near(version, grid)))
        self.bits = np.stack(bits)                                    # primitives x images x words
        self.near_bits = np.stack(near_bits) if self.with_near else None
        self.image_area = popcount_per_image(self.bits)               # primitives x images
        self.area = self.image_area.sum(1)
        self.presence = self.image_area > 0
        self.n_images, self.words = self.bits.shape[1:]
        self.index = {name: i for i, name in enumerate(self.names)}

    def formula_bits(self, formula: Formula) -> np.ndarray:
        """The packed mask of a left-deep formula whose right operands are primitives."""
        if isinstance(formula, str):
            return self.bits[self.index[formula]]
        op, left, right = formula
        a, j = self.formula_bits(left), self.index[right]
        if op == "OR":
            return a | self.bits[j]
        if op == "AND":
            return a & self.bits[j]
        if op == "AND NOT":
            return a & ~self.bits[j]
        if op == "WITH":
            return np.where(self.presence[j][:, None], a, np.uint64(0))
        if op == "CLOSE TO":
            return a & self.near_bits[j]
        if op == "CLOSE":
            return (a & self.near_bits[j]) | (self.bits[j] & self.near_of(a))
        raise PipelineError(f"unknown connector {op!r}; allowed: {', '.join(CONNECTORS)}")

    def near_of(self, bits: np.ndarray) -> np.ndarray:
        return pack(near(unpack(bits, self.size), self.grid))

    # the search's protocol (compose_sparse.SparsePrimitives answers the same calls)
    def unit_view(self, flat_positions: np.ndarray) -> "UnitView":
        return UnitView(self, flat_positions)

    def single_counts(self, view: "UnitView") -> tuple[np.ndarray, np.ndarray]:
        """(|U and B|, sum_i |U_i| |B_i|) for every primitive B."""
        return view.values.sum(1, dtype=np.int64), self.image_area @ view.per_image

    def formula_counts(self, formula: Formula, connectors: Sequence[str]) -> "FormulaCounts":
        return FormulaCounts(self, formula, connectors)

    def extensions(self, view: "UnitView", counts: "FormulaCounts", single_inter: np.ndarray,
                   single_dot: np.ndarray, keep: list[int], connectors: Sequence[str],
                   with_dot: bool) -> dict[str, tuple]:
        return extension_counts(self, view, counts, keep, connectors)


class FormulaCounts:
    """A formula's counts against every primitive B, per image (primitives x images): its own
    area, |F and B|, and for the spatial connectors |F and near(B)| and |B and near(F)|."""

    def __init__(self, primitives: Primitives, formula: Formula, connectors: Sequence[str]):
        bits = primitives.formula_bits(formula)
        self.bits = bits
        self.image_area = popcount_per_image(bits)
        self.area = int(self.image_area.sum())
        self.inter = popcount_per_image(primitives.bits & bits)
        if "CLOSE TO" in connectors or "CLOSE" in connectors:
            self.inter_near_b = popcount_per_image(primitives.near_bits & bits)
        if "CLOSE" in connectors:
            self.near_bits = primitives.near_of(bits)
            self.inter_near_f = popcount_per_image(primitives.bits & self.near_bits)


class UnitView:
    """One unit's mask as its flat positions, with every primitive's bits there."""

    def __init__(self, primitives: Primitives, flat_positions: np.ndarray):
        self.positions = flat_positions
        self.image = flat_positions // (primitives.words * 64)
        self.per_image = np.bincount(self.image, minlength=primitives.n_images).astype(np.float64)
        self.area = len(flat_positions)
        self.square = float(self.per_image @ self.per_image)
        # bool, 1 byte per primitive and position; float32 only while one formula is extended
        # (counts stay exact below 2^24 positions per unit)
        self.values = gather(primitives.bits, flat_positions)                           # primitives x positions
        self.near_values = gather(primitives.near_bits, flat_positions) if primitives.with_near else None


def extensions(primitives, view, counts, formula: Formula, candidates: Iterable[int], connectors: Sequence[str],
               single: tuple[np.ndarray, np.ndarray] | None = None, with_dot: bool = True) -> list[tuple]:
    """(formula, |U and F'|, |F'|, sum_i |U_i| |F'_i|) for every F' = formula <connector> B, B a
    candidate not already in the formula, by inclusion-exclusion from the counts. primitives:
    Primitives or compose_sparse.SparsePrimitives; single: its single_counts(view)."""
    used = set(leaves(formula))
    keep = [j for j in candidates if primitives.names[j] not in used]
    if not keep:
        return []
    single = primitives.single_counts(view) if single is None else single
    found = primitives.extensions(view, counts, single[0], single[1], keep, connectors, with_dot)
    rows = []
    for i, j in enumerate(keep):
        for op in connectors:
            inter, area, dot = found[op]
            rows.append(((op, formula, primitives.names[j]), inter[i], area[i], dot[i]))
    return rows


def extension_counts(primitives: Primitives, view: UnitView, counts: FormulaCounts, keep: list[int],
                     connectors: Sequence[str]) -> dict[str, tuple]:
    """{connector: (|U and F'|, |F'|, sum_i |U_i| |F'_i|) per primitive of keep}, from the dense masks."""
    b = gather(counts.bits, view.positions).astype(np.float32)     # the formula at the unit's positions
    own_inter, own_area = float(b.sum(dtype=np.float64)), counts.area
    own_dot = counts.image_area @ view.per_image
    values = view.values[keep].astype(np.float32)
    both = values @ b                                              # |U and F and B|
    single_inter = values.sum(1, dtype=np.float64)
    inter_fb = counts.inter[keep]                                  # |F and B| per image
    area_fb, dot_fb = inter_fb.sum(1), inter_fb @ view.per_image
    area_b, dot_b = primitives.area[keep], primitives.image_area[keep] @ view.per_image
    found = {}
    for op in connectors:
        if op == "OR":
            found[op] = (own_inter + single_inter - both, own_area + area_b - area_fb, own_dot + dot_b - dot_fb)
        elif op == "AND":
            found[op] = (both, area_fb, dot_fb)
        elif op == "AND NOT":
            found[op] = (own_inter - both, own_area - area_fb, own_dot - dot_fb)
        elif op == "WITH":
            present = primitives.presence[keep].astype(np.float64)             # B x images
            unit_in_f = np.bincount(view.image, weights=b.astype(np.float64), minlength=primitives.n_images)
            found[op] = (present @ unit_in_f, present @ counts.image_area,
                         present @ (counts.image_area * view.per_image))
        elif op == "CLOSE TO":
            near_b = counts.inter_near_b[keep]
            found[op] = (view.near_values[keep].astype(np.float32) @ b, near_b.sum(1), near_b @ view.per_image)
        elif op == "CLOSE":
            # (F and near B) or (B and near F): the two overlap in F and B exactly, as every
            # mask lies within its own neighbourhood
            near_f_at_unit = gather(counts.near_bits, view.positions).astype(np.float32)
            per_image = counts.inter_near_b[keep] + counts.inter_near_f[keep] - inter_fb
            found[op] = (view.near_values[keep].astype(np.float32) @ b + values @ near_f_at_unit - both,
                         per_image.sum(1),
                         per_image @ view.per_image)
    return found


def search_units(primitives: Primitives, unit_positions: Sequence[np.ndarray],
                 connectors: Sequence[str] = ("OR", "AND", "AND NOT"), beam: int = 5, max_length: int = 3,
                 candidates: int = 50, score: str = "iou", r: float = 0.75, penalty: float = 0.0,
                 progress: Callable = lambda items, desc: items) -> list[dict]:
    """Beam search per unit. unit_positions: one int64 array of flat positions per unit.

    The beam starts as the unit's `beam` best primitives; each of max_length - 1 rounds extends
    every beam formula by each of the unit's `candidates` best primitives with every connector,
    merges the results with the beam and keeps the best `beam` (formulas equal up to the order
    of commutative operands count once; among equal scores the earlier stays: the beam, then
    the extensions of its formulas in beam order). A unit's result does not depend on the
    other units searched with it. Returns one dict
    per unit: formula, score, iou, length, single (the best primitive), single_score,
    single_iou, best_by_length (the best score found at each length) and evaluated (formulas scored).
    """
    cells = primitives.size * primitives.size
    options = dict(score=score, r=r, cells=cells, penalty=penalty)
    views, singles, results, beams = [], [], [], []
    for positions in unit_positions:
        view = primitives.unit_view(np.asarray(positions, dtype=np.int64))
        views.append(view)
        inter, dot = primitives.single_counts(view)
        singles.append((inter, dot))
        scores = score_from_counts(inter, primitives.area, view.area, dot, 1, unit_square=view.square, **options)
        ious = score_from_counts(inter, primitives.area, view.area, dot, 1)
        order = np.argsort(-scores, kind="stable")
        best = int(order[0])
        if not view.area:                   # a unit that never fires has no mask to explain
            results.append({"single": None, "single_score": 0.0, "single_iou": 0.0, "candidates": [],
                            "best_by_length": {}, "evaluated": 0})
            beams.append([])
            continue
        results.append({"single": primitives.names[best], "single_score": float(scores[best]),
                        "single_iou": float(ious[best]), "candidates": [int(j) for j in order[:candidates]],
                        "best_by_length": {1: float(scores[best])}, "evaluated": len(scores)})
        beams.append([(float(scores[j]), float(ious[j]), primitives.names[j], canonical(primitives.names[j]))
                      for j in order[:beam]])
    for length in range(2, max_length + 1):
        # a formula's counts are computed once for every unit whose beam holds it (or a commutative
        # variant: the same mask); each unit extends its own formulas, in its own beam's order, so
        # its answer, ties included, does not depend on which units are searched with it
        by_formula = {}
        for unit, entries in enumerate(beams):
            for entry in entries:
                by_formula.setdefault(entry[3], (entry[2], []))[1].append((unit, entry[2]))
        scored = [{} for _ in beams]
        for key, (formula, members) in progress(list(by_formula.items()), f"length {length}"):
            counts = primitives.formula_counts(formula, connectors)
            for unit, own in members:
                view = views[unit]
                rows = extensions(primitives, view, counts, own, results[unit]["candidates"], connectors,
                                  singles[unit], score != "iou")
                if not rows:
                    continue
                inter, area, dot = (np.array([row[k] for row in rows]) for k in (1, 2, 3))
                lengths = np.array([formula_length(row[0]) for row in rows])
                scores = score_from_counts(inter, area, view.area, dot, lengths, unit_square=view.square, **options)
                ious = score_from_counts(inter, area, view.area, dot, lengths)
                scored[unit][key] = [(float(s), float(i), row[0], None) for s, i, row in zip(scores, ious, rows)]
                results[unit]["evaluated"] += len(rows)
        found = [[row for entry in beams[unit] for row in scored[unit].get(entry[3], [])] for unit in range(len(beams))]
        for unit, new in enumerate(found):
            if not new:
                continue
            merged, seen = [], set()
            for entry in beams[unit] + new:
                key = entry[3] or canonical(entry[2])
                if key not in seen:
                    seen.add(key)
                    merged.append((entry[0], entry[1], entry[2], key))
            merged.sort(key=lambda e: -e[0])                         # stable: earlier first among equals
            beams[unit] = merged[:beam]
            best_by_length = results[unit]["best_by_length"]
            for entry in merged:
                n = formula_length(entry[2])
                best_by_length[n] = max(best_by_length.get(n, -np.inf), entry[0])
    for unit, entries in enumerate(beams):
        result = results[unit]
        del result["candidates"]
        if entries:
            result.update(formula=entries[0][2], score=entries[0][0], iou=entries[0][1],
                          length=formula_length(entries[0][2]))
        else:
            result.update(formula=None, score=0.0, iou=0.0, length=0)
    return results
