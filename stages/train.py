"""Stage train: a registry architecture (train.arch) trained on the prepared training subset with
Adam and cross-entropy, the learning rate decayed along half a cosine by default; optionally
started from a local weights file (train.weights); with train.epochs 0 those weights are the
model, unchanged.

Reads params `train` and `compute`, data/prepared/{train,test}.pt; writes artifacts/train/model.pt (the
checkpoint: state dict plus what rebuilds the model, netunits/models) and artifacts/train/log.json
(per epoch: loss, running train accuracy, test accuracy, test loss; the metrics of the test
subset after training), both cached; stage train_log writes the committed history.csv and
artifacts/metrics/train.json from the log.
"""
from netunits.api.train import load_train_inputs, run_train, write_train
from netunits.files import remove_stale_temps
from netunits.runtime import resolve_compute, run_stage, stage_args, stage_config
from netunits.stage_table import stage_outs, stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "train", "compute")
    paths = stage_paths("train", args.run_dir)
    remove_stale_temps(*stage_outs("train", args.run_dir))
    runtime = resolve_compute(params.compute, analysis=False, source=params.source)
    inputs = load_train_inputs(paths)
    result = run_train(inputs, params.train, runtime, params.source)
    write_train(result, paths)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
