"""FGM, PGD and AWP checked by numbers: perturbations by hand, gradients added, scale invariance,
restore bit for bit, the embedding found on every backbone, inert cases that do nothing."""

import copy
import gc
import math

import pytest
import torch
from torch import nn

from kagglekit.losses import get_loss
from kagglekit.models.pair_model import build_model
from kagglekit.testing import TINY_ARCHS, TINY_DECODERS
from kagglekit.train.adversarial import ADVERSARIES, AWP, FGM, PGD, create_adversary
from kagglekit.train.loop import compute_loss, train_step

pytestmark = pytest.mark.compat  # adversarial training also runs in Kaggle notebooks with transformers 4.x

EMBEDDING = "backbone.embeddings.word_embeddings.weight"
BCE = get_loss("bce").fn
ANCHORS = ["engine housing", "wireless antenna", "fabric softener", "concrete slab"]
TARGETS = ["motor casing", "radio aerial receiver", "washing machine", "roof tile"]
# small steps keep every attack inside the region where the tiny models' losses are smooth
MAKERS = {
    "fgm": lambda m: FGM(m, epsilon=0.5),
    "pgd": lambda m: PGD(m, epsilon=0.5, alpha=0.2, steps=3),
    "awp": lambda m: AWP(m, adv_lr=0.5, adv_eps=0.01),
}


def pair_model(folder, seed=0):
    torch.manual_seed(seed)
    model, tokenizer = build_model(folder, dropout=0.0)
    return model.eval(), tokenizer  # eval: no dropout, so every forward is reproducible


def make_batch(tokenizer, rows=slice(None), labels=(0.0, 0.25, 0.75, 1.0)):
    enc = tokenizer(ANCHORS[rows], TARGETS[rows], padding=True, return_tensors="pt")
    return {k: v for k, v in enc.items()}, torch.tensor(labels[rows])


def loss_of(model, inputs, labels, scale=1.0):
    return compute_loss(model, inputs, labels, BCE, None) * scale


def grads(model):
    return {n: None if p.grad is None else p.grad.detach().clone() for n, p in model.named_parameters()}


def weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_bitwise(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] is None and b[k] is None) or torch.equal(a[k], b[k]), k


def attack_run(model, adversary, inputs, labels, scale=1.0, backward=None):
    """Clean backward, then attack_backward; returns the weights seen by each adversarial forward and the value."""
    backward = backward or (lambda loss: (loss * scale).backward())
    backward(loss_of(model, inputs, labels))
    seen = []

    def forward_loss():
        seen.append(weights(model))
        return loss_of(model, inputs, labels)

    value = adversary.attack_backward(forward_loss, backward)
    return seen, value


@pytest.fixture(scope="module")
def bert(tiny_bert):
    return tiny_bert


# --- restore, perturbation sizes ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MAKERS))
def test_restore_brings_every_weight_back_bit_for_bit(bert, name):
    model, tokenizer = pair_model(bert)
    inputs, labels = make_batch(tokenizer)
    start = weights(model)
    adversary = MAKERS[name](model)
    loss_of(model, inputs, labels).backward()
    assert adversary.attack() and adversary.attack()  # two steps: a PGD/AWP walk, FGM twice
    assert any(not torch.equal(start[n], p) for n, p in model.named_parameters())
    adversary.restore()
    assert_bitwise(weights(model), start)
    seen, _ = attack_run(model, adversary, inputs, labels)
    assert seen and any(not torch.equal(seen[-1][n], start[n]) for n in start)
    assert_bitwise(weights(model), start)


def test_fgm_perturbation_has_norm_epsilon_along_the_gradient(bert):
    model, tokenizer = pair_model(bert)
    inputs, labels = make_batch(tokenizer)
    loss_of(model, inputs, labels).backward()
    weight = model.backbone.get_input_embeddings().weight
    g, w0 = weight.grad.clone(), weight.detach().clone()
    FGM(model, epsilon=0.7).attack()
    r = weight.detach() - w0
    assert abs(torch.linalg.vector_norm(r).item() - 0.7) < 1e-5
    torch.testing.assert_close(r, 0.7 * g / torch.linalg.vector_norm(g), rtol=0, atol=1e-6)


