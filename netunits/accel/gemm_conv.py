"""Convolutions on small feature maps as one matrix product (im2col + GEMM), for bf16 on the CPU.

Why: oneDNN's bf16 convolutions are fast on large maps but slow on small ones. At the
default 112 px, layer4 works on 4x4 maps; there oneDNN spent about 130 ms of a batch's
backward pass on the 512->512 3x3 convolution's weight gradient alone (under 40 GFLOP/s,
ONEDNN_VERBOSE), while oneDNN's AMX matrix multiplication runs the same products at several
hundred GFLOP/s. Maps of at most 7x7 (layers 3 and 4 at 112 px) switch; layers 1 and 2 stay
with oneDNN, which is faster there. `python -m bench.run --convs` times every convolution both
ways on your machine; a whole training step at 112 px took 18 to 25% less time here.

The product is the convolution's definition, so only the rounding differs from
torch.nn.functional.conv2d: inputs and weights in bf16, sums in fp32, as autocast's
convolution does. tests/test_gemm_conv.py checks values and gradients against conv2d.
"""
import torch
import torch.nn.functional as F

# Feature maps with at most this many output positions (7x7) take the matrix product.
MAX_POSITIONS = 49


def _im2col(x_nhwc, kernel, stride, padding, out_h, out_w):
    """n x h x w x c -> n x out_h x out_w x (kernel * kernel * c), patches in (row, column, channel) order.

    One strided view of the padded input, copied once (about twice as fast as concatenating
    the kernel * kernel shifted slices).
    """
    if padding:
        x_nhwc = F.pad(x_nhwc, (0, 0, padding, padding, padding, padding))
    n, _, _, c = x_nhwc.shape
    s_n, s_h, s_w, s_c = x_nhwc.stride()
    taps = x_nhwc.as_strided((n, out_h, out_w, kernel, kernel, c), (s_n, stride * s_h, stride * s_w, s_h, s_w, s_c))
    return taps.reshape(n, out_h, out_w, kernel * kernel * c)


# Patches are built for a few images at a time, at most this many bytes: whole-batch patches
# (kernel^2 times the input, up to 29 MB at layer 3) raised a training step's peak memory by
# about 150 MiB through heap fragmentation. Within that, larger products run faster: 16 MiB
# chunks (64 images at 112 px) took a training step from 1.449 to 1.344 s against 4 MiB (median
# of 18 interleaved steps), and a one-epoch train stage peaked at 1227-1242 MiB against 1210-1228.
CHUNK_BYTES = 16 << 20


