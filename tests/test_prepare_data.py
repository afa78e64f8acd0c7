"""prepare_data, the data-set registry, the MNIST sources (packaged decode, IDX, torchvision),
selection, resizing and label noise."""
import dataclasses
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from conftest import run_main, tiny_params, write_params
from netunits.data import mnist, pickles, subsets
from netunits.data.registry import DATASETS, check_request, get_dataset
from netunits.errors import PipelineError
from netunits.params import DataParams
from stages import prepare_data


@pytest.fixture(scope="module")
def packaged():
    return mnist.load_packaged()


def test_packaged_mnist_is_the_official_split(packaged):
    train_images, train_labels = packaged["train"]
    test_images, test_labels = packaged["test"]
    assert train_images.shape == (60000, 28, 28) and train_images.dtype == torch.uint8
    assert test_images.shape == (10000, 28, 28)
    # the official class counts of the 60,000 training and 10,000 test digits
    assert train_labels.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert test_labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert train_labels[:5].tolist() == [5, 0, 4, 1, 9] and test_labels[:5].tolist() == [7, 2, 1, 0, 4]


def test_a_changed_pixel_fails_the_checksum(tmp_path, packaged, monkeypatch):
    monkeypatch.setitem(mnist.PACKAGED_SHA256, "test", "0" * 64)
    with pytest.raises(PipelineError, match="the test split does not match the checksum"):
        mnist.load_packaged()


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch SHOULD_NOT_EXIST",))


def test_restricted_unpickler_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    payload = pickle.dumps((_Evil(), np.zeros(3)), protocol=2)
    with pytest.raises(PipelineError, match=r"refused to load \(refused global (posix|os)\.system"):
        pickles.safe_unpickle(payload, "evil.pkl")
    assert not (tmp_path / "SHOULD_NOT_EXIST").exists()
    evil_file = tmp_path / "mnist.pkl.gz"
    evil_file.write_bytes(gzip.compress(payload))
    with pytest.raises(PipelineError, match="mnist.pkl.gz: refused to load"):
        mnist.load_packaged(evil_file)
    assert not (tmp_path / "SHOULD_NOT_EXIST").exists()
    for protocol in (2, 4):
        arrays = pickles.safe_unpickle(pickle.dumps((np.arange(4, dtype=np.float32),), protocol=protocol), "ok")
        assert arrays[0].tolist() == [0, 1, 2, 3]


def write_idx(path, array, compress):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_folder_round_trip(tmp_path, packaged, compress):
    suffix = ".gz" if compress else ""
    for split, (image_file, label_file) in mnist.IDX_FILES.items():
        images, labels = packaged[split]
        write_idx(tmp_path / (image_file + suffix), images[:50].numpy(), compress)
        write_idx(tmp_path / (label_file + suffix), labels[:50].numpy(), compress)
    loaded = mnist.load_idx(tmp_path)
    for split in ("train", "test"):
        assert torch.equal(loaded[split][0], packaged[split][0][:50])
        assert torch.equal(loaded[split][1], packaged[split][1][:50])


def test_idx_errors(tmp_path):
    with pytest.raises(PipelineError, match="data.dir '.*nowhere': no such folder"):
        mnist.load_idx(tmp_path / "nowhere")
    with pytest.raises(PipelineError, match="missing train-images-idx3-ubyte"):
        mnist.load_idx(tmp_path)
    bad = tmp_path / "x-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x09\x03rest")
    with pytest.raises(PipelineError, match="bad magic number"):
        mnist.read_idx(bad)
    short = tmp_path / "y-idx1-ubyte"
    short.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"\x01\x02")
    with pytest.raises(PipelineError, match=r"header says \(10,\) but the file holds 2 bytes"):
        mnist.read_idx(short)


def test_torchvision_source_offline_is_one_clear_error(tmp_path, monkeypatch):
    from netunits.torchvision_compat import torchvision_models
    torchvision_models()  # first: a bare `import torchvision` fails on CPU-only torch
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://... [Errno -3]")
    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(PipelineError, match="data.source 'torchvision': could not download MNIST .* use "
                                            "data.source 'packaged' or 'idx'") as info:
        mnist.load_torchvision(tmp_path)
    assert "\n" not in str(info.value)


def test_first_and_stratified_selection(packaged):
    labels = packaged["train"][1]
    assert subsets.select_indices(labels, 7, "first", 0, "k", 10).tolist() == list(range(7))
    chosen = subsets.select_indices(labels, 1003, "stratified", 5, "k", 10)
    assert len(chosen) == 1003 and len(set(chosen.tolist())) == 1003
    assert labels[chosen].bincount().tolist() == [101, 101, 101] + [100] * 7
    assert torch.equal(chosen, subsets.select_indices(labels, 1003, "stratified", 5, "k", 10))
    assert not torch.equal(chosen, subsets.select_indices(labels, 1003, "stratified", 6, "k", 10))
    with pytest.raises(PipelineError, match="'k' is 20 but the split has only 10 samples"):
        subsets.select_indices(labels[:10], 20, "first", 0, "k", 10)
    lopsided = torch.tensor([0] * 20 + list(range(1, 10)))
    with pytest.raises(PipelineError, match="'k' is 20; a stratified selection needs 2 samples of class 1 "
                                            "but the split has 1"):
        subsets.select_indices(lopsided, 20, "stratified", 0, "k", 10)


