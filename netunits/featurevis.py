"""Feature visualization: an input optimised to maximise a unit's mean activation (Olah et al.,
"Feature Visualization", Distill 2017), the recipe of Lucid and its PyTorch port Lucent:

- the image is parameterised in a decorrelated Fourier basis: a spectrum of random coefficients
  scaled by 1 / frequency, turned into pixels by an inverse real FFT (Lucid's fft_image, its
  "magic" division by 4 included);
- colours are decorrelated: the three channels of that image are mixed by a square root of the
  RGB colour covariance (Lucid's matrix, estimated on ImageNet, by default; or one estimated
  from the model's own training images with colour_correlation) and squashed to [0, 1] by a
  sigmoid; grey models get one channel, no colour mixing, repeated to the model's channels as
  their images are (netunits.models.inputs);
- every step sees a randomly transformed image (transformation robustness): a constant grey
  pad, jitter, a scale, a rotation and a second jitter (Lucid's standard transforms), their
  sizes in pixels scaled from Lucid's 224 px to the image size (pad 12 -> 2 at 32 px);
- Adam (lr 0.05) maximises the unit's mean activation over the layer's map.

Compact rather than torch-lucent 0.1.8 (2021, the last release). Tried beside torch 2.13 in a
scratch folder (never installed here): its pinned kornia 0.4.1 runs, and it renders RGB units of
the CIFAR ResNet20 once `decorator` and ipython are added, but it requires ipython, pytest,
pytest-mock, coverage, coveralls and scikit-learn at run time; a grey (one-channel) image fails
in its ImageNet normalisation, reported only as "There are no saved feature maps"; its random
transforms come from numpy's and torch's global generators (no seed); and it upsamples images
smaller than 224 px to 224 px unless told otherwise, which shows a 32 px CIFAR network objects
seven times its training scale (a likely cause of the blurry CIFAR results its users report).
Here the model sees images at its own size, normalised as its checkpoint records, grey images
stay grey, and every random draw comes from seeded generators: the same seed, the same tensor.

Several units optimise together as one batch (one image per unit): eval-mode batch norm keeps
the images independent, and every image sees the same transforms.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from netunits.errors import PipelineError
from netunits.runtime import progress

# Lucid's color_correlation_svd_sqrt (lucid/optvis/param/color.py), estimated on ImageNet
LUCID_COLOUR_CORRELATION = ((0.26, 0.09, 0.02),
                            (0.27, 0.00, -0.05),
                            (0.27, -0.09, 0.03))


def colour_correlation(images_u8: torch.Tensor) -> torch.Tensor:
    """A square root of the RGB covariance of uint8 N x 3 x H x W images (values / 255), Lucid's
    way: U sqrt(S) from the SVD of the covariance, so that M M^T is the covariance (float64)."""
    pixels = images_u8.permute(1, 0, 2, 3).reshape(3, -1).to(torch.float64) / 255.0
    covariance = torch.cov(pixels)
    u, s, _ = torch.linalg.svd(covariance)
    return u * s.sqrt()


def _normalised(matrix):
    """Lucid divides the matrix by its largest column norm."""
    matrix = torch.as_tensor(matrix, dtype=torch.float32)
    return matrix / matrix.norm(dim=0).max()


def default_transforms(size: int) -> dict:
    """Lucid's standard transforms (pad 12, jitter 8, scales 0.9..1.1, rotations -10..10 degrees
    with extra weight on 0, jitter 4 at 224 px), pixel sizes scaled to `size` (at least 1)."""
    scaled = lambda pixels: max(1, round(pixels * size / 224))          # noqa: E731
    return {"pad": scaled(12), "jitter": scaled(8), "scales": tuple(1 + (i - 5) / 50 for i in range(11)),
            "angles": tuple(range(-10, 11)) + (0,) * 5, "jitter_after": scaled(4)}


def _frequencies(height, width):
    """|f| of every coefficient of an rfft2 of an H x W image (Lucid's rfft2d_freqs)."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[: width // 2 + 2 if width % 2 else width // 2 + 1]
    return torch.from_numpy(np.sqrt(fx * fx + fy * fy)).float()


class FourierImage:
    """n images of `channels` x size x size in [0, 1], parameterised by `spectrum`."""

    def __init__(self, n, channels, size, generators, sd=0.01, decay_power=1.0, colour_matrix=LUCID_COLOUR_CORRELATION,
                 decorrelate=True, device="cpu"):
        self.size, self.channels = size, channels
        frequencies = _frequencies(size, size)
        self.scale = (1.0 / frequencies.clamp_min(1.0 / size) ** decay_power)[None, None, :, :, None].to(device)
        shape = (channels, *frequencies.shape, 2)
        # one cpu generator per image, so an image's start does not depend on the others in the
        # batch nor on the device
        spectrum = torch.stack([torch.randn(shape, generator=g) * sd for g in generators])
        self.spectrum = spectrum.to(device).requires_grad_(True)
        self.colour = _normalised(colour_matrix).to(device) if channels == 3 and decorrelate else None

    def __call__(self):
        spectrum = torch.view_as_complex(self.scale * self.spectrum)
        image = torch.fft.irfftn(spectrum, s=(self.size, self.size), norm="ortho")[:, :, :self.size, :self.size] / 4.0
        if self.colour is not None:
            image = torch.einsum("nchw,dc->ndhw", image, self.colour)
        return torch.sigmoid(image)


def _choice(options, generator):
    return options[int(torch.randint(len(options), (1,), generator=generator))]


def _shift(image, pixels, generator):
    """Roll by a random whole number of pixels in [-pixels, pixels] along both axes."""
    dy, dx = (int(v) for v in torch.randint(-pixels, pixels + 1, (2,), generator=generator))
    return torch.roll(image, shifts=(dy, dx), dims=(2, 3))


def random_transform(image: torch.Tensor, transforms: dict, generator: torch.Generator) -> torch.Tensor:
    """One random draw of the transforms, the same for every image of the batch."""
    pad = transforms["pad"]
    if pad:
        image = F.pad(image, [pad] * 4, mode="constant", value=0.5)
    if transforms["jitter"]:
        image = _shift(image, transforms["jitter"], generator)
    scale = _choice(transforms["scales"], generator)
    if scale != 1:
        size = max(1, math.ceil(scale * image.shape[2]))
        image = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)
    angle = math.radians(_choice(transforms["angles"], generator))
    if angle:
        rotation = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0]],
                                device=image.device)
        grid = F.affine_grid(rotation.expand(len(image), 2, 3), list(image.shape), align_corners=False)
        image = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if transforms["jitter_after"]:
        image = _shift(image, transforms["jitter_after"], generator)
    return image


