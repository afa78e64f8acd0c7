"""open_clip vision-language models, offline: built from a name or a local config file, weights
from a local file only, and the image-text cosine that CLIP-Dissect reads.

open_clip is the optional extra (requirements-clip.txt, `make clip`); it is imported here, inside
the functions, so the rest of the project never needs it. The Hugging Face hub is put in offline
mode before open_clip is imported, and weights are passed to open_clip as an absolute file path
(never a pretrained tag, which it would download): a model that needs anything from the network
(a Hugging Face text tower, a tokenizer on the hub) fails with one line instead.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import torch

from netunits.errors import PipelineError, load_failure
from netunits.runtime import autocast, progress
from netunits.torchvision_compat import torchvision_models

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def import_open_clip(key, source="params.yaml"):
    """open_clip, offline, after the torchvision shim; PipelineError where it is not installed."""
    os.environ.update(OFFLINE)
    torchvision_models()       # open_clip imports torchvision: define its C ops first where they are missing
    try:
        import open_clip
    except ImportError as exc:
        raise PipelineError(f"{source}: '{key}' is 'clip', which needs the optional open_clip extra "
                            f"({load_failure(exc)}); install it with `make clip`") from None
    return open_clip


def _config_file(path, key, source):
    """An open_clip model config read from a JSON file: either open_clip's own format (embed_dim,
    vision_cfg, text_cfg) or a hub folder's open_clip_config.json (model_cfg, preprocess_cfg)."""
    try:
        config = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PipelineError(f"{source}: '{key}' is {str(path)!r}; no such file") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise PipelineError(f"{path}: not a JSON model config ({load_failure(exc)})") from None
    model_cfg = config.get("model_cfg", config) if isinstance(config, dict) else None
    if not isinstance(model_cfg, dict) or not all(k in model_cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise PipelineError(f"{path}: not an open_clip model config (it needs embed_dim, vision_cfg and text_cfg, "
                            f"at the top or under model_cfg)")
    return model_cfg, config.get("preprocess_cfg") or None


def _is_torchscript(path):
    """A TorchScript archive (a zip holding code/ and constants.pkl): OpenAI's CLIP release format."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def quick_gelu_evidence(weights):
    """Why a weights file holds OpenAI's CLIP weights, trained with QuickGELU, or None where nothing
    says so: a Hugging Face hub open_clip_config.json beside it whose model_cfg sets quick_gelu, or
    a folder named as the hub's repositories of OpenAI's weights (timm/<model>.openai, cached as
    models--timm--<model>.openai). A state dict does not say which activation trained it:
    open_clip's plain names (ViT-B-16) run GELU, OpenAI's weights need the -quickgelu names."""
    weights = Path(weights).absolute()          # not resolved: the hub cache's files are links into blobs/
    hub_config = weights.parent / "open_clip_config.json"
    try:
        config = json.loads(hub_config.read_text())
        if isinstance(config, dict) and isinstance(config.get("model_cfg"), dict) and \
                config["model_cfg"].get("quick_gelu") is True:
            return f"{hub_config} sets quick_gelu"
    except (OSError, json.JSONDecodeError):
        pass
    named = [part for part in weights.parts if part.lower().endswith(".openai")]
    return f"its path names OpenAI ({named[-1]})" if named else None


def check_activation(open_clip, name, model_cfg, model, weights, model_key="clip_dissect.model",
                     source="params.yaml"):
    """Refuse, in one line, OpenAI's CLIP weights on a model that runs GELU: open_clip's ViT-B-16 and
    the other plain names use GELU where OpenAI trained with QuickGELU, and the weights load into
    either without complaint. A JSON config that sets quick_gelu (true or false) is taken as meant.
    OpenAI's own release files (TorchScript archives) are refused whatever the model."""
    explicit = model_cfg is not None and "quick_gelu" in model_cfg
    built = model_cfg if model_cfg is not None else open_clip.get_model_config(name) or {}
    runs_quick = bool(built.get("quick_gelu"))
    if runs_quick or explicit:
        advice = ""
    elif model_cfg is not None:
        advice = f'add "quick_gelu": true to {model}'
    elif f"{name}-quickgelu" in open_clip.list_models():
        advice = f"use {name + '-quickgelu'!r}"
    else:
        advice = 'use a JSON model config with "quick_gelu": true'
    if _is_torchscript(weights):
        raise PipelineError(f"{weights}: a TorchScript archive, OpenAI's CLIP release format, which is not loaded "
                            f"here (it holds code); give the same weights as an open_clip state dict (the Hugging "
                            f"Face hub's timm/<model>.openai repositories hold them)"
                            + (f", and {advice} (OpenAI's CLIP runs QuickGELU)" if advice else ""))
    evidence = None if runs_quick or explicit else quick_gelu_evidence(weights)
    if evidence:
        raise PipelineError(f"{source}: '{model_key}' is {model!r}, which runs GELU, but {weights} holds OpenAI's "
                            f"CLIP weights ({evidence}), trained with QuickGELU; {advice}")


def load_model(model, weights, device, model_key="clip_dissect.model", weights_key="clip_dissect.weights",
               source_key="clip_dissect.source", source="params.yaml"):
    """(open_clip model in eval mode on `device`, image preprocessing, tokenizer).

    model: an open_clip architecture name (ViT-B-16, RN50, ...; '/' may stand for '-') or a JSON
    model config file (its file name, less .json, names it); weights: a local weights file
    (state dict, .pt / .bin / .safetensors, as open_clip's own checkpoints)."""
    if weights is None:
        raise PipelineError(f"{source}: '{weights_key}' is null; the clip source reads the model's weights "
                            f"from a local file (it never downloads them)")
    weights = Path(weights)
    if not weights.is_file():
        raise PipelineError(f"{source}: '{weights_key}' is {str(weights)!r}; no such file (the clip source "
                            f"reads the model's weights from a local file and never downloads them)")
    config = _config_file(model, model_key, source) if model.endswith(".json") else None
    open_clip = import_open_clip(source_key, source)
    preprocess_cfg = None
    if config is not None:
        name = Path(model).stem
        model_cfg, preprocess_cfg = config
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{name}.json"
            path.write_text(json.dumps(model_cfg))
            open_clip.add_model_config(path)        # read now; the registry keeps the config
    else:
        name = model.replace("/", "-")
        if name not in open_clip.list_models():
            known = open_clip.list_models()
            raise PipelineError(f"{source}: '{model_key}' is {model!r}, which open_clip {open_clip.__version__} "
                                f"does not know; use one of its {len(known)} architectures (e.g. "
                                f"{', '.join(k for k in ('ViT-B-16', 'ViT-B-32', 'ViT-L-14', 'RN50') if k in known)}; "
                                f"open_clip.list_models() lists them) or a JSON model config file")
    check_activation(open_clip, name, config[0] if config is not None else None, model, weights, model_key, source)
    # a hub config's preprocess_cfg, as create_model_and_transforms takes it
    preprocessing = {f"image_{key}": value for key, value in (preprocess_cfg or {}).items()
                     if key in ("mean", "std", "interpolation", "resize_mode")}
    try:
        clip, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=str(weights.resolve()), device=device, **preprocessing)
    except Exception as exc:    # a state dict of another architecture, a corrupt file, a tower on the hub
        raise PipelineError(f"{weights}: could not build open_clip model {name!r} from it offline "
                            f"({load_failure(exc)})") from None
    try:
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as exc:
        raise PipelineError(f"{source}: '{model_key}' is {model!r}, whose tokenizer could not be loaded "
                            f"offline ({load_failure(exc)})") from None
    return clip.eval(), preprocess, tokenizer


