"""netunits/models/resnet.py must be torchvision's resnet18: same keys, same initial bits, same outputs
and gradients, and building the pipeline's model must not import torchvision."""
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from netunits.accel.maxpool import MaxPool2d
from netunits.models.resnet import resnet18
from netunits.torchvision_compat import torchvision_models


def test_same_seed_gives_torchvision_weights_bit_for_bit():
    torch.manual_seed(7)
    ours = resnet18()
    next_draw = torch.rand(3)
    torch.manual_seed(7)
    reference = torchvision_models().resnet18(weights=None)
    reference_next_draw = torch.rand(3)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
        [(k, v.shape) for k, v in reference.state_dict().items()]
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), reference.state_dict().values()))
    # the random stream is left where torchvision leaves it, so the fc built next matches too
    assert torch.equal(next_draw, reference_next_draw)


@pytest.mark.slow
def test_same_outputs_gradients_and_running_statistics_in_training():
    torch.manual_seed(0)
    ours = resnet18().double().train()
    reference = torchvision_models().resnet18(weights=None).double().train()
    reference.load_state_dict(ours.state_dict())
    x = torch.rand(3, 3, 48, 48, dtype=torch.float64)
    out, out_ref = ours(x), reference(x)
    assert torch.equal(out, out_ref)
    out.square().sum().backward()
    out_ref.square().sum().backward()
    for (name, p), p_ref in zip(ours.named_parameters(), reference.parameters()):
        assert torch.equal(p.grad, p_ref.grad), name
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), reference.state_dict().values()))


def test_building_the_model_does_not_import_torchvision():
    code = ("import sys; from netunits.models.registry import build_model; build_model(\"resnet18\", 10); "
            "print('torchvision' in sys.modules, 'torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_stem_matches_torchvision_bit_for_bit_in_bf16_channels_last():
    # the pipeline trains in bf16 autocast with channels_last; the reordered stem and its
    # max-pool (indices only) must give torchvision's values and gradients there too
    torch.manual_seed(0)
    ours = resnet18().train().to(memory_format=torch.channels_last)
    ours.maxpool.__class__ = MaxPool2d            # accel's; its convolutions stay oneDNN's here
    reference = torchvision_models().resnet18(weights=None).train().to(memory_format=torch.channels_last)
    reference.load_state_dict(ours.state_dict())
    x = torch.rand(8, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, out_ref = ours(x), reference(x)
    assert out.dtype == torch.bfloat16 and torch.equal(out, out_ref)
    weights = torch.randn(out.shape)
    (out.float() * weights).sum().backward()
    (out_ref.float() * weights).sum().backward()
    for (name, p), p_ref in zip(ours.named_parameters(), reference.parameters()):
        assert torch.equal(p.grad, p_ref.grad), name
