"""Pooling heads: each against a value computed another way, padding invariance, options, registry."""


import pytest
import torch
import torch.nn.functional as F

from kagglekit.models.heads import HEADS, POOLS, MeanPooling, create_head, head_options

pytestmark = pytest.mark.compat  # also under transformers 4.x (make test)

H, T, L = 6, 5, 4  # hidden size, tokens, encoder layers
MASK = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])


def inputs(seed=0):
    """Last layer (B, T, H), all layers (embeddings first) and a pooler output, with a right-padded mask."""
    g = torch.Generator().manual_seed(seed)
    layers = tuple(torch.randn(2, T, H, generator=g) for _ in range(L + 1))
    return layers[-1], {"all_hidden": layers, "pooler_output": torch.randn(2, H, generator=g)}


def run(head, hidden, mask, extra):
    head.eval()
    with torch.no_grad():
        return head(hidden, mask, **extra)


# (head, options) pairs covering every head and every pool a head can take
CASES = [(name, {}) for name in HEADS] + [
    (name, {"pool": pool}) for name in ("weighted_layers", "cnn", "lstm") for pool in POOLS
] + [("cnn", {"kernels": [1, 3, 5], "hidden": 4}), ("lstm", {"hidden": 3}), ("concat_last_k", {"layers": 2})]


def case_id(case):
    name, options = case
    return name + "".join(f"-{k}={v}" for k, v in options.items())


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_padding_never_changes_a_head(case):
    name, options = case
    torch.manual_seed(0)
    head = create_head(name, H, **options)
    hidden, extra = inputs()
    out = run(head, hidden, MASK, extra)
    assert out.shape == (2, head.out_features) and torch.isfinite(out).all()
    # garbage in the padded positions of every layer
    noisy = tuple(layer.clone() for layer in extra["all_hidden"])
    for layer in noisy:
        layer[0, 3:] = 1e4 * torch.randn(2, H)
    noisy_out = run(head, noisy[-1], MASK, {**extra, "all_hidden": noisy})
    torch.testing.assert_close(noisy_out, out, rtol=0, atol=1e-5)
    # the padded row alone, cut to its real length, gives the same vector
    short = {**extra, "all_hidden": tuple(layer[:1, :3] for layer in extra["all_hidden"]), "pooler_output": extra["pooler_output"][:1]}
    alone = run(head, hidden[:1, :3], MASK[:1, :3], short)
    torch.testing.assert_close(alone[0], out[0], rtol=0, atol=1e-5)


def test_cls_and_cls_pooler_by_hand():
    hidden, extra = inputs()
    assert torch.equal(run(create_head("cls", H), hidden, MASK, extra), hidden[:, 0])
    expected = torch.cat([hidden[:, 0], extra["pooler_output"]], dim=-1)
    assert torch.equal(run(create_head("cls_pooler", H), hidden, MASK, extra), expected)


def test_mean_pooling_equals_masked_sum_over_count():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    out = MeanPooling(3)(hidden, mask)
    expected = torch.stack([hidden[0, :2].sum(0) / 2, hidden[1].sum(0) / 4])
    assert torch.equal(out, expected)


def test_max_pooling_by_hand():
    hidden, extra = inputs()
    hidden = hidden.clone()
    hidden[0, 3:] = 100.0  # padding larger than any real value must not win
    expected = torch.stack([hidden[0, :3].max(0).values, hidden[1].max(0).values])
    assert torch.equal(run(create_head("max", H), hidden, MASK, extra), expected)


def test_attention_pooling_by_hand():
    torch.manual_seed(0)
    head = create_head("attention", H)
    hidden, extra = inputs()
    lin1, lin2 = head.attention.score[0], head.attention.score[2]
    for row, n in ((0, 3), (1, 5)):
        tokens = hidden[row, :n]  # (n, H)
        scores = lin2(torch.tanh(lin1(tokens))).squeeze(-1)  # (n,)
        expected = (torch.softmax(scores, 0).unsqueeze(-1) * tokens).sum(0)
        torch.testing.assert_close(run(head, hidden, MASK, extra)[row], expected, rtol=0, atol=1e-6)


