"""Every tiny backbone through the pair model: build, predict, save, load without the source, same numbers."""

import shutil

import pytest
import torch

from kagglekit.data.batching import PairEncodings
from kagglekit.models.pair_model import build_model, load_model_folder, save_model_folder
from kagglekit.run import FoldMeta
from kagglekit.testing import TINY_ARCHS

pytestmark = pytest.mark.compat

PAIRS = (["engine housing", "a wireless transmitter with two antennas", "Zebra-42 widget (x+y)=3%"],
         ["motor casing", "radio", "dental implant"])
META = FoldMeta(task="uspppm", max_len=32, activation="sigmoid")


def _logits(model, tokenizer):
    batch = PairEncodings(tokenizer, *PAIRS, max_len=META.max_len).collate([0, 1, 2])  # padded (B, T)
    with torch.no_grad():
        return batch, model.eval()(**batch)  # (B,)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_model_folder_round_trip_is_bit_identical(arch, tiny_models, tmp_path):
    source = shutil.copytree(tiny_models(arch), tmp_path / "backbone")
    torch.manual_seed(0)
    model, tokenizer = build_model(source, dropout=0.1)
    batch, before = _logits(model, tokenizer)
    assert before.shape == (3,) and torch.isfinite(before).all()
    if arch in ("bert", "funnel"):  # Funnel's attention reads them, under either transformers major
        assert "token_type_ids" in batch

    folder = save_model_folder(model, tokenizer, tmp_path / "fold0", META)
    shutil.rmtree(source)  # the folder must stand alone
    loaded, loaded_tokenizer, meta = load_model_folder(folder)
    assert meta.max_len == META.max_len and type(loaded.backbone) is type(model.backbone)

    batch_after, after = _logits(loaded, loaded_tokenizer)
    assert batch_after.keys() == batch.keys()
    assert all(torch.equal(batch_after[k], batch[k]) for k in batch)  # the tokenizer came back unchanged
    assert torch.equal(after, before)
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys() and all(torch.equal(state[k], loaded_state[k]) for k in state)


@pytest.mark.parametrize("arch", ["bert", "nezha"])
def test_half_precision_checkpoints_load_as_fp32(arch, tiny_models, tmp_path):
    """transformers 5 keeps a checkpoint's dtype by default; training needs fp32 master weights (and
    GradScaler refuses fp16 gradients), so an fp16 folder must load as fp32, under both majors."""
    import shutil

    from safetensors.torch import load_file, save_file

    from kagglekit.models.pair_model import load_backbone
    from kagglekit.train.pretrain import PretrainConfig, build_mlm_model

    folder = tmp_path / "half"
    shutil.copytree(tiny_models(arch), folder)
    weights = load_file(folder / "model.safetensors")
    half = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    save_file(half, folder / "model.safetensors", metadata={"format": "pt"})
    backbone, _ = load_backbone(folder)
    assert {p.dtype for p in backbone.parameters()} == {torch.float32}
    loaded = backbone.state_dict()
    for name, value in half.items():
        if name in loaded:  # exact: fp16 values widened, nothing else
            assert torch.equal(loaded[name], value.float()), name
    mlm, _ = build_mlm_model(PretrainConfig(files=["x"], columns=["a"], backbone=str(folder)))
    assert {p.dtype for p in mlm.parameters()} == {torch.float32}
