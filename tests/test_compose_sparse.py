"""netunits.methods.compose_sparse: the search's counts from concept masks kept only where present
equal the dense masks' to the bit, and the search finds the same formulas."""
import numpy as np
import pytest
import torch

from netunits.data.probe import SparsePackedMasks, pack_masks
from netunits.methods.compose_search import Primitives, search_units
from netunits.methods.compose_sparse import sparse_primitives, sparse_search_applies
from netunits.methods.formula import parse, to_string
from netunits.methods.formula_masks import concept_masks, evaluate


def tiny_probe(n_images=12, n_pixel=7, n_image=2, mask_size=8, share=0.35, seed=0, sparse=False):
    """A probe set of random blob masks, each concept present on about `share` of the images."""
    rng = np.random.default_rng(seed)
    present = rng.random((n_images, n_pixel)) < share
    present[0] = False                                        # an image with no pixel concept
    masks = (rng.random((n_images, n_pixel, mask_size, mask_size)) < rng.uniform(0.1, 0.6, n_pixel)[:, None, None])
    masks &= present[:, :, None, None]
    labels = rng.random((n_images, n_image)) < 0.4
    concepts = ([{"name": f"p{i}", "level": "pixel", "category": "object"} for i in range(n_pixel)]
                + [{"name": f"s{i}", "level": "image", "category": "scene"} for i in range(n_image)])
    packed = pack_masks(masks)
    return {"images": torch.zeros(n_images, 3, 16, 16, dtype=torch.uint8), "mask_size": mask_size,
            "concepts": concepts, "pixel_masks": SparsePackedMasks.from_dense(packed) if sparse else packed,
            "image_labels": torch.from_numpy(labels)}


def units(n_images, size, words, n_units=5, seed=1):
    """Random unit masks, one silent, as flat positions; and the dense masks."""
    gen = torch.Generator().manual_seed(seed)
    dense = [torch.rand(n_images, size, size, generator=gen) < p for p in (0.05, 0.2, 0.4, 0.0, 0.1)][:n_units]
    flat = []
    for mask in dense:
        image, position = torch.nonzero(mask.flatten(1), as_tuple=True)
        flat.append((image * words * 64 + position).numpy())
    return flat, dense


@pytest.mark.parametrize("resolution, size", [("mask", 8), ("layer", 4)])
@pytest.mark.parametrize("sparse_probe", [False, True])
def test_formula_counts_equal_the_dense_masks(resolution, size, sparse_probe):
    probe = tiny_probe(sparse=sparse_probe)
    dense = dict(concept_masks(probe, resolution, size, 0.3))
    primitives = sparse_primitives(probe, resolution, size, 0.3)
    for text in ["p1", "s0", "p1 OR p2", "p1 AND p2", "p1 AND NOT p2", "p1 WITH s1", "(p1 OR p2) AND NOT p3",
                 "(p1 OR p2) OR s0", "(p1 AND NOT p2) AND p4", "(p1 OR p3) WITH p2", "(p5 WITH p1) OR p0"]:
        formula = parse(text)
        mask = evaluate(formula, dense, 2)
        assert primitives.formula_area(formula) == int(mask.sum()), text
        expected = [int((mask & dense[name]).sum()) for name in primitives.names]
        assert primitives.overlaps(formula).tolist() == expected, text
        support = primitives.support(formula)
        assert not mask[np.setdiff1d(np.arange(len(mask)), support)].any(), text
        assert torch.equal(torch.from_numpy(primitives.bits_on(formula, np.arange(len(mask)))),
                           torch.from_numpy(Primitives([("f", mask)], 2, ("OR",)).bits[0])), text


@pytest.mark.parametrize("connectors", [("OR", "AND", "AND NOT"), ("OR", "AND", "AND NOT", "WITH")])
@pytest.mark.parametrize("score", ["iou", "imrou"])
@pytest.mark.parametrize("resolution, size", [("mask", 8), ("layer", 4)])
def test_the_sparse_search_finds_what_the_dense_search_finds(connectors, score, resolution, size):
    probe = tiny_probe(n_images=16, n_pixel=9, seed=4, sparse=True)
    dense = Primitives(concept_masks(probe, resolution, size, 0.3), 2, connectors)
    sparse = sparse_primitives(probe, resolution, size, 0.3)
    assert sparse.names == dense.names and sparse.area.tolist() == dense.area.tolist()
    flat, _ = units(16, size, dense.words)
    options = dict(connectors=connectors, beam=4, max_length=3, candidates=6, score=score, r=0.75, penalty=0.001)
    expected, found = search_units(dense, flat, **options), search_units(sparse, flat, **options)
    for a, b in zip(expected, found):
        assert (to_string(a["formula"]) if a["formula"] else None) == (to_string(b["formula"]) if b["formula"]
                                                                      else None)
        assert a == b


def test_the_sparse_path_covers_the_default_connectors_only():
    assert sparse_search_applies(("OR", "AND", "AND NOT"), False)
    assert sparse_search_applies(("OR", "WITH"), False)
    assert not sparse_search_applies(("OR", "CLOSE TO"), False)
    assert not sparse_search_applies(("OR", "AND"), True)


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_a_units_formula_does_not_depend_on_the_units_searched_with_it(backend):
    probe = tiny_probe(n_images=16, n_pixel=9, seed=6, sparse=True)
    connectors = ("OR", "AND", "AND NOT")
    primitives = (Primitives(concept_masks(probe, "mask", 8, 0.3), 2, connectors) if backend == "dense"
                  else sparse_primitives(probe, "mask", 8, 0.3))
    flat, _ = units(16, 8, primitives.words, seed=9)
    options = dict(connectors=connectors, beam=3, max_length=3, candidates=5)
    together = search_units(primitives, flat, **options)
    assert [search_units(primitives, [positions], **options)[0] for positions in flat] == together
    assert search_units(primitives, flat[::-1], **options) == together[::-1]
