"""The clip_dissect stage on the tiny run: its tables, metrics and figure, the open_clip source end
to end on a small randomly initialised model, and bad input as one line that writes nothing."""
import importlib.util
import json
import sys
import warnings

import pytest
import torch

from conftest import run_main, tiny_params, write_params
from netunits.data.probe import load_probe
from netunits.errors import PipelineError
from netunits.files import read_csv
from stages import clip_dissect

OUTPUTS = ["artifacts/clip_dissect/descriptions.csv", "artifacts/clip_dissect/layers/layer2.csv",
           "artifacts/clip_dissect/layers/layer3.csv", "artifacts/clip_dissect/layers/layer4.csv",
           "artifacts/metrics/clip_dissect.json", "artifacts/plots/clip_dissect_top.png"]
UNITS = {"layer2": 128, "layer3": 256, "layer4": 512}
NO_OPEN_CLIP = "open_clip is the optional extra (`make clip`, requirements-clip.txt) and is not installed here"
needs_open_clip = pytest.mark.skipif(importlib.util.find_spec("open_clip") is None, reason=NO_OPEN_CLIP)
# A CLIP small enough to build in a blink: one transformer block per tower, random weights.
TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def test_tables_metrics_and_figure_of_the_annotations_source(project):
    # the tiny run (conftest) ran clip_dissect with the default params: annotations, soft-WPMI
    metrics = json.loads((project / "artifacts/metrics/clip_dissect.json").read_text())
    assert metrics["source"] == "annotations" and metrics["similarity"] == "soft_wpmi"
    # a concept scoring 0 on every probe image (on the tiny probe: thin_stroke, too rare for its
    # 0.9 quantile) is no candidate: soft-WPMI would not penalise it
    assert metrics["concepts"] == 37 - len(metrics["absent_concepts"])
    names = {c["name"] for c in load_probe(project / "data/probe/probe.pt")["concepts"]}
    every = read_csv(project / "artifacts/clip_dissect/descriptions.csv", numeric=False)
    assert list(every) == ["layer", "unit", "description", "similarity"] and len(every["unit"]) == 896
    for layer, units in UNITS.items():
        table = read_csv(project / f"artifacts/clip_dissect/layers/{layer}.csv", numeric=False)
        assert list(table) == ["layer", "unit", "description", "similarity", "second", "second_similarity",
                               "third", "third_similarity"]
        assert table["unit"] == [str(u) for u in range(units)] and set(table["layer"]) == {layer}
        assert all(float(a) >= float(b) >= float(c) for a, b, c in
                   zip(table["similarity"], table["second_similarity"], table["third_similarity"]))
        assert all(d != s != t for d, s, t in zip(table["description"], table["second"], table["third"]))
        m = metrics["layers"][layer]
        assert m["units"] == units and m["unique_descriptions"] == len(set(table["description"]))
        dissection = read_csv(project / f"artifacts/dissect/layers/{layer}.csv", numeric=False)["concept"]
        assert m["agreement_with_dissection"] == pytest.approx(
            sum(a == b for a, b in zip(table["description"], dissection)) / units)
        assert 0 <= m["chance_agreement"] <= 1
        described = set(table["description"]) | set(table["second"]) | set(table["third"])
        assert described <= names - set(metrics["absent_concepts"])
    assert metrics["overall"]["unique_descriptions"] == len(set(every["description"]))
    assert (project / "artifacts/plots/clip_dissect_top.png").stat().st_size > 0


def test_same_params_same_outputs_and_a_concept_subset(project):
    before = {path: (project / path).read_bytes() for path in OUTPUTS}
    assert run_main(clip_dissect.main) == 0
    assert {path: (project / path).read_bytes() for path in OUTPUTS} == before
    (project / "concepts.txt").write_text("digit_3\n\nhole\n  \ndigit_3\nthick\n")
    write_params(project, tiny_params(clip_dissect={"concepts": "concepts.txt", "layers": ["layer4"],
                                                    "similarity": "wpmi"}))
    assert run_main(clip_dissect.main) == 0
    table = read_csv(project / "artifacts/clip_dissect/layers/layer4.csv", numeric=False)
    assert set(table["description"]) <= {"digit_3", "hole", "thick"}
    metrics = json.loads((project / "artifacts/metrics/clip_dissect.json").read_text())
    assert metrics["concepts"] == 3 and list(metrics["layers"]) == ["layer4"]
    assert not (project / "artifacts/clip_dissect/layers/layer2.csv").exists()   # no table of an old layer



