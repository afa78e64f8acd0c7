"""Stage train_log: train's cached log as the committed history and metrics.

Reads artifacts/train/log.json; writes artifacts/train/history.csv (per epoch: loss, running
train accuracy, test accuracy, test loss; `dvc plots` draws it) and artifacts/metrics/train.json
(baseline_accuracy: the test subset after training).
"""
from netunits.api.train_log import load_train_log_inputs, run_train_log, write_train_log
from netunits.files import remove_stale_temps
from netunits.runtime import run_stage, stage_args
from netunits.stage_table import stage_outs, stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    paths = stage_paths("train_log", args.run_dir)
    remove_stale_temps(*stage_outs("train_log", args.run_dir))
    result = run_train_log(load_train_log_inputs(paths))
    write_train_log(result, paths)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
