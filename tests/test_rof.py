"""netunits.methods.rof: the ROF method on tensors small enough to check by hand."""
import functools
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from netunits.methods import rof
from netunits.methods.rof import build_taxonomy

# ---------------------------------------------------------------------------------------------
# A three-unit, two-class example worked out on paper.
#   features (4 samples x 3 units)      labels   fc weight (2 classes x 3 units), bias 0
#   s0: [3, 0, 1]                        0        class 0: [1, 0, 0]
#   s1: [3, 0, 0]                        0        class 1: [0, 1, 1]
#   s2: [0, 2, 0]                        1
#   s3: [0, 0, 1]                        1
# L1 norms 6, 2, 2 -> order [0, 1, 2] (the 2-2 tie goes to the lower unit index).
# n=0: all logits 0 -> argmax picks class 0: s0, s1 right              acc 2/4, loss ln 2
# n=1: + unit 0: s0, s1 get [3, 0] (right); s2, s3 still [0, 0]        acc 2/4
# n=2: + unit 1: s2 gets [0, 2] (right)                                 acc 3/4
# n=3: + unit 2: s0 [3, 1] (right), s3 [0, 1] (right)                   acc 4/4
# CE of logits [a, b] for label 0 is log(1 + e^(b - a)); for label 1, log(1 + e^(a - b)).
# ---------------------------------------------------------------------------------------------
FEATURES = torch.tensor([[3.0, 0, 1], [3, 0, 0], [0, 2, 0], [0, 0, 1]])
LABELS = torch.tensor([0, 0, 1, 1])
WEIGHT = torch.tensor([[1.0, 0, 0], [0, 1, 1]])
BIAS = torch.zeros(2)


def softplus(x):
    return math.log1p(math.exp(x))


HAND_ACCURACY = [0.5, 0.5, 0.75, 1.0]
HAND_LOSS = [
    math.log(2),
    (2 * softplus(-3) + 2 * math.log(2)) / 4,
    (2 * softplus(-3) + softplus(-2) + math.log(2)) / 4,
    (softplus(-2) + softplus(-3) + softplus(-2) + softplus(-1)) / 4,
]


def test_ranking_is_descending_l1_with_ties_by_unit_index():
    assert rof.unit_l1_norms(FEATURES).tolist() == [6.0, 2.0, 2.0]
    assert rof.unit_order(FEATURES, "l1", seed=0).tolist() == [0, 1, 2]
    assert rof.unit_order(FEATURES, "ascending", seed=0).tolist() == [1, 2, 0]


def test_random_ranking_is_a_seeded_permutation():
    features = torch.rand(5, 50)
    a, b = rof.unit_order(features, "random", 3), rof.unit_order(features, "random", 3)
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(50))
    assert not torch.equal(a, rof.unit_order(features, "random", 4))


@pytest.mark.parametrize("curves,tolerance", [
    (functools.partial(rof.retrieval_curves, dtype=torch.float64), 1e-12),
    (rof.retrieval_curves, 1e-6),  # the default, float32
    (rof.retrieval_curves_loop, 1e-12),
])
def test_hand_worked_curve(curves, tolerance):
    accuracy, loss = curves(FEATURES, LABELS, WEIGHT, BIAS, torch.tensor([0, 1, 2]))
    assert accuracy.tolist() == HAND_ACCURACY
    assert loss.tolist() == pytest.approx(HAND_LOSS, abs=tolerance)
    points = rof.turning_points(accuracy, loss, acc_tolerance=0.3, loss_tolerance=0.0)
    # exact: first maximum of accuracy and first minimum of loss are both at all 3 units
    assert points["exact"] == {"acc": 3, "loss": 3}
    # tolerance 0.3 (absolute): 0.75 >= 1.0 - 0.3 first holds at n=2
    assert points["tolerance"] == {"acc": 2, "loss": 3}
    assert rof.is_degenerate(3, 3) and not rof.is_degenerate(2, 3)


def test_bias_is_kept_at_zero_units():
    accuracy, loss = rof.retrieval_curves(FEATURES, LABELS, WEIGHT, torch.tensor([0.0, 1.0]), torch.tensor([0, 1, 2]))
    assert accuracy[0] == 0.5  # bias favours class 1: s2 and s3 right with no unit at all
    assert loss[0] == pytest.approx(softplus(1) * 0.5 + softplus(-1) * 0.5, abs=1e-6)


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("n_samples,n_units,n_classes,chunk", [(37, 23, 10, 2**22), (64, 40, 5, 500), (5, 1, 3, 1)])
def test_vectorised_sweep_equals_the_per_n_loop(n_samples, n_units, n_classes, chunk, dtype, rtol):
    generator = torch.Generator().manual_seed(n_units)
    features = torch.rand(n_samples, n_units, generator=generator).relu()
    labels = torch.randint(0, n_classes, (n_samples,), generator=generator)
    weight = torch.randn(n_classes, n_units, generator=generator)
    bias = torch.randn(n_classes, generator=generator)
    order = torch.randperm(n_units, generator=generator)
    fast = rof.retrieval_curves(features, labels, weight, bias, order, chunk_elements=chunk, dtype=dtype)
    slow = rof.retrieval_curves_loop(features, labels, weight, bias, order)
    assert torch.equal(fast[0], slow[0])
    assert torch.allclose(fast[1], slow[1], rtol=rtol, atol=rtol)


