"""Stage featurevis on the tiny run: the default selection covers the ROF roles with the best
detectors first, grey PNGs, the same bytes on a rerun, and bad params are one line that writes
nothing."""
import json

import pytest
from PIL import Image

from conftest import run_main, tiny_params, write_params
from netunits.errors import PipelineError
from netunits.featurevis import select_units
from netunits.files import read_csv
from netunits.params import validate_params
from stages import featurevis

FOLDER, METRICS = "artifacts/featurevis", "artifacts/metrics/featurevis.json"


def outputs(folder):
    """Every file featurevis wrote under `folder`, by path, with its bytes, and the metrics' bytes."""
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in (folder / FOLDER).rglob("*") if p.is_file()}
    return files, (folder / METRICS).read_bytes()


def test_the_default_selection_covers_every_role_with_grey_pngs(project):
    table = read_csv(project / FOLDER / "units.csv", numeric=False)
    roles = read_csv(project / "artifacts/rof/unit_roles.csv", numeric=False)["category_acc"]
    iou = [float(v) for v in read_csv(project / "artifacts/dissect/layers/layer4.csv", numeric=False)["iou"]]
    units = [int(u) for u in table["unit"]]
    assert units == select_units(roles, iou, 6) and len(units) == 6
    assert set(table["role"]) == set(roles) and table["role"] == [roles[u] for u in units]
    metrics = json.loads((project / METRICS).read_text())
    assert metrics["units"] == 6 and metrics["layer_units"] == 512 and metrics["selection"] == "default"
    assert metrics["size"] == 32 and metrics["channels"] == 1 and metrics["steps"] == 4
    assert "seconds" not in metrics                                       # a rerun writes the same bytes
    assert metrics["png_bytes"] == sum((project / FOLDER / f).stat().st_size for f in table["file"])
    for unit, file in zip(units, table["file"]):
        assert file == f"layer4/{unit}.png"
        with Image.open(project / FOLDER / file) as image:
            assert image.mode == "L" and image.size == (32, 32)          # MNIST: grey, at the model's size


def test_same_params_same_bytes_and_another_seed_others(project, tiny_run):
    assert run_main(featurevis.main) == 0
    assert outputs(project) == outputs(tiny_run)
    assert run_main(featurevis.main, "--set", "featurevis.seed=1") == 0
    files, _ = outputs(project)
    before, _ = outputs(tiny_run)
    assert files.keys() == before.keys() and all(files[f] != before[f] for f in files if f.endswith(".png"))


def test_all_units_and_a_list(project):
    assert run_main(featurevis.main, "--set", "featurevis.units=all", "--set", "featurevis.steps=1",
                    "--set", "featurevis.batch_size=200") == 0
    table = read_csv(project / FOLDER / "units.csv", numeric=False)
    assert table["unit"] == [str(u) for u in range(512)] and len(list((project / FOLDER / "layer4").iterdir())) == 512
    assert run_main(featurevis.main, "--set", "featurevis.units=[9, 2]", "--set", "featurevis.size=40") == 0
    assert read_csv(project / FOLDER / "units.csv", numeric=False)["unit"] == ["2", "9"]
    assert sorted(p.name for p in (project / FOLDER / "layer4").iterdir()) == ["2.png", "9.png"]    # none stale
    assert json.loads((project / METRICS).read_text())["selection"] == "list"
    with Image.open(project / FOLDER / "layer4/2.png") as image:
        assert image.size == (40, 40)


@pytest.mark.parametrize("values,message", [
    ({"units": [3, 512]}, "error: params.yaml: 'featurevis.units' has 512; it must be unit indices of layer4 from 0 "
                          "to 511\n"),
    ({"layer": "layer9"}, "error: params.yaml: 'featurevis.layer' is 'layer9', which the model lacks; its top-level "
                          "layers are conv1, "),
    ({"layer": "layer2"}, "error: params.yaml: 'featurevis.units' is 'default', which selects by ROF role, but ROF "
                          "has no roles of layer2"),
    ({"units": "some"}, "error: params.yaml: 'featurevis.units' is 'some'; it must be default, all or a non-empty "
                        "list of distinct unit indices >= 0\n"),
    ({"steps": 0}, "error: params.yaml: 'featurevis.steps' is 0; it must be an integer from 1 to 100000\n"),
])
def test_bad_params_are_one_line_and_write_nothing(project, capsys, values, message):
    for path in (project / FOLDER).rglob("*"):
        if path.is_file():
            path.unlink()
    (project / METRICS).unlink()
    write_params(project, tiny_params(featurevis=values))
    assert run_main(featurevis.main) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (project / METRICS).exists() and not [p for p in (project / FOLDER).rglob("*") if p.is_file()]


@pytest.mark.parametrize("key,value,message", [
    ("units", [1, 1], "'featurevis.units' is [1, 1]; it must be default, all or a non-empty list of distinct"),
    ("units", [-1], "'featurevis.units' is [-1]"),
    ("units", [], "'featurevis.units' is []"),
    ("size", 16, "'featurevis.size' is 16; it must be auto or an integer from 32 to 448"),
    ("transforms", "lucid", "'featurevis.transforms' is 'lucid'; it must be one of standard, none"),
    ("n_units", 0, "'featurevis.n_units' is 0; it must be an integer >= 1"),
    ("decorrelate", "yes", "'featurevis.decorrelate' is 'yes'; it must be true or false"),
])
def test_bad_values_are_named_with_what_is_allowed(key, value, message):
    with pytest.raises(PipelineError) as info:
        validate_params(tiny_params(featurevis={key: value}), source="params.yaml")
    assert str(info.value).startswith("params.yaml: " + message) and "\n" not in str(info.value)
