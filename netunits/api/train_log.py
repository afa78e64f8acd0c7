"""train's log (the cached artifacts/train/log.json) as the committed training history
(artifacts/train/history.csv, which `dvc plots` draws) and metrics (artifacts/metrics/train.json).

train writes only cached files, so that `dvc checkout` restores all of its outputs after a run
that failed once DVC had removed them; the committed copies belong to this stage, which DVC runs
(and so empties) only after train succeeded.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from netunits.errors import PipelineError
from netunits.files import read_json, write_csv, write_json


@dataclass
class TrainLogResult:
    history: list[dict]                # per epoch: loss, running train accuracy, test accuracy, test loss
    metrics: dict                      # the test subset after training

    def summary(self) -> str:
        trained = self.history[-1]["epoch"] > 0
        epochs = f"{len(self.history)} epochs" if trained else "no training (epoch 0: the weights as given)"
        return f"training log: {epochs}, test accuracy {self.metrics['baseline_accuracy']:.4f}"


def load_train_log_inputs(paths: dict[str, Path]) -> dict:
    log = read_json(paths["train_log"])
    if not isinstance(log, dict) or not log.get("history") or not isinstance(log.get("metrics"), dict):
        raise PipelineError(f"{paths['train_log']}: not a training log (expected history and metrics); "
                            f"rebuild it with `dvc repro -f train`")
    return log


def run_train_log(log: dict) -> TrainLogResult:
    return TrainLogResult(log["history"], log["metrics"])


def write_train_log(result: TrainLogResult, paths: dict[str, Path]) -> None:
    write_csv(result.history, paths["history"])
    write_json(result.metrics, paths["train_metrics"])
