"""Config: defaults, YAML + --set typing, unknown keys with a suggestion, the declared rules of every
kind (choices, range, applicability, cross-key), renamed and removed keys, round trip; the pretraining
config through the same loader."""

import subprocess
import sys

import numpy as np
import pytest
import yaml

from kagglekit.config import EMBEDDING_POOLINGS, HEAD_NAMES, METRIC_NAMES, Config, load_config, parse_overrides
from kagglekit.config_pretrain import PretrainConfig


USPPPM_DEFAULTS = Config(**Config.RECIPE_DEFAULTS["uspppm"])  # what load_config gives with nothing set


def test_defaults_validate():
    cfg = load_config()
    assert cfg == USPPPM_DEFAULTS and cfg.task == "uspppm"
    assert PretrainConfig(files=["a.csv"], columns=["text"], backbone="m").validate().lr == 5e-5


def test_yaml_then_overrides_are_typed(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"epochs": 2, "lr": "3e-5", "backbone": "models/x"}))
    cfg = load_config(path, ["epochs=4", "max_rows=100", "lr=1e-4", "dropout=0"])
    assert (cfg.epochs, cfg.max_rows, cfg.lr, cfg.dropout, cfg.backbone) == (4, 100, 1e-4, 0.0, "models/x")
    assert isinstance(cfg.lr, float) and isinstance(cfg.epochs, int)


