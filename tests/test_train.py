"""The fit/evaluate loop: the loss contract, schedules, the non-finite guard, devices."""

import pytest
import torch
from torch import nn

from lessons_pkg import data, train


class CountObjects(nn.Module):
    """A tiny model in the contract: regresses the number of objects from mean colours."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, images, targets=None):
        counts = self.linear(images.mean(dim=(2, 3))).squeeze(1)
        if self.training:
            truth = torch.tensor([len(t["labels"]) for t in targets], dtype=torch.float32, device=images.device)
            return {"loss_count": ((counts - truth) ** 2).mean(), "loss_zero": counts.sum() * 0}
        return [{"count": c} for c in counts]


@pytest.fixture(scope="module")
def loader():
    return train.make_loader(data.ShapesDataset(16, seed=0), batch_size=4)


def test_fit_logs_every_interval_and_reduces_the_loss(loader, device):
    model = CountObjects()
    history = train.fit(model, loader, steps=60, lr=0.05, log_every=10, progress=False, device=device)
    assert history.steps == [10, 20, 30, 40, 50, 60]
    assert set(history.losses) == {"loss_count", "loss_zero", "total"}
    assert history.losses["total"][-1] < history.losses["total"][0]
    assert history.seconds > 0 and len(history.lr) == 6
    assert not model.training  # fit leaves the model in eval mode


def test_fit_is_reproducible_with_a_seed(loader):
    def run(seed):
        torch.manual_seed(0)  # the same initial weights
        return train.fit(CountObjects(), loader, steps=12, seed=seed, progress=False, device="cpu").losses

    assert run(3) == run(3)
    assert run(3) != run(4)  # the seed drives the batch order


def test_history_continues_and_last_partial_interval_is_logged(loader):
    model = CountObjects()
    history = train.fit(model, loader, steps=15, log_every=10, progress=False, device="cpu")
    assert history.steps == [10, 15]
    history = train.fit(model, loader, steps=5, log_every=10, progress=False, device="cpu", history=history)
    assert history.steps == [10, 15, 20]


def test_frozen_parameters_do_not_move(loader):
    model = CountObjects()
    model.linear.bias.requires_grad_(False)
    before = model.linear.bias.clone()
    train.fit(model, loader, steps=5, progress=False, device="cpu")
    assert torch.equal(model.linear.bias, before)
    model.linear.weight.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter with requires_grad"):
        train.fit(model, loader, steps=1, progress=False, device="cpu")


def test_non_finite_loss_stops_with_a_clear_message(loader):
    class Exploding(CountObjects):
        def forward(self, images, targets=None):
            return {"loss_bad": self.linear.weight.sum() * float("nan")}

    with pytest.raises(FloatingPointError, match=r"loss is not finite at step 1 \(total=nan: loss_bad=nan"):
        train.fit(Exploding(), loader, steps=10, log_every=2, progress=False, device="cpu")


class WithBatchNorm(torch.nn.Module):
    """A BatchNorm, then a linear layer; its loss turns NaN from step ``bad_step`` on (or its
    gradient, with ``where="grad"``)."""

    def __init__(self, bad_step, where="loss"):
        super().__init__()
        self.norm, self.linear = torch.nn.BatchNorm2d(3), torch.nn.Linear(3, 1)
        self.bad_step, self.where, self.calls = bad_step, where, 0

    def forward(self, images, targets=None):
        self.calls += 1
        features = self.norm(torch.stack(list(images)) if isinstance(images, list) else images).mean(dim=(2, 3))
        loss = self.linear(features).pow(2).mean()
        if self.calls >= self.bad_step:
            if self.where == "loss":
                loss = loss * float("nan")
            else:  # a finite loss whose gradient is not: sqrt at 0
                loss = loss + (self.linear.weight.sum() * 0).sqrt()
        return {"loss_a": loss, "loss_b": loss.detach() * 0}


@pytest.mark.parametrize("where", ["loss", "grad"])
def test_first_non_finite_step_is_not_taken_and_the_model_keeps_its_last_finite_state(loader, where):
    """Stops at the exact step (not the next logging step), names it and the loss terms, and
    leaves the weights and BatchNorm statistics of the step before, in eval mode."""
    torch.manual_seed(0)
    reference = WithBatchNorm(bad_step=10**9)
    torch.manual_seed(0)
    model = WithBatchNorm(bad_step=4, where=where)
    train.fit(reference, loader, steps=3, log_every=10, progress=False, device="cpu", schedule="constant")
    with pytest.raises(FloatingPointError, match=rf"not finite at step 4 .*loss_a=.*loss_b="):
        train.fit(model, loader, steps=10, log_every=10, progress=False, device="cpu", schedule="constant")
    assert not model.training
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.isfinite(a.float()).all(), name
        torch.testing.assert_close(a, b, msg=name)


def test_a_nan_pixel_is_refused_before_batchnorm_changes():
    images = torch.rand(4, 3, 16, 16)
    images[2, 1, 5, 5] = float("nan")
    model = WithBatchNorm(bad_step=10**9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"step 1: .*image 2 holds 1 non-finite value"):
        train.fit(model, [(images, [{}] * 4)], steps=2, progress=False, device="cpu")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_model_that_returns_no_loss_dict_is_named(loader):
    class Wrong(CountObjects):
        def forward(self, images, targets=None):
            return self.linear(images.mean(dim=(2, 3))).sum()

    with pytest.raises(TypeError, match="dict of named losses"):
        train.fit(Wrong(), loader, steps=1, progress=False, device="cpu")


@pytest.mark.parametrize("schedule, expected_last", [("constant", 1.0), ("cosine", 0.0), ("linear", 0.0)])
def test_schedules(schedule, expected_last):
    factors = [train.lr_factor(schedule, s, 101, warmup_steps=10) for s in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(expected_last, abs=0.02)
    with pytest.raises(ValueError, match="unknown schedule"):
        train.lr_factor("step", 50, 100, 0)


def test_bad_arguments(loader):
    with pytest.raises(ValueError, match="steps must be >= 1"):
        train.fit(CountObjects(), loader, steps=0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        train.fit(CountObjects(), loader, steps=1, optimizer="lion", progress=False, device="cpu")
    empty = train.make_loader(data.ShapesDataset(0), batch_size=2, shuffle=False)
    with pytest.raises(ValueError, match="yields no batches"):
        train.fit(CountObjects(), empty, steps=1, progress=False, device="cpu")


def test_evaluate_returns_predictions_on_cpu_and_restores_mode(loader, device):
    model = CountObjects().to(device).train()
    predictions, targets = train.evaluate(model, loader, device=device)
    assert len(predictions) == len(targets) == 16
    assert predictions[0]["count"].device.type == "cpu" and model.training
    score = train.evaluate(model, loader, device=device, metric=lambda p, t: {"n": len(p)})
    assert score == {"n": 16}


def test_move_to_and_device():
    moved = train.move_to({"a": [torch.ones(1)], "b": 3}, torch.device("cpu"))
    assert moved["b"] == 3 and torch.equal(moved["a"][0], torch.ones(1))
    assert train.default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
