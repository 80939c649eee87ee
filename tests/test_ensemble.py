"""ensemble: OOF alignment, weights against a brute-force grid over the simplex, rank blending, weights.json, CLI."""

import argparse
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from kagglekit.infer.ensemble import add_parser, ensemble, fit_weights, load_oof, read_weights
from kagglekit.metrics import get_metric

N = 600


def _synthetic(seed=0, binary=False):
    """Labels and 3 runs' OOF predictions: shared and own noise, so the best blend is inside the simplex."""
    rng = np.random.default_rng(seed)
    labels = rng.uniform(0, 1, N)
    shared = rng.normal(0, 0.3, N)
    preds = np.column_stack([labels + a * shared + rng.normal(0, s, N) for a, s in [(1.0, 0.2), (0.5, 0.35), (0.2, 0.5)]])
    return ((labels > 0.5).astype(float) if binary else labels), preds


def _write_runs(root, labels, preds, metric="pearson", folds=None):
    ids = [f"r{i:04d}" for i in range(len(labels))]
    folds = np.arange(len(labels)) % 3 if folds is None else folds
    paths = []
    for k in range(preds.shape[1]):
        run = root / f"run{k}"
        run.mkdir()
        pd.DataFrame({"id": ids, "fold": folds, "label": labels, "pred": preds[:, k]}).to_csv(run / "oof.csv", index=False)
        (run / "run.json").write_text(json.dumps({"task": "uspppm", "metric": metric, "higher_is_better": metric != "rmse", "cv": 0.0}))
        paths.append(run)
    return paths


def _grid_best(preds, labels, metric):
    """The best blend score over the simplex on a 0.02 grid (1326 points), as 'higher is better'."""
    sign = 1 if metric.higher_is_better else -1
    steps = 50
    return max(
        sign * metric.fn(labels, preds @ (np.array([i, j, steps - i - j]) / steps))
        for i in range(steps + 1) for j in range(steps + 1 - i)
    )


