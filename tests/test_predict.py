"""predict: fold averaging (probabilities or logits), seed folders and full-data fits (full_weight), per-run settings,
swap TTA, blend weights, submission checks.

References are computed another way: each fold's model run on one batch padded by the tokenizer
itself (no length sorting, no kit batching), activations and averages written out in numpy.
"""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import rankdata

import kagglekit.infer.inputs as inputs_module
import kagglekit.infer.predict as predict_module
from conftest import SAMPLE, perturbed_copy
from kagglekit.cli import main
from kagglekit.config import load_config
from kagglekit.data.recipes import UspppmRecipe, get_recipe
from kagglekit.infer.ensemble import ensemble
from kagglekit.models.pair_model import load_model_folder
from kagglekit.infer.inputs import InputCache, swapped
from kagglekit.infer.predict import models_path, predict, predict_folder, predict_run
from kagglekit.infer.submission import check_submission
from kagglekit.models.forward import run_logits as forward_logits
from kagglekit.run import RunFolder, find_fold_dirs
from kagglekit.train import train_folds

USPPPM = ["task=uspppm", f"train_csv={SAMPLE / 'train.csv'}", f"test_csv={SAMPLE / 'test.csv'}", f"cpc_dir={SAMPLE / 'cpc_titles'}"]
CPU = {"device": "cpu"}  # the references run on the CPU in fp32: so does predict, on any machine
COMMON = ["n_folds=2", "epochs=1", "max_rows=200", "lr=1e-3", "batch_size=32"]


def _train(out, backbone, *settings):
    cfg = load_config(None, [*settings, *COMMON, f"backbone={backbone}", f"output_dir={out}"])
    train_folds(cfg, folds="all")
    return out


def _write_pairs(root):
    """The sample's anchor/target pairs as a pairs data set with an STS-B-like 0-5 label."""
    train = pd.read_csv(SAMPLE / "train.csv", dtype={"id": str})
    test = pd.read_csv(SAMPLE / "test.csv", dtype={"id": str})
    pd.DataFrame({"id": train["id"], "sentence1": train["anchor"], "sentence2": train["target"], "label": train["score"] * 5}).to_csv(root / "pairs_train.csv", index=False)
    pd.DataFrame({"id": test["id"], "sentence1": test["anchor"], "sentence2": test["target"]}).to_csv(root / "pairs_test.csv", index=False)
    return root / "pairs_train.csv", root / "pairs_test.csv"


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory):
    """a: bert, bce, max_len 32. b: electra, 5 classes, max_len 24, section titles only (another recipe
    state and tokenizer). c: pairs, mse, label_scale 5, swap=true."""
    root = tmp_path_factory.mktemp("predict_runs")
    pairs_train, pairs_test = _write_pairs(root)
    a = _train(root / "a", tiny_models("bert"), *USPPPM, "max_len=32")
    b = _train(root / "b", tiny_models("electra"), *USPPPM, "max_len=24", "cpc_levels=section", "output=classes")
    c = _train(root / "c", tiny_models("bert"), "task=pairs", f"train_csv={pairs_train}", f"test_csv={pairs_test}", "text_cols=sentence1,sentence2",
               "label_col=label", "id_col=id", "label_scale=5", "loss=mse", "swap=true", "max_len=32")
    return SimpleNamespace(a=a, b=b, c=c, root=root, test=SAMPLE / "test.csv", pairs_test=pairs_test)


def _reference_logits(folder, data, *, swap=False):
    """One fold's logits on the test file: the whole file in one batch padded by the tokenizer."""
    model, tokenizer, meta = load_model_folder(folder)
    frame = get_recipe(meta.task).read_test(data, meta.recipe_state)
    first, second = (frame["text_b"], frame["text_a"]) if swap else (frame["text_a"], frame["text_b"])
    batch = tokenizer(list(first), list(second), truncation="longest_first", max_length=meta.max_len, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")})
    return logits.double().numpy(), meta


def _activate(logits, meta):
    if meta.activation == "sigmoid":
        return 1 / (1 + np.exp(-logits))
    if meta.activation == "expected":
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)) @ np.asarray(meta.output.values)
    return logits


