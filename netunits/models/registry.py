"""The architecture registry: building a model by name, loading weights into it, and rebuilding
a trained one from its checkpoint.

An architecture is a name in ARCHITECTURES with a builder (random initial weights) and its
input channels. Every model's final layer is named `fc` and computed in fp32 (Float32Head),
so ROF can re-apply it to cached features. Adding a model is one entry here (and its module,
if torchvision does not have it) plus a test.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from netunits.errors import PipelineError, load_failure
from netunits.models.checkpoint import load_checkpoint_file


class Float32Head(torch.nn.Linear):
    """The final Linear(n_units, n_classes), always evaluated in fp32 even under autocast.

    ROF re-applies this layer to the cached fp32 features in float64; keeping the model's own
    head in fp32 makes "all units retrieved" reproduce the model's accuracy exactly. State-dict
    keys are those of a plain nn.Linear (fc.weight, fc.bias).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return super().forward(x.float())


def _resnet18_here():
    # Imported here so that building a torchvision model does not load this copy, and the
    # other way round.
    from netunits.models.resnet import resnet18
    return resnet18()


def _cifar_resnet(depth):
    def build():
        from netunits.models.cifar_resnet import cifar_resnet
        return cifar_resnet(depth)
    return build


def _torchvision(name):
    def build():
        from netunits.torchvision_compat import torchvision_models
        return getattr(torchvision_models(), name)(weights=None)
    return build


@dataclass(frozen=True)
class Architecture:
    build: Callable        # () -> the model with its default head
    in_channels: int
    description: str
    renames: tuple = ()    # (prefix in released weights files, prefix here), applied by load_weights
    # the layer whose pooled output the final layer reads (ROF's and the influential filters' units)
    pooled_layer: str = "avgpool"
    # the block whose channels pool into those units (network dissection's view of the same units)
    last_block: str = "layer4"
    accelerated: bool = False   # netunits.accel applied (CPU bf16 small-map convolutions, max-pool)


ARCHITECTURES = {
    # torchvision's resnet18 rebuilt without importing torchvision (bit-identical weights for a
    # seed); its small-map convolutions take a matrix product under CPU bf16 autocast (netunits.accel)
    "resnet18": Architecture(_resnet18_here, 3, "ResNet18 as torchvision builds it, with the CPU bf16 "
                                               "small-map convolutions", accelerated=True),
    **{f"torchvision:{name}": Architecture(_torchvision(name), 3, f"torchvision.models.{name}")
       for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")},
    # He et al.'s CIFAR ResNets with akamaster/pytorch_resnet_cifar10's key names (head `linear`)
    **{f"cifar_resnet{depth}": Architecture(_cifar_resnet(depth), 3, f"CIFAR ResNet{depth}, option-A shortcuts",
                                           renames=(("linear.", "fc."),), last_block="layer3")
       for depth in (20, 32, 44, 56, 110)},
}


def get_architecture(name: str, key: str = "train.arch", source: str = "params.yaml") -> Architecture:
    if name not in ARCHITECTURES:
        raise PipelineError(f"{source}: '{key}' is {name!r}; allowed architectures: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def build_model(arch: str, n_classes: int) -> torch.nn.Module:
    """The architecture with random initial weights and a Float32Head of n_classes outputs.

    The registry's builder draws the default head's initial values first, as torchvision does,
    so the random stream (and every later weight) matches torchvision's for the same seed.
    """
    # imported here, as the builders import the models' code: model code, which reading an
    # architecture's facts does not load
    from netunits.accel.model_hooks import apply as accelerate
    architecture = get_architecture(arch)
    model = architecture.build()
    model.fc = Float32Head(model.fc.in_features, n_classes)
    # the one place accel's speed code is applied: every model is built here, loaded ones too
    return accelerate(model) if architecture.accelerated else model


def _state_dict_of(obj, renames=()):
    """A state dict from a weights file: the dict itself, or its 'state_dict' / 'model' entry;
    DataParallel's 'module.' prefixes removed (Places365's released weights have them)."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return None
    state = {}
    for key, value in obj.items():
        key = key.removeprefix("module.")
        for old, new in renames:
            key = new + key[len(old):] if key.startswith(old) else key
        state[key] = value
    return state


def load_weights(model: torch.nn.Module, path: str | Path, key: str = "train.weights", arch: str | None = None,
                 source: str = "params.yaml") -> bool:
    """Copy a local weights file into `model`. Every key must be there with the model's shape,
    except the head (fc.*), which is kept as initialised when its class count differs. Returns
    True if the head was loaded too."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{source}: '{key}' is '{path}': file not found; it must be a local "
                            f"weights file (a state dict saved with torch.save)")
    try:
        renames = get_architecture(arch).renames if arch else ()
        state = _state_dict_of(torch.load(path, map_location="cpu", weights_only=True), renames)
    except Exception as exc:
        raise PipelineError(f"{path}: not a weights file ({load_failure(exc)})") from None
    if state is None:
        raise PipelineError(f"{path}: not a weights file (expected a state dict of tensors)")
    own = model.state_dict()
    head_fits = all(k in state and state[k].shape == own[k].shape for k in ("fc.weight", "fc.bias"))
    for name, tensor in own.items():
        if name.startswith("fc.") and not head_fits:
            continue
        if name not in state and name.endswith("num_batches_tracked"):
            continue           # a counter older weights files lack; evaluation never reads it
        if name not in state:
            raise PipelineError(f"{path}: does not fit the architecture: key '{name}' is missing")
        if state[name].shape != tensor.shape:
            raise PipelineError(f"{path}: does not fit the architecture: '{name}' has shape "
                                f"{tuple(state[name].shape)}, the model's is {tuple(tensor.shape)}")
    extra = [k for k in state if k not in own and not k.startswith("fc.")]
    if extra:
        raise PipelineError(f"{path}: does not fit the architecture: unexpected key '{extra[0]}'")
    with torch.no_grad():
        for name, tensor in own.items():
            if name in state and (head_fits or not name.startswith("fc.")):
                tensor.copy_(state[name])
    return head_fits


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(model in eval mode on cpu, checkpoint dict); the checkpoint file's sha256 is under 'sha256'."""
    checkpoint = load_checkpoint_file(path)
    if checkpoint["arch"] not in ARCHITECTURES:
        raise PipelineError(f"{path}: architecture {checkpoint['arch']!r} is not one of "
                            f"{', '.join(ARCHITECTURES)}")
    model = build_model(checkpoint["arch"], checkpoint["n_classes"])
    own, state = model.state_dict(), checkpoint["state_dict"]
    for name, tensor in own.items():
        if name not in state or state[name].shape != tensor.shape:
            raise PipelineError(f"{path}: checkpoint does not fit a {checkpoint['arch']}: key '{name}' is "
                                f"{'missing' if name not in state else 'of shape ' + str(tuple(state[name].shape))}; "
                                f"rebuild it with `dvc repro -f train`")
    model.load_state_dict(state)
    return model.eval(), checkpoint
