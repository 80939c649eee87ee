"""kagglekit: a Kaggle notebook kit for text-pair competitions.

Importing the package is cheap and has no side effects: torch and transformers load only when a
submodule that needs them is imported, so `kagglekit --help` and `pip` checks stay fast.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
