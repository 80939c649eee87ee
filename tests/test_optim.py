"""Optimizer groups and the training step: every parameter once, decay by module type, layer-wise rates by
hand, warmup schedules (transformers' get_scheduler) against their formulas step by step, clipping unscaled."""

import math

import pytest
import torch
from torch import nn

from kagglekit.models.pair_model import build_model
from kagglekit.models.surgery import _embedding_modules, encoder_layers, freeze
from kagglekit.testing import TINY_ARCHS, TINY_ENCODERS
from kagglekit.train.loop import train_step
from kagglekit.train.optim import build_optimizer, build_scheduler, param_groups

pytestmark = pytest.mark.compat  # also under transformers 4.x (make test): tiny models, seconds


class OddHead(nn.Module):
    """A custom head whose parameter names match no usual filter."""

    def __init__(self, hidden_size):
        super().__init__()
        self.zzz = nn.Linear(hidden_size, hidden_size)
        self.qq_norm = nn.LayerNorm(hidden_size)
        self.out_features = hidden_size

    def forward(self, hidden, mask):
        return self.qq_norm(self.zzz(hidden[:, 0]))


def test_every_trainable_parameter_in_exactly_one_group(tiny_bert):
    model, _ = build_model(tiny_bert, head=OddHead)
    model.backbone.embeddings.word_embeddings.weight.requires_grad_(False)  # frozen: in no group
    groups = param_groups(model, lr=1e-5, head_lr=1e-3, weight_decay=0.01)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(ids) == sorted(trainable) and len(set(ids)) == len(ids)
    by_name = {g["name"]: g for g in groups}
    head_ids = {id(p) for p in [*model.head.parameters(), *model.fc.parameters()]}
    assert {id(p) for g in groups if g["name"].startswith("head") for p in g["params"]} == head_ids
    assert by_name["head"]["lr"] == 1e-3 and by_name["backbone"]["lr"] == 1e-5
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(model.head.qq_norm.weight) in no_decay and id(model.head.zzz.bias) in no_decay
    assert id(model.head.zzz.weight) not in no_decay
    for module in model.backbone.modules():
        if isinstance(module, nn.LayerNorm):
            assert id(module.weight) in no_decay
    assert param_groups(model, lr=1e-5, head_lr=0, weight_decay=0.01)[-1]["lr"] == 1e-5  # 0: same as lr


@pytest.mark.parametrize("name", ["linear", "cosine", "constant"])
def test_schedules_warm_up_then_follow_their_shape(name):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, name, total_steps=10, warmup_ratio=0.2)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:3] == [0.0, 0.5, 1.0]
    expected_mid = {"linear": 1 - 3 / 8, "cosine": 0.5 * (1 + math.cos(math.pi * 3 / 8)), "constant": 1.0}[name]
    assert lrs[5] == pytest.approx(expected_mid)


def _ids(params):
    return {id(p) for p in params}


def _by_part(groups):
    """{part: (lr, parameter ids)} with each part's decay and no-decay groups merged."""
    parts = {}
    for g in groups:
        part = g["name"].removesuffix("_no_decay")
        lr, ids = parts.get(part, (g["lr"], set()))
        assert lr == g["lr"], f"{g['name']} has another rate than its twin"
        parts[part] = (lr, ids | _ids(g["params"]))
    return parts


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_layer_decay_groups_every_parameter_once_at_its_layer_rate(tiny_models, arch):
    model, _ = build_model(tiny_models(arch), head=OddHead)
    lr, head_lr, decay = 1e-3, 5e-3, 0.5
    groups = param_groups(model, lr=lr, head_lr=head_lr, weight_decay=0.01, layer_decay=decay)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters() if p.requires_grad) and len(set(ids)) == len(ids)
    backbone = model.backbone
    layers = encoder_layers(backbone)
    count = len(layers)
    parts = _by_part(groups)
    for i, layer in enumerate(layers):  # the top layer lr, each one below half the one above
        assert parts[f"layer_{i}"] == (pytest.approx(lr * 0.5 ** (count - 1 - i)), _ids(layer.parameters()))
    embeddings = {id(p) for m in _embedding_modules(backbone) for p in m.parameters()}
    assert parts["embeddings"] == (pytest.approx(lr * 0.5**count), embeddings)
    if hasattr(backbone, "pooler"):  # bert, roberta, xlm-roberta, nezha
        assert parts["pooler"] == (lr, _ids(backbone.pooler.parameters()))
    if arch == "deberta-v2":  # the relative-position table every layer reads: the embeddings' rate
        shared = _ids([backbone.encoder.rel_embeddings.weight, *backbone.encoder.LayerNorm.parameters()])
        assert parts["encoder_shared"] == (pytest.approx(lr * 0.5**count), shared)
    else:
        assert "encoder_shared" not in parts
    assert parts["head"] == (head_lr, _ids([*model.head.parameters(), *model.fc.parameters()]))
    names = [g["name"] for g in groups]
    assert names[0] == "embeddings" and names[-2:] == ["head", "head_no_decay"]
    if arch in TINY_ENCODERS:  # a decoder's embedding is one matrix: nothing of it goes without decay
        assert names[1] == "embeddings_no_decay"
    else:  # the final norm (and an untied LM head) above the layers: the top layer's rate
        rates = {id(p): g["lr"] for g in groups for p in g["params"]}
        assert rates[id(backbone.norm.weight)] == pytest.approx(lr)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(model.head.qq_norm.weight) in no_decay and id(model.head.zzz.weight) not in no_decay
    norms = [m for m in backbone.modules() if isinstance(m, nn.LayerNorm) or type(m).__name__.endswith("RMSNorm")]
    assert norms and all(id(m.weight) in no_decay for m in norms)


