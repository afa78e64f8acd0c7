"""rof_sweep on a tiny real run: its outputs agree with each other, its inputs are checked."""
import json

import torch

from conftest import run_main, tiny_params, write_params
from netunits.methods import rof
from stages import rof_sweep


def test_stage_outputs_agree_with_each_other(project):
    metrics = json.loads((project / "artifacts/metrics/rof.json").read_text())
    units = json.loads((project / "artifacts/rof/units.json").read_text())
    features = torch.load(project / "artifacts/features/test.pt", weights_only=True)
    assert "clean_labels" not in features and "labels_changed" not in metrics["train"]
    model_accuracy = float((features["logits"].argmax(1) == features["labels"]).double().mean())
    assert metrics["test"]["full_accuracy"] == model_accuracy
    for subset in ("train", "test"):
        order = units["subsets"][subset]["order"]
        assert sorted(order) == list(range(512))
        assert units["subsets"][subset]["n0"]["exact"]["acc"] == metrics[subset]["n0_acc"]
        u0 = units["subsets"][subset]["U0"]["tolerance"]["loss"]
        assert sorted(order[:metrics[subset]["n0_loss_tol"]]) == u0
    for definition in ("exact", "tolerance"):
        for metric in ("acc", "loss"):
            counts = metrics["taxonomy"][definition][metric]
            assert sum(counts[c] for c in rof.CATEGORIES) == 512
    lines = (project / "artifacts/rof/curve_test.csv").read_text().splitlines()
    assert lines[0].startswith("n_units,accuracy,loss,accuracy_l1") and len(lines) == 1 + 513
    roles = (project / "artifacts/rof/unit_roles.csv").read_text().splitlines()
    assert roles[0] == "unit,l1_train,l1_test,rank_train,rank_test,category_acc,category_loss"
    assert len(roles) == 513


def test_features_from_another_checkpoint_are_refused(project, capsys):
    features = torch.load("artifacts/features/train.pt", weights_only=True)
    features["checkpoint_sha256"] = "0" * 64
    torch.save(features, "artifacts/features/train.pt")
    assert run_main(rof_sweep.main) == 2
    err = capsys.readouterr().err.strip()
    assert "artifacts/features/train.pt: extracted from a different checkpoint" in err and "\n" not in err


def test_all_units_must_reproduce_the_models_accuracy(project, capsys):
    features = torch.load("artifacts/features/test.pt", weights_only=True)
    features["logits"] = -features["logits"]  # the "model" now predicts something else
    torch.save(features, "artifacts/features/test.pt")
    assert run_main(rof_sweep.main) == 2
    assert "features and final layer disagree" in capsys.readouterr().err


def test_bad_rof_param_writes_nothing(project, capsys):
    write_params(project, tiny_params(rof={"ranking": "l2"}))
    outputs = sorted((project / "artifacts/rof").iterdir())
    before = {path: path.read_bytes() for path in outputs}
    (project / "artifacts/metrics/rof.json").unlink()
    assert run_main(rof_sweep.main) == 2
    assert capsys.readouterr().err.strip() == ("error: params.yaml: 'rof.ranking' is 'l2'; "
                                               "it must be one of l1, random, ascending")
    assert not (project / "artifacts/metrics/rof.json").exists()
    assert sorted((project / "artifacts/rof").iterdir()) == outputs           # no file added ...
    assert all(path.read_bytes() == content for path, content in before.items())  # ... none rewritten


def test_a_truncated_features_file_is_one_line(project, capsys):
    path = project / "artifacts/features/test.pt"
    path.write_bytes(path.read_bytes()[:1000])
    assert run_main(rof_sweep.main) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: artifacts/features/test.pt: corrupt or not a features file") and err.count("\n") == 1


def test_features_without_the_layer_the_final_layer_reads_are_refused(project, capsys):
    # ROF's units are the architecture's pooled layer (the registry's, via the checkpoint)
    features = torch.load("artifacts/features/train.pt", weights_only=True)
    features["features"] = {"layer3": torch.rand(300, 256)}
    torch.save(features, "artifacts/features/train.pt")
    assert run_main(rof_sweep.main) == 2
    assert capsys.readouterr().err == ("error: artifacts/features/train.pt: holds no features of avgpool with the 512 "
                                       "units the final layer reads; rerun `dvc repro extract_features`\n")
    features["features"] = {"avgpool": torch.rand(300, 256)}
    torch.save(features, "artifacts/features/train.pt")
    assert run_main(rof_sweep.main) == 2
    assert "holds no features of avgpool with the 512 units" in capsys.readouterr().err


def test_label_noise_is_reported_with_the_clean_accuracy(project):
    for split in ("train", "test"):
        features = torch.load(f"artifacts/features/{split}.pt", weights_only=True)
        if split == "train":
            features["clean_labels"] = features["labels"].clone()
            features["labels"][:30] = (features["labels"][:30] + 1) % 10
        torch.save(features, f"artifacts/features/{split}.pt")
    # the model's own accuracy on the noisy labels is what ROF with all units must reproduce
    assert run_main(rof_sweep.main) == 0
    metrics = json.loads((project / "artifacts/metrics/rof.json").read_text())
    assert metrics["train"]["labels_changed"] == 30 and "labels_changed" not in metrics["test"]
    logits, clean = features_of("train")
    assert metrics["train"]["accuracy_clean_labels"] == float((logits.argmax(1) == clean).double().mean())


def features_of(split):
    data = torch.load(f"artifacts/features/{split}.pt", weights_only=True)
    return data["logits"], data["clean_labels"]
