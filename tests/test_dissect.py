"""probe_concepts, dissect and dissect_report on the tiny run: outputs agree, bad input is one line."""
import json

import pytest
import torch

from conftest import run_main, tiny_params, write_params
from netunits.data.probe import load_probe
from netunits.files import read_csv
from stages import dissect, dissect_report, probe_concepts


@pytest.fixture
def dissected(project):
    """The tiny run (conftest): 60 probe digits, masks at 16 px, layer2, layer3 and layer4."""
    return project


def test_probe_set_is_the_digits_after_the_rof_test_subset(dissected):
    probe = load_probe("data/probe/probe.pt")
    test = torch.load("data/prepared/test.pt", weights_only=True)
    assert probe["indices"].tolist() == list(range(200, 260))              # tiny test subset: the first 200
    assert probe["images"].shape == (60, 1, 32, 32) and probe["mask_size"] == 16
    assert not set(probe["indices"].tolist()) & set(test["indices"].tolist())
    names = [c["name"] for c in probe["concepts"]]
    digits = probe["image_labels"][:, names.index("digit_0") - probe["pixel_masks"].shape[1]:][:, :10]
    assert torch.equal(digits.float().argmax(1), probe["labels"]) and (digits.sum(1) == 1).all()
    assert (dissected / "artifacts/plots/probe_concepts.png").stat().st_size > 0


def test_tables_metrics_and_the_rof_join_agree(dissected):
    metrics = json.loads((dissected / "artifacts/metrics/dissect.json").read_text())
    for layer, units in (("layer2", 128), ("layer3", 256), ("layer4", 512)):
        table = read_csv(dissected / f"artifacts/dissect/layers/{layer}.csv", numeric=False)
        assert len(table["unit"]) == units and metrics["layers"][layer]["units"] == units
        ious = [float(v) for v in table["iou"]]
        detectors = [int(v) for v in table["detector"]]
        assert detectors == [int(v >= 0.04) for v in ious] and sum(detectors) == metrics["layers"][layer]["detectors"]
        assert all(float(a) >= float(b) >= float(c) for a, b, c in zip(table["iou"], table["iou_2"], table["iou_3"]))
    joined = read_csv(dissected / "artifacts/dissect/unit_roles.csv", numeric=False)
    layer4 = read_csv(dissected / "artifacts/dissect/layers/layer4.csv", numeric=False)
    roles = read_csv(dissected / "artifacts/rof/unit_roles.csv", numeric=False)
    assert joined["concept"] == layer4["concept"] and joined["category_acc"] == roles["category_acc"]
    assert sum(m["units"] for m in metrics["by_role"].values()) == 512
    for name in ("dissect_concepts.png", "dissect_strips.png"):
        assert (dissected / "artifacts/plots" / name).stat().st_size > 0


def test_a_higher_iou_threshold_changes_only_the_report(dissected):
    tallies = (dissected / "artifacts/dissect/tallies.pt").read_bytes()
    write_params(dissected, tiny_params(dissect={"iou_threshold": 0.5}))
    assert run_main(dissect_report.main) == 0
    metrics = json.loads((dissected / "artifacts/metrics/dissect.json").read_text())
    assert metrics["iou_threshold"] == 0.5 and (dissected / "artifacts/dissect/tallies.pt").read_bytes() == tallies


def test_bad_layer_and_rof_layer_are_one_line(dissected, capsys):
    write_params(dissected, tiny_params(dissect={"layers": ["layer2", "layer9"]}))
    assert run_main(dissect.main) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: params.yaml: 'dissect.layers' is 'layer9'; the model's layers are conv1") and \
        err.count("\n") == 1
    tallies = (dissected / "artifacts/dissect/tallies.pt").read_bytes()
    write_params(dissected, tiny_params(dissect={"layers": ["layer2", "layer3"]}))
    try:
        assert run_main(dissect.main) == 0 and run_main(dissect_report.main) == 2
        assert capsys.readouterr().err.endswith("'dissect.layers' is ['layer2', 'layer3']; it must include layer4, "
                                                "the block of resnet18 whose channels are ROF's units\n")
    finally:
        (dissected / "artifacts/dissect/tallies.pt").write_bytes(tallies)
    write_params(dissected, tiny_params(probe={"size": 9900}))
    assert run_main(probe_concepts.main) == 2
    assert "'probe.size' is 9900; after the 200 ROF test digits the test split has 9800 left" in \
        capsys.readouterr().err


