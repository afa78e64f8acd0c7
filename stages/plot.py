"""Stage plot: the ROF figure (the ROF notebook's rof_curve_turning_points.pdf) and the role figure.

Reads params `plot` and `train.arch` (for the titles), artifacts/rof/curve_{train,test}.csv,
artifacts/rof/units.json, artifacts/metrics/{train,rof}.json; writes
artifacts/plots/rof_curve_turning_points.{pdf,png} and artifacts/plots/unit_categories.png.
"""
from netunits.api.plot import load_plot_inputs, run_plot, write_plot
from netunits.files import remove_stale_temps
from netunits.models.registry import get_architecture
from netunits.plots import model_label
from netunits.runtime import run_stage, stage_args, stage_config
from netunits.stage_table import stage_outs, stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "plot", "train")
    paths = stage_paths("plot", args.run_dir)
    remove_stale_temps(*stage_outs("plot", args.run_dir))
    arch = params.train.arch
    label = model_label(arch, get_architecture(arch, source=params.source).pooled_layer)
    result = run_plot(load_plot_inputs(paths), label)
    write_plot(result, paths, params.plot)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
