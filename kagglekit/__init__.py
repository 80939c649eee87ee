"""kagglekit: a Kaggle notebook kit for text-pair competitions.

The entry points, importable from the package itself:

- `load_config(path, overrides)`: a run's config from YAML and ``key=value`` overrides (`kagglekit.config`).
- `train_folds(cfg, folds="all")`: train the folds of a run into ``cfg.output_dir`` (`kagglekit.train`).
- `predict(models, data, out)`: fold-average and blend run folders on a test file, write a checked
  submission (`kagglekit.infer.predict`).
- `Scorer.from_run(run_dir).predict(rows)`: a run in memory, scoring rows as predict scores a file
  (`kagglekit.infer.scorer`).

Importing the package is cheap and has no side effects: each name above is imported on first use
(PEP 562), so torch and transformers load only then, and `kagglekit --help` and pip checks stay fast.

Example:
    >>> from kagglekit import Scorer
    >>> Scorer.from_run("runs/uspppm").predict([("opc drum", "inorganic photoconductor drum", "G02")])
"""

__version__ = "0.1.0"

# public name -> the module that defines it; imported on first access
_EXPORTS = {
    "load_config": "kagglekit.config",
    "train_folds": "kagglekit.train",
    "predict": "kagglekit.infer.predict",
    "Scorer": "kagglekit.infer.scorer",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kagglekit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
