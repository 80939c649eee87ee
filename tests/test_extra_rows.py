"""Sample weights in every loss, and extra labelled rows (pseudo labels, external data) merged into the
training folds only, with their own loss weight."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT, SAMPLE
from kagglekit.config import load_config
from kagglekit.data.batching import PairEncodings
from kagglekit.losses import get_loss
from kagglekit.train import train_folds

CONFIG = ROOT / "configs" / "uspppm.yaml"
SINGLE = ["bce", "mse", "huber", "pearson", "bce+0.5*pearson", "0.7*mse+0.3*pearson"]


def _single_batch(seed=0, n=9):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g), torch.rand(n, generator=g), torch.rand(n, generator=g) * 2


def _class_batch(seed=0, n=7, c=4):
    g = torch.Generator().manual_seed(seed)
    target = torch.softmax(torch.randn(n, c, generator=g), -1)
    return torch.randn(n, c, generator=g), target, torch.rand(n, generator=g) * 2


@pytest.mark.parametrize("name", SINGLE + ["ce", "kl"])
def test_unit_weights_change_nothing(name):
    logits, targets, _ = _class_batch() if name in ("ce", "kl") else _single_batch()
    fn = get_loss(name).fn
    torch.testing.assert_close(fn(logits, targets, torch.ones(len(logits))), fn(logits, targets), rtol=0, atol=1e-6)


def _per_row_numpy(name, logits, targets):
    x, y = logits.double().numpy(), targets.double().numpy()
    if name == "bce":
        return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    if name == "mse":
        return (x - y) ** 2
    if name == "huber":
        d = np.abs(x - y)
        return np.where(d <= 1, 0.5 * d**2, d - 0.5)
    log_p = x - np.log(np.exp(x).sum(-1, keepdims=True))
    if name == "ce":
        return -(y * log_p).sum(-1)
    return (y * (np.log(y) - log_p)).sum(-1)  # kl


@pytest.mark.parametrize("name", ["bce", "mse", "huber", "ce", "kl"])
def test_weighted_losses_are_the_mean_of_weighted_rows(name):
    """Computed another way (NumPy formulas): sum(w_i * loss_i) / B."""
    logits, targets, weights = _class_batch() if name in ("ce", "kl") else _single_batch()
    expected = (weights.double().numpy() * _per_row_numpy(name, logits, targets)).sum() / len(logits)
    assert get_loss(name).fn(logits, targets, weights).item() == pytest.approx(expected, rel=1e-5)


def test_weighted_pearson_is_the_frequency_weighted_correlation():
    """Integer weights are repeated rows: weight 2 on a row = that row twice; and NumPy's weighted covariance."""
    preds, labels, _ = _single_batch(n=8)
    weights = torch.tensor([1.0, 2.0, 1.0, 3.0, 1.0, 1.0, 2.0, 1.0])
    repeat = torch.repeat_interleave(torch.arange(8), weights.long())
    fn = get_loss("pearson").fn
    torch.testing.assert_close(fn(preds, labels, weights), fn(preds[repeat], labels[repeat]), rtol=0, atol=1e-6)
    cov = np.cov(preds.numpy(), labels.numpy(), aweights=weights.numpy())
    assert 1 - fn(preds, labels, weights).item() == pytest.approx(cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]), abs=1e-6)


def test_zero_weight_drops_a_row_from_the_gradient(tiny_bert):
    """bce with weight 0 on row k = bce over the other rows times (B-1)/B: the same gradient, scaled."""
    from kagglekit.models.pair_model import build_model
    from kagglekit.train.loop import compute_loss

    torch.manual_seed(0)
    model, tokenizer = build_model(tiny_bert, dropout=0.0)
    model.eval()
    a, b = ["engine housing", "fabric softener", "solar cell"], ["motor casing", "washing machine", "photovoltaic panel"]
    labels = torch.tensor([0.0, 0.75, 1.0])

    def grad(rows, weights=None):
        model.zero_grad()
        enc = PairEncodings(tokenizer, [a[i] for i in rows], [b[i] for i in rows], 32, labels[rows], weights=weights)
        batch = enc.collate(range(len(rows)))
        y, w = batch.pop("labels"), batch.pop("weights", None)
        compute_loss(model, batch, y, get_loss("bce").fn, None, w).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    weighted = grad([0, 1, 2], weights=[1.0, 0.0, 1.0])
    torch.testing.assert_close(weighted, grad([0, 2]) * 2 / 3, rtol=1e-4, atol=1e-7)


def test_pair_encodings_carry_weights(tiny_bert):
    from kagglekit.models.pair_model import load_tokenizer

    enc = PairEncodings(load_tokenizer(tiny_bert), ["a", "b c", "d"], ["e", "f", "g h"], 16, [0.0, 1.0, 0.5], weights=[1.0, 0.5, 0.25])
    assert enc.collate([2, 0])["weights"].tolist() == [0.25, 1.0]
    assert "weights" not in PairEncodings(load_tokenizer(tiny_bert), ["a"], ["b"], 16, [1.0]).collate([0])


def _pseudo_file(tmp_path, *, repeat_train_pair=False):
    """The sample's test rows with pseudo labels (new ids), optionally plus a copy of a training pair."""
    test = pd.read_csv(SAMPLE / "test.csv", dtype=str)
    extra = test.assign(id="pseudo:" + test["id"], score=0.5)
    if repeat_train_pair:
        row = pd.read_csv(SAMPLE / "train.csv", dtype={"id": str}, nrows=1).assign(id="copy:0")
        extra = pd.concat([extra, row], ignore_index=True)
    path = tmp_path / "pseudo.csv"
    extra.to_csv(path, index=False)
    return path, extra


