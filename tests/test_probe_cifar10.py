"""probe_concepts with probe.source cifar10 on a small CIFAR-10 JPEG folder written here: the
training images after the ROF training subset, their colour and image-level concepts, the bad
inputs (one line, exit status 2, nothing written); and the CIFAR pipeline's stage table."""
import io

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import ROOT, run_main, tiny_params, working_dir, write_params
from netunits import dvc_files
from netunits.concepts_colour import TERMS, concept_table
from netunits.data import cifar10
from netunits.data.probe import load_probe, unpack_masks
from netunits.stage_table import pipeline_sections
from stages import probe_concepts

# painted colours, one per class (sRGB of the xkcd survey's "<term>")
PAINT = {"red": (229, 0, 0), "blue": (3, 67, 223), "green": (21, 176, 26), "yellow": (255, 255, 20),
         "white": (255, 255, 255), "black": (0, 0, 0), "orange": (249, 115, 6), "purple": (126, 30, 156),
         "pink": (255, 129, 192), "brown": (101, 55, 0)}
COLOURS = list(PAINT)          # class k is painted COLOURS[k]


def jpeg(rgb, number):
    """A 32 x 32 image of one colour, its top rows grey from `number` on (so images differ)."""
    pixels = np.broadcast_to(np.array(rgb, dtype=np.uint8), (32, 32, 3)).copy()
    pixels[:number % 4] = 128
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=98)
    return buffer.getvalue()


def write_cifar_folder(folder, train_per_class=4, test_per_class=1):
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        for label, name in enumerate(cifar10.CLASSES):
            (folder / split / name).mkdir(parents=True)
            for number in range(per_class):
                (folder / split / name / f"{number:04d}.jpg").write_bytes(jpeg(PAINT[COLOURS[label]], number))


def cifar_params(folder, **sections):
    params = tiny_params(data={"dataset": "cifar10", "source": "jpeg", "dir": str(folder), "train_size": 20,
                               "test_size": 10, "image_size": 32},
                         probe={"source": "cifar10", "size": 20, "mask_size": 32, "colour_rule": "xkcd_names"})
    for section, values in sections.items():
        params[section].update(values)
    return params


@pytest.fixture
def cifar_dir(tmp_path):
    write_cifar_folder(tmp_path / "cifar")
    return tmp_path


def test_the_probe_is_the_training_images_after_the_rof_subset_with_their_colours(cifar_dir):
    write_params(cifar_dir, cifar_params(cifar_dir / "cifar"))
    with working_dir(cifar_dir):
        assert run_main(probe_concepts.main) == 0
    probe = load_probe(cifar_dir / "data/probe/probe.pt")
    assert (cifar_dir / "artifacts/plots/probe_concepts.png").stat().st_size > 0
    # 40 training images ordered by number then class; selection first: the ROF subset is 0..19
    assert probe["indices"].tolist() == list(range(20, 40)) and probe["split"] == "train"
    assert probe["labels"].tolist() == list(range(10)) * 2
    assert probe["images"].shape == (20, 3, 32, 32) and probe["images"].dtype == torch.uint8
    assert probe["source"] == "cifar10" and probe["colour_rule"] == "xkcd_names" and probe["mask_size"] == 32
    names = [c["name"] for c in probe["concepts"]]
    assert names == [name for name, *_ in concept_table(list(cifar10.CLASSES))]
    n_pixel = sum(c["level"] == "pixel" for c in probe["concepts"])
    masks = unpack_masks(probe["pixel_masks"], 32).reshape(20, n_pixel, 32, 32)
    labels = probe["image_labels"]
    for i, label in enumerate(probe["labels"].tolist()):
        term = COLOURS[label]
        # the painted rows (below the grey ones) are named by their colour; the image's class and
        # dominant colour are its image-level labels
        grey_rows = (2 + i // 10) % 4          # the image's number in its class folder: 2 or 3
        assert masks[i, TERMS.index(term), grey_rows + 2:, 2:-2].all(), (i, term)
        assert labels[i, names.index(cifar10.CLASSES[label]) - n_pixel]
        assert labels[i, names.index(f"dominant_{term}") - n_pixel]
    assert probe["annotated"].all()


def test_the_rule_is_recorded_and_stratified_selection_frees_the_rest(cifar_dir):
    write_params(cifar_dir, cifar_params(cifar_dir / "cifar", data={"selection": "stratified", "train_size": 30},
                                         probe={"size": 10, "colour_rule": "xkcd_basic"}))
    with working_dir(cifar_dir):
        assert run_main(probe_concepts.main) == 0
    probe = load_probe(cifar_dir / "data/probe/probe.pt")
    assert probe["colour_rule"] == "xkcd_basic" and len(probe["indices"]) == 10
    assert sorted(probe["labels"].tolist()) == list(range(10))    # one image of each class is left


@pytest.mark.parametrize("change, message", [
    ({"data": {"dataset": "mnist", "source": "packaged"}},
     "'probe.source' is 'cifar10' but 'data.dataset' is 'mnist'; the computed concepts are those of CIFAR-10's"),
    ({"probe": {"size": 21}}, "'probe.size' is 21; it must be at most 20, the training images that the 20 of "
                              "data.train_size (ROF's subset) leave of the 40 in "),
    ({"data": {"train_size": 50000}}, "'probe.size' is 20; it must be at most 0, the training images that the "
                                      "50000 of data.train_size (ROF's subset) leave of the 50000"),
    ({"probe": {"colour_rule": "vdw"}}, "'probe.colour_rule' is 'vdw'; it must be one of xkcd_names, xkcd_basic"),
])
def test_bad_requests_are_one_line_and_write_nothing(cifar_dir, capsys, change, message):
    write_params(cifar_dir, cifar_params(cifar_dir / "cifar", **change))
    with working_dir(cifar_dir):
        assert run_main(probe_concepts.main) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: params.yaml: ") and message in err and err.count("\n") == 1, err
    written = [p for folder in ("data", "artifacts") for p in (cifar_dir / folder).rglob("*") if p.is_file()]
    assert written == []


def test_the_cifar_pipeline_runs_the_analysis_stages_without_evaluate():
    assert dvc_files.main(["--check"]) == 0
    stages = yaml.safe_load((ROOT / "cifar/dvc.yaml").read_text())["stages"]
    for name in ("probe_concepts", "dissect", "dissect_report", "compose", "clip_dissect", "report"):
        assert name in stages, name
    assert not {"ablate", "evaluate", "compare_models"} & set(stages)
    # the report reads evaluate's outputs where a pipeline makes them: not here, and not its params
    report = stages["report"]
    assert not any("evaluation" in dep for dep in report["deps"])
    assert "evaluate" not in report["params"][0]["cifar/params.yaml"]
    main = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]
    assert "artifacts/evaluation" in main["deps"] and "evaluate" in main["params"]
    sections = yaml.safe_load((ROOT / "cifar/params.yaml").read_text())
    assert set(pipeline_sections("cifar/params.yaml")) == set(sections)
    assert sections["probe"]["source"] == "cifar10" and sections["dissect"]["layers"] == ["layer1", "layer2", "layer3"]
