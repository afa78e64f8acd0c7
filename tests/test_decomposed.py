"""The decomposed network and its fine-tuning (netunits/decomposed.py) on a tiny CIFAR ResNet."""
import pytest
import torch

from netunits.activations import pooled_features
from netunits.decomposed import decompose, evaluate_decomposed, finetune
from netunits.errors import PipelineError
from netunits.methods import influence
from netunits.models.cifar_resnet import cifar_resnet

DEVICE = torch.device("cpu")
RUN = {"device": DEVICE, "precision": "fp32"}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny():
    """A ResNet8 (one block per stage, 64 pooled units) on 8 x 8 images, 4 classes, and the class
    sets (k = 3) from its pooled features on the training images."""
    torch.manual_seed(0)
    model = cifar_resnet(8)
    model.fc = torch.nn.Linear(64, 4)
    model.eval()
    generator = torch.Generator().manual_seed(1)
    train = {"images": torch.randint(0, 256, (48, 3, 8, 8), generator=generator, dtype=torch.uint8),
             "labels": torch.arange(48) % 4}
    test = {"images": torch.randint(0, 256, (40, 3, 8, 8), generator=generator, dtype=torch.uint8),
            "labels": torch.arange(40) % 4}
    features, _ = pooled_features(model, train["images"], ["avgpool"], 16, DEVICE, "fp32")
    sets, _ = influence.class_sets(features["avgpool"], train["labels"], 4, 3, 3)
    return model, sets, train, test


def todays_decomposed_accuracy(model, sets, test):
    """The influential_filters stage's number: extracted pooled features, decomposed_logits."""
    features, _ = pooled_features(model, test["images"], ["avgpool"], 10, DEVICE, "fp32")
    mask = influence.membership(sets, 64)
    logits = influence.decomposed_logits(features["avgpool"], model.fc.weight.detach(), model.fc.bias.detach(), mask)
    return influence.accuracy(logits, test["labels"]), logits


def test_before_fine_tuning_it_is_todays_decomposed_accuracy():
    model, sets, train, test = tiny()
    expected, logits = todays_decomposed_accuracy(model, sets, test)
    network, history = finetune(model, sets, train, test, epochs=0, batch_size=8, lr=1e-3, seed=0,
                                eval_batch_size=10, **RUN)
    assert history == [{"epoch": 0, "test_accuracy": expected, "test_loss": pytest.approx(history[0]["test_loss"]),
                        "full_accuracy": history[0]["full_accuracy"]}]
    assert history[0]["test_accuracy"] == expected
    full, _ = todays_decomposed_accuracy(model, torch.arange(64).expand(4, 64), test)
    assert history[0]["full_accuracy"] == full
    # the head's own fp32 forward (the one training uses) gives the same logits up to rounding
    features, _ = pooled_features(model, test["images"], ["avgpool"], 10, DEVICE, "fp32")
    with torch.no_grad():
        assert torch.allclose(network.fc(features["avgpool"]).double(), logits, atol=1e-5)
    assert network.fc.weight.shape == (4, 3)
    assert torch.equal(network.fc.full_weight() != 0, influence.membership(sets, 64) & (model.fc.weight != 0))


def test_one_epoch_changes_the_weights_and_is_seeded():
    model, sets, train, test = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run = dict(epochs=1, batch_size=8, lr=1e-2, eval_batch_size=10, **RUN)
    a, history = finetune(model, sets, train, test, seed=0, **run)
    b, _ = finetune(model, sets, train, test, seed=0, **run)
    c, _ = finetune(model, sets, train, test, seed=1, **run)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())     # the model is a copy
    state_a, state_b, state_c = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert not torch.equal(state_a["conv1.weight"], state_c["conv1.weight"])
    assert not torch.equal(state_a["conv1.weight"], before["conv1.weight"])
    assert not torch.equal(state_a["fc.weight"], model.fc.weight.gather(1, sets))
    assert [h["epoch"] for h in history] == [0, 1] and history[1]["train_loss"] > 0
    assert history[1]["test_accuracy"] == evaluate_decomposed(a, test, batch_size=10, **RUN)[0]


def test_bad_sets_are_one_line():
    model, sets, *_ = tiny()
    with pytest.raises(PipelineError, match="influence.k.*unit 64.*0 to 63"):
        decompose(model, torch.full((4, 3), 64))
    with pytest.raises(PipelineError, match="4 rows"):
        decompose(model, sets[:3])
    with pytest.raises(PipelineError, match="twice"):
        decompose(model, torch.zeros(4, 2, dtype=torch.int64))