def test_the_library_call_gives_what_the_stage_wrote(project):
    """run_clip_dissect from tensors and a config, as a notebook calls it: the stage's tables and metrics."""
    from netunits.api.clip_dissect import ClipDissectInputs, run_clip_dissect
    from netunits.models.registry import load_checkpoint
    from netunits.params import load_params
    from netunits.plots import close
    from netunits.runtime import resolve_compute
    params = load_params(project / "params.yaml")
    model, checkpoint = load_checkpoint(project / "artifacts/train/model.pt")
    probe = load_probe(project / "data/probe/probe.pt")
    dissected = {layer: read_csv(project / f"artifacts/dissect/layers/{layer}.csv", numeric=False) for layer in UNITS}
    inputs = ClipDissectInputs(model, checkpoint["input"], probe, [c["name"] for c in probe["concepts"]], None,
                               dissected)
    result = run_clip_dissect(inputs, params.clip_dissect, resolve_compute(params.compute, analysis=True))
    close(result.figure)
    assert result.metrics == json.loads((project / "artifacts/metrics/clip_dissect.json").read_text())
    for layer in UNITS:
        table = read_csv(project / f"artifacts/clip_dissect/layers/{layer}.csv", numeric=False)
        assert [r["description"] for r in result.tables[layer]] == table["description"]
    assert len(result.descriptions()) == 896 and list(result.descriptions()[0]) == ["layer", "unit", "description",
                                                                                    "similarity"]

def _remove_outputs(project):
    for path in OUTPUTS:
        (project / path).unlink()


@pytest.mark.parametrize("change,message", [
    ({"soft_wpmi_top_k": 100}, "'clip_dissect.soft_wpmi_top_k' is 100; it must be at most the probe set's 60 images"),
    ({"similarity": "wpmi", "wpmi_top_k": 61}, "'clip_dissect.wpmi_top_k' is 61; it must be at most the probe set's"),
    ({"concepts": "empty.txt"}, "empty.txt: no concepts in the concept file"),
    ({"concepts": "absent.txt"}, "'clip_dissect.concepts' is 'absent.txt'; no such file"),
    ({"concepts": "words.txt"}, "words.txt: the annotations source scores only the probe set's concepts, and 'dog'"),
    ({"source": "clip", "weights": "absent.pt"}, "'clip_dissect.weights' is 'absent.pt'; no such file"),
    ({"source": "clip", "weights": None}, "'clip_dissect.weights' is null"),
    ({"layers": ["layer9"]}, "'clip_dissect.layers' is 'layer9'; the model's layers are"),
    ({"pool": "median"}, "'clip_dissect.pool' is 'median'; it must be one of mean, max"),
])
def test_bad_input_is_one_line_and_writes_nothing(project, capsys, change, message):
    (project / "empty.txt").write_text("\n  \n\n")
    (project / "words.txt").write_text("dog\ncat\n")
    _remove_outputs(project)
    write_params(project, tiny_params(clip_dissect=change))
    assert run_main(clip_dissect.main) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not [path for path in OUTPUTS if (project / path).exists()]


@pytest.fixture
def tiny_clip(tmp_path):
    """(config file, weights file) of a randomly initialised open_clip model. Its labels mean nothing:
    the test checks the plumbing (offline loading, preprocessing, embeddings, the stage's outputs)."""
    from netunits.clip_models import import_open_clip
    open_clip = import_open_clip("clip_dissect.source")
    config = tmp_path / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    weights = tmp_path / "tiny-clip.pt"
    torch.save(open_clip.create_model("tiny-clip").state_dict(), weights)
    return config, weights


@needs_open_clip
def test_open_clip_source_end_to_end_on_a_random_model(project, tiny_clip):
    config, weights = tiny_clip
    (project / "words.txt").write_text("dog\n\nstripes\nwheel\n  \nstripes\nsky\nred\n")
    write_params(project, tiny_params(clip_dissect={"source": "clip", "model": str(config), "weights": str(weights),
                                                    "concepts": "words.txt"}))
    _remove_outputs(project)
    assert run_main(clip_dissect.main) == 0
    outputs = {path: (project / path).read_bytes() for path in OUTPUTS}
    metrics = json.loads((project / "artifacts/metrics/clip_dissect.json").read_text())
    assert metrics["source"] == "clip" and metrics["concepts"] == 5 and len(metrics["weights_sha256"]) == 64
    assert metrics["layers"]["layer4"]["agreement_with_dissection"] is None       # another vocabulary
    for layer, units in UNITS.items():
        table = read_csv(project / f"artifacts/clip_dissect/layers/{layer}.csv", numeric=False)
        assert len(table["unit"]) == units
        assert set(table["description"]) | set(table["second"]) <= {"dog", "stripes", "wheel", "sky", "red"}
    assert run_main(clip_dissect.main) == 0                                       # same inputs, same bytes
    assert {path: (project / path).read_bytes() for path in OUTPUTS} == outputs