@pytest.mark.parametrize("run_name", ["a", "b"])
def test_fold_average_of_probabilities_or_logits_matches_a_padded_reference(runs, run_name):
    run = getattr(runs, run_name)
    pairs = [_reference_logits(f, runs.test) for f in find_fold_dirs(run)]
    meta = pairs[0][1]
    by_prob = np.mean([_activate(logits, meta) for logits, _ in pairs], axis=0)
    by_logit = _activate(np.mean([logits for logits, _ in pairs], axis=0), meta)
    assert np.abs(by_prob - by_logit).max() > 1e-5  # the two averages differ here, so the test tells them apart
    got_prob = predict_run(run, InputCache(runs.test), average="prob", **CPU).preds
    got_logit = predict_run(run, InputCache(runs.test), average="logit", **CPU).preds
    np.testing.assert_allclose(got_prob, by_prob, rtol=0, atol=2e-6)
    np.testing.assert_allclose(got_logit, by_logit, rtol=0, atol=2e-6)


def test_identity_outputs_average_the_same_either_way(runs):
    prob = predict_run(runs.c, InputCache(runs.pairs_test), average="prob", **CPU).preds
    logit = predict_run(runs.c, InputCache(runs.pairs_test), average="logit", **CPU).preds
    np.testing.assert_allclose(prob, logit, rtol=0, atol=1e-6)


