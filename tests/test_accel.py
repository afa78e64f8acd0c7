"""netunits.accel: applied only where an architecture opts in, the max-pool keeping only its
indices, the training hooks and the heap trim."""
import subprocess
import sys

import torch

from conftest import ROOT
from netunits.accel.gemm_conv import SmallMapConv2d
from netunits.accel.maxpool import MaxPool2d
from netunits.accel.model_hooks import apply
from netunits.accel.training_hooks import TrainingHooks
from netunits.models.registry import build_model


def test_apply_switches_plain_convolutions_and_pools_only():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(2), torch.nn.BatchNorm2d(4),
                                torch.nn.Linear(4, 2))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert apply(model) is model
    assert [type(m) for m in model] == [SmallMapConv2d, MaxPool2d, torch.nn.BatchNorm2d, torch.nn.Linear]
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_only_the_architectures_that_opt_in_are_accelerated():
    ours = build_model("resnet18", 10)
    assert sum(type(m) is SmallMapConv2d for m in ours.modules()) == 20 and type(ours.maxpool) is MaxPool2d
    for arch in ("torchvision:resnet18", "cifar_resnet20"):
        model = build_model(arch, 10)
        assert not any(type(m) in (SmallMapConv2d, MaxPool2d) for m in model.modules()), arch


def test_max_pool_keeps_only_its_indices_for_backward():
    saved = []
    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = MaxPool2d(3, 2, 1)(x)
    assert [t.dtype for t in saved] == [torch.int64]
    grad = torch.randn(out.shape)
    out.backward(grad)
    x_ref = x.detach().clone().requires_grad_()
    torch.nn.MaxPool2d(3, 2, 1)(x_ref).backward(grad)
    assert torch.equal(out, torch.nn.functional.max_pool2d(x.detach(), 3, 2, 1))
    assert torch.equal(x.grad, x_ref.grad)
    with torch.no_grad():   # no graph, no custom function
        assert torch.equal(MaxPool2d(3, 2, 1)(x), out)


def test_training_hooks_step_during_backward_at_the_rate_set_and_come_off():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    reference = torch.nn.Linear(3, 2)
    reference.load_state_dict(model.state_dict())
    joint = torch.optim.Adam(reference.parameters(), lr=0.5, fused=True)
    hooks = TrainingHooks(model, 0.5, torch.device("cpu"))
    x = torch.rand(4, 3)
    for rate in (0.1, 0.01):
        hooks.set_learning_rate(rate)
        joint.param_groups[0]["lr"] = rate
        model(x).square().sum().backward()
        reference(x).square().sum().backward()
        joint.step()
        joint.zero_grad(set_to_none=True)
        assert all(p.grad is None for p in model.parameters())
        assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))
    hooks.before_evaluation()
    hooks.remove()
    before = [p.detach().clone() for p in model.parameters()]
    model(x).sum().backward()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_release_free_memory_returns_freed_heap_pages():
    # A fresh interpreter: 4000 heap blocks of 64 KiB are filled, all but the last freed (the last
    # pins the heap's top, so glibc cannot shrink it by itself); releasing must drop the RSS.
    code = ("import torch; from netunits.accel.memory import release_free_memory\n"
            "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20\n"
            "blocks = [torch.ones(16384) for _ in range(4000)]; pinned = blocks[-1]; del blocks\n"
            "before = rss(); release_free_memory(); print(before - rss())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert float(out.stdout) > 150, f"only {out.stdout.strip()} MiB released"
