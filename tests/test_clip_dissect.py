"""netunits.methods.clip_dissect on inputs worked out by hand, and against the reference's own
formulation (bench/clip_dissect.py)."""
import math

import pytest
import torch

from bench.clip_dissect import random_inputs, reference_soft_wpmi
from netunits.methods import clip_dissect as cd

# Three probe images, two concepts: with a = 1, P(c | x) = softmax(S) is (1/2, 1/2), (3/4, 1/4)
# and (1/4, 3/4). Unit 0's top two images are 1 then 2; unit 1's are 0 then 2.
S = torch.tensor([[0.0, 0.0], [math.log(3), 0.0], [0.0, math.log(3)]])
ACTIVATIONS = torch.tensor([[1.0, 3.0], [3.0, 1.0], [2.0, 2.0]])


def test_soft_wpmi_by_hand():
    # top_k 2, p_start 0.9, p_end 0.5: p_0 = 0.9, p_1 = 0.9 - (1/2)(0.4) = 0.7
    assert cd.rank_weights(2, 0.9, 0.5).tolist() == pytest.approx([0.9, 0.7])
    # P(c | unit) = prod_i (1 + p_i (P(c | x_i) - 1)):
    # unit 0, c0: (1 + 0.9 (3/4 - 1)) (1 + 0.7 (1/4 - 1)) = 0.775 * 0.475;  c1: 0.325 * 0.825
    # unit 1, c0: (1 + 0.9 (1/2 - 1)) (1 + 0.7 (1/4 - 1)) = 0.55 * 0.475;   c1: 0.55 * 0.825
    p_given_unit = [[0.775 * 0.475, 0.325 * 0.825], [0.55 * 0.475, 0.55 * 0.825]]
    p_concept = [(p_given_unit[0][c] + p_given_unit[1][c]) / 2 for c in (0, 1)]     # mean over the units
    expected = [[math.log(p_given_unit[u][c] / p_concept[c]) for c in (0, 1)] for u in (0, 1)]
    got = cd.similarity("soft_wpmi", S, ACTIVATIONS, top_k=2, a=1.0, lam=1.0, p_start=0.9, p_end=0.5, min_prob=0.0)
    assert got.tolist() == [pytest.approx(row, rel=1e-5) for row in expected]
    values, indices = cd.best_concepts(cd.similarity_blocks("soft_wpmi", S, ACTIVATIONS, top_k=2, a=1.0, lam=1.0,
                                                            p_start=0.9, p_end=0.5, min_prob=0.0), 1)
    assert indices[:, 0].tolist() == [0, 1]


def test_reference_weights_fall_from_0998_towards_097():
    p = cd.rank_weights(100, 0.998, 0.97)
    assert p[0] == pytest.approx(0.998) and p[99] == pytest.approx(0.998 - 0.99 * 0.028)
    assert (p[1:] < p[:-1]).all()


def test_wpmi_by_hand():
    # P(c | unit) = prod_i P(c | x_i): unit 0: 3/4 * 1/4 and 1/4 * 3/4; unit 1: 1/2 * 1/4 and 1/2 * 3/4
    p_given_unit = [[3 / 16, 3 / 16], [1 / 8, 3 / 8]]
    p_concept = [5 / 32, 9 / 32]
    expected = [[math.log(p_given_unit[u][c]) - 0.6 * math.log(p_concept[c]) for c in (0, 1)] for u in (0, 1)]
    got = cd.similarity("wpmi", S, ACTIVATIONS, top_k=2, a=1.0, lam=0.6, min_prob=0.0)
    assert got.tolist() == [pytest.approx(row, rel=1e-5) for row in expected]


def test_cos_similarity_by_hand_and_a_silent_unit_scores_zero():
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    activations = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])            # unit 1 never fires
    got = cd.similarity("cos_similarity", scores, activations)
    # unit 0 = (1, 0, 1): cos with (1, 0, 1) is 1, with (0, 1, 1) is 1 / (sqrt 2 sqrt 2)
    assert got.tolist() == [pytest.approx([1.0, 0.5]), [0.0, 0.0]]


@pytest.mark.parametrize("method", cd.SIMILARITIES)
def test_a_unit_whose_top_images_carry_one_concept_gets_it(method):
    generator = torch.Generator().manual_seed(3)
    scores = (torch.rand(60, 8, generator=generator) < 0.3).float()              # random image-level labels
    scores[:, 5] = 0.0
    scores[:10, 5] = 1.0                                                          # concept 5: images 0..9 only
    activations = torch.rand(60, 4, generator=generator)
    activations[:10, 2] += 5.0                                                    # unit 2 fires on those images
    constants = {"top_k": 10, "a": 10.0, "lam": 1.0} if method != "cos_similarity" else {}
    _, indices = cd.best_concepts(cd.similarity_blocks(method, scores, activations, **constants), 3)
    assert indices[2, 0] == 5


def test_concept_file_blank_lines_and_repeats_keep_indices_right():
    text = "dog\n\ncat\n   \ndog\n bird \n\n"
    names = cd.parse_concepts(text)
    assert names == ["dog", "cat", "bird"]
    # a unit that fires exactly on the images showing `bird` is described as bird, not as the
    # name that a blank line would have shifted into bird's place
    scores = torch.zeros(6, 3)
    scores[:2, 0] = scores[2:4, 1] = scores[4:, 2] = 1.0
    activations = torch.tensor([[0.0, 5.0], [0.0, 4.0], [0.0, 0.0], [0.0, 0.0], [5.0, 0.0], [4.0, 0.0]])
    _, indices = cd.best_concepts(cd.similarity_blocks("soft_wpmi", scores, activations, top_k=2), 1)
    assert [names[int(i)] for i in indices[:, 0]] == ["bird", "dog"]