def test_each_run_keeps_its_settings_and_the_test_file_is_read_once_per_recipe_state(runs, monkeypatch, tmp_path):
    a_copy = shutil.copytree(runs.a, tmp_path / "a_copy")  # the same recipe state and tokenizer as run a
    card = json.loads((a_copy / "run.json").read_text())  # another run's identity: a plain copy is the same run, refused
    (a_copy / "run.json").write_text(json.dumps({**card, "run_id": "a-copy"}))
    reads, encodings = [], []
    read_test, pair_encodings = UspppmRecipe.read_test, inputs_module.PairEncodings

    def counting_read(self, path, state):
        reads.append(state.get("cpc_levels"))
        return read_test(self, path, state)

    def counting_encodings(tokenizer, text_a, text_b, max_len, **kwargs):
        encodings.append(max_len)
        return pair_encodings(tokenizer, text_a, text_b, max_len, **kwargs)

    monkeypatch.setattr(UspppmRecipe, "read_test", counting_read)
    monkeypatch.setattr(inputs_module, "PairEncodings", counting_encodings)
    sub = predict([runs.a, runs.b, a_copy], runs.test, tmp_path / "submission.csv", **CPU)
    assert sorted(reads) == [["section"], ["section", "class"]]  # 6 folds, 2 recipe states
    assert sorted(encodings) == [24, 32]  # 2 tokenizers / max_len
    monkeypatch.undo()

    models = pd.read_csv(models_path(tmp_path / "submission.csv"), dtype={"id": str})
    assert list(models.columns) == ["id", "a", "b", "a_copy"] and models["id"].tolist() == sub["id"].tolist()
    for name, run in (("a", runs.a), ("b", runs.b)):  # each run on its own, through one model folder at a time
        alone = np.mean([predict_folder(f, runs.test, **CPU)[0]["pred"].to_numpy() for f in find_fold_dirs(run)], axis=0)
        np.testing.assert_allclose(models[name], alone, rtol=0, atol=1e-9)
    np.testing.assert_allclose(models["a_copy"], models["a"], rtol=0, atol=0)
    np.testing.assert_allclose(sub["score"], models[["a", "b", "a_copy"]].mean(axis=1), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------- seeds and full fits


@pytest.fixture(scope="module")
def seeded(runs, tmp_path_factory):
    """Run a's two folds plus a second seed of fold 0 and two full fits: 3 fold models, 2 full models, all different."""
    run = tmp_path_factory.mktemp("seeded") / "s"
    for name in ("fold0", "fold1"):
        shutil.copytree(runs.a / name, run / name)
    perturbed_copy(runs.a / "fold0", RunFolder(run).fold_dir(0, seed=43), 1, seed=43)
    perturbed_copy(runs.a / "fold1", RunFolder(run).full_dir(), 2, fold=None, full=True)
    perturbed_copy(runs.a / "fold0", RunFolder(run).full_dir(seed=43), 3, fold=None, full=True, seed=43)
    return run


def _alone(folder, data):
    """One model folder's predictions, predicted on its own."""
    return predict_folder(folder, data, **CPU)[0]["pred"].to_numpy()


def _alone_logits(folder, data):
    """One model folder's logits, computed on its own through the model, its tokenizer and the recipe's reading."""
    model, tokenizer, meta = load_model_folder(folder)
    frame = get_recipe(meta.task).read_test(data, meta.recipe_state)
    enc = inputs_module.PairEncodings(tokenizer, frame["text_a"], frame["text_b"], meta.max_len)
    return forward_logits(model, enc, batch_size=64, device=torch.device("cpu")).astype(np.float64)


def test_seed_folders_and_full_fits_count_as_one_model_each_by_default(runs, seeded):
    names = ["fold0", "fold0-seed43", "fold1", "full", "full-seed43"]
    alone = [_alone(seeded / n, runs.test) for n in names]
    assert min(np.abs(alone[i] - alone[j]).max() for i in range(5) for j in range(i)) > 1e-3  # five different models
    got = predict_run(seeded, InputCache(runs.test), **CPU).preds
    np.testing.assert_allclose(got, np.mean(alone, axis=0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("weight", [0.3, 0.8])
def test_full_weight_gives_the_full_fits_that_share_of_probabilities(runs, seeded, weight):
    folds = np.mean([_alone(seeded / n, runs.test) for n in ("fold0", "fold0-seed43", "fold1")], axis=0)
    full = np.mean([_alone(seeded / n, runs.test) for n in ("full", "full-seed43")], axis=0)
    got = predict_run(seeded, InputCache(runs.test), full_weight=weight, **CPU).preds
    np.testing.assert_allclose(got, (1 - weight) * folds + weight * full, rtol=0, atol=1e-12)
    equal = predict_run(seeded, InputCache(runs.test), **CPU).preds
    assert np.abs(got - equal).max() > 1e-4  # the share changed the submission


@pytest.mark.parametrize("weight", [None, 0.3, 1])
def test_a_scorer_weighs_seeds_and_full_fits_as_predict_does(runs, seeded, weight):
    from kagglekit.infer.scorer import Scorer

    scorer = Scorer.from_run(seeded, full_weight=weight, **CPU)
    frame = pd.read_csv(runs.test, dtype={"id": str})
    rows = list(frame[["anchor", "target", "context"]].itertuples(index=False, name=None))
    expected = predict_run(seeded, InputCache(runs.test), full_weight=weight, **CPU).preds
    np.testing.assert_allclose(scorer.predict(rows), expected, rtol=0, atol=1e-6)
    assert len(scorer.folders) == {None: 5, 0.3: 5, 1: 2}[weight]  # a share of 1: only the full fits are loaded


def test_full_weight_with_logit_averaging_weighs_the_logits(runs, seeded):
    folds = np.mean([_alone_logits(seeded / n, runs.test) for n in ("fold0", "fold0-seed43", "fold1")], axis=0)
    full = np.mean([_alone_logits(seeded / n, runs.test) for n in ("full", "full-seed43")], axis=0)
    reference = 1 / (1 + np.exp(-(0.6 * folds + 0.4 * full)))
    got = predict_run(seeded, InputCache(runs.test), full_weight=0.4, average="logit", **CPU).preds
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-6)  # float32 sigmoid, as every activation
    by_prob = predict_run(seeded, InputCache(runs.test), full_weight=0.4, average="prob", **CPU).preds
    assert np.abs(got - by_prob).max() > 1e-5


def test_a_share_of_0_or_1_predicts_only_the_models_that_count(runs, seeded, monkeypatch):
    seen = []
    folder_outputs = predict_module.folder_outputs

    def counting(folder, *args, **kwargs):
        seen.append(folder.name)
        return folder_outputs(folder, *args, **kwargs)

    monkeypatch.setattr(predict_module, "folder_outputs", counting)
    only_full = predict_run(seeded, InputCache(runs.test), full_weight=1, **CPU).preds
    assert seen == ["full", "full-seed43"]
    np.testing.assert_allclose(only_full, np.mean([_alone(seeded / n, runs.test) for n in seen], axis=0), rtol=0, atol=1e-12)
    seen.clear()
    only_folds = predict_run(seeded, InputCache(runs.test), full_weight=0.0, **CPU).preds
    assert seen == ["fold0", "fold0-seed43", "fold1"]
    np.testing.assert_allclose(only_folds, np.mean([_alone(seeded / n, runs.test) for n in seen], axis=0), rtol=0, atol=1e-12)


def test_full_weight_needs_a_full_fit_in_every_run_and_a_share_in_0_1(runs, seeded, tmp_path):
    with pytest.raises(ValueError, match=rf"--full-weight 0.5: run {runs.a} has no full-data model \(no full/ or full-seed\*/"):
        predict([seeded, runs.a], runs.test, tmp_path / "s.csv", full_weight=0.5, **CPU)
    for bad in (1.5, -0.1, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match=r"--full-weight .*: expected a number in \[0, 1\]"):
            predict([seeded], runs.test, tmp_path / "s.csv", full_weight=bad, **CPU)
    only_full = tmp_path / "only_full"
    shutil.copytree(seeded / "full", only_full / "full")
    with pytest.raises(ValueError, match=rf"--full-weight 0.5: run {only_full} has no CV fold model"):
        predict([only_full], runs.test, full_weight=0.5, **CPU)
    assert list(tmp_path.iterdir()) == [only_full]  # nothing written


def test_cli_full_weight_reaches_the_submission(runs, seeded, tmp_path):
    out = tmp_path / "sub.csv"
    assert main(["predict", "--models", str(seeded), "--data", str(runs.test), "--out", str(out), "--device", "cpu",
                 "--full-weight", "0.3"]) == 0
    expected = predict([seeded], runs.test, full_weight=0.3, **CPU)
    np.testing.assert_array_equal(pd.read_csv(out)["score"].to_numpy(), expected["score"].to_numpy())


def test_swap_tta_averages_both_text_orders_of_every_fold(runs):
    pairs = [_reference_logits(f, runs.pairs_test, swap=swap) for f in find_fold_dirs(runs.c) for swap in (False, True)]
    reference = 5 * np.mean([logits for logits, _ in pairs], axis=0)  # identity output, label_scale 5
    plain = predict_run(runs.c, InputCache(runs.pairs_test), **CPU).preds
    tta = predict_run(runs.c, InputCache(runs.pairs_test), tta="swap", **CPU).preds
    np.testing.assert_allclose(tta, reference, rtol=0, atol=1e-5)
    assert np.abs(tta - plain).max() > 1e-4  # the swapped order really was predicted


def test_swapped_view_exchanges_the_texts_and_every_a_b_feature_pair():
    frame = pd.DataFrame({"id": ["1"], "text_a": ["x"], "text_b": ["y"], "freq_a": [2.0], "freq_b": [5.0], "jaccard": [0.3], "extra_a": [7.0]})
    out = swapped(frame)
    assert list(out.columns) == list(frame.columns)
    assert out.iloc[0].tolist() == ["1", "y", "x", 5.0, 2.0, 0.3, 7.0]  # extra_a has no partner: it stays


def test_swap_tta_is_refused_for_a_run_not_trained_symmetric(runs, tmp_path):
    with pytest.raises(ValueError, match=r"--tta swap: run .*/a \(task 'uspppm'\) was trained with swap=false"):
        predict([runs.a], runs.test, tmp_path / "s.csv", tta="swap")
    assert list(tmp_path.iterdir()) == []


def test_regression_outputs_are_clipped_into_the_label_range_after_postprocess(runs, monkeypatch, tmp_path, capsys):
    plain = predict([runs.c], runs.pairs_test, **CPU)["label"].to_numpy()
    assert 0 <= plain.min() and plain.max() <= 5
    shift = (5 - np.median(plain)) / 5  # on the 0-1 training scale: pushes about half the rows past 5
    run_logits = predict_module.run_logits
    monkeypatch.setattr(predict_module, "run_logits", lambda *args, **kwargs: run_logits(*args, **kwargs) + np.float32(shift))
    shifted = predict([runs.c], runs.pairs_test, tmp_path / "s.csv", **CPU)["label"].to_numpy()
    np.testing.assert_allclose(shifted, np.clip(plain + 5 * shift, 0, 5), rtol=0, atol=1e-5)  # shifted float32 logits
    clipped = int((shifted == 5).sum())
    assert 30 < clipped < 90 and f"clipped {clipped} prediction(s) into the task's range [0, 5]" in capsys.readouterr().out


def _write_weights(path, entries, rank=False):
    runs = [{"name": name, "path": str(run_path), "weight": weight, "cv": 0.5} for name, run_path, weight in entries]
    path.write_text(json.dumps({"method": "scipy", "metric": "pearson", "higher_is_better": True, "runs": runs, "cv": 0.6, "rank": rank}))
    return path


@pytest.mark.parametrize("rank", [False, True])
def test_weights_json_is_applied_exactly(runs, tmp_path, rank):
    # run a matched by its path, run b by its name only (as on Kaggle, where the folders moved)
    weights = _write_weights(tmp_path / "weights.json", [("b", "/elsewhere/b", 0.3), ("a", runs.a, 0.7)], rank=rank)
    sub = predict([runs.a, runs.b], runs.test, tmp_path / "sub.csv", weights=weights, **CPU)
    pa, pb = (predict([r], runs.test, **CPU)["score"].to_numpy() for r in (runs.a, runs.b))
    if rank:
        pa, pb = rankdata(pa) / len(pa), rankdata(pb) / len(pb)
    np.testing.assert_allclose(sub["score"], 0.7 * pa + 0.3 * pb, rtol=0, atol=1e-12)
    assert not np.allclose(sub["score"], 0.5 * pa + 0.5 * pb, rtol=0, atol=1e-6)


def test_weights_that_do_not_match_the_runs_name_the_missing_run(runs, tmp_path):
    weights = _write_weights(tmp_path / "w.json", [("a", runs.a, 0.5), ("ghost", "/runs/ghost", 0.5)])
    with pytest.raises(ValueError, match=r"blends run\(s\) ghost \(/runs/ghost, weight 0.5\) that --models does not include"):
        predict([runs.a], runs.test, weights=weights)
    with pytest.raises(ValueError, match=r"run .*/b is not in .*w.json \(it lists only \['a', 'ghost'\]\)"):
        predict([runs.a, runs.b], runs.test, weights=weights)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"runs": [{"name": "a", "path": "a", "weight": 0.5}, {"name": "b", "path": "b", "weight": 0.2}]}))
    with pytest.raises(ValueError, match=r"weights sum to 0.7, not 1"):
        predict([runs.a, runs.b], runs.test, weights=bad)


