"""Decoder (causal LM) backbones: detection, prompts and their truncation, padding, the last_token and
token_logits heads against the causal LM's own outputs, config keys, refusals, and the model folder."""

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from kagglekit.config import Config, load_config
from kagglekit.data.batching import PairEncodings
from kagglekit.data.prompts import _keep_counts, encode_prompts, prompt_lengths, render, template_fields
from kagglekit.data.recipes import get_recipe
from kagglekit.models.decoder import backbone_kind, is_decoder_config, label_token_ids, position_ids
from kagglekit.models.forward import run_logits
from kagglekit.models.pair_model import build_model, load_model_folder, save_model_folder
from kagglekit.run import FoldMeta

pytestmark = pytest.mark.compat  # the decoder path runs under transformers 4.x too

DECODERS = ("llama", "qwen2", "gemma2")
TEMPLATE = "A: {text_a}\nB: {text_b}\nSame meaning? Answer:"
ROWS = pd.DataFrame({
    "text_a": ["opc drum", "a much longer first text about photoconductor drums and toner", "lens"],
    "text_b": ["inorganic photoconductor drum", "drum", "optical element of a camera"],
})
CPU = torch.device("cpu")


def fresh(model):
    """`model` in eval mode, dropout off: outputs are deterministic."""
    return model.eval()


def unpadded(model, enc, row):
    """The model's output for one row alone: no padding at all."""
    batch = enc.collate([row])
    with torch.no_grad():
        return model(**batch)[0]


# --------------------------------------------------------------------------------------------------
# which folders are decoders


@pytest.mark.parametrize("config, decoder", [
    ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, True),
    ({"model_type": "qwen2"}, True),  # no architectures: the family decides
    ({"model_type": "llama", "architectures": ["LlamaForSequenceClassification"]}, True),
    ({"model_type": "my_lm", "architectures": ["MyLMForCausalLM"]}, True),  # an unknown family with a causal LM head
    ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, True),
    ({"model_type": "bert", "architectures": ["BertForMaskedLM"]}, False),
    ({"model_type": "bert", "is_decoder": True}, True),
    ({"model_type": "deberta-v2"}, False),
    ({"model_type": "t5", "is_encoder_decoder": True, "architectures": ["T5ForConditionalGeneration"]}, False),
    ({"model_type": "bart", "is_encoder_decoder": True, "architectures": ["BartForCausalLM"]}, False),
])
def test_the_decoder_rule_reads_config_json(config, decoder):
    assert is_decoder_config(config) is decoder


def test_every_tiny_folder_is_classified(tiny_models, tmp_path):
    for arch in DECODERS:
        assert backbone_kind(tiny_models(arch)) == "decoder", arch
    assert backbone_kind(tiny_models("bert")) == "encoder"
    assert backbone_kind(tmp_path) is None  # no config.json: the backbone checks report the folder


# --------------------------------------------------------------------------------------------------
# templates and truncation


def test_template_fields_and_render():
    assert template_fields("{text_b} then {text_a} and {text_b} {{literal}}") == ["text_b", "text_a"]
    text, spans = render("A: {text_a}. B: {text_b}.", {"text_a": "xy", "text_b": "z"})
    assert text == "A: xy. B: z." and [text[s:e] for s, e in spans] == ["xy", "z"]
    for bad, message in [("{}", "not a plain name"), ("{0}", "not a plain name"), ("{text_a.x}", "not a plain name"),
                         ("{text_a:>5}", "not a plain name"), ("{text_a!r}", "not a plain name"), ("no fields", "names no field"),
                         ("{text_a", "not a valid template")]:
        with pytest.raises(ValueError, match=message):
            template_fields(bad)


@pytest.mark.parametrize("counts, budget", [([10, 3], 8), ([7, 7], 9), ([5, 9, 2], 10), ([4, 4], 8), ([6, 1], 0)])
def test_keep_counts_cut_the_longest_first(counts, budget):
    keep = _keep_counts(counts, budget)
    assert sum(keep) == min(budget, sum(counts)) and all(0 <= k <= n for k, n in zip(keep, counts))
    cut = [j for j, (k, n) in enumerate(zip(keep, counts)) if k < n]
    # every field that lost tokens keeps at least as many as any other field keeps, give or take one
    assert all(keep[j] + 1 >= max(keep) for j in cut)