def to_model_input(image: torch.Tensor, input_spec: dict | None) -> torch.Tensor:
    """Images in [0, 1] -> the model's input: grey repeated to its channels, normalised as its
    checkpoint records (the float path of netunits.models.inputs.images_to_input), channels last
    (with a channels-last model, half the time of a contiguous batch on the CPU)."""
    channels = input_spec["channels"] if input_spec else 3
    if image.shape[1] != channels:
        image = image.expand(-1, channels, -1, -1)
    if input_spec and input_spec["mean"] is not None:
        mean = torch.tensor(input_spec["mean"], device=image.device).view(1, -1, 1, 1)
        std = torch.tensor(input_spec["std"], device=image.device).view(1, -1, 1, 1)
        image = (image - mean) / std
    return image.contiguous(memory_format=torch.channels_last)


def _unit_means(output, units):
    """Each image's own unit, averaged over the map (N x C x H x W or N x C)."""
    picked = output[torch.arange(len(units), device=output.device), units.to(output.device)]
    return picked.flatten(1).mean(dim=1) if picked.dim() > 1 else picked


def visualize(model: torch.nn.Module, layer: str, units, *, size: int, channels: int, input_spec: dict | None = None,
              steps: int = 512, lr: float = 0.05, seed: int = 0, transforms: dict | None = None,
              decorrelate: bool = True, colour_matrix=LUCID_COLOUR_CORRELATION, device="cpu",
              key: str = "featurevis.units") -> dict:
    """Optimise one image per unit of `layer` (a module name) to maximise the unit's mean
    activation. Returns {"images": float32 len(units) x channels x size x size in [0, 1],
    "activation": each unit's mean activation on its final image, untransformed}.

    Unit u starts from the spectrum drawn by a generator seeded with (seed, u), and the
    transforms come from a generator seeded with `seed`: the same arguments give the same bits
    (on the cpu; elsewhere as far as the device's kernels are deterministic). Runs in float32 on
    `device` (where the model is), in eval mode; the model's parameters get no gradients.
    """
    modules = dict(model.named_modules())
    if layer not in modules:
        raise PipelineError(f"params.yaml: 'featurevis.layer' is {layer!r}, which the model lacks")
    units = torch.as_tensor(list(units), dtype=torch.int64)
    transforms = default_transforms(size) if transforms is None else transforms
    captured = {}
    hook = modules[layer].register_forward_hook(lambda _m, _i, output: captured.__setitem__("out", output))
    was_training = model.training
    model.eval()
    try:
        image = FourierImage(len(units), channels, size,
                             [torch.Generator().manual_seed(seed * 1_000_003 + int(u)) for u in units],
                             colour_matrix=colour_matrix, decorrelate=decorrelate, device=device)
        with torch.no_grad():
            model(to_model_input(image()[:1], input_spec))
        n_units = captured["out"].shape[1]
        if len(units) == 0 or int(units.min()) < 0 or int(units.max()) >= n_units:
            raise PipelineError(f"params.yaml: '{key}' must be unit indices of {layer} from 0 to {n_units - 1}; got "
                                f"{units.tolist() if len(units) < 8 else 'an index out of range'}")
        optimizer = torch.optim.Adam([image.spectrum], lr=lr)
        generator = torch.Generator().manual_seed(seed)
        for _ in progress(range(steps), f"feature visualization of {layer}"):
            model(to_model_input(random_transform(image(), transforms, generator), input_spec))
            loss = -_unit_means(captured["out"], units).sum()
            (gradient,) = torch.autograd.grad(loss, [image.spectrum])
            image.spectrum.grad = gradient
            optimizer.step()
        with torch.no_grad():
            final = image()
            model(to_model_input(final, input_spec))
            activation = _unit_means(captured["out"], units)
    finally:
        hook.remove()
        model.train(was_training)
    return {"images": final.detach().cpu().clone(), "activation": activation.detach().cpu().clone()}


def select_units(categories: list[str], scores, n: int) -> list[int]:
    """The default selection when a layer has more units than are visualized: n units taken in
    turn from each role (the order roles first appear in `categories`, one unit per role per
    round), within a role by descending `scores` (e.g. the best dissection IoU: the best
    detectors first; ties to the lower index). Every role is covered once n >= the number of
    roles. Returns the unit indices, ascending."""
    if n < 1:
        raise PipelineError(f"params.yaml: 'featurevis.n_units' is {n}; it must be at least 1")
    queues = {}
    for unit in sorted(range(len(categories)), key=lambda u: (-float(scores[u]), u)):
        queues.setdefault(categories[unit], []).append(unit)
    queues = [queues[role] for role in dict.fromkeys(categories)]
    chosen = []
    while len(chosen) < min(n, len(categories)):
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop(0))
    return sorted(chosen)
