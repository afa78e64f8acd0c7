"""Activations of any layer, by module name, through forward hooks.

`iterate_activations` streams a model's outputs at the named modules batch by batch (spatial
maps as they are: N x C x H x W), so statistics can be gathered without holding every
activation; `pooled_features` keeps one number per unit and image (the spatial mean), which
is what ROF reads at `avgpool` (ResNet's pooled features, the final layer's input).
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import torch

from netunits.errors import PipelineError
from netunits.models.inputs import images_to_input
from netunits.runtime import autocast, progress


def layer_names(model: torch.nn.Module) -> list[str]:
    """Every named module, in definition order ('layer4', 'layer4.1.conv2', 'avgpool', ...)."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: torch.nn.Module, name: str, key: str, source: str = "params.yaml") -> torch.nn.Module:
    modules = dict(model.named_modules())
    if not name or name not in modules:
        top = [n for n in layer_names(model) if "." not in n]
        raise PipelineError(f"{source}: '{key}' is {name!r}; the model's layers are {', '.join(top)} "
                            f"(or any dotted submodule such as {layer_names(model)[-3]})")
    return modules[name]


def pool(output: torch.Tensor) -> torch.Tensor:
    """One value per unit: spatial maps N x C x H x W are averaged in fp32, N x C passes as is."""
    output = output.float()
    if output.dim() == 4:
        return output.flatten(1) if output.shape[2] * output.shape[3] == 1 else output.mean(dim=(2, 3))
    if output.dim() == 2:
        return output
    raise PipelineError(f"a layer's output has shape {tuple(output.shape)}; only N x C and N x C x H x W "
                        f"outputs have units")


@torch.no_grad()
def iterate_activations(model: torch.nn.Module, images_u8: torch.Tensor, layers: Sequence[str], batch_size: int,
                        device: torch.device, precision: str, input_spec: Mapping[str, Any] | None = None,
                        desc: str = "forward", key: str = "extract_features.layers",
                        source: str = "params.yaml") -> Iterator[tuple[int, dict[str, torch.Tensor], torch.Tensor]]:
    """Eval-mode forward passes; yields (first index, {layer: output on the cpu}, logits fp32 on the
    cpu) per batch of images."""
    modules = {name: get_layer(model, name, key, source) for name in layers}
    captured = {}

    def keep(name):
        # a copy: a block's later in-place ops (`out += identity`, ReLU(inplace=True)) would
        # otherwise change what a hook on an inner module saw
        return lambda _module, _inputs, output: captured.__setitem__(name, output.detach().to("cpu", copy=True))
    hooks = [module.register_forward_hook(keep(name)) for name, module in modules.items()]
    model.eval()
    try:
        for start in progress(range(0, len(images_u8), batch_size), desc):
            x = images_to_input(images_u8[start:start + batch_size], device, channels_last=True, spec=input_spec)
            with autocast(device, precision):
                logits = model(x).float().cpu()
            yield start, {name: captured.pop(name) for name in layers}, logits
    finally:
        for hook in hooks:
            hook.remove()


def pooled_features(model: torch.nn.Module, images_u8: torch.Tensor, layers: Sequence[str], batch_size: int,
                    device: torch.device, precision: str, input_spec: Mapping[str, Any] | None = None,
                    desc: str = "forward", key: str = "extract_features.layers",
                    source: str = "params.yaml") -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({layer: N x units fp32}, logits N x n_classes fp32), both on the cpu."""
    pooled, logits = {name: [] for name in layers}, []
    for _, outputs, batch_logits in iterate_activations(model, images_u8, layers, batch_size, device, precision,
                                                        input_spec, desc, key, source):
        for name in layers:
            pooled[name].append(pool(outputs[name]))
        logits.append(batch_logits)
    return {name: torch.cat(values) for name, values in pooled.items()}, torch.cat(logits)
