"""Every tiny backbone through the pair model: build, predict, save, load without the source, same numbers."""

import shutil

import pytest
import torch

from kagglekit.data.batching import PairEncodings
from kagglekit.models.pair_model import build_model, load_model_folder, save_model_folder
from kagglekit.testing import TINY_ARCHS

pytestmark = pytest.mark.compat

PAIRS = (["engine housing", "a wireless transmitter with two antennas", "Zebra-42 widget (x+y)=3%"],
         ["motor casing", "radio", "dental implant"])
META = {"task": "uspppm", "max_len": 32, "activation": "sigmoid"}


def _logits(model, tokenizer):
    batch = PairEncodings(tokenizer, *PAIRS, max_len=META["max_len"]).collate([0, 1, 2])  # padded (B, T)
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
    assert meta["max_len"] == META["max_len"] and type(loaded.backbone) is type(model.backbone)

    batch_after, after = _logits(loaded, loaded_tokenizer)
    assert batch_after.keys() == batch.keys()
    assert all(torch.equal(batch_after[k], batch[k]) for k in batch)  # the tokenizer came back unchanged
    assert torch.equal(after, before)
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys() and all(torch.equal(state[k], loaded_state[k]) for k in state)