@pytest.mark.parametrize("arch", DECODERS)
def test_a_prompt_that_fits_is_the_tokenizers_own(arch, tiny_models):
    _, tokenizer = build_model(tiny_models(arch), head="last_token")
    enc = encode_prompts(tokenizer, ROWS, TEMPLATE, max_len=256)
    for row, ids in enumerate(enc.input_ids):
        prompt, _ = render(TEMPLATE, ROWS.iloc[row])
        assert ids == tokenizer(prompt)["input_ids"]
    assert enc.token_type_ids is None and enc.pad_id == tokenizer.pad_token_id
    np.testing.assert_array_equal(prompt_lengths(tokenizer, ROWS, TEMPLATE), enc.lengths)


@pytest.mark.parametrize("arch", DECODERS)
def test_truncation_keeps_the_cue_and_both_ends_of_the_long_text(arch, tiny_models):
    _, tokenizer = build_model(tiny_models(arch), head="last_token")
    long_a = "first " + " ".join(["drum"] * 80) + " final"
    rows = pd.DataFrame({"text_a": [long_a], "text_b": ["lens"]})
    full = encode_prompts(tokenizer, rows, TEMPLATE, max_len=10_000).input_ids[0]
    cut = encode_prompts(tokenizer, rows, TEMPLATE, max_len=40).input_ids[0]
    assert len(full) > 40 and len(cut) == 40
    cue = tokenizer("\nSame meaning? Answer:", add_special_tokens=False)["input_ids"]
    tail = len(cue) + 6
    assert cut[-tail:] == full[-tail:]  # the end of the prompt (text_b and the cue) is whole
    text = tokenizer.decode(cut, skip_special_tokens=True)
    assert text.endswith("Same meaning? Answer:") and "B: lens" in text
    assert "A: first" in text and "final\nB:" in text  # text_a's head and tail kept, its middle cut
    assert text.count("drum") < 80


def test_a_field_named_twice_is_cut_in_both_places(tiny_models):
    _, tokenizer = build_model(tiny_models("llama"), head="last_token")
    rows = pd.DataFrame({"text_a": ["lens"], "text_b": ["first " + " ".join(["drum"] * 60) + " final"]})
    ids = encode_prompts(tokenizer, rows, "{text_b} | {text_a} | {text_b}? Answer:", max_len=50).input_ids[0]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert len(ids) == 50 and text.endswith("final? Answer:") and text.startswith("first") and "final | lens | first" in text


def test_a_template_longer_than_max_len_is_refused(tiny_models):
    _, tokenizer = build_model(tiny_models("qwen2"), head="last_token")
    with pytest.raises(ValueError, match=r"max_len=8: the template's own text takes \d+ tokens"):
        encode_prompts(tokenizer, ROWS, "Question number one about the following: {text_a} and {text_b}? Answer:", max_len=8)


def test_a_tokenizer_that_appends_eos_still_ends_on_the_cue(tiny_models):
    from tokenizers import processors

    _, tokenizer = build_model(tiny_models("qwen2"), head="last_token")
    eos = tokenizer.eos_token
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", special_tokens=[(eos, tokenizer.eos_token_id)])
    assert tokenizer("x")["input_ids"][-1] == tokenizer.eos_token_id
    ids = encode_prompts(tokenizer, ROWS, TEMPLATE, max_len=256).input_ids[0]
    assert ids[-1] != tokenizer.eos_token_id and tokenizer.decode(ids).endswith("Answer:")


# --------------------------------------------------------------------------------------------------
# padding and the heads against the causal LM itself


def test_pad_token_is_an_existing_token_and_nothing_is_resized(tiny_models):
    from transformers import AutoTokenizer

    raw = AutoTokenizer.from_pretrained(str(tiny_models("llama")))
    assert raw.pad_token is None  # Llama's tokenizers have none
    model, tokenizer = build_model(tiny_models("llama"), head="last_token")
    assert tokenizer.pad_token == raw.eos_token and len(tokenizer) == len(raw)
    assert model.backbone.get_input_embeddings().weight.shape[0] == model.backbone.config.vocab_size
    _, gemma = build_model(tiny_models("gemma2"), head="last_token")
    assert gemma.pad_token == "<pad>"  # a tokenizer with a pad token keeps it


