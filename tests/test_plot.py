"""plot: the figures exist, are deterministic, and mark degenerate turning points."""
import json

from conftest import run_main
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
    figure = plot.rof_figure({s: plot.read_csv(f"artifacts/rof/curve_{s}.csv") for s in ("train", "test")},
                             metrics, 0.5, "l1")
    titles = [ax.get_title() for ax in figure.axes]
    assert any("degenerate (exact): U0 holds all units" in t for t in titles)
    metrics["taxonomy"]["exact"]["loss"]["degenerate"] = True
    figure = plot.category_figure(metrics["taxonomy"])
    assert "degenerate by loss" in figure.axes[0].get_title()


def test_missing_input_is_one_line(project, capsys):
    (project / "artifacts/rof/curve_test.csv").unlink()
    assert run_main(plot.main) == 2
    assert capsys.readouterr().err == ("error: artifacts/rof/curve_test.csv: file not found; "
                                       "run `dvc repro` to create it\n")
