"""Compositional explanations: for each unit, the logical formula over concepts whose mask best
matches the unit's mask, found by beam search (Mu & Andreas 2020, code jayelm/compexp), with
Harth's extensions (rafaelharth/indres): spatial connectors, expanded primitives, the imRoU score
and a length penalty.

A formula is a primitive's name (a leaf) or a tuple (connector, left, right). Beam search builds
them left-deep, one primitive at a time: ((A OR B) AND NOT C). Connectors, with A's mask on
the left and B's on the right:
  OR, AND, AND NOT   set operations per position;
  WITH               A's mask on the images where B is present anywhere, nothing elsewhere;
  CLOSE TO           A's positions whose cell has a cell of B within its neighbourhood: the
                     5 x 5 cells without the corners, on the layer's grid of cells;
  CLOSE              (A CLOSE TO B) OR (B CLOSE TO A).
An expanded primitive `<name>-X` adds the positions with at least 3 of their 8 neighbours set
(neighbours one cell away: `step` positions).

The fast path never builds a mask per (unit, formula) pair: a unit's score needs only counts,
  |U and F|  from the primitives' bits at the unit's own positions (a unit fires on a small share
             of positions), and
  |F|, and the per-image areas imRoU needs, from a formula's bit-packed mask against every
             primitive's (popcount), computed once per distinct formula in any unit's beam,
and inclusion-exclusion turns those into the counts of every extension (F op B) at once.
`evaluate` and `plain_score` are the straightforward definitions on dense masks, which the tests
and the benchmark compare against.
"""
from __future__ import annotations

import re
import sys

import numpy as np
import torch
import torch.nn.functional as F

from netunits.activations import iterate_activations
from netunits.data.probe import unpack_masks
from netunits.errors import PipelineError

CONNECTORS = ("OR", "AND", "AND NOT", "WITH", "CLOSE TO", "CLOSE")
COMMUTATIVE = ("OR", "AND", "CLOSE")
EXPANDED = "-X"
KEYWORDS = {"OR", "AND", "NOT", "WITH", "CLOSE", "TO"}
SCORES = ("iou", "imrou")
BARE_NAME = re.compile(r"[\w.\-/']+")
TOKEN = re.compile(r'\s*(?:(\()|(\))|"([^"]+)"|([\w.\-/\']+)|(\S))')


# --------------------------------------------------------------------------------------------
# formulas as text
# --------------------------------------------------------------------------------------------
def leaves(formula):
    if isinstance(formula, str):
        return [formula]
    return leaves(formula[1]) + leaves(formula[2])


def formula_length(formula):
    """The number of leaves (compexp's length)."""
    return len(leaves(formula))


def _name_text(name):
    return name if BARE_NAME.fullmatch(name) and name.upper() not in KEYWORDS else f'"{name}"'


def to_string(formula, outer=True):
    """`(hole OR endpoint) AND NOT thick_stroke`: nested formulas in parentheses; names that are
    not plain words (spaces, keywords) in double quotes."""
    if isinstance(formula, str):
        return _name_text(formula)
    text = f"{to_string(formula[1], False)} {formula[0]} {to_string(formula[2], False)}"
    return text if outer else f"({text})"


def parse(text):
    """The formula a string of to_string's syntax names; connectors of one level read left to
    right: `A OR B AND C` is `(A OR B) AND C`."""
    tokens = []
    for match in TOKEN.finditer(text):
        opening, closing, quoted, word, other = match.groups()
        if other:
            raise PipelineError(f"formula {text!r}: unexpected {other!r}")
        if opening or closing:
            tokens.append(opening or closing)
        elif quoted:
            tokens.append(("name", quoted))
        elif word.upper() in KEYWORDS:
            tokens.append(word.upper())
        else:
            tokens.append(("name", word))
    position = 0

    def peek():
        return tokens[position] if position < len(tokens) else None

    def take():
        nonlocal position
        position += 1
        return tokens[position - 1]

    def term():
        token = take() if peek() is not None else None
        if token == "(":
            inner = expression()
            if peek() != ")":
                raise PipelineError(f"formula {text!r}: a '(' is not closed")
            take()
            return inner
        if isinstance(token, tuple):
            return token[1]
        raise PipelineError(f"formula {text!r}: expected a concept name or '(' but found {token!r}")

    def connector():
        word = take()
        if word == "AND" and peek() == "NOT":
            take()
            return "AND NOT"
        if word == "CLOSE" and peek() == "TO":
            take()
            return "CLOSE TO"
        if word in ("OR", "AND", "WITH", "CLOSE"):
            return word
        raise PipelineError(f"formula {text!r}: expected a connector ({', '.join(CONNECTORS)}) but found {word!r}")

    def expression():
        left = term()
        while peek() not in (None, ")"):
            left = (connector(), left, term())
        return left

    result = expression()
    if peek() is not None:
        raise PipelineError(f"formula {text!r}: unexpected {peek()!r}")
    return result


