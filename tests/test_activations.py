"""netunits.activations: hooks by module name, pooling, streaming."""
import pytest
import torch

from netunits.activations import iterate_activations, layer_names, pool, pooled_features
from netunits.errors import PipelineError
from netunits.models.registry import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("resnet18", 10).eval()


def test_pool_by_hand():
    maps = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]], [[0.0, 0.0], [0.0, 8.0]]]])     # 1 x 2 x 2 x 2
    assert pool(maps).tolist() == [[4.0, 2.0]]
    assert pool(torch.tensor([[[[2.5]]]])).tolist() == [[2.5]]
    assert pool(torch.tensor([[1.0, 2.0]])).tolist() == [[1.0, 2.0]]
    with pytest.raises(PipelineError, match=r"a layer's output has shape \(1, 2, 3\)"):
        pool(torch.zeros(1, 2, 3))


def test_avgpool_features_are_what_the_head_reads(model):
    images = torch.randint(0, 256, (6, 1, 32, 32), dtype=torch.uint8)
    features, logits = pooled_features(model, images, ["avgpool", "layer3"], 4, torch.device("cpu"), "fp32")
    assert features["avgpool"].shape == (6, 512) and features["layer3"].shape == (6, 256)
    assert (features["avgpool"] >= 0).all()
    with torch.no_grad():
        assert torch.allclose(logits, model.fc(features["avgpool"]), atol=1e-5)


def test_spatial_maps_stream_by_batch_and_inner_modules_are_copied(model):
    images = torch.randint(0, 256, (5, 1, 32, 32), dtype=torch.uint8)
    seen = []
    for start, outputs, logits in iterate_activations(model, images, ["layer2", "layer4.1.bn2", "layer4"], 2,
                                                      torch.device("cpu"), "fp32"):
        seen.append((start, outputs["layer2"].shape, logits.shape))
        # bn2's output is changed in place by the block (`out += identity`, then ReLU); the hook
        # kept a copy, so it still holds negative values while layer4's output cannot
        assert (outputs["layer4.1.bn2"] < 0).any() and (outputs["layer4"] >= 0).all()
    assert seen == [(0, (2, 128, 4, 4), (2, 10)), (2, (2, 128, 4, 4), (2, 10)), (4, (1, 128, 4, 4), (1, 10))]
    assert not any(module._forward_hooks for module in model.modules())     # hooks removed


def test_layer_names_and_a_bad_name(model):
    names = layer_names(model)
    assert names[:4] == ["conv1", "bn1", "relu", "maxpool"] and "layer4.1.conv2" in names and names[-1] == "fc"
    with pytest.raises(PipelineError, match="'rof.layer' is 'layer9'; the model's layers are conv1, bn1"):
        next(iterate_activations(model, torch.zeros(1, 1, 32, 32, dtype=torch.uint8), ["layer9"], 1,
                                 torch.device("cpu"), "fp32", key="rof.layer"))
