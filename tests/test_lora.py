"""LoRA through peft, checked by numbers: at initialisation a LoRA model computes its base's outputs exactly (B = 0);
only the adapters and the head train, r·(in + out) per targeted layer; LLRD, EMA, FGM/PGD (on the frozen embedding)
and AWP see the trainable parameters; refusals name the key; an adapter-only folder is a small fraction of its base,
records the base's digests, predicts the same after the base moves, merged or not, and refuses another base; the doctor
counts what trains and what is saved, times decoder folds on their prompts and warns of emulated bf16."""

import hashlib
import json
import os
import shutil
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from kagglekit.config import load_config
from kagglekit.data.batching import PairEncodings
from kagglekit.data.prompts import encode_prompts
from kagglekit.losses import get_loss
from kagglekit.models.forward import run_logits
from kagglekit.models.lora import own_state
from kagglekit.models.pair_model import build_model, load_model_folder, save_model_folder
from kagglekit.run import FoldMeta
from kagglekit.train.loop import compute_loss

pytestmark = pytest.mark.compat  # LoRA runs under transformers 4.x too

LORA = {"r": 4, "alpha": 8.0, "dropout": 0.0, "targets": ["all-linear"]}
TOKENS = {"label_tokens": [" No", " Yes"]}
CASES = [("llama", "last_token", {}), ("llama", "token_logits", TOKENS), ("bert", "mean", {})]
TEMPLATE = "A: {text_a}\nB: {text_b}\nSame meaning? Answer:"
ROWS = pd.DataFrame({"text_a": ["opc drum", "a much longer first text about photoconductor drums", "lens", "wireless antenna"],
                     "text_b": ["inorganic photoconductor drum", "drum", "optical element of a camera", "radio aerial"]})
LABELS = torch.tensor([1.0, 0.25, 0.0, 0.75])
META = FoldMeta(task="uspppm", max_len=48, activation="sigmoid", recipe_state={})
CPU = torch.device("cpu")
BCE = get_loss("bce").fn


@pytest.fixture(autouse=True)
def digest_cache(tmp_path, monkeypatch):
    """Each test keeps its own digest cache."""
    monkeypatch.setenv("KAGGLEKIT_CACHE", str(tmp_path / "cache"))


def is_decoder(arch):
    return arch != "bert"


def encodings(tokenizer, arch, rows=ROWS, max_len=48):
    if is_decoder(arch):
        return encode_prompts(tokenizer, rows, TEMPLATE, max_len)
    return PairEncodings(tokenizer, rows["text_a"], rows["text_b"], max_len)


def meta_for(arch):
    return FoldMeta(task="uspppm", max_len=48, activation="sigmoid", recipe_state={"template": TEMPLATE} if is_decoder(arch) else {})


def lora_model(folder, head, options, seed=0, lora=LORA, trained=True):
    """A LoRA model in eval mode; `trained`: every adapter's B drawn at random (as after training), so they matter."""
    torch.manual_seed(seed)
    model, tokenizer = build_model(folder, head=head, dropout=0.0, lora=lora, **options)
    if trained:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
    return model.eval(), tokenizer


def with_identity(model, base, **load):
    from kagglekit.models.base_model import base_identity

    model.base_identity = {**base_identity(base), "quantize": "none", "merge_adapter": False, **load}
    return model


def folder_bytes(folder):
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def logits(model, enc):
    return run_logits(model, enc, batch_size=3, device=CPU)


# --------------------------------------------------------------------------------------------------
# the model


@pytest.mark.parametrize("arch, head, options", CASES)
def test_at_initialisation_a_lora_model_computes_what_its_base_does(arch, head, options, tiny_models):
    torch.manual_seed(0)
    base, tokenizer = build_model(tiny_models(arch), head=head, dropout=0.0, **options)
    model, _ = lora_model(tiny_models(arch), head, options, trained=False)
    if base.fc is not None:
        model.fc.load_state_dict(base.fc.state_dict())  # the same output layer: only the adapters differ
    assert all(torch.count_nonzero(p) == 0 for n, p in model.named_parameters() if "lora_B" in n)
    enc = encodings(tokenizer, arch)
    np.testing.assert_array_equal(logits(model, enc), logits(base.eval(), enc))  # B = 0: the adapters add exactly zero


