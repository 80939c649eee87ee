"""Losses by name and weighted sums: every value checked against a formula written out by hand."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from kagglekit.losses import LOSSES, check_loss_output, get_loss

pytestmark = pytest.mark.compat  # also under transformers 4.x (make test)

LOGITS = [0.3, -1.2, 2.0, 0.0, -0.4, 1.1]
LABELS = [0.5, 0.0, 1.0, 0.25, 0.25, 0.75]


def _t(values):
    return torch.tensor(values, dtype=torch.float32)


def _sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, dtype=np.float64)))


def _bce_by_hand(logits, labels):
    p, y = _sigmoid(logits), np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _mse_by_hand(logits, labels):
    return float(np.mean((np.asarray(logits, dtype=np.float64) - np.asarray(labels, dtype=np.float64)) ** 2))


def test_mse_and_bce_by_hand():
    assert get_loss("mse").fn(_t(LOGITS), _t(LABELS)).item() == pytest.approx(_mse_by_hand(LOGITS, LABELS), abs=1e-6)
    assert get_loss("bce").fn(_t(LOGITS), _t(LABELS)).item() == pytest.approx(_bce_by_hand(LOGITS, LABELS), abs=1e-6)
    assert (get_loss("mse").activation, get_loss("bce").activation) == ("identity", "sigmoid")


def test_huber_both_branches_by_hand():
    logits, labels = _t([0.2, 3.0, -1.5]), _t([0.0, 0.0, 0.5])  # differences 0.2, 3.0, -2.0
    # delta 1: 0.5 * 0.2² = 0.02 (quadratic); 1 * (3 - 0.5) = 2.5 and 1 * (2 - 0.5) = 1.5 (linear)
    assert get_loss("huber").fn(logits, labels).item() == pytest.approx((0.02 + 2.5 + 1.5) / 3, abs=1e-6)
    # delta 2.5: 0.02 and 0.5 * 2² = 2.0 (quadratic); 2.5 * (3 - 1.25) = 4.375 (linear)
    loss = get_loss("huber", huber_delta=2.5)
    assert loss.fn(logits, labels).item() == pytest.approx((0.02 + 4.375 + 2.0) / 3, abs=1e-6)
    assert (loss.name, loss.activation, loss.outputs) == ("huber", "identity", ("single",))
    with pytest.raises(ValueError, match=r"huber_delta=0: the Huber loss's threshold must be > 0; 1.0 is usual"):
        get_loss("huber", huber_delta=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pearson_is_one_minus_scipy_pearsonr(seed):
    rng = np.random.default_rng(seed)
    labels = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], size=16)
    logits = labels * 3 + rng.normal(size=16)
    loss = get_loss("pearson")
    expected = 1 - pearsonr(logits, labels)[0]
    assert loss.fn(_t(logits), _t(labels)).item() == pytest.approx(expected, abs=1e-6)
    assert loss.activation == "identity"  # alone: on the raw outputs
    # half-precision logits (autocast) are computed in fp32
    value = loss.fn(_t(logits).to(torch.bfloat16), _t(labels))
    assert value.dtype == torch.float32


@pytest.mark.parametrize(
    "logits, labels",
    [
        ([0.3, -1.0, 2.0, 0.5], [0.7, 0.7, 0.7, 0.7]),  # constant labels (0.7: the mean rounds in fp32)
        ([0.1, 0.1, 0.1], [0.0, 0.5, 1.0]),  # constant predictions
        ([0.4], [1.0]),  # a batch of one row
    ],
)
def test_pearson_of_a_constant_batch_is_one_with_a_finite_gradient(logits, labels):
    logits = _t(logits).requires_grad_(True)
    for name in ("pearson", "mse+pearson", "bce+pearson"):
        value = get_loss(name).fn(logits, _t(labels))
        (grad,) = torch.autograd.grad(value, logits)
        assert torch.isfinite(grad).all() and math.isfinite(value.item())
    loss = get_loss("pearson").fn(logits, _t(labels))
    assert loss.item() == 1.0  # r is undefined there: taken as 0, no signal
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_weighted_sums_by_hand():
    logits, labels = np.array(LOGITS), np.array(LABELS)
    # with bce the pearson term is on the predictions, sigmoid(logits), not on the raw logits
    loss = get_loss("bce+0.5*pearson")
    expected = _bce_by_hand(logits, labels) + 0.5 * (1 - pearsonr(_sigmoid(logits), labels)[0])
    on_logits = _bce_by_hand(logits, labels) + 0.5 * (1 - pearsonr(logits, labels)[0])
    assert abs(expected - on_logits) > 1e-3  # the data tell the two apart
    assert loss.fn(_t(logits), _t(labels)).item() == pytest.approx(expected, abs=1e-6)
    assert (loss.name, loss.activation, loss.outputs) == ("bce+0.5*pearson", "sigmoid", ("single",))
    # with mse, on the raw outputs
    loss = get_loss(" 0.7 * mse + 0.3*pearson ")
    expected = 0.7 * _mse_by_hand(logits, labels) + 0.3 * (1 - pearsonr(logits, labels)[0])
    assert loss.fn(_t(logits), _t(labels)).item() == pytest.approx(expected, abs=1e-6)
    assert (loss.name, loss.activation) == ("0.7*mse+0.3*pearson", "identity")
    # options reach the terms of a sum; the canonical name reads back to the same loss
    loss = get_loss("huber+2*pearson", huber_delta=0.5)
    d = np.abs(logits - labels)
    huber = np.mean(np.where(d <= 0.5, 0.5 * d**2, 0.5 * (d - 0.25)))
    expected = huber + 2 * (1 - pearsonr(logits, labels)[0])
    assert loss.fn(_t(logits), _t(labels)).item() == pytest.approx(expected, abs=1e-6)
    assert get_loss(loss.name, huber_delta=0.5).fn(_t(logits), _t(labels)).item() == pytest.approx(expected, abs=1e-6)
    assert get_loss(loss) is loss


def test_sums_of_distribution_losses_train_classes_and_bins():
    loss = get_loss("ce+0.5*kl")
    assert loss.outputs == ("classes", "bins") and loss.activation == "expected"
    check_loss_output(loss, "bins")
    with pytest.raises(ValueError, match=r"'ce\+0.5\*kl' does not train output='single'"):
        check_loss_output(loss, "single")
    assert sorted(name for name, other in LOSSES.items() if "single" in other.outputs) == ["bce", "huber", "mse", "pearson"]


VALID = r"Valid losses are \['bce', 'ce', 'huber', 'kl', 'mse', 'pearson'\]"


@pytest.mark.parametrize(
    "spec, problem",
    [
        ("bce+", r"empty term"),
        ("pearsn", r"unknown loss 'pearsn'"),
        ("bce+0.5*pearsn", r"unknown loss 'pearsn' in term '0.5\*pearsn'"),
        ("x*mse", r"weight 'x' in term 'x\*mse' is not a number"),
        ("0*mse", r"weight 0.0 in term '0\*mse' must be a positive number"),
        ("0.5*", r"term '0.5\*' has no loss name"),
        ("0.5*0.3*mse", r"term '0.5\*0.3\*mse' is not of the form \[weight\*\]name"),
        ("mse+0.5*mse", r"'mse' appears twice"),
    ],
)
def test_malformed_specs_name_the_bad_part_and_list_the_losses(spec, problem):
    with pytest.raises(ValueError, match=problem + r".*" + VALID):
        get_loss(spec)


def test_terms_must_share_an_output_and_an_activation():
    with pytest.raises(ValueError, match=r"'bce\+mse': its terms predict differently \(bce through sigmoid, mse through identity\)"):
        get_loss("bce+mse")
    with pytest.raises(ValueError, match=r"'bce\+ce': its terms train different outputs \(bce: \['single'\], ce: \['classes', 'bins'\]\)"):
        get_loss("bce+ce")
    with pytest.raises(ValueError, match=r"'ce\+pearson': its terms train different outputs"):
        get_loss("ce+pearson")
    with pytest.raises(TypeError, match=r"got int 3"):
        get_loss(3)
