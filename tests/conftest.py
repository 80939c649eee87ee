"""Shared fixtures: tiny offline models and sample data, built once per session."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("KAGGLEKIT_DATA", ROOT.parent / "shared" / "data"))

# No test may reach a model hub: every model comes from a local folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# No scratch space unless a test gives one: resume state stays in <output_dir>/resume, even on a machine with /kaggle/temp.
os.environ.setdefault("KAGGLEKIT_SCRATCH", "")


def shared_data(*parts) -> Path:
    """Path under ../shared/data, or skip the test when that folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not present: {path}")
    return path


SAMPLE = ROOT / "datasets" / "sample"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Build tiny model folders on demand, once per arch per session: tiny_models("bert") -> Path."""
    from kagglekit.testing import build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    cache = {}

    def get(arch: str = "bert") -> Path:
        if arch not in cache:
            cache[arch] = build_tiny_model(arch, root / arch, seed=0)
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def tiny_bert(tiny_models):
    return tiny_models("bert")


def perturbed_copy(source, dest, noise_seed, **meta_changes):
    """A model folder like `source` with every weight moved a little (another 'seed'), its meta changed as given."""
    import dataclasses
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from kagglekit._io import write_json
    from kagglekit.run import FoldMeta

    shutil.copytree(source, dest)
    weights = load_file(dest / "model.safetensors")
    generator = torch.Generator().manual_seed(noise_seed)
    save_file({k: v + 0.05 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v for k, v in weights.items()},
              dest / "model.safetensors")
    write_json(dest / "kagglekit.json", dataclasses.replace(FoldMeta.read(dest), **meta_changes).to_json())
    return dest
