"""Output kinds (single, classes, soft-label bins) and their losses: exact values computed by hand."""

import math

import numpy as np
import pytest
import torch

from kagglekit.losses import activate, check_loss_output, default_loss, get_loss
from kagglekit.targets import Target, make_target

pytestmark = pytest.mark.compat  # also under transformers 4.x (make test)

CENTRES = (0.0, 0.25, 0.5, 0.75, 1.0)


def test_bins_split_a_label_between_its_two_centres():
    target = make_target("bins", [0.0, 1.0], num_bins=5, label_range=(0.0, 1.0))
    assert target.values == CENTRES and target.num_outputs == 5
    dist = target.encode(torch.tensor([0.6, 0.0, 1.0, 0.25]))
    expected = torch.tensor([
        [0, 0, 0.6, 0.4, 0],  # 0.6 = 0.6 * 0.5 + 0.4 * 0.75
        [1, 0, 0, 0, 0],
        [0, 0, 0, 0, 1],
        [0, 1, 0, 0, 0],
    ], dtype=torch.float32)
    torch.testing.assert_close(dist, expected, rtol=0, atol=1e-6)


def test_bins_keep_the_label_as_expected_value():
    target = make_target("bins", [-2.0, 3.0], num_bins=7)  # no finite recipe range: the labels' range
    assert target.values[0] == -2.0 and target.values[-1] == 3.0
    labels = torch.linspace(-2, 3, 101)
    dist = target.encode(labels)
    torch.testing.assert_close(dist.sum(-1), torch.ones(101), rtol=0, atol=1e-6)
    assert (dist >= 0).all() and ((dist > 0).sum(-1) <= 2).all()
    torch.testing.assert_close(dist @ torch.tensor(target.values), labels, rtol=0, atol=1e-5)


def test_classes_are_one_hot_on_the_distinct_labels():
    target = make_target("classes", [0.5, 0.0, 1.0, 0.5])
    assert target.values == (0.0, 0.5, 1.0)
    assert torch.equal(target.encode(torch.tensor([1.0, 0.0])), torch.tensor([[0.0, 0, 1], [1, 0, 0]]))
    with pytest.raises(ValueError, match=r"label\(s\) \[0.25\] are not among the classes \[0.0, 0.5, 1.0\]"):
        target.encode(torch.tensor([0.25]))
    with pytest.raises(ValueError, match=r"101 distinct values .* needs output=bins"):
        make_target("classes", np.arange(101))
    with pytest.raises(ValueError, match=r"config key 'output': unknown value 'multi'"):
        make_target("multi", [0, 1])


def test_target_round_trips_through_meta():
    target = make_target("bins", [0, 1], num_bins=3, label_range=(0, 1))
    assert Target.from_meta(target.to_meta()) == target
    assert Target.from_meta(None) == Target()  # folders written before outputs existed
    assert torch.equal(Target().encode(torch.tensor([0.3])), torch.tensor([0.3]))


def test_expected_value_prediction_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [2.0, 2.0]])
    preds = activate(logits, "expected", [0.0, 1.0])
    torch.testing.assert_close(preds, torch.tensor([0.75, 0.5]), rtol=0, atol=1e-6)


def test_soft_ce_and_kl_by_hand():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]])
    target = torch.tensor([[0.2, 0.8, 0.0], [0.0, 0.5, 0.5]])
    logp = torch.log_softmax(logits, -1)
    ce_by_hand = -(0.2 * logp[0, 0] + 0.8 * logp[0, 1] + 0.5 * logp[1, 1] + 0.5 * logp[1, 2]) / 2
    assert get_loss("ce").fn(logits, target).item() == pytest.approx(ce_by_hand.item(), abs=1e-6)
    # KL = CE - entropy(target)
    entropy = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8) + 2 * 0.5 * math.log(0.5)) / 2
    assert get_loss("kl").fn(logits, target).item() == pytest.approx(ce_by_hand.item() - entropy, abs=1e-6)
    # one-hot soft CE is the usual cross-entropy; KL is zero at the target
    onehot = torch.tensor([[0.0, 1, 0], [0, 0, 1]])
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([1, 2]))
    assert get_loss("ce").fn(logits, onehot).item() == pytest.approx(expected.item(), abs=1e-6)
    assert get_loss("kl").fn(torch.log(target + 1e-12), target).item() == pytest.approx(0.0, abs=1e-6)


def test_losses_fit_their_outputs():
    assert default_loss("single", (0.0, 1.0)) == "bce"
    assert default_loss("single", (0.0, 5.0)) == "mse"
    assert default_loss("bins", (0.0, 1.0)) == "ce"
    check_loss_output(get_loss("kl"), "bins")
    with pytest.raises(ValueError, match=r"'bce' does not train output='classes'; use one of \['ce', 'kl'\]"):
        check_loss_output(get_loss("bce"), "classes")
