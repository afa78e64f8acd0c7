"""netunits.methods.stats: rank AUC and Mann-Whitney p-values against scipy, Benjamini-Hochberg on a
worked example, empirical p-values, and the held-out split."""
import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu

from netunits.methods.stats import (
    average_ranks,
    balanced_split,
    benjamini_hochberg,
    empirical_p,
    mann_whitney,
    min_pvalue,
)


def hand_auc(scores, labels):
    """P(score of a positive > score of a negative) + half the ties, over every pair."""
    pos, neg = scores[labels], scores[~labels]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def test_auc_and_p_equal_scipy_and_the_pairwise_definition_with_ties():
    generator = np.random.default_rng(0)
    values = generator.integers(0, 5, size=(40, 6)).astype(np.float64)     # many ties
    values[:, 5] = generator.normal(size=40)                               # and one column without
    labels = generator.random((40, 4)) < 0.3
    auc, p = mann_whitney(torch.from_numpy(values), torch.from_numpy(labels))
    assert auc.shape == (6, 4)
    for unit in range(6):
        for label in range(4):
            x, y = values[labels[:, label], unit], values[~labels[:, label], unit]
            reference = mannwhitneyu(x, y, alternative="two-sided", method="asymptotic")
            assert auc[unit, label] == pytest.approx(reference.statistic / (len(x) * len(y)), abs=1e-12)
            assert auc[unit, label] == pytest.approx(hand_auc(values[:, unit], labels[:, label]), abs=1e-12)
            assert p[unit, label] == pytest.approx(reference.pvalue, rel=1e-9, abs=1e-15)


def test_paired_labels_give_each_unit_its_own_column():
    generator = np.random.default_rng(1)
    values = torch.from_numpy(generator.normal(size=(30, 3)))
    labels = torch.from_numpy(generator.random((30, 3)) < 0.5)
    auc, p = mann_whitney(values, labels, paired=True)
    full_auc, full_p = mann_whitney(values, labels)
    assert torch.allclose(auc, full_auc.diagonal()) and torch.allclose(p, full_p.diagonal())


def test_a_label_on_no_image_or_every_image_is_uninformative():
    values = torch.arange(10.0)[:, None]
    labels = torch.stack([torch.zeros(10, dtype=torch.bool), torch.ones(10, dtype=torch.bool)], dim=1)
    auc, p = mann_whitney(values, labels)
    assert auc.tolist() == [[0.5, 0.5]] and p.tolist() == [[1.0, 1.0]]


def test_ranks_average_ties_and_count_the_tie_term():
    ranks, tie_term = average_ranks(torch.tensor([[3.0], [1.0], [3.0], [2.0], [3.0]]))
    assert ranks[:, 0].tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]
    assert tie_term.tolist() == [3 ** 3 - 3]


def test_p_values_of_random_activations_are_roughly_uniform():
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(200, 50, generator=generator)
    labels = torch.rand(200, 40, generator=generator) < 0.3
    _, p = mann_whitney(values, labels)
    counts = torch.histc(p.float(), bins=10, min=0, max=1)
    expected = p.numel() / 10
    assert float(counts.min()) > 0.75 * expected and float(counts.max()) < 1.25 * expected
    assert 0.03 < float((p < 0.05).double().mean()) < 0.07


def test_min_pvalue_is_reached_by_complete_separation():
    values = torch.arange(20.0)[:, None]
    labels = (torch.arange(20) >= 15)[:, None]
    _, p = mann_whitney(values, labels)
    assert float(p) == pytest.approx(min_pvalue(5, 15), rel=1e-12)
    assert min_pvalue(0, 10) == 1.0 and min_pvalue(100, 100) < 1e-30


def test_benjamini_hochberg_on_a_worked_example():
    # m = 10, q = 0.05: thresholds q k / m = 0.005, 0.010, ..., 0.050. Sorted: 0.001, 0.008, 0.016,
    # 0.019, 0.041, ...; p_(3) = 0.016 misses 0.015 but p_(4) = 0.019 meets 0.020, so the step-up
    # rule takes k = 4 and the third smallest is significant too
    p = torch.tensor([0.041, 0.001, 0.30, 0.008, 0.016, 0.046, 0.60, 0.019, 0.09, 0.70])
    significant, adjusted = benjamini_hochberg(p, 0.05)
    assert significant.tolist() == [False, True, False, True, True, False, False, True, False, False]
    # m p_(k) / k = 0.01, 0.04, 0.0533, 0.0475, 0.082, 0.0767, 0.1286, 0.375, 0.667, 0.7; then the
    # running minimum from the largest
    expected = [0.0766667, 0.01, 0.375, 0.04, 0.0475, 0.0766667, 0.6666667, 0.0475, 0.1285714, 0.7]
    assert adjusted.tolist() == pytest.approx(expected, abs=1e-6)
    assert benjamini_hochberg(torch.tensor([0.2, 0.3]), 0.05)[0].tolist() == [False, False]


def test_empirical_p_counts_null_values_at_or_above_the_observation():
    null = torch.tensor([0.1, 0.2, 0.3, 0.3, 0.4])
    p = empirical_p(torch.tensor([0.05, 0.3, 0.35, 0.9]), null)
    assert p.tolist() == pytest.approx([6 / 6, 4 / 6, 2 / 6, 1 / 6])


def test_the_split_is_disjoint_balanced_seeded_and_stable():
    labels = torch.tensor([i % 10 for i in range(200)] + [3] * 20)
    fit, held = balanced_split(labels, 0.5, seed=7)
    assert set(fit.tolist()).isdisjoint(held.tolist()) and len(fit) + len(held) == len(labels)
    for digit in range(10):
        count = int((labels == digit).sum())
        assert int((labels[held] == digit).sum()) == round(0.5 * count)
    again = balanced_split(labels, 0.5, seed=7)
    assert torch.equal(again[0], fit) and torch.equal(again[1], held)
    other = balanced_split(labels, 0.5, seed=8)
    assert not torch.equal(other[1], held)
    # a class of one image stays in the fit part; a tiny fraction still holds one of each out
    fit, held = balanced_split(torch.tensor([0, 1, 1, 1]), 0.01, seed=0)
    assert fit.tolist()[0] == 0 and len(held) == 1
