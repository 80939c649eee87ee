"""Config: defaults, YAML + --set typing, unknown keys with a suggestion, validation, round trip."""

import pytest
import yaml

from kagglekit.config import Config, load_config, parse_overrides


def test_defaults_validate_and_every_field_has_a_comment():
    cfg = load_config()
    assert cfg == Config()
    # the dataclass is the documentation: every field carries a comment on its line
    import inspect

    import kagglekit.config as module

    source = inspect.getsource(module.Config)
    for name in Config.__dataclass_fields__:
        line = next(l for l in source.splitlines() if l.strip().startswith(f"{name}:"))
        assert "#" in line, f"field {name} has no comment"


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
        ("head=meen", r"'head': unknown value 'meen'; valid values are \['attention', 'cls', 'cls_pooler', 'cnn', 'concat_last_k', 'lstm', 'max', 'mean', 'weighted_layers'\]"),
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
