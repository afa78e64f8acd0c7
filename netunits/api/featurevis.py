"""Feature visualization (netunits/featurevis.py) as one library call (stage featurevis): for the
selected units of one layer, an input optimised to maximise the unit's mean activation, as small
PNGs beside a table and metrics.

Which units (featurevis.units): `default` takes featurevis.n_units of them in turn from each ROF
role of the layer (rof_sweep's roles for the block feeding the final layer, whose channels are
ROF's units; layer_rof's for a layer it computed), within a role the best detectors first
(network dissection's best IoU of the layer; 0 where it was not dissected); `all` every unit; a
list those units. Grey models (a data set of one channel, MNIST) get one grey channel repeated
to the model's input, as their images are; colour models three, decorrelated. Always fp32, on
compute.device; the same params give the same bytes on the same machine.

    inputs = load_featurevis_inputs(stage_paths("featurevis"), params.featurevis)
    result = run_featurevis(inputs, params.featurevis, Runtime(torch.device("cpu"), "fp32"))
    result.png(0)                           # the first unit's PNG bytes
"""
from __future__ import annotations

import io
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from netunits.data.registry import get_dataset
from netunits.errors import PipelineError
from netunits.featurevis import default_transforms, select_units, visualize
from netunits.files import read_csv, write_csv, write_json
from netunits.methods.rof import CATEGORIES
from netunits.models.registry import get_architecture, load_checkpoint
from netunits.params import PARAMS_FILE
from netunits.runtime import Runtime

KEY = "featurevis"
NO_TRANSFORMS = {"pad": 0, "jitter": 0, "scales": (1,), "angles": (0,), "jitter_after": 0}


@dataclass
class FeaturevisInputs:
    model: torch.nn.Module             # on the cpu, eval mode
    checkpoint: dict
    image_channels: int                # the data set's own: 1 (grey, one channel optimised) or 3
    roles: list[str] | None            # ROF's role (by accuracy) of each unit of the layer; None: none exists
    iou: list[float] | None            # network dissection's best IoU of each unit; None: not dissected


@dataclass
class FeaturevisResult:
    layer: str
    units: list[int]
    images: torch.Tensor               # uint8 len(units) x channels x size x size
    rows: list[dict]                   # units.csv: one row per visualized unit
    metrics: dict
    seconds: float = 0.0               # wall time (printed, not in the metrics: they stay reproducible)

    def png(self, i: int) -> bytes:
        """The i-th unit's image as PNG bytes (grey: one channel), the same bytes for the same pixels."""
        from PIL import Image
        pixels = self.images[i].permute(1, 2, 0).numpy()
        image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=9)
        return buffer.getvalue()

    def summary(self) -> str:
        m = self.metrics
        return (f"featurevis: {m['units']} of {m['layer_units']} units of {self.layer} ({m['selection']}), "
                f"{m['steps']} steps at {m['size']} px, {m['channels']} channel(s), {self.seconds:.0f} s on "
                f"{m['threads']} thread(s); mean activation {m['mean_activation']:.3g}")


def _roles_of(paths: dict[str, Path], layer: str, last_block: str) -> list[str] | None:
    """ROF's roles of the layer's units: rof_sweep's for the last block, layer_rof's elsewhere."""
    if layer == last_block:
        return read_csv(paths["rof_roles"], numeric=False)["category_acc"]
    path = Path(paths["layer_rof_dir"]) / f"{layer}_roles.csv"
    if not path.exists():
        return None
    return read_csv(path, numeric=False)["category_acc"]


def load_featurevis_inputs(paths: dict[str, Path], config: Any) -> FeaturevisInputs:
    """The model, its data set's channels and, for the default selection, the layer's ROF roles
    and best IoU (config: the featurevis section; its layer names the tables read)."""
    model, checkpoint = load_checkpoint(paths["model"])
    channels = get_dataset(checkpoint["dataset"]).channels
    last_block = get_architecture(checkpoint["arch"]).last_block
    roles = _roles_of(paths, config.layer, last_block)
    dissected = Path(paths["dissect_layers"]) / f"{config.layer}.csv"
    iou = [float(v) for v in read_csv(dissected, numeric=False)["iou"]] if dissected.exists() else None
    return FeaturevisInputs(model, checkpoint, channels, roles, iou)


def layer_units(model: torch.nn.Module, layer: str, size: int, input_channels: int, device: torch.device,
                source: str = PARAMS_FILE) -> int:
    """The number of channels of `layer`'s output, from one grey image; a module the model lacks,
    or one whose output has no channel axis, is a one-line error naming featurevis.layer."""
    modules = dict(model.named_modules())
    if not layer or layer not in modules:
        names = [name for name, _ in model.named_children()]
        raise PipelineError(f"{source}: '{KEY}.layer' is {layer!r}, which the model lacks; its top-level layers "
                            f"are {', '.join(names)} (or a block such as {names[-3]}.0)")
    captured = {}
    hook = modules[layer].register_forward_hook(lambda _m, _i, output: captured.__setitem__("out", output))
    try:
        with torch.no_grad():
            model.eval()(torch.full((1, input_channels, size, size), 0.5, device=device))
    finally:
        hook.remove()
    out = captured.get("out")
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        raise PipelineError(f"{source}: '{KEY}.layer' is {layer!r}, whose output has no channels to visualize")
    return int(out.shape[1])