def canonical(formula):
    """A key equal for formulas that differ only in the order of commutative operands:
    (A OR B) OR C, (A OR C) OR B and (B OR A) OR C share one."""
    if isinstance(formula, str):
        return _name_text(formula)
    op, left, right = formula
    if op in ("OR", "AND"):
        parts = []
        for side in (left, right):
            if not isinstance(side, str) and side[0] == op:
                parts.extend(canonical(side)[1:-1].split(f" {op} "))
            else:
                parts.append(canonical(side))
        return "(" + f" {op} ".join(sorted(parts)) + ")"
    sides = [canonical(left), canonical(right)]
    if op in COMMUTATIVE:
        sides.sort()
    return f"({sides[0]} {op} {sides[1]})"


# --------------------------------------------------------------------------------------------
# masks on dense tensors: bool images x S x S
# --------------------------------------------------------------------------------------------
def close_kernel():
    kernel = torch.ones(5, 5)
    kernel[0, 0] = kernel[0, 4] = kernel[4, 0] = kernel[4, 4] = 0
    return kernel


def near(masks, grid):
    """The positions whose cell (of a grid x grid partition of the S x S positions, nearest
    cell) has, within the 21-cell neighbourhood (5 x 5 without corners), a cell holding any
    position of `masks`."""
    size = masks.shape[-1]
    occupied = F.adaptive_max_pool2d(masks.float()[:, None], grid)
    reach = F.conv2d(occupied, close_kernel()[None, None], padding=2) > 0
    if size != grid:
        reach = F.interpolate(reach.float(), size=(size, size), mode="nearest") > 0
    return reach[:, 0]


def expand(masks, step=1):
    """Positions set, or with at least 3 of the 8 positions `step` away (one cell) set."""
    padded = F.pad(masks.float()[:, None], (step, step, step, step))[:, 0]
    size = masks.shape[-1]
    count = torch.zeros(masks.shape, dtype=torch.float32)
    for dy in (-step, 0, step):
        for dx in (-step, 0, step):
            if dy or dx:
                count += padded[:, step + dy:step + dy + size, step + dx:step + dx + size]
    return masks | (count >= 3)


def downsample(masks, grid, min_share):
    """indres' concept masks at the layer's resolution: a cell is set when the mask covers at
    least min_share of it (indres: 100 of 256 pixels)."""
    return F.adaptive_avg_pool2d(masks.float()[:, None], grid)[:, 0] >= min_share - 1e-9


def concept_masks(probe, resolution, size, min_share):
    """(name, bool images x size x size) per concept: pixel-level masks from the probe (downsampled
    to the layer's grid at resolution layer), image-level labels as whole-image masks."""
    n, mask_size = len(probe["images"]), probe["mask_size"]
    n_pixel = sum(c["level"] == "pixel" for c in probe["concepts"])
    for index, concept in enumerate(probe["concepts"]):
        if index < n_pixel:
            mask = unpack_masks(probe["pixel_masks"][:, index:index + 1], mask_size)[:, 0].view(n, mask_size, mask_size)
            yield concept["name"], downsample(mask, size, min_share) if resolution == "layer" else mask
        else:
            label = probe["image_labels"][:, index - n_pixel]
            yield concept["name"], label[:, None, None].expand(n, size, size).clone()


def formula_mask_on(probe, indices, formula, resolution, size, min_share, grid):
    """A formula's dense mask (bool k x size x size) on some probe images, from their concept masks
    as the search saw them (expanded primitives included)."""
    subset = {"images": probe["images"][indices], "mask_size": probe["mask_size"], "concepts": probe["concepts"],
              "pixel_masks": probe["pixel_masks"][indices], "image_labels": probe["image_labels"][indices]}
    masks = dict(concept_masks(subset, resolution, size, min_share))
    for name in leaves(formula):
        if name not in masks and name.endswith(EXPANDED):
            masks[name] = expand(masks[name[:-len(EXPANDED)]], max(1, round(size / grid)))
    return evaluate(formula, masks, grid)


def evaluate(formula, masks, grid):
    """The dense mask of a formula: masks maps each primitive's name to bool images x S x S."""
    if isinstance(formula, str):
        return masks[formula]
    op, left, right = formula
    a, b = evaluate(left, masks, grid), evaluate(right, masks, grid)
    if op == "OR":
        return a | b
    if op == "AND":
        return a & b
    if op == "AND NOT":
        return a & ~b
    if op == "WITH":
        return a & b.flatten(1).any(1)[:, None, None]
    if op == "CLOSE TO":
        return a & near(b, grid)
    if op == "CLOSE":
        return (a & near(b, grid)) | (b & near(a, grid))
    raise PipelineError(f"unknown connector {op!r}; allowed: {', '.join(CONNECTORS)}")