@pytest.mark.parametrize("method", cd.SIMILARITIES)
def test_blocks_of_concepts_give_the_whole_matrix(method):
    scores, activations = random_inputs(50, 7, 23)
    constants = {"top_k": 9} if method != "cos_similarity" else {}
    whole = cd.similarity(method, scores, activations, **constants, chunk=23)
    for chunk in (1, 5):
        assert torch.allclose(cd.similarity(method, scores, activations, **constants, chunk=chunk), whole,
                              rtol=1e-5, atol=1e-5)
    values, indices = cd.best_concepts(cd.similarity_blocks(method, scores, activations, **constants, chunk=4), 3)
    assert torch.equal(indices, torch.sort(-whole, dim=1, stable=True).indices[:, :3])


def test_soft_wpmi_is_the_references():
    scores, activations = random_inputs(300, 12, 500)
    ours = cd.similarity("soft_wpmi", scores, activations)
    assert torch.allclose(ours, reference_soft_wpmi(scores, activations), rtol=1e-5, atol=1e-4)


def test_ties_go_to_the_earlier_image_and_concept():
    activations = torch.tensor([[1.0], [2.0], [2.0], [1.0]])
    assert cd.top_images(activations, 3)[:, 0].tolist() == [1, 2, 0]
    block = torch.tensor([[0.5, 0.7, 0.7, 0.1]])
    values, indices = cd.best_concepts(iter([(0, block[:, :2]), (2, block[:, 2:])]), 3)
    assert indices.tolist() == [[1, 2, 0]] and values.tolist() == [pytest.approx([0.7, 0.7, 0.5])]


def test_unit_summary_mean_and_max():
    maps = torch.tensor([[[[1.0, 3.0], [0.0, 0.0]], [[-1.0, -1.0], [-1.0, 7.0]]]])           # 1 x 2 x 2 x 2
    assert cd.unit_summary(maps, "mean").tolist() == [[1.0, 1.0]]
    assert cd.unit_summary(maps, "max").tolist() == [[3.0, 7.0]]
    assert cd.unit_summary(torch.ones(2, 3), "max").shape == (2, 3)


def test_annotation_scores_by_hand():
    # two pixel concepts over four images; the second is annotated on the first three only
    coverage = torch.tensor([[0.1, 0.02], [0.2, 0.04], [0.4, 0.0], [0.0, 0.5]])
    annotated = torch.tensor([[True, True, True], [True, True, True], [True, True, False], [True, False, True]])
    reference = cd.coverage_reference(coverage, annotated[:, :2], 0.5)
    assert reference.tolist() == pytest.approx([0.15, 0.02])               # medians over annotated images
    labels = torch.tensor([[True], [False], [True], [True]])
    scores = cd.annotation_scores(coverage, reference, labels, annotated)
    assert scores.tolist() == [pytest.approx(row) for row in
                               [[0.1 / 0.15, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]
    assert cd.pixel_coverage(torch.tensor([[[True, False, False, True]]])).tolist() == [[0.5]]


def test_agreement_and_its_chance_level():
    descriptions, labels = ["a", "a", "b", "c"], ["a", "b", "b", "a"]
    assert cd.agreement(descriptions, labels) == 0.5
    # descriptions a 2/4, b 1/4, c 1/4; labels a 2/4, b 2/4: 2/4 * 2/4 + 1/4 * 2/4
    assert cd.chance_agreement(descriptions, labels) == pytest.approx(6 / 16)


def test_top_k_beyond_the_probe_set_is_refused():
    with pytest.raises(ValueError, match="top_k is 4; it must be from 1 to the 3 probe images"):
        cd.similarity("soft_wpmi", S, ACTIVATIONS, top_k=4)


def test_annotation_matrix_picks_and_orders_the_named_concepts():
    # pixel concepts p (category 0), q (category 1); image concept i (category 1); four images
    coverage = torch.tensor([[0.1, 0.02], [0.2, 0.04], [0.4, 0.0], [0.0, 0.5]])
    category_annotated = torch.tensor([[True, True], [True, True], [True, False], [True, True]])
    labels = torch.tensor([[True], [False], [True], [True]])
    matrix = cd.annotation_matrix(coverage, labels, category_annotated, [0, 1, 1], ["p", "q", "i"], ["i", "p"], 0.5)
    # p's reference: the median of its coverage over the four images, 0.15; i is unknown on image 2
    assert matrix.tolist() == [pytest.approx(row) for row in [[1.0, 0.1 / 0.15], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]]


def test_agreement_metrics_by_hand():
    descriptions, labels = ["a", "a", "b", "c"], ["a", "b", "b", "a"]
    metrics = cd.agreement_metrics(descriptions, labels, [True, True, False, False])
    assert metrics == {"agreement_with_dissection": 0.5, "chance_agreement": pytest.approx(6 / 16),
                       "dissection_detectors": 2, "agreement_on_detectors": 0.5}
    assert cd.agreement_metrics(descriptions, labels, [False] * 4)["agreement_on_detectors"] is None
    # two layers, 3 of 6 units agree; chance 6/16 on the first (4 units), 1/2 on the second (2 units)
    overall = cd.overall_agreement({"x": descriptions, "y": ["a", "b"]}, {"x": labels, "y": ["a", "a"]})
    assert overall == {"agreement_with_dissection": 0.5,
                       "chance_agreement": pytest.approx((6 / 16 * 4 + 0.5 * 2) / 6)}