@pytest.mark.parametrize(
    "metric, method, used",
    [("pearson", "scipy", "scipy"), ("pearson", "hill", "hill"), ("rmse", "scipy", "scipy"),
     ("roc_auc", "scipy", "hill"),  # AUC has no gradient: SLSQP cannot move, the hill climber takes over
     ("roc_auc", "hill", "hill")],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_fitted_weights_match_a_brute_force_grid(metric, method, used, seed):
    labels, preds = _synthetic(seed, binary=metric == "roc_auc")
    metric = get_metric(metric)
    weights, optimizer = fit_weights(preds, labels, metric, method=method)
    assert optimizer == used
    assert (weights >= 0).all() and weights.sum() == pytest.approx(1, abs=1e-12)
    sign = 1 if metric.higher_is_better else -1
    assert sign * metric.fn(labels, preds @ weights) >= _grid_best(preds, labels, metric) - 1e-4
    assert weights.min() > 0.05  # an interior optimum: every run contributes


def test_weights_json_follows_the_shared_contract(tmp_path):
    labels, preds = _synthetic()
    paths = _write_runs(tmp_path, labels, preds)
    payload = ensemble(paths, tmp_path / "weights.json")
    assert json.loads((tmp_path / "weights.json").read_text()) == payload
    assert {"method", "metric", "higher_is_better", "runs", "cv", "rank"} <= set(payload)
    assert payload["method"] == "scipy" and payload["metric"] == "pearson" and payload["higher_is_better"] is True and payload["rank"] is False
    assert [r["name"] for r in payload["runs"]] == ["run0", "run1", "run2"] and [r["path"] for r in payload["runs"]] == [str(p) for p in paths]
    weights = np.array([r["weight"] for r in payload["runs"]])
    assert (weights >= 0).all() and weights.sum() == pytest.approx(1, abs=1e-12)
    pearson = get_metric("pearson").fn
    for k, run in enumerate(payload["runs"]):
        assert run["cv"] == pytest.approx(pearson(labels, preds[:, k]), abs=1e-12)
    assert payload["cv"] == pytest.approx(pearson(labels, preds @ weights), abs=1e-12)
    assert payload["cv"] > max(r["cv"] for r in payload["runs"])
    assert read_weights(tmp_path / "weights.json")["runs"] == payload["runs"]


def test_rank_blending_fits_and_scores_the_runs_ranks(tmp_path):
    labels, preds = _synthetic(2)
    preds[:, 1] = preds[:, 1] ** 3  # a monotone distortion that ranks undo
    paths = _write_runs(tmp_path, labels, preds)
    payload = ensemble(paths, tmp_path / "weights.json", rank=True)
    assert payload["rank"] is True and payload["method"] == "rank" and payload["optimizer"] in ("scipy", "hill")
    weights = np.array([r["weight"] for r in payload["runs"]])
    ranks = np.column_stack([rankdata(c) / N for c in preds.T])
    pearson = get_metric("pearson")
    assert payload["cv"] == pytest.approx(pearson.fn(labels, ranks @ weights), abs=1e-12)
    assert payload["cv"] >= _grid_best(ranks, labels, pearson) - 1e-4


def test_rank_blending_is_refused_for_a_metric_that_reads_the_scale(tmp_path):
    labels, preds = _synthetic()
    with pytest.raises(ValueError, match=r"--rank with metric 'rmse': it scores the predictions' scale"):
        ensemble(_write_runs(tmp_path, labels, preds, metric="rmse"), rank=True)


def test_runs_are_aligned_by_id_whatever_their_row_order(tmp_path):
    labels, preds = _synthetic()
    paths = _write_runs(tmp_path, labels, preds)
    oof = pd.read_csv(paths[2] / "oof.csv")
    oof.iloc[::-1].to_csv(paths[2] / "oof.csv", index=False)
    table = load_oof(paths)
    # a CSV round trip may move the last bit (pandas' float parser); a misaligned row would be off by ~0.1
    np.testing.assert_allclose(table.preds, preds, rtol=0, atol=1e-12)
    np.testing.assert_allclose(table.labels, labels, rtol=0, atol=1e-12)


def test_runs_with_other_ids_are_an_error_naming_the_run_and_example_ids(tmp_path):
    labels, preds = _synthetic()
    paths = _write_runs(tmp_path, labels, preds)
    oof = pd.read_csv(paths[1] / "oof.csv")
    oof.loc[7, "id"] = "stranger"
    oof.to_csv(paths[1] / "oof.csv", index=False)
    with pytest.raises(ValueError, match=rf"run {paths[1]} has other out-of-fold ids than run {paths[0]}: "
                                         rf"1 only in {paths[1]} \(e.g. \['stranger'\]\), 1 only in {paths[0]} \(e.g. \['r0007'\]\)"):
        load_oof(paths)


def test_runs_with_other_folds_are_an_error_naming_the_run_and_example_ids(tmp_path):
    labels, preds = _synthetic()
    paths = _write_runs(tmp_path, labels, preds)
    oof = pd.read_csv(paths[2] / "oof.csv")
    oof.loc[[4, 9], "fold"] = (oof.loc[[4, 9], "fold"] + 1) % 3
    oof.to_csv(paths[2] / "oof.csv", index=False)
    with pytest.raises(ValueError, match=rf"run {paths[2]} puts 2 id\(s\) in other folds than run {paths[0]}, "
                                         r"e.g. 'r0004' \(fold 2, not 1\), 'r0009' \(fold 1, not 0\)"):
        load_oof(paths)


def test_runs_with_other_labels_or_metrics_are_refused(tmp_path):
    labels, preds = _synthetic()
    paths = _write_runs(tmp_path, labels, preds)
    oof = pd.read_csv(paths[1] / "oof.csv")
    oof["label"] *= 5  # another label_scale
    oof.to_csv(paths[1] / "oof.csv", index=False)
    with pytest.raises(ValueError, match=rf"run {paths[1]} has other labels than run {paths[0]} for \d+ id\(s\)"):
        load_oof(paths)
    (paths[2] / "run.json").write_text(json.dumps({"metric": "spearman"}))
    with pytest.raises(ValueError, match=r"scored with different metrics \(.*run0: pearson, .*run2: spearman\)"):
        load_oof(paths)
    with pytest.raises(ValueError, match=r"give at least two run folders"):
        load_oof(paths[:1])


@pytest.mark.parametrize(
    "runs, message",
    [
        ([{"name": "a", "path": "a", "weight": 0.5}, {"name": "b", "path": "b", "weight": -0.5}], r"runs\[1\] \(b\) has weight -0.5"),
        ([{"name": "a", "path": "a", "weight": 0.5}, {"name": "b", "path": "b", "weight": 0.25}], r"weights sum to 0.75, not 1"),
        ([{"name": "a", "weight": 1.0}], r"runs\[0\] lacks \['path'\]"),
        ([], r"has no 'runs' list"),
    ],
)
def test_read_weights_refuses_a_broken_file(tmp_path, runs, message):
    path = tmp_path / "weights.json"
    path.write_text(json.dumps({"runs": runs, "rank": False}))
    with pytest.raises(ValueError, match=message):
        read_weights(path)


def test_command_writes_weights_and_prints_each_run_and_the_blend(tmp_path, capsys):
    labels, preds = _synthetic(3)
    paths = _write_runs(tmp_path, labels, preds)
    parser = argparse.ArgumentParser(prog="kagglekit")
    add_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "w.json"
    args = parser.parse_args(["ensemble", *map(str, paths), "--out", str(out), "--method", "hill"])
    assert args.func(args) == 0
    payload = json.loads(out.read_text())
    assert payload["method"] == "hill" and payload["rank"] is False
    printed = capsys.readouterr().out.splitlines()
    pearson = get_metric("pearson").fn
    for k, path in enumerate(paths):
        line = next(line for line in printed if line.startswith(str(path)))
        assert line.split()[1:] == [f"{pearson(labels, preds[:, k]):.4f}", f"{payload['runs'][k]['weight']:.3f}"]
    assert printed[-2].startswith("blend (hill)") and printed[-2].split()[-1] == f"{payload['cv']:.4f}"
    assert printed[-1] == f"wrote {out}"
    with pytest.raises(SystemExit):
        parser.parse_args(["ensemble", str(paths[0]), "--method", "nelder"])


def test_weights_find_runs_attached_elsewhere_by_their_run_id(tmp_path):
    """On Kaggle every attached run sits at <input>/run: the same folder name, another path. run_id tells them apart."""
    from kagglekit.infer.ensemble import match_weights

    labels, preds = _synthetic()
    paths = _write_runs(tmp_path, labels, preds[:, :2])
    for k, path in enumerate(paths):
        card = json.loads((path / "run.json").read_text())
        (path / "run.json").write_text(json.dumps({**card, "run_id": f"id{k}"}))
    payload = ensemble(paths, tmp_path / "weights.json")
    assert [r["run_id"] for r in payload["runs"]] == ["id0", "id1"]
    moved = []
    for k, path in enumerate(paths):  # attached as two inputs, each holding its run at run/, in the other order
        moved.append(tmp_path / "input" / f"dataset{1 - k}" / "run")
        shutil.copytree(path, moved[-1])
    weights, rank = match_weights(moved[::-1], tmp_path / "weights.json")
    assert weights.tolist() == [payload["runs"][1]["weight"], payload["runs"][0]["weight"]] and rank is False
    card = json.loads((moved[0] / "run.json").read_text())  # a run without an id: the shared name is no answer
    (moved[0] / "run.json").write_text(json.dumps({k: v for k, v in card.items() if k != "run_id"}))
    with pytest.raises(ValueError, match="several entries are named 'run'|it lists only"):
        match_weights(moved, tmp_path / "weights.json")
