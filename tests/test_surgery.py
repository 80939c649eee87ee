"""Backbone surgery: dropout rates, re-init, freezing, checkpointing and Mixout, checked by numbers and invariants."""

import math
import types

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from kagglekit.models.surgery import (
    SUPPORTED_ARCHS,
    MixLinear,
    apply_mixout,
    apply_surgery,
    dropout_overrides,
    encoder_layers,
    freeze,
    reinit_top_layers,
    set_dropout,
    set_gradient_checkpointing,
)
from kagglekit.testing import TINY_ARCHS

pytestmark = pytest.mark.compat  # surgery runs in Kaggle notebooks, which often have transformers 4.x

# Every tiny arch the kit builds (xlm-roberta, funnel, nezha join as soon as testing.py has them).
ARCHS = [arch for arch in TINY_ARCHS if arch in SUPPORTED_ARCHS]
# Until the kit builds a tiny funnel, a saved random one stands in (funnel's layout differs most).
WITH_FUNNEL = ARCHS if "funnel" in ARCHS else ARCHS + ["funnel-config"]


def load(path, **overrides):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(path), local_files_only=True, **overrides)


def batch(backbone, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, backbone.config.vocab_size, (2, 12), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # one padded row
    return {"input_ids": ids, "attention_mask": mask}


def hidden(backbone, seed=0):
    return backbone(**batch(backbone, seed)).last_hidden_state  # (B, T, H)


def loss_and_grads(backbone):
    out = hidden(backbone)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    loss = (out * weights).sum()
    backbone.zero_grad(set_to_none=True)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in backbone.named_parameters() if p.grad is not None}


def snapshot(backbone):
    return {n: t.detach().clone() for n, t in backbone.state_dict().items()}


def dropout_rates_by_name(backbone):
    return {n: m.p for n, m in backbone.named_modules() if isinstance(m, nn.Dropout)}


