"""netunits.methods.planted: planted maps by hand, the hook that puts them into a layer, and which
formulas a search can name."""
import pytest
import torch

from netunits.data.probe import pack_masks
from netunits.methods.formula import parse
from netunits.methods.planted import (
    RAMP,
    fits,
    image_presence,
    missing_concepts,
    parse_planted,
    planted,
    planted_maps,
)


def probe_of_two():
    """Two images, masks 4 x 4: a hole in the top-left 2 x 2 of image 0; image 1 is digit_3."""
    masks = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    masks[0, 0, :2, :2] = True
    return {"images": torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "mask_size": 4,
            "pixel_masks": pack_masks(masks.numpy()), "image_labels": torch.tensor([[False], [True]]),
            "concepts": [{"name": "hole", "level": "pixel", "category": "c"},
                         {"name": "digit_3", "level": "image", "category": "class"}]}


def test_a_planted_map_is_the_formula_coverage_of_each_cell_with_a_small_ramp():
    probe = probe_of_two()
    maps = planted_maps(probe, parse_planted(["hole", "digit_3", "hole OR digit_3", "noise"]), 2, seed=0)
    assert maps.shape == (2, 4, 2, 2)
    hole = maps[:, 0]
    assert (hole[0, 0, 0] >= 1) and (hole[0, 0, 0] < 1 + RAMP) and hole[0].flatten()[1:].eq(0).all()
    assert hole[1].eq(0).all()
    assert maps[0, 1].eq(0).all() and (maps[1, 1] >= 1).all()              # digit_3: all of image 1
    assert (maps[0, 2] > 0).sum() == 1 and (maps[1, 2] >= 1).all()
    assert (maps[:, 3] >= 0).all() and (maps[:, 3] < 1).all()              # noise: the uniform values
    assert torch.equal(maps, planted_maps(probe, parse_planted(["hole", "digit_3", "hole OR digit_3", "noise"]),
                                          2, seed=0))


def test_the_hook_replaces_the_first_channels_in_probe_order_and_goes_away():
    model = torch.nn.Sequential()
    model.add_module("layer", torch.nn.Conv2d(3, 5, 1))
    maps = torch.arange(4 * 2 * 3 * 3, dtype=torch.float32).view(4, 2, 3, 3)
    images = torch.randn(4, 3, 3, 3)
    with torch.no_grad():
        plain = model(images)
        with planted(model, "layer", maps):
            first, second = model(images[:3]), model(images[3:])        # batches, in order
            again = model(images[:2])                                   # a second pass starts over
    assert torch.equal(torch.cat([first, second])[:, :2], maps) and torch.equal(again[:, :2], maps[:2])
    assert torch.allclose(torch.cat([first, second])[:, 2:], plain[:, 2:])     # batches may round otherwise
    with torch.no_grad():
        assert torch.equal(model(images), plain)                        # the hook is gone, same batch


def test_which_planted_formulas_a_search_can_name_and_which_concepts_are_missing():
    assert fits(parse("hole AND NOT digit_0"), 3, ["OR", "AND", "AND NOT"])
    assert not fits(parse("hole AND NOT digit_0"), 1, ["OR", "AND", "AND NOT"])
    assert not fits(parse("hole CLOSE TO digit_0"), 3, ["OR", "AND"])
    assert missing_concepts(parse_planted(["hole", "spiral AND hole", "noise"]), ["hole", "digit_0"]) == ["spiral"]
    present = torch.tensor([[True, False], [True, True], [False, True]])
    assert image_presence(parse("hole AND NOT digit_0"), present, ["hole", "digit_0"]).tolist() == [True, False, False]


@pytest.mark.parametrize("text", ["hole AND", "(hole"])
def test_a_planted_formula_that_does_not_parse_is_an_error(text):
    from netunits.errors import PipelineError
    with pytest.raises(PipelineError):
        parse_planted([text])
