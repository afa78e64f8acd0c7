"""Colour naming and the natural-image probe (netunits/concepts_colour.py)."""
import numpy as np
import pytest
import torch

from netunits.concepts_colour import (
    COLOUR_RULES,
    TERMS,
    XKCD_CENTROIDS,
    colourfulness,
    concept_table,
    name_colours,
    natural_annotations,
    natural_probe,
    xkcd_named_colours,
)
from netunits.data.cifar10 import CLASSES
from netunits.data.probe import load_probe, unpack_masks
from netunits.errors import PipelineError
from netunits.files import save_torch


def patch(rgb, size=4):
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (size, size, 3)).copy()


@pytest.mark.parametrize("rgb, term", [
    ((255, 0, 0), "red"), ((135, 206, 235), "blue"), ((128, 128, 128), "grey"), ((0, 0, 0), "black"),
    ((255, 255, 255), "white"), ((0, 128, 0), "green"), ((255, 255, 0), "yellow"), ((255, 165, 0), "orange"),
    ((255, 192, 203), "pink"), ((128, 0, 128), "purple"), ((139, 69, 19), "brown"), ((0, 0, 128), "blue"),
])
@pytest.mark.parametrize("rule", COLOUR_RULES)
def test_patches_get_their_term(rgb, term, rule):
    # pure red, sky blue (CSS skyblue), mid grey, and the CSS colours of the other terms (brown:
    # CSS saddlebrown; navy is dark blue)
    names = name_colours(patch(rgb), rule)
    assert (names == TERMS.index(term)).all()


def test_named_colours_take_their_head_noun():
    named = dict((value, term) for value, term in xkcd_named_colours("xkcd_names"))
    from matplotlib.colors import XKCD_COLORS
    assert named[XKCD_COLORS["xkcd:sky blue"]] == "blue" and named[XKCD_COLORS["xkcd:greenish grey"]] == "grey"
    assert XKCD_COLORS["xkcd:teal"] not in named and len(named) == 558
    # muted colours of photographs: a dull green and a dull brown are not grey
    assert name_colours(patch((100, 120, 90)))[0, 0] == TERMS.index("green")
    assert name_colours(patch((120, 100, 80)))[0, 0] == TERMS.index("brown")


def test_centroids_are_the_matplotlib_xkcd_colours():
    from matplotlib.colors import XKCD_COLORS
    for term, values in XKCD_CENTROIDS.items():
        names = [f"xkcd:{term}", f"xkcd:light {term}", f"xkcd:dark {term}"][:len(values)]
        assert [XKCD_COLORS[n] for n in names] == list(values)


def test_unknown_rule_is_one_line_naming_the_param():
    with pytest.raises(PipelineError, match="probe.colour_rule.*allowed: xkcd_names, xkcd_basic"):
        name_colours(patch((1, 2, 3)), rule="vdw")


def test_colourfulness_by_hand():
    grey = np.full((1, 2, 2, 3), 100.0)
    assert colourfulness(grey)[0] == 0.0
    # half the pixels pure red (rg 255, yb 127.5), half black: sd_rg 127.5, sd_yb 63.75
    image = np.zeros((1, 2, 2, 3))
    image[0, 0, :, 0] = 255
    expected = np.hypot(127.5, 63.75) + 0.3 * np.hypot(127.5, 63.75)
    assert colourfulness(image)[0] == pytest.approx(expected)


def two_colour_images():
    """Image 0: five rows red, three rows blue; image 1: all grey; image 2: all white."""
    rgb = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    rgb[0, :5] = (230, 0, 0)
    rgb[0, 5:] = (3, 67, 223)
    rgb[1] = 128
    rgb[2] = 255
    return rgb


def test_annotations_by_hand():
    rgb = two_colour_images()
    masks, labels = natural_annotations(rgb, np.array([0, 3, 9]), list(CLASSES))
    table = concept_table(list(CLASSES))
    pixel = [c[0] for c in table if c[2] == "pixel"]
    image = [c[0] for c in table if c[2] == "image"]
    assert masks.shape == (3, len(pixel), 8, 8) and labels.shape == (3, len(image))
    red, blue = masks[0, pixel.index("red")], masks[0, pixel.index("blue")]
    assert red[:5].all() and not red[5:].any() and blue[5:].all() and not blue[:5].any()
    assert masks[1, pixel.index("grey")].all() and masks[2, pixel.index("white")].all()
    # the edge lies on the boundary between the colours (Canny leaves out the image's outer
    # pixels); uniform images have none
    edge = masks[0, pixel.index("edge")]
    assert edge[4:6, 1:7].any(axis=0).all() and not edge[:3].any() and not edge[7:].any()
    assert not masks[1:, pixel.index("edge")].any()
    assert masks[:, pixel.index("top_half"), :4].all() and not masks[:, pixel.index("top_half"), 4:].any()
    assert masks[0, pixel.index("centre")].sum() == 16 and masks[0, pixel.index("centre"), 2:6, 2:6].all()
    assert masks[2, pixel.index("bright")].all() and not masks[2, pixel.index("dark")].any()
    on = [[image[j] for j in np.flatnonzero(row)] for row in labels]
    assert on[0][:2] == ["airplane", "dominant_red"]      # 40 red pixels, 24 blue
    assert on[1][:2] == ["cat", "dominant_grey"] and on[2][:2] == ["truck", "dominant_white"]
    assert "colourfulness_high" in on[0] and "colourfulness_low" in on[1]
    assert "brightness_high" in on[2]
    assert labels.sum(axis=1).tolist() == [4, 4, 4]


def test_probe_round_trips_through_the_loader(tmp_path):
    images = torch.from_numpy(two_colour_images()).permute(0, 3, 1, 2).contiguous()
    images = torch.nn.functional.interpolate(images.float(), size=16).to(torch.uint8)   # model size 16
    labels = torch.tensor([0, 3, 9])
    probe, masks = natural_probe(images, labels, torch.tensor([5, 6, 7]), 8, CLASSES)
    save_torch(probe, tmp_path / "probe.pt")
    loaded = load_probe(tmp_path / "probe.pt")
    assert torch.equal(loaded["images"], images) and loaded["mask_size"] == 8
    assert torch.equal(unpack_masks(loaded["pixel_masks"], 8), torch.from_numpy(masks.reshape(3, masks.shape[1], 64)))
    assert loaded["concepts"][0] == {"name": "black", "category": "colour", "level": "pixel",
                                     "description": "pixels named black: nearest xkcd survey colour in CIELab"}
    assert loaded["categories"][:3] == ["colour", "edge", "lightness"] and loaded["annotated"].all()
    assert loaded["indices"].tolist() == [5, 6, 7] and loaded["source"] == "cifar10"
    assert loaded["colour_rule"] == "xkcd_names"


def test_probe_rejects_grey_images():
    with pytest.raises(PipelineError, match="uint8 RGB"):
        natural_probe(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64),
                      torch.arange(2), 8, CLASSES)
