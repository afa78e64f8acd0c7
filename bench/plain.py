"""A plain implementation of the ROF notebook's recipe, the baseline `make bench` compares against.

One script, eager fp32, NCHW, all resized images held as float32 with three channels, and
the ROF sweep as one masked matrix product per n_units. Same data, seed, initialisation and
learning-rate schedule as the pipeline's default params, so the accuracies are comparable.
Usage: python -m bench.plain [train_size test_size image_size epochs [seed [lr_schedule]]]
"""
import json
import sys
import time

import torch
import torch.nn.functional as F

from netunits.data.mnist import load_packaged
from netunits.data.subsets import resize_uint8
from netunits.methods.rof import retrieval_curves_loop, unit_order
from netunits.torchvision_compat import torchvision_models
from netunits.training import learning_rate


def main(train_size=5000, test_size=1000, image_size=112, epochs=3, batch_size=128, lr=1e-3, seed=0,
         lr_schedule="cosine"):
    timings = {}
    start = time.perf_counter()
    splits = load_packaged()
    data = {}
    for name, size in (("train", train_size), ("test", test_size)):
        images, labels = splits[name]
        x = resize_uint8(images[:size], image_size).float() / 255.0  # the pipeline's exact pixels
        data[name] = (x.repeat(1, 3, 1, 1), labels[:size])  # float32, 3 channels, held in memory
    del splits
    timings["data_s"] = time.perf_counter() - start

    torch.manual_seed(seed)
    model = torchvision_models().resnet18(weights=None)
    model.fc = torch.nn.Linear(model.fc.in_features, 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    x, y = data["train"]
    n_steps, step = epochs * ((len(y) + batch_size - 1) // batch_size), 0
    for _ in range(epochs):
        model.train()
        permutation = torch.randperm(len(y), generator=generator)
        for i in range(0, len(y), batch_size):
            batch = permutation[i:i + batch_size]
            optimizer.param_groups[0]["lr"] = learning_rate(step, n_steps, lr, lr_schedule)
            step += 1
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    timings["train_s"] = time.perf_counter() - start

    start = time.perf_counter()
    model.eval()
    features = {}
    hook_out = []
    hook = model.avgpool.register_forward_hook(lambda m, i, o: hook_out.append(o.flatten(1)))
    accuracy = {}
    with torch.no_grad():
        for name, (x, y) in data.items():
            hook_out.clear()
            logits = torch.cat([model(x[i:i + 256]) for i in range(0, len(y), 256)])
            features[name] = torch.cat(hook_out)
            accuracy[name] = float((logits.argmax(1) == y).float().mean())
    hook.remove()
    timings["extract_s"] = time.perf_counter() - start

    start = time.perf_counter()
    n0 = {}
    for name, (_, y) in data.items():
        order = unit_order(features[name], "l1", 0)
        acc, loss = retrieval_curves_loop(features[name], y, model.fc.weight.detach(), model.fc.bias.detach(), order)
        n0[name] = {"n0_acc": int(acc.argmax()), "n0_loss": int(loss.argmin())}
    timings["sweep_s"] = time.perf_counter() - start
    print(json.dumps({"test_accuracy": accuracy["test"], "train_accuracy": accuracy["train"], "n0": n0, **timings}))


if __name__ == "__main__":
    sizes = list(map(int, sys.argv[1:5]))
    main(*sizes, **({"seed": int(sys.argv[5])} if len(sys.argv) > 5 else {}),
         **({"lr_schedule": sys.argv[6]} if len(sys.argv) > 6 else {}))
