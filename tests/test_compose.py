"""Compositional explanations on inputs small enough to check by hand."""
import itertools
import json

import numpy as np
import pytest
import torch

from netunits.errors import PipelineError
from netunits.methods.bitmasks import pack, unpack
from netunits.methods.compose_search import FormulaCounts, Primitives, UnitView, extensions, search_units
from netunits.methods.formula import CONNECTORS, canonical, formula_length, from_json, parse, to_json, to_string
from netunits.methods.formula_masks import evaluate, expand, near, plain_score, score_from_counts


def grid_mask(rows):
    """A bool 1 x H x W mask from strings of '.' and '#'."""
    return torch.tensor([[c == "#" for c in row] for row in rows])[None]


def positions_of(mask, words):
    """Flat positions (image * words * 64 + position) of a dense images x S x S mask."""
    image, flat = torch.nonzero(mask.flatten(1), as_tuple=True)
    return (image * words * 64 + flat).numpy()


# ---------------------------------------------------------------------------- formulas as text
@pytest.mark.parametrize("text", ["hole", "hole OR endpoint", "(hole OR endpoint) AND NOT thick_stroke",
                                  "((a WITH b) CLOSE TO c) CLOSE d", 'hole-X AND "shop window"',
                                  '"or" OR digit_0'])
def test_formula_strings_round_trip(text):
    assert to_string(parse(text)) == text


def test_parse_reads_connectors_left_to_right_and_keeps_parentheses():
    assert parse("a OR b AND NOT c") == ("AND NOT", ("OR", "a", "b"), "c")
    assert parse("a OR (b AND c)") == ("OR", "a", ("AND", "b", "c"))
    assert formula_length(parse("(a OR b) CLOSE TO c")) == 3


@pytest.mark.parametrize("text", ["", "a OR", "(a OR b", "a b", "a XOR b", "a OR b)", "a AND NOT"])
def test_parse_rejects_malformed_formulas(text):
    with pytest.raises(PipelineError, match="formula"):
        parse(text)


@pytest.mark.parametrize("text", ["hole", "(hole OR endpoint) AND NOT thick_stroke",
                                  "((a WITH b) CLOSE TO c) CLOSE d", 'hole-X AND "shop window"'])
def test_formula_json_trees_round_trip_through_json_text(text):
    formula = parse(text)
    tree = json.loads(json.dumps(to_json(formula)))
    assert from_json(tree) == formula and to_string(from_json(tree)) == text


def test_formula_json_tree_names_its_connector_and_operands():
    assert to_json(parse("a OR b AND NOT c")) == {"op": "AND NOT", "left": {"op": "OR", "left": "a", "right": "b"},
                                                  "right": "c"}


@pytest.mark.parametrize("tree, message", [
    ({"op": "XOR", "left": "a", "right": "b"}, "connector 'XOR'"),
    ({"op": "OR", "left": "a"}, "exactly the keys op, left, right"),
    ({"op": "OR", "left": "a", "right": 3}, "3 is neither"),
    ("", "empty name"),
])
def test_formula_json_rejects_malformed_trees(tree, message):
    with pytest.raises(PipelineError, match=message):
        from_json(tree)


def test_canonical_ignores_the_order_of_commutative_operands_only():
    assert canonical(parse("(a OR b) OR c")) == canonical(parse("(c OR a) OR b"))
    assert canonical(parse("a CLOSE b")) == canonical(parse("b CLOSE a"))
    assert canonical(parse("a AND NOT b")) != canonical(parse("b AND NOT a"))
    assert canonical(parse("a CLOSE TO b")) != canonical(parse("b CLOSE TO a"))
    assert canonical(parse("(a OR b) AND c")) != canonical(parse("(a AND c) OR b"))