# The sweep's bits for a seeded input of the tiny pipeline's train size (two chunks), printed
# by a fresh process so that MKL's environment variables take effect.
SWEEP_DIGEST = """
import hashlib, torch
from netunits.methods.rof import retrieval_curves
g = torch.Generator().manual_seed(0)
features = torch.rand(300, 512, generator=g) * 3
labels = torch.randint(0, 10, (300,), generator=g)
weight, bias = torch.randn(10, 512, generator=g) * 0.1, torch.randn(10, generator=g)
acc, loss = retrieval_curves(features, labels, weight, bias, torch.randperm(512, generator=g))
print(hashlib.sha256(acc.numpy().tobytes() + loss.numpy().tobytes()).hexdigest())
"""


def sweep_digest(**env):
    return subprocess.run([sys.executable, "-c", SWEEP_DIGEST], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.slow
def test_sweep_bits_do_not_depend_on_mkl_code_paths():
    # DVC compares output hashes, so a rerun must write the same bits. MKL's BLAS and vector
    # math results depend on the kernels it picks at run time; forcing MKL onto other code paths
    # must not change the sweep.
    default = sweep_digest()
    assert sweep_digest(MKL_CBWR="COMPATIBLE") == default
    assert sweep_digest(MKL_ENABLE_INSTRUCTIONS="AVX2") == default


def test_exact_ties_follow_argmax_first_index():
    # Zero features: every step's logits are the bias; with a tied bias argmax picks class 0.
    features, labels = torch.zeros(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    for bias, expected in ((torch.zeros(3), 2 / 6), (torch.tensor([0.0, 1.0, 1.0]), 2 / 6),
                           (torch.tensor([1.0, 1.0, 0.0]), 2 / 6)):
        accuracy, _ = rof.retrieval_curves(features, labels, torch.ones(3, 4), bias, torch.arange(4))
        loop, _ = rof.retrieval_curves_loop(features, labels, torch.ones(3, 4), bias, torch.arange(4))
        assert accuracy.tolist() == loop.tolist() == [expected] * 5


def test_classes_with_equal_weights_tie_at_every_step():
    # Classes 0 and 1 share their weights and bias, so their logits are equal at every step, and
    # argmax picks class 0: exactly the label-0 samples are right. The label's logit and its
    # rivals' come from two separate prefix sums; this fails if they round differently.
    generator = torch.Generator().manual_seed(3)
    features = torch.rand(50, 30, generator=generator) * 5
    labels = torch.randint(0, 2, (50,), generator=generator)
    shared = torch.randn(30, generator=generator)
    weight = torch.stack([shared, shared, torch.full((30,), -1.0)])
    bias = torch.tensor([0.3, 0.3, -100.0])
    accuracy, _ = rof.retrieval_curves(features, labels, weight, bias, torch.randperm(30, generator=generator),
                                       chunk_elements=300)
    assert accuracy.tolist() == [float((labels == 0).double().mean())] * 31


# ---------------------------------------------------------------------------------------------
# turning points: edge cases
# ---------------------------------------------------------------------------------------------
def test_flat_curve_turns_at_zero_units():
    flat = torch.full((6,), 0.3)
    assert rof.turning_point_exact(flat, maximise=True) == 0
    assert rof.turning_point_exact(flat, maximise=False) == 0
    assert rof.turning_point_tolerance(flat, True, 0.0, relative=False) == 0


def test_ties_take_the_first_extreme():
    curve = torch.tensor([0.1, 0.8, 0.5, 0.8, 0.8])
    assert rof.turning_point_exact(curve, maximise=True) == 1
    assert rof.turning_point_exact(torch.tensor([0.9, 0.2, 0.2, 0.4]), maximise=False) == 1


def test_turning_point_at_the_last_unit():
    rising = torch.linspace(0, 1, 513)
    assert rof.turning_point_exact(rising, maximise=True) == 512
    assert rof.turning_point_tolerance(rising, True, 0.0, relative=False) == 512
    # absolute tolerance 0.01 on a line rising by 1/512 per unit: the first n with n/512 >= 0.99
    assert rof.turning_point_tolerance(rising, True, 0.01, relative=False) == math.ceil(0.99 * 512)
    assert rof.is_degenerate(512, 512) and rof.is_degenerate(0, 512)


def test_loss_tolerance_is_relative_to_the_minimum():
    loss = torch.tensor([2.0, 1.0, 0.104, 0.1, 0.1005])
    assert rof.turning_point_tolerance(loss, False, 0.05, relative=True) == 2   # 0.104 <= 0.105
    assert rof.turning_point_tolerance(loss, False, 0.01, relative=True) == 3   # 0.104 > 0.101
    assert rof.turning_point_tolerance(loss, False, 0.0, relative=True) == rof.turning_point_exact(loss, False)


def test_tolerance_never_exceeds_the_exact_point():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        curve = torch.rand(50, generator=generator)
        for tol in (0.0, 0.01, 0.2):
            assert rof.turning_point_tolerance(curve, True, tol, False) <= rof.turning_point_exact(curve, True)
            assert rof.turning_point_tolerance(curve, False, tol, True) <= rof.turning_point_exact(curve, False)


# ---------------------------------------------------------------------------------------------
# taxonomy: units whose category is known in advance
# ---------------------------------------------------------------------------------------------
# Two classes; every unit's fc column is [1, 0] (evidence for class 0) except D's, [0, 0];
# bias [0, 0.5], so a class-0 sample is right once a retrieved unit gives it >= 0.5.
# Unit A fires only on training rows, B only on test rows, C on both, D is weak noise.
#   train rows: a [3,0,0,.1] (0), c [0,0,2,.1] (0), one [0,0,0,.1] (1): order A C D B, n0 = 2
#   test rows:  b [0,3,0,.1] (0), c [0,0,2,.1] (0), one [0,0,0,.1] (1): order B C D A, n0 = 2
A, B, C, D = range(4)
TAX_WEIGHT = torch.tensor([[1.0, 1, 1, 0], [0, 0, 0, 0]])
TAX_BIAS = torch.tensor([0.0, 0.5])
TAX_TRAIN = (torch.tensor([[3.0, 0, 0, .1], [0, 0, 2, .1], [0, 0, 0, .1]]), torch.tensor([0, 0, 1]))
TAX_TEST = (torch.tensor([[0.0, 3, 0, .1], [0, 0, 2, .1], [0, 0, 0, .1]]), torch.tensor([0, 0, 1]))


def sweep(features, labels):
    order = rof.unit_order(features, "l1", 0)
    accuracy, loss = rof.retrieval_curves(features, labels, TAX_WEIGHT, TAX_BIAS, order)
    return {"l1": {"order": order, "accuracy": accuracy, "loss": loss}}


def test_units_fall_into_the_categories_they_were_built_for():
    curves = {"train": sweep(*TAX_TRAIN), "test": sweep(*TAX_TEST)}
    assert curves["train"]["l1"]["order"].tolist() == [A, C, D, B]
    assert curves["test"]["l1"]["order"].tolist() == [B, C, D, A]
    points, categories, u0, degenerate = build_taxonomy(curves, "l1", acc_tolerance=0.0, loss_tolerance=0.0)
    for definition in ("exact", "tolerance"):
        for metric in ("acc", "loss"):
            assert points["train"][definition][metric] == 2
            assert categories[(definition, metric)] == ["train_only", "test_only", "both", "neither"]
            assert not degenerate[(definition, metric)]
    counts = rof.category_counts(categories[("exact", "acc")])
    assert counts == {"both": 1, "train_only": 1, "test_only": 1, "neither": 1, "both_ratio": 0.25,
                      "train_only_ratio": 0.25, "test_only_ratio": 0.25, "neither_ratio": 0.25}


def test_u0_of_all_units_or_none_is_degenerate():
    # One class-0 sample, every unit adds evidence for class 0: the loss falls with every unit
    # (n0_loss = all 4 units), while at 0 units the tied logits already pick class 0 (n0_acc = 0).
    features, labels = torch.tensor([[1.0, 2, 3, 4]]), torch.tensor([0])
    weight, bias = torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, 0]]), torch.zeros(2)
    order = rof.unit_order(features, "l1", 0)
    accuracy, loss = rof.retrieval_curves(features, labels, weight, bias, order)
    curves = {"train": {"l1": {"order": order, "accuracy": accuracy, "loss": loss}}}
    curves["test"] = curves["train"]
    points, categories, _, degenerate = build_taxonomy(curves, "l1", 0.0, 0.0)
    assert points["train"]["exact"] == {"acc": 0, "loss": 4}
    assert degenerate[("exact", "loss")] and degenerate[("exact", "acc")]
    assert categories[("exact", "loss")] == ["both"] * 4
    assert categories[("exact", "acc")] == ["neither"] * 4


def test_categorize_by_hand():
    train = torch.tensor([True, True, False, False])
    test = torch.tensor([True, False, True, False])
    assert rof.categorize(train, test) == ["both", "train_only", "test_only", "neither"]
    assert rof.highly_active(torch.tensor([2, 0, 1]), 2).tolist() == [True, False, True]
    assert rof.highly_active(torch.tensor([2, 0, 1]), 0).tolist() == [False, False, False]
