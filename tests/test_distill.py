"""Distillation (`kagglekit.train.distill`, ``predict --per-fold``): the loss against hand computations, the average
of several teachers, and the fold rule: student fold K never trains on a value from a teacher model other than K."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT, SAMPLE
from kagglekit.config import load_config
from kagglekit.infer.per_fold import predict_per_fold
from kagglekit.infer.predict import predict_folder
from kagglekit.losses import get_loss
from kagglekit.train import train_folds
from kagglekit.train.distill import distill_loss, pack, read_teachers, unpack
from kagglekit.train.teacher_file import FULL_FOLD

CONFIG = ROOT / "configs" / "uspppm.yaml"
ROWS = 60


def _np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_bce(x, y):
    return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


# --- the loss, computed another way ------------------------------------------------------------------


def test_single_score_loss_mixes_bce_with_the_mse_to_the_teacher_in_the_label_space():
    g = torch.Generator().manual_seed(0)
    logits, labels, teacher = torch.randn(6, generator=g), torch.rand(6, generator=g), torch.rand(6, generator=g)
    mixed = distill_loss(get_loss("bce"), kind="single", width=1, weight=0.3)
    got = mixed.fn(logits, pack(labels, teacher, torch.ones(6))).item()
    x, y, t = (v.double().numpy() for v in (logits, labels, teacher))
    expected = 0.7 * _np_bce(x, y).mean() + 0.3 * ((1 / (1 + np.exp(-x)) - t) ** 2).mean()  # sigmoid: bce's predictions
    assert got == pytest.approx(expected, rel=1e-6)
    assert mixed.activation == "sigmoid" and mixed.outputs == ("single",)


def test_class_loss_is_the_kl_between_tempered_softmaxes_times_t_squared():
    g = torch.Generator().manual_seed(1)
    logits, teacher = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g) * 3
    target = torch.nn.functional.one_hot(torch.tensor([0, 3, 1, 1, 2]), 4).float()
    mixed = distill_loss(get_loss("ce"), kind="classes", width=4, weight=0.6, temperature=2.0)
    packed = pack(target, teacher, torch.ones(5))
    assert packed.shape == (5, 9)
    back = unpack(packed, 4, single=False)
    assert all(torch.equal(a, b) for a, b in zip(back, (target, teacher, torch.ones(5))))
    x, t, y = logits.double().numpy(), teacher.double().numpy(), target.numpy()
    ce = -(y * np.log(_np_softmax(x))).sum(-1).mean()
    p_t, p_s = _np_softmax(t / 2), _np_softmax(x / 2)
    kl = (p_t * (np.log(p_t) - np.log(p_s))).sum(-1).mean() * 4
    assert mixed.fn(logits, packed).item() == pytest.approx(0.4 * ce + 0.6 * kl, rel=1e-6)


def test_rows_without_a_teacher_take_the_label_loss_alone_and_row_weights_weigh_both():
    g = torch.Generator().manual_seed(2)
    logits, labels, teacher = torch.randn(5, generator=g), torch.rand(5, generator=g), torch.rand(5, generator=g)
    mask, weights = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]), torch.tensor([1.0, 0.5, 2.0, 1.0, 1.0])
    mixed = distill_loss(get_loss("mse"), kind="single", width=1, weight=0.25)
    x, y, t, m, w = (v.double().numpy() for v in (logits, labels, teacher, mask, weights))
    label, dist = (x - y) ** 2, (x - t) ** 2  # identity: mse's predictions are the logits
    expected = (w * (m * (0.75 * label + 0.25 * dist) + (1 - m) * label)).mean()
    assert mixed.fn(logits, pack(labels, teacher, mask), weights).item() == pytest.approx(expected, rel=1e-6)
    alone = distill_loss(get_loss("mse"), kind="single", width=1, weight=1.0)  # weight 1: the teacher alone where it has values
    assert alone.fn(logits, pack(labels, teacher, torch.ones(5))).item() == pytest.approx(dist.mean(), rel=1e-6)


# --- teacher files and the fold rule, on hand-made files ------------------------------------------------


IDS, FOLDS = ["a", "b", "c", "d", "e", "f"], [0, 0, 1, 1, 2, 2]


def _frame():
    return pd.DataFrame({"id": IDS, "fold": FOLDS, "label": [0.0, 0.25, 0.5, 0.75, 1.0, 0.5]})


def _per_fold(path, value, models=(0, 1, 2), classes=0):
    """A per-fold file: every id under each teacher model, ``value(model, index)`` its pred (or its logit row)."""
    rows = []
    for m in models:
        for i, id_ in enumerate(IDS):
            row = {"id": id_, "fold": "full" if m == FULL_FOLD else m, "row_fold": FOLDS[i]}
            v = value(m, i)
            row.update({f"logit_{c}": v[c] for c in range(classes)} if classes else {"pred": v})
            rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _teachers(paths, *, kind="single", classes=1, folds=(0, 1, 2), full=False):
    cfg = SimpleNamespace(teacher_oof=[str(p) for p in paths], distill_weight=0.5, distill_temperature=1.0)
    return read_teachers(cfg, _frame(), kind, classes, "sigmoid", folds=folds, full=full)


def test_fold_k_takes_the_values_of_teacher_model_k_alone(tmp_path):
    teachers = _teachers([_per_fold(tmp_path / "t.csv", lambda m, i: 0.1 * (m + 1) + 0.01 * i)])
    for k in range(3):
        train = [i for i, f in enumerate(FOLDS) if f != k]
        table = teachers.values(k)
        assert table.index.tolist() == [IDS[i] for i in train]  # fold k's training ids, none of its validation ids
        np.testing.assert_allclose(table[0].to_numpy(), [0.1 * (k + 1) + 0.01 * i for i in train], rtol=0, atol=1e-12)


def test_several_teachers_are_averaged_scores_by_mean_and_classes_by_distribution(tmp_path):
    one = _per_fold(tmp_path / "1.csv", lambda m, i: 0.2 + 0.1 * i)
    two = _per_fold(tmp_path / "2.csv", lambda m, i: 0.6 - 0.05 * i)
    np.testing.assert_allclose(_teachers([one, two]).values(0)[0].to_numpy(), [0.4 + 0.025 * i for i in (2, 3, 4, 5)], atol=1e-12)

    rng = np.random.default_rng(0)
    la, lb = rng.normal(size=(6, 3)) * 2, rng.normal(size=(6, 3)) * 2
    files = [_per_fold(tmp_path / "c1.csv", lambda m, i: la[i], classes=3), _per_fold(tmp_path / "c2.csv", lambda m, i: lb[i], classes=3)]
    got = _teachers(files, kind="classes", classes=3).values(2).to_numpy()
    expected = np.log((_np_softmax(la) + _np_softmax(lb)) / 2)[:4]  # fold 2's training rows: a, b, c, d
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    probs = pd.read_csv(files[0]).rename(columns={f"logit_{c}": f"prob_{c}" for c in range(3)})
    probs[[f"prob_{c}" for c in range(3)]] = _np_softmax(la)[np.tile(np.arange(6), 3)]
    probs.to_csv(tmp_path / "p.csv", index=False)  # probabilities read as their logs: the same distribution
    np.testing.assert_allclose(_np_softmax(_teachers([tmp_path / "p.csv"], kind="classes", classes=3).values(0).to_numpy()),
                               _np_softmax(la)[2:], atol=1e-9)


def test_each_training_row_gets_its_value_swapped_copies_their_source_and_closure_and_extra_rows_none(tmp_path):
    teachers = _teachers([_per_fold(tmp_path / "t.csv", lambda m, i: 0.1 * m + 0.01 * i)])
    rows = pd.DataFrame({"id": ["c", "f", "swap:c", "aug:0", "swap:aug:0", "pseudo:1"], "fold": [1, 2, 1, 1, 1, -1]})
    fold = teachers.for_rows(rows, 0)
    np.testing.assert_allclose(fold.values[:, 0], [0.02, 0.05, 0.02, 0, 0, 0], atol=1e-7)
    assert fold.mask.tolist() == [1, 1, 1, 0, 0, 0]
    batch = fold.pack(torch.tensor([0.5, 0.25]), [2, 3])
    torch.testing.assert_close(batch, torch.tensor([[0.5, 0.02, 1.0], [0.25, 0.0, 0.0]]))


def test_the_full_fit_takes_a_full_fits_rows_else_the_mean_of_the_fold_models(tmp_path):
    folds_only = _per_fold(tmp_path / "t.csv", lambda m, i: 0.1 * m + 0.01 * i)
    np.testing.assert_allclose(_teachers([folds_only], folds=(), full=True).values(None)[0], [0.1 + 0.01 * i for i in range(6)], atol=1e-12)
    with_full = _per_fold(tmp_path / "f.csv", lambda m, i: 0.9 if m == FULL_FOLD else 0.1, models=(0, 1, 2, FULL_FOLD))
    assert _teachers([with_full], folds=(), full=True).values(None)[0].tolist() == [0.9] * 6
    pd.DataFrame({"id": IDS, "pred": 0.3}).to_csv(tmp_path / "nofold.csv", index=False)  # no fold column: a full fit's file
    assert _teachers([tmp_path / "nofold.csv"], folds=(), full=True).values(None)[0].tolist() == [0.3] * 6
    pd.DataFrame({"id": IDS, "fold": FOLDS, "label": 0, "pred": 0.4}).to_csv(tmp_path / "oof.csv", index=False)
    assert _teachers([tmp_path / "oof.csv"], folds=(), full=True).values(None)[0].tolist() == [0.4] * 6


@pytest.mark.parametrize("problem, message", [
    ("oof", r"out-of-fold file .* labels would leak .* kagglekit predict --models TEACHER_RUN --data train.csv --per-fold"),
    ("full", r"full fit's predictions .* leak into the student's targets in every fold\. Use it only for the full fit"),
    ("row_fold", r"column 'row_fold' disagrees with this run's folds for 2 id\(s\), e\.g\. id 'a': fold 1 in the teacher run, "
                 r"fold 0 here, so teacher model 0 trained on a row that student fold 0 validates\. .*n_folds, fold_seed and data"),
    ("missing", r"no value for 1 of the 4 training row\(s\) of fold 0 .* e\.g\. ids \['e'\]"),
    ("no_model", r"no rows of teacher model 0 \(fold 0; it has \[1, 2\]\): .* Train the teacher run's fold 0"),
])
def test_files_that_would_leak_or_lack_values_are_refused(tmp_path, problem, message):
    path = _per_fold(tmp_path / "t.csv", lambda m, i: 0.5)
    frame = pd.read_csv(path, dtype={"id": str})
    if problem == "oof":
        frame = frame[frame["fold"] == frame["row_fold"]].drop(columns="row_fold")
    elif problem == "full":
        frame = frame[frame["fold"] == 0].drop(columns=["fold", "row_fold"])
    elif problem == "row_fold":
        frame.loc[frame["id"].isin(["a", "b"]), "row_fold"] = 1
    elif problem == "missing":
        frame = frame[~((frame["id"] == "e") & (frame["fold"] == 0))]
    else:
        frame = frame[frame["fold"] != 0]
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=message):
        _teachers([path], folds=(0,))


# --- end to end: a teacher run, its per-fold file, students ------------------------------------------------


def _args(env, out, *extra):
    return [f"train_csv={env.data}", f"backbone={env.bert}", f"output_dir={out}", "n_folds=3", "epochs=1", "max_len=32",
            "batch_size=8", "device=cpu", *extra]


@pytest.fixture(scope="module")
def env(tiny_models, tmp_path_factory):
    """A teacher run (3 folds and the full fit) on the sample's first rows, and its per-fold file on those rows."""
    root = tmp_path_factory.mktemp("distill")
    data = root / "train.csv"
    pd.read_csv(SAMPLE / "train.csv", dtype=str, nrows=ROWS).to_csv(data, index=False)
    env = SimpleNamespace(root=root, data=data, bert=tiny_models("bert"), run=root / "teacher")
    train_folds(load_config(CONFIG, _args(env, env.run)), folds="all,full")
    env.file = root / "teacher.csv"
    env.per_fold = predict_per_fold([env.run], data, env.file, device="cpu")
    env.folds = pd.read_csv(env.run / "folds.csv", dtype={"id": str})
    env.labels = pd.read_csv(data, dtype={"id": str}).set_index("id")["score"]
    return env


