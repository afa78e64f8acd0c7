"""influential_filters on a tiny real run: outputs agree with each other and with ROF's, bad
params are one line."""
import json

import torch

from conftest import run_main, tiny_params, write_params
from netunits.files import read_csv
from stages import influential_filters


def test_outputs_agree_with_each_other_and_with_rof(project):
    metrics = json.loads((project / "artifacts/metrics/influence.json").read_text())
    rof = json.loads((project / "artifacts/metrics/rof.json").read_text())
    assert metrics["accuracy_full"] == rof["test"]["full_accuracy"] == metrics["accuracy_model"]
    sets = json.loads((project / "artifacts/influence/sets.json").read_text())["sets"]
    assert list(sets) == ["5", "10", "15", "20", "25", "30", "35"]
    assert all(len(entry["units"]) == 5 and len(set(entry["units"])) == 5 for entry in sets["5"].values())
    # a class's top 5 are the first 5 of its top 10 (the same ranking, cut at k) when k_image is fixed ...
    by_k = read_csv(project / "artifacts/influence/by_k.csv")
    assert by_k["k"] == [5, 10, 15, 20, 25, 30, 35] and by_k["k_image"] == by_k["k"]   # ... here it is k itself
    units = read_csv(project / "artifacts/influence/units.csv", numeric=False)
    roles = read_csv(project / "artifacts/rof/unit_roles.csv", numeric=False)
    assert units["category_acc"] == roles["category_acc"] and len(units["unit"]) == 512
    listed = [(int(c), u) for u, classes in enumerate(units["influential_for_k5"]) for c in classes.split(";") if c]
    assert sorted(listed) == sorted((int(c), u) for c, e in sets["5"].items() for u in e["units"])
    by_class = read_csv(project / "artifacts/influence/by_class.csv", numeric=False)
    first = {name: values[0] for name, values in by_class.items()}
    units = json.loads((project / "artifacts/rof/units.json").read_text())
    u0 = set(units["subsets"]["train"]["U0"]["tolerance"]["acc"])
    members = [int(u) for u in first["units"].split(";")]
    assert int(first["in_u0_train_acc"]) == len(u0 & set(members))
    assert first["roles_acc"].split(";") == [roles["category_acc"][u] for u in members]
    test = torch.load(project / "artifacts/features/test.pt", weights_only=True)
    assert int(first["n_test"]) == int((test["labels"] == 0).sum())


def test_bad_k_and_table_k_are_one_line_and_write_nothing(project, capsys):
    metrics = project / "artifacts/metrics/influence.json"
    metrics.unlink()
    write_params(project, tiny_params(influence={"k": [5, 600]}))
    assert run_main(influential_filters.main) == 2
    assert capsys.readouterr().err == ("error: params.yaml: 'influence.k' or 'influence.k_image' is 600 but avgpool "
                                       "has only 512 units\n")
    write_params(project, tiny_params(influence={"table_k": 7}))
    assert run_main(influential_filters.main) == 2
    assert capsys.readouterr().err == ("error: params.yaml: 'influence.table_k' is 7; it must be one of influence.k "
                                       "(5, 10, 15, 20, 25, 30, 35)\n")
    assert not metrics.exists()


def test_a_checkpoint_whose_class_count_disagrees_is_refused(project, capsys):
    checkpoint = torch.load("artifacts/train/model.pt", weights_only=True)
    checkpoint["n_classes"] = 12
    torch.save(checkpoint, "artifacts/train/model.pt")
    assert run_main(influential_filters.main) == 2
    assert "artifacts/train/model.pt: records 12 classes but its final layer has 10" in capsys.readouterr().err
