"""layer_rof on a tiny real run: curves on the grid and around the turning points, roles as rof
defines them, bad layers and grids are one line and write nothing."""
import json
import shutil

import pytest
import torch

from conftest import run_main, tiny_params, working_dir, write_params
from netunits.files import read_csv
from stages import layer_rof, prepare_data, train

pytestmark = pytest.mark.slow
METRICS = "artifacts/metrics/layer_rof.json"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    folder = tmp_path_factory.mktemp("layer_rof_upstream")
    write_params(folder, params())
    with working_dir(folder):
        for stage in (prepare_data, train):
            assert run_main(stage.main) == 0, stage.__name__
    return folder


@pytest.fixture
def run(upstream, tmp_path, monkeypatch):
    for name in ("data", "artifacts"):
        shutil.copytree(upstream / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def params(**layer):
    """100 training and 100 test images: every K costs a forward pass of the rest of the network."""
    return tiny_params(data={"train_size": 100, "test_size": 100}, train={"epochs": 1},
                       layer_rof={"layers": ["layer2", "layer3"], "k_step": 32, **layer})


def test_curves_turning_points_and_roles(run):
    write_params(run, params(images=80))
    assert run_main(layer_rof.main) == 0
    metrics = json.loads((run / METRICS).read_text())
    assert metrics["images"] == {"train": 80, "test": 80}
    assert metrics["turning_point"] == "tolerance" and list(metrics["layers"]) == ["layer2", "layer3"]
    for layer, n in (("layer2", 128), ("layer3", 256)):
        m = metrics["layers"][layer]
        curves = read_csv(run / f"artifacts/layer_rof/{layer}_curves.csv", numeric=False)
        roles = read_csv(run / f"artifacts/layer_rof/{layer}_roles.csv", numeric=False)
        roles.update({key: [int(v) for v in roles[key]] for key in ("unit", "rank_train", "rank_test")})
        assert m["n_channels"] == n and len(roles["unit"]) == n
        for subset in ("train", "test"):
            rows = [i for i, s in enumerate(curves["subset"]) if s == subset]
            ks = [int(curves["n_units"][i]) for i in rows]
            grid_ks = {int(curves["n_units"][i]) for i in rows if curves["on_grid"][i] == "1"}
            assert grid_ks == set(range(0, n + 1, 32)) and ks == sorted(ks) and len(ks) == m[subset]["evaluated"]
            for key in ("n0_acc", "n0_loss", "n0_acc_tol", "n0_loss_tol"):   # refined: both neighbours evaluated
                point = m[subset][key]
                assert {max(point - 1, 0), point, min(point + 1, n)} <= set(ks), (layer, subset, key)
            accuracy = {int(curves["n_units"][i]): float(curves["accuracy"][i]) for i in rows}
            assert m[subset]["full_accuracy"] == accuracy[n] and m[subset]["max_accuracy"] == max(accuracy.values())
            assert accuracy[m[subset]["n0_acc"]] == max(accuracy.values())
        # roles: rof's definitions on this layer's channel ranks and turning points
        in_u0 = {s: torch.tensor(roles[f"rank_{s}"]) <= m[s]["n0_acc_tol"] for s in ("train", "test")}
        expected = ["both" if a and b else "train_only" if a else "test_only" if b else "neither"
                    for a, b in zip(in_u0["train"].tolist(), in_u0["test"].tolist())]
        assert roles["category_acc"] == expected
        assert sum(m["roles"]["acc"][c] for c in ("both", "train_only", "test_only", "neither")) == n
        assert sorted(roles["rank_train"]) == list(range(1, n + 1)) and roles["unit"] == list(range(n))


@pytest.mark.parametrize("layer,message", [
    ({"layers": ["layer9"]}, "error: params.yaml: 'layer_rof.layers' is 'layer9'; the model's layers are conv1,"),
    ({"layers": ["avgpool"]}, "error: params.yaml: 'layer_rof.layers' has 'avgpool', whose output (1, 512, 1, 1) "
                              "has no spatial maps"),
    ({"layers": ["layer2", "layer4"]}, "error: params.yaml: 'layer_rof.layers' has 'layer4', whose output"),
    ({"k_step": 128}, "error: params.yaml: 'layer_rof.k_step' is 128; it must be from 1 to 127 (layer2 has 128 "
                      "channels)\n"),
    ({"k_step": 0}, "error: params.yaml: 'layer_rof.k_step' is 0; it must be an integer >= 1\n"),
])
def test_bad_layers_and_grids_are_one_line_and_write_nothing(run, capsys, layer, message):
    write_params(run, params(**layer))
    assert run_main(layer_rof.main) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (run / METRICS).exists() and not (run / "artifacts/layer_rof").exists()
