"""Stage plot: the ROF figure (the ROF notebook's rof_curve_turning_points.pdf) and the role figure.

Reads params `plot`, `train.arch` and `rof.layer` (for the titles), artifacts/rof/curve_{train,test}.csv,
artifacts/rof/units.json, artifacts/metrics/{train,rof}.json; writes
artifacts/plots/rof_curve_turning_points.{pdf,png} and artifacts/plots/unit_categories.png.
"""
from netunits.files import read_csv, read_json, remove_stale_temps
from netunits.plots import category_figure, close, model_label, rof_figure, save_figure
from netunits.models.registry import get_architecture
from netunits.runtime import run_stage, stage_args, stage_config
from netunits.stage_table import stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    config = stage_config(args, "plot", "train")
    params, arch = config.plot, config.train.arch
    label = model_label(arch, get_architecture(arch, source=config.source).pooled_layer)
    paths = stage_paths("plot", args.run_dir)
    rof_pdf, rof_png, category_png = paths["rof_figure_pdf"], paths["rof_figure"], paths["categories_figure"]
    remove_stale_temps(rof_pdf, rof_png, category_png)
    curves = {s: read_csv(paths[f"rof_curve_{s}"]) for s in ("train", "test")}
    rof_metrics = read_json(paths["rof_metrics"])
    baseline = read_json(paths["train_metrics"])["baseline_accuracy"]
    ranking = read_json(paths["rof_units"])["ranking"]
    figure = rof_figure(curves, rof_metrics, baseline, ranking, label)
    save_figure(figure, rof_pdf, params.dpi)
    save_figure(figure, rof_png, params.dpi)
    close(figure)
    figure = category_figure(rof_metrics["taxonomy"], int(curves["train"]["n_units"][-1]))
    save_figure(figure, category_png, params.dpi)
    close(figure)
    print(f"wrote {rof_pdf}, {rof_png} and {category_png}")


if __name__ == "__main__":
    run_stage(main)