def test_weighted_layers_by_hand():
    head = create_head("weighted_layers", H, layers=2)
    with torch.no_grad():
        head.layer_logits.copy_(torch.tensor([0.0, 1.0]))
    hidden, extra = inputs()
    w = torch.softmax(torch.tensor([0.0, 1.0]), 0)
    mixed = w[0] * extra["all_hidden"][-2] + w[1] * extra["all_hidden"][-1]
    expected = torch.stack([mixed[0, :3].mean(0), mixed[1].mean(0)])
    torch.testing.assert_close(run(head, hidden, MASK, extra), expected, rtol=0, atol=1e-6)
    # equal weights at start: the plain average of the top layers
    fresh = create_head("weighted_layers", H, layers=3, pool="cls")
    avg = sum(extra["all_hidden"][2:]) / 3
    torch.testing.assert_close(run(fresh, hidden, MASK, extra), avg[:, 0], rtol=0, atol=1e-6)


def test_concat_last_k_by_hand():
    hidden, extra = inputs()
    out = run(create_head("concat_last_k", H, layers=3), hidden, MASK, extra)
    layers = extra["all_hidden"]
    assert torch.equal(out, torch.cat([layers[4][:, 0], layers[3][:, 0], layers[2][:, 0]], dim=-1))
    assert out.shape == (2, 3 * H)
    with pytest.raises(ValueError, match=r"layers=5 but the backbone has 4 layers"):
        run(create_head("concat_last_k", H, layers=5), hidden, MASK, extra)


def test_cnn_by_hand():
    torch.manual_seed(0)
    head = create_head("cnn", H, kernels=[1, 3], hidden=4, pool="mean")
    hidden, extra = inputs()
    out = run(head, hidden, MASK, extra)
    for row, n in ((0, 3), (1, 5)):
        x = hidden[row : row + 1, :n].transpose(1, 2)  # the real tokens only, zero padding around
        feats = torch.cat([F.relu(F.conv1d(x, conv.weight, conv.bias, padding=conv.kernel_size[0] // 2)) for conv in head.convs], dim=1)
        torch.testing.assert_close(out[row], feats[0].mean(dim=1), rtol=0, atol=1e-6)


def test_lstm_by_hand():
    torch.manual_seed(0)
    head = create_head("lstm", H, pool="max")
    hidden, extra = inputs()
    out = run(head, hidden, MASK, extra)
    assert head.out_features == H  # hidden // 2 units per direction, two directions
    with torch.no_grad():
        for row, n in ((0, 3), (1, 5)):
            states, _ = head.lstm(hidden[row : row + 1, :n])  # unpadded: no packing needed
            torch.testing.assert_close(out[row], states[0].max(dim=0).values, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_layernorm_option_normalises_the_output(name):
    torch.manual_seed(0)
    plain = create_head(name, H)
    normed = create_head(name, H, layernorm=True)
    normed.load_state_dict({**plain.state_dict(), **{k: v for k, v in normed.state_dict().items() if k.startswith("norm.")}})
    hidden, extra = inputs()
    base = run(plain, hidden, MASK, extra)
    expected = F.layer_norm(base, (base.shape[-1],))
    torch.testing.assert_close(run(normed, hidden, MASK, extra), expected, rtol=0, atol=1e-5)


def test_empty_rows_give_zeros_not_nan():
    hidden, extra = inputs()
    empty = torch.zeros(2, T, dtype=torch.long)
    for name in ("mean", "max", "attention"):
        out = run(create_head(name, H), hidden, empty, extra)
        assert torch.equal(out, torch.zeros(2, H)), name


def test_registry_and_options():
    with pytest.raises(ValueError, match=r"unknown head 'gru'; valid heads are \['attention', 'cls', 'cls_pooler', 'cnn', "):
        create_head("gru", 8)
    assert isinstance(create_head(MeanPooling, 8), MeanPooling)  # a class passes straight through
    assert head_options("weighted_layers") == ["layers", "pool", "layernorm"]
    with pytest.raises(ValueError, match=r"head 'mean' takes no option 'layers' \(config key 'head_layers'\)"):
        create_head("mean", 8, layers=2)
    with pytest.raises(ValueError, match=r"pool='sum': valid pools are"):
        create_head("lstm", 8, pool="sum")
    with pytest.raises(ValueError, match=r"kernels must be odd"):
        create_head("cnn", 8, kernels=[2])