@pytest.fixture(scope="module")
def funnel_dir(tmp_path_factory):
    """A saved random funnel encoder (no tokenizer needed): 3 encoder layers in 2 blocks + 2 decoder layers."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(
        "funnel", architectures=["FunnelModel"], vocab_size=100, block_sizes=[1, 2], num_decoder_layers=2,
        d_model=32, n_head=4, d_head=8, d_inner=64,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("funnel")
    AutoModel.from_config(config).save_pretrained(str(path))
    return path


def model_dir(arch, tiny_models, funnel_dir):
    return funnel_dir if arch == "funnel-config" else tiny_models(arch)


# ------------------------------------------------------------------------------------------------
# dropout
# ------------------------------------------------------------------------------------------------

def test_dropout_overrides_know_each_family():
    from transformers import AutoConfig

    assert dropout_overrides(AutoConfig.for_model("bert"), 0, 0) == {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    funnel = AutoConfig.for_model("funnel")
    assert dropout_overrides(funnel, 0.0, 0.2) == {"hidden_dropout": 0.0, "activation_dropout": 0.0, "attention_dropout": 0.2}
    assert dropout_overrides(AutoConfig.for_model("distilbert"), 0.1, 0.0) == {"dropout": 0.1, "attention_dropout": 0.0}
    assert dropout_overrides(AutoConfig.for_model("deberta-v2"), attention=0.05) == {"attention_probs_dropout_prob": 0.05}
    assert dropout_overrides(AutoConfig.for_model("electra")) == {}
    with pytest.raises(ValueError, match=r"'mystery' config has none of the dropout keys.*supported archs: bert"):
        dropout_overrides(types.SimpleNamespace(model_type="mystery"), 0.0)
    with pytest.raises(ValueError, match=r"attention=0.0: 'only-hidden' config has no attention dropout key"):
        dropout_overrides(types.SimpleNamespace(model_type="only-hidden", dropout=0.1), 0.0, 0.0)
    with pytest.raises(ValueError, match=r"hidden=1.0: a dropout rate must be in \[0, 1\)"):
        dropout_overrides(AutoConfig.for_model("bert"), 1.0)


@pytest.mark.parametrize("arch", WITH_FUNNEL)
def test_zero_dropout_at_load_makes_train_equal_eval(arch, tiny_models, funnel_dir):
    from transformers import AutoConfig

    path = model_dir(arch, tiny_models, funnel_dir)
    default = load(path)
    # control: with the default rates a training forward differs, so the equality below can fail
    assert not torch.equal(default.train()(**batch(default)).last_hidden_state, default.eval()(**batch(default)).last_hidden_state)
    overrides = dropout_overrides(AutoConfig.from_pretrained(str(path)), 0.0, 0.0)
    backbone = load(path, **overrides)
    assert all(getattr(backbone.config, key) == 0.0 for key in overrides)
    assert set(dropout_rates_by_name(backbone).values()) == {0.0}
    with torch.no_grad():
        assert torch.equal(hidden(backbone.train()), hidden(backbone.eval()))


@pytest.mark.parametrize("arch", WITH_FUNNEL)
def test_set_dropout_equals_load_time_overrides(arch, tiny_models, funnel_dir):
    path = model_dir(arch, tiny_models, funnel_dir)
    backbone = load(path)
    applied = set_dropout(backbone, hidden=0.2, attention=0.3)
    reference = load(path, **applied)
    rates = dropout_rates_by_name(backbone)
    assert rates == dropout_rates_by_name(reference)
    n_layers = len(encoder_layers(backbone))
    assert list(rates.values()).count(0.3) == n_layers  # one attention-probability dropout per layer
    assert {getattr(backbone.config, k) for k in applied} <= {0.2, 0.3} and applied
    set_dropout(backbone, 0.0, 0.0)
    with torch.no_grad():
        assert torch.equal(hidden(backbone.train()), hidden(backbone.eval()))


def test_set_dropout_reaches_rates_stored_as_plain_floats():
    from transformers import BertConfig, BertModel

    class FloatRateBert(BertModel):  # like transformers 4.x SDPA attention: a float handed to SDPA
        def __init__(self, config):
            super().__init__(config)
            for layer in self.encoder.layer:
                layer.attention.self.dropout_prob = config.attention_probs_dropout_prob

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    backbone = FloatRateBert(config)
    set_dropout(backbone, attention=0.0)
    assert [layer.attention.self.dropout_prob for layer in backbone.encoder.layer] == [0.0, 0.0]
    assert [layer.attention.self.dropout.p for layer in backbone.encoder.layer] == [0.0, 0.0]
    assert backbone.embeddings.dropout.p == 0.1  # hidden rate kept


# ------------------------------------------------------------------------------------------------
# layers, re-init, freeze
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_encoder_layers_bottom_to_top(arch, tiny_models):
    backbone = load(tiny_models(arch))
    layers = encoder_layers(backbone)
    if backbone.config.model_type == "funnel":  # num_hidden_layers counts the encoder blocks only
        assert len(layers) == backbone.config.num_hidden_layers + backbone.config.num_decoder_layers
        assert layers[-1] is backbone.decoder.layers[-1]
    else:
        assert len(layers) == backbone.config.num_hidden_layers
        assert all(a is b for a, b in zip(layers, backbone.encoder.layer, strict=True))


def test_encoder_layers_flatten_funnel_blocks_then_decoder(funnel_dir):
    backbone = load(funnel_dir)
    enc, dec = backbone.encoder.blocks, backbone.decoder.layers
    assert [id(m) for m in encoder_layers(backbone)] == [id(m) for m in (enc[0][0], enc[1][0], enc[1][1], dec[0], dec[1])]


def test_unknown_structure_names_the_arch():
    odd = nn.Module()
    odd.config = types.SimpleNamespace(model_type="gpt2")
    with pytest.raises(ValueError, match=r"'gpt2' backbone .*encoder layers not found.*supported archs: bert"):
        encoder_layers(odd)


def _expected_linear_std(backbone, weight):
    if backbone.config.model_type == "funnel":  # funnel: sqrt(1 / (fan_in + fan_out)) unless initializer_std
        return math.sqrt(1.0 / sum(weight.shape))
    return backbone.config.initializer_range


@pytest.mark.parametrize("arch", WITH_FUNNEL)
def test_reinit_redraws_exactly_the_top_layers(arch, tiny_models, funnel_dir):
    backbone = load(model_dir(arch, tiny_models, funnel_dir))
    names = {id(m): n for n, m in backbone.named_modules()}
    top = encoder_layers(backbone)[-1]
    expected = [names[id(top)] + "."] + (["pooler."] if getattr(backbone, "pooler", None) is not None else [])
    with torch.no_grad():  # move the "pretrained" weights off the init distribution, so re-drawing shows
        for prefix in expected:
            for p in backbone.get_submodule(prefix[:-1]).parameters():
                p.fill_(0.5)
    before = snapshot(backbone)
    marks = [getattr(p, "_is_hf_initialized", None) for p in top.parameters()]  # transformers 5: True when loaded
    torch.manual_seed(0)
    prefixes = reinit_top_layers(backbone, 1)
    assert prefixes == expected
    after = backbone.state_dict()
    for name, old in before.items():
        touched = any(name.startswith(prefix) for prefix in prefixes)
        assert torch.equal(old, after[name]) != touched, name
    for module in [m for prefix in prefixes for m in backbone.get_submodule(prefix[:-1]).modules()]:
        if type(module) is nn.Linear:
            std = _expected_linear_std(backbone, module.weight)
            assert module.weight.std().item() == pytest.approx(std, rel=0.1)
            assert abs(module.weight.mean().item()) < 4 * std / math.sqrt(module.weight.numel())
            assert module.bias is None or not module.bias.any()
        elif isinstance(module, nn.LayerNorm):
            assert torch.equal(module.weight, torch.ones_like(module.weight)) and not module.bias.any()
        elif type(module).__name__ == "FunnelRelMultiheadAttention":  # its own params: U(0, initializer_range)
            own = torch.cat([p.flatten() for p in module.parameters(recurse=False)])
            assert 0 <= own.min() and own.max() <= backbone.config.initializer_range
    # the loaded-weight marks are put back, so a later transformers init pass leaves these weights alone
    assert [getattr(p, "_is_hf_initialized", None) for p in top.parameters()] == marks


def test_reinit_pooler_off_and_bounds(tiny_models):
    backbone = load(tiny_models("bert"))
    pooler = backbone.pooler.dense.weight.clone()
    assert reinit_top_layers(backbone, 2, pooler=False) == ["encoder.layer.0.", "encoder.layer.1."]
    assert torch.equal(pooler, backbone.pooler.dense.weight)
    with pytest.raises(ValueError, match=r"reinit_layers=3: the 'bert' backbone has 2 layers; use 0 to 2"):
        reinit_top_layers(backbone, 3)


@pytest.mark.parametrize("arch", WITH_FUNNEL)
def test_freeze_stops_exactly_those_params(arch, tiny_models, funnel_dir):
    backbone = load(model_dir(arch, tiny_models, funnel_dir))
    names = {id(m): n for n, m in backbone.named_modules()}
    frozen_prefixes = ("embeddings.", "embeddings_project.", names[id(encoder_layers(backbone)[0])] + ".")
    n_frozen = freeze(backbone, embeddings=True, bottom_layers=1)
    params = dict(backbone.named_parameters())
    expect_frozen = {n for n in params if n.startswith(frozen_prefixes)}
    assert {n for n, p in params.items() if not p.requires_grad} == expect_frozen
    assert n_frozen == sum(params[n].numel() for n in expect_frozen) > 0
    before = snapshot(backbone)
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=1e-2, weight_decay=0.01)
    loss_and_grads(backbone.train())
    optimizer.step()
    after = backbone.state_dict()
    changed = {n for n in params if not torch.equal(before[n], after[n])}
    assert not changed & expect_frozen and changed  # frozen ones kept, the rest trained
    with pytest.raises(ValueError, match=r"freeze_layers=99: .* use 0 to"):
        freeze(backbone, bottom_layers=99)


# ------------------------------------------------------------------------------------------------
# gradient checkpointing
# ------------------------------------------------------------------------------------------------

def _count_calls(module):
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpointing_keeps_loss_and_gradients(arch, tiny_models):
    from transformers import AutoConfig

    path = tiny_models(arch)
    backbone = load(path, **dropout_overrides(AutoConfig.from_pretrained(str(path)), 0.0, 0.0)).train()
    if not backbone.supports_gradient_checkpointing:  # funnel in transformers 5
        with pytest.raises(ValueError, match=r"gradient_checkpointing=True: .* does not support"):
            set_gradient_checkpointing(backbone, True)
        return
    first_linear = next(m for m in encoder_layers(backbone)[0].modules() if isinstance(m, nn.Linear))
    calls = _count_calls(first_linear)  # deberta calls it twice a forward (tokens and positions)
    loss_off, grads_off = loss_and_grads(backbone)
    calls_off = len(calls)
    set_gradient_checkpointing(backbone, True)
    calls.clear()
    loss_on, grads_on = loss_and_grads(backbone)
    assert len(calls) == 2 * calls_off  # the layer really ran again in backward
    assert torch.allclose(loss_on, loss_off, atol=1e-6)
    # every parameter below the pooler (which last_hidden_state does not use) has a gradient
    assert grads_on.keys() == grads_off.keys() == {n for n, _ in backbone.named_parameters() if not n.startswith("pooler.")}
    for name, grad in grads_off.items():
        assert torch.allclose(grads_on[name], grad, atol=1e-6), name
    set_gradient_checkpointing(backbone, False)
    calls.clear()
    loss_and_grads(backbone)
    assert len(calls) == calls_off


def test_checkpointing_unsupported_raises(funnel_dir):
    backbone = load(funnel_dir)
    set_gradient_checkpointing(backbone, False)  # nothing to switch off: no error
    with pytest.raises(ValueError, match=r"gradient_checkpointing=True: FunnelModel \('funnel'\) does not support"):
        set_gradient_checkpointing(backbone, True)


# ------------------------------------------------------------------------------------------------
# Mixout
# ------------------------------------------------------------------------------------------------

def _mix_layer(p, seed=0):
    torch.manual_seed(seed)
    plain = nn.Linear(3, 4)
    mix = MixLinear.from_linear(plain, p)
    return plain, mix


def test_mixout_is_unbiased_and_swaps_a_share_p():
    p, draws = 0.4, 20_000
    _, mix = _mix_layer(p)
    with torch.no_grad():
        mix.weight.add_(torch.randn_like(mix.weight))  # fine-tuned away from the target
    mix.train()
    torch.manual_seed(1)
    samples = torch.stack([mix.mixed_weight().detach() for _ in range(draws)])  # (N, out, in)
    delta = (mix.weight - mix.target).abs().detach()
    # Var(W') = (W - T)^2 p / (1 - p): the mean of N draws lies within 5 standard errors
    tolerance = 5 * delta * math.sqrt(p / (1 - p) / draws)
    assert ((samples.mean(0) - mix.weight.detach()).abs() <= tolerance).all()
    swapped = (samples == mix.target).float().mean().item()  # elements that took the pretrained value
    assert swapped == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / samples.numel()))
    kept = samples[samples != mix.target.expand_as(samples)]
    assert kept.numel() > 0  # the others are T + (W - T) / (1 - p)


def test_mixout_is_exact_identity_when_weight_equals_target():
    _, mix = _mix_layer(0.7)
    mix.train()
    for _ in range(200):
        assert torch.equal(mix.mixed_weight(), mix.weight)


def test_mixout_eval_equals_plain_linear_and_forward_uses_the_mixed_weight():
    plain, mix = _mix_layer(0.3)
    x = torch.randn(5, 3)
    assert torch.equal(mix.eval()(x), plain(x))
    with torch.no_grad():
        mix.weight.add_(1.0)
    mix.train()
    torch.manual_seed(2)
    out = mix(x)
    torch.manual_seed(2)
    assert torch.equal(out, F.linear(x, mix.mixed_weight(), mix.bias))
    assert not torch.equal(out, F.linear(x, mix.weight, mix.bias))


def test_mixout_gradient_reaches_weight_through_the_mask():
    p = 0.3
    _, mix = _mix_layer(p)
    with torch.no_grad():
        mix.weight.add_(torch.randn_like(mix.weight))
    mix.train()
    x = torch.randn(6, 3)
    torch.manual_seed(3)
    mix(x).square().sum().backward()
    torch.manual_seed(3)
    mixed = mix.mixed_weight().detach().requires_grad_()
    F.linear(x, mixed, mix.bias.detach()).square().sum().backward()
    swapped = mixed.detach() == mix.target
    assert swapped.any() and (~swapped).any()
    assert not mix.weight.grad[swapped].any()  # a swapped element does not see its weight
    assert torch.allclose(mix.weight.grad[~swapped], mixed.grad[~swapped] / (1 - p))
    assert mix.target.grad is None and not mix.target.requires_grad


@pytest.mark.parametrize("arch", WITH_FUNNEL)
def test_apply_mixout_keeps_state_dict_and_eval_output(arch, tiny_models, funnel_dir):
    path = model_dir(arch, tiny_models, funnel_dir)
    backbone = load(path).eval()
    keys = list(backbone.state_dict())
    n_linear = sum(type(m) is nn.Linear for layer in encoder_layers(backbone) for m in layer.modules())
    with torch.no_grad():
        before = hidden(backbone)
    assert apply_mixout(backbone, 0.2) == n_linear > 0
    mixes = [m for m in backbone.modules() if isinstance(m, MixLinear)]
    assert len(mixes) == n_linear and all(torch.equal(m.target, m.weight) for m in mixes)
    assert not any(m.training for m in mixes)  # the new layers took the backbone's eval mode
    assert list(backbone.state_dict()) == keys
    with torch.no_grad():
        assert torch.equal(hidden(backbone), before)
        for mix in mixes:  # weights moved off the target: eval still uses W itself
            mix.weight.mul_(1.5)
        reference = load(path).eval()
        reference.load_state_dict(backbone.state_dict(), strict=True)  # a saved mixout model loads into a plain one
        assert torch.equal(hidden(backbone), hidden(reference))
    # applying again only changes p; the target stays the pretrained weight
    assert apply_mixout(backbone, 0.1) == n_linear
    assert {m.p for m in mixes} == {0.1} and not torch.equal(mixes[0].target, mixes[0].weight)


def test_apply_mixout_checks_p(tiny_models):
    backbone = load(tiny_models("bert"))
    assert apply_mixout(backbone, 0.0) == 0
    assert not any(isinstance(m, MixLinear) for m in backbone.modules())
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=rf"mixout={bad}: the Mixout probability must be in \[0, 1\)"):
            apply_mixout(backbone, bad)
    with pytest.raises(ValueError, match=r"layers=\[2\]: the 'bert' backbone has layers 0 to 1"):
        apply_mixout(backbone, 0.1, layers=[2])
    assert apply_mixout(backbone, 0.1, layers=[1]) == 6  # query, key, value, 3 dense
    assert [isinstance(layer.output.dense, MixLinear) for layer in encoder_layers(backbone)] == [False, True]


# ------------------------------------------------------------------------------------------------
# apply_surgery
# ------------------------------------------------------------------------------------------------

def _bert(layers=4):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertModel(config)


def test_surgery_keeps_mixout_off_reinit_and_frozen_layers():
    backbone = _bert()
    pretrained = snapshot(backbone)
    layers = encoder_layers(backbone)
    summary = apply_surgery(backbone, reinit_layers=1, freeze_layers=1, mixout=0.1, gradient_checkpointing=True)
    assert summary == {
        "reinit": ["encoder.layer.3.", "pooler."],
        "frozen_params": sum(p.numel() for p in layers[0].parameters()),
        "mixout_layers": 12,  # 6 linears in each of layers 1 and 2
        "mixout": 0.1,
        "gradient_checkpointing": True,
    }
    mixed = [[isinstance(m, MixLinear) for m in layer.modules() if isinstance(m, nn.Linear)] for layer in layers]
    assert [all(flags) for flags in mixed] == [False, True, True, False]
    assert not any(mixed[0]) and not any(mixed[3])
    names = {id(m): n for n, m in backbone.named_modules()}
    for mix in (m for m in backbone.modules() if isinstance(m, MixLinear)):  # targets are the pretrained weights
        assert torch.equal(mix.target, pretrained[names[id(mix)] + ".weight"])
    assert not torch.equal(layers[3].output.dense.weight, pretrained["encoder.layer.3.output.dense.weight"])
    assert not any(p.requires_grad for p in layers[0].parameters())


def test_surgery_default_changes_nothing_and_checks_overlap():
    backbone = _bert()
    before = snapshot(backbone)
    assert apply_surgery(backbone) == {"reinit": [], "frozen_params": 0, "mixout_layers": 0, "mixout": 0.0,
                                       "gradient_checkpointing": False}
    after = backbone.state_dict()
    assert all(torch.equal(t, after[n]) for n, t in before.items())
    assert all(p.requires_grad for p in backbone.parameters())
    with pytest.raises(ValueError, match=r"reinit_layers=3 \+ freeze_layers=2 exceeds the 4 layers"):
        apply_surgery(backbone, reinit_layers=3, freeze_layers=2)
    # a bad argument fails before anything changes
    with pytest.raises(ValueError, match=r"mixout=1.5: the Mixout probability must be in \[0, 1\)"):
        apply_surgery(backbone, reinit_layers=1, freeze_embeddings=True, mixout=1.5)
    with pytest.raises(ValueError, match=r"freeze_layers=-1: the 'bert' backbone has 4 layers; use 0 to 4"):
        apply_surgery(backbone, reinit_layers=1, freeze_layers=-1)
    assert all(torch.equal(t, after[n]) for n, t in before.items())
    assert all(p.requires_grad for p in backbone.parameters())


def test_mixout_masks_replay_under_checkpointing():
    # non-reentrant checkpointing restores the RNG state, so the recomputed masks match the forward's
    results = []
    for enabled in (False, True):
        backbone = _bert(layers=2).train()
        apply_surgery(backbone, mixout=0.3, freeze_embeddings=True, gradient_checkpointing=enabled)
        torch.manual_seed(5)
        results.append(loss_and_grads(backbone))
    (loss_off, grads_off), (loss_on, grads_on) = results
    assert torch.allclose(loss_on, loss_off, atol=1e-6)
    assert grads_on.keys() == grads_off.keys() and not any(n.startswith("embeddings.") for n in grads_on)
    assert any(n.startswith("encoder.layer.0.") for n in grads_on)  # layers above frozen embeddings still learn
    for name, grad in grads_off.items():
        assert torch.allclose(grads_on[name], grad, atol=1e-6), name
