"""netunits/accel/gemm_conv.py: small-map convolutions as one matrix product, checked against conv2d."""
import pytest
import torch
import torch.nn.functional as F

from netunits.accel import gemm_conv
from netunits.accel.gemm_conv import SmallMapConv2d, gemm_conv2d
from netunits.models.registry import build_model
from netunits.torchvision_compat import torchvision_models

# (batch, c_in, size, c_out, kernel, stride, padding): every geometry ResNet18 has, odd sizes,
# and a 1x1 map (layer4 at 32 px).
GEOMETRIES = [(3, 3, 5, 4, 3, 1, 1), (3, 3, 7, 4, 3, 2, 1), (3, 3, 7, 4, 1, 2, 0), (2, 3, 6, 4, 3, 2, 1),
              (1, 2, 1, 3, 3, 1, 1), (2, 2, 9, 3, 7, 2, 3), (2, 4, 4, 4, 1, 1, 0)]


@pytest.mark.parametrize("chunk_bytes", [gemm_conv.CHUNK_BYTES, 1])   # whole batch; one image per chunk
@pytest.mark.parametrize("n,c,size,c_out,kernel,stride,padding", GEOMETRIES)
def test_forward_and_gradients_equal_conv2d_in_float64(n, c, size, c_out, kernel, stride, padding, chunk_bytes,
                                                       monkeypatch):
    monkeypatch.setattr(gemm_conv, "CHUNK_BYTES", chunk_bytes)
    generator = torch.Generator().manual_seed(size * kernel + stride)
    x = torch.randn(n, c, size, size, generator=generator, dtype=torch.float64)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    weight = torch.randn(c_out, c, kernel, kernel, generator=generator, dtype=torch.float64).requires_grad_(True)
    y = gemm_conv2d(x, weight, stride, padding)
    reference = F.conv2d(x, weight, stride=stride, padding=padding)
    assert y.shape == reference.shape and torch.allclose(y, reference, rtol=1e-12, atol=1e-12)
    grad_y = torch.randn(reference.shape, generator=generator, dtype=torch.float64)
    grads = torch.autograd.grad(y, (x, weight), grad_y)
    reference_grads = torch.autograd.grad(reference, (x, weight), grad_y)
    # strided grad_x is summed in fp32 (as in bf16 training); everything else is float64
    assert torch.allclose(grads[0].double(), reference_grads[0], rtol=1e-6, atol=1e-6)
    assert torch.allclose(grads[1], reference_grads[1], rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_gradcheck_same_size_convolution():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 3, 3, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: gemm_conv2d(a, b, 1, 1), (x, weight))


def conv_at(size, c=8, stride=1):
    conv = torch.nn.Conv2d(c, c, 3, stride=stride, padding=1, bias=False)
    conv.__class__ = SmallMapConv2d
    x = torch.rand(4, c, size, size).contiguous(memory_format=torch.channels_last)
    return conv, x


def test_only_small_maps_under_cpu_bf16_autocast_take_the_product():
    small, x_small = conv_at(7)    # 49 output positions
    large, x_large = conv_at(8)    # 64
    strided, x_strided = conv_at(14, stride=2)
    assert not small.uses_gemm(x_small)                  # no autocast: plain Conv2d
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert small.uses_gemm(x_small) and strided.uses_gemm(x_strided) and not large.uses_gemm(x_large)
    with torch.autocast("cpu", dtype=torch.float16):
        assert not small.uses_gemm(x_small)
    grouped = torch.nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
    grouped.__class__ = SmallMapConv2d
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not grouped.uses_gemm(x_small)


def test_bf16_results_match_autocast_conv2d_within_bf16_rounding():
    conv, x = conv_at(4, c=64)
    x.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
        reference = F.conv2d(x, conv.weight, padding=1)
    assert y.dtype == reference.dtype == torch.bfloat16
    assert torch.allclose(y.float(), reference.float(), rtol=2e-2, atol=2e-2)
    grads = torch.autograd.grad(y.float().square().sum(), (x, conv.weight))
    reference_grads = torch.autograd.grad(reference.float().square().sum(), (x, conv.weight))
    for got, want in zip(grads, reference_grads):
        assert got.dtype == want.dtype
        assert (got - want).norm() / want.norm() < 1e-2


def test_model_keeps_torchvision_parameters_and_fp32_outputs():
    torch.manual_seed(0)
    model = build_model("resnet18", 10)
    torch.manual_seed(0)
    reference = torchvision_models().resnet18(weights=None)
    reference.fc = torch.nn.Linear(512, 10)
    assert list(model.state_dict()) == list(reference.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    assert sum(type(m) is SmallMapConv2d for m in model.modules()) == 20   # every convolution
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), reference.eval()(x))   # fp32: plain Conv2d throughout


def test_threshold_is_a_count_of_output_positions(monkeypatch):
    conv, x = conv_at(4)
    monkeypatch.setattr(gemm_conv, "MAX_POSITIONS", 15)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not conv.uses_gemm(x)
        monkeypatch.setattr(gemm_conv, "MAX_POSITIONS", 16)
        assert conv.uses_gemm(x)


def test_bf16_weight_is_kept_only_without_gradients_and_follows_updates():
    conv, x = conv_at(4, c=16)
    optimizer = torch.optim.Adam(conv.parameters(), lr=0.1, fused=True)

    def evaluate():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return conv(x)

    for _ in range(2):
        y = evaluate()
        assert conv._bf16_cache is not None and torch.equal(conv._bf16_cache[1], conv.weight.to(torch.bfloat16))
        assert torch.equal(evaluate(), y)                    # kept: the same bits again
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = conv(x).float().square().sum()
        assert conv._bf16_cache is None                     # training keeps no copy
        loss.backward()
        optimizer.step()                                    # in place: the cache must notice
        y_after = evaluate()
        expected = gemm_conv2d(x.to(torch.bfloat16), conv.weight.to(torch.bfloat16), 1, 1)
        assert torch.equal(y_after, expected) and not torch.equal(y_after, y)
    state = {"weight": torch.rand_like(conv.weight)}
    conv.load_state_dict(state)                             # also in place
    assert torch.equal(evaluate(), gemm_conv2d(x.to(torch.bfloat16), state["weight"].to(torch.bfloat16), 1, 1))
