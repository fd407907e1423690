"""The shared training loop: it learns, it is deterministic, and it validates its inputs."""
import numpy as np
import pytest

from tinyvision.data import random_shift
from tinyvision.models import SmallCNN
from tinyvision.training import accuracy, train_classifier


def toy_set(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32) * 0.3
    y = rng.integers(0, 2, n)
    x[y == 1, :, :4, :] += 1.0
    return x, y


def test_train_classifier_learns_and_reports_history():
    x, y = toy_set()
    model = SmallCNN(img_size=8, num_classes=2, width=4, seed=0)
    before = accuracy(model, x, y)
    hist = train_classifier(model, x, y, epochs=8, batch_size=16, lr=1e-2, x_val=x, y_val=y, val_every=4)
    assert len(hist.loss) == 8 * 4 and hist.val_steps == [16, 32]
    assert before < 0.8 and hist.val_accuracy[-1] >= 0.95
    assert np.mean(hist.loss[-4:]) < 0.5 * np.mean(hist.loss[:4])


def test_train_classifier_is_deterministic_given_the_seed():
    x, y = toy_set()
    runs = []
    for _ in range(2):
        model = SmallCNN(img_size=8, num_classes=2, width=4, seed=1)
        runs.append(train_classifier(model, x, y, epochs=2, batch_size=16, lr=1e-2, seed=3,
                                     augment=lambda xb, rng: random_shift(xb, rng, 1)).loss)
    assert runs[0] == runs[1]


def test_train_classifier_refuses_misaligned_data():
    x, y = toy_set()
    with pytest.raises(ValueError, match="x has 64 examples but y has 63"):
        train_classifier(SmallCNN(num_classes=2, seed=0), x, y[:-1], epochs=1)


def test_first_step_uses_the_smallest_warm_up_learning_rate(monkeypatch):
    """The schedule sets step k's learning rate before step k: warm-up starts small, not at full lr."""
    from tinyvision.optim import AdamW
    used = []
    original = AdamW.step

    def spy(self):
        used.append(self.param_groups[0]["lr"])
        original(self)
    monkeypatch.setattr(AdamW, "step", spy)
    x, y = toy_set()
    train_classifier(SmallCNN(img_size=8, num_classes=2, width=4, seed=0), x, y, epochs=4, batch_size=16, lr=1e-2,
                     warmup_fraction=0.25)
    assert used[0] == pytest.approx(1e-2 / 4)          # step 0 of a 4-step warm-up
    assert used[3] == pytest.approx(1e-2) and max(used) <= 1e-2 + 1e-12