def score_from_counts(inter, area, unit_area, dot, length, score="iou", r=0.75, cells=1, unit_square=0.0,
                      penalty=0.0):
    """The score of formulas from counts (numpy arrays or numbers):
    iou    |U and F| / |U or F|;
    imrou  (|U and F| - r / cells * sum_i |U_i| |F_i|) / |U or F|, divided by the unit's own
           score (|U| - r / cells * sum_i |U_i|^2) / |U|   (dot = sum_i |U_i| |F_i|,
           unit_square = sum_i |U_i|^2, cells = positions per image);
    then times (1 - penalty (length - 1))."""
    inter, area, dot = (np.asarray(x, dtype=np.float64) for x in (inter, area, dot))
    union = unit_area + area - inter
    safe = np.where(union > 0, union, 1.0)
    if score == "iou":
        value = np.where(union > 0, inter / safe, 0.0)
    else:
        own = (unit_area - r / cells * unit_square) / unit_area if unit_area > 0 else 0.0
        value = np.where(union > 0, (inter - r / cells * dot) / safe, 0.0)
        value = value / own if own > 0 else np.zeros_like(value)
    return value * (1.0 - penalty * (np.asarray(length, dtype=np.float64) - 1))


def plain_score(unit_mask, formula_mask, length, **options):
    """score_from_counts computed straight from two dense masks (images x S x S)."""
    unit_per_image = unit_mask.flatten(1).sum(1).double()
    formula_per_image = formula_mask.flatten(1).sum(1).double()
    return float(score_from_counts(float((unit_mask & formula_mask).sum()), float(formula_per_image.sum()),
                                   float(unit_per_image.sum()), float(unit_per_image @ formula_per_image), length,
                                   cells=unit_mask[0].numel(), unit_square=float(unit_per_image @ unit_per_image),
                                   **options))


