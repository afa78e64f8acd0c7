"""Stage extract_features: one value per unit and image (the spatial mean) at each layer of
extract_features.layers (which must include the architecture's pooled layer, avgpool), for the
training and the test subsets, by forward hooks in eval mode.

Reads params `extract_features` and `compute`, artifacts/train/model.pt and
data/prepared/{train,test}.pt; writes artifacts/features/{train,test}.pt, each a dict with
features ({layer: fp32 N x units}),
logits (the model's own fp32 output), labels, indices, clean_labels where the labels carry
noise, and the sha256 of the checkpoint they came from (rof_sweep refuses features that do not
match the checkpoint it is given).
"""
from netunits.api.extract_features import load_extract_features_inputs, run_extract_features, write_extract_features
from netunits.files import remove_stale_temps
from netunits.runtime import resolve_compute, run_stage, stage_args, stage_config
from netunits.stage_table import stage_outs, stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "extract_features", "compute")
    paths = stage_paths("extract_features", args.run_dir)
    remove_stale_temps(*stage_outs("extract_features", args.run_dir))
    runtime = resolve_compute(params.compute, analysis=False, source=params.source)
    inputs = load_extract_features_inputs(paths)
    result = run_extract_features(inputs, params.extract_features, runtime, params.source,
                                  out_dir=paths["train_features"].parent)
    write_extract_features(result, paths)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
