"""A max-pool that keeps only its indices for the backward pass, for training memory.

aten's max-pool backward reads its input's shape and memory layout but not its values, so an
unfilled tensor of that layout stands in for it (never touched, so it costs no resident memory).
ResNet18's stem (netunits/models/resnet.py) pools before its ReLU; with this pool, at 112 px and
batch 128, one 64 x 56 x 56 tensor per image fewer (49 MiB) is alive in the stem's backward
pass, where the train stage's memory peaks. The same values and gradients as nn.MaxPool2d
(tests/test_accel.py).
"""
import torch
from torch import nn


class _MaxPoolKeepingIndices(torch.autograd.Function):
    """max_pool2d whose backward needs only the indices."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        out, indices = torch.ops.aten.max_pool2d_with_indices(x, kernel_size, stride, padding, dilation, ceil_mode)
        ctx.save_for_backward(indices)
        ctx.input_layout = (x.shape, x.stride(), x.dtype, x.device)
        ctx.args = (kernel_size, stride, padding, dilation, ceil_mode)
        return out

    @staticmethod
    def backward(ctx, grad):
        (indices,) = ctx.saved_tensors
        shape, strides, dtype, device = ctx.input_layout
        stand_in = torch.empty_strided(shape, strides, dtype=dtype, device=device)
        grad_input = torch.ops.aten.max_pool2d_with_indices_backward(grad, stand_in, *ctx.args, indices)
        return grad_input, None, None, None, None, None


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d (same arguments, no state) that saves only its indices for the backward pass."""

    def forward(self, x):
        if self.return_indices or not (torch.is_grad_enabled() and x.requires_grad):
            return super().forward(x)
        pair = lambda v: [v, v] if isinstance(v, int) else list(v)   # noqa: E731
        return _MaxPoolKeepingIndices.apply(x, pair(self.kernel_size), pair(self.stride), pair(self.padding),
                                            pair(self.dilation), self.ceil_mode)
