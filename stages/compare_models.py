"""Stage compare_models: networks side by side on the probe set: the pipeline's trained network,
the same training with the seeds of compare.train_seeds and with the label noise of
compare.label_noise, and the architecture at random initialisation; per network and layer the
significant answers of network dissection on evaluate's held-out part and their distinct
concepts, the detectors and theirs; over the seeds, the concepts significant in every one.

Reads params `compare`, `train`, data.label_noise, data.seed, dissect.layers, dissect.quantile,
dissect.iou_threshold, evaluate.heldout_fraction, evaluate.seed, evaluate.fdr,
evaluate.min_coverage, evaluate.batch_size and `compute`; the checkpoint, the prepared subsets,
the probe set and artifacts/metrics/train.json; writes artifacts/compare/models.csv,
artifacts/plots/compare_models.png and artifacts/metrics/compare.json. The work is
netunits.api.compare_models.run_compare_models.
"""
from netunits.api.compare_models import load_compare_inputs, run_compare_models, write_compare_models
from netunits.api.evaluate import Settings
from netunits.runtime import resolve_compute, run_stage, stage_args, stage_config
from netunits.stage_table import stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "compare", "train", "data", "dissect", "evaluate", "compose", "clip_dissect",
                          "compute")
    paths = stage_paths("compare_models", args.run_dir)
    train_runtime = resolve_compute(params.compute, analysis=False, source=params.source)
    runtime = resolve_compute(params.compute, analysis=True, source=params.source)
    inputs = load_compare_inputs(paths)
    settings = Settings(params.evaluate, params.dissect, params.compose, params.clip_dissect)
    result = run_compare_models(inputs, params.compare, params.train, params.data, settings, train_runtime, runtime,
                                source=params.source)
    write_compare_models(result, paths, params.compare.dpi)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