def _image_chunks(n, bytes_per_image):
    step = max(1, CHUNK_BYTES // max(1, bytes_per_image))
    return [(start, min(n, start + step)) for start in range(0, n, step)]


class _GemmConv2d(torch.autograd.Function):
    """conv2d(x, weight, stride, padding) for square kernels, groups 1, no bias, any dtype."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        n, c, h, w = x.shape
        c_out, kernel = weight.shape[0], weight.shape[2]
        out_h, out_w = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
        positions, patch = out_h * out_w, kernel * kernel * c
        flat_weight = weight.permute(0, 2, 3, 1).reshape(c_out, patch)     # c_out x (kernel, kernel, c)
        x_nhwc = x.permute(0, 2, 3, 1)
        y = torch.empty(n * positions, c_out, dtype=x.dtype)
        for first, last in _image_chunks(n, positions * patch * x.element_size()):
            patches = _im2col(x_nhwc[first:last], kernel, stride, padding, out_h, out_w).reshape(-1, patch)
            torch.mm(patches, flat_weight.T, out=y[first * positions:last * positions])
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding, out_h, out_w)
        return y.view(n, out_h, out_w, c_out).permute(0, 3, 1, 2)           # channels_last memory

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        stride, padding, out_h, out_w = ctx.geometry
        n, c, h, w = x.shape
        c_out, kernel = weight.shape[0], weight.shape[2]
        positions, patch = out_h * out_w, kernel * kernel * c
        grad_rows = grad_y.permute(0, 2, 3, 1).reshape(n * positions, c_out)
        chunks = _image_chunks(n, positions * patch * x.element_size())
        grad_x = grad_weight = None
        if ctx.needs_input_grad[1]:
            # One product per kernel tap over the whole batch: grad_w[:, :, i, j] = grad_y^T @ (x
            # shifted by tap i, j). Each product sums every sample in one call (for bf16: fp32
            # sums, rounded once, as oneDNN's weight gradient does), and a tap's input is only
            # 1/k^2 of the whole-batch patches. On layer 4 this took 10-20% less time than
            # summing per-chunk products of whole patches.
            x_nhwc = x.permute(0, 2, 3, 1)
            if padding:
                x_nhwc = F.pad(x_nhwc, (0, 0, padding, padding, padding, padding))
            rows, cols = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
            grad_taps = torch.empty(kernel, kernel, c_out, c, dtype=x.dtype)
            for i in range(kernel):
                for j in range(kernel):
                    tap = x_nhwc[:, i:i + rows:stride, j:j + cols:stride, :].reshape(n * positions, c)
                    torch.mm(grad_rows.T, tap, out=grad_taps[i, j])
            grad_weight = grad_taps.permute(2, 3, 0, 1).to(weight.dtype)
        if ctx.needs_input_grad[0] and stride == 1 and 2 * padding == kernel - 1:
            # a size-preserving convolution: grad_x is grad_y convolved with the flipped kernel
            # rows (tap, c_out), columns c: the input channel stays innermost, which made this copy
            # 13x faster (0.8 against 11 ms on layer 4) than c_out innermost for a channels_last weight
            flipped = weight.flip(2, 3).permute(2, 3, 0, 1).reshape(kernel * kernel * c_out, c)
            grad_nhwc = grad_y.permute(0, 2, 3, 1)
            grad_x = torch.empty(n * h * w, c, dtype=x.dtype)
            for first, last in _image_chunks(n, h * w * kernel * kernel * c_out * x.element_size()):
                patches = _im2col(grad_nhwc[first:last], kernel, 1, padding, h, w).reshape(-1, flipped.shape[0])
                torch.mm(patches, flipped, out=grad_x[first * h * w:last * h * w])
            grad_x = grad_x.view(n, h, w, c).permute(0, 3, 1, 2)
        elif ctx.needs_input_grad[0]:
            # strided: scatter each tap's share back onto the (padded) input, summing in fp32
            flat_weight = weight.permute(0, 2, 3, 1).reshape(c_out, patch)
            padded = torch.zeros(n, h + 2 * padding, w + 2 * padding, c,
                                 dtype=torch.promote_types(x.dtype, torch.float32))
            rows, cols = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
            for first, last in chunks:
                grad_patches = (grad_rows[first * positions:last * positions] @ flat_weight)
                grad_patches = grad_patches.view(last - first, out_h, out_w, kernel * kernel, c)
                for tap in range(kernel * kernel):
                    i, j = divmod(tap, kernel)
                    padded[first:last, i:i + rows:stride, j:j + cols:stride, :] += grad_patches[:, :, :, tap, :]
            grad_x = padded[:, padding:padding + h, padding:padding + w, :].to(x.dtype).permute(0, 3, 1, 2)
        return grad_x, grad_weight, None, None


def gemm_conv2d(x, weight, stride, padding):
    return _GemmConv2d.apply(x, weight, stride, padding)


class SmallMapConv2d(torch.nn.Conv2d):
    """A Conv2d (same parameters and state-dict keys) that takes the matrix-product path on
    small output maps under CPU bf16 autocast, and is a plain Conv2d everywhere else."""

    def uses_gemm(self, x):
        if not (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
                and torch.get_autocast_dtype("cpu") == torch.bfloat16):
            return False
        if self.bias is not None or self.groups != 1 or self.dilation != (1, 1) or self.padding_mode != "zeros" \
                or len(set(self.kernel_size)) != 1 or len(set(self.stride)) != 1 or len(set(self.padding)) != 1:
            return False
        kernel, stride, padding = self.kernel_size[0], self.stride[0], self.padding[0]
        out_h = (x.shape[2] + 2 * padding - kernel) // stride + 1
        out_w = (x.shape[3] + 2 * padding - kernel) // stride + 1
        return out_h * out_w <= MAX_POSITIONS

    def bf16_weight(self):
        """The weight in bf16. Without gradients (evaluation, feature extraction) the cast is
        kept until the weight changes: layers 3 and 4 hold 95% of ResNet18's weights, and
        casting them again for every batch of 64 took a fifth of an evaluation pass. With
        gradients (training) it is cast anew and nothing is kept, so training holds no copy."""
        if torch.is_grad_enabled():
            self._bf16_cache = None
            return self.weight.to(torch.bfloat16)
        key = (self.weight.data_ptr(), self.weight._version)
        cache = getattr(self, "_bf16_cache", None)
        if cache is None or cache[0] != key:
            cache = self._bf16_cache = (key, self.weight.detach().to(torch.bfloat16))
        return cache[1]

    def forward(self, x):
        if self.uses_gemm(x):
            return gemm_conv2d(x.to(torch.bfloat16), self.bf16_weight(), self.stride[0], self.padding[0])
        return super().forward(x)
