"""extract_features: pooled features of the asked layers, the head reproduces the logits,
mismatches refused."""
import copy

import torch

from conftest import run_main, tiny_params, write_params
from netunits.activations import pooled_features
from netunits.files import file_sha256
from netunits.models.registry import load_checkpoint
from stages import extract_features


def test_channels_last_weights_keep_every_bf16_bit(project):
    """The stage puts the loaded (contiguous) model in channels_last, as training has it. In bf16 that
    changes no bit; in fp32 oneDNN picks other kernels for the other layout (rounding only)."""
    model, _ = load_checkpoint("artifacts/train/model.pt")
    images = torch.load("data/prepared/test.pt", weights_only=True)["images"][:16]
    for precision in ("fp32", "bf16"):
        contiguous = pooled_features(model, images, ["avgpool"], 8, torch.device("cpu"), precision)
        channels_last = pooled_features(copy.deepcopy(model).to(memory_format=torch.channels_last), images,
                                        ["avgpool"], 8, torch.device("cpu"), precision)
        same = torch.equal if precision == "bf16" else lambda a, b: torch.allclose(a, b, rtol=1e-4, atol=1e-5)
        assert same(contiguous[0]["avgpool"], channels_last[0]["avgpool"]), precision
        assert same(contiguous[1], channels_last[1]), precision


def test_stage_outputs_match_the_checkpoint(project):
    for name, n in (("train", 300), ("test", 200)):
        data = torch.load(f"artifacts/features/{name}.pt", weights_only=True)
        assert list(data["features"]) == ["avgpool"]
        assert data["features"]["avgpool"].shape == (n, 512) and data["features"]["avgpool"].dtype == torch.float32
        assert data["logits"].shape == (n, 10)
        assert data["checkpoint_sha256"] == file_sha256("artifacts/train/model.pt")


def test_several_layers_are_extracted_and_avgpool_is_layer4s_mean(project):
    write_params(project, tiny_params(extract_features={"layers": ["layer2", "layer4", "avgpool"]},
                                      compute={"precision": "fp32"}))
    assert run_main(extract_features.main) == 0
    data = torch.load("artifacts/features/test.pt", weights_only=True)
    assert [f.shape for f in data["features"].values()] == [(200, 128), (200, 512), (200, 512)]
    assert torch.allclose(data["features"]["layer4"], data["features"]["avgpool"], rtol=1e-5, atol=1e-6)


def test_an_unknown_layer_is_refused_before_writing(project, capsys):
    write_params(project, tiny_params(extract_features={"layers": ["avgpool", "layer5"]}))
    (project / "artifacts/features/test.pt").unlink()
    assert run_main(extract_features.main) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: params.yaml: 'extract_features.layers' is 'layer5'; the model's layers are conv1, "
                          "bn1, relu, maxpool, layer1, layer2, layer3, layer4, avgpool, fc") and err.count("\n") == 1
    assert not (project / "artifacts/features/test.pt").exists()
    # the pooled layer (the final layer's input, from the architecture registry) must be there
    write_params(project, tiny_params(extract_features={"layers": ["layer4"]}))
    assert run_main(extract_features.main) == 2
    assert capsys.readouterr().err == ("error: params.yaml: 'extract_features.layers' is ['layer4']; it must include "
                                       "avgpool, the layer whose units ROF and the influential filters read (the final "
                                       "layer's input)\n")
    assert not (project / "artifacts/features/test.pt").exists()


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
    assert "artifacts/train/model.pt: checkpoint does not fit a resnet18: key 'fc.weight' is of shape (10, 256)" in \
        capsys.readouterr().err
