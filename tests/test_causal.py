"""netunits.methods.causal: the ablation effect through a toy final layer, by hand, and by a forward
pass of the rest of a toy network."""
import math

import torch

from netunits.methods.causal import (
    ablation_drops,
    class_effect,
    concept_class,
    formula_classes,
    forward_drops,
    logit_drops,
    margins,
    most_hurt,
    named_class,
)


def test_ablation_drops_equal_a_hand_computation_on_a_toy_final_layer():
    # two units, two classes, three images: logits = f W^T + b
    features = torch.tensor([[2.0, 1.0], [0.5, 3.0], [1.0, 1.0]])
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0]])        # class 0 reads unit 0, class 1 reads unit 1
    bias = torch.tensor([0.0, 0.5])
    labels = torch.tensor([0, 1, 0])
    accuracy, margin = ablation_drops(features, weight, bias, labels, 2)
    # full logits: [2, 1.5] (correct, margin 0.5), [0.5, 3.5] (correct, 3.0), [1, 1.5] (wrong, -0.5)
    # unit 0 zeroed: [0, 1.5] (wrong, -1.5), [0, 3.5] (correct, 3.5), [0, 1.5] (wrong, -1.5)
    # unit 1 zeroed: [2, 0.5] (correct, 1.5), [0.5, 0.5] (argmax 0: wrong, 0.0), [1, 0.5] (correct, 0.5)
    assert accuracy.tolist() == [[0.5, 0.0], [-0.5, 1.0]]
    # margin drops, class 0 over images 0 and 2, class 1 over image 1
    assert margin.tolist() == [[((0.5 + 1.5) + (-0.5 + 1.5)) / 2, 3.0 - 3.5], [((0.5 - 1.5) + (-0.5 - 0.5)) / 2, 3.0]]
    assert most_hurt(margin).tolist() == [0, 1]
    assert class_effect(margin, 0, 0) == 1.5 - (-0.5)


def test_margins_of_a_batch_of_ablations_broadcast_the_labels():
    logits = torch.tensor([[[1.0, 3.0, 2.0]], [[0.0, -1.0, 4.0]]])          # images x units x classes
    assert margins(logits, torch.tensor([1, 0])).tolist() == [[1.0], [-4.0]]


def test_a_class_with_no_image_has_no_drop():
    accuracy, margin = ablation_drops(torch.ones(2, 1), torch.ones(3, 1), torch.zeros(3), torch.tensor([0, 0]), 3)
    assert not math.isnan(float(margin[0, 0])) and math.isnan(float(margin[0, 1])) and math.isnan(float(accuracy[0, 2]))
    assert int(most_hurt(margin)[0]) == 0


def test_answers_name_classes_except_negated_ones():
    assert concept_class("digit_7") == 7 and concept_class("hole") is None and concept_class("digit_") is None
    assert formula_classes(("AND", ("AND NOT", "hole", "digit_0"), "digit_3")) == {3}
    assert formula_classes(("OR", "digit_1", "digit_2")) == {1, 2}
    assert named_class({3}) == 3 and named_class({1, 2}) is None and named_class(set()) is None


class Toy(torch.nn.Module):
    """conv (layer1) -> pooled -> fc, run in order as the ResNets here run their children."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer1 = torch.nn.Conv2d(1, 3, 1)
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.avgpool(self.layer1(x)).flatten(1))


def test_forward_drops_equal_the_exact_drops_where_the_rest_is_pooling_and_the_final_layer():
    model = Toy().eval()
    images = torch.randn(6, 1, 4, 4)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    with torch.no_grad():
        maps = model.layer1(images)
        logits = model(images)
    accuracy, margin = forward_drops(model, "layer1", maps, logits, labels, 2, 4, torch.device("cpu"), "fp32")
    # zeroing channel j of the maps zeroes pooled feature j: the exact broadcast through fc
    exact_accuracy, exact_margin = ablation_drops(maps.mean(dim=(2, 3)), model.fc.weight.detach(),
                                                  model.fc.bias.detach(), labels, 2)
    assert torch.equal(accuracy, exact_accuracy)
    assert torch.allclose(margin, exact_margin, atol=1e-6)


def test_logit_drops_by_hand():
    logits = torch.tensor([[2.0, 1.0], [0.0, 1.0]])                     # both images correct
    ablated = torch.tensor([[[0.0, 1.0]], [[0.0, 3.0]]])                 # one unit zeroed
    accuracy, margin = logit_drops(logits, ablated, torch.tensor([0, 1]), 2)
    assert accuracy.tolist() == [[1.0, 0.0]]                             # image 0 becomes wrong
    assert margin.tolist() == [[1.0 - (-1.0), 1.0 - 3.0]]