# ---------------------------------------------------------------------------- spatial connectors
def test_close_to_reaches_the_21_cell_neighbourhood():
    b = grid_mask([".....", ".....", "..#..", ".....", "....."])
    assert near(b, 5)[0].equal(grid_mask([".###.", "#####", "#####", "#####", ".###."])[0])
    corner = grid_mask(["#....", ".....", ".....", ".....", "....."])
    assert near(corner, 5)[0].equal(grid_mask(["###..", "###..", "##...", ".....", "....."])[0])
    a = grid_mask(["....#", "#....", ".....", ".....", "...##"])
    masks = {"a": a, "b": corner}
    assert evaluate(parse("a CLOSE TO b"), masks, 5)[0].equal(grid_mask([".....", "#....", ".....", ".....",
                                                                           "....."])[0])
    # CLOSE: both directions; the corner cell of b is two cells from a's (1, 0)
    assert evaluate(parse("a CLOSE b"), masks, 5)[0].equal(grid_mask(["#....", "#....", ".....", ".....",
                                                                        "....."])[0])


def test_close_to_works_on_cells_when_masks_are_finer_than_the_layer():
    # a 10 x 10 mask on a 5 x 5 grid: each cell is 2 x 2 positions
    b = torch.zeros(1, 10, 10, dtype=torch.bool)
    b[0, 0, 1] = True                                # cell (0, 0)
    reach = near(b, 5)[0]
    cells = reach.reshape(5, 2, 5, 2).any(3).any(1)
    assert cells.equal(grid_mask(["###..", "###..", "##...", ".....", "....."])[0])
    assert bool(reach[0:2, 0:2].all()) and not bool(reach[4:6, 4:6].any())


def test_expansion_adds_positions_with_three_set_neighbours():
    mask = grid_mask([".....", ".#.#.", ".....", ".#...", "....."])
    assert expand(mask)[0].equal(grid_mask([".....", ".#.#.", "..#..", ".#...", "....."])[0])
    # one cell away on a finer mask: step 2
    fine = mask.repeat_interleave(2, 1).repeat_interleave(2, 2)
    grown = expand(fine, 2)[0]
    assert bool(grown[4:6, 4:6].all()) and int(grown.sum()) == int(fine.sum()) + 4


def test_with_keeps_the_left_mask_on_images_where_the_right_is_present():
    a = torch.ones(2, 3, 3, dtype=torch.bool)
    b = torch.zeros(2, 3, 3, dtype=torch.bool)
    b[0, 2, 2] = True
    result = evaluate(parse("a WITH b"), {"a": a, "b": b}, 3)
    assert bool(result[0].all()) and not bool(result[1].any())


# ---------------------------------------------------------------------------- scores
def test_imrou_on_a_hand_computed_case():
    # two images of 2 x 2 cells: U = {0, 1} and {0}, F = {1, 2} and nothing
    unit = torch.tensor([[[1, 1], [0, 0]], [[1, 0], [0, 0]]], dtype=torch.bool)
    formula = torch.tensor([[[0, 1], [1, 0]], [[0, 0], [0, 0]]], dtype=torch.bool)
    # |U and F| = 1, union 4, sum |U_i||F_i| = 4: (1 - 0.75 / 4 * 4) / 4 = 1/16; the unit's own
    # score (3 - 0.75 / 4 * 5) / 3 = 11/16; normalised: 1/11
    assert plain_score(unit, formula, 1, score="imrou", r=0.75) == pytest.approx(1 / 11, abs=1e-12)
    assert plain_score(unit, formula, 1) == pytest.approx(1 / 4)
    assert plain_score(unit, formula, 3, penalty=0.001) == pytest.approx(0.25 * 0.998)
    assert float(score_from_counts(1, 2, 3, 4, 1, score="imrou", cells=4, unit_square=5)) == pytest.approx(1 / 11)


def test_packing_round_trips_and_keeps_images_apart():
    masks = torch.rand(3, 9, 9, generator=torch.Generator().manual_seed(0)) > 0.5
    bits = pack(masks)
    assert bits.shape == (3, 2) and unpack(bits, 9).equal(masks)


