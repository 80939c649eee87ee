"""The kit's NeZha: numbers equal to transformers 4.x's NezhaModel, masking, checkpointing, Auto* loading, init."""

import copy
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from kagglekit.testing import build_tiny_model
from kagglekit.models.nezha import (
    NezhaConfig, NezhaModel, is_nezha_config, register_nezha, relative_position_table,
)

pytestmark = pytest.mark.compat

FIXTURE = Path(__file__).parent / "fixtures" / "nezha"
ATOL = 1e-5


def _transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def _load(folder, **kwargs):
    model, info = NezhaModel.from_pretrained(str(folder), output_loading_info=True, **kwargs)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


@pytest.fixture(scope="module")
def reference():
    from safetensors.torch import load_file

    return load_file(str(FIXTURE / "reference.safetensors"))


def _assert_matches_reference(model, ref):
    with torch.no_grad():
        out = model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"],
                    token_type_ids=ref["token_type_ids"], output_hidden_states=True)
    torch.testing.assert_close(out.last_hidden_state, ref["last_hidden_state"], atol=ATOL, rtol=0)
    torch.testing.assert_close(out.pooler_output, ref["pooler_output"], atol=ATOL, rtol=0)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1 == len(ref["hidden_states"])
    for i, (got, want) in enumerate(zip(out.hidden_states, ref["hidden_states"])):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0, msg=lambda m, i=i: f"hidden_states[{i}]: {m}")


def test_fixture_exercises_padding_and_clipping(reference):
    config = NezhaConfig.from_pretrained(str(FIXTURE))
    mask = reference["attention_mask"]
    assert (mask == 0).any() and (mask == 1).all(dim=0).any()
    assert mask.shape[1] > config.max_relative_position + 1  # some distances are clipped
    assert reference["hidden_states"].shape == (config.num_hidden_layers + 1, *mask.shape, config.hidden_size)


def test_loads_transformers4_checkpoint_and_reproduces_its_outputs(reference):
    _assert_matches_reference(_load(FIXTURE), reference)


def test_relative_positions_change_the_outputs(reference):
    """The fixture is sensitive to the position code: zeroing the encoding moves outputs far beyond ATOL."""
    model = _load(FIXTURE)
    model.config.max_relative_position = 0  # every distance maps to one sinusoid: order is lost
    with torch.no_grad():
        out = model(input_ids=reference["input_ids"], attention_mask=reference["attention_mask"],
                    token_type_ids=reference["token_type_ids"])
    assert (out.last_hidden_state - reference["last_hidden_state"]).abs().max() > 100 * ATOL


def test_legacy_bin_checkpoint_with_prefix_and_position_buffers_loads_cleanly(tmp_path, reference):
    """Older NeZha code saved each layer's sinusoid table; head models keep the encoder under 'nezha.'."""
    from safetensors.torch import load_file

    state = {f"nezha.{k}": v for k, v in load_file(str(FIXTURE / "model.safetensors")).items()}
    config = NezhaConfig.from_pretrained(str(FIXTURE))
    table = relative_position_table(config.max_position_embeddings, config.hidden_size // config.num_attention_heads,
                                    config.max_relative_position)
    for i in range(config.num_hidden_layers):
        state[f"nezha.encoder.layer.{i}.attention.self.relative_positions_encoding.positions_encoding"] = table
    state["nezha.embeddings.token_type_ids"] = torch.zeros(1, config.max_position_embeddings, dtype=torch.long)
    shutil.copy(FIXTURE / "config.json", tmp_path / "config.json")
    torch.save(state, tmp_path / "pytorch_model.bin")
    _assert_matches_reference(_load(tmp_path), reference)


def test_relative_position_table_clips_and_shifts():
    table = relative_position_table(12, 8, max_relative_position=3)  # (T, T, D)
    assert table.shape == (12, 12, 8)
    # entry [i, j] encodes clamp(j - i, -3, 3) + 3: sin(k) at dim 0, cos(k) at dim 1
    assert torch.allclose(table[0, 1, :2], torch.tensor([torch.sin(torch.tensor(4.0)), torch.cos(torch.tensor(4.0))]))
    assert torch.equal(table[0, 3], table[0, 11])  # both clipped to +3
    assert torch.equal(table[11, 0], table[8, 0])  # both clipped to -3
    assert torch.equal(table[2, 5], table[7, 10])  # only the distance matters
    assert not torch.equal(table[0, 1], table[1, 0])  # direction matters


