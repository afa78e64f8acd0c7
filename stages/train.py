"""Stage train: torchvision resnet18(weights=None), fc = Linear(512, 10), trained on the
prepared training subset with Adam and cross-entropy (seed 000's recipe), its learning rate
decayed along half a cosine by default (`train.lr_schedule`; `constant` is the seed's).

Reads params `train` and data/prepared/{train,test}.pt; writes artifacts/train/model.pt
(state dict plus what rebuilds the model), artifacts/train/history.csv (per epoch: loss,
running train accuracy, test accuracy) and artifacts/metrics/train.json (baseline_accuracy:
the test subset after training).
"""
import math
from pathlib import Path

import torch

from stages.common import (PipelineError, autocast, build_model, choose_device, choose_precision,
                           forward_features, images_to_input, load_params, load_prepared, progress,
                           release_free_memory, remove_stale_temps, run_stage, save_torch, seed_everything,
                           set_threads, write_csv, write_json)

CHECKPOINT = Path("artifacts/train/model.pt")
HISTORY = Path("artifacts/train/history.csv")
METRICS = Path("artifacts/metrics/train.json")


def accuracy_and_loss(logits, labels):
    return (float((logits.argmax(1) == labels).double().mean()),
            float(torch.nn.functional.cross_entropy(logits.double(), labels)))


def learning_rate(step, n_steps, lr, schedule):
    """The learning rate for training step `step` (0-based) of `n_steps`: constant, or a
    half-cosine from `lr` down towards 0 over the whole run (one value per step)."""
    if schedule == "constant":
        return lr
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / n_steps))


def step_in_backward(model, lr, device):
    """One Adam per parameter, each stepped by a hook as soon as the backward pass has finished
    that parameter's gradient, which is then freed (PyTorch's "optimizer step in backward").

    Why: the train stage's memory peaks in the stem's backward pass, the last one, when every
    other layer's fp32 gradient (45 MiB) is otherwise still held for one optimizer.step(). Adam
    treats each parameter on its own, so the weights are bit-identical (tested). Returns the
    optimizers and a function that removes the hooks.
    """
    # fused: the same update rule in one kernel per parameter; no slower here than one fused Adam
    # over all parameters (interleaved A/B, 1.006x), which was about 4x faster than the unfused default
    optimizers, handles = [], []
    for parameter in model.parameters():
        optimizer = torch.optim.Adam([parameter], lr=lr, fused=device.type in ("cpu", "cuda"))

        def step_and_free(_parameter, optimizer=optimizer):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        optimizers.append(optimizer)
        handles.append(parameter.register_post_accumulate_grad_hook(step_and_free))
    return optimizers, lambda: [handle.remove() for handle in handles]


def train_model(model, train, test, *, epochs, batch_size, lr, lr_schedule, seed, device, precision,
                eval_batch_size):
    """Train in place; return the history (a list of per-epoch dicts).

    Shuffling uses its own generator seeded by `seed`. A non-finite loss stops training with
    a PipelineError, so no checkpoint of a diverged model is ever written.
    """
    images, labels = train["images"], train["labels"]
    optimizers, remove_hooks = step_in_backward(model, lr, device)
    try:
        return _train_epochs(model, images, labels, test, optimizers, epochs=epochs, batch_size=batch_size, lr=lr,
                             lr_schedule=lr_schedule, seed=seed, device=device, precision=precision,
                             eval_batch_size=eval_batch_size)
    finally:
        remove_hooks()


def _train_epochs(model, images, labels, test, optimizers, *, epochs, batch_size, lr, lr_schedule, seed, device,
                  precision, eval_batch_size):
    shuffle = torch.Generator().manual_seed(seed)
    n_batches = (len(labels) + batch_size - 1) // batch_size
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        permutation = torch.randperm(len(labels), generator=shuffle)
        loss_sum, correct = 0.0, 0
        for step in progress(range(n_batches), f"epoch {epoch}/{epochs}"):
            batch = permutation[step * batch_size:(step + 1) * batch_size]
            y = labels[batch].to(device)
            # Memory: each gradient is freed as soon as its parameter is stepped (step_in_backward),
            # and the fp32 input (19 MiB at the defaults) is not kept through the backward pass;
            # the first convolution saves its own bf16 copy.
            rate = learning_rate((epoch - 1) * n_batches + step, epochs * n_batches, lr, lr_schedule)
            for optimizer in optimizers:
                optimizer.param_groups[0]["lr"] = rate
            with autocast(device, precision):
                logits = model(images_to_input(images[batch], device, channels_last=True))
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
            if not torch.isfinite(loss):
                raise PipelineError(f"train: the loss became {loss.item()} at epoch {epoch}, batch {step + 1}; "
                                    f"no checkpoint written; lower 'train.lr' (now {lr})")
            loss.backward()                 # steps every parameter on the way (step_in_backward)
            loss_sum += loss.item() * len(batch)
            correct += int((logits.argmax(1) == y).sum())
        # Handing the heap's free pages back keeps the evaluation from growing the heap with its
        # differently sized tensors.
        release_free_memory()
        _, test_logits = forward_features(model, test["images"], eval_batch_size, device, precision, "test")
        test_accuracy, test_loss = accuracy_and_loss(test_logits, test["labels"])
        history.append({"epoch": epoch, "loss": loss_sum / len(labels), "train_accuracy": correct / len(labels),
                        "test_accuracy": test_accuracy, "test_loss": test_loss})
        print(f"epoch {epoch}: loss {history[-1]['loss']:.4f}, running train accuracy "
              f"{history[-1]['train_accuracy']:.4f}, test accuracy {test_accuracy:.4f}")
    return history


def main():
    params = load_params("train")
    remove_stale_temps(CHECKPOINT, HISTORY, METRICS)
    device = choose_device(params["device"], "train.device")
    precision = choose_precision(params["precision"], device, "train.precision")
    threads = set_threads(params["threads"])
    train, test = load_prepared("data/prepared/train.pt"), load_prepared("data/prepared/test.pt")
    if train["image_size"] != test["image_size"]:
        raise PipelineError("data/prepared: train and test images differ in size; rerun `dvc repro -f prepare_data`")
    print(f"training on {device} ({precision}, {threads} threads): {len(train['labels'])} images, "
          f"{params['epochs']} epochs")
    seed_everything(params["seed"])
    model = build_model().to(device).to(memory_format=torch.channels_last)
    history = train_model(model, train, test, epochs=params["epochs"], batch_size=params["batch_size"],
                          lr=params["lr"], lr_schedule=params["lr_schedule"], seed=params["seed"],
                          device=device, precision=precision,
                          eval_batch_size=params["eval_batch_size"])
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_torch({"arch": "resnet18", "n_classes": 10, "in_channels": 3, "image_size": train["image_size"],
                "precision": precision, "state_dict": state}, CHECKPOINT)
    write_csv(history, HISTORY)
    write_json({"baseline_accuracy": history[-1]["test_accuracy"], "baseline_loss": history[-1]["test_loss"],
                "final_train_loss": history[-1]["loss"]}, METRICS)


if __name__ == "__main__":
    run_stage(main)