def test_per_fold_rows_are_each_fold_models_predictions_and_agree_with_the_oof(env):
    frame = pd.read_csv(env.file, dtype={"id": str, "fold": str})
    assert list(frame.columns) == ["id", "fold", "row_fold", "pred"] and frame.equals(env.per_fold.astype({"fold": str}))
    assert frame["fold"].tolist() == [k for k in ("0", "1", "2", "full") for _ in range(ROWS)]
    full = frame[frame["fold"] == "full"]
    alone, _ = predict_folder(env.run / "full", env.data, device="cpu")
    np.testing.assert_allclose(full["pred"].to_numpy(), alone["pred"].to_numpy(), rtol=0, atol=1e-6)
    own = env.folds.set_index("id")["fold"]
    oof = pd.read_csv(env.run / "oof.csv", dtype={"id": str}).set_index("id")["pred"]
    for k in range(3):
        block = frame[frame["fold"] == str(k)].set_index("id")
        assert block.index.tolist() == env.labels.index.tolist()
        assert (block["row_fold"] == own.reindex(block.index)).all()
        alone, _ = predict_folder(env.run / f"fold{k}", env.data, device="cpu")
        np.testing.assert_allclose(block["pred"].to_numpy(), alone["pred"].to_numpy(), rtol=0, atol=1e-6)
        valid = block[block["row_fold"] == k]  # teacher model k on its own validation rows: its out-of-fold predictions
        np.testing.assert_allclose(valid["pred"].to_numpy(), oof.reindex(valid.index).to_numpy(), rtol=0, atol=1e-5)