def left_padded(enc, rows, pad_id):
    """The rows padded on the left, as generation-style batching does."""
    width = int(enc.lengths[rows].max())
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        seq = enc.input_ids[row]
        ids[r, width - len(seq):] = torch.tensor(seq)
        mask[r, width - len(seq):] = 1
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("arch", DECODERS)
@pytest.mark.parametrize("head", ["last_token", "token_logits"])
def test_right_padding_left_padding_and_no_padding_agree(arch, head, tiny_models):
    options = {"label_tokens": [" No", " Yes"]} if head == "token_logits" else {}
    torch.manual_seed(0)
    model, tokenizer = build_model(tiny_models(arch), head=head, **options)
    model = fresh(model)
    enc = encode_prompts(tokenizer, ROWS, TEMPLATE, max_len=256)
    rows = [0, 1, 2]
    assert len(set(enc.lengths.tolist())) == 3  # three lengths: every row but the longest is padded
    with torch.no_grad():
        right = model(**enc.collate(rows))
        left = model(**left_padded(enc, rows, tokenizer.pad_token_id))
    alone = torch.stack([unpadded(model, enc, r) for r in rows])
    torch.testing.assert_close(right, alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(left, alone, rtol=0, atol=1e-5)


def test_position_ids_count_real_tokens_only():
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1]])
    assert position_ids(mask).tolist() == [[0, 1, 2, 2], [0, 0, 0, 1]]


