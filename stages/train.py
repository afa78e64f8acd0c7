"""Stage train: a registry architecture (train.arch) trained on the prepared training subset with
Adam and cross-entropy, the learning rate decayed along half a cosine by default; optionally
started from a local weights file (train.weights); with train.epochs 0 those weights are the
model, unchanged.

Reads params `train` and data/prepared/{train,test}.pt; writes artifacts/train/model.pt (the
checkpoint: state dict plus what rebuilds the model, netunits/models), artifacts/train/history.csv
(per epoch: loss, running train accuracy, test accuracy) and artifacts/metrics/train.json
(baseline_accuracy: the test subset after training).
"""
import torch

from netunits.data.prepared import load_prepared
from netunits.errors import PipelineError
from netunits.files import remove_stale_temps, save_torch, write_csv, write_json
from netunits.models.inputs import check_channels, input_spec
from netunits.models.registry import build_model, get_architecture, load_weights
from netunits.runtime import resolve_compute, run_stage, seed_everything, stage_args, stage_config
from netunits.stage_table import stage_paths
from netunits.training import evaluate, train_model


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    config = stage_config(args, "train", "compute")
    params, source = config.train, config.source
    paths = stage_paths("train", args.run_dir)
    checkpoint_path, history_path, metrics_path = paths["model"], paths["history"], paths["train_metrics"]
    remove_stale_temps(checkpoint_path, history_path, metrics_path)
    architecture = get_architecture(params.arch, source=source)
    if params.epochs == 0 and params.weights is None:
        raise PipelineError(f"{source}: 'train.epochs' is 0 but 'train.weights' is null; with no training "
                            "the model must come from a weights file")
    runtime = resolve_compute(config.compute, analysis=False, source=source)
    device, precision, threads = runtime.device, runtime.precision, torch.get_num_threads()
    prepared = paths["train_set"].parent
    train, test = load_prepared(paths["train_set"]), load_prepared(paths["test_set"])
    if train["image_size"] != test["image_size"] or train["n_classes"] != test["n_classes"]:
        raise PipelineError(f"{prepared}: train and test subsets differ in image size or classes; "
                            f"rerun `dvc repro -f prepare_data`")
    spec = input_spec(architecture.in_channels, params.input_norm)
    check_channels(train["images"].shape[1], spec, str(paths["train_set"]))
    print(f"training {params.arch} on {device} ({precision}, {threads} threads): {len(train['labels'])} "
          f"{train['dataset']} images, {params.epochs} epochs")
    seed_everything(params.seed)
    model = build_model(params.arch, train["n_classes"])
    if params.weights is not None:
        head_loaded = load_weights(model, params.weights, arch=params.arch, source=source)
        if not head_loaded and params.epochs == 0:
            raise PipelineError(f"{params.weights}: its final layer does not have {train['n_classes']} "
                                f"classes ({train['dataset']}); train it with 'train.epochs' above 0")
        print(f"started from {params.weights}" + ("" if head_loaded else " (final layer newly initialised)"))
    model = model.to(device).to(memory_format=torch.channels_last)
    kwargs = dict(device=device, precision=precision, input_spec=spec)
    if params.epochs > 0:
        history = train_model(model, train, test, epochs=params.epochs, batch_size=params.batch_size,
                              lr=params.lr, lr_schedule=params.lr_schedule, seed=params.seed,
                              eval_batch_size=params.eval_batch_size, **kwargs)
    else:   # the weights as they are: one evaluation of each subset stands in for training's history
        train_accuracy, train_loss = evaluate(model, train, params.eval_batch_size, desc="train", **kwargs)
        test_accuracy, test_loss = evaluate(model, test, params.eval_batch_size, **kwargs)
        history = [{"epoch": 0, "loss": train_loss, "train_accuracy": train_accuracy,
                    "test_accuracy": test_accuracy, "test_loss": test_loss}]
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_torch({"arch": params.arch, "n_classes": train["n_classes"], "in_channels": spec["channels"],
                "input": spec, "image_size": train["image_size"], "dataset": train["dataset"],
                "weights": params.weights, "precision": precision, "state_dict": state}, checkpoint_path)
    write_csv(history, history_path)
    write_json({"baseline_accuracy": history[-1]["test_accuracy"], "baseline_loss": history[-1]["test_loss"],
                "final_train_loss": history[-1]["loss"]}, metrics_path)


if __name__ == "__main__":
    run_stage(main)
