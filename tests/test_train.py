"""train and netunits.training: the recipe, its history and checkpoint, seeding, a diverging
loss, other architectures and weights files."""
import json

import torch

from conftest import run_main, tiny_params, write_params
from netunits import training as train
from netunits.accel.optimizer import step_in_backward
from netunits.errors import PipelineError
from netunits.models.registry import build_model, load_checkpoint
from netunits.runtime import seed_everything
from stages import train as train_stage
from stages import train_log as train_log_stage


def tiny_model_and_data(project):
    subsets = {name: torch.load(f"data/prepared/{name}.pt", weights_only=True) for name in ("train", "test")}
    seed_everything(0)
    return build_model("resnet18", 10), subsets


def run_training(project, **overrides):
    model, subsets = tiny_model_and_data(project)
    settings = dict(epochs=1, batch_size=50, lr=1e-3, lr_schedule="constant", seed=0, device=torch.device("cpu"),
                    precision="fp32",
                    eval_batch_size=100)
    settings.update(overrides)
    history = train.train_model(model, subsets["train"], subsets["test"], **settings)
    return model, history


def test_training_is_seeded(project):
    first, history_a = run_training(project)
    second, history_b = run_training(project)
    assert history_a == history_b
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name


def test_no_uninitialised_memory_is_read(project):
    """seed_everything turns off deterministic mode's NaN-filling of new tensors (a whole pass
    over every activation); that is safe only if nothing reads memory before writing it. With
    the filling on, any such read would put NaN into the weights; here both train the same bits
    (bf16, which takes the matrix-product convolutions and the max-pool's stand-in)."""
    trained = {}
    for fill in (False, True):
        model, subsets = tiny_model_and_data(project)
        assert torch.utils.deterministic.fill_uninitialized_memory is False   # seed_everything's choice
        torch.utils.deterministic.fill_uninitialized_memory = fill
        try:
            history = train.train_model(model, subsets["train"], subsets["test"], epochs=1, batch_size=50, lr=1e-3,
                                        lr_schedule="constant", seed=0, device=torch.device("cpu"),
                                        precision="bf16", eval_batch_size=100)
        finally:
            torch.utils.deterministic.fill_uninitialized_memory = False
        trained[fill] = (history, model.state_dict())
    assert trained[False][0] == trained[True][0]
    for name, value in trained[False][1].items():
        assert torch.equal(value, trained[True][1][name]), name


def test_training_learns(project):
    _, history = run_training(project, epochs=3, lr=3e-3)
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["train_accuracy"] > 0.3  # 10 classes: chance is 0.1


def test_nan_loss_stops_with_a_clear_error(project):
    model, subsets = tiny_model_and_data(project)
    with torch.no_grad():
        model.fc.bias.fill_(float("nan"))
    try:
        train.train_model(model, subsets["train"], subsets["test"], epochs=1, batch_size=50, lr=1e-3,
                          lr_schedule="constant", seed=0, device=torch.device("cpu"), precision="fp32",
                          eval_batch_size=100)
    except PipelineError as exc:
        assert "the loss became nan at epoch 1, batch 1; no checkpoint written; lower 'train.lr'" in str(exc)
    else:
        raise AssertionError("training went on with a NaN loss")


def test_stage_outputs(project):
    model, checkpoint = load_checkpoint("artifacts/train/model.pt")
    assert checkpoint["image_size"] == 32 and checkpoint["n_classes"] == 10 and model.fc.out_features == 10
    history = (project / "artifacts/train/history.csv").read_text().splitlines()
    assert history[0] == "epoch,loss,train_accuracy,test_accuracy,test_loss" and len(history) == 1 + 2
    metrics = json.loads((project / "artifacts/metrics/train.json").read_text())
    # the history table writes 6 significant digits of the same number
    assert f"{metrics['baseline_accuracy']:.6g}" == history[-1].split(",")[3]
    assert f"{metrics['final_train_loss']:.6g}" == history[-1].split(",")[1]
    assert (checkpoint["arch"], checkpoint["dataset"], checkpoint["in_channels"]) == ("resnet18", "mnist", 3)
    assert checkpoint["input"] == {"channels": 3, "norm": "none", "mean": None, "std": None}


def test_stage_rejects_bad_params_before_training(project, capsys):
    write_params(project, tiny_params(train={"batch_size": 0}))
    (project / "artifacts/train/model.pt").unlink()
    assert run_main(train_stage.main) == 2
    assert capsys.readouterr().err == ("error: params.yaml: 'train.batch_size' is 0; it must be an integer "
                                       "from 2 to 65536\n")
    assert not (project / "artifacts/train/model.pt").exists()


def test_stage_rejects_corrupt_prepared_data(project, capsys):
    data = project / "data/prepared/train.pt"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    assert run_main(train_stage.main) == 2
    assert "data/prepared/train.pt: corrupt or not a prepared subset" in capsys.readouterr().err


def test_learning_rate_schedules():
    lr, n_steps = 0.002, 8
    assert [train.learning_rate(s, n_steps, lr, "constant") for s in range(n_steps)] == [lr] * n_steps
    cosine = [train.learning_rate(s, n_steps, lr, "cosine") for s in range(n_steps)]
    # half a cosine period over the run: full rate first, half at the middle, near 0 (not 0) last
    assert cosine[0] == lr and abs(cosine[4] - lr / 2) < 1e-15
    assert abs(cosine[-1] - lr * (1 + torch.cos(torch.tensor(7 / 8 * torch.pi, dtype=torch.float64))) / 2) < 1e-15
    assert all(a > b > 0 for a, b in zip(cosine, cosine[1:]))


