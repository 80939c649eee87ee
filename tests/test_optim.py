"""Optimizer groups and the training step: every parameter once, decay by module type, clipping unscaled."""

import math

import pytest
import torch
from torch import nn

from kagglekit.models.pair_model import build_model
from kagglekit.train.loop import train_step
from kagglekit.train.optim import build_scheduler, param_groups


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