def test_layer_rates_by_hand_and_frozen_parameters_left_out(tiny_bert):
    model, _ = build_model(tiny_bert)
    groups = param_groups(model, lr=0.1, head_lr=0, weight_decay=0.01, layer_decay=0.8)  # bert-tiny: 2 layers
    rates = {g["name"]: g["lr"] for g in groups}
    assert rates == pytest.approx({
        "embeddings": 0.064, "embeddings_no_decay": 0.064,  # 0.1 * 0.8²
        "layer_0": 0.08, "layer_0_no_decay": 0.08,  # 0.1 * 0.8
        "layer_1": 0.1, "layer_1_no_decay": 0.1,
        "pooler": 0.1, "pooler_no_decay": 0.1,
        "head": 0.1, "head_no_decay": 0.1,  # head_lr 0: the backbone's lr
    })
    assert list(rates) == sorted(rates, key=list(rates).index)  # bottom to top, head last
    freeze(model.backbone, embeddings=True, bottom_layers=1)
    groups = param_groups(model, lr=0.1, head_lr=0, weight_decay=0.01, layer_decay=0.8)
    assert {g["name"] for g in groups} == {"layer_1", "layer_1_no_decay", "pooler", "pooler_no_decay", "head", "head_no_decay"}
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)
    optimizer = build_optimizer(model, lr=0.1, head_lr=0.5, weight_decay=0.01, layer_decay=0.8, betas=(0.8, 0.99), eps=1e-7)
    assert [(g["name"], g["lr"], g["betas"], g["eps"]) for g in optimizer.param_groups][:2] == [
        ("layer_1", 0.1, (0.8, 0.99), 1e-7), ("layer_1_no_decay", 0.1, (0.8, 0.99), 1e-7),
    ]
    assert optimizer.param_groups[-1]["lr"] == 0.5


def test_layer_decay_is_checked(tiny_bert):
    model, _ = build_model(tiny_bert)
    for bad in (0.0, 1.5, -0.9):
        with pytest.raises(ValueError, match=rf"layer_decay={bad}: the layer-wise LR decay must be in \(0, 1\]; 1.0 turns it off"):
            param_groups(model, lr=1e-5, head_lr=0, weight_decay=0.0, layer_decay=bad)
    with pytest.raises(ValueError, match=r"layer_decay=0.9 needs a model with a `backbone` attribute"):
        param_groups(nn.Linear(2, 2), lr=1e-5, head_lr=0, weight_decay=0.0, layer_decay=0.9)
    assert [g["name"] for g in param_groups(nn.Linear(2, 2), lr=1e-5, head_lr=0, weight_decay=0.1)] == ["head", "head_no_decay"]