@pytest.mark.parametrize("arch, head, options, targets", [
    *[(arch, head, options, ["all-linear"]) for arch, head, options in CASES],
    ("llama", "last_token", {}, ["q_proj", "v_proj"]),
    ("bert", "attention", {}, ["query", "value", "encoder.layer.1.output.dense"]),
])
def test_only_the_adapters_and_the_head_train_r_in_plus_out_per_layer(arch, head, options, targets, tiny_models):
    base, _ = build_model(tiny_models(arch), head=head, **options)  # no adapters: the layers' shapes, read another way
    model, _ = lora_model(tiny_models(arch), head, options, lora={**LORA, "targets": targets}, trained=False)
    lm_head = base.backbone.get_output_embeddings() if is_decoder(arch) else None
    chosen = [m for name, m in base.backbone.named_modules() if isinstance(m, nn.Linear) and m is not lm_head
              and (targets == ["all-linear"] or name.rsplit(".", 1)[-1] in targets or name in targets)]
    head_params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("backbone."))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in trainable.values()) == sum(4 * (m.in_features + m.out_features) for m in chosen) + head_params
    assert all(".lora_" in n for n in trainable if n.startswith("backbone."))  # the base is frozen, every weight of it
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("backbone."))  # the head in full
    if head == "token_logits":  # the output layer is the LM head's label rows, copied and trained in full
        ids = model.label_logits.label_ids
        assert torch.equal(model.label_logits.weight, model.backbone.get_output_embeddings().weight[ids])
        assert not model.backbone.get_output_embeddings().weight.requires_grad


