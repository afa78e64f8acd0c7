"""netunits.methods.invert: INVERT's beam search recovers a planted formula, its AUC is the
pairwise definition, and the fraction bounds hold."""
import itertools

import torch

from netunits.methods.invert import formula_labels, formula_string, invert_search
from netunits.methods.stats import mann_whitney


def toy(seed=0, n=300, k=6):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.rand(n, k, generator=generator) < 0.3
    return labels, generator


def test_a_unit_equal_to_a_formula_gets_that_formula_with_auc_one():
    labels, generator = toy()
    planted = (labels[:, 0] & ~labels[:, 2]) | labels[:, 4]
    noise = torch.rand(len(labels), generator=generator)
    values = torch.stack([planted.double() + 0.1 * noise, noise], dim=1)
    found = invert_search(values, labels, beam=20, max_length=3, max_fraction=0.6)
    steps, auc = found[0]
    assert auc == 1.0
    assert torch.equal(formula_labels(steps, labels), planted)
    assert formula_string(steps, [f"c{i}" for i in range(6)]) in ("(c0 AND NOT c2) OR c4", "(NOT c2 AND c0) OR c4")


def test_the_best_formula_is_at_least_every_single_atom_and_its_auc_is_the_definition():
    labels, generator = toy(1)
    values = torch.randn(len(labels), 3, generator=generator)
    for unit, (steps, auc) in enumerate(invert_search(values, labels, beam=3, max_length=2)):
        holds = formula_labels(steps, labels)
        assert 0 < float(holds.double().mean()) <= 0.5
        reference, _ = mann_whitney(values[:, unit:unit + 1], holds[:, None])
        assert abs(float(reference) - auc) < 1e-12
        for index, negated in itertools.product(range(labels.shape[1]), (False, True)):
            atom = labels[:, index] ^ negated
            if 0 < float(atom.double().mean()) <= 0.5:
                assert auc >= float(mann_whitney(values[:, unit:unit + 1], atom[:, None])[0]) - 1e-12
