"""The pairs and ids recipes end to end on a tiny model: train → run folder → predict in the
competition's scale; the example configs load, hold their YAML's values, round-trip, and name only keys
their task reads."""


import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from kagglekit.config import load_config
from kagglekit.infer.predict import predict
from kagglekit.train import train_folds


def sts_like(path, n=160, seed=0):
    """A header-less TSV in STS-B's layout (genre, file, year, id, score 0-5, s1, s2) with a learnable score."""
    rng = np.random.default_rng(seed)
    words = "engine housing motor casing valve seal pump fluid lid cover chair seat table desk".split()
    rows = []
    for i in range(n):
        a = " ".join(rng.choice(words, 4))
        shared = int(rng.integers(0, 5))
        b = " ".join(list(a.split()[:shared]) + list(rng.choice(words, 4 - shared)))
        rows.append(["main-news", "f", "2012", f"{i:04d}", f"{shared * 1.25:.3f}", a, b])
    with open(path, "w", encoding="utf-8") as out:
        for row in rows:
            out.write("\t".join(row) + "\n")
    return path


def test_pairs_recipe_trains_and_predicts_on_the_label_scale(tiny_bert, tmp_path):
    train = sts_like(tmp_path / "train.tsv")
    cfg = load_config(ROOT / "configs" / "stsb.yaml", [f"train_csv={train}", f"test_csv={train}", f"backbone={tiny_bert}",
                                                      f"output_dir={tmp_path / 'run'}", "n_folds=2", "epochs=1", "max_len=32"])
    card = train_folds(cfg, folds=0)
    assert card["metric"] == "pearson" and card["loss"] == "bce"  # labels / 5 lie in [0, 1]
    oof = pd.read_csv(tmp_path / "run" / "oof.csv", dtype={"id": str})
    assert oof["label"].between(0, 1).all() and oof["label"].max() == 1.0
    sub = predict([tmp_path / "run"], train)
    by_id = sub.set_index(sub.columns[0])[sub.columns[1]]
    np.testing.assert_allclose(by_id.loc[oof["id"]].to_numpy(), 5 * oof["pred"].to_numpy(), rtol=0, atol=1e-5)  # back on 0-5
    assert card["folds"]["0"]["augmentation"]["swapped"] > 0  # the config swaps the training pairs


def test_pairs_binary_with_closure(tiny_bert, tmp_path):
    rng = np.random.default_rng(0)
    questions = [f"question number {i}" for i in range(40)]
    rows = [{"sentence1": questions[rng.integers(40)], "sentence2": questions[rng.integers(40)], "label": int(rng.integers(0, 2))} for _ in range(200)]
    path = tmp_path / "afqmc_like.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    cfg = load_config(ROOT / "configs" / "afqmc.yaml", [f"train_csv={path}", f"test_csv={path}", f"backbone={tiny_bert}",
                                                       f"output_dir={tmp_path / 'run'}", "n_folds=2", "epochs=1", "max_len=24"])
    card = train_folds(cfg, folds=0)
    assert card["metric"] == "roc_auc" and card["loss"] == "bce"
    report = card["folds"]["0"]["augmentation"]
    assert report["positives_added"] + report["negatives_added"] <= 0.5 * 100 + 1  # closure_ratio of the ~100 training rows
    sub = predict([tmp_path / "run"], path)
    assert len(sub) == 200 and sub.iloc[:, 1].between(0, 1).all()


EXAMPLES = sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))


def test_every_example_config_is_tested():
    assert {"uspppm.yaml", "stsb.yaml", "afqmc.yaml", "gaiic.yaml", "gaiic_pretrain.yaml"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_configs_load(name, tmp_path):
    """Each example loads without a warning, validates, holds exactly the YAML's values, and round-trips."""
    import warnings

    import yaml

    from kagglekit.config_pretrain import load_pretrain_config

    path = ROOT / "configs" / name
    written = yaml.safe_load(path.read_text(encoding="utf-8"))
    load = load_pretrain_config if "pretrain" in name else load_config
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no renamed or removed key in the examples
        cfg = load(path)
    assert cfg.validate() == cfg
    assert {k: getattr(cfg, k) for k in written} == written
    if load is load_config:
        assert cfg.task == {"uspppm.yaml": "uspppm", "gaiic.yaml": "ids"}.get(name, "pairs")
    saved = tmp_path / "saved.yaml"
    if load is load_config:
        cfg.save(saved)  # as a run folder's config.yaml
    else:
        saved.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    assert load(saved) == cfg


def test_keys_of_another_task_are_refused():
    with pytest.raises(ValueError, match=r"config key 'label_scale' \(5\.0\) does nothing with task='uspppm': it applies only "
                                         r"when task='pairs'\. Leave it at its default \(0\.0\), or set task\."):
        load_config(None, ["label_scale=5"])
    with pytest.raises(ValueError, match=r"config key 'cpc_dir' \('x'\) does nothing with task='pairs': it applies only when "
                                         r"task='uspppm'"):
        load_config(None, ["task=pairs", "cpc_dir=x"])


def test_closure_refuses_file_features_it_cannot_fill():
    with pytest.raises(ValueError, match=r"closure=true with feature_columns='overlap': the new pairs have no values"):
        load_config(None, ["task=pairs", "closure=true", "feature_columns=overlap"])
