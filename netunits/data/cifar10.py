"""CIFAR-10 (Krizhevsky 2009) from a folder (param `data.dir`), in one of two layouts:

- `jpeg`: `<split>/<class>/<NNNN>.jpg` files, either as folders `train/` and `test/` or as the
  archives `train.tar` and `test.tar` (the layout of the JPEG copy in ../shared/data/cifar10-jpeg);
- `batches`: the official python batches (`data_batch_1` ... `data_batch_5`, `test_batch`, as
  torchvision's CIFAR10 downloads them; the folder may be `cifar-10-batches-py` itself or hold it).

The order of a split: for JPEG files by file number, then class (so the first N images are
balanced across classes); for the batches, the official order. Images are uint8 N x 3 x 32 x 32.
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import torch

from netunits.data.pickles import safe_unpickle
from netunits.errors import PipelineError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "test")
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _decode_jpeg(data, what):
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as exc:
        raise PipelineError(f"{what}: not a readable JPEG image ({exc})") from None


def _jpeg_entries(folder, split):
    """(number, class index, name, reader) for every JPEG of a split, from a folder or a tar."""
    split_dir, archive = folder / split, folder / f"{split}.tar"
    entries = []
    if split_dir.is_dir():
        for label, name in enumerate(CLASSES):
            class_dir = split_dir / name
            if not class_dir.is_dir():
                raise PipelineError(f"data.dir '{folder}': {split}/{name}/ is missing; a CIFAR-10 JPEG folder "
                                    f"holds train/ and test/ with one folder per class ({', '.join(CLASSES)})")
            found = [(path.stem, label, str(path), path.read_bytes) for path in class_dir.glob("*.jpg")]
            if not found:
                raise PipelineError(f"data.dir '{folder}': {split}/{name}/ holds no .jpg files")
            entries += found
        return entries, None
    if archive.is_file():
        try:
            handle = tarfile.open(archive)
        except (tarfile.TarError, OSError) as exc:
            raise PipelineError(f"{archive}: not a readable tar archive ({exc})") from None
        for member in handle:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3 and parts[0] == split and parts[2].endswith(".jpg") \
                    and parts[1] in CLASSES:
                entries.append((parts[2][:-4], CLASSES.index(parts[1]), f"{archive}:{member.name}",
                                lambda member=member: handle.extractfile(member).read()))
        present = {label for _, label, _, _ in entries}
        missing = [name for label, name in enumerate(CLASSES) if label not in present]
        if missing:
            handle.close()
            raise PipelineError(f"data.dir '{folder}': {archive.name} has no images of class {missing[0]}; it must "
                                f"hold {split}/<class>/<NNNN>.jpg for every class ({', '.join(CLASSES)})")
        return entries, handle
    raise PipelineError(f"data.dir '{folder}': no {split}/ folder and no {split}.tar; it must hold the CIFAR-10 "
                        f"JPEG files as {split}/<class>/<NNNN>.jpg (data.source jpeg)")


def load_jpeg(folder: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    folder = Path(folder)
    if not folder.is_dir():
        raise PipelineError(f"data.dir '{folder}': no such folder; it must hold CIFAR-10 as train/ and test/ "
                            f"JPEG folders or train.tar and test.tar (e.g. ../shared/data/cifar10-jpeg)")
    splits = {}
    for split in SPLITS:
        entries, handle = _jpeg_entries(folder, split)
        try:
            entries.sort(key=lambda e: (int(e[0]) if e[0].isdigit() else 0, e[0], e[1]))
            decoded = []
            for _, _, name, read in entries:
                image = _decode_jpeg(read(), name)
                if image.shape != (32, 32, 3):
                    raise PipelineError(f"{name}: {image.shape[1]} x {image.shape[0]} pixels; CIFAR-10's images are "
                                        f"32 x 32")
                decoded.append(image)
            images = np.stack(decoded)
        except tarfile.TarError as exc:
            raise PipelineError(f"data.dir '{folder}': {split}.tar cannot be read ({exc})") from None
        finally:
            if handle is not None:
                handle.close()
        splits[split] = (torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                         torch.tensor([label for _, label, _, _ in entries], dtype=torch.int64))
    return splits


def load_batches(folder: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    folder = Path(folder)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    splits = {}
    for split, names in BATCHES.items():
        images, labels = [], []
        for name in names:
            path = folder / name
            if not path.is_file():
                raise PipelineError(f"data.dir '{folder}': {name} is missing; it must hold the CIFAR-10 python "
                                    f"batches ({', '.join(BATCHES['train'] + BATCHES['test'])})")
            with open(path, "rb") as handle:
                batch = safe_unpickle(handle, str(path), encoding="bytes")
            try:
                data, batch_labels = batch[b"data"], batch[b"labels"]
            except (TypeError, KeyError) as exc:
                raise PipelineError(f"{path}: not a CIFAR-10 python batch (no {exc})") from None
            data = np.asarray(data, dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(batch_labels):
                raise PipelineError(f"{path}: not a CIFAR-10 python batch (data {data.shape} for "
                                    f"{len(batch_labels)} labels; expected N x 3072)")
            images.append(data.reshape(-1, 3, 32, 32))
            labels += list(batch_labels)
        splits[split] = (torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64))
    return splits


def load_source(source: str, folder: str | Path, _raw_dir: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return load_jpeg(folder) if source == "jpeg" else load_batches(folder)