class ToyEncoder(nn.Module):
    """A bare 'encoder' with get_input_embeddings(); its loss is a smooth non-linear function of the rows used."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(6, 4)
        self.coef = torch.randn(4, 4)

    def get_input_embeddings(self):
        return self.emb

    def loss(self, table=None, rows=(1, 3, 4)):
        used = (self.emb.weight if table is None else table)[torch.tensor(rows)]  # (R, 4)
        return (torch.sin(3 * used) * self.coef[: len(rows)]).sum()


@pytest.mark.parametrize("adv_rows", [(1, 3, 4), (1, 3, 4, 5)], ids=["same-rows", "new-row"])
def test_pgd_two_steps_equal_the_projected_walk_by_hand(adv_rows):
    """Only the rows with a gradient are kept and moved; a later step may reach a row the first did not."""
    toy = ToyEncoder()
    w0 = toy.emb.weight.detach().clone()
    eps, alpha = 0.5, 0.3

    def grad_at(table, rows=adv_rows):
        table = table.clone().requires_grad_(True)
        toy.loss(table, rows).backward()
        return table.grad

    def project(delta):
        norm = torch.linalg.vector_norm(delta)
        return delta * (eps / norm) if norm > eps else delta

    g0 = grad_at(w0, rows=(1, 3, 4))  # the clean loss
    d1 = project(alpha * g0 / torch.linalg.vector_norm(g0))
    g1 = grad_at(w0 + d1)
    raw = d1 + alpha * g1 / torch.linalg.vector_norm(g1)
    assert torch.linalg.vector_norm(raw) > eps  # the projection really acts in this case
    d2 = project(raw)

    pgd = PGD(toy, epsilon=eps, alpha=alpha, steps=2)
    assert [n for n, _ in pgd.params] == ["emb.weight"]  # found through get_input_embeddings()
    toy.loss().backward()
    clean = toy.emb.weight.grad.clone()
    seen = []

    def forward_loss():
        seen.append(toy.emb.weight.detach().clone())
        return toy.loss(rows=adv_rows)

    pgd.attack_backward(forward_loss, lambda loss: loss.backward())
    torch.testing.assert_close(seen[0] - w0, d1, rtol=0, atol=1e-6)
    torch.testing.assert_close(seen[1] - w0, d2, rtol=0, atol=1e-6)
    assert torch.linalg.vector_norm(seen[1] - w0) <= eps + 1e-6
    assert torch.equal(seen[1][[0, 2]], w0[[0, 2]])  # rows no loss uses stay bit for bit
    assert torch.equal(seen[0][5], w0[5]) and (len(adv_rows) == 3) == torch.equal(seen[1][5], w0[5])
    # the intermediate gradient is dropped; the last one is added to the clean one
    torch.testing.assert_close(toy.emb.weight.grad, clean + grad_at(w0 + d2), rtol=1e-5, atol=1e-6)
    assert torch.equal(toy.emb.weight.detach(), w0)


@pytest.mark.parametrize("steps", [1, 3])
def test_pgd_total_perturbation_stays_in_the_ball(bert, steps):
    model, tokenizer = pair_model(bert)
    inputs, labels = make_batch(tokenizer)
    w0 = model.backbone.get_input_embeddings().weight.detach().clone()
    seen, _ = attack_run(model, PGD(model, epsilon=0.4, alpha=0.3, steps=steps), inputs, labels)
    norms = [torch.linalg.vector_norm(s[EMBEDDING] - w0).item() for s in seen]
    assert len(norms) == steps and all(n <= 0.4 + 1e-6 for n in norms)
    assert norms[0] == pytest.approx(0.3, abs=1e-5)


def test_awp_moves_each_weight_by_the_formula_within_its_bound(bert):
    model, tokenizer = pair_model(bert)
    inputs, labels = make_batch(tokenizer)
    loss_of(model, inputs, labels).backward()
    start, g = weights(model), grads(model)
    awp = AWP(model, adv_lr=0.05, adv_eps=0.02)
    assert awp.attack()
    tiny = torch.finfo(torch.float32).eps
    bound_hit = 0
    for name, p in model.named_parameters():
        r = p.detach() - start[name]
        if "weight" not in name or g[name] is None:
            assert torch.equal(r, torch.zeros_like(r)), name  # biases and untouched params stay
            continue
        w0 = start[name]
        bound = 0.02 * w0.abs()
        assert torch.all(r.abs() <= bound + 2 * tiny * w0.abs()), name
        free = 0.05 * g[name] / torch.linalg.vector_norm(g[name]) * torch.linalg.vector_norm(w0)
        torch.testing.assert_close(r, torch.clamp(free, -bound, bound), rtol=1e-5, atol=1e-7)
        bound_hit += int((free.abs() > bound).any())
    assert bound_hit > 0  # the clamp acted somewhere
    awp.attack()  # a second step stays within the bound around w0, not around the moved weights
    for name, p in awp.params:
        w0 = start[name]
        assert torch.all((p.detach() - w0).abs() <= 0.02 * w0.abs() + 2 * tiny * w0.abs()), name  # rounding of w0 + r


# --- the adversarial gradient is added, scale invariance ------------------------------------------------


@pytest.mark.parametrize("name", list(MAKERS))
def test_adversarial_gradient_is_added_to_the_clean_one(bert, name):
    model, tokenizer = pair_model(bert)
    inputs, labels = make_batch(tokenizer)
    reference = copy.deepcopy(model)
    loss_of(model, inputs, labels).backward()
    clean = grads(model)
    adversary = MAKERS[name](model)
    seen = []

    def forward_loss():
        seen.append(weights(model))
        return loss_of(model, inputs, labels)

    value = adversary.attack_backward(forward_loss, lambda loss: loss.backward())
    assert len(seen) == adversary.steps
    # by hand: the loss and its gradient at the last perturbed point, on a copy
    reference.load_state_dict(seen[-1], strict=False)
    at_point = loss_of(reference, inputs, labels)
    at_point.backward()
    assert value == pytest.approx(at_point.item(), abs=1e-6)
    assert not math.isclose(value, loss_of(model, inputs, labels).item(), abs_tol=1e-6)  # the attack moved the loss
    for n, p in reference.named_parameters():
        if p.grad is None:
            assert clean[n] is None and model.get_parameter(n).grad is None, n
            continue
        torch.testing.assert_close(model.get_parameter(n).grad, clean[n] + p.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("scaling", ["gradscaler", "times1024"])
def test_scaled_backward_gives_the_same_perturbation(bert, name, scaling):
    model, tokenizer = pair_model(bert)
    inputs, labels = make_batch(tokenizer)
    scaled_model = copy.deepcopy(model)
    plain_seen, plain_value = attack_run(model, MAKERS[name](model), inputs, labels)
    if scaling == "gradscaler":  # what the loop passes on CPU / in fp32 and bf16
        scaler, factor = torch.amp.GradScaler("cpu", enabled=False), 1.0
        backward = lambda loss: scaler.scale(loss).backward()  # noqa: E731
    else:  # what an fp16 GradScaler does, at a fixed scale
        factor = 1024.0
        backward = lambda loss: (loss * 1024).backward()  # noqa: E731
    seen, value = attack_run(scaled_model, MAKERS[name](scaled_model), inputs, labels, backward=backward)
    assert value == pytest.approx(plain_value, abs=1e-6)
    for before, after in zip(plain_seen, seen, strict=True):
        for n in before:
            torch.testing.assert_close(after[n], before[n], rtol=0, atol=1e-6)
    for n, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(scaled_model.get_parameter(n).grad, p.grad * factor, rtol=1e-4, atol=1e-5 * factor)


def test_under_accumulation_fgm_follows_the_micro_steps_own_gradient(bert):
    model, tokenizer = pair_model(bert)
    batch_a, batch_b = make_batch(tokenizer, slice(0, 2)), make_batch(tokenizer, slice(2, 4))
    reference = copy.deepcopy(model)
    w0 = model.backbone.get_input_embeddings().weight.detach().clone()
    fgm = FGM(model, epsilon=0.5)
    attack_run(model, fgm, *batch_a)  # micro-step 1: clean + adversarial gradient accumulate
    seen, _ = attack_run(model, fgm, *batch_b)  # micro-step 2, .grad now holds both micro-steps
    loss_of(reference, *batch_b).backward()
    own = reference.get_parameter(EMBEDDING).grad
    r = seen[0][EMBEDDING] - w0
    torch.testing.assert_close(r, 0.5 * own / torch.linalg.vector_norm(own), rtol=0, atol=1e-6)
    accumulated = model.get_parameter(EMBEDDING).grad
    assert not torch.allclose(r, 0.5 * accumulated / torch.linalg.vector_norm(accumulated), atol=1e-4)


def _tensors_held_by(make_adversary, model, run):
    """How many embedding-sized tensors the adversary keeps alive after `run()`: the live ones
    counted with it, minus those counted once it is gone."""
    shape = model.get_parameter(EMBEDDING).shape

    def live():
        _ = model.get_parameter(EMBEDDING).grad  # its Python object exists in both counts
        gc.collect()
        return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor) and o.shape == shape)  # type(): no lazy module attributes touched

    adversary = make_adversary(model)
    run(adversary)
    with_it = live()
    del adversary
    return with_it - live()


def test_an_adversary_not_in_use_keeps_no_gradient(bert):
    model, tokenizer = pair_model(bert)
    batch_a, batch_b = make_batch(tokenizer, slice(0, 2)), make_batch(tokenizer, slice(2, 4))

    def unused(fgm):  # two accumulating backward passes, no attack (e.g. before adv_start_epoch)
        for batch in (batch_a, batch_b):
            loss_of(model, *batch).backward()

    assert _tensors_held_by(FGM, model, unused) == 0
    model.zero_grad(set_to_none=True)

    def in_use(fgm):  # an attacked micro-step, then the next one's clean backward: its gradient is kept
        attack_run(model, fgm, *batch_a)
        loss_of(model, *batch_b).backward()

    assert _tensors_held_by(FGM, model, in_use) == 1  # the count sees a kept gradient
    # after an unused stretch and an optimizer step, each micro-step's attack follows its own gradient
    model.zero_grad(set_to_none=True)
    fgm = FGM(model, epsilon=0.5)
    unused(fgm)
    model.zero_grad(set_to_none=True)
    w0 = model.get_parameter(EMBEDDING).detach().clone()
    for batch in (batch_a, batch_b):
        reference = copy.deepcopy(model)
        reference.zero_grad(set_to_none=True)
        loss_of(reference, *batch).backward()
        own = reference.get_parameter(EMBEDDING).grad
        seen, _ = attack_run(model, fgm, *batch)
        torch.testing.assert_close(seen[0][EMBEDDING] - w0, 0.5 * own / torch.linalg.vector_norm(own), rtol=0, atol=1e-6)


# --- the embedding, found or named ------------------------------------------------------------------------


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_embedding_found_on_every_backbone_and_really_attacked(tiny_models, arch):
    model, tokenizer = pair_model(tiny_models(arch))
    fgm = FGM(model, epsilon=0.5)
    weight = model.backbone.get_input_embeddings().weight
    own = "embed_tokens.weight" if arch in TINY_DECODERS else "embeddings.word_embeddings.weight"  # the bare backbone's name
    assert [p for _, p in fgm.params] == [weight] and fgm.params[0][0] == f"backbone.{own}"
    assert [n for n, _ in FGM(model.backbone).params] == [own]  # bare backbone
    inputs, labels = make_batch(tokenizer)
    seen, value = attack_run(model, fgm, inputs, labels)
    assert math.isfinite(value)
    assert torch.linalg.vector_norm(seen[0][f"backbone.{own}"] - weight.detach()).item() == pytest.approx(0.5, abs=1e-5)


def test_embedding_by_name_and_wrong_or_frozen_names_raise(bert):
    model, _ = pair_model(bert)
    assert [n for n, _ in PGD(model, embedding="word_embeddings").params] == [EMBEDDING]
    with pytest.raises(ValueError, match="word_embeddings") as info:
        FGM(model, embedding="emb.")  # the usual notebook default, which silently matches nothing
    assert "embedding='emb.'" in str(info.value)
    model.get_parameter(EMBEDDING).requires_grad_(False)  # a frozen table is attacked still (LoRA freezes it: tests/test_lora.py)
    assert [n for n, _ in FGM(model).params] == [EMBEDDING]
    norm = "backbone.embeddings.LayerNorm.weight"
    model.get_parameter(norm).requires_grad_(False)  # a frozen parameter that is no table gets no gradient to follow
    with pytest.raises(ValueError, match=r"embeddings\.LayerNorm\.weight is frozen \(requires_grad=False\) and no embedding table"):
        FGM(model, embedding="embeddings.LayerNorm")


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("bad", ["inf", "nan", "zero", "none"])
def test_unusable_gradient_means_no_perturbation(bert, name, bad):
    model, tokenizer = pair_model(bert)
    inputs, labels = make_batch(tokenizer)
    adversary = MAKERS[name](model)
    loss_of(model, inputs, labels).backward()
    for _, p in adversary.params:
        p.grad = None if bad == "none" else torch.full_like(p, {"inf": math.inf, "nan": math.nan, "zero": 0.0}[bad])
    start, before = weights(model), grads(model)
    calls = []
    value = adversary.attack_backward(lambda: calls.append(1) or loss_of(model, inputs, labels), lambda loss: loss.backward())
    assert math.isnan(value) and not calls
    assert_bitwise(weights(model), start)
    after = grads(model)
    for n in before:
        if before[n] is None:
            assert after[n] is None
        else:
            torch.testing.assert_close(after[n], before[n], rtol=0, atol=0, equal_nan=True)


# --- in the training step, and the registry ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["none", *MAKERS])
def test_train_step_with_accumulation_steps_and_stays_finite(bert, name):
    model, tokenizer = pair_model(bert)
    model.train()
    start = weights(model)
    adversary = create_adversary(name, model)
    assert (adversary is None) == (name == "none")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    values = []
    for micro, rows in enumerate((slice(0, 2), slice(2, 4))):
        inputs, labels = make_batch(tokenizer, rows)
        values.append(train_step(
            model, {**inputs, "labels": labels}, loss_fn=BCE, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
            amp_dtype=None, max_grad_norm=1.0, accum_steps=2, boundary=micro == 1, adversary=adversary,
        ))
        if micro == 0:
            assert_bitwise(weights(model), start)  # no step inside an accumulation
    assert all(math.isfinite(v) for v in values)
    assert scheduler.last_epoch == 1 and len(optimizer.state) > 0  # the optimizer stepped once
    assert all(p.grad is None for p in model.parameters())
    moved = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), start[n])]
    assert EMBEDDING in moved and "fc.weight" in moved
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_registry_names_classes_and_bad_options(bert):
    model, _ = pair_model(bert)
    assert set(ADVERSARIES) == {"none", "fgm", "pgd", "awp"}
    assert create_adversary("none", model, epsilon=2.0) is None and create_adversary(None, model) is None
    fgm = create_adversary("FGM", model, epsilon=0.25)
    assert isinstance(fgm, FGM) and fgm.epsilon == 0.25
    assert isinstance(create_adversary(AWP, model, params="dense.weight"), AWP)
    pgd = create_adversary("pgd", model)
    assert (pgd.epsilon, pgd.alpha, pgd.steps) == (1.0, 0.3, 3)
    with pytest.raises(ValueError, match="'fgm', 'pgd', 'awp'"):
        create_adversary("fgsm", model)
    with pytest.raises(ValueError, match="'alpha'"):
        create_adversary("fgm", model, alpha=0.3)
    with pytest.raises(ValueError, match="Did you mean 'epsilon'"):
        create_adversary("pgd", model, epsilom=0.3)
    with pytest.raises(ValueError, match="steps"):
        PGD(model, steps=0)
    with pytest.raises(ValueError, match="epsilon"):
        FGM(model, epsilon=0)
    with pytest.raises(ValueError, match="params='nothing_like_this'"):
        AWP(model, params="nothing_like_this")


def test_backup_and_restore_grad_keep_the_same_tensors(bert):
    model, tokenizer = pair_model(bert)
    loss_of(model, *make_batch(tokenizer)).backward()
    pgd = PGD(model)
    before = {n: p.grad for n, p in model.named_parameters()}
    pgd.backup_grad()
    assert all(p.grad is None for p in model.parameters())
    pgd.restore_grad()
    assert all(p.grad is before[n] for n, p in model.named_parameters())
