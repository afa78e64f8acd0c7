"""finetune_decomposed on a tiny real run: before training it is influential_filters' decomposed
accuracy exactly, it is seeded, bad params are one line and write nothing."""
import json
import shutil

import pytest

from conftest import run_main, tiny_params, working_dir, write_params
from netunits.files import read_csv
from stages import extract_features, finetune_decomposed, influential_filters, prepare_data, rof_sweep, train

pytestmark = pytest.mark.slow
CURVE, METRICS = "artifacts/finetune/curve.csv", "artifacts/metrics/finetune.json"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """The stages finetune_decomposed reads, run once with the tiny params (one training epoch)."""
    folder = tmp_path_factory.mktemp("finetune_upstream")
    write_params(folder, tiny_params(train={"epochs": 1}))
    with working_dir(folder):
        for stage in (prepare_data, train, extract_features, rof_sweep, influential_filters):
            assert run_main(stage.main) == 0, stage.__name__
    return folder


@pytest.fixture
def run(upstream, tmp_path, monkeypatch):
    for name in ("data", "artifacts"):
        shutil.copytree(upstream / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def finetune_params(**finetune):
    return tiny_params(train={"epochs": 1}, finetune=finetune)


def test_epoch_zero_is_todays_decomposed_accuracy_and_the_run_is_seeded(run):
    influence = json.loads((run / "artifacts/metrics/influence.json").read_text())
    for k in (5, 10):
        write_params(run, finetune_params(k=k, epochs=2, lr=1e-3))
        assert run_main(finetune_decomposed.main) == 0
        metrics = json.loads((run / METRICS).read_text())
        assert metrics["accuracy_before"] == influence["by_k"][str(k)]["accuracy_decomposed"]
        assert metrics["accuracy_full"] == influence["accuracy_full"]
    curve = read_csv(run / CURVE, numeric=False)          # no training loss before training
    assert curve["epoch"] == ["0", "1", "2"] and curve["train_loss"][0] == "" and float(curve["train_loss"][2]) > 0
    assert len(set(curve["full_accuracy"])) == 1
    assert metrics["train_images"] == 300
    assert metrics["accuracy_after"] == pytest.approx(float(curve["test_accuracy"][-1]), abs=1e-6)
    assert metrics["loss_after"] != metrics["loss_before"]             # training changed the network
    first = (run / METRICS).read_bytes()
    assert run_main(finetune_decomposed.main) == 0
    assert (run / METRICS).read_bytes() == first
    write_params(run, finetune_params(k=10, epochs=2, lr=1e-3, seed=1))
    assert run_main(finetune_decomposed.main) == 0
    assert json.loads((run / METRICS).read_text())["loss_after"] != metrics["loss_after"]


def test_a_training_sample_is_seeded_and_smaller(run):
    write_params(run, finetune_params(train_size=100))
    assert run_main(finetune_decomposed.main) == 0
    assert json.loads((run / METRICS).read_text())["train_images"] == 100


@pytest.mark.parametrize("finetune,message", [
    ({"k": 7}, "error: params.yaml: 'finetune.k' is 7; it must be one of influence.k whose class sets the "
               "influential_filters stage wrote (5, 10, 15, 20, 25, 30, 35)\n"),
    ({"lr": 0}, "error: params.yaml: 'finetune.lr' is 0; it must be a number in (0, 1]\n"),
    ({"train_size": 1}, "error: params.yaml: 'finetune.train_size' is 1; it must be all or an integer >= 2\n"),
    ({"batch_size": 299}, "error: params.yaml: 'finetune.batch_size' is 299, which leaves a last batch of one of "
                          "the 300 training images; pick another batch size\n"),
])
def test_bad_params_are_one_line_and_write_nothing(run, capsys, finetune, message):
    write_params(run, finetune_params(**finetune))
    assert run_main(finetune_decomposed.main) == 2
    assert capsys.readouterr().err == message
    assert not (run / CURVE).exists() and not (run / METRICS).exists()
