"""Stage finetune_decomposed: the decomposed network ("Decomposing the Deep": each class's logit
reads only its k influential units) trained end to end with Adam, test accuracy per epoch.

Reads params `finetune`, extract_features.batch_size and `compute`, artifacts/train/model.pt,
data/prepared/{train,test}.pt and artifacts/influence/sets.json (the class sets of finetune.k);
writes artifacts/finetune/curve.csv (per epoch, 0 = before training: the decomposed network's
test accuracy and loss, the full network's accuracy, the mean training loss) and
artifacts/metrics/finetune.json. Epoch 0 equals influential_filters' decomposed accuracy at k.
"""
from netunits.api.finetune_decomposed import load_finetune_inputs, run_finetune_decomposed, write_finetune_decomposed
from netunits.files import remove_stale_temps
from netunits.runtime import resolve_compute, run_stage, stage_args, stage_config
from netunits.stage_table import stage_outs, stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "finetune", "extract_features", "compute")
    paths = stage_paths("finetune_decomposed", args.run_dir)
    remove_stale_temps(*stage_outs("finetune_decomposed", args.run_dir))
    # extract_features' precision (analysis=False): the one today's decomposed accuracy was measured in
    runtime = resolve_compute(params.compute, analysis=False, source=params.source)
    inputs = load_finetune_inputs(paths)
    result = run_finetune_decomposed(inputs, params.finetune, runtime, params.extract_features.batch_size,
                                     params.source)
    write_finetune_decomposed(result, paths)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
