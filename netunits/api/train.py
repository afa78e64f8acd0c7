"""Training a registry architecture on prepared subsets, or taking a weights file as it is.

From a notebook: `run_train(TrainInputs(train, test), TrainParams(...), Runtime(device, "fp32"))`
with `train` and `test` prepared subsets (netunits/data/prepared.py: uint8 images, labels,
image_size, n_classes, dataset); the result holds the model, the checkpoint the stage saves,
the per-epoch history and the metrics.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from netunits.data.prepared import load_prepared
from netunits.errors import PipelineError
from netunits.files import save_torch, write_json
from netunits.models.inputs import check_channels, input_spec
from netunits.models.registry import build_model, get_architecture, load_weights
from netunits.params import TrainParams
from netunits.runtime import Runtime, seed_everything
from netunits.training import evaluate, train_model


@dataclass
class TrainInputs:
    train: dict                        # prepared subsets
    test: dict
    train_path: str = "the training subset"   # named in messages


@dataclass
class TrainResult:
    model: torch.nn.Module             # in eval mode, on the runtime's device
    checkpoint: dict                   # the state dict and what rebuilds the model (model.pt)
    history: list[dict]                # per epoch: loss, running train accuracy, test accuracy, test loss
    metrics: dict                      # the test subset after training

    def summary(self) -> str:
        return (f"{self.checkpoint['arch']}: test accuracy {self.metrics['baseline_accuracy']:.4f}, test loss "
                f"{self.metrics['baseline_loss']:.4f}, last training loss {self.metrics['final_train_loss']:.4f}")


def load_train_inputs(paths: dict[str, Path]) -> TrainInputs:
    train, test = load_prepared(paths["train_set"]), load_prepared(paths["test_set"])
    if train["image_size"] != test["image_size"] or train["n_classes"] != test["n_classes"]:
        raise PipelineError(f"{paths['train_set'].parent}: train and test subsets differ in image size or classes; "
                            f"rerun `dvc repro -f prepare_data`")
    return TrainInputs(train, test, str(paths["train_set"]))


def run_train(inputs: TrainInputs, config: TrainParams, runtime: Runtime, source: str = "params.yaml") -> TrainResult:
    architecture = get_architecture(config.arch, source=source)
    train, test = inputs.train, inputs.test
    spec = input_spec(architecture.in_channels, config.input_norm)
    check_channels(train["images"].shape[1], spec, inputs.train_path)
    where = f"on {runtime.device} ({runtime.precision}, {torch.get_num_threads()} threads)"
    if config.epochs > 0:
        print(f"training {config.arch} {where}: {len(train['labels'])} {train['dataset']} images, "
              f"{config.epochs} epochs")
    else:
        print(f"train.epochs is 0: evaluating {config.weights} as it is ({config.arch}) {where} on the "
              f"{len(train['labels'])} training and {len(test['labels'])} test {train['dataset']} images; no training")
    seed_everything(config.seed)
    model = build_model(config.arch, train["n_classes"])
    if config.weights is not None:
        head_loaded = load_weights(model, config.weights, arch=config.arch, source=source)
        if not head_loaded and config.epochs == 0:
            raise PipelineError(f"{config.weights}: its final layer does not have {train['n_classes']} "
                                f"classes ({train['dataset']}); train it with 'train.epochs' above 0")
        print(f"started from {config.weights}" + ("" if head_loaded else " (final layer newly initialised)"))
    model = model.to(runtime.device).to(memory_format=torch.channels_last)
    kwargs = dict(device=runtime.device, precision=runtime.precision, input_spec=spec)
    if config.epochs > 0:
        history = train_model(model, train, test, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                              lr_schedule=config.lr_schedule, seed=config.seed,
                              eval_batch_size=config.eval_batch_size, **kwargs)
    else:   # the weights as they are: one evaluation of each subset stands in for training's history
        train_accuracy, train_loss = evaluate(model, train, config.eval_batch_size, desc="train", **kwargs)
        test_accuracy, test_loss = evaluate(model, test, config.eval_batch_size, **kwargs)
        history = [{"epoch": 0, "loss": train_loss, "train_accuracy": train_accuracy,
                    "test_accuracy": test_accuracy, "test_loss": test_loss}]
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    checkpoint = {"arch": config.arch, "n_classes": train["n_classes"], "in_channels": spec["channels"],
                  "input": spec, "image_size": train["image_size"], "dataset": train["dataset"],
                  "weights": config.weights, "precision": runtime.precision, "state_dict": state}
    metrics = {"baseline_accuracy": history[-1]["test_accuracy"], "baseline_loss": history[-1]["test_loss"],
               "final_train_loss": history[-1]["loss"]}
    return TrainResult(model.eval(), checkpoint, history, metrics)


def write_train(result: TrainResult, paths: dict[str, Path]) -> None:
    """The checkpoint and the log, both cached; stage train_log writes the log's committed copies."""
    save_torch(result.checkpoint, paths["model"])
    write_json({"history": result.history, "metrics": result.metrics}, paths["train_log"])