def test_padding_does_not_change_real_token_outputs():
    model = _load(FIXTURE)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(4, model.config.vocab_size, (1, 11), generator=gen)
    types = torch.tensor([[0] * 5 + [1] * 6])
    padded_ids = torch.cat([ids, torch.randint(4, 100, (1, 7), generator=gen)], dim=1)  # junk ids, masked out
    padded_types = torch.cat([types, torch.ones(1, 7, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 11), torch.zeros(1, 7)], dim=1).long()
    with torch.no_grad():
        plain = model(input_ids=ids, token_type_ids=types, output_hidden_states=True)
        padded = model(input_ids=padded_ids, attention_mask=mask, token_type_ids=padded_types,
                       output_hidden_states=True)
    for a, b in zip(plain.hidden_states[1:], padded.hidden_states[1:]):
        torch.testing.assert_close(b[:, :11], a, atol=ATOL, rtol=0)
    torch.testing.assert_close(padded.pooler_output, plain.pooler_output, atol=ATOL, rtol=0)
    # the mask is what does it: without it the junk tokens are attended to
    with torch.no_grad():
        unmasked = model(input_ids=padded_ids, token_type_ids=padded_types)
    assert (unmasked.last_hidden_state[:, :11] - plain.last_hidden_state).abs().max() > 100 * ATOL


def _loss_and_grads(model, batch, seed):
    model.zero_grad()
    torch.manual_seed(seed)
    out = model(**batch)
    weights = torch.linspace(-1, 1, out.last_hidden_state.numel()).view_as(out.last_hidden_state)
    loss = (out.last_hidden_state * weights).sum() + out.pooler_output.pow(2).sum()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_gradient_checkpointing_gives_the_same_loss_and_grads(reference, dropout, monkeypatch):
    config = NezhaConfig.from_pretrained(str(FIXTURE), hidden_dropout_prob=dropout,
                                         attention_probs_dropout_prob=dropout)
    model = NezhaModel.from_pretrained(str(FIXTURE), config=config).train()
    batch = {k: reference[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    layer, calls = model.encoder.layer[0], []
    forward = layer.forward
    monkeypatch.setattr(layer, "forward", lambda *args: calls.append(1) or forward(*args))

    loss_plain, grads_plain = _loss_and_grads(model, batch, seed=3)
    assert len(calls) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5 renames it activation_checkpointing_enable
        model.gradient_checkpointing_enable()
    loss_ckpt, grads_ckpt = _loss_and_grads(model, batch, seed=3)
    assert len(calls) == 3  # the layer ran again in backward: checkpointing is really on

    assert torch.equal(loss_ckpt, loss_plain)
    assert grads_ckpt.keys() == grads_plain.keys() and len(grads_plain) == len(list(model.parameters()))
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_ckpt[name], grad, atol=1e-6, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


def test_forward_options_and_input_embeddings(reference):
    model = _load(FIXTURE)
    assert model.get_input_embeddings() is model.embeddings.word_embeddings
    ids, mask = reference["input_ids"], reference["attention_mask"]
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
        as_tuple = model(input_ids=ids, attention_mask=mask, return_dict=False)
        from_embeds = model(inputs_embeds=model.embeddings.word_embeddings(ids), attention_mask=mask)
    assert out.hidden_states is None and len(out.attentions) == model.config.num_hidden_layers
    probs = out.attentions[0]  # (B, h, T, T)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
    assert probs[mask[:, None, None, :].expand_as(probs) == 0].max() == 0  # padding gets no attention
    assert len(as_tuple) == 2 and torch.equal(as_tuple[0], out.last_hidden_state)
    torch.testing.assert_close(from_embeds.last_hidden_state, out.last_hidden_state, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model(input_ids=ids, inputs_embeds=model.embeddings.word_embeddings(ids))


def test_init_weights_on_one_layer_changes_exactly_that_layer():
    model = _load(FIXTURE)  # every tensor perturbed by the fixture script, LayerNorms included
    before = copy.deepcopy(model.state_dict())
    target = model.encoder.layer[1]
    torch.manual_seed(0)
    for module in target.modules():
        model._init_weights(module)
    prefix = "encoder.layer.1."
    std = model.config.initializer_range
    for name, value in model.state_dict().items():
        if not name.startswith(prefix):
            assert torch.equal(value, before[name]), f"{name} changed"
            continue
        assert not torch.equal(value, before[name]), f"{name} was not re-initialised"
        if "LayerNorm.weight" in name:
            assert torch.equal(value, torch.ones_like(value))
        elif name.endswith("bias"):
            assert torch.equal(value, torch.zeros_like(value))
        else:  # Linear weights
            assert value.mean().abs() < 0.2 * std and abs(value.std().item() - std) < 0.15 * std, name

    fresh = NezhaModel(NezhaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32, pad_token_id=1))
    emb = fresh.embeddings.word_embeddings
    with torch.no_grad():
        emb.weight.fill_(5.0)
    fresh._init_weights(emb)
    assert torch.equal(emb.weight[1], torch.zeros(16)) and emb.weight[0].abs().max() < 1


def test_tiny_nezha_folder_loads_with_auto_classes(tmp_path):
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    rng_before = torch.random.get_rng_state()
    build_tiny_model("nezha", tmp_path, seed=0)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the caller's random stream is untouched
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt"} <= {p.name for p in tmp_path.iterdir()}
    assert is_nezha_config(tmp_path) and is_nezha_config(tmp_path / "config.json")

    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path))
    model = _load(tmp_path)
    assert model.config.vocab_size == len(tokenizer) and model.config.max_relative_position == 64
    assert model.config.pad_token_id == tokenizer.pad_token_id
    batch = tokenizer(["engine housing", "a wireless network node"], ["motor casing", "radio"],
                      padding=True, return_tensors="pt")
    with torch.no_grad():
        want = model(**batch)
    assert want.last_hidden_state.shape == (2, batch["input_ids"].shape[1], model.config.hidden_size)

    registered = register_nezha()
    assert register_nezha() == registered  # idempotent
    config = AutoConfig.from_pretrained(str(tmp_path))
    auto_model = AutoModel.from_pretrained(str(tmp_path)).eval()
    if _transformers_major() >= 5:
        assert registered and type(config) is NezhaConfig and type(auto_model) is NezhaModel
    else:  # 4.x keeps its own class; it must agree with ours on the same weights
        assert not registered and type(auto_model) is not NezhaModel
    with torch.no_grad():
        got = auto_model(**batch)
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(got.pooler_output, want.pooler_output, atol=ATOL, rtol=0)


