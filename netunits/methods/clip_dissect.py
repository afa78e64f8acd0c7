"""CLIP-Dissect (Oikarinen & Weng, ICLR 2023) as pure functions on tensors.

Every unit gets one number per probe image (`unit_summary`: the spatial mean, the reference's
pool_mode avg, or the max). A concept-image score matrix S (probe images x concepts) stands where
the reference has CLIP's cosine between image and text embeddings; the similarity functions turn
S and the units' summaries into a units x concepts matrix whose argmax per unit is its
description. They follow Trustworthy-ML-Lab/CLIP-dissect's similarity.py exactly:

- soft_wpmi (the default): P = softmax(a * S) over concepts, per image. For each unit, its top_k
  most activating images x_0 .. x_{k-1} (descending) carry weights p_i = p_start - (i / top_k) *
  (p_start - p_end) (0.998 falling linearly towards 0.97; the last is 0.998 - 0.99 * 0.028);
  log P(c | unit) = sum_i log(1 + p_i * (P(c | x_i) - 1) + min_prob); log P(c) = logsumexp over the
  units dissected together of log P(c | unit) - log(#units); score = log P(c | unit) - lambda log P(c).
  Defaults top_k 100, a 10, lambda 1, min_prob 1e-7.
- wpmi: the same with log P(c | unit) = sum_i log(P(c | x_i) + min_prob) (top_k 28, a 2, lambda 0.6).
- cos_similarity: no softmax and no `a`: S's columns (concepts) and the summaries' columns (units)
  are each divided by their L2 norm over the probe images (no centring, as the reference), and
  score = their dot product. Where a column is all zero (a unit that never fires) the reference
  divides by zero and gets NaN; here the norm is clamped to the smallest normal float, so the
  score is 0.

Two places differ from the reference on purpose, neither changing a value it computes: each
unit's top images come from a stable sort (ties go to the earlier probe image, so the same
inputs give the same answer; torch.topk leaves ties in an unspecified order), and P(c | x) is
computed a block of concepts at a time from the per-image softmax normaliser, so memory stays
bounded (WORK_BYTES per block) whatever the number of concepts: the reference holds P for every
image and concept plus a units x concepts matrix.

log P(c) is a mean over the units dissected together (one layer per call in this project, as in
the reference), so a unit's scores, and even its description, depend on which other units are in
the call.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch

from netunits.errors import PipelineError

SIMILARITIES = ("soft_wpmi", "wpmi", "cos_similarity")
POOLS = ("mean", "max")
# the largest gathered block (units x top_k x concepts, float32) a similarity holds at once
WORK_BYTES = 8 * 2**20


# --------------------------------------------------------------------------------------------
# inputs: concepts, unit summaries, the annotation scores
# --------------------------------------------------------------------------------------------
def parse_concepts(text: str) -> list[str]:
    """A concept file's text -> concept names: one per line, surrounding spaces stripped, blank
    lines and repeated names dropped (the first occurrence keeps its place). The reference splits
    on newlines and drops only empty lines, but indexes the unfiltered list when it names a unit's
    description, so one blank line shifts every later name; here the list that is scored is the
    list that names."""
    names = [line.strip() for line in text.splitlines()]
    return list(dict.fromkeys(name for name in names if name))


def unit_summary(output: torch.Tensor, mode: str) -> torch.Tensor:
    """One value per unit and image, in fp32: spatial maps N x C x H x W are averaged (mode
    'mean') or maxed ('max') over positions; N x C passes as is."""
    output = output.float()
    if output.dim() == 4:
        return output.mean(dim=(2, 3)) if mode == "mean" else output.amax(dim=(2, 3))
    if output.dim() == 2:
        return output
    raise PipelineError(f"a layer's output has shape {tuple(output.shape)}; only N x C and N x C x H x W "
                        f"outputs have units")


def pixel_coverage(masks: torch.Tensor) -> torch.Tensor:
    """bool N x concepts x positions -> float N x concepts: the share of each image a concept covers."""
    return masks.float().mean(dim=2)


def coverage_reference(coverage: torch.Tensor, annotated: torch.Tensor, quantile: float) -> torch.Tensor:
    """Per pixel-level concept, the `quantile` of its coverage over the probe images on which its
    category is annotated (0 where it is annotated on none). coverage, annotated: N x concepts."""
    reference = torch.zeros(coverage.shape[1])
    for c in range(coverage.shape[1]):
        values = coverage[annotated[:, c], c]
        if len(values):
            reference[c] = torch.quantile(values.double(), quantile).float()
    return reference


def annotation_scores(coverage: torch.Tensor, reference: torch.Tensor, image_labels: torch.Tensor,
                      annotated: torch.Tensor) -> torch.Tensor:
    """The annotations source's S (N x (pixel + image concepts), in [0, 1]), standing where CLIP's
    image-text cosine stands:

    - an image-level concept scores 1 on the images labelled with it, else 0;
    - a pixel-level concept scores its coverage of the image divided by its `reference` (a high
      quantile of its own coverage over the probe set), capped at 1: a concept that shows at its
      usual large extent scores like an image-level label, whatever its typical size (a hole
      covers a few percent of a digit, the background most of it), and a trace of it scores
      near 0;
    - a concept whose category is not annotated on the image scores 0 (unknown, taken as absent).

    coverage: N x pixel concepts; reference: pixel concepts; image_labels: bool N x image
    concepts; annotated: bool N x (pixel + image concepts)."""
    safe = reference.clamp_min(torch.finfo(torch.float32).tiny)
    pixel = torch.where(reference > 0, (coverage / safe).clamp(max=1.0), torch.zeros_like(coverage))
    scores = torch.cat([pixel, image_labels.float()], dim=1)
    return scores * annotated.float()


def annotation_matrix(coverage: torch.Tensor, image_labels: torch.Tensor, category_annotated: torch.Tensor,
                      concept_category: Sequence[int] | torch.Tensor, concept_names: Sequence[str],
                      names: Sequence[str], quantile: float) -> torch.Tensor:
    """The annotations source's score matrix, probe images x `names` (annotation_scores, with each
    pixel-level concept's reference the `quantile` of its coverage where its category is annotated).

    coverage: N x pixel concepts (pixel_coverage of the probe's masks); image_labels: bool N x image
    concepts; category_annotated: bool N x categories; concept_category: each concept's category
    index and concept_names its name (pixel-level first, then image-level); names: the concepts to
    score, each one of concept_names."""
    annotated = category_annotated[:, concept_category]                        # N x concepts
    reference = coverage_reference(coverage, annotated[:, :coverage.shape[1]], quantile)
    scores = annotation_scores(coverage, reference, image_labels, annotated)
    index = {name: i for i, name in enumerate(concept_names)}
    return scores[:, [index[name] for name in names]]


# --------------------------------------------------------------------------------------------
# the similarity functions
# --------------------------------------------------------------------------------------------
def rank_weights(top_k: int, p_start: float, p_end: float) -> torch.Tensor:
    """soft-WPMI's p_i for i = 0 .. top_k - 1, computed as the reference does (in float32)."""
    return p_start - (torch.arange(start=0, end=top_k) / top_k * (p_start - p_end))


def top_images(activations: torch.Tensor, top_k: int) -> torch.Tensor:
    """Each unit's top_k most activating images, descending (top_k x units); ties go to the earlier
    image (a stable sort; the reference's torch.topk leaves their order unspecified)."""
    return torch.sort(-activations, dim=0, stable=True).indices[:top_k]


def concept_probabilities(scores: torch.Tensor, a: float) -> torch.Tensor:
    """P(c | x) = softmax over concepts of a * S (the reference's first step in soft_wpmi and wpmi)."""
    return torch.softmax(a * scores.float(), dim=1)


def _log_normaliser(scores, a, chunk):
    """Per image, logsumexp over concepts of a * S, a block of concepts at a time."""
    total = torch.full((scores.shape[0],), -math.inf)
    for first in range(0, scores.shape[1], chunk):
        total = torch.logaddexp(total, torch.logsumexp(a * scores[:, first:first + chunk].float(), dim=1))
    return total


def block_size(n_units: int, top_k: int, n_concepts: int, work_bytes: int = WORK_BYTES) -> int:
    """Concepts per block so that a units x top_k x block float32 tensor fits in work_bytes."""
    return max(1, min(n_concepts, work_bytes // max(1, n_units * top_k * 4)))


def similarity_blocks(method: str, scores: torch.Tensor, activations: torch.Tensor, top_k: int = 100, a: float = 10.0,
                      lam: float = 1.0, p_start: float = 0.998, p_end: float = 0.97, min_prob: float = 1e-7,
                      chunk: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (first concept, units x block scores) over blocks of concepts; every block is final
    (log P(c) needs only its own concepts' column, over all units).

    scores: probe images x concepts (CLIP's cosine, or the annotation scores); activations: probe
    images x units (unit_summary). top_k, a, lam, p_start, p_end and min_prob as the reference's
    arguments of the same names (p_start and p_end are read by soft_wpmi only; cos_similarity
    reads none of them)."""
    if method not in SIMILARITIES:
        raise ValueError(f"unknown similarity {method!r}; one of {', '.join(SIMILARITIES)}")
    n_images, n_units = activations.shape
    n_concepts = scores.shape[1]
    if scores.shape[0] != n_images:
        raise ValueError(f"scores cover {scores.shape[0]} images, activations {n_images}")
    activations = activations.float()
    if method == "cos_similarity":
        chunk = chunk or block_size(n_units, 1, n_concepts)
        tiny = torch.finfo(torch.float32).tiny
        units = activations / activations.norm(p=2, dim=0, keepdim=True).clamp_min(tiny)
        for first in range(0, n_concepts, chunk):
            block = scores[:, first:first + chunk].float()
            yield first, units.T @ (block / block.norm(p=2, dim=0, keepdim=True).clamp_min(tiny))
        return
    if not 1 <= top_k <= n_images:
        raise ValueError(f"top_k is {top_k}; it must be from 1 to the {n_images} probe images")
    chunk = chunk or block_size(n_units, top_k, n_concepts)
    rows = top_images(activations, top_k).T.reshape(-1)                    # unit-major: units x top_k
    normaliser = _log_normaliser(scores, a, chunk)
    weights = rank_weights(top_k, p_start, p_end).view(1, top_k, 1) if method == "soft_wpmi" else None
    for first in range(0, n_concepts, chunk):
        probability = torch.exp(a * scores[:, first:first + chunk].float() - normaliser[:, None])
        gathered = probability.index_select(0, rows).view(n_units, top_k, -1)
        if method == "soft_wpmi":
            # log(1 + p_i * (P - 1) + min_prob), in the reference's order of operations, in place
            gathered.sub_(1.0).mul_(weights).add_(1.0)
        log_p_given_unit = gathered.add_(min_prob).log_().sum(dim=1)       # units x block
        log_p = torch.logsumexp(log_p_given_unit, dim=0, keepdim=True) - math.log(n_units)
        yield first, log_p_given_unit - lam * log_p


def similarity(method: str, scores: torch.Tensor, activations: torch.Tensor, **constants: Any) -> torch.Tensor:
    """The whole units x concepts matrix (small inputs; the stage streams similarity_blocks)."""
    return torch.cat([block for _, block in similarity_blocks(method, scores, activations, **constants)], dim=1)


def best_concepts(blocks: Iterable[tuple[int, torch.Tensor]],
                  n_best: int = 3) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(values, indices), units x n_best, descending, from similarity_blocks' stream; among equal
    scores the earlier concept ranks first."""
    values = indices = None
    for first, block in blocks:
        block_indices = torch.arange(first, first + block.shape[1]).expand(block.shape[0], -1)
        if values is not None:
            block, block_indices = torch.cat([values, block], dim=1), torch.cat([indices, block_indices], dim=1)
        order = torch.sort(-block, dim=1, stable=True).indices[:, :n_best]
        values, indices = block.gather(1, order), block_indices.gather(1, order)
    return values, indices


# --------------------------------------------------------------------------------------------
# comparing descriptions with other labels
# --------------------------------------------------------------------------------------------
def agreement(descriptions: Sequence[str], labels: Sequence[str]) -> float:
    """Share of units whose description is their other label (e.g. network dissection's concept)."""
    return sum(d == other for d, other in zip(descriptions, labels, strict=True)) / len(labels)


def chance_agreement(descriptions: Sequence[str], labels: Sequence[str]) -> float:
    """The agreement two independent labellings with these label frequencies would have:
    sum over concepts of share(description = c) * share(label = c)."""
    n = len(labels)
    label_counts = {}
    for label in labels:
        label_counts[label] = label_counts.get(label, 0) + 1
    description_counts = {}
    for description in descriptions:
        description_counts[description] = description_counts.get(description, 0) + 1
    return sum(count * label_counts.get(c, 0) for c, count in description_counts.items()) / (n * n)


def agreement_metrics(descriptions: Sequence[str], labels: Sequence[str],
                      detector: Sequence[int | bool]) -> dict[str, float | int | None]:
    """How one layer's descriptions meet its other labels (network dissection's concepts):
    agreement_with_dissection, chance_agreement, dissection_detectors (units whose `detector` flag
    is set) and agreement_on_detectors (None when there are none)."""
    on_detectors = [(d, other) for d, other, is_detector in zip(descriptions, labels, detector, strict=True)
                    if is_detector]
    return {"agreement_with_dissection": agreement(descriptions, labels),
            "chance_agreement": chance_agreement(descriptions, labels),
            "dissection_detectors": len(on_detectors),
            "agreement_on_detectors": agreement(*zip(*on_detectors)) if on_detectors else None}


def overall_agreement(descriptions: Mapping[str, Sequence[str]],
                      labels: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """agreement_with_dissection and chance_agreement over several layers: descriptions and labels
    map layer -> that layer's list; the chance level is the layers' own, weighted by their units."""
    compared = [(d, other) for layer in labels for d, other in zip(descriptions[layer], labels[layer], strict=True)]
    return {"agreement_with_dissection": agreement(*zip(*compared)),
            "chance_agreement": sum(chance_agreement(descriptions[layer], labels[layer]) * len(descriptions[layer])
                                    for layer in labels) / len(compared)}