@needs_open_clip
def test_open_clip_bad_model_or_weights_is_one_line(project, tiny_clip, capsys):
    config, weights = tiny_clip
    (project / "words.txt").write_text("dog\n")
    with warnings.catch_warnings():                     # torch.jit is deprecated; OpenAI's files are still in it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), project / "release.pt")
    _remove_outputs(project)
    for change, message in [
            ({"model": "ViT-Tiny-None", "weights": str(weights)},
             "'clip_dissect.model' is 'ViT-Tiny-None', which open_clip"),
            ({"model": "RN50", "weights": str(weights)}, "could not build open_clip model 'RN50' from it offline"),
            ({"model": str(config), "weights": "words.txt"}, "words.txt: could not build open_clip model 'tiny-clip'"),
            ({"model": str(config), "weights": "release.pt"},
             "release.pt: a TorchScript archive, OpenAI's CLIP release format, which is not loaded here")]:
        write_params(project, tiny_params(clip_dissect={"source": "clip", "concepts": "words.txt", **change}))
        assert run_main(clip_dissect.main) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
        assert not [path for path in OUTPUTS if (project / path).exists()]


def test_the_clip_source_without_open_clip_says_how_to_install_it(project, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)                 # `import open_clip` now fails
    (project / "weights.pt").write_bytes(b"")
    _remove_outputs(project)
    write_params(project, tiny_params(clip_dissect={"source": "clip", "weights": "weights.pt"}))
    assert run_main(clip_dissect.main) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: params.yaml: 'clip_dissect.source' is 'clip', which needs the optional open_clip "
                          "extra") and "`make clip`" in err and err.count("\n") == 1, err
    assert not [path for path in OUTPUTS if (project / path).exists()]


def _activation(clip):
    return type(clip.visual.transformer.resblocks[0].mlp.gelu).__name__


@needs_open_clip
def test_openai_weights_run_quick_gelu_or_are_refused(tmp_path, tiny_clip):
    """open_clip's plain names run GELU, OpenAI's CLIP weights were trained with QuickGELU, and a state
    dict loads into either: weights that say they are OpenAI's need a model that runs QuickGELU."""
    from netunits.clip_models import import_open_clip, load_model
    open_clip, cpu = import_open_clip("clip_dissect.source"), torch.device("cpu")
    config, weights = tiny_clip
    assert _activation(load_model(str(config), weights, cpu)[0]) == "GELU"      # nothing says OpenAI: as configured
    # a hub folder whose open_clip_config.json sets quick_gelu: its own config runs QuickGELU, another is refused
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "open_clip_pytorch_model.bin").write_bytes(weights.read_bytes())
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": {**TINY_CLIP, "quick_gelu": True}}))
    assert _activation(load_model(str(hub / "open_clip_config.json"), hub / "open_clip_pytorch_model.bin",
                                  cpu)[0]) == "QuickGELU"
    with pytest.raises(PipelineError, match=f"'clip_dissect.model' is '{config}', which runs GELU, but .*sets "
                                            f"quick_gelu\\), trained with QuickGELU; add \"quick_gelu\": true to"):
        load_model(str(config), hub / "open_clip_pytorch_model.bin", cpu)
    # by name, in a folder named as the hub's OpenAI repositories: the -quickgelu name is the answer
    quick = tmp_path / "tiny-clip-quickgelu.json"
    quick.write_text(json.dumps({**TINY_CLIP, "quick_gelu": True}))
    open_clip.add_model_config(quick)
    named = tmp_path / "models--timm--tiny_clip.openai" / "open_clip_pytorch_model.bin"
    named.parent.mkdir()
    named.write_bytes(weights.read_bytes())
    with pytest.raises(PipelineError, match="is 'tiny-clip', which runs GELU, .*its path names OpenAI "
                                            "\\(models--timm--tiny_clip.openai\\).*; use 'tiny-clip-quickgelu'$"):
        load_model("tiny-clip", named, cpu)
    assert _activation(load_model("tiny-clip-quickgelu", named, cpu)[0]) == "QuickGELU"
    # a config that states its activation is taken as meant
    stated = tmp_path / "stated.json"
    stated.write_text(json.dumps({**TINY_CLIP, "quick_gelu": False}))
    assert _activation(load_model(str(stated), named, cpu)[0]) == "GELU"
