"""extract_features: the hook captures avgpool, the head reproduces the logits, mismatches refused."""
import copy

import torch

from conftest import run_main
from stages import extract_features
from stages.common import forward_features, images_to_input, load_checkpoint


def test_features_are_the_avgpool_output(project):
    model, _ = load_checkpoint("artifacts/train/model.pt")
    images = torch.load("data/prepared/test.pt", weights_only=True)["images"][:8]
    features, logits = forward_features(model, images, 3, torch.device("cpu"), "fp32")
    with torch.no_grad():
        x = images_to_input(images, "cpu", channels_last=True)
        body = torch.nn.Sequential(*list(model.children())[:-1])  # everything up to avgpool
        expected = body(x).flatten(1)
    assert features.shape == (8, 512) and (features >= 0).all()
    assert torch.allclose(features, expected, atol=1e-5)
    assert torch.allclose(logits, model.fc(features), atol=1e-5)


def test_channels_last_weights_keep_every_bf16_bit(project):
    """The stage puts the loaded (contiguous) model in channels_last, as training has it. In bf16 that
    changes no bit; in fp32 oneDNN picks other kernels for the other layout (rounding only)."""
    model, _ = load_checkpoint("artifacts/train/model.pt")
    images = torch.load("data/prepared/test.pt", weights_only=True)["images"][:16]
    for precision in ("fp32", "bf16"):
        contiguous = forward_features(model, images, 8, torch.device("cpu"), precision)
        channels_last = forward_features(copy.deepcopy(model).to(memory_format=torch.channels_last), images, 8,
                                         torch.device("cpu"), precision)
        same = torch.equal if precision == "bf16" else lambda a, b: torch.allclose(a, b, rtol=1e-4, atol=1e-5)
        assert all(same(a, b) for a, b in zip(contiguous, channels_last)), precision


def test_stage_outputs_match_the_checkpoint(project):
    from stages.common import file_sha256
    for name, n in (("train", 300), ("test", 200)):
        data = torch.load(f"artifacts/features/{name}.pt", weights_only=True)
        assert data["features"].shape == (n, 512) and data["features"].dtype == torch.float32
        assert data["logits"].shape == (n, 10)
        assert data["checkpoint_sha256"] == file_sha256("artifacts/train/model.pt")


def test_images_of_another_size_are_refused(project, capsys):
    subset = torch.load("data/prepared/test.pt", weights_only=True)
    subset["images"] = torch.nn.functional.interpolate(subset["images"].float(), size=48).to(torch.uint8)
    subset["image_size"] = 48
    torch.save(subset, "data/prepared/test.pt")
    assert run_main(extract_features.main) == 2
    assert "data/prepared/test.pt: images are 48 px but artifacts/train/model.pt was trained on 32 px" in \
        capsys.readouterr().err


def test_a_checkpoint_of_another_shape_is_refused(project, capsys):
    checkpoint = torch.load("artifacts/train/model.pt", weights_only=True)
    checkpoint["state_dict"]["fc.weight"] = torch.zeros(10, 256)
    torch.save(checkpoint, "artifacts/train/model.pt")
    assert run_main(extract_features.main) == 2
    assert "artifacts/train/model.pt: checkpoint does not fit a resnet18" in capsys.readouterr().err
