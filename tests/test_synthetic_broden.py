"""bench/synthetic_broden.py: the synthetic Broden-format probe set round-trips through the
project's reader (netunits.data.broden.load_broden) and the same seed writes the same bytes."""
import numpy as np
import pytest
from PIL import Image

from bench.synthetic_broden import (
    MASK_SIZE,
    PIXEL_CATEGORIES,
    category_sizes,
    concept_plan,
    draw_image,
    main,
    write_synthetic_broden,
)
from netunits.data.broden import load_broden
from netunits.data.probe import unpack_masks

# 400 concepts: pixel-level label numbers up to 320, so some masks need G (number = R + 256 * G)
N, CONCEPTS, SEED, PER_IMAGE, UNANNOTATED = 8, 400, 3, 5, 0.3


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic") / "probe"
    plan = write_synthetic_broden(folder, N, CONCEPTS, SEED, PER_IMAGE, UNANNOTATED)
    return folder, plan


def folder_bytes(folder):
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_concepts_split_over_the_categories():
    assert category_sizes(40) == {"shape": 16, "stripes": 8, "colour": 8, "scene": 8}
    assert category_sizes(1200) == {"shape": 480, "stripes": 240, "colour": 240, "scene": 240}
    plan = concept_plan(300)
    assert [c.number for c in plan] == list(range(1, 301)) and len({c.name for c in plan}) == 300
    with pytest.raises(SystemExit, match="--concepts is 3; it must be at least 4"):
        category_sizes(3)


def test_each_image_draws_its_documented_concepts():
    plan = concept_plan(CONCEPTS)
    for i in range(N):
        drawn = draw_image(plan, SEED, i, PER_IMAGE, UNANNOTATED)
        assert len(drawn.drawn) == PER_IMAGE == len(set(drawn.drawn))
        in_masks = sorted(n for c in PIXEL_CATEGORIES for n in np.unique(drawn.labels[c]).tolist() if n)
        assert in_masks == drawn.drawn                      # every drawn concept visible, nothing else
        assert drawn.image.shape == (224, 224, 3) and drawn.labels["shape"].shape == (MASK_SIZE, MASK_SIZE)
    # image i does not depend on how many images are written, and seeds differ
    assert np.array_equal(draw_image(plan, SEED, 2, PER_IMAGE).image, draw_image(plan, SEED, 2, PER_IMAGE).image)
    assert not np.array_equal(draw_image(plan, SEED, 2).image, draw_image(plan, SEED + 1, 2).image)


def test_load_broden_reads_what_was_written(written):
    folder, plan = written
    probe = load_broden(folder, image_size=224, mask_size=MASK_SIZE, size=N)
    masks = unpack_masks(probe["pixel_masks"][:], MASK_SIZE).view(N, -1, MASK_SIZE, MASK_SIZE).numpy()
    drawn = [draw_image(plan, SEED, i, PER_IMAGE, UNANNOTATED) for i in range(N)]
    # the concepts: every (category, label) annotated somewhere, pixel level first, by label number
    present = {c: set() for c in ("shape", "stripes", "colour", "scene")}
    for d in drawn:
        for category in PIXEL_CATEGORIES:
            if d.annotated[category]:
                present[category] |= set(np.unique(d.labels[category]).tolist()) - {0}
        if d.annotated["scene"]:
            present["scene"].add(d.scene)
    expected = [(c.category, c.name) for c in plan if c.number in present[c.category]]
    assert [(c["category"], c["name"]) for c in probe["concepts"]] == expected
    assert [c["level"] == "pixel" for c in probe["concepts"]] == [c != "scene" for c, _ in expected]
    number = {c.name: c.number for c in plan}
    n_pixel = masks.shape[1]
    assert probe["categories"] == ["shape", "stripes", "colour", "scene"]
    annotated = np.array([[d.annotated[c] for c in probe["categories"]] for d in drawn])
    assert np.array_equal(probe["annotated"].numpy(), annotated)
    assert not annotated.all()                              # some category is unannotated somewhere
    assert max(number[c["name"]] for c in probe["concepts"][:n_pixel]) > 255
    for j, concept in enumerate(probe["concepts"][:n_pixel]):
        planted = np.stack([d.labels[concept["category"]] == number[concept["name"]]
                            if d.annotated[concept["category"]] else np.zeros((MASK_SIZE, MASK_SIZE), bool)
                            for d in drawn])
        assert np.array_equal(masks[:, j], planted), concept["name"]
    for j, concept in enumerate(probe["concepts"][n_pixel:]):
        labelled = [d.annotated["scene"] and d.scene == number[concept["name"]] for d in drawn]
        assert probe["image_labels"][:, j].tolist() == labelled
    for i in range(N):
        jpeg = np.asarray(Image.open(folder / "images" / f"synthetic/{i:06d}.jpg").convert("RGB"))
        assert np.array_equal(probe["images"][i].permute(1, 2, 0).numpy(), jpeg)
        assert np.abs(jpeg.astype(int) - drawn[i].image).mean() < 8      # the JPEG of what was drawn


def test_the_same_seed_writes_the_same_bytes(written, tmp_path):
    folder, _ = written
    main(["--images", str(N), "--concepts", str(CONCEPTS), "--out", str(tmp_path / "again"), "--seed", str(SEED),
          "--per-image", str(PER_IMAGE), "--unannotated", str(UNANNOTATED)])
    assert folder_bytes(tmp_path / "again") == folder_bytes(folder)
    write_synthetic_broden(tmp_path / "other", N, CONCEPTS, SEED + 1, PER_IMAGE, UNANNOTATED)
    assert folder_bytes(tmp_path / "other")["index.csv"] != folder_bytes(folder)["index.csv"]


def test_bad_arguments_are_one_line(tmp_path):
    with pytest.raises(SystemExit, match="--per-image is 17; it must be from 1 to 16"):
        write_synthetic_broden(tmp_path / "a", 2, 40, per_image=17)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("")
    with pytest.raises(SystemExit, match="--out .*b exists and is not an empty folder"):
        write_synthetic_broden(tmp_path / "b", 2, 40)
    with pytest.raises(SystemExit, match="--unannotated is 1.0"):
        write_synthetic_broden(tmp_path / "c", 2, 40, unannotated=1.0)