def _lrs(name, steps=10, **kwargs):
    """The learning rate in use at each optimizer step 0..steps-1 (peak 1.0)."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, name, total_steps=steps, **kwargs)
    lrs = []
    for _ in range(steps):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("name", ["linear", "cosine", "constant"])
def test_warmup_in_steps_or_as_a_ratio(name):
    by_steps = _lrs(name, warmup_steps=3)
    assert _lrs(name, warmup_ratio=0.3) == by_steps  # 10 * 0.3 is 3.0000000000000004 in floats: still 3 steps
    assert by_steps[:4] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    # step 6: 3 of the 7 steps after warmup done
    expected = {"linear": 4 / 7, "cosine": 0.5 * (1 + math.cos(math.pi * 3 / 7)), "constant": 1.0}[name]
    assert by_steps[6] == pytest.approx(expected)
    assert _lrs(name, warmup_steps=4, warmup_ratio=0.2)[2] == pytest.approx(0.5)  # steps win: 2 / 4, not the peak
    with pytest.raises(ValueError, match=r"warmup_steps=-1: warmup cannot be negative"):
        _lrs(name, warmup_steps=-1)
    with pytest.raises(ValueError, match=r"warmup_ratio=-0.1: warmup cannot be negative"):
        _lrs(name, warmup_ratio=-0.1)
    with pytest.warns(UserWarning, match=r"warmup of 12 steps is longer than the run's 10"):
        _lrs(name, warmup_steps=12)


def test_cosine_with_one_full_cycle_comes_back_up():
    lrs = _lrs("cosine", warmup_steps=2, num_cycles=1.0)  # 8 steps after warmup
    assert lrs[6] == pytest.approx(0.0, abs=1e-12)  # halfway: cos(pi) → 0
    assert lrs[9] == pytest.approx(0.5 * (1 + math.cos(2 * math.pi * 7 / 8)))  # ≈ 0.854, back up
    assert lrs[7] < lrs[8] < lrs[9]
    with pytest.raises(ValueError, match=r"num_cycles=1.0 applies to the cosine scheduler only, not 'linear'"):
        _lrs("linear", num_cycles=1.0)


def _reference_multiplier(name, step, warmup, total, num_cycles=0.5):
    """The schedule's multiplier at `step`, written from its definition (not from transformers)."""
    if step < warmup:
        return step / warmup
    after = total - warmup  # steps after warmup
    progress = (step - warmup) / after if after else 1.0
    if name == "linear":
        return max(0.0, 1.0 - progress)
    if name == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(2.0 * math.pi * num_cycles * progress)))
    return 1.0


@pytest.mark.parametrize(
    ("name", "total", "kwargs"),
    [
        ("linear", 17, {"warmup_ratio": 0.2}),  # ceil(3.4) = 4 warmup steps
        ("linear", 9, {}),  # no warmup: the peak at step 0
        ("cosine", 17, {"warmup_ratio": 0.2}),  # num_cycles 0.5: one half-cosine down to 0
        ("cosine", 23, {"warmup_steps": 4, "num_cycles": 1.5}),  # down, up, down again
        ("cosine", 13, {"warmup_steps": 3, "num_cycles": 0.25}),  # a quarter-cosine: ends at 0.5
        ("constant", 11, {"warmup_steps": 3}),
        ("constant", 5, {}),
    ],
)
def test_every_step_equals_the_schedule_formula(name, total, kwargs):
    # two groups with their own peaks: each follows the same multiplier times its own peak
    peaks = (2e-5, 1e-3)
    opt = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "lr": peak} for peak in peaks], lr=1.0)
    sched = build_scheduler(opt, name, total_steps=total, **kwargs)
    warmup = kwargs.get("warmup_steps") or math.ceil(round(total * kwargs.get("warmup_ratio", 0.0), 6))
    seen = []
    for step in range(total + 1):  # the rate of every optimizer step, and the one left after the last
        multiplier = _reference_multiplier(name, step, warmup, total, kwargs.get("num_cycles", 0.5))
        assert sched.get_last_lr() == pytest.approx([peak * multiplier for peak in peaks], rel=1e-12, abs=1e-18), step
        assert [g["lr"] for g in opt.param_groups] == sched.get_last_lr()
        seen.append(multiplier)
        opt.step()
        sched.step()
    # the cases above really cover warmup and the shapes (a reference that is all 1.0 would prove little)
    assert seen[0] == (0.0 if warmup else 1.0) and max(seen) == pytest.approx(1.0)
    ends = {"linear": 0.0, "constant": 1.0, "cosine": {0.5: 0.0, 1.5: 0.0, 0.25: 0.5}[kwargs.get("num_cycles", 0.5)]}
    assert seen[-1] == pytest.approx(ends[name], abs=1e-12)


def test_schedulers_map_to_transformers_names():
    from transformers import SchedulerType

    from kagglekit.train.optim import SCHEDULERS

    assert sorted(SCHEDULERS) == ["constant", "cosine", "linear"]
    assert all(SchedulerType(value) for value in SCHEDULERS.values())  # valid in both majors
    assert SCHEDULERS["constant"] == "constant_with_warmup"  # transformers' plain "constant" skips warmup


def test_unknown_scheduler_lists_the_valid_ones():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=r"unknown scheduler 'cosin'; valid schedulers are \['constant', 'cosine', 'linear'\]"):
        build_scheduler(opt, "cosin", total_steps=10)


def test_clipping_sees_the_unscaled_gradient():
    # with a huge loss scale, clipping the still-scaled gradient would shrink the step by the scale
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    batch = {"input": torch.randn(8, 4), "labels": torch.randn(8)}

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, input):
            return self.inner(input).squeeze(-1)

    train_step(Wrap(), batch, loss_fn=lambda o, y: ((o - y) ** 2).mean() * 100, optimizer=opt, scheduler=sched, scaler=scaler, amp_dtype=None, max_grad_norm=1e-3)
    moved = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert moved.item() == pytest.approx(1e-3, rel=1e-4)  # lr 1 × clipped real gradient norm
