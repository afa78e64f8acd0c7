"""The counts compositional explanations' beam search needs (netunits.methods.compose_search), from
concept masks kept only where a concept is present on an image: Broden's 63,305 images carry
about ten of its 1,197 concepts each, so a mask per (concept, image) is a hundred times the data.

Every count is a sum over images of popcounts of bit-packed masks (the layout of
netunits.methods.bitmasks.pack). A mask is held as (image, bits) pairs where it is not empty;
a formula's mask is built, on the images where it can be non-empty, from its primitives' pairs.
What a search asks of a formula F and every primitive B at once:

  |F and B|        the popcounts of F's bits against every present mask on F's images, by
                   inclusion-exclusion from smaller formulas where F is an OR or AND NOT (their
                   AND parts lie on few images), memoised per formula;
  |U and F and B|  the same against the unit's own mask U, on the images where U fires.

The counts are whole numbers, so they equal the dense search's (compose_search.Primitives) to the
bit, and the search finds the same formulas. This path covers the connectors OR, AND, AND NOT and
WITH without expanded primitives; the spatial connectors (CLOSE TO, CLOSE) and expansion use the
dense masks.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from netunits.data.probe import SparsePackedMasks
from netunits.errors import PipelineError
from netunits.methods.bitmasks import pack
from netunits.methods.formula import Formula
from netunits.methods.formula_masks import downsample

SPARSE_CONNECTORS = ("OR", "AND", "AND NOT", "WITH")
PAIR_CHUNK = 1 << 15          # (image, concept) pairs per popcount block: 50 MB of 112 px masks
MEMO_LIMIT = 4096             # compound formulas whose counts are remembered (primitives' always are)


def sparse_search_applies(connectors: Sequence[str], expand_primitives: bool) -> bool:
    """Whether SparsePrimitives covers these search settings."""
    return not expand_primitives and all(op in SPARSE_CONNECTORS for op in connectors)


def concept_pairs(probe: Mapping, resolution: str, size: int, min_share: float,
                  chunk: int = 4096) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(names, image, primitive, bits uint64 pairs x words) of every non-empty concept mask of the
    probe set, sorted by image then primitive: pixel-level masks (downsampled to the layer's grid
    at resolution layer), image-level labels as whole-image masks; as concept_masks gives them."""
    concepts, mask_size, n = probe["concepts"], probe["mask_size"], len(probe["images"])
    n_pixel = sum(c["level"] == "pixel" for c in concepts)
    stored = probe["pixel_masks"]
    if not isinstance(stored, SparsePackedMasks):
        stored = SparsePackedMasks.from_dense(torch.as_tensor(stored))
    words = -(-size * size // 64)
    images, prims, bits = [], [], []
    for start in range(0, len(stored.image), chunk):
        raw = stored.bits[start:start + chunk].numpy()
        masks = torch.from_numpy(np.unpackbits(raw, axis=1, count=mask_size * mask_size).astype(bool))
        masks = masks.view(-1, mask_size, mask_size)
        if resolution == "layer":
            masks = downsample(masks, size, min_share)
        packed = pack(masks)
        keep = packed.any(axis=1)
        images.append(stored.image[start:start + chunk].numpy()[keep])
        prims.append(stored.concept[start:start + chunk].numpy()[keep])
        bits.append(packed[keep])
    labels = torch.as_tensor(probe["image_labels"]).numpy()
    image, label = np.nonzero(labels)
    if len(image):
        full = pack(torch.ones(1, size, size, dtype=torch.bool))
        images.append(image)
        prims.append(label + n_pixel)
        bits.append(np.repeat(full, len(image), axis=0))
    image = np.concatenate(images).astype(np.int64) if images else np.zeros(0, np.int64)
    prim = np.concatenate(prims).astype(np.int64) if prims else np.zeros(0, np.int64)
    bits = np.concatenate(bits) if bits else np.zeros((0, words), np.uint64)
    order = np.lexsort((prim, image))
    if len(image) and (image.max() >= n):
        raise PipelineError(f"the probe's masks name image {image.max()}, past its {n} images")
    return [c["name"] for c in concepts], image[order], prim[order], np.ascontiguousarray(bits[order])


def _ranges(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices, owner): the concatenation of range(starts[k], stops[k]) and each index's k."""
    counts = stops - starts
    owner = np.repeat(np.arange(len(starts)), counts)
    offsets = np.cumsum(counts) - counts
    return np.arange(counts.sum()) - np.repeat(offsets, counts) + np.repeat(starts, counts), owner


class SparseUnit:
    """One unit's mask: the images where it fires (sorted), its bits there and its area on each."""

    def __init__(self, primitives: "SparsePrimitives", flat_positions: np.ndarray):
        per_image_bits = primitives.words * 64
        image = flat_positions // per_image_bits
        self.images, row = np.unique(image, return_inverse=True)
        position = flat_positions % per_image_bits
        word = row * primitives.words + (position >> 6)
        value = np.left_shift(np.uint64(1), (position & 63).astype(np.uint64))
        bits = np.zeros(len(self.images) * primitives.words, dtype=np.uint64)
        if len(word):
            order = np.argsort(word, kind="stable")
            word, value = word[order], value[order]
            starts = np.flatnonzero(np.r_[True, word[1:] != word[:-1]])
            bits[word[starts]] = np.add.reduceat(value, starts)              # distinct bits: sum is OR
        self.bits = bits.reshape(len(self.images), primitives.words)
        self.image_area = np.bitwise_count(self.bits).sum(1, dtype=np.int64)
        self.area = int(self.image_area.sum())
        self.square = float(self.image_area.astype(np.float64) @ self.image_area)


class SparseFormulaCounts:
    """A formula's own counts: its total area, |F and B| for every primitive B and, for WITH,
    the sum of F's per-image areas over the images where B is present."""

    def __init__(self, primitives: "SparsePrimitives", formula: Formula, connectors: Sequence[str]):
        self.formula = formula
        self.area = primitives.formula_area(formula)
        self.inter = primitives.overlaps(formula)
        if "WITH" in connectors:
            support = primitives.support(formula)
            own = np.bitwise_count(primitives.bits_on(formula, support)).sum(1, dtype=np.int64)
            self.area_with = primitives.presence_sum(support, own)


class SparsePrimitives:
    """Concept masks as (image, bits) pairs where present, with the counts a search asks for.

    pairs: concept_pairs' (names, image, primitive, bits); n_images: the probe's images; size:
    the masks' side (positions per image size^2, `words` uint64 words each).
    """

    def __init__(self, names: list[str], image: np.ndarray, prim: np.ndarray, bits: np.ndarray, n_images: int,
                 size: int):
        self.names, self.size, self.n_images = list(names), size, int(n_images)
        self.words = -(-size * size // 64)
        self.index = {name: i for i, name in enumerate(self.names)}
        n = len(self.names)
        self.pair_image, self.pair_prim, self.pair_bits = image, prim, bits
        self.pair_key = image * n + prim
        self.image_start = np.searchsorted(image, np.arange(self.n_images + 1))
        self.pair_area = np.bitwise_count(bits).sum(1, dtype=np.int64) if len(bits) else np.zeros(0, np.int64)
        self.area = np.bincount(prim, weights=self.pair_area, minlength=n).astype(np.int64)
        by_prim = np.argsort(prim, kind="stable")                               # each primitive's pairs by image
        self.prim_images = np.split(image[by_prim], np.searchsorted(prim[by_prim], np.arange(1, n)))
        self._overlaps: dict = {}
        self._areas: dict = {}

    # ----------------------------------------------------------------------------- masks
    def support(self, formula: Formula) -> np.ndarray:
        """The sorted images on which the formula can be non-empty."""
        if isinstance(formula, str):
            return self.prim_images[self.index[formula]]
        op, left, right = formula
        if op == "OR":
            return np.union1d(self.support(left), self.support(right))
        if op in ("AND", "WITH"):
            return np.intersect1d(self.support(left), self.support(right), assume_unique=True)
        if op == "AND NOT":
            return self.support(left)
        raise PipelineError(f"connector {op!r} has no sparse counts; it needs the dense masks")

    def primitive_on(self, j: int, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bits on those images, zero where primitive j is absent; whether it is present)."""
        key = images * len(self.names) + j
        at = np.minimum(np.searchsorted(self.pair_key, key), max(0, len(self.pair_key) - 1))
        hit = self.pair_key[at] == key if len(self.pair_key) else np.zeros(len(images), bool)
        out = np.zeros((len(images), self.words), dtype=np.uint64)
        out[hit] = self.pair_bits[at[hit]]
        return out, hit

    def bits_on(self, formula: Formula, images: np.ndarray) -> np.ndarray:
        """The formula's bits on the given images (uint64 len(images) x words)."""
        if isinstance(formula, str):
            return self.primitive_on(self.index[formula], images)[0]
        op, left, right = formula
        a = self.bits_on(left, images)
        b, present = self.primitive_on(self.index[right], images)
        if op == "OR":
            return a | b
        if op == "AND":
            return a & b
        if op == "AND NOT":
            return a & ~b
        if op == "WITH":
            return np.where(present[:, None], a, np.uint64(0))
        raise PipelineError(f"connector {op!r} has no sparse counts; it needs the dense masks")

    # ----------------------------------------------------------------------------- counts
    def _pair_blocks(self, images: np.ndarray):
        """(pairs, owner) blocks of the pairs on `images`, owner the position in `images`."""
        starts, stops = self.image_start[images], self.image_start[images + 1]
        ends = np.cumsum(stops - starts)
        first = 0
        while first < len(images):
            last = int(np.searchsorted(ends, (ends[first - 1] if first else 0) + PAIR_CHUNK, side="right"))
            last = max(last, first + 1)
            pairs, owner = _ranges(starts[first:last], stops[first:last])
            yield pairs, owner + first
            first = last

    def overlap(self, bits: np.ndarray, images: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Per primitive B: sum over the images of weight_i |bits_i and B_i| (float64, whole numbers)."""
        total = np.zeros(len(self.names))
        for pairs, owner in self._pair_blocks(images):
            counts = np.bitwise_count(bits[owner] & self.pair_bits[pairs]).sum(1, dtype=np.int64)
            if weights is not None:
                counts = counts * weights[owner]
            total += np.bincount(self.pair_prim[pairs], weights=counts, minlength=len(self.names))
        return total

    def presence_sum(self, images: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Per primitive B: the sum of values_i over the images where B is present."""
        total = np.zeros(len(self.names))
        for pairs, owner in self._pair_blocks(images):
            total += np.bincount(self.pair_prim[pairs], weights=values[owner], minlength=len(self.names))
        return total

    def overlaps(self, formula: Formula) -> np.ndarray:
        """|F and B| for every primitive B. An OR or AND NOT formula's come from its left part's,
        its right primitive's and their AND's (inclusion-exclusion), whose images are few."""
        if formula in self._overlaps:
            return self._overlaps[formula]
        if isinstance(formula, str) or formula[0] in ("AND", "WITH"):
            support = self.support(formula)
            found = self.overlap(self.bits_on(formula, support), support)
        else:
            op, left, right = formula
            both = self.overlaps(("AND", left, right))
            found = (self.overlaps(left) + self.overlaps(right) - both if op == "OR"
                     else self.overlaps(left) - both)
        if not isinstance(formula, str) and len(self._overlaps) > MEMO_LIMIT + len(self.names):
            self._overlaps = {key: value for key, value in self._overlaps.items() if isinstance(key, str)}
        self._overlaps[formula] = found
        return found

    def formula_area(self, formula: Formula) -> int:
        """|F|, from its parts' counts as overlaps() does."""
        if isinstance(formula, str):
            return int(self.area[self.index[formula]])
        if formula not in self._areas:
            op, left, right = formula
            j = self.index[right]
            if op == "WITH":
                support = self.support(formula)
                area = int(np.bitwise_count(self.bits_on(formula, support)).sum(dtype=np.int64))
            else:
                both = int(self.overlaps(left)[j])
                area = {"OR": self.formula_area(left) + int(self.area[j]) - both, "AND": both,
                        "AND NOT": self.formula_area(left) - both}[op]
            if len(self._areas) > MEMO_LIMIT:
                self._areas.clear()
            self._areas[formula] = area
        return self._areas[formula]

    # ----------------------------------------------------------------------------- the search's protocol
    def unit_view(self, flat_positions: np.ndarray) -> SparseUnit:
        return SparseUnit(self, flat_positions)

    def single_counts(self, view: SparseUnit) -> tuple[np.ndarray, np.ndarray]:
        """(|U and B|, sum_i |U_i| |B_i|) for every primitive B."""
        inter = self.overlap(view.bits, view.images)
        dot = np.zeros(len(self.names))
        for pairs, owner in self._pair_blocks(view.images):
            dot += np.bincount(self.pair_prim[pairs], weights=self.pair_area[pairs] * view.image_area[owner],
                               minlength=len(self.names))
        return inter, dot

    def formula_counts(self, formula: Formula, connectors: Sequence[str]) -> SparseFormulaCounts:
        return SparseFormulaCounts(self, formula, connectors)

    def extensions(self, view: SparseUnit, counts: SparseFormulaCounts, single_inter: np.ndarray,
                   single_dot: np.ndarray, keep: list[int], connectors: Sequence[str],
                   with_dot: bool) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """{connector: (|U and F'|, |F'|, sum_i |U_i| |F'_i|) per candidate} for F' = F <op> B,
        B in keep; the last only where with_dot (imRoU), zeros otherwise."""
        formula_here = self.bits_on(counts.formula, view.images)        # F on the unit's images
        unit_and_f = formula_here & view.bits
        unit_in_f = np.bitwise_count(unit_and_f).sum(1, dtype=np.int64)
        f_here = np.bitwise_count(formula_here).sum(1, dtype=np.int64)
        own_inter, own_area = float(unit_in_f.sum()), counts.area
        own_dot = float(f_here.astype(np.float64) @ view.image_area)
        both = self.overlap(unit_and_f, view.images)[keep]
        inter_fb = counts.inter[keep]
        zeros = np.zeros(len(keep))
        dot_fb = self.overlap(formula_here, view.images, view.image_area)[keep] if with_dot else zeros
        dot_b = single_dot[keep] if with_dot else zeros
        area_b, inter_b = self.area[keep].astype(np.float64), single_inter[keep]
        found = {}
        for op in connectors:
            if op == "OR":
                found[op] = (own_inter + inter_b - both, own_area + area_b - inter_fb, own_dot + dot_b - dot_fb)
            elif op == "AND":
                found[op] = (both, inter_fb, dot_fb)
            elif op == "AND NOT":
                found[op] = (own_inter - both, own_area - inter_fb, own_dot - dot_fb)
            elif op == "WITH":
                dot_with = (self.presence_sum(view.images, f_here * view.image_area)[keep] if with_dot else zeros)
                found[op] = (self.presence_sum(view.images, unit_in_f)[keep], counts.area_with[keep], dot_with)
            else:
                raise PipelineError(f"connector {op!r} has no sparse counts; it needs the dense masks")
        return found


def sparse_primitives(probe: Mapping, resolution: str, size: int, min_share: float) -> SparsePrimitives:
    """SparsePrimitives of a probe set's concepts, as concept_masks defines their masks."""
    names, image, prim, bits = concept_pairs(probe, resolution, size, min_share)
    return SparsePrimitives(names, image, prim, bits, len(probe["images"]), size)
