"""ROF at a layer with spatial maps (netunits/layer_rof.py) on a tiny CIFAR ResNet."""
import pytest
import torch
from torch import nn

from netunits.errors import PipelineError
from netunits.layer_rof import (
    channel_order,
    grid,
    grid_turning_points,
    layer_maps,
    refine,
    retrieval_at_layer,
    tail_logits,
    tail_modules,
)
from netunits.models.cifar_resnet import cifar_resnet

DEVICE = torch.device("cpu")
BATCH = 16


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(depth=8):
    """A trained-looking ResNet8 (random weights, batch-norm statistics from the data) on 40
    random 8 x 8 images of 4 classes."""
    torch.manual_seed(0)
    model = cifar_resnet(depth)
    model.fc = nn.Linear(64, 4)
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (40, 3, 8, 8), generator=generator, dtype=torch.uint8)
    with torch.no_grad():                      # running statistics that are not the identity
        model.train()
        model(images.float() / 255)
    model.eval()
    return model, images, torch.arange(40) % 4


def model_accuracy_and_loss(logits, labels):
    return float((logits.argmax(1) == labels).double().mean()), float(nn.functional.cross_entropy(logits.double(),
                                                                                                    labels))


@pytest.mark.parametrize("layer", ["layer1", "layer2", "layer3.0"])
def test_every_channel_kept_is_the_model_and_none_kept_is_the_layer_zeroed(layer):
    model, images, labels = tiny(depth=14 if layer == "layer3.0" else 8)
    maps, logits = layer_maps(model, images, layer, BATCH, DEVICE, "fp32")
    order = channel_order(maps)
    n = maps.shape[1]
    results = retrieval_at_layer(model, layer, maps, labels, order, [0, n // 2, n], BATCH, DEVICE, "fp32",
                                 reference_logits=logits)
    assert results[n] == model_accuracy_and_loss(logits, labels)
    assert torch.equal(tail_logits(model, layer, maps, torch.ones(n, dtype=torch.bool), BATCH, DEVICE, "fp32"),
                       logits)
    # the network with that layer's output zeroed, run whole
    hook = dict(model.named_modules())[layer].register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
    try:
        _, zeroed = layer_maps(model, images, layer, BATCH, DEVICE, "fp32")
    finally:
        hook.remove()
    none = tail_logits(model, layer, maps, torch.zeros(n, dtype=torch.bool), BATCH, DEVICE, "fp32")
    assert torch.equal(none, zeroed)
    assert results[0] == model_accuracy_and_loss(zeroed, labels)
    # half the channels: the kept ones are the first half of the L1 order
    keep = torch.zeros(n, dtype=torch.bool)
    keep[order[:n // 2]] = True
    assert results[n // 2] == model_accuracy_and_loss(
        tail_logits(model, layer, maps, keep, BATCH, DEVICE, "fp32"), labels)


def test_channel_order_by_l1_ties_to_the_lower_index():
    maps = torch.zeros(2, 4, 1, 2)
    maps[0, 1] = 6.0                # L1 12 (two positions)
    maps[:, 2] = -2.0               # L1 8 (absolute values)
    maps[1, 3, 0, 0] = 12.0         # L1 12, ties with channel 1
    assert channel_order(maps).tolist() == [1, 3, 2, 0]


def test_grid_and_refinement_find_the_full_curves_turning_points():
    assert grid(10, 4) == [0, 4, 8, 10] and grid(3, 1) == [0, 1, 2, 3]
    model, images, labels = tiny()
    maps, logits = layer_maps(model, images, "layer2", BATCH, DEVICE, "fp32")
    order = channel_order(maps)
    full = retrieval_at_layer(model, "layer2", maps, labels, order, range(33), BATCH, DEVICE, "fp32")
    coarse = {k: full[k] for k in grid(32, 8)}
    for tolerances in ((0.0, 0.0), (0.05, 0.02)):
        refined = refine(coarse, model, "layer2", maps, labels, order, BATCH, DEVICE, "fp32", *tolerances)
        assert all(refined[k] == full[k] for k in refined) and len(refined) < len(full)
        assert grid_turning_points(refined, *tolerances) == grid_turning_points(full, *tolerances)
        ks = sorted(coarse)
        for by_metric in grid_turning_points(coarse, *tolerances).values():
            for k in by_metric.values():
                i = ks.index(k)
                assert set(range(ks[max(0, i - 1)], ks[min(len(ks) - 1, i + 1)] + 1)) <= set(refined)


def test_bad_layers_and_grids_are_one_line():
    model, images, labels = tiny()
    with pytest.raises(PipelineError, match="rof.layers.*'nope'"):
        layer_maps(model, images, "nope", BATCH, DEVICE, "fp32")
    with pytest.raises(PipelineError, match="rof.layers.*'avgpool'.*no spatial maps"):
        layer_maps(model, images, "avgpool", BATCH, DEVICE, "fp32")
    with pytest.raises(PipelineError, match="rof.layers.*'layer2.0.conv1'.*top-level layer or one block"):
        tail_modules(model, "layer2.0.conv1")
    maps, logits = layer_maps(model, images, "layer2", BATCH, DEVICE, "fp32")
    with pytest.raises(PipelineError, match="rof.k_grid.*from 0 to 32"):
        retrieval_at_layer(model, "layer2", maps, labels, channel_order(maps), [0, 33], BATCH, DEVICE, "fp32")


def test_a_model_whose_forward_is_not_its_layers_in_order_is_refused():
    class Doubled(type(tiny()[0])):
        def forward(self, x):
            return 2 * super().forward(x)
    model, images, labels = tiny()
    model.__class__ = Doubled
    maps, logits = layer_maps(model, images, "layer2", BATCH, DEVICE, "fp32")
    with pytest.raises(PipelineError, match="does not reproduce its output"):
        retrieval_at_layer(model, "layer2", maps, labels, channel_order(maps), [32], BATCH, DEVICE, "fp32",
                           reference_logits=logits)
