"""netunits.data.broden on a tiny Broden-format folder written here, with planted masks."""
import csv

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_main, tiny_params, write_params
from netunits.data.broden import load_broden
from netunits.data.probe import SparsePackedMasks, concept_shares, load_probe, pack_masks, unpack_masks
from netunits.errors import PipelineError
from netunits.files import save_torch
from stages import probe_concepts

# label numbers: 1 red (color), 2 blue (color), 300 sky (scene; above 255, so G carries it)
LABELS = {1: ("red", "color"), 2: ("blue", "color"), 300: ("sky", "scene")}


def write_table(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def label_png(path, numbers):
    """A mask PNG whose label at a pixel is R + 256 * G."""
    rgb = np.zeros((*numbers.shape, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1] = numbers % 256, numbers // 256
    Image.fromarray(rgb).save(path)


def write_broden(folder, mask_size=8, bad_mask=False):
    (folder / "images").mkdir(parents=True)
    rows, planted = [], []
    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 60 * i, dtype=np.uint8)).save(folder / "images" / f"im{i}.jpg")
        numbers = np.zeros((mask_size, mask_size), dtype=np.int64)
        numbers[: 2 + i, :] = 1                                      # red: the top 2 + i rows
        numbers[-1, : i + 1] = 2                                     # blue: part of the last row
        size = mask_size + 1 if bad_mask and i == 2 else mask_size
        label_png(folder / "images" / f"im{i}_color.png", np.pad(numbers, (0, size - mask_size)))
        planted.append(numbers)
        scene = "300" if i % 2 == 0 else ""                          # sky on images 0 and 2, scene unannotated on 1, 3
        rows.append([f"im{i}.jpg", "train", 16, 16, mask_size, mask_size, f"im{i}_color.png", scene])
    write_table(folder / "index.csv", ["image", "split", "ih", "iw", "sh", "sw", "color", "scene"], rows)
    write_table(folder / "category.csv", ["name", "first", "last", "count", "frequency"],
                [["color", 1, 2, 2, 4], ["scene", 300, 300, 1, 2]])
    write_table(folder / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"],
                [[n, name, f"{cat}(1)", 1, 1, ""] for n, (name, cat) in LABELS.items()])
    for category in ("color", "scene"):
        write_table(folder / f"c_{category}.csv", ["code", "number", "name", "frequency", "coverage"], [])
    return np.stack(planted)


def test_planted_masks_and_labels_round_trip(tmp_path):
    planted = write_broden(tmp_path)
    probe = load_broden(tmp_path, image_size=32, mask_size=8, size=4)
    masks = unpack_masks(probe["pixel_masks"][:], 8).view(4, -1, 8, 8).numpy()
    assert [c["name"] for c in probe["concepts"]] == ["red", "blue", "sky"]
    assert [c["level"] for c in probe["concepts"]] == ["pixel", "pixel", "image"]
    assert np.array_equal(masks[:, 0], planted == 1) and np.array_equal(masks[:, 1], planted == 2)
    assert probe["image_labels"][:, 0].tolist() == [True, False, True, False]
    assert probe["annotated"].tolist() == [[True, True], [True, False], [True, True], [True, False]]
    assert probe["images"].shape == (4, 3, 32, 32) and probe["images"].dtype == torch.uint8


def test_the_stage_writes_a_probe_set_from_a_broden_folder(tmp_path, monkeypatch):
    planted = write_broden(tmp_path / "broden")
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, tiny_params(probe={"source": "broden", "dir": "broden", "size": 4, "mask_size": 8}))
    assert run_main(probe_concepts.main) == 0
    probe = load_probe("data/probe/probe.pt")
    assert torch.equal(unpack_masks(probe["pixel_masks"], 8)[:, 0], torch.from_numpy(planted == 1).flatten(1))


def test_bad_broden_folders_are_one_line(tmp_path):
    write_broden(tmp_path / "a", bad_mask=True)
    with pytest.raises(PipelineError, match=r"im2_color.png: 9 x 9 pixels but index.csv says 8 x 8"):
        load_broden(tmp_path / "a", 32, 8, 4)
    write_broden(tmp_path / "b")
    (tmp_path / "b" / "index.csv").unlink()
    with pytest.raises(PipelineError, match="probe.dir '.*b': index.csv is missing"):
        load_broden(tmp_path / "b", 32, 8, 4)
    write_broden(tmp_path / "c")
    with pytest.raises(PipelineError, match="'probe.size' is 9 but .*index.csv lists 4 images"):
        load_broden(tmp_path / "c", 32, 8, 9)


def test_malformed_tables_are_one_line(tmp_path):
    write_broden(tmp_path)
    text = (tmp_path / "index.csv").read_text().splitlines()
    text[2] = text[2].replace(",16,16,", ",,16,")                   # an empty ih on line 3
    (tmp_path / "index.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(PipelineError, match=r"index.csv: line 3 is malformed"):
        load_broden(tmp_path, 32, 8, 4)
    write_table(tmp_path / "label.csv", ["number", "name"], [["one", "red"]])
    with pytest.raises(PipelineError, match="label.csv: needs integer 'number' and 'name' columns"):
        load_broden(tmp_path, 32, 8, 4)


def test_sparse_masks_index_as_the_dense_ones_and_load_back(tmp_path):
    rng = np.random.default_rng(0)
    masks = (rng.random((9, 7, 5, 5)) < 0.5) & (rng.random((9, 7, 1, 1)) < 0.3)     # few concepts per image
    dense = pack_masks(masks)
    sparse = SparsePackedMasks.from_dense(dense)
    assert len(sparse.bits) == int((dense != 0).any(dim=2).sum()) < 9 * 7 and sparse.shape == dense.shape
    for key in (slice(0, 9), slice(2, 5), slice(5, 5), slice(3, 100), [4, 0, 4, 8], torch.tensor([1, 2]),
                torch.tensor([], dtype=torch.int64), (slice(None), slice(2, 3)), (slice(1, 4), slice(0, 7))):
        assert torch.equal(sparse[key], dense[key]), key
    assert np.allclose(concept_shares(sparse, 5), masks.reshape(9, 7, -1).mean(axis=(0, 2)))
    assert np.allclose(concept_shares(dense, 5), masks.reshape(9, 7, -1).mean(axis=(0, 2)))
    save_torch({"masks": sparse}, tmp_path / "masks.pt")
    again = torch.load(tmp_path / "masks.pt", weights_only=True)["masks"]          # the probe file's own load
    assert isinstance(again, SparsePackedMasks) and torch.equal(again[:], dense)
