"""EMA of weights: the average by hand, fp32 shadows, swapping in and out bit for bit, resume."""

import io

import pytest
import torch
from torch import nn

from kagglekit.models.pair_model import build_model
from kagglekit.train.ema import EMA

pytestmark = pytest.mark.compat  # EMA is plain torch; the PairModel part also runs under transformers 4.x


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 1))
    model.register_buffer("stat", torch.arange(3.0))
    return model


def state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bitwise(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_constant_parameters_leave_the_shadow_equal_to_them():
    model = small_model()
    ema = EMA(model, decay=0.9)
    for _ in range(5):
        ema.update(model)
    for name, p in model.named_parameters():
        assert torch.equal(ema.shadow[name], p.detach()), name
    assert ema.num_updates == 5


def test_two_updates_of_a_changing_parameter_by_hand():
    param = nn.Parameter(torch.tensor([1.0, -2.0, 4.0]))
    model = nn.Module()
    model.w = param
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        param.copy_(torch.tensor([2.0, 0.0, 1.0]))
    ema.update(model)  # 0.9 * [1, -2, 4] + 0.1 * [2, 0, 1] = [1.1, -1.8, 3.7]
    with torch.no_grad():
        param.copy_(torch.tensor([0.0, 1.0, -1.0]))
    ema.update(model)  # 0.9 * [1.1, -1.8, 3.7] + 0.1 * [0, 1, -1] = [0.99, -1.52, 3.23]
    torch.testing.assert_close(ema.shadow["w"], torch.tensor([0.99, -1.52, 3.23]), rtol=0, atol=1e-6)


def test_warmup_uses_the_num_updates_rule():
    model = nn.Module()
    model.w = nn.Parameter(torch.zeros(2))
    ema = EMA(model, decay=0.999, warmup=True)
    expected = []
    for n in range(3):
        expected.append(min(0.999, (1 + n) / (10 + n)))
        assert ema.current_decay() == pytest.approx(expected[-1])
        with torch.no_grad():
            model.w.fill_(n + 1.0)
        ema.update(model)
    s = 0.0
    for n, d in enumerate(expected):
        s = d * s + (1 - d) * (n + 1.0)
    torch.testing.assert_close(ema.shadow["w"], torch.full((2,), s), rtol=0, atol=1e-6)
    assert EMA(model, decay=0.5, warmup=True).current_decay() == pytest.approx(0.1)  # min(0.5, 1/10)


def test_decay_zero_copies_the_parameters():
    model = small_model()
    ema = EMA(model, decay=0.0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0).add_(0.123)
    ema.update(model)
    for name, p in model.named_parameters():
        assert torch.equal(ema.shadow[name], p.detach()), name


def test_frozen_and_buffers_are_not_averaged_and_fp16_keeps_fp32_shadows():
    model = small_model().half()
    model[1].weight.requires_grad_(False)
    ema = EMA(model, decay=0.5)
    assert "0.weight" in ema.shadow and "1.weight" not in ema.shadow and "stat" not in ema.shadow
    assert all(s.dtype == torch.float32 for s in ema.shadow.values())
    before = ema.shadow["0.weight"].clone()
    with torch.no_grad():
        model[0].weight.add_(0.001)  # far below fp16 resolution of the average, but not of fp32
    ema.update(model)
    expected = 0.5 * before + 0.5 * model[0].weight.float()
    torch.testing.assert_close(ema.shadow["0.weight"], expected, rtol=0, atol=1e-7)


def test_a_parameter_unfrozen_later_joins_the_average():
    model = small_model()
    model[2].weight.requires_grad_(False)
    ema = EMA(model, decay=0.9)
    model[2].weight.requires_grad_(True)
    ema.update(model)
    assert torch.equal(ema.shadow["2.weight"], model[2].weight.detach())


def test_apply_to_swaps_the_average_in_and_restores_bit_for_bit():
    model = small_model()
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    ema.update(model)
    training = state(model)
    with ema.apply_to(model) as inside:
        assert inside is model
        for name, p in model.named_parameters():
            assert torch.equal(p.detach(), ema.shadow[name]), name
        assert torch.equal(model.stat, training["stat"])  # buffers untouched
    assert_bitwise(state(model), training)
    with pytest.raises(RuntimeError, match="boom"):
        with ema.apply_to(model):
            raise RuntimeError("boom")
    assert_bitwise(state(model), training)


def test_apply_to_on_a_pair_model(tiny_bert):
    model, _ = build_model(tiny_bert)
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    ema.update(model)
    training = state(model)
    with ema.apply_to(model):
        w = model.backbone.embeddings.word_embeddings.weight
        assert torch.equal(w, ema.shadow["backbone.embeddings.word_embeddings.weight"])
        assert not torch.equal(w, training["backbone.embeddings.word_embeddings.weight"])
    assert_bitwise(state(model), training)


def test_state_dict_round_trip_through_weights_only_load():
    model = small_model()
    ema = EMA(model, decay=0.8, warmup=True)
    for step in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * (step + 1))
        ema.update(model)
    buffer = io.BytesIO()
    torch.save(ema.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)

    resumed = EMA(small_model(seed=1), decay=0.8, warmup=True)
    resumed.load_state_dict(loaded)
    assert resumed.num_updates == 3
    assert_bitwise(resumed.shadow, ema.shadow)
    ema.update(model)
    resumed.update(model)  # resumed and uninterrupted continue identically
    assert_bitwise(resumed.shadow, ema.shadow)


def test_bad_input_raises_naming_the_problem():
    model = small_model()
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.5)
    ema = EMA(model)
    with pytest.raises(ValueError, match="no shadow"):
        ema.load_state_dict({"num_updates": 1, "shadow": {}})
    with pytest.raises(ValueError, match="shape"):
        ema.load_state_dict({"num_updates": 1, "shadow": {k: torch.zeros(1) for k in ema.shadow}})
    other = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ValueError, match="no parameter .1.weight."):
        with ema.apply_to(other):
            pass