@pytest.mark.parametrize("arch", DECODERS)
def test_last_token_head_equals_the_bare_models_last_state(arch, tiny_models):
    from transformers import AutoModel

    torch.manual_seed(0)
    model, tokenizer = build_model(tiny_models(arch), head="last_token")
    model = fresh(model)
    assert type(model.backbone).__name__.endswith("Model")  # the bare model: no LM head allocated
    hf = AutoModel.from_pretrained(str(tiny_models(arch))).eval()
    enc = encode_prompts(tokenizer, ROWS, TEMPLATE, max_len=256)
    with torch.no_grad():
        out = model(**enc.collate([0, 1, 2]))
        states = torch.stack([hf(input_ids=torch.tensor([ids])).last_hidden_state[0, -1] for ids in enc.input_ids])
        expected = model.fc(states).squeeze(-1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", DECODERS)
def test_token_logits_equal_the_causal_lms_logits_at_the_answer(arch, tiny_models):
    from transformers import AutoModelForCausalLM

    tokens = [" No", " Yes"]
    model, tokenizer = build_model(tiny_models(arch), head="token_logits", label_tokens=tokens)
    model = fresh(model)
    assert model.fc is None  # no new output layer: the LM head scores
    ids = label_token_ids(tokenizer, tokens)
    assert model.label_logits.label_ids.tolist() == ids
    hf = AutoModelForCausalLM.from_pretrained(str(tiny_models(arch))).eval()
    enc = encode_prompts(tokenizer, ROWS, TEMPLATE, max_len=256)
    with torch.no_grad():
        log_odds = model(**enc.collate([0, 1, 2]))
        full = torch.stack([hf(input_ids=torch.tensor([row])).logits[0, -1] for row in enc.input_ids])  # (B, V)
    expected = full[:, ids[1]] - full[:, ids[0]]
    torch.testing.assert_close(log_odds, expected, rtol=0, atol=1e-5)
    if arch == "gemma2":  # the final soft-capping is part of the LM's logits
        assert hf.config.final_logit_softcapping


@pytest.mark.parametrize("arch", DECODERS)
def test_label_rows_equal_the_full_lm_head(arch, tiny_models):
    torch.manual_seed(0)
    tokens = [" No", " Yes", " the"]
    model, tokenizer = build_model(tiny_models(arch), head="token_logits", label_tokens=tokens, num_outputs=3)
    model = fresh(model)
    hidden = torch.randn(4, model.backbone.config.hidden_size)
    lm_head = model.backbone.get_output_embeddings()
    with torch.no_grad():
        full = lm_head(hidden)  # (4, V): the whole vocabulary
        cap = getattr(model.backbone.config, "final_logit_softcapping", None)
        if cap:
            full = torch.tanh(full / cap) * cap
        restricted = model.label_logits(hidden, lm_head)  # (4, 3): three rows of the weight
    torch.testing.assert_close(restricted, full[:, label_token_ids(tokenizer, tokens)], rtol=0, atol=1e-5)
    enc = encode_prompts(tokenizer, ROWS, TEMPLATE, max_len=256)
    with torch.no_grad():
        assert model(**enc.collate([0, 1])).shape == (2, 3)  # classes: the restricted logits themselves


def test_label_tokens_must_be_single_tokens(tiny_models):
    with pytest.raises(ValueError, match=r"label_tokens: ' photoconductor' is \d+ tokens for this tokenizer \(\[.*\]\), not one"):
        build_model(tiny_models("llama"), head="token_logits", label_tokens=[" No", " photoconductor"])
    with pytest.raises(ValueError, match=r"2 token\(s\) for 3 output\(s\); give 3, one per output"):
        build_model(tiny_models("llama"), head="token_logits", label_tokens=[" No", " Yes"], num_outputs=3)
    with pytest.raises(ValueError, match=r"apply to head='token_logits' only"):
        build_model(tiny_models("llama"), head="last_token", label_tokens=[" No", " Yes"])


def test_last_token_on_an_encoder_is_the_closing_special_token(tiny_models):
    from transformers import AutoModel

    model, tokenizer = build_model(tiny_models("bert"), head="last_token")
    model = fresh(model)
    enc = PairEncodings(tokenizer, ROWS["text_a"], ROWS["text_b"], max_len=64)
    hf = AutoModel.from_pretrained(str(tiny_models("bert"))).eval()
    with torch.no_grad():
        out = model(**enc.collate([0, 1, 2]))
        states = torch.stack([hf(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([t])).last_hidden_state[0, -1]
                              for ids, t in zip(enc.input_ids, enc.token_type_ids)])
    assert all(ids[-1] == tokenizer.sep_token_id for ids in enc.input_ids)
    torch.testing.assert_close(out, model.fc(states).squeeze(-1), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# config keys and refusals


def test_label_tokens_keep_their_spaces_in_every_form(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text('head: token_logits\nlabel_tokens: [" No", " Yes"]\n')
    assert load_config(path).label_tokens == [" No", " Yes"]
    assert load_config(None, ["head=token_logits", 'label_tokens=[" No", " Yes"]']).label_tokens == [" No", " Yes"]
    assert load_config(None, ["head=token_logits", "label_tokens= No, Yes"]).label_tokens == [" No", " Yes"]
    cfg = load_config(None, ["head=token_logits", 'label_tokens=[" No", " Yes"]'])
    cfg.save(tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml").label_tokens == [" No", " Yes"]  # a run's config.yaml reads back the same


@pytest.mark.parametrize("overrides, message", [
    (["label_tokens= No, Yes"], r"'label_tokens' \(\[' No', ' Yes'\]\) does nothing with head='mean': it applies only when head='token_logits'"),
    (["head=token_logits"], r"head=token_logits scores the pair with the LM head's logits of label_tokens, got \[\]"),
    (["head=token_logits", "label_tokens= No, Yes, Maybe"], r"output=single with head=token_logits is the log-odds of two tokens"),
    (["head=token_logits", "label_tokens= No, No"], r"'label_tokens' names a token twice"),
    (["head=token_logits", "label_tokens= a,b", "output=bins", "num_bins=3"], r"scores one token per bin: label_tokens has 2 but num_bins=3"),
    (["head=token_logits", "label_tokens= a,b", "cooccurrence=true"], r"the numeric features \['freq_a'.*cannot join it"),
    (["label_tokens=[\" No\""], r"'label_tokens' in --set: .* is not a JSON list"),
    (["template=Q {text_a!r}"], r"the field \{text_a!r\} in 'Q \{text_a!r\}' is not a plain name"),
    (["template=just words"], r"names no field"),
])
def test_bad_decoder_settings_name_the_key_and_the_fix(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def test_recipe_templates_check_their_fields():
    uspppm, pairs = get_recipe("uspppm"), get_recipe("pairs")
    assert "{anchor}" in uspppm.prompt_template(Config()) and "{targets}" in uspppm.prompt_template(Config(target_grouping=True))
    assert pairs.prompt_template(Config(task="pairs")) == pairs.DEFAULT_TEMPLATE
    cases = [
        (pairs, Config(task="pairs", template="{anchor}: {text_b}"), r"unknown field\(s\) \['anchor'\].*task 'pairs' has \['text_a', 'text_b'\]"),
        (pairs, Config(task="pairs", swap=True, template="{text_a} only"), r"swap=true exchanges text_a and text_b, but the template"),
        (uspppm, Config(template="{anchor} {target} {targets}"), r"names \{targets\} but target_grouping is off"),
        (uspppm, Config(template="{anchor} {target}", target_grouping=True), r"names neither \{targets\} nor \{text_b\}"),
        (uspppm, Config(template="{anchor} {target}", template_a="{anchor} ({code})"), r"'template_a' .* shapes \{text_a\}"),
        (uspppm, Config(template="{anchor} {target}", template_b="{target}"), r"'template_b' .* shapes \{text_b\}"),
    ]
    for recipe, cfg, message in cases:
        with pytest.raises(ValueError, match=message):
            recipe.prompt_template(cfg)


def test_uspppm_adds_only_the_fields_its_template_names(tmp_path):
    from kagglekit.testing import write_uspppm_sample

    data = write_uspppm_sample(tmp_path / "data")
    recipe = get_recipe("uspppm")
    state = recipe.state(Config(cpc_dir=""))
    plain = recipe.read_train(data / "train.csv", state, max_rows=5)
    prompted = recipe.read_train(data / "train.csv", {**state, "template": "{context}: {anchor} / {target}?"}, max_rows=5)
    assert set(prompted.columns) - set(plain.columns) == {"context", "anchor", "target"}
    raw = pd.read_csv(data / "train.csv", dtype={"id": str}).iloc[:5]
    assert prompted["anchor"].tolist() == raw["anchor"].tolist() and prompted["context"].tolist() == raw["context"].tolist()


def train_cfg(tmp_path, backbone, **changes):
    from kagglekit.testing import write_uspppm_sample

    data = write_uspppm_sample(tmp_path / "data")
    values = dict(backbone=str(backbone), train_csv=str(data / "train.csv"), cpc_dir="", output_dir=str(tmp_path / "run"),
                  n_folds=2, epochs=1, max_rows=32, max_len=48, batch_size=16)
    return dataclasses.replace(Config(), **{**values, **changes})


@pytest.mark.parametrize("arch, changes, message", [
    ("bert", {"template": "{text_a} {text_b}"}, r"'template' is set but backbone .* is an encoder, which reads the pair as two texts"),
    ("bert", {"head": "token_logits", "label_tokens": [" No", " Yes"]}, r"head=token_logits scores with a causal LM's next-token logits"),
    ("llama", {"head": "cls"}, r"head=cls reads the first token, and in a decoder .* has seen nothing but itself"),
    ("qwen2", {"head": "weighted_layers", "head_pool": "cls"}, r"head=weighted_layers with head_pool=cls reads the first token"),
    ("llama", {"head": "token_logits", "label_tokens": [" No", " photoconductor"]}, r"' photoconductor' is \d+ tokens"),
    ("gemma2", {"head": "token_logits", "label_tokens": [" No", " Yes"], "output": "classes"},
     r"output=classes has 5 here .*: give 5 tokens, lowest class first"),
])
def test_train_refuses_before_writing_anything(arch, changes, message, tiny_models, tmp_path):
    from kagglekit.train.runner import train_folds

    cfg = train_cfg(tmp_path, tiny_models(arch), **changes)
    with pytest.raises(ValueError, match=message):
        train_folds(cfg, folds=[0])
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------------
# the model folder


@pytest.mark.parametrize("arch, head", [("llama", "token_logits"), ("qwen2", "last_token"), ("gemma2", "token_logits")])
def test_decoder_folder_round_trip_records_its_class(arch, head, tiny_models, tmp_path):
    backbone = shutil.copytree(tiny_models(arch), tmp_path / "backbone")
    options = {"label_tokens": [" No", " Yes"]} if head == "token_logits" else {}
    torch.manual_seed(0)
    model, tokenizer = build_model(backbone, head=head, **options)
    enc = encode_prompts(tokenizer, ROWS, TEMPLATE, max_len=64)
    before = run_logits(model, enc, batch_size=2, device=CPU)
    meta = FoldMeta(task="uspppm", max_len=64, activation="sigmoid", recipe_state={"template": TEMPLATE})
    save_model_folder(model, tokenizer, tmp_path / "fold0", meta)
    shutil.rmtree(backbone)  # the folder stands alone
    loaded, tok, meta = load_model_folder(tmp_path / "fold0")
    assert meta.model["backbone_class"] == type(model.backbone).__name__ == type(loaded.backbone).__name__
    assert ("label_tokens" in meta.model) == (head == "token_logits")
    assert tok.pad_token_id is not None and all(p.dtype == torch.float32 for p in loaded.parameters())
    after = run_logits(loaded, encode_prompts(tok, ROWS, meta.recipe_state["template"], meta.max_len), batch_size=3, device=CPU)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)


def test_a_bf16_decoder_loads_and_saves_in_fp32(tiny_models, tmp_path):
    from transformers import AutoModelForCausalLM

    from kagglekit.models.pair_model import fp32_load_options

    folder = tmp_path / "bf16"  # real decoders ship bf16 checkpoints with a bf16 config.json
    bf16 = {key: torch.bfloat16 for key in fp32_load_options()}  # dtype= (transformers 5) or torch_dtype= (4.x)
    AutoModelForCausalLM.from_pretrained(str(tiny_models("qwen2")), **bf16).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_models("qwen2") / name, folder / name)
    config = json.loads((folder / "config.json").read_text())
    assert "bfloat16" in (config.get("dtype"), config.get("torch_dtype"))
    model, tokenizer = build_model(folder, head="token_logits", label_tokens=[" No", " Yes"])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights; autocast gives fp16
    save_model_folder(model, tokenizer, tmp_path / "fold0", FoldMeta(task="uspppm", max_len=32, activation="sigmoid"))
    loaded, _, _ = load_model_folder(tmp_path / "fold0")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())


def test_a_replaced_tokenizer_is_caught_at_load(tiny_models, tmp_path):
    model, tokenizer = build_model(tiny_models("llama"), head="token_logits", label_tokens=[" No", " Yes"])
    save_model_folder(model, tokenizer, tmp_path / "fold0", FoldMeta(task="uspppm", max_len=32, activation="sigmoid"))
    meta = json.loads((tmp_path / "fold0" / "kagglekit.json").read_text())
    meta["model"]["label_tokens"] = [" Yes", " No"]  # the weights' ids no longer match what the tokens map to
    (tmp_path / "fold0" / "kagglekit.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"maps the label tokens \[' Yes', ' No'\] to \[\d+, \d+\], but the model was trained on"):
        load_model_folder(tmp_path / "fold0")


@pytest.mark.parametrize("head", ["last_token", "token_logits"])
def test_doctor_counts_a_decoders_parameters(head, tiny_models, tmp_path):
    from kagglekit.tools.doctor import count_parameters

    options = {"label_tokens": [" No", " Yes"]} if head == "token_logits" else {}
    cfg = train_cfg(tmp_path, tiny_models("llama"), head=head, **options)
    model, _ = build_model(cfg.backbone, head=head, **options)
    assert count_parameters(cfg) == sum(p.numel() for p in model.parameters())


def test_layer_surgery_finds_a_decoders_layers(tiny_models):
    from kagglekit.models.surgery import encoder_layers, freeze

    model, _ = build_model(tiny_models("qwen2"), head="token_logits", label_tokens=[" No", " Yes"])
    layers = encoder_layers(model.backbone)
    assert layers == list(model.backbone.base_model.layers) and len(layers) == model.backbone.config.num_hidden_layers
    frozen = freeze(model.backbone, embeddings=True, bottom_layers=1)
    assert frozen == sum(p.numel() for p in [*model.backbone.base_model.embed_tokens.parameters(), *layers[0].parameters()])
    assert all(p.requires_grad for p in layers[1].parameters())


@pytest.mark.parametrize("arch", DECODERS)
def test_layer_decay_puts_the_final_norm_and_lm_head_at_the_top_rate(arch, tiny_models):
    from kagglekit.models.surgery import encoder_layers
    from kagglekit.train.optim import param_groups

    model, _ = build_model(tiny_models(arch), head="token_logits", label_tokens=[" No", " Yes"])
    backbone, lr = model.backbone, 1e-3
    groups = param_groups(model, lr=lr, head_lr=5e-3, weight_decay=0.01, layer_decay=0.5)
    rates = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert len(rates) == sum(1 for p in model.parameters() if p.requires_grad)  # each parameter once
    layers = encoder_layers(backbone)
    for i, layer in enumerate(layers):
        rate = lr * 0.5 ** (len(layers) - 1 - i)  # the top layer lr, each one below half the one above
        assert all(rates[id(p)] == pytest.approx(rate) for p in layer.parameters())
    assert rates[id(backbone.base_model.embed_tokens.weight)] == pytest.approx(lr * 0.5 ** len(layers))
    assert [rates[id(p)] for p in backbone.base_model.norm.parameters()] == [lr]  # it runs after the top layer
    head = backbone.get_output_embeddings().weight
    tied = head is backbone.base_model.embed_tokens.weight
    assert rates[id(head)] == (pytest.approx(lr * 0.5 ** len(layers)) if tied else lr)  # a tied LM head is the embedding