def test_tiny_nezha_is_reproducible(tmp_path):
    from safetensors.torch import load_file

    for name in "ab":
        (tmp_path / name).mkdir()
        build_tiny_model("nezha", tmp_path / name, seed=0)
    a, b = (load_file(str(tmp_path / name / "model.safetensors")) for name in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_is_nezha_config_reads_model_type(tmp_path):
    assert is_nezha_config({"model_type": "nezha"}) and not is_nezha_config({"model_type": "bert"})
    assert is_nezha_config(NezhaConfig()) and is_nezha_config(FIXTURE)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        is_nezha_config(tmp_path / "missing")


def test_mlm_head_scores_against_the_tied_word_embeddings():
    """NezhaForMaskedLM (moved here from pretraining): logits = LayerNorm(gelu(dense(h))) @ E^T + bias, by hand."""
    from kagglekit.models.nezha import NezhaForMaskedLM

    config = NezhaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         max_relative_position=4)
    torch.manual_seed(0)
    model = NezhaForMaskedLM(config).eval()
    with torch.no_grad():
        model.cls.predictions.bias.normal_()  # zero at init: make it count
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
    mask = (ids != 0).long()
    transform = model.cls.predictions.transform
    with torch.no_grad():
        hidden = model.nezha(ids, attention_mask=mask).last_hidden_state  # (B, T, H)
        h = torch.nn.functional.gelu(hidden @ transform.dense.weight.T + transform.dense.bias)
        h = torch.nn.functional.layer_norm(h, (16,), transform.LayerNorm.weight, transform.LayerNorm.bias, config.layer_norm_eps)
        expected = h @ model.nezha.embeddings.word_embeddings.weight.T + model.cls.predictions.bias  # (B, T, V)
        logits = model(ids, mask).logits
    assert logits.shape == (2, 5, 50)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    keys = set(model.state_dict())
    assert not any(k.startswith(("cls.predictions.decoder", "nezha.pooler")) for k in keys)  # tied functionally, no pooler
