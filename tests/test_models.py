"""netunits.models: the registry, weights files, checkpoints and the input transform."""
import pytest
import torch

from netunits.errors import PipelineError
from netunits.models.inputs import images_to_input, input_spec
from netunits.models.registry import ARCHITECTURES, build_model, get_architecture, load_checkpoint, load_weights


def test_model_head_stays_fp32_under_autocast():
    torch.manual_seed(0)
    model = build_model("resnet18", 10).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(2, 3, 32, 32))
    assert out.dtype == torch.float32 and out.shape == (2, 10)
    assert list(model.state_dict())[-2:] == ["fc.weight", "fc.bias"]


def test_unknown_architecture_lists_the_allowed_names():
    with pytest.raises(PipelineError) as info:
        get_architecture("resnet19")
    assert str(info.value) == ("params.yaml: 'train.arch' is 'resnet19'; allowed architectures: "
                               + ", ".join(ARCHITECTURES))


def test_torchvision_architectures_build_with_any_class_count():
    model = build_model("torchvision:resnet18", 7)
    assert model.fc.out_features == 7 and model.fc.in_features == 512
    model = build_model("torchvision:resnet50", 3)
    assert model.fc.in_features == 2048
    # the same seed gives the same weights as the project's own resnet18
    torch.manual_seed(1)
    ours = build_model("resnet18", 10).state_dict()
    torch.manual_seed(1)
    theirs = build_model("torchvision:resnet18", 10).state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_weights_file_loads_with_and_without_its_head(tmp_path):
    torch.manual_seed(0)
    source = build_model("resnet18", 10)
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)  # DataParallel style
    target = build_model("resnet18", 10)
    assert load_weights(target, path) is True
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    other_head = build_model("resnet18", 4)
    head_before = other_head.fc.weight.clone()
    assert load_weights(other_head, path) is False             # 10 classes in the file, 4 here
    assert torch.equal(other_head.fc.weight, head_before)
    assert torch.equal(other_head.conv1.weight, source.conv1.weight)


def test_weights_that_do_not_fit_name_the_file_and_the_first_key(tmp_path):
    model = build_model("resnet18", 10)
    state = model.state_dict()
    missing = tmp_path / "missing.pt"
    torch.save({k: v for k, v in state.items() if k != "layer1.0.conv1.weight"}, missing)
    with pytest.raises(PipelineError, match=r"missing.pt: does not fit the architecture: key 'layer1.0.conv1.weight' "
                                            r"is missing"):
        load_weights(model, missing)
    wrong = tmp_path / "wrong.pt"
    torch.save({**state, "conv1.weight": torch.zeros(64, 1, 7, 7)}, wrong)
    with pytest.raises(PipelineError, match=r"wrong.pt: does not fit the architecture: 'conv1.weight' has shape "
                                            r"\(64, 1, 7, 7\), the model's is \(64, 3, 7, 7\)"):
        load_weights(model, wrong)
    with pytest.raises(PipelineError, match="'train.weights' is '.*absent.pt': file not found"):
        load_weights(model, tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(PipelineError, match="junk.pt: not a weights file"):
        load_weights(model, tmp_path / "junk.pt")


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    model = build_model("resnet18", 10)
    state = {k: v for k, v in model.state_dict().items() if k != "layer4.1.bn2.running_var"}
    checkpoint = {"arch": "resnet18", "n_classes": 10, "in_channels": 3, "input": input_spec(3, "none"),
                  "image_size": 32, "dataset": "mnist", "state_dict": state}
    torch.save(checkpoint, tmp_path / "model.pt")
    with pytest.raises(PipelineError, match="model.pt: checkpoint does not fit a resnet18: key "
                                            "'layer4.1.bn2.running_var' is missing"):
        load_checkpoint(tmp_path / "model.pt")
    torch.save({**checkpoint, "arch": "vgg16"}, tmp_path / "model.pt")
    with pytest.raises(PipelineError, match="architecture 'vgg16' is not one of resnet18"):
        load_checkpoint(tmp_path / "model.pt")


def test_images_to_input_by_hand():
    grey = torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8)           # 1 x 1 x 2 x 2
    x = images_to_input(grey, torch.device("cpu"), channels_last=False, spec=input_spec(3, "none"))
    assert x.shape == (1, 3, 2, 2) and torch.equal(x[0, 2], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))
    x = images_to_input(grey, torch.device("cpu"), channels_last=True, spec=input_spec(3, "imagenet"))
    assert x.is_contiguous(memory_format=torch.channels_last)
    # (1 - 0.485) / 0.229 for the white pixel in the red channel
    assert x[0, 0, 0, 1].item() == pytest.approx((1 - 0.485) / 0.229)
    assert x[0, 2, 0, 0].item() == pytest.approx(-0.406 / 0.225)