def test_the_library_calls_give_what_the_stages_wrote(dissected):
    """run_dissect and run_dissect_report from tensors and a config, as a notebook calls them: the
    same tallies and tables as the stages' files."""
    from netunits.api.dissect import DissectInputs, run_dissect
    from netunits.api.dissect_report import DissectReportInputs, run_dissect_report
    from netunits.models.registry import load_checkpoint
    from netunits.params import load_params
    from netunits.plots import close
    from netunits.runtime import resolve_compute
    params = load_params(dissected / "params.yaml")
    model, checkpoint = load_checkpoint(dissected / "artifacts/train/model.pt")
    probe = load_probe(dissected / "data/probe/probe.pt")
    result = run_dissect(DissectInputs(model, probe, checkpoint["input"], checkpoint["sha256"]), params.dissect,
                         resolve_compute(params.compute, analysis=True))
    written = torch.load(dissected / "artifacts/dissect/tallies.pt", weights_only=True)
    assert result.layers == written["layers"] == ["layer2", "layer3", "layer4"]
    for layer, tallies in result.per_layer.items():
        assert all(torch.equal(value, written["per_layer"][layer][key]) for key, value in vars(tallies).items())
    roles = read_csv(dissected / "artifacts/rof/unit_roles.csv", numeric=False)
    report = run_dissect_report(DissectReportInputs(result, roles, probe["images"], "layer4"), params.dissect)
    for layer, rows in report.tables.items():
        table = read_csv(dissected / f"artifacts/dissect/layers/{layer}.csv", numeric=False)
        assert [r["concept"] for r in rows] == table["concept"]
        assert [f"{r['iou']:.6g}" for r in rows] == table["iou"]
    assert report.metrics == json.loads((dissected / "artifacts/metrics/dissect.json").read_text())
    assert report.summary().startswith("layer2: ") and len(report.summary().splitlines()) == 3
    close(report.concepts_figure)
    close(report.strips_figure)


def test_each_layers_table_joins_its_own_layer_rof_roles(dissected, capsys):
    from netunits.files import write_csv
    # the tiny run's layer_rof ran on no layer here: every table says so in words
    for layer in ("layer2", "layer3", "layer4"):
        table = read_csv(dissected / f"artifacts/dissect/layers/{layer}.csv", numeric=False)
        assert set(table["layer_role_acc"]) == {"not computed"} == set(table["layer_role_loss"])
    # a layer_rof table of layer3 joins layer3's rows, its detectors per role in the metrics
    acc = ["both", "neither", "test_only", "train_only"] * 64
    write_csv([{"unit": u, "rank_train": u + 1, "category_acc": acc[u], "category_loss": "both"} for u in range(256)],
              dissected / "artifacts/layer_rof/layer3_roles.csv")
    assert run_main(dissect_report.main) == 0
    layer3 = read_csv(dissected / "artifacts/dissect/layers/layer3.csv", numeric=False)
    assert layer3["layer_role_acc"] == acc and set(layer3["layer_role_loss"]) == {"both"}
    assert list(layer3)[-2:] == ["layer_role_acc", "layer_role_loss"]
    assert set(read_csv(dissected / "artifacts/dissect/layers/layer2.csv", numeric=False)["layer_role_acc"]) == \
        {"not computed"}
    metrics = json.loads((dissected / "artifacts/metrics/dissect.json").read_text())
    by_role = metrics["layers"]["layer3"]["by_layer_role"]
    assert {role: entry["units"] for role, entry in by_role.items()} == \
        {"both": 64, "train_only": 64, "test_only": 64, "neither": 64}
    assert "by_layer_role" not in metrics["layers"]["layer2"]
    # a table that is not the layer's channels stops the stage with one line
    write_csv([{"unit": u, "category_acc": "both", "category_loss": "both"} for u in range(10)],
              dissected / "artifacts/layer_rof/layer3_roles.csv")
    capsys.readouterr()
    assert run_main(dissect_report.main) == 2
    assert capsys.readouterr().err == ("error: artifacts/layer_rof/layer3_roles.csv: not a role per channel for the "
                                       "256 channels of layer3; rerun `dvc repro layer_rof`\n")