@pytest.mark.parametrize("overrides, message", [
    (["quantize=4bit"], r"quantize=4bit loads the backbone's weights in 4 bits, which take no gradient: only LoRA adapters can "
                        r"train on them \(QLoRA\)\. Set lora_r"),
    (["lora_r=8", "freeze_layers=1"], r"freeze_layers=1 with lora_r=8: with LoRA every backbone weight is frozen already"),
    (["lora_r=8", "freeze_embeddings=true"], r"freeze_embeddings=True with lora_r=8: with LoRA the embeddings are frozen already"),
    (["lora_r=8", "reinit_layers=1"], r"reinit_layers=1 with lora_r=8: LoRA freezes the base weights, so a re-initialised layer"),
    (["lora_r=8", "mixout=0.1"], r"mixout=0\.1 with lora_r=8: Mixout pulls trained weights toward the pretrained ones"),
    (["lora_r=8", "quantize=8bit", "device=cpu"], r"quantize=8bit with device=cpu: 8- and 4-bit weights \(bitsandbytes\) need a "
                                                  r"CUDA device"),
    (["lora_alpha=32"], r"config key 'lora_alpha' \(32\.0\) does nothing with lora_r=0"),
    (["merge_adapter=true"], r"config key 'merge_adapter' \(true\) does nothing with lora_r=0"),
    (["lora_r=8", "lora_targets=all-linear,q_proj"], r"names all-linear beside other layers"),
    (["quantize=2bit"], r"config key 'quantize': unknown value '2bit'; valid values are \['none', '8bit', '4bit'\]"),
    (["lora_r=-1"], r"config key 'lora_r' must be >= 0, got -1"),
])
def test_settings_that_make_no_sense_with_lora_are_refused_with_the_reason(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def train_settings(tmp_path, backbone, sample, *changes):
    return [f"backbone={backbone}", f"output_dir={tmp_path / 'run'}", f"train_csv={sample / 'train.csv'}", "cpc_dir=", "max_rows=24",
            "n_folds=2", "epochs=1", "max_len=48", "batch_size=8", "head=last_token", "lora_r=4", *changes]


def train_config(tmp_path, backbone, sample, *changes):
    return load_config(None, train_settings(tmp_path, backbone, sample, *changes))


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from kagglekit.testing import write_uspppm_sample

    return write_uspppm_sample(tmp_path_factory.mktemp("uspppm"))


@pytest.mark.parametrize("changes, message", [
    (["quantize=4bit"], r"^quantize=4bit: 8- and 4-bit weights \(bitsandbytes\) need a CUDA device, and this run's device is cpu"),
    (["lora_targets=q_proj,attn_out"], r"lora_targets: \['attn_out'\] is no linear layer of the LlamaForCausalLM backbone; its "
                                       r"linear layers are named \['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', "
                                       r"'up_proj', 'v_proj'\]"),
])
def test_train_refuses_before_writing_anything(changes, message, tiny_models, sample, tmp_path, monkeypatch):
    from kagglekit.train.runner import train_folds

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # device=auto is the CPU, on any machine
    with pytest.raises(ValueError, match=message):
        train_folds(train_config(tmp_path, tiny_models("llama"), sample, *changes), folds=[0])
    assert not (tmp_path / "run").exists()


def test_missing_peft_is_one_line_that_names_pip_install_peft(tiny_models, sample, tmp_path, monkeypatch, capsys):
    from kagglekit.cli import main

    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    args = [item for setting in train_settings(tmp_path, tiny_models("llama"), sample) for item in ("--set", setting)]
    assert main(["train", "--fold", "0", *args]) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert line.startswith("kagglekit train: error: LoRA (lora_r > 0, or a fold folder holding adapters) needs the peft package")
    assert "pip install peft (the extra kagglekit[llm])" in line and "pip install --no-index --no-deps" in line
    assert not (tmp_path / "run").exists()


def test_the_encoder_path_never_imports_peft(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # any import of peft would fail
    model, tokenizer = build_model(tiny_models("bert"), head="mean")
    save_model_folder(model, tokenizer, tmp_path / "fold0", META)
    loaded, tok, _ = load_model_folder(tmp_path / "fold0")
    enc = encodings(tok, "bert")
    np.testing.assert_allclose(logits(loaded, enc), logits(model.eval(), enc), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# the trainer's parts see the trainable parameters


def test_layer_decay_gives_each_layers_adapters_that_layers_rate(tiny_models):
    from kagglekit.models.surgery import encoder_layers
    from kagglekit.train.optim import param_groups

    model, _ = lora_model(tiny_models("llama"), "last_token", {})
    lr = 1e-3
    groups = param_groups(model, lr=lr, head_lr=5e-3, weight_decay=0.01, layer_decay=0.5)
    rates = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert set(rates) == {id(p) for p in model.parameters() if p.requires_grad}  # the frozen base is in no group
    layers = encoder_layers(model.backbone)
    for i, layer in enumerate(layers):
        adapters = [p for n, p in layer.named_parameters() if ".lora_" in "." + n]
        assert len(adapters) == 2 * 7  # A and B of q, k, v, o, gate, up, down
        assert all(rates[id(p)] == pytest.approx(lr * 0.5 ** (len(layers) - 1 - i)) for p in adapters)
    assert rates[id(model.fc.weight)] == rates[id(model.fc.bias)] == 5e-3
    assert not any(g["name"].startswith("embeddings") for g in groups)


def test_ema_averages_the_trainable_parameters_only(tiny_models):
    from kagglekit.train.ema import EMA

    model, _ = lora_model(tiny_models("llama"), "last_token", {})
    ema = EMA(model, decay=0.5)
    assert set(ema.shadow) == {n for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(1.0)
    ema.update(model)
    name = next(n for n in ema.shadow if "lora_A" in n)
    assert torch.allclose(ema.shadow[name], model.get_parameter(name) - 0.5)  # halfway from the old value


def attack(model, adversary, inputs):
    """A clean backward, then the adversary's step(s): the table each adversarial forward saw, and the gradients after."""
    model.zero_grad(set_to_none=True)
    compute_loss(model, inputs, LABELS, BCE, None).backward()
    table, seen = model.backbone.get_input_embeddings().weight, []

    def forward_loss():
        seen.append(table.detach().clone())
        return compute_loss(model, inputs, LABELS, BCE, None)

    adversary.attack_backward(forward_loss, lambda loss: loss.backward())
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return seen, grads


@pytest.mark.parametrize("arch, head", [("llama", "last_token"), ("bert", "mean")])
def test_fgm_moves_the_frozen_embedding_along_its_own_gradient_and_restores_it(arch, head, tiny_models):
    from kagglekit.train.adversarial import FGM

    model, tokenizer = lora_model(tiny_models(arch), head, {})
    inputs = encodings(tokenizer, arch).collate(list(range(len(ROWS))))
    inputs.pop("labels", None)
    table = model.backbone.get_input_embeddings().weight
    assert not table.requires_grad
    original = table.detach().clone()
    table.requires_grad_(True)  # the reference: the table's own gradient, for one backward
    compute_loss(model, inputs, LABELS, BCE, None).backward()
    gradient, table.grad = table.grad.clone(), None
    table.requires_grad_(False)
    seen, _ = attack(model, FGM(model, epsilon=0.5), inputs)
    torch.testing.assert_close(seen[0] - original, 0.5 * gradient / gradient.norm(), rtol=0, atol=1e-6)
    assert torch.equal(table, original)  # restored bit for bit


@pytest.mark.parametrize("arch, head", [("llama", "last_token"), ("bert", "mean")])
def test_pgd_on_the_frozen_embedding_equals_pgd_on_the_same_table_trained(arch, head, tiny_models):
    from kagglekit.train.adversarial import PGD

    frozen, tokenizer = lora_model(tiny_models(arch), head, {})
    trained, _ = lora_model(tiny_models(arch), head, {})
    trained.backbone.get_input_embeddings().weight.requires_grad_(True)  # the attack then reads the table's .grad
    inputs = encodings(tokenizer, arch).collate(list(range(len(ROWS))))
    inputs.pop("labels", None)
    seen_frozen, grads_frozen = attack(frozen, PGD(frozen, epsilon=0.5, alpha=0.2, steps=3), inputs)
    seen_trained, grads_trained = attack(trained, PGD(trained, epsilon=0.5, alpha=0.2, steps=3), inputs)
    assert len(seen_frozen) == 3
    for a, b in zip(seen_frozen, seen_trained):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert set(grads_trained) - set(grads_frozen) == {"backbone." + next(n for n, p in trained.backbone.named_parameters()
                                                                        if p is trained.backbone.get_input_embeddings().weight)}
    for name, grad in grads_frozen.items():  # the adapters' and head's gradients: the normal and the adversarial one
        torch.testing.assert_close(grad, grads_trained[name], rtol=1e-5, atol=1e-7)


def test_awp_perturbs_the_adapters_and_the_head_only(tiny_models):
    from kagglekit.train.adversarial import AWP

    model, tokenizer = lora_model(tiny_models("llama"), "last_token", {})
    awp = AWP(model, adv_lr=0.5, adv_eps=0.01)
    names = {n for n, _ in awp.params}
    assert names == {n for n, p in model.named_parameters() if p.requires_grad and "weight" in n}
    assert any("lora_A" in n for n in names) and "fc.weight" in names
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    inputs = encodings(tokenizer, "llama").collate(list(range(len(ROWS))))
    inputs.pop("labels", None)
    compute_loss(model, inputs, LABELS, BCE, None).backward()
    awp.attack()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and moved <= names
    awp.restore()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


# --------------------------------------------------------------------------------------------------
# the fold folder


@pytest.mark.parametrize("arch, head, options", CASES)
def test_a_lora_folder_holds_adapters_head_and_the_bases_identity_at_a_fraction_of_its_size(arch, head, options, tiny_models, tmp_path):
    from safetensors.torch import load_file

    base = shutil.copytree(tiny_models(arch), tmp_path / "base")
    model, tokenizer = lora_model(base, head, options)
    folder = save_model_folder(with_identity(model, base), tokenizer, tmp_path / "fold0", meta_for(arch))
    saved = load_file(folder / "model.safetensors")
    assert set(saved) == set(own_state(model)) and all(".lora_" in k for k in saved if k.startswith("backbone."))
    assert any("lora_B" in k for k in saved)
    # measured at r=4: tiny llama 0.045 (weights) and 0.11 (folder: the tokenizer files are in both), tiny bert 0.05 and 0.09
    assert (folder / "model.safetensors").stat().st_size / (base / "model.safetensors").stat().st_size < 0.06
    assert folder_bytes(folder) / folder_bytes(base) < 0.15
    recorded = json.loads((folder / "kagglekit.json").read_text())["base_model"]
    assert recorded == {"path": str(base.resolve()), "name": "base", "config_sha256": recorded["config_sha256"],
                        "files": {"model.safetensors": hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest()},
                        "quantize": "none", "merge_adapter": False}
    config = json.loads((base / "config.json").read_text())
    config.pop("transformers_version", None)
    assert recorded["config_sha256"] == hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("arch, head, options", CASES)
def test_moved_folder_and_base_predict_the_same_merged_or_not(arch, head, options, tiny_models, tmp_path):
    base = shutil.copytree(tiny_models(arch), tmp_path / "base")
    model, tokenizer = lora_model(base, head, options)
    save_model_folder(with_identity(model, base), tokenizer, tmp_path / "fold0", meta_for(arch))
    enc = encodings(tokenizer, arch)
    before = logits(model, enc)
    loaded, tok, _ = load_model_folder(tmp_path / "fold0")  # the base where training found it
    np.testing.assert_array_equal(logits(loaded, enc), before)
    shutil.move(str(base), str(tmp_path / "elsewhere"))  # another machine: the run and its base both moved
    shutil.move(str(tmp_path / "fold0"), str(tmp_path / "run0"))
    with pytest.raises(FileNotFoundError, match=r"which is not here: pass the base's folder with --base-model DIR"):
        load_model_folder(tmp_path / "run0")
    moved, _, _ = load_model_folder(tmp_path / "run0", base_model=tmp_path / "elsewhere")
    np.testing.assert_array_equal(logits(moved, enc), before)
    merged, _, _ = load_model_folder(tmp_path / "run0", base_model=[tmp_path / "nowhere", tmp_path / "elsewhere"], merge_adapter=True)
    assert not any(".lora_" in n for n, _ in merged.named_parameters())  # plain layers again
    np.testing.assert_allclose(logits(merged, enc), before, rtol=0, atol=1e-4)  # fp32: W + s·BA once vs. Wx + s·B(Ax)
    assert not np.array_equal(before, logits(lora_model(tiny_models(arch), head, options, trained=False)[0], enc))  # adapters matter


def test_merge_adapter_recorded_at_training_applies_at_predict(tiny_models, tmp_path):
    base = tiny_models("llama")
    model, tokenizer = lora_model(base, "last_token", {})
    save_model_folder(with_identity(model, base, merge_adapter=True), tokenizer, tmp_path / "fold0", meta_for("llama"))
    loaded, _, _ = load_model_folder(tmp_path / "fold0")
    assert not any(".lora_" in n for n, _ in loaded.named_parameters())
    kept, _, _ = load_model_folder(tmp_path / "fold0", merge_adapter=False)
    assert any(".lora_" in n for n, _ in kept.named_parameters())


def test_another_base_is_refused_naming_both_digests(tiny_models, tmp_path):
    base = shutil.copytree(tiny_models("llama"), tmp_path / "base")
    model, tokenizer = lora_model(base, "last_token", {})
    save_model_folder(with_identity(model, base), tokenizer, tmp_path / "fold0", meta_for("llama"))
    other = shutil.copytree(base, tmp_path / "other")  # the same config, other weights (another fine-tune of it)
    from safetensors.torch import load_file, save_file

    weights = load_file(other / "model.safetensors")
    save_file({k: v + 0.01 for k, v in weights.items()}, other / "model.safetensors", metadata={"format": "pt"})
    want = hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest()[:16]
    got = hashlib.sha256((other / "model.safetensors").read_bytes()).hexdigest()[:16]
    with pytest.raises(ValueError, match=rf"no given folder is that base: {other}: model\.safetensors has sha256 {got}, the base's has "
                                         rf"{want}\. Pass the very folder the run was trained on with --base-model DIR"):
        load_model_folder(tmp_path / "fold0", base_model=other)
    with pytest.raises(ValueError, match=r"config\.json hashes to [0-9a-f]{16}, the base's to [0-9a-f]{16}"):
        load_model_folder(tmp_path / "fold0", base_model=tiny_models("qwen2"))


def test_save_dtype_fp16_keeps_adapters_and_head_in_half(tiny_models, tmp_path):
    from safetensors.torch import load_file

    base = tiny_models("llama")
    model, tokenizer = lora_model(base, "last_token", {})
    folder = save_model_folder(with_identity(model, base), tokenizer, tmp_path / "fold0", meta_for("llama"), dtype="fp16")
    saved = load_file(folder / "model.safetensors")
    assert all(t.dtype == torch.float16 for t in saved.values() if t.is_floating_point())
    loaded, _, _ = load_model_folder(folder)
    for name, tensor in own_state(loaded).items():
        assert tensor.dtype == torch.float32 and torch.equal(tensor, saved[name].float()), name


def test_digests_are_computed_once_per_size_and_mtime(tmp_path, monkeypatch):
    from kagglekit.models import base_model

    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    first = base_model.file_sha256(path)
    assert first == hashlib.sha256(b"a" * 1000).hexdigest()
    cache = json.loads((tmp_path / "cache" / "digests.json").read_text())
    assert cache[str(path.resolve())]["sha256"] == first
    stat = path.stat()
    path.write_bytes(b"b" * 1000)  # other contents, same size; the old mtime put back: the cached digest answers
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    monkeypatch.setattr(base_model, "_memory", {})  # a new process: only the cache file remembers
    assert base_model.file_sha256(path) == first
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new mtime: read again
    assert base_model.file_sha256(path) == hashlib.sha256(b"b" * 1000).hexdigest()


def test_the_resume_state_holds_the_adapters_and_head_and_restores_them(tiny_models, sample, tmp_path):
    from kagglekit.train.components import build_components
    from kagglekit.train.fold_state import FoldState

    cfg = train_config(tmp_path, tiny_models("llama"), sample)
    rows = pd.DataFrame({"id": range(16)})
    parts = build_components(cfg, rows, num_outputs=1, loss="bce", device=CPU, precision="fp32")
    assert parts.model.base_identity["files"] and parts.model.base_identity["quantize"] == "none"
    assert parts.surgery["lora"]["trainable_params"] == sum(p.numel() for p in parts.model.parameters() if p.requires_grad)
    with torch.no_grad():
        for name, p in parts.model.named_parameters():
            if p.requires_grad:
                p.add_(0.01)
    state = FoldState(parts).state_dict()
    assert set(state["model"]) == set(own_state(parts.model))
    torch.manual_seed(1)  # another init of the adapters and head
    other = build_components(cfg, rows, num_outputs=1, loss="bce", device=CPU, precision="fp32")
    assert not torch.equal(other.model.fc.weight, parts.model.fc.weight)
    FoldState(other).load_state_dict(state)
    for name, tensor in own_state(parts.model).items():
        assert torch.equal(own_state(other.model)[name], tensor), name


def test_components_refuse_quantize_off_cuda_naming_the_key(tiny_models, sample, tmp_path, monkeypatch):
    from kagglekit.train.components import build_components

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = train_config(tmp_path, tiny_models("llama"), sample, "quantize=8bit")
    with pytest.raises(ValueError, match=r"quantize=8bit: 8- and 4-bit weights \(bitsandbytes\) need a CUDA device"):
        build_components(cfg, pd.DataFrame({"id": range(4)}), num_outputs=1, loss="bce", device=CPU, precision="fp32")


def test_quantize_loads_the_base_quantised_prepares_it_and_checkpoints(tiny_models, sample, tmp_path, monkeypatch):
    """The QLoRA plumbing, without a GPU: bitsandbytes' loading is stood in for, the rest is the kit's."""
    from kagglekit.models import lora
    from kagglekit.models.backbones import fp32_load_options
    from kagglekit.train.components import build_components

    prepared, asked = [], []
    monkeypatch.setattr(lora, "check_quantize", lambda quantize, device: asked.append((quantize, str(device))))
    monkeypatch.setattr(lora, "quantized_load_options", lambda quantize, device, dtype: asked.append(dtype) or fp32_load_options())
    monkeypatch.setattr(lora, "prepare_kbit_training", lambda backbone: prepared.append(backbone) or backbone)
    cfg = train_config(tmp_path, tiny_models("llama"), sample, "quantize=4bit")
    parts = build_components(cfg, pd.DataFrame({"id": range(8)}), num_outputs=1, loss="bce", device=CPU, precision="fp32")
    assert asked == [("4bit", "cpu"), torch.float32] and prepared == [parts.model.backbone]  # prepared before the adapters went in
    assert parts.surgery["gradient_checkpointing"] is True  # QLoRA checkpoints, gradient_checkpointing=false or not
    assert parts.model.base_identity["quantize"] == "4bit"


def test_a_quantised_run_predicts_on_cpu_with_the_full_precision_base_and_says_so(tiny_models, tmp_path):
    base = tiny_models("llama")
    model, tokenizer = lora_model(base, "last_token", {})
    save_model_folder(with_identity(model, base, quantize="8bit"), tokenizer, tmp_path / "fold0", meta_for("llama"))
    with pytest.warns(UserWarning, match=r"trained on its base quantised \(quantize=8bit\); on cpu it predicts with the full-precision"):
        loaded, _, _ = load_model_folder(tmp_path / "fold0")
    enc = encodings(tokenizer, "llama")
    np.testing.assert_array_equal(logits(loaded, enc), logits(model, enc))


def test_predict_asks_for_8_or_4_bits_whatever_the_run_trained_with(tiny_models, tmp_path, monkeypatch):
    """predict's --precision 8bit/4bit overrides the run's quantize: the base loads quantised (unmerged), or in fp16,
    merged, then its layers are quantised (merge_adapter); an explicit 'none' loads a quantised run's base in full."""
    from kagglekit.models import lora

    base = tiny_models("llama")
    model, tokenizer = lora_model(base, "last_token", {})
    save_model_folder(with_identity(model, base), tokenizer, tmp_path / "fold0", meta_for("llama"))
    with pytest.raises(ValueError, match=r"quantize=8bit: 8- and 4-bit weights \(bitsandbytes\) need a CUDA device"):
        load_model_folder(tmp_path / "fold0", quantize="8bit")  # asked for, on a CPU: refused, not warned about
    asked, quantised = [], []
    monkeypatch.setattr(lora, "check_quantize", lambda quantize, device: asked.append(quantize))
    monkeypatch.setattr(lora, "quantized_load_options", lambda quantize, device, dtype: asked.append(("options", quantize)) or {})
    monkeypatch.setattr(lora, "quantize_linears", lambda module, quantize, device, dtype: quantised.append((quantize, dtype)) or 1)
    plan = lora.AdapterLoad.plan(tmp_path / "fold0", FoldMeta.read(tmp_path / "fold0"), quantize="4bit")
    assert (plan.quantize, plan.merge, asked) == ("4bit", False, ["4bit", ("options", "4bit")])
    merged, _, _ = load_model_folder(tmp_path / "fold0", quantize="8bit", merge_adapter=True)
    assert quantised == [("8bit", torch.float32)] and not any(".lora_" in n for n, _ in merged.named_parameters())
    save_model_folder(with_identity(model, base, quantize="8bit"), tokenizer, tmp_path / "q8", meta_for("llama"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit none: no 'trained quantised' warning
        plain, _, _ = load_model_folder(tmp_path / "q8", quantize="none")
    enc = encodings(tokenizer, "llama")
    np.testing.assert_array_equal(logits(plain, enc), logits(model, enc))


def fake_int8(module, quantize, device, dtype):
    """What LLM.int8 does to a weight, on the CPU: each output row rounded to 127 steps of its largest magnitude."""
    count = 0
    for layer in module.modules():
        if isinstance(layer, torch.nn.Linear):
            with torch.no_grad():
                scale = layer.weight.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127
                layer.weight.copy_(torch.round(layer.weight / scale) * scale)
            count += 1
    return count


@pytest.mark.parametrize("arch, head, options", CASES)
def test_a_full_fine_tune_predicts_with_its_weights_rounded_to_8_bits(arch, head, options, tiny_models, tmp_path, monkeypatch):
    from kagglekit.models import lora

    torch.manual_seed(0)
    model, tokenizer = build_model(tiny_models(arch), head=head, dropout=0.0, **options)
    save_model_folder(model.eval(), tokenizer, tmp_path / "fold0", meta_for(arch))
    with pytest.raises(ValueError, match=r"quantize=4bit: 8- and 4-bit weights \(bitsandbytes\) need a CUDA device"):
        load_model_folder(tmp_path / "fold0", quantize="4bit")
    monkeypatch.setattr(lora, "check_quantize", lambda quantize, device: None)
    monkeypatch.setattr(lora, "quantize_linears", fake_int8)
    enc = encodings(tokenizer, arch)
    full = logits(load_model_folder(tmp_path / "fold0")[0], enc)
    rounded = logits(load_model_folder(tmp_path / "fold0", quantize="8bit")[0], enc)
    assert not np.array_equal(full, rounded)  # the rounding reached the model that predicts
    np.testing.assert_allclose(rounded, full, rtol=0, atol=0.05 * np.abs(full).max() + 1e-3)


# --------------------------------------------------------------------------------------------------
# the doctor


def test_doctor_counts_what_trains_and_sizes_adapter_only_folders(tiny_models, tmp_path):
    from kagglekit.tools import doctor

    cfg = load_config(None, {"backbone": str(tiny_models("llama")), "output_dir": str(tmp_path / "run"), "head": "last_token",
                             "lora_r": 4, "lora_alpha": 8.0, "save_dtype": "fp16"})
    model, _ = lora_model(tiny_models("llama"), "last_token", {}, trained=False)
    trainable, total = (sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters()))
    assert doctor.count_trainable(cfg) == trainable and doctor.count_parameters(cfg) == total
    estimate = doctor.estimate_output(cfg, [0])
    assert (estimate.trainable, estimate.weights_bytes, estimate.resume_bytes) == (trainable, 2 * trainable, 12 * trainable)
    size = doctor.check_output_size(cfg, "0")[0].line()
    assert f"LoRA adapters and head: {trainable:,} of {total:,} parameters train ({trainable / total:.2%}), fp16 weights" in size


def test_doctor_loads_a_lora_folder_onto_its_moved_base(tiny_models, tmp_path):
    from kagglekit.tools.doctor import check_folder

    base = shutil.copytree(tiny_models("llama"), tmp_path / "base")
    model, tokenizer = lora_model(base, "last_token", {})
    save_model_folder(with_identity(model, base), tokenizer, tmp_path / "fold0", meta_for("llama"))
    shutil.move(str(base), str(tmp_path / "moved"))
    check, _ = check_folder(tmp_path / "fold0", device=CPU)
    assert check.status == "fail" and "--base-model DIR" in check.detail
    check, timing = check_folder(tmp_path / "fold0", device=CPU, rows=100, base_model=tmp_path / "moved")
    adapters = sum(t.numel() for t in own_state(model).values())
    assert check.status == "ok" and f"LoRA r=4: {adapters:,} parameters in the folder (adapters, head), on the base base" in check.detail
    assert timing is not None and timing.rows == 100


def _kit_installed() -> bool:
    import importlib.metadata as md

    try:
        return md.requires("kagglekit") is not None
    except md.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _kit_installed(), reason="kagglekit is not installed: no package metadata")
def test_doctor_requires_peft_for_a_lora_config_or_folder(tiny_models, tmp_path, monkeypatch):
    """peft is the llm extra: its line appears for a LoRA config or LoRA folders, fails when peft is missing, and
    stays away from an encoder run's doctor."""
    from kagglekit import requirements
    from kagglekit.tools import doctor

    def peft_line(**kwargs):
        lines = []
        doctor.run_doctor(out=lines.append, timing=False, **kwargs)
        return [line for line in lines if line[6:].startswith("peft: ")]

    base = tiny_models("llama")
    cfg = load_config(None, {"backbone": str(base), "output_dir": str(tmp_path / "run"), "head": "last_token", "lora_r": 4})
    model, tokenizer = lora_model(base, "last_token", {})
    save_model_folder(with_identity(model, base), tokenizer, tmp_path / "fold0", meta_for("llama"))
    assert peft_line(config=cfg)[0].startswith("ok    peft: ")
    assert peft_line(models=[tmp_path / "fold0"])[0].startswith("ok    peft: ")
    assert peft_line(config=load_config(None, {"backbone": str(tiny_models("bert")), "output_dir": str(tmp_path / "enc")})) == []
    real = requirements.installed_version
    monkeypatch.setattr(requirements, "installed_version", lambda name: None if name == "peft" else real(name))
    assert peft_line(config=cfg)[0].startswith("fail  peft: not installed; kagglekit needs peft>=0.13: attach a dataset")


def test_doctor_times_a_decoder_fold_on_its_prompts(tiny_models, tmp_path, monkeypatch):
    from kagglekit.tools import doctor

    model, tokenizer = build_model(tiny_models("qwen2"), head="last_token")
    folder = save_model_folder(model, tokenizer, tmp_path / "fold0", meta_for("qwen2"))
    timed = []
    monkeypatch.setattr(doctor, "time_inference", lambda model, enc, **options: timed.append(enc) or 0.01)
    check, timing = doctor.check_folder(folder, device=CPU, rows=1000)
    assert check.status == "ok" and timing.sample_rows == doctor.SAMPLE_ROWS
    enc = timed[-1]
    assert len(enc) == doctor.SAMPLE_ROWS and set(enc.lengths.tolist()) == {48}  # every prompt fills max_len: an upper bound
    ids = enc.collate([0])["input_ids"][0].tolist()
    assert tokenizer.decode(ids).endswith("\nSame meaning? Answer:")  # the fold's template, its cue kept whole: a prompt, no pair


def test_doctor_warns_when_bf16_would_be_emulated(monkeypatch):
    from kagglekit.tools.doctor import check_bf16

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (7, 5) if index == 0 else (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "Tesla T4" if index == 0 else "A100")
    assert check_bf16(load_config(None, ["precision=fp16"])) == [] and check_bf16(None) == []
    (warn,) = check_bf16(load_config(None, ["precision=bf16"]))
    assert warn.line().startswith("warn  gpu 0 bf16: precision=bf16, but Tesla T4 (sm_75) has no bf16 in hardware: torch would "
                                  "emulate it, about 6x slower")
    assert "Use precision=fp16 or auto" in warn.detail


# --------------------------------------------------------------------------------------------------
# the real SmolLM2-135M, when its folder is there


@pytest.mark.slow
def test_smollm2_with_r8_on_every_linear_layer(tmp_path):
    from kagglekit.testing import smollm2_dir

    folder = smollm2_dir()
    if folder is None:
        pytest.skip("the SmolLM2-135M folder is not built (kagglekit.testing.build_smollm2_folder)")
    model, tokenizer = build_model(folder, head="last_token", lora={"r": 8, "alpha": 16.0, "dropout": 0.0, "targets": ["all-linear"]})
    config = model.backbone.config
    hidden, inner = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (hidden // config.num_attention_heads)
    per_layer = 8 * ((hidden + hidden) * 2 + (hidden + kv) * 2 + (hidden + inner) * 3)  # q, o; k, v; gate, up, down
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == per_layer * config.num_hidden_layers + hidden + 1
    saved = save_model_folder(with_identity(model, folder), tokenizer, tmp_path / "fold0", META)
    # measured: 2,442,817 trainable (2,442,240 in the adapters), 9.8 MB of weights against the base's 269 MB: 0.037
    assert (saved / "model.safetensors").stat().st_size / (folder / "model.safetensors").stat().st_size < 0.05