def _spy(monkeypatch):
    """Capture the per-row teacher targets each model trains with and every batch's packed labels."""
    import kagglekit.train.loop as loop
    from kagglekit.train.distill import Teachers

    seen = SimpleNamespace(rows=[], batches=[])
    real_rows, real_step = Teachers.for_rows, loop.train_step

    def for_rows(self, rows, fold, **kw):
        out = real_rows(self, rows, fold, **kw)
        seen.rows.append((fold, rows["id"].tolist(), out))
        return out

    def step(model, batch, **kw):
        seen.batches.append(batch["labels"].cpu().clone())
        return real_step(model, batch, **kw)

    monkeypatch.setattr(Teachers, "for_rows", for_rows)
    monkeypatch.setattr(loop, "train_step", step)
    return seen


def test_student_fold_k_never_trains_on_another_teacher_models_value(env, tmp_path, monkeypatch):
    """The closure-leak test's way: rows made by teacher model K hold a code; the other models' rows hold the labels of
    fold K's validation rows (what a leak would carry). Student fold K must see codes only, each on its own row."""
    k = 1
    valid_labels = env.labels[env.folds.loc[env.folds["fold"] == k, "id"]].to_numpy(dtype=float)
    code = {id_: 0.3 + 0.001 * i for i, id_ in enumerate(env.labels.index)}
    crafted = env.per_fold.copy()
    mine = crafted["fold"] == k
    crafted.loc[mine, "pred"] = crafted.loc[mine, "id"].map(code)
    crafted.loc[~mine, "pred"] = np.resize(valid_labels, int((~mine).sum()))
    crafted.to_csv(tmp_path / "crafted.csv", index=False)
    seen = _spy(monkeypatch)
    train_folds(load_config(CONFIG, _args(env, tmp_path / "student", f"teacher_oof={tmp_path / 'crafted.csv'}", "swap=true",
                                          "distill_weight=0.5")), folds=[k])
    (fold, ids, teacher), = seen.rows
    assert fold == k and not set(ids) & set(env.folds.loc[env.folds["fold"] == k, "id"])  # no validation row among them
    for id_, value, has in zip(ids, teacher.values[:, 0], teacher.mask):
        source = id_[len("swap:"):] if id_.startswith("swap:") else id_
        assert has == 1 and value == pytest.approx(code[source], abs=1e-7), id_  # its own (or its source's) teacher-k value
    assert any(i.startswith("swap:") for i in ids)
    targets = torch.cat([b[:, 1] for b in seen.batches]).double().numpy()  # packed: label, teacher, mask

    def near(values, allowed):  # (N,) whether each value is one of `allowed`, up to float32 rounding
        return (np.abs(values[:, None] - np.asarray(allowed, dtype=float)[None, :]) < 1e-6).any(axis=1)

    assert len(targets) == len(ids) and near(targets, list(code.values())).all()
    assert not near(targets, valid_labels).any()


