"""Feature visualization (netunits/featurevis.py) on planted units: a colour and an orientation."""
import pytest
import torch
from torch import nn

from netunits.errors import PipelineError
from netunits.featurevis import (
    LUCID_COLOUR_CORRELATION,
    FourierImage,
    colour_correlation,
    default_transforms,
    select_units,
    visualize,
)
from netunits.models.inputs import input_spec

SIZE = 16


@pytest.fixture(autouse=True)
def one_thread():
    """Hundreds of tiny steps: with two threads on a busy machine each op waits on the other
    thread, forty times slower than one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Planted(nn.Module):
    """Unit 0 likes red (R - (G + B) / 2), unit 1 blue, unit 2 vertical stripes (a horizontal
    intensity step in the grey image), unit 3 horizontal stripes; then a classifier on top."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 2)
        weight = torch.zeros(4, 3, 3, 3)
        weight[0, :, 1, 1] = torch.tensor([1.0, -0.5, -0.5])
        weight[1, :, 1, 1] = torch.tensor([-0.5, -0.5, 1.0])
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 3
        weight[2] = sobel
        weight[3] = sobel.T
        with torch.no_grad():
            self.conv.weight.copy_(weight)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


def run(units, channels=3, seed=0, steps=100, spec=None, layer="act"):
    return visualize(Planted(), layer, units, size=SIZE, channels=channels, input_spec=spec, steps=steps, seed=seed)


def test_colour_units_show_their_colour():
    # the convolution's own output: on ImageNet-normalised grey, R - (G + B) / 2 starts negative,
    # so after the ReLU the red unit would start silent, with no gradient (as in Lucid)
    result = run([0, 1], spec=input_spec(3, "imagenet"), layer="conv")
    mean = result["images"].mean(dim=(2, 3))                 # unit x (R, G, B)
    assert mean[0, 0] - mean[0, 1:].max() > 0.2              # red
    assert mean[1, 2] - mean[1, :2].max() > 0.2              # blue
    assert (result["activation"] > 0.5).all()


def gradient_energy(image):
    grey = image.mean(dim=0)
    across_columns = (grey[:, 1:] - grey[:, :-1]).abs().mean()      # vertical stripes
    across_rows = (grey[1:] - grey[:-1]).abs().mean()               # horizontal stripes
    return float(across_columns), float(across_rows)


def test_orientation_units_show_their_orientation_in_grey():
    result = run([2, 3], channels=1)
    assert result["images"].shape == (2, 1, SIZE, SIZE)
    columns, rows = gradient_energy(result["images"][0])
    assert columns > 1.5 * rows
    columns, rows = gradient_energy(result["images"][1])
    assert rows > 1.5 * columns


def test_same_seed_same_tensor_and_batch_independent_start():
    a, b = run([0, 2], steps=5), run([0, 2], steps=5)
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["activation"], b["activation"])
    assert not torch.equal(a["images"], run([0, 2], steps=5, seed=1)["images"])
    # a unit's start depends on (seed, unit) only, not on the other units of the batch
    alone = FourierImage(1, 3, SIZE, [torch.Generator().manual_seed(2)])
    pair = FourierImage(2, 3, SIZE, [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])
    assert torch.equal(alone.spectrum[0], pair.spectrum[1])


def test_the_model_is_left_as_it_was():
    model = Planted().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    visualize(model, "act", [0], size=SIZE, channels=3, steps=2)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_unit_or_layer_is_one_line():
    with pytest.raises(PipelineError, match="featurevis.units.*from 0 to 3"):
        run([4])
    with pytest.raises(PipelineError, match="featurevis.layer.*'nope'"):
        visualize(Planted(), "nope", [0], size=SIZE, channels=3)


def test_colour_correlation_is_a_square_root_of_the_covariance():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 5, 5), generator=generator, dtype=torch.uint8)
    images[:, 1] = images[:, 0] // 2 + 60                     # correlated channels
    matrix = colour_correlation(images)
    pixels = images.permute(1, 0, 2, 3).reshape(3, -1).double() / 255
    assert torch.allclose(matrix @ matrix.T, torch.cov(pixels), atol=1e-12)
    # Lucid's own matrix is of this kind: its columns are orthogonal (an SVD's U sqrt(S))
    lucid = torch.tensor(LUCID_COLOUR_CORRELATION, dtype=torch.float64)
    gram = lucid.T @ lucid
    assert (gram - torch.diag(gram.diag())).abs().max() < 0.002


def test_default_transforms_scale_lucids_pixels():
    assert default_transforms(224)["pad"] == 12 and default_transforms(224)["jitter"] == 8
    assert default_transforms(32) | {"scales": None, "angles": None} == \
        {"pad": 2, "jitter": 1, "jitter_after": 1, "scales": None, "angles": None}


def test_selection_covers_every_role_with_the_best_detectors_first():
    roles = ["both", "both", "neither", "both", "train_only", "neither"]
    iou = [0.1, 0.3, 0.05, 0.3, 0.0, 0.2]
    # round 1: both -> unit 1 (0.3, lower index than 3), neither -> 5, train_only -> 4; round 2: 3
    assert select_units(roles, iou, 4) == [1, 3, 4, 5]
    assert select_units(roles, iou, 3) == [1, 4, 5]
    assert select_units(roles, iou, 10) == list(range(6))
    with pytest.raises(PipelineError, match="featurevis.n_units"):
        select_units(roles, iou, 0)