def _args(backbone, out, *extra):
    return [f"backbone={backbone}", f"output_dir={out}", "max_rows=200", "n_folds=2", "epochs=1", "max_len=40",
            "lr=1e-3", "batch_size=8", *extra]


def test_extra_rows_train_with_their_weight_and_never_reach_validation(tiny_bert, tmp_path, monkeypatch):
    import kagglekit.train.loop as loop

    path, extra = _pseudo_file(tmp_path, repeat_train_pair=True)
    seen = []
    real = loop.train_step

    def spy(model, batch, **kw):
        seen.append(batch["weights"].cpu().numpy().copy())
        return real(model, batch, **kw)

    monkeypatch.setattr(loop, "train_step", spy)
    out = tmp_path / "run"
    card = train_folds(load_config(CONFIG, _args(tiny_bert, out, f"extra_train_csv={path}", "extra_weight=0.5")))
    folds = pd.read_csv(out / "folds.csv", dtype={"id": str})
    first = pd.read_csv(SAMPLE / "train.csv", dtype={"id": str}, nrows=1)["id"].iloc[0]
    copy_fold = int(folds.loc[folds["id"] == first, "fold"].iloc[0])  # the fold validating the copied pair
    for fold in (0, 1):
        aug = card["folds"][str(fold)]["augmentation"]
        left_out = 1 if fold == copy_fold else 0
        assert aug == {"extra_rows": len(extra) - left_out, "extra_left_out": left_out}
    weights = np.concatenate(seen)
    train_rows = (folds["fold"] != 0).sum() + (folds["fold"] != 1).sum()
    assert (weights == 1.0).sum() == train_rows  # one epoch per fold: every training row once
    assert (weights == 0.5).sum() == 2 * len(extra) - 1 and set(np.unique(weights)) == {0.5, 1.0}
    oof = pd.read_csv(out / "oof.csv", dtype={"id": str})
    assert sorted(oof["id"]) == sorted(folds["id"])  # extra rows are never validated, never in the oof
    assert json.loads((out / "run.json").read_text())["config"]["extra_weight"] == 0.5


@pytest.mark.parametrize("problem, setting, message", [
    ("clash", None, r"extra_train_csv: .*pseudo\.csv: 1 id\(s\) are also train_csv ids, e\.g\. \['bb153494ad21718a'\]"),
    ("range", None, r"pseudo\.csv column 'score' must hold numbers in \[0, 1\]; 1 row\(s\) do not: line 2 \(id 'pseudo:.*'\): 1\.5"),
    (None, "extra_weight=0", r"'extra_weight' must be > 0, got 0\.0; e\.g\. 0\.5 for pseudo labels"),
])
def test_bad_extra_rows_are_refused_before_anything_is_written(tiny_bert, tmp_path, problem, setting, message):
    path, extra = _pseudo_file(tmp_path)
    if problem == "clash":
        extra.loc[0, "id"] = "bb153494ad21718a"
    if problem == "range":
        extra.loc[0, "score"] = 1.5
    extra.to_csv(path, index=False)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        train_folds(load_config(CONFIG, _args(tiny_bert, out, f"extra_train_csv={path}", *([setting] if setting else []))))
    assert not out.exists()


def test_extra_weight_without_a_file_does_nothing_and_is_refused():
    with pytest.raises(ValueError, match="'extra_weight' .* does nothing without extra_train_csv"):
        load_config(CONFIG, ["extra_weight=0.5"]).validate()


def _pairs_files(tmp_path, pseudo_label):
    rng = np.random.default_rng(0)
    words = ["red", "car", "blue", "boat", "fast", "train", "slow", "plane", "big", "house"]
    rows = [(f"q{i}", " ".join(rng.choice(words, 3)), " ".join(rng.choice(words, 3)), int(rng.integers(0, 2))) for i in range(60)]
    pd.DataFrame(rows, columns=["id", "sentence1", "sentence2", "label"]).to_csv(tmp_path / "train.csv", index=False)
    extra = pd.DataFrame({"id": ["p0", "p1"], "sentence1": ["red car", "big boat"], "sentence2": ["blue car", "slow plane"],
                          "label": [pseudo_label, 0.2]})
    extra.to_csv(tmp_path / "pseudo.csv", index=False)
    return [f"train_csv={tmp_path / 'train.csv'}", "task=pairs", "cpc_dir=", "text_cols=sentence1,sentence2", "id_col=id",
            "label_type=binary", f"extra_train_csv={tmp_path / 'pseudo.csv'}", "extra_weight=0.3"]


def test_soft_pseudo_labels_for_a_binary_task(tiny_bert, tmp_path):
    """0/1 training labels, probabilities as pseudo labels: accepted, and trained with bce."""
    out = tmp_path / "run"
    card = train_folds(load_config(None, _args(tiny_bert, out, *_pairs_files(tmp_path, 0.7))))
    assert card["metric"] == "roc_auc" and card["loss"] == "bce"
    assert card["folds"]["0"]["augmentation"] == {"extra_rows": 2, "extra_left_out": 0}


def test_pseudo_labels_outside_a_binary_range_are_refused(tiny_bert, tmp_path):
    with pytest.raises(ValueError, match=r"extra_train_csv: .*pseudo\.csv: 1 label\(s\) outside train_csv's range \[0, 1\], "
                                         r"e\.g\. id 'p0' with 1\.5"):
        train_folds(load_config(None, _args(tiny_bert, tmp_path / "run", *_pairs_files(tmp_path, 1.5))))
    assert not (tmp_path / "run").exists()
