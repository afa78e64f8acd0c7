"""netunits.methods.influence on toys whose answers are known, checked by hand."""
import math

import pytest
import torch

from netunits.errors import PipelineError
from netunits.methods import influence


def planted(n_per_class=20, n_classes=10, n_units=32, seed=0):
    """Features where class c lights up units c and c + 10 above a weak random background."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(n_per_class)
    features = torch.rand(len(labels), n_units, generator=g) * 0.1
    features[torch.arange(len(labels)), labels] += 1.0
    features[torch.arange(len(labels)), labels + 10] += 0.8
    return features, labels


def test_planted_units_are_each_class_set():
    features, labels = planted()
    sets, counts = influence.class_sets(features, labels, 10, k=2, k_image=2)
    assert [sorted(s.tolist()) for s in sets] == [[c, c + 10] for c in range(10)]
    assert sets[3].tolist() == [3, 13]            # equal counts (20 each): the larger activation first
    assert counts[3, 3] == 20 and counts[3, 13] == 20 and counts[3].sum() == 40
    with pytest.raises(PipelineError, match="'influence.k' 33 and 'influence.k_image' 2 must be from 1 to"):
        influence.class_sets(features, labels, 10, k=33, k_image=2)


def test_l1_normalisation_and_stable_top_units():
    assert influence.l1_normalise(torch.tensor([[1.0, 3.0], [0.0, 0.0]])).tolist() == [[0.25, 0.75], [0.0, 0.0]]
    assert influence.top_units(torch.tensor([[1.0, 2.0, 2.0, 0.5]]), 2).tolist() == [[1, 2]]


def test_frequency_decides_before_activation():
    # unit 0 is in the top-1 of two images with small values; unit 1 of one image with a huge one
    features = torch.tensor([[0.6, 0.4, 0.0], [0.6, 0.4, 0.0], [0.01, 0.99, 0.0]])
    sets, counts = influence.class_sets(features, torch.zeros(3, dtype=torch.int64), 1, k=1, k_image=1)
    assert sets.tolist() == [[0]] and counts.tolist() == [[2, 1, 0]]


def test_decomposed_layer_with_every_unit_is_the_full_layer():
    g = torch.Generator().manual_seed(1)
    features, weight, bias = torch.rand(50, 8, generator=g), torch.randn(3, 8, generator=g), torch.randn(3, generator=g)
    full = features.double() @ weight.double().T + bias.double()
    assert torch.equal(influence.decomposed_logits(features, weight, bias, torch.ones(3, 8, dtype=torch.bool)), full)
    # by hand: class 0 keeps only unit 2, so its logit is W[0, 2] f_2 + b_0
    mask = influence.membership(torch.tensor([[2], [0], [1]]), 8)
    logits = influence.decomposed_logits(features, weight, bias, mask)
    assert torch.allclose(logits[:, 0], features[:, 2].double() * weight[0, 2].double() + bias[0].double())


def test_mutual_information_by_hand():
    a = [1, 1, 0, 0]
    assert influence.mutual_information(a, a) == pytest.approx(math.log(2))       # H(a) for a fair split
    assert influence.mutual_information(a, [1, 0, 1, 0]) == pytest.approx(0.0)    # independent
    # a = 1100, b = 1000: p(1,1) = 1/4, p(1,0) = 1/4, p(0,0) = 1/2; p_a = (1/2, 1/2), p_b(1) = 1/4
    expected = 0.25 * math.log(0.25 / (0.5 * 0.25)) + 0.25 * math.log(0.25 / (0.5 * 0.75)) + \
        0.5 * math.log(0.5 / (0.5 * 0.75))
    assert influence.mutual_information(a, [1, 0, 0, 0]) == pytest.approx(expected)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]], dtype=torch.bool)
    assert influence.mean_pairwise_mi(mask, include_self=False) == pytest.approx(0.0)
    assert influence.mean_pairwise_mi(mask, include_self=True) == pytest.approx(math.log(2) / 2)


def test_essentiality_on_a_toy_with_a_known_answer():
    # two classes, four units; class c is decided by unit c alone (W = identity on units 0, 1)
    features = torch.tensor([[5.0, 0.0, 0.0, 0.0]] * 3 + [[0.0, 5.0, 0.0, 0.0]] * 2)
    labels = torch.tensor([0, 0, 0, 1, 1])
    weight, bias = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]), torch.zeros(2)
    sets = torch.tensor([[0], [1]])
    # noise on every other unit leaves unit c's 5 against N(0, 1) at most a few sigma: all kept
    assert influence.essentiality(features, labels, weight, bias, sets, 0, "others") == [(3, 3), (2, 2)]
    # noise on unit c: its logit is N(0, 1) against the rival's N(0, 1) noise ... here the rival's unit is
    # also replaced only if it is in the set, so class 0's rival logit stays 0: kept iff noise > 0
    g = torch.Generator().manual_seed(0)
    first = torch.randn(3, 1, generator=g, dtype=torch.float64)
    expected_0 = int((first[:, 0] > 0).sum())
    result = influence.essentiality(features, labels, weight, bias, sets, 0, "set")
    assert result[0] == (3, expected_0)
    assert influence.essentiality(features, labels, weight, bias, sets, 0, "set") == result   # seeded