def unit_mask_positions(maps, thresholds, size, budget=1 << 24):
    """(image, unit, position) of every set position of the units' masks on a batch of maps
    (images x units x h x w): each map upsampled bilinearly to size x size (as network dissection
    does) and above its unit's threshold, or the map itself when it is size x size already.
    Only maps whose maximum exceeds the threshold are upsampled: bilinear interpolation never
    exceeds the largest of its four source values, so the others have empty masks."""
    thresholds = thresholds.float()
    peaks = maps.flatten(2).amax(2)
    image, unit = torch.nonzero(peaks > thresholds[None], as_tuple=True)
    found = [[], [], []]
    step = max(1, budget // (size * size))
    for first in range(0, len(image), step):
        i, u = image[first:first + step], unit[first:first + step]
        selected = maps[i, u].float()[:, None]
        if selected.shape[-1] != size or selected.shape[-2] != size:
            selected = F.interpolate(selected, size=(size, size), mode="bilinear", align_corners=False)
        pair, position = torch.nonzero(selected.flatten(1) > thresholds[u][:, None], as_tuple=True)
        for kept, values in zip(found, (i[pair], u[pair], position)):
            kept.append(values)
    return tuple(torch.cat(values) if values else torch.zeros(0, dtype=torch.int64) for values in found)


def unit_positions(model, probe, layer, thresholds, size, words, run):
    """Each unit's mask as flat positions (image * words * 64 + position), from batches of
    activations: upsampled to size x size (resolution mask) or at the layer's own grid."""
    found = []
    for start, outputs, _ in iterate_activations(model, probe["images"], [layer], desc=f"{layer} masks", **run):
        image, unit, position = unit_mask_positions(outputs[layer], thresholds, size)
        found.append((unit.numpy(), (image.numpy() + start) * words * 64 + position.numpy()))
    units = np.concatenate([u for u, _ in found])
    positions = np.concatenate([p for _, p in found])
    order = np.argsort(units, kind="stable")
    bounds = np.searchsorted(units[order], np.arange(len(thresholds) + 1))
    return [np.sort(positions[order][bounds[u]:bounds[u + 1]]) for u in range(len(thresholds))]


# --------------------------------------------------------------------------------------------
# bit-packed masks: uint64 images x words, each image padded to whole words
# --------------------------------------------------------------------------------------------
def pack(masks):
    """bool images x S x S (torch) -> uint64 images x words; position p of image i is bit p % 64 of
    word p // 64."""
    flat = masks.reshape(len(masks), -1).numpy()
    words = -(-flat.shape[1] // 64)
    padded = np.zeros((len(flat), words * 64), dtype=bool)
    padded[:, :flat.shape[1]] = flat
    packed = np.packbits(padded, axis=1, bitorder="little")
    return packed.view("<u8") if sys.byteorder == "little" else packed.view("<u8").astype(np.uint64)


def unpack(bits, size):
    flat = np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little", count=size * size)
    return torch.from_numpy(flat.astype(bool)).reshape(len(bits), size, size)


def popcount_per_image(bits):
    """uint64 ... x images x words -> int64 ... x images."""
    return np.bitwise_count(bits).sum(axis=-1, dtype=np.int64)


def gather(bits, flat_positions):
    """The bits at flat positions (image * words * 64 + position) of ... x images x words."""
    flat = bits.reshape(*bits.shape[:-2], -1)
    return ((flat[..., flat_positions >> 6] >> (flat_positions & 63).astype(np.uint64)) & np.uint64(1)).astype(bool)


class Primitives:
    """The concept masks a search combines, bit-packed, with what every formula's counts need.

    masks: an iterable of (name, bool images x S x S); grid: the layer's cells per side (for
    CLOSE TO and expansion); expand: add `<name>-X` for every primitive that is not the same
    on every image position (image-level concepts are); connectors: those the search uses.
    """

    def __init__(self, masks, grid, connectors, expand_primitives=False):
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

    def formula_bits(self, formula):
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

    def near_of(self, bits):
        return pack(near(unpack(bits, self.size), self.grid))


class FormulaCounts:
    """A formula's counts against every primitive B, per image (primitives x images): its own
    area, |F and B|, and for the spatial connectors |F and near(B)| and |B and near(F)|."""

    def __init__(self, primitives, formula, connectors):
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

    def __init__(self, primitives, flat_positions):
        self.positions = flat_positions
        self.image = flat_positions // (primitives.words * 64)
        self.per_image = np.bincount(self.image, minlength=primitives.n_images).astype(np.float64)
        self.area = len(flat_positions)
        self.square = float(self.per_image @ self.per_image)
        # bool, 1 byte per primitive and position; float32 only while one formula is extended
        # (counts stay exact below 2^24 positions per unit)
        self.values = gather(primitives.bits, flat_positions)                           # primitives x positions
        self.near_values = gather(primitives.near_bits, flat_positions) if primitives.with_near else None


def extensions(primitives, view, counts, formula, candidates, connectors):
    """(formula, |U and F'|, |F'|, sum_i |U_i| |F'_i|) for every F' = formula <connector> B, B a
    candidate not already in the formula, by inclusion-exclusion from the counts."""
    used = set(leaves(formula))
    keep = [j for j in candidates if primitives.names[j] not in used]
    if not keep:
        return []
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
    rows = []
    for i, j in enumerate(keep):
        for op in connectors:
            inter, area, dot = found[op]
            rows.append(((op, formula, primitives.names[j]), inter[i], area[i], dot[i]))
    return rows


def search_units(primitives, unit_positions, connectors=("OR", "AND", "AND NOT"), beam=5, max_length=3,
                 candidates=50, score="iou", r=0.75, penalty=0.0, progress=lambda items, desc: items):
    """Beam search per unit. unit_positions: one int64 array of flat positions per unit.

    The beam starts as the unit's `beam` best primitives; each of max_length - 1 rounds extends
    every beam formula by each of the unit's `candidates` best primitives with every connector,
    merges the results with the beam and keeps the best `beam` (formulas equal up to the order
    of commutative operands count once; among equal scores the earlier stays). Returns one dict
    per unit: formula, score, iou, length, single (the best primitive), single_score,
    single_iou, best_by_length (the best score found at each length) and evaluated (formulas scored).
    """
    cells = primitives.size * primitives.size
    options = dict(score=score, r=r, cells=cells, penalty=penalty)
    views, results, beams = [], [], []
    for positions in unit_positions:
        view = UnitView(primitives, np.asarray(positions, dtype=np.int64))
        views.append(view)
        inter = view.values.sum(1, dtype=np.int64)
        dot = primitives.image_area @ view.per_image
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
        by_formula = {}
        for unit, entries in enumerate(beams):
            for entry in entries:
                by_formula.setdefault(entry[3], (entry[2], []))[1].append(unit)
        found = [[] for _ in beams]
        for formula, units in progress(list(by_formula.values()), f"length {length}"):
            counts = FormulaCounts(primitives, formula, connectors)
            for unit in units:
                view = views[unit]
                rows = extensions(primitives, view, counts, formula, results[unit]["candidates"], connectors)
                if not rows:
                    continue
                inter, area, dot = (np.array([row[k] for row in rows]) for k in (1, 2, 3))
                lengths = np.array([formula_length(row[0]) for row in rows])
                scores = score_from_counts(inter, area, view.area, dot, lengths, unit_square=view.square, **options)
                ious = score_from_counts(inter, area, view.area, dot, lengths)
                found[unit].extend((float(s), float(i), row[0], None) for s, i, row in zip(scores, ious, rows))
                results[unit]["evaluated"] += len(rows)
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