def to_pil(image_u8):
    """uint8 C x S x S (1 or 3 channels) -> an RGB PIL image (grey repeated)."""
    from PIL import Image
    array = image_u8.numpy()
    if array.shape[0] == 1:
        return Image.fromarray(array[0]).convert("RGB")        # uint8 2-D: mode L
    return Image.fromarray(array.transpose(1, 2, 0).copy())   # uint8 S x S x 3: RGB


@torch.no_grad()
def image_embeddings(clip, preprocess, images_u8, batch_size, device, precision):
    """L2-normed image embeddings (N x D, fp32, cpu), each image through the model's own preprocessing."""
    parts = []
    for start in progress(range(0, len(images_u8), batch_size), "CLIP images"):
        batch = torch.stack([preprocess(to_pil(image)) for image in images_u8[start:start + batch_size]])
        with autocast(device, precision):
            parts.append(clip.encode_image(batch.to(device)).float().cpu())
    embeddings = torch.cat(parts)
    return embeddings / embeddings.norm(dim=-1, keepdim=True)


@torch.no_grad()
def text_embeddings(clip, tokenizer, texts, batch_size, device, precision):
    """L2-normed text embeddings (C x D, fp32, cpu) of the concepts as they are (no prompt
    template: the reference tokenizes the bare words)."""
    parts = []
    for start in progress(range(0, len(texts), batch_size), "CLIP concepts"):
        tokens = tokenizer(texts[start:start + batch_size]).to(device)
        with autocast(device, precision):
            parts.append(clip.encode_text(tokens).float().cpu())
    embeddings = torch.cat(parts)
    return embeddings / embeddings.norm(dim=-1, keepdim=True)