def test_ensemble_weights_of_real_runs_reach_the_submission(runs, tmp_path):
    payload = ensemble([runs.a, runs.b], tmp_path / "weights.json")
    sub = predict([runs.b, runs.a], runs.test, tmp_path / "sub.csv", weights=tmp_path / "weights.json")
    models = pd.read_csv(models_path(tmp_path / "sub.csv"), dtype={"id": str})
    wa, wb = (run["weight"] for run in payload["runs"])
    np.testing.assert_allclose(sub["score"], wa * models["a"] + wb * models["b"], rtol=0, atol=1e-12)


def test_sample_submission_order_rules_the_submission_and_the_models_file(runs, tmp_path):
    sample = pd.read_csv(SAMPLE / "sample_submission.csv", dtype={"id": str}).iloc[::-1]
    sample.to_csv(tmp_path / "sample.csv", index=False)
    sub = predict([runs.a], runs.test, tmp_path / "sub.csv", sample_submission=tmp_path / "sample.csv")
    models = pd.read_csv(models_path(tmp_path / "sub.csv"), dtype={"id": str})
    assert sub["id"].tolist() == models["id"].tolist() == sample["id"].tolist()
    np.testing.assert_allclose(sub["score"], models["a"], rtol=0, atol=1e-12)


def test_a_failed_check_writes_nothing_and_keeps_the_old_submission(runs, monkeypatch, tmp_path):
    out = tmp_path / "submission.csv"
    out.write_bytes(b"id,score\nprevious,0.5\n")
    run_logits = predict_module.run_logits

    def one_nan(*args, **kwargs):
        logits = run_logits(*args, **kwargs)
        logits[3] = np.nan  # one diverged row
        return logits

    monkeypatch.setattr(predict_module, "run_logits", one_nan)
    with pytest.raises(ValueError, match=r"submission: column 'score' has 1 NaN, infinite or non-numeric value\(s\)"):
        predict([runs.a], runs.test, out)
    assert out.read_bytes() == b"id,score\nprevious,0.5\n"
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]  # no _models.csv, no temporary file