def test_cosine_schedule_reaches_the_optimizer(project, monkeypatch):
    # 2 epochs of 300 images at batch 50: 12 steps, each at its own rate, for every parameter's optimizer
    model, subsets = tiny_model_and_data(project)
    rates = {}
    original_step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        rates.setdefault(id(self), []).append(self.param_groups[0]["lr"])
        return original_step(self, *args, **kwargs)
    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    train.train_model(model, subsets["train"], subsets["test"], epochs=2, batch_size=50, lr=1e-3,
                      lr_schedule="cosine", seed=0, device=torch.device("cpu"), precision="fp32",
                      eval_batch_size=100)
    assert len(rates) == len(list(model.parameters()))
    expected = [train.learning_rate(s, 12, 1e-3, "cosine") for s in range(12)]
    assert all(got == expected for got in rates.values())


def test_step_in_backward_trains_the_same_bits_as_one_optimizer_and_frees_gradients(project):
    subsets = {name: torch.load(f"data/prepared/{name}.pt", weights_only=True) for name in ("train", "test")}
    x = subsets["train"]["images"][:50].float().div(255).expand(-1, 3, -1, -1)
    y = subsets["train"]["labels"][:50]
    torch.manual_seed(0)
    reference, model = build_model("resnet18", 10), build_model("resnet18", 10)
    model.load_state_dict(reference.state_dict())
    joint = torch.optim.Adam(reference.parameters(), lr=1e-2, fused=True)
    optimizers, remove_hooks = step_in_backward(model, 1e-2, torch.device("cpu"))
    for step in range(3):
        rate = 1e-2 / (step + 1)
        joint.param_groups[0]["lr"] = rate
        for optimizer in optimizers:
            optimizer.param_groups[0]["lr"] = rate
        joint.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(reference(x), y).backward()
        joint.step()
        torch.nn.functional.cross_entropy(model(x), y).backward()       # steps as it goes
        assert all(p.grad is None for p in model.parameters())          # each freed once used
        for (name, a), b in zip(reference.state_dict().items(), model.state_dict().values()):
            assert torch.equal(a, b), (step, name)
    remove_hooks()
    before = [p.detach().clone() for p in model.parameters()]
    torch.nn.functional.cross_entropy(model(x), y).backward()            # hooks gone: nothing steps
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is not None for p in model.parameters())


def test_train_model_leaves_no_hooks(project):
    model, _ = run_training(project)
    x = torch.rand(4, 3, 32, 32)
    before = [p.detach().clone() for p in model.parameters()]
    model(x).sum().backward()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_epochs_zero_takes_a_weights_file_as_it_is(project, capsys):
    # the tiny run's weights, read by torchvision's own resnet18: no training, one evaluation
    state = torch.load("artifacts/train/model.pt", weights_only=True)["state_dict"]
    torch.save(state, "weights.pt")
    write_params(project, tiny_params(train={"arch": "torchvision:resnet18", "weights": "weights.pt", "epochs": 0},
                                      compute={"precision": "fp32"}))
    assert run_main(train_stage.main) == 0
    # what it does meanwhile, instead of "training 0 epochs"
    assert capsys.readouterr().out.startswith(
        "train.epochs is 0: evaluating weights.pt as it is (torchvision:resnet18) on cpu (fp32, ")
    assert run_main(train_log_stage.main) == 0
    assert capsys.readouterr().out.startswith(
        "training log: no training (epoch 0: the weights as given), test accuracy ")
    model, checkpoint = load_checkpoint("artifacts/train/model.pt")
    assert checkpoint["arch"] == "torchvision:resnet18" and checkpoint["weights"] == "weights.pt"
    assert all(torch.equal(state[k], v) for k, v in checkpoint["state_dict"].items())
    history = (project / "artifacts/train/history.csv").read_text().splitlines()
    assert len(history) == 2 and history[1].startswith("0,")
    # the project's own resnet18 with the same weights gives the same test accuracy in fp32
    own = build_model("resnet18", 10)
    own.load_state_dict(state)
    test = torch.load("data/prepared/test.pt", weights_only=True)
    accuracy, _ = train.evaluate(own, test, 100, torch.device("cpu"), "fp32")
    assert json.loads((project / "artifacts/metrics/train.json").read_text())["baseline_accuracy"] == accuracy


def test_epochs_zero_needs_weights_and_a_fitting_head(project, capsys):
    write_params(project, tiny_params(train={"epochs": 0}))
    assert run_main(train_stage.main) == 2
    assert capsys.readouterr().err == ("error: params.yaml: 'train.epochs' is 0 but 'train.weights' is null; with no "
                                       "training the model must come from a weights file\n")
    torch.save(build_model("resnet18", 1000).state_dict(), "imagenet_like.pt")
    write_params(project, tiny_params(train={"epochs": 0, "weights": "imagenet_like.pt"}))
    assert run_main(train_stage.main) == 2
    assert "imagenet_like.pt: its final layer does not have 10 classes (mnist)" in capsys.readouterr().err


def test_unknown_architecture_is_refused_before_training(project, capsys):
    write_params(project, tiny_params(train={"arch": "resnet19"}))
    (project / "artifacts/train/model.pt").unlink()
    assert run_main(train_stage.main) == 2
    assert capsys.readouterr().err.startswith("error: params.yaml: 'train.arch' is 'resnet19'; allowed architectures: "
                                              "resnet18, torchvision:resnet18")
    assert not (project / "artifacts/train/model.pt").exists()
