"""plot and netunits.plots: the figures exist, are deterministic, name the model and mark
degenerate turning points."""
import json

from conftest import run_main, tiny_params, write_params
from netunits import plots
from netunits.files import read_csv
from stages import plot


def test_figures_are_written_and_deterministic(project):
    outputs = ["rof_curve_turning_points.pdf", "rof_curve_turning_points.png", "unit_categories.png"]
    first = {name: (project / "artifacts/plots" / name).read_bytes() for name in outputs}
    assert first["rof_curve_turning_points.pdf"].startswith(b"%PDF")
    assert first["unit_categories.png"].startswith(b"\x89PNG")
    assert run_main(plot.main) == 0
    for name in outputs:
        assert (project / "artifacts/plots" / name).read_bytes() == first[name], name


def test_degenerate_turning_points_are_marked(project):
    metrics = json.loads((project / "artifacts/metrics/rof.json").read_text())
    metrics["test"]["n0_acc"] = 512
    figure = plots.rof_figure({s: read_csv(f"artifacts/rof/curve_{s}.csv") for s in ("train", "test")},
                              metrics, 0.5, "l1", "ResNet18")
    titles = [ax.get_title() for ax in figure.axes]
    assert any("degenerate (exact): U0 holds all units" in t for t in titles)
    metrics["taxonomy"]["exact"]["loss"]["degenerate"] = True
    figure = plots.category_figure(metrics["taxonomy"], 512)
    assert "degenerate by loss" in figure.axes[0].get_title()


def test_missing_input_is_one_line(project, capsys):
    (project / "artifacts/rof/curve_test.csv").unlink()
    assert run_main(plot.main) == 2
    assert capsys.readouterr().err == ("error: artifacts/rof/curve_test.csv: file not found; "
                                       "run `dvc repro` to create it\n")


def test_titles_name_the_model_and_layer(project):
    assert plots.model_label("resnet18", "avgpool") == "ResNet18"
    assert plots.model_label("torchvision:resnet50", "layer4") == "torchvision:resnet50 (layer4)"
    png = project / "artifacts/plots/rof_curve_turning_points.png"
    before = png.read_bytes()
    write_params(project, tiny_params(train={"arch": "torchvision:resnet18"}))
    assert run_main(plot.main) == 0
    assert png.read_bytes() != before            # another title
