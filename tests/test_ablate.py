"""Stage ablate on the tiny run: per dissected layer the drops of zeroing each unit, exact for the
block feeding the final layer, by forward passes on a class-balanced sample before it; the sample
is seeded; bad input."""
import shutil

import torch

from conftest import run_main
from netunits.api.ablate import class_sample


def test_the_class_sample_takes_each_class_s_share_seeded():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    chosen = class_sample(labels, 2, seed=0)
    assert torch.bincount(labels[chosen]).tolist() == [2, 2, 2]
    assert torch.equal(chosen, class_sample(labels, 2, seed=0)) and chosen.tolist() == sorted(chosen.tolist())
    assert torch.equal(class_sample(labels, "all", 0), torch.arange(9))
    assert torch.bincount(labels[class_sample(labels, 3, 1)]).tolist() == [3, 2, 3]


def test_the_stage_writes_drops_per_layer_on_the_held_out_images(project):
    from stages import ablate
    result = torch.load(project / "artifacts/ablation.pt", weights_only=True)
    layers = result["per_layer"]
    assert list(layers) == ["layer2", "layer3", "layer4"]
    assert layers["layer4"]["how"] == "exact" and layers["layer2"]["how"] == "forward"
    assert layers["layer4"]["images"] == result["split"]["heldout"]
    # ablate.images_per_class 2: at most two held-out images of each digit (the tiny probe has one 0 held out)
    held, sample = layers["layer4"]["image_indices"], layers["layer2"]["image_indices"]
    labels = torch.load(project / "data/probe/probe.pt", weights_only=True)["labels"]
    assert set(sample.tolist()) <= set(held.tolist()) and layers["layer2"]["images"] == len(sample)
    assert torch.equal(torch.bincount(labels[sample], minlength=10),
                       torch.bincount(labels[held], minlength=10).clamp(max=2))
    for layer, units in (("layer2", 128), ("layer3", 256), ("layer4", 512)):
        assert layers[layer]["margin"].shape == layers[layer]["accuracy"].shape == (units, 10)
    first = (project / "artifacts/ablation.pt").read_bytes()
    assert run_main(ablate.main) == 0
    assert (project / "artifacts/ablation.pt").read_bytes() == first


def test_a_held_out_part_too_small_is_one_line_exit_2_and_nothing_written(project, capsys):
    from stages import ablate
    (project / "artifacts/ablation.pt").unlink()
    assert run_main(ablate.main, "--set", "evaluate.heldout_fraction=0.05") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: params.yaml: 'evaluate.heldout_fraction' is 0.05")
    assert not (project / "artifacts/ablation.pt").exists()
    shutil.rmtree(project / "artifacts", ignore_errors=True)