GOOD = pd.DataFrame({"id": ["x", "y", "z"], "score": [0.0, 0.5, 1.0]})


@pytest.mark.parametrize(
    "sub, message",
    [
        (GOOD[["score", "id"]], r"columns are \['score', 'id'\], expected \['id', 'score'\]"),
        (GOOD.assign(extra=1.0), r"columns are \['id', 'score', 'extra'\], expected \['id', 'score'\]"),
        (GOOD.assign(id=["x", "x", "z"]), r"1 duplicated id\(s\), e.g. \['x'\]"),
        (GOOD.assign(id=["x", "y", "w"]), r"1 missing \(e.g. \['z'\]\), 1 unexpected \(e.g. \['w'\]\)"),
        (GOOD.iloc[[0, 2, 1]], r"ids out of order: row 1 holds 'z' where 'y' belongs"),
        (GOOD.iloc[:2], r"1 missing \(e.g. \['z'\]\), 0 unexpected"),
        (GOOD.assign(score=[0.0, np.inf, 1.0]), r"1 NaN, infinite or non-numeric value\(s\), e.g. ids \['y'\]"),
        (GOOD.assign(score=[0.0, 1.5, -0.25]), r"2 value\(s\) outside the task's range \[0, 1\] \('y': 1.5, 'z': -0.25\)"),
    ],
)
def test_check_submission_names_each_problem(sub, message):
    with pytest.raises(ValueError, match=message):
        check_submission(sub, id_col="id", ids=["x", "y", "z"], columns=["id", "score"], value_range=(0.0, 1.0))


def test_check_submission_accepts_a_good_one():
    check_submission(GOOD, id_col="id", ids=["x", "y", "z"], columns=["id", "score"], value_range=(0.0, 1.0))
    check_submission(GOOD.assign(score=[-3.0, 0.0, 9.0]), id_col="id", ids=["x", "y", "z"])  # unbounded task