# ---------------------------------------------------------------------------- the search
def random_masks(n_primitives, n_images=4, size=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    names = [f"c{i}" for i in range(n_primitives)]
    masks = {name: torch.rand(n_images, size, size, generator=generator) < 0.2 + 0.1 * i
             for i, name in enumerate(names)}
    # one image-level concept: full masks on some images
    masks[names[-1]] = torch.tensor([True, False, True, False])[:, None, None].expand(n_images, size, size).clone()
    return names, masks


def left_deep(names, connectors, max_length):
    """Every left-deep formula with distinct leaves, up to max_length leaves."""
    for length in range(1, max_length + 1):
        for chosen in itertools.permutations(names, length):
            for ops in itertools.product(connectors, repeat=length - 1):
                formula = chosen[0]
                for op, name in zip(ops, chosen[1:]):
                    formula = (op, formula, name)
                yield formula


@pytest.mark.parametrize("connectors", [("OR", "AND", "AND NOT"), CONNECTORS])
def test_counts_from_inclusion_exclusion_equal_the_dense_masks(connectors):
    names, masks = random_masks(4)
    primitives = Primitives(masks.items(), 3, connectors)
    unit = torch.rand(4, 6, 6, generator=torch.Generator().manual_seed(5)) < 0.3
    view = UnitView(primitives, positions_of(unit, primitives.words))
    for formula in ("c0", ("AND NOT", "c1", "c2")):
        counts = FormulaCounts(primitives, formula, connectors)
        assert unpack(counts.bits, 6).equal(evaluate(formula, masks, 3))
        for new, inter, area, dot in extensions(primitives, view, counts, formula, range(len(names)), connectors):
            dense = evaluate(new, masks, 3)
            per_image = dense.flatten(1).sum(1).double()
            assert inter == int((dense & unit).sum()), to_string(new)
            assert area == int(dense.sum()), to_string(new)
            assert dot == pytest.approx(float(unit.flatten(1).sum(1).double() @ per_image)), to_string(new)


@pytest.mark.parametrize("score", ["iou", "imrou"])
# the spatial connectors' exhaustive search takes minutes
@pytest.mark.parametrize("connectors", [("OR", "AND", "AND NOT"),
                                        pytest.param(CONNECTORS, marks=pytest.mark.slow, id="connectors1")])
def test_beam_search_with_a_large_beam_equals_exhaustive_search(score, connectors):
    names, masks = random_masks(5)
    primitives = Primitives(masks.items(), 3, connectors)
    options = dict(score=score, r=0.75, penalty=0.001)
    for seed in range(3):
        unit = torch.rand(4, 6, 6, generator=torch.Generator().manual_seed(10 + seed)) < 0.25
        best = max(plain_score(unit, evaluate(f, masks, 3), formula_length(f), **options)
                   for f in left_deep(names, connectors, 3))
        [found] = search_units(primitives, [positions_of(unit, primitives.words)], connectors, beam=100000,
                               max_length=3, candidates=len(names), **options)
        assert found["score"] == pytest.approx(best, abs=1e-12)
        assert plain_score(unit, evaluate(found["formula"], masks, 3), found["length"], **options) == \
            pytest.approx(found["score"], abs=1e-12)


def test_a_unit_equal_to_a_or_b_gets_that_formula_with_score_one():
    names, masks = random_masks(5, seed=3)
    primitives = Primitives(masks.items(), 3, ("OR", "AND", "AND NOT"))
    unit = masks["c1"] | masks["c3"]
    [found] = search_units(primitives, [positions_of(unit, primitives.words)], beam=5, max_length=3)
    assert canonical(found["formula"]) == canonical(parse("c1 OR c3"))
    assert found["score"] == pytest.approx(1.0) and found["iou"] == pytest.approx(1.0)
    assert found["length"] == 2 and found["single_iou"] < 1.0
    assert found["best_by_length"][2] == pytest.approx(1.0)


def test_expanded_primitives_join_the_search_and_a_silent_unit_gets_no_formula():
    names, masks = random_masks(3)
    primitives = Primitives(masks.items(), 3, ("OR",), expand_primitives=True)
    # the image-level concept is the same on every position of an image: no expanded version
    assert primitives.names == ["c0", "c0-X", "c1", "c1-X", "c2"]
    unit = expand(masks["c0"], 2)
    found, silent = search_units(primitives, [positions_of(unit, primitives.words), np.zeros(0, np.int64)],
                                 connectors=("OR",))
    assert found["formula"] == "c0-X" and found["score"] == pytest.approx(1.0)
    assert silent["formula"] is None and silent["score"] == 0.0 and silent["single"] is None