def chosen_units(config: Any, n_units: int, layer: str, roles: list[str] | None, iou: list[float] | None,
                 source: str = PARAMS_FILE) -> tuple[list[int], str]:
    """(the units to visualize, ascending; how they were chosen: default, all or list)."""
    if config.units == "all":
        return list(range(n_units)), "all"
    if isinstance(config.units, list):
        outside = [u for u in config.units if u >= n_units]
        if outside:
            raise PipelineError(f"{source}: '{KEY}.units' has {outside[0]}; it must be unit indices of {layer} "
                                f"from 0 to {n_units - 1}")
        return sorted(config.units), "list"
    if roles is None:
        raise PipelineError(f"{source}: '{KEY}.units' is 'default', which selects by ROF role, but ROF has no roles "
                            f"of {layer} (rof_sweep's are of the block feeding the final layer, layer_rof's of "
                            f"layer_rof.layers); set it to all or a list of units")
    if len(roles) != n_units or (iou is not None and len(iou) != n_units):
        raise PipelineError(f"the ROF roles or dissection table of {layer} do not have one row per each of its "
                            f"{n_units} units; rerun `dvc repro`")
    return select_units(roles, iou if iou is not None else [0.0] * n_units, config.n_units), "default"


def run_featurevis(inputs: FeaturevisInputs, config: Any, runtime: Runtime,
                   source: str = PARAMS_FILE) -> FeaturevisResult:
    """Every check (the layer, the units) before any optimisation; then the images, in batches of
    config.batch_size units, each batch from the same seeded transforms: a unit gets the same start
    and transforms whichever units share its batch (its pixels may still differ slightly with the
    batch, through the kernels' arithmetic)."""
    # channels last, as its inputs (netunits.featurevis.to_model_input): the CPU's fast convolutions
    model, spec = inputs.model.to(runtime.device, memory_format=torch.channels_last), inputs.checkpoint["input"]
    size = inputs.checkpoint["image_size"] if config.size == "auto" else config.size
    channels = 1 if inputs.image_channels == 1 else spec["channels"]
    n_units = layer_units(model, config.layer, size, spec["channels"], runtime.device, source)
    units, selection = chosen_units(config, n_units, config.layer, inputs.roles, inputs.iou, source)
    transforms = default_transforms(size) if config.transforms == "standard" else NO_TRANSFORMS
    start = time.perf_counter()
    images, activations = [], []
    for first in range(0, len(units), config.batch_size):
        out = visualize(model, config.layer, units[first:first + config.batch_size], size=size, channels=channels,
                        input_spec=spec, steps=config.steps, lr=config.lr, seed=config.seed, transforms=transforms,
                        decorrelate=config.decorrelate, device=runtime.device, key=f"{KEY}.units")
        images.append(out["images"])
        activations.append(out["activation"])
    seconds = time.perf_counter() - start
    pixels = (torch.cat(images) * 255).round().clamp(0, 255).to(torch.uint8)
    activation = torch.cat(activations)
    rows = [{"layer": config.layer, "unit": u,
             "role": inputs.roles[u] if inputs.roles is not None and len(inputs.roles) == n_units else "",
             "iou": inputs.iou[u] if inputs.iou is not None and len(inputs.iou) == n_units else "",
             "activation": float(activation[i]), "file": f"{config.layer}/{u}.png"} for i, u in enumerate(units)]
    metrics = {"layer": config.layer, "layer_units": n_units, "units": len(units), "selection": selection,
               "roles": {role: sum(r["role"] == role for r in rows) for role in CATEGORIES} if inputs.roles else None,
               "steps": config.steps, "size": size, "channels": channels, "seed": config.seed,
               "mean_activation": float(activation.mean()),
               "threads": torch.get_num_threads(), "device": str(runtime.device),
               "checkpoint_sha256": inputs.checkpoint["sha256"]}
    return FeaturevisResult(config.layer, units, pixels, rows, metrics, seconds)


def write_featurevis(result: FeaturevisResult, paths: dict[str, Path]) -> None:
    """The folder (units.csv and <layer>/<unit>.png, replaced whole: built in a temporary folder,
    then renamed) and the metrics, with the PNGs' total size."""
    folder = Path(paths["featurevis_dir"])
    for stale in folder.parent.glob(f".{folder.name}.tmp-*"):     # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    total = 0
    try:
        (tmp / result.layer).mkdir(parents=True)
        for i, row in enumerate(result.rows):
            data = result.png(i)
            (tmp / row["file"]).write_bytes(data)
            total += len(data)
        write_csv(result.rows, tmp / "units.csv")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_json({**result.metrics, "png_bytes": total}, paths["featurevis_metrics"])