def test_distill_weight_1_reproduces_a_teachers_values_on_the_training_rows_better_than_labels(env, tmp_path):
    """The teacher says 1 - label: a student that learns from it alone ends nearer to it (and follows it) on its training
    rows, where one trained on the labels follows them, away from the teacher."""
    flipped = env.per_fold.assign(pred=1.0 - env.per_fold["id"].map(env.labels.astype(float)))
    flipped.to_csv(tmp_path / "flipped.csv", index=False)
    train_ids = env.folds.loc[env.folds["fold"] != 0, "id"]
    teacher = 1 - env.labels[train_ids].astype(float)
    error, corr = {}, {}
    for name, extra in (("teacher", [f"teacher_oof={tmp_path / 'flipped.csv'}", "distill_weight=1"]), ("labels", [])):
        out = tmp_path / name
        train_folds(load_config(CONFIG, _args(env, out, "epochs=4", "lr=3e-3", "head_lr=1e-2", *extra)), folds=[0])
        preds = predict_folder(out / "fold0", env.data, device="cpu")[0].set_index("id")["pred"][train_ids]
        error[name], corr[name] = float(((preds - teacher) ** 2).mean()), float(np.corrcoef(preds, teacher)[0, 1])
    assert error["teacher"] < error["labels"] and corr["teacher"] > 0.2 and corr["labels"] < 0, (error, corr)


