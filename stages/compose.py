"""Stage compose: compositional explanations: for every unit of compose.layers, the logical formula
over the probe set's concepts whose mask best matches the unit's, by beam search, with its score,
length and the best single concept beside it.

A unit's mask is network dissection's: its activation map above the threshold dissect found
(the dissect.quantile of its activations). Reads params `compose` and dissect's batch_size,
device, precision and threads (the activations are dissect's, recomputed), artifacts/train/model.pt,
data/probe/probe.pt and artifacts/dissect/tallies.pt; writes artifacts/compose/formulas.csv,
artifacts/compose/top_masks.pt (each formula's mask on its unit's top images, for the report),
artifacts/metrics/compose.json and artifacts/plots/compose_lengths.png.
"""
from types import SimpleNamespace

from netunits.api.compose import load_compose_inputs, run_compose, write_compose
from netunits.runtime import choose_device, choose_precision, run_stage, set_threads, stage_args, stage_params


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params, dissect = stage_params("compose", args), stage_params("dissect", args)
    config = SimpleNamespace(**params, batch_size=dissect["batch_size"])
    device = choose_device(dissect["device"], "dissect.device")
    runtime = SimpleNamespace(device=device, precision=choose_precision(dissect["precision"], device,
                                                                       "dissect.precision"))
    set_threads(dissect["threads"])
    run_dir = args.run_dir
    paths = {"model": run_dir / "artifacts/train/model.pt", "probe": run_dir / "data/probe/probe.pt",
             "tallies": run_dir / "artifacts/dissect/tallies.pt",
             "formulas": run_dir / "artifacts/compose/formulas.csv",
             "top_masks": run_dir / "artifacts/compose/top_masks.pt",
             "metrics": run_dir / "artifacts/metrics/compose.json",
             "figure": run_dir / "artifacts/plots/compose_lengths.png"}
    result = run_compose(load_compose_inputs(paths), config, runtime)
    write_compose(result, paths)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