def test_unknown_key_names_the_closest_valid_key(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config key 'epoch' in --set\. Did you mean 'epochs'\?"):
        load_config(None, ["epoch=3"])
    path = tmp_path / "cfg.yaml"
    path.write_text("n_fold: 3\n")
    with pytest.raises(ValueError, match=r"'n_fold' in .*cfg.yaml\. Did you mean 'n_folds'\?"):
        load_config(path)


@pytest.mark.parametrize(
    "item, message",
    [
        ("epochs=two", r"'epochs' in --set: expected int, got 'two'"),
        ("epochs=1.5", r"expected int, got '1.5'"),
        ("lr=fast", r"expected float"),
        ("head=meen", r"'head': unknown value 'meen'; valid values are \['attention', 'cls', 'cls_pooler', 'cnn', 'concat_last_k', 'last_token', 'lstm', 'max', 'mean', 'token_logits', 'weighted_layers'\]"),
        ("loss=hinge", r"config key 'loss': loss 'hinge': unknown loss 'hinge'. Valid losses are \['bce', 'ce', 'huber'"),
        ("scheduler=step", r"'scheduler': unknown value 'step'"),
        ("task=squad", r"'task': unknown value 'squad'"),
        ("n_folds=1", r"'n_folds' must be 2 or more, got 1"),
        ("warmup_ratio=1.5", r"'warmup_ratio' must be in \[0, 1\)"),
        ("lr=0", r"'lr' must be > 0"),
        ("metric=f1", r"'metric': unknown value 'f1'"),
    ],
)
def test_bad_values_name_key_and_value(item, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [item])


def test_malformed_set_item():
    with pytest.raises(ValueError, match=r"--set 'epochs': expected key=value"):
        parse_overrides(["epochs"])


def test_save_round_trip(tmp_path):
    cfg = load_config(None, {"epochs": 7, "backbone": "/m", "lr": 1e-5})
    cfg.save(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_config(bad)


def test_multi_sample_dropout_keys():
    assert load_config(None, ["msd_samples=3", "dropout=0.2"]).dropout_rates() == [0.2, 0.2, 0.2]
    assert load_config(None, ["msd_rates=0.1, 0.3,0.5"]).dropout_rates() == [0.1, 0.3, 0.5]
    with pytest.raises(ValueError, match=r"'msd_rates' \(2 rates\) and 'msd_samples' \(3\) disagree"):
        load_config(None, ["msd_rates=0.1,0.2", "msd_samples=3"])
    with pytest.raises(ValueError, match=r"'msd_rates': expected comma-separated numbers"):
        load_config(None, ["msd_rates=0.1;0.2"])
    with pytest.raises(ValueError, match=r"'msd_average': unknown value 'mean'"):
        load_config(None, ["msd_average=mean"])


# --- the declarations: every key declared once, checked in one loop ---


def test_every_field_is_declared_with_help_and_a_valid_default():
    from kagglekit._keys import declared
    from kagglekit.config_pretrain import PretrainConfig

    for cls in (Config, PretrainConfig):
        for name, (f, rules) in declared(cls).items():
            assert rules is not None, f"{cls.__name__}.{name} is not declared with key()"
            assert len(rules.help) > 8, f"{cls.__name__}.{name} has no help text"
            default = getattr(cls(), name)
            if rules.choices is not None:
                assert default in rules.choices, name
            if rules.has_range:
                assert rules.in_range(default), name
            for ctrl, _ in (rules.applies.conditions if rules.applies else ()):
                assert ctrl in declared(cls) and ctrl != name, f"{name} applies on an unknown key {ctrl!r}"


@pytest.mark.parametrize("item, message", [
    ("adversary=fgsm", r"config key 'adversary': unknown value 'fgsm'; valid values are \['none', 'fgm', 'pgd', 'awp'\]\."),
    ("precision=fp8", r"config key 'precision': unknown value 'fp8'; valid values are \['auto', 'fp32', 'fp16', 'bf16'\]\."),
    ("head_pool=sum", r"config key 'head_pool': unknown value 'sum'"),
    ("output=multi", r"config key 'output': unknown value 'multi'; valid values are \['single', 'classes', 'bins'\]\."),
])
def test_choices(item, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, ["head=cnn", item] if item.startswith("head_") else [item])


@pytest.mark.parametrize("item, message", [
    ("accum_steps=0", r"config key 'accum_steps' must be 1 or more, got 0\."),
    ("max_rows=-1", r"config key 'max_rows' must be >= 0, got -1\."),
    ("dropout=1", r"config key 'dropout' must be in \[0, 1\), got 1\.0\."),
    ("layer_decay=1.5", r"config key 'layer_decay' must be in \(0, 1\], got 1\.5; 1 turns it off, 0\.8-0\.95 is usual\."),
    ("hidden_dropout=-0.5", r"config key 'hidden_dropout' must be in \[0, 1\), or -1, got -0\.5; -1 keeps the checkpoint's own\."),
    ("max_len=4", r"config key 'max_len' must be 8 or more, or 0, got 4; 0 takes the longest training pair"),
    ("ema=1", r"config key 'ema' must be in \[0, 1\), got 1\.0; 0\.999 is usual"),
    ("lr=nan", r"config key 'lr' must be > 0, got nan\."),
    ("lr=inf", r"config key 'lr' must be > 0, got inf\."),
    ("fold_bins=0", r"config key 'fold_bins' must be 1 or more, got 0; 1 turns stratification off\."),
])
def test_ranges(item, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [item])


def test_range_edges_and_sentinels_are_accepted():
    cfg = load_config(None, ["dropout=0", "hidden_dropout=-1", "attention_dropout=0.99", "layer_decay=1", "max_len=0",
                             "max_len=8", "accum_steps=1", "ema=0.999", "fold_bins=1"])
    assert (cfg.dropout, cfg.hidden_dropout, cfg.layer_decay, cfg.max_len, cfg.ema, cfg.fold_bins) == (0.0, -1.0, 1.0, 8, 0.999, 1)


@pytest.mark.parametrize("items, message", [
    (["num_cycles=1.5", "scheduler=linear"],
     r"config key 'num_cycles' \(1\.5\) does nothing with scheduler='linear': it applies only when scheduler='cosine'\. "
     r"Leave it at its default \(0\.5\), or set scheduler\."),
    (["num_bins=3"], r"config key 'num_bins' \(3\) does nothing with output='single': it applies only when output='bins'"),
    (["reinit_pooler=false"], r"config key 'reinit_pooler' \(false\) does nothing with reinit_layers=0: it applies only when "
                              r"reinit_layers > 0\. Leave it at its default \(true\), or set reinit_layers\."),
    (["huber_delta=2"], r"config key 'huber_delta' \(2\.0\) does nothing with loss='auto': it applies only when loss names 'huber'"),
    (["adv_epsilon=0.5", "adversary=awp"], r"'adv_epsilon' \(0\.5\) does nothing with adversary='awp': it applies only when "
                                           r"adversary is one of \['fgm', 'pgd'\]"),
    (["ema_warmup=true"], r"config key 'ema_warmup' \(true\) does nothing with ema=0\.0: it applies only when ema > 0"),
    (["head_kernels=3", "head=lstm"], r"'head_kernels' \('3'\) does nothing with head='lstm': it applies only when head='cnn'"),
    (["closure_ratio=0.5"], r"'closure_ratio' \(0\.5\) does nothing with closure=false: it applies only when closure=true"),
    (["embedding_max_len=64"], r"'embedding_max_len' \(64\) does nothing without embedding_model: it applies only when "
                               r"embedding_model is set"),
    (["task=pairs", "cpc_levels=section"], r"'cpc_levels' \('section'\) does nothing with task='pairs': it applies only when task='uspppm'"),
    (["cpc_levels=section"], r"'cpc_levels' \('section'\) does nothing without cpc_dir"),
    (["task=uspppm", "target_grouping_by=section"], r"'target_grouping_by' \('section'\) does nothing with target_grouping=false"),
])
def test_applicability(items, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, items)


def test_applicable_settings_load():
    cfg = load_config(None, ["scheduler=cosine", "num_cycles=1.5", "reinit_layers=2", "reinit_pooler=false", "loss=mse+0.5*huber",
                             "huber_delta=2", "adversary=pgd", "adv_alpha=0.1", "ema=0.99", "ema_warmup=true", "cpc_dir=x",
                             "cpc_levels=section", "closure=true", "closure_max=10"])
    assert (cfg.num_cycles, cfg.reinit_pooler, cfg.huber_delta, cfg.adv_alpha, cfg.ema_warmup) == (1.5, False, 2.0, 0.1, True)
    assert load_config(None, ["output=bins", "num_bins=3"]).num_bins == 3


def test_cross_key_rules():
    with pytest.raises(ValueError, match=r"set one of 'closure_max' \(a count\) and 'closure_ratio'"):
        load_config(None, ["closure=true", "closure_max=5", "closure_ratio=0.5"])
    with pytest.raises(ValueError, match=r"config key 'msd_rates': each rate must be in \[0, 1\), got \[0\.1, 1\.5\]"):
        load_config(None, ["msd_rates=0.1,1.5"])


def test_wrong_type_given_directly_is_a_type_error():
    with pytest.raises(TypeError, match=r"config key 'epochs': expected int, got '2'; write e\.g\. epochs=3"):
        Config(epochs="2").validate()
    with pytest.raises(TypeError, match=r"config key 'swap': expected bool, got 1"):
        Config(swap=1).validate()
    Config(lr=1, epochs=np.int64(2)).validate()  # an int is a float; numpy integers are ints


def test_head_applicability_matches_the_heads_registry():
    from kagglekit._keys import declared
    from kagglekit.models.heads import HEADS, head_options

    assert tuple(sorted(HEADS)) == HEAD_NAMES
    for head in HEADS:
        for option in ("layers", "layernorm", "pool", "hidden", "kernels"):
            rules = declared(Config)[f"head_{option}"][1]
            applies = rules.applies is None or rules.applies.first_failing(Config(head=head)) is None
            assert applies == (option in head_options(head)), (head, option)


def test_registry_name_lists_match_the_registries():
    from kagglekit.models.embeddings import POOLINGS
    from kagglekit.metrics import METRICS

    assert tuple(sorted(METRICS)) == METRIC_NAMES
    assert set(POOLINGS) == set(EMBEDDING_POOLINGS)


def test_validate_imports_no_heavy_library():
    code = ("import sys; from kagglekit.config import load_config; "
            "load_config(None, ['head=cnn', 'head_pool=mean', 'metric=rmse', 'embedding_model=m', 'embedding_pooling=cls', "
            "'cpc_dir=x', 'output=bins', 'adversary=awp']); "
            "print(sorted(m for m in ('torch', 'transformers', 'pandas', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- renamed and removed keys ---


def test_renamed_key_still_loads_with_a_warning_naming_the_new_key(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("n_bins: 3\nepochs: 2\n")
    with pytest.warns(UserWarning, match=r"config key 'n_bins' in .*old\.yaml is renamed 'fold_bins': write fold_bins=3"):
        cfg = load_config(path)
    assert (cfg.fold_bins, cfg.epochs) == (3, 2)
    with pytest.warns(UserWarning, match="renamed 'fold_bins'"):
        assert load_config(None, ["n_bins=4"]).fold_bins == 4
    with pytest.warns(FutureWarning, match="renamed Config.fold_bins"):
        assert cfg.n_bins == 3
    with pytest.raises(ValueError, match=r"'n_bins' and 'fold_bins' in --set are the same key .*keep only fold_bins"):
        load_config(None, {"n_bins": 3, "fold_bins": 4})


def test_removed_key_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("num_workers: 4\n")
    with pytest.warns(UserWarning, match=r"config key 'num_workers' in .*old\.yaml is ignored and has been removed"):
        cfg = load_config(path)
    assert cfg == USPPPM_DEFAULTS and not hasattr(cfg, "num_workers")


def test_a_saved_old_run_config_loads(tmp_path):
    """A run folder's config.yaml written before the rename (n_bins, num_workers) still loads."""
    old = Config().to_dict()
    old["n_bins"] = old.pop("fold_bins")
    old["num_workers"] = 0
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    with pytest.warns(UserWarning):
        assert load_config(path) == Config()


def test_pretrain_config_shares_the_loader(tmp_path):
    from kagglekit.config_pretrain import load_pretrain_config

    base = ["files=a.csv", "columns=text", "backbone=m"]
    with pytest.raises(ValueError, match=r"pretrain config key 'precision': unknown value 'fp8'"):
        load_pretrain_config(None, [*base, "precision=fp8"])
    with pytest.raises(ValueError, match=r"pretrain config key 'warmup_ratio' must be in \[0, 1\), got 1\.0"):
        load_pretrain_config(None, [*base, "warmup_ratio=1"])
    with pytest.raises(ValueError, match=r"pretrain config key 'max_len' must be 8 or more, or 0, got 4"):
        load_pretrain_config(None, [*base, "max_len=4"])
    with pytest.raises(ValueError, match=r"unknown pretrain config key 'lrr' in --set\. Did you mean 'lr'\?"):
        load_pretrain_config(None, [*base, "lrr=1"])
    with pytest.raises(ValueError, match=r"pretrain config key 'ngram_probs' in --set: expected a list of float"):
        load_pretrain_config(None, [*base, "ngram_probs=a,b"])
    cfg = load_pretrain_config(None, [*base, "from_scratch_config=", "keep_checkpoints=2"])
    assert (cfg.files, cfg.columns, cfg.keep_checkpoints) == (["a.csv"], ["text"], 2)
    assert PretrainConfig().files is not PretrainConfig().files  # list defaults are not shared



def test_a_range_shared_with_a_component_is_declared_once():
    """layer_decay, the dropout/Mixout rates and huber_delta: the config key and the component that takes
    the value check one declared range (kagglekit._keys), so they refuse exactly the same values."""
    import torch

    from kagglekit._keys import LAYER_DECAY, POSITIVE, RATE, declared
    from kagglekit.losses import get_loss
    from kagglekit.models.surgery import apply_mixout
    from kagglekit.train.optim import param_groups

    keys = declared(Config)
    for name, shared in [("layer_decay", LAYER_DECAY), ("mixout", RATE), ("dropout", RATE), ("hidden_dropout", RATE),
                         ("huber_delta", POSITIVE)]:
        assert keys[name][1].range == shared, name
    model = torch.nn.Module()
    model.head = torch.nn.Linear(2, 1)
    components = {
        "layer_decay": lambda v: param_groups(model, lr=1e-3, head_lr=1e-3, weight_decay=0.0, layer_decay=v),
        "huber_delta": lambda v: get_loss("huber", huber_delta=v),
        "mixout": lambda v: apply_mixout(torch.nn.Module(), v),
    }
    for name, bad in [("layer_decay", 0.0), ("layer_decay", 1.5), ("layer_decay", float("nan")), ("huber_delta", 0.0),
                      ("huber_delta", float("inf")), ("mixout", 1.0), ("mixout", -0.1)]:
        extra = ["loss=huber"] if name == "huber_delta" else []
        with pytest.raises(ValueError, match=rf"'{name}' must be"):
            load_config(None, [f"{name}={bad}", *extra])
        with pytest.raises(ValueError, match=rf"{name}={bad}: .* must be"):
            components[name](bad)


# --- a recipe's own defaults ----------------------------------------------------------------------------------------


def test_recipe_defaults_fill_only_the_keys_left_unset():
    recipe = Config.RECIPE_DEFAULTS["uspppm"]
    assert recipe and all(getattr(Config(), k) != v for k, v in recipe.items())  # each one differs from the field default
    cfg = load_config(None, ["epochs=1"])
    assert cfg.epochs == 1  # set: kept
    assert all(getattr(cfg, k) == v for k, v in recipe.items() if k != "epochs")  # unset: the recipe's
    field = {k: getattr(Config(), k) for k in recipe}
    assert load_config(None, [f"{k}={v}" for k, v in field.items()]).to_dict() == Config().to_dict()  # the field default, set, stays
    pairs = load_config(None, ["task=pairs"])  # another recipe: the field defaults
    assert {k: getattr(pairs, k) for k in recipe} == field


def test_recipe_defaults_from_a_file_too(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("task: uspppm\nlr: 3.0e-5\n")
    cfg = load_config(path)
    assert cfg.lr == 3e-5 and all(getattr(cfg, k) == v for k, v in Config.RECIPE_DEFAULTS["uspppm"].items() if k != "lr")
    saved = tmp_path / "saved.yaml"  # a run's config.yaml holds every key: reloading it changes nothing
    saved.write_text(yaml.safe_dump(Config(task="uspppm", lr=3e-5).to_dict()))
    assert load_config(saved) == Config(task="uspppm", lr=3e-5)


def test_a_recipe_default_that_would_apply_to_nothing_falls_back(monkeypatch):
    monkeypatch.setitem(Config.RECIPE_DEFAULTS, "uspppm", {"target_grouping": True, "group_max_words": 16})
    cfg = load_config(None)
    assert (cfg.target_grouping, cfg.group_max_words) == (True, 16)
    cfg = load_config(None, ["target_grouping=false"])  # the cap would apply to nothing: the field default, no error
    assert (cfg.target_grouping, cfg.group_max_words) == (False, Config().group_max_words)
    with pytest.raises(ValueError, match="group_max_words"):  # set by the user, it is still an error
        load_config(None, ["target_grouping=false", "group_max_words=16"])


@pytest.mark.parametrize("path", ["configs/uspppm.yaml", "kagglekit/configs/uspppm.yaml"])
def test_shipped_uspppm_configs_hold_the_recipe_defaults(path):
    from pathlib import Path

    data = yaml.safe_load((Path(__file__).resolve().parents[1] / path).read_text())
    recipe = Config.RECIPE_DEFAULTS["uspppm"]
    assert {k: data.get(k, v) for k, v in recipe.items()} == recipe