def test_a_classes_teacher_writes_logits_and_a_classes_student_distils_them(env, tmp_path, monkeypatch):
    run = tmp_path / "classes"
    train_folds(load_config(CONFIG, _args(env, run, "output=classes")), folds=[0])
    frame = predict_per_fold([run], env.data, tmp_path / "t.csv", device="cpu", average="logit")
    values = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    logits = frame[[f"logit_{c}" for c in range(5)]].to_numpy()
    np.testing.assert_allclose(_np_softmax(logits) @ values, frame["pred"].to_numpy(), atol=1e-6)  # pred: the expected value
    seen = _spy(monkeypatch)
    card = train_folds(load_config(CONFIG, _args(env, tmp_path / "student", "output=classes", f"teacher_oof={tmp_path / 't.csv'}",
                                                 "distill_temperature=2")), folds=[0])
    assert "0" in card["folds"] and seen.batches[0].shape[1] == 2 * 5 + 1  # one-hot target, teacher logits, mask
    (_, ids, teacher), = seen.rows
    np.testing.assert_allclose(_np_softmax(teacher.values), _np_softmax(frame.set_index("id").loc[ids, [f"logit_{c}" for c in range(5)]]
                                                                         .to_numpy()), atol=1e-6)


def test_a_run_continues_only_with_the_teacher_values_it_began_with(env, tmp_path, monkeypatch):
    """The run card keeps the digest of the fold models' values: a later fold (or --resume) with other values is refused,
    a moved copy of the same file is not; the full fit alone may distil from a full fit's file, refused for folds."""
    out = tmp_path / "student"
    env.per_fold.to_csv(tmp_path / "a.csv", index=False)
    train_folds(load_config(CONFIG, _args(env, out, f"teacher_oof={tmp_path / 'a.csv'}")), folds=[0])
    env.per_fold.assign(pred=env.per_fold["pred"] * 0.5).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(ValueError, match=r"teacher_oof: \[.*b\.csv'\] is not the file run .* was trained on .*contents differ"):
        train_folds(load_config(CONFIG, _args(env, out, f"teacher_oof={tmp_path / 'b.csv'}")), folds=[1])
    with pytest.raises(ValueError, match=r"teacher_oof: \(none\) is not the file run"):  # distillation cannot be dropped mid-run
        train_folds(load_config(CONFIG, _args(env, out)), folds=[1])
    (tmp_path / "moved").mkdir()
    env.per_fold.to_csv(tmp_path / "moved" / "a.csv", index=False)
    card = train_folds(load_config(CONFIG, _args(env, out, f"teacher_oof={tmp_path / 'moved' / 'a.csv'}")), folds=[1])
    assert sorted(card["folds"]) == ["0", "1"]
    full = pd.DataFrame({"id": env.labels.index, "pred": np.linspace(0.1, 0.9, ROWS)})  # no fold column: a full fit's values
    full.to_csv(tmp_path / "full.csv", index=False)
    with pytest.raises(ValueError, match=r"full.csv holds a full fit's predictions .* Use it only for the full fit"):
        train_folds(load_config(CONFIG, _args(env, out, f"teacher_oof={tmp_path / 'full.csv'}")), folds=[2])
    seen = _spy(monkeypatch)
    card = train_folds(load_config(CONFIG, _args(env, out, f"teacher_oof={tmp_path / 'full.csv'}")), folds="full")
    (fold, ids, teacher), = seen.rows
    assert fold is None and "full" in card and ids == env.labels.index.tolist()
    np.testing.assert_allclose(teacher.values[:, 0], full["pred"], atol=1e-6)
