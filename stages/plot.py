"""Stage plot: the ROF figure (the ROF notebook's rof_curve_turning_points.pdf) and the role figure.

Reads params `plot`, `train.arch` and `rof.layer` (for the titles), artifacts/rof/curve_{train,test}.csv,
artifacts/rof/units.json, artifacts/metrics/{train,rof}.json; writes
artifacts/plots/rof_curve_turning_points.{pdf,png} and artifacts/plots/unit_categories.png.
"""
from netunits.files import read_csv, read_json, remove_stale_temps
from netunits.plots import category_figure, close, model_label, rof_figure, save_figure
from netunits.runtime import run_stage, stage_args, stage_params


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_params("plot", args)
    label = model_label(stage_params("train", args)["arch"], stage_params("rof", args)["layer"])
    rof_dir, out_dir = args.run_dir / "artifacts/rof", args.run_dir / "artifacts/plots"
    rof_pdf, rof_png = out_dir / "rof_curve_turning_points.pdf", out_dir / "rof_curve_turning_points.png"
    category_png = out_dir / "unit_categories.png"
    remove_stale_temps(rof_pdf, rof_png, category_png)
    curves = {s: read_csv(rof_dir / f"curve_{s}.csv") for s in ("train", "test")}
    rof_metrics = read_json(args.run_dir / "artifacts/metrics/rof.json")
    baseline = read_json(args.run_dir / "artifacts/metrics/train.json")["baseline_accuracy"]
    ranking = read_json(rof_dir / "units.json")["ranking"]
    figure = rof_figure(curves, rof_metrics, baseline, ranking, label)
    save_figure(figure, rof_pdf, params["dpi"])
    save_figure(figure, rof_png, params["dpi"])
    close(figure)
    figure = category_figure(rof_metrics["taxonomy"], int(curves["train"]["n_units"][-1]))
    save_figure(figure, category_png, params["dpi"])
    close(figure)
    print(f"wrote {rof_pdf}, {rof_png} and {category_png}")


if __name__ == "__main__":
    run_stage(main)