def test_resize_keeps_uint8_and_content(packaged):
    images = packaged["test"][0][:4]
    resized = subsets.resize_uint8(images, 112)
    assert resized.shape == (4, 1, 112, 112) and resized.dtype == torch.uint8
    # Upsampling by 4 then averaging 4x4 blocks recovers the digit closely.
    back = torch.nn.functional.avg_pool2d(resized.float(), 4).squeeze(1)
    assert (back - images.float()).abs().mean() < 8
    assert torch.equal(subsets.resize_uint8(images, 28).squeeze(1), images)


def test_stage_writes_compact_subsets(tmp_path, monkeypatch, packaged):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, tiny_params(data={"train_size": 120, "test_size": 30, "selection": "stratified"}))
    assert run_main(prepare_data.main) == 0
    train = torch.load("data/prepared/train.pt", weights_only=True)
    assert train["images"].shape == (120, 1, 32, 32) and train["images"].dtype == torch.uint8
    assert train["labels"].bincount().tolist() == [12] * 10
    assert torch.equal(train["labels"], packaged["train"][1][train["indices"]])
    assert (train["image_size"], train["dataset"], train["n_classes"]) == (32, "mnist", 10)
    assert "clean_labels" not in train
    assert sorted(p.name for p in (tmp_path / "data/prepared").iterdir()) == ["test.pt", "train.pt"]


def test_stage_refuses_a_missing_idx_folder_before_writing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, tiny_params(data={"source": "idx", "dir": "no/such/dir"}))
    assert run_main(prepare_data.main) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data.dir 'no/such/dir': no such folder") and err.count("\n") == 1
    assert not (tmp_path / "data/prepared/train.pt").exists()


def test_stage_refuses_what_would_not_fit_with_the_estimate(tmp_path, monkeypatch, capsys):
    from netunits import runtime
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runtime, "available_memory_bytes", lambda: 100 * 2**20)  # pretend 100 MiB
    write_params(tmp_path, tiny_params(data={"train_size": 60000, "test_size": 10000, "image_size": 112}))
    assert run_main(prepare_data.main) == 2
    assert capsys.readouterr().err == ("error: the prepared images would need about 0.82 GiB of memory but only "
                                       "0.10 GiB is available; lower the sizes in params.yaml\n")
    assert not (tmp_path / "data/prepared/train.pt").exists()


def test_resize_keeps_colour_channels():
    images = torch.randint(0, 256, (2, 3, 28, 28), dtype=torch.uint8)
    assert subsets.resize_uint8(images, 32).shape == (2, 3, 32, 32)
    assert torch.equal(subsets.resize_uint8(images, 28), images)


def test_label_noise_replaces_the_asked_share_with_wrong_labels():
    labels = torch.arange(1000) % 10
    noisy, changed = subsets.corrupt_labels(labels, 0.4, seed=3, n_classes=10)
    assert int(changed.sum()) == 400
    assert (noisy[changed] != labels[changed]).all() and torch.equal(noisy[~changed], labels[~changed])
    assert noisy.min() >= 0 and noisy.max() <= 9
    again, _ = subsets.corrupt_labels(labels, 0.4, seed=3, n_classes=10)
    assert torch.equal(noisy, again) and not torch.equal(noisy, subsets.corrupt_labels(labels, 0.4, 4, 10)[0])
    assert torch.equal(subsets.corrupt_labels(labels, 0.0, seed=3, n_classes=10)[0], labels)
    # the wrong label is uniform over the other nine classes
    offsets = ((noisy - labels) % 10)[changed]
    assert set(offsets.tolist()) == set(range(1, 10))


def test_stage_with_label_noise_keeps_the_clean_labels(tmp_path, monkeypatch, packaged):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, tiny_params(data={"train_size": 100, "test_size": 30, "label_noise": 0.3}))
    assert run_main(prepare_data.main) == 0
    train = torch.load("data/prepared/train.pt", weights_only=True)
    test = torch.load("data/prepared/test.pt", weights_only=True)
    assert torch.equal(train["clean_labels"], packaged["train"][1][:100])
    assert int((train["labels"] != train["clean_labels"]).sum()) == 30
    assert "clean_labels" not in test and torch.equal(test["labels"], packaged["test"][1][:30])


def test_registry_refuses_unknown_data_sets_and_oversized_subsets(tmp_path, monkeypatch, capsys):
    with pytest.raises(PipelineError, match="'data.dataset' is 'cifar100'; allowed data sets: mnist, cifar10"):
        get_dataset("cifar100")
    spec = DATASETS["mnist"]
    with pytest.raises(PipelineError) as info:
        check_request(spec, DataParams(**{**tiny_params()["data"], "train_size": 60001}))
    assert str(info.value) == ("params.yaml: 'data.train_size' is 60001; it must be an integer from 1 to 60000 "
                               "(the train split of mnist)")
    with pytest.raises(PipelineError, match="'data.test_size' is 10001; it must be an integer from 1 to 10000"):
        check_request(spec, DataParams(**{**tiny_params()["data"], "test_size": 10001}))
    check_request(spec, DataParams(**{**tiny_params()["data"], "label_noise": 0.9}))
    two_classes = dataclasses.replace(spec, n_classes=2)
    with pytest.raises(PipelineError, match="'data.label_noise' is 0.6; with 2 classes it must be at most 0.5"):
        check_request(two_classes, DataParams(**{**tiny_params()["data"], "label_noise": 0.6}))
    # the stage refuses before reading any data
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, tiny_params(data={"dataset": "cifar100"}))
    assert run_main(prepare_data.main) == 2
    assert capsys.readouterr().err == \
        "error: params.yaml: 'data.dataset' is 'cifar100'; allowed data sets: mnist, cifar10\n"
