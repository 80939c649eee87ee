"""Offline fixtures for tests and demos: tiny random HF encoders and a synthetic USPPPM-style data set.

Nothing here touches the network. torch and transformers are imported inside functions only.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import string
import tempfile
from pathlib import Path
from typing import Callable

__all__ = [
    "TINY_ARCHS",
    "TINY_BUILDERS",
    "build_tiny_model",
    "SAMPLE_CPC_TITLES",
    "SAMPLE_SYNONYM_GROUPS",
    "make_uspppm_sample",
    "write_cpc_titles",
    "write_uspppm_sample",
]

# ---------------------------------------------------------------------------------------------------
# Synthetic vocabulary: one domain per CPC class, each with modifier and head concepts. A concept is a
# group of interchangeable surface forms; every form belongs to exactly one group, so "shares a
# concept" is well defined and a synonym-aware overlap feature recovers the score.
# ---------------------------------------------------------------------------------------------------

_DOMAINS: dict[str, dict] = {
    "A47": {
        "alt": "B65",
        "mods": [["chair", "seat"], ["table", "desk"], ["cabinet", "cupboard"], ["sofa", "couch", "settee"],
                 ["shelf", "rack"]],
        "heads": [["backrest", "back support"], ["armrest", "elbow rest"], ["drawer", "pull-out tray"],
                  ["hinge", "pivot"], ["cushion", "padding"]],
    },
    "A61": {
        "alt": "A47",
        "mods": [["syringe", "injector"], ["wound", "injury", "lesion"], ["tablet", "pill"],
                 ["surgical", "operative"], ["dental", "tooth"]],
        "heads": [["dressing", "bandage"], ["needle", "cannula"], ["dose", "dosage"], ["implant", "prosthesis"],
                  ["treatment", "therapy"]],
    },
    "B01": {
        "alt": "C08",
        "mods": [["filter", "strainer"], ["liquid", "fluid"], ["dust", "fine powder"], ["mixing", "blending"],
                 ["gas flow", "airflow", "gas stream"]],
        "heads": [["separation", "separating"], ["vessel", "receptacle", "container"], ["membrane", "thin film"],
                  ["nozzle", "spray head"], ["stirrer", "agitator"]],
    },
    "B60": {
        "alt": "F02",
        "mods": [["vehicle", "car", "automobile"], ["brake", "braking"], ["tire", "tyre"],
                 ["windshield", "windscreen"], ["trailer", "towed carriage"]],
        "heads": [["speed", "velocity"], ["pedal", "foot lever"], ["mirror", "reflector"],
                  ["wiper", "wiping blade"], ["hitch", "tow bar"]],
    },
    "B65": {
        "alt": "A47",
        "mods": [["bottle", "flask"], ["box", "carton"], ["bag", "sack", "pouch"], ["food", "foodstuff"],
                 ["conveyor", "transport belt"]],
        "heads": [["lid", "cover", "cap"], ["label", "tag"], ["handle", "grip"], ["wrapping", "wrapper"],
                  ["stacking", "piling"]],
    },
    "C08": {
        "alt": "C07",
        "mods": [["polymer", "plastic", "resin"], ["rubber", "elastomer"], ["adhesive", "glue"],
                 ["solvent", "thinner"], ["catalyst", "reaction promoter"]],
        "heads": [["composition", "formulation"], ["coating", "surface layer"], ["granule", "pellet"],
                  ["curing", "hardening"], ["sheet", "foil"]],
    },
    "D06": {
        "alt": "D21",
        "mods": [["fabric", "cloth", "textile"], ["fiber", "fibre", "thread"], ["washing", "laundering"],
                 ["dye", "colorant", "pigment"], ["garment", "clothing"]],
        "heads": [["dryer", "drying machine"], ["stain", "blot"], ["crease", "wrinkle"],
                  ["softener", "softening agent"], ["weave", "weaving structure"]],
    },
    "E04": {
        "alt": "E21",
        "mods": [["wall", "partition"], ["roof", "roofing"], ["concrete", "cement"], ["floor", "flooring"],
                 ["window", "glazing"]],
        "heads": [["panel", "board"], ["insulation", "lagging"], ["beam", "girder", "joist"],
                  ["tile", "slab"], ["frame", "framework"]],
    },
    "F02": {
        "alt": "B60",
        "mods": [["engine", "motor"], ["fuel", "petrol", "gasoline"], ["combustion", "burning"],
                 ["cylinder", "piston bore"], ["intake", "inlet"]],
        "heads": [["housing", "casing", "enclosure"], ["injection", "injecting"], ["pump", "pumping device"],
                  ["chamber", "cavity"], ["cooling", "chilling"]],
    },
    "F16": {
        "alt": "F24",
        "mods": [["pipe", "tube", "conduit"], ["bearing", "bushing"], ["gear", "cog"], ["shaft", "axle"],
                 ["spring", "coil spring"]],
        "heads": [["coupling", "connector", "joint"], ["gasket", "seal"], ["lubrication", "greasing"],
                  ["clamp", "clip"], ["wear", "abrasion"]],
    },
    "F24": {
        "alt": "F16",
        "mods": [["heater", "heating element"], ["boiler", "furnace"], ["ventilation", "air circulation"],
                 ["radiator", "convector"], ["fan", "blower"]],
        "heads": [["thermostat", "thermal regulator"], ["duct", "passageway"], ["burner", "combustor"],
                  ["outlet", "vent"], ["efficiency", "performance"]],
    },
    "G01": {
        "alt": "G06",
        "mods": [["measure", "determine", "gauge"], ["detect", "sense"], ["adjust", "regulate", "control"],
                 ["monitor", "supervise"], ["record", "log"]],
        "heads": [["temperature", "heat level"], ["pressure", "compressive force"], ["humidity", "moisture"],
                  ["distance", "range"], ["voltage", "potential difference"]],
    },
    "G06": {
        "alt": "H04",
        "mods": [["data", "information"], ["image", "picture"], ["user", "operator"], ["memory", "storage"],
                 ["processor", "cpu", "microprocessor"]],
        "heads": [["display", "screen"], ["interface", "front end"], ["file", "document"],
                  ["processing", "handling"], ["access", "retrieval"]],
    },
    "H01": {
        "alt": "H04",
        "mods": [["battery", "accumulator"], ["electrode", "terminal"], ["wire", "cable", "conductor"],
                 ["switch", "breaker"], ["semiconductor", "chip"]],
        "heads": [["charging", "recharging"], ["sheath", "jacket"], ["contact", "connection point"],
                  ["circuit", "circuitry"], ["lifetime", "service life"]],
    },
    "H04": {
        "alt": "G06",
        "mods": [["wireless", "radio"], ["mobile phone", "cellphone", "smartphone"], ["antenna", "aerial"],
                 ["network", "communication system"], ["signal", "transmission"]],
        "heads": [["transmitter", "sender"], ["receiver", "receiving station"], ["channel", "frequency band"],
                  ["protocol", "standard"], ["interference", "noise"]],
    },
}

# Qualifiers that change little: they turn a head-only target into a "close" (0.75) match and also
# decorate some low-score targets, so their presence alone does not give the score away.
_QUALIFIERS = ("main", "improved", "auxiliary", "modular", "compact")

SAMPLE_SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = tuple(
    tuple(group) for dom in _DOMAINS.values() for kind in ("mods", "heads") for group in dom[kind]
)
"""Every concept group the synthetic phrases are built from (forms within a group are synonyms)."""

SAMPLE_CPC_TITLES: dict[str, str] = {
    "A": "NEEDS OF DAILY LIFE; HEALTH; HOUSEHOLD",
    "A47": "FURNITURE; HOUSEHOLD EQUIPMENT; KITCHEN AND CLEANING APPLIANCES",
    "A47B": "TABLES; DESKS; CABINETS; SHELVING",
    "A47B1/00": "Tables whose top can be extended or folded",
    "A47B1/02": "with leaves turning about a hinge",
    "A61": "MEDICINE; SURGERY; HYGIENE; DRUG FORMULATIONS",
    "B": "OPERATIONS ON MATERIALS; CONVEYING",
    "B01": "PHYSICAL AND CHEMICAL PROCESSES; SEPARATING; MIXING",
    "B60": "ROAD VEHICLES IN GENERAL; VEHICLE FITTINGS",
    "B65": "CONVEYING; PACKING; STORING; HANDLING OF THIN MATERIAL",
    "C": "CHEMISTRY; METALS",
    "C07": "ORGANIC CHEMISTRY",
    "C08": "POLYMERS; PLASTICS; RUBBER AND THEIR COMPOSITIONS",
    "D": "TEXTILES; FIBRES; PAPER",
    "D06": "TREATING, WASHING AND DYEING OF TEXTILES",
    "D21": "PAPER MAKING; CELLULOSE PULP",
    "E": "BUILDINGS; CIVIL ENGINEERING; MINING",
    "E04": "BUILDING CONSTRUCTION; WALLS, FLOORS AND ROOFS",
    "E21": "DRILLING OF EARTH OR ROCK; MINING",
    "F": "MECHANICAL ENGINEERING; HEATING; ENGINES AND PUMPS",
    "F02": "COMBUSTION ENGINES; ENGINE PLANTS",
    "F16": "MACHINE ELEMENTS; SHAFTS, BEARINGS, PIPES AND VALVES",
    "F24": "HEATING; VENTILATION; ROOM AIR CONDITIONING",
    "G": "PHYSICS; INSTRUMENTS",
    "G01": "MEASURING; TESTING; DETECTING PHYSICAL QUANTITIES",
    "G06": "COMPUTING; DATA PROCESSING; CALCULATING",
    "H": "ELECTRICITY; ELECTRONICS",
    "H01": "BASIC ELECTRIC ELEMENTS; BATTERIES; CABLES; SWITCHES",
    "H04": "TELECOMMUNICATION; TRANSMISSION OF SIGNALS",
    "H04W": "WIRELESS NETWORKS AND MOBILE COMMUNICATION",
}

# Hand-written patent-flavoured and everyday sentences; the tokenizers learn their vocabulary from
# these plus phrases generated from the concept groups above.
_CORPUS_SENTENCES = """\
A device according to claim 1, wherein the housing comprises a removable cover.
The method further comprises the step of heating the mixture to a temperature of 80 degrees.
In one embodiment, the sensor is mounted on an inner surface of the frame.
The present invention relates to an apparatus for cleaning surfaces with a rotating brush.
A system comprising a processor and a memory storing instructions executable by the processor.
The control unit is configured to adjust the speed of the motor in response to a signal.
Said layer has a thickness between 10 and 200 micrometers.
The valve opens when the pressure in the chamber exceeds a threshold value.
An object of the invention is to provide a lighter and cheaper structure.
The first member is connected to the second member by a flexible joint.
Figure 3 shows a cross section of the assembly along line A-A.
The composition may contain up to 5% by weight of a stabilizer.
The user can select an operating mode via a touch sensitive panel.
According to another aspect, the blade is made of hardened steel.
The lower end of the shaft is supported by a ball bearing.
Water is supplied through an inlet pipe and leaves through an outlet opening.
The signal is amplified, filtered and converted into digital values.
It is known to use springs for absorbing shocks during transport.
The device is easy to assemble and can be produced at low cost.
A plurality of openings is arranged along the periphery of the disc.
The battery pack includes several cells connected in series.
The liquid is pumped from the tank into the mixing vessel.
Preferably, the fibers have an average length of less than 3 mm.
The wall element comprises an outer shell and an insulating core.
The antenna receives a radio signal and forwards it to the receiver circuit.
A method of manufacturing a container by blow molding a plastic preform.
The image data are compressed before being stored in the memory.
In a further step, the coating is cured by exposure to ultraviolet light.
The vehicle has a front axle and a rear axle, each with two wheels.
The gear ratio can be changed while the machine is running.
Fresh air enters the room through a ventilation duct in the ceiling.
The measuring probe detects changes in humidity and temperature.
The patient receives a single dose of the active substance per day.
The fabric is washed, dried and then treated with a softening agent.
A fastening clip holds the cable in place along the edge of the board.
The network node transmits data packets to neighbouring nodes.
An electric switch interrupts the current when the circuit overheats.
The furnace burns gas or oil to heat water for the radiators.
The lid is hinged to the body of the box and can be locked.
Concrete slabs are reinforced with steel bars before pouring.
This arrangement reduces noise, vibration and wear of the parts.
The chair can be folded flat for storage when not in use.
The catalyst increases the reaction rate without being consumed.
A seal between the two flanges prevents leakage of the fluid.
The filter element is replaced after a predetermined number of cycles.
The engine drives a generator that charges the battery.
The screen displays a menu from which the operator chooses a file.
The adhesive bonds the label firmly to the surface of the bottle.
Dust and fine particles are separated from the air stream by a cyclone.
The conveyor belt moves the packages past a scanning station.
We describe a simple tool that anyone can use at home.
The weather was cold, so we stayed inside and read a book.
She opened the window to let some fresh air into the kitchen.
Please keep the receipt in case you need to return the item.
The train leaves the station at seven in the morning.
Children learn quickly when they are allowed to explore.
The results were compared with those of a previous study.
Add the water slowly and stir until the powder dissolves.
The bridge was closed for repairs during the summer months.
He measured the distance between the two posts with a tape.
Large amounts of energy are lost as heat in old buildings.
The new phone has a larger screen and a longer battery life.
Numbers such as 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and symbols like +, -, *, /, =, % or # may appear.
Quotes ("like this"), brackets [a], {b}, <c> and marks such as ! ? ; : & @ $ ^ _ ` ~ | \\ ' are rare.
THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG; the quick brown fox jumps over the lazy dog.
"""


def _corpus_lines() -> list[str]:
    """Training text for the tiny tokenizers: the sentences above, titles and concept phrases."""
    lines = [line for line in _CORPUS_SENTENCES.splitlines() if line.strip()]
    lines += list(SAMPLE_CPC_TITLES.values())
    templates = ("the {m} {h} is shown in figure {i}", "{m} {h}", "a {m} {h} according to claim {i}",
                 "The {h} of the {m} is adjusted")
    for d, dom in enumerate(_DOMAINS.values()):
        heads = dom["heads"]
        for i, mods in enumerate(dom["mods"]):
            # Rotate through forms so every surface form of every group occurs, without the full product.
            parts = []
            for j, hgroup in enumerate(heads):
                k = i + j + d
                parts.append(templates[k % len(templates)].format(
                    m=mods[k % len(mods)], h=hgroup[k % len(hgroup)], i=1 + k % 9))
            lines.append("; ".join(parts) + ".")
        for hgroup in heads:
            lines.append(", ".join(hgroup) + " and " + ", ".join(f for g in dom["mods"] for f in g[:1]) + ".")
    return lines


# ---------------------------------------------------------------------------------------------------
# Tiny models
# ---------------------------------------------------------------------------------------------------

_MAX_LEN = 512
_DIMS = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "max_position_embeddings": _MAX_LEN,
}
# Funnel names the same sizes its own way, and has no position table (relative attention only).
# One layer per block: the second block runs on the sequence pooled to half length.
_FUNNEL_DIMS = {
    "d_model": _DIMS["hidden_size"],
    "n_head": _DIMS["num_attention_heads"],
    "d_head": _DIMS["hidden_size"] // _DIMS["num_attention_heads"],
    "d_inner": _DIMS["intermediate_size"],
    "block_sizes": [1] * _DIMS["num_hidden_layers"],
    "num_decoder_layers": 1,  # upsamples back to full length: last_hidden_state is (B, T, H)
}
_VOCAB_TARGET = 1000

# Files any builder may write: an overwrite removes the ones the new build did not produce, so a
# folder switched from one arch to another keeps no stale tokenizer file.
_MODEL_FILES = frozenset({
    "config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "spm.model",
    "sentencepiece.bpe.model", "generation_config.json",
})

TINY_BUILDERS: dict[str, Callable[[Path, int], None]] = {}
"""Registry arch name -> builder(work_dir, seed) that writes a complete model folder."""


def _register(name: str):
    def deco(fn):
        TINY_BUILDERS[name] = fn
        return fn
    return deco


def _save_encoder(work_dir: Path, model_type: str, tokenizer, seed: int, *, dims: dict = _DIMS,
                  **overrides) -> None:
    """Build a randomly initialised bare encoder matching `tokenizer` and save it as safetensors.

    `dims` holds the sizes under the config's own names (BERT's by default).
    """
    import torch
    from transformers import AutoConfig, AutoModel

    tokenizer.save_pretrained(work_dir)
    kwargs = dict(dims, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    kwargs.update(overrides)
    if model_type == "nezha":  # transformers 5 has no NeZha: the kit's own, under either major
        from kagglekit.models.nezha import NezhaConfig, NezhaModel

        config, build = NezhaConfig(**kwargs), NezhaModel
    else:
        config, build = AutoConfig.for_model(model_type, **kwargs), AutoModel.from_config
    # Forked RNG: seeding must not disturb the caller's own torch random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(config)
    model.save_pretrained(work_dir)  # safetensors: the default since transformers 4.35, the only format in 5


def _transformers_v5() -> bool:
    import transformers

    return int(transformers.__version__.split(".")[0]) >= 5


def _vocab_kwargs(**files: Path) -> dict:
    """Vocabulary file arguments under the names the installed transformers expects.

    transformers 5 builds its tokenizers-backed classes from `vocab=`/`merges=`; 4.x takes
    `vocab_file=`/`merges_file=` and converts them into a fast tokenizer itself.
    """
    if _transformers_v5():
        return {name: str(path) for name, path in files.items()}
    return {f"{name}_file": str(path) for name, path in files.items()}


# WordPiece specials, in id order from 0; the unknown token comes second in both layouts.
_BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_FUNNEL_SPECIALS = ("<pad>", "<unk>", "<cls>", "<sep>", "<mask>", "<s>", "</s>")


def _wordpiece_tokenizer(work_dir: Path, class_name: str, specials: tuple[str, ...] = _BERT_SPECIALS,
                         **options):
    """Lower-cased WordPiece tokenizer, specials first, with vocab.txt written next to it.

    The tokenizer class is called with its default special tokens, so `specials` must be the ones
    it expects; `options` go to the class as they are.
    """
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    # Every printable ASCII character gets a piece, so unseen words split instead of becoming [UNK].
    chars = sorted(string.ascii_lowercase + string.digits + string.punctuation)
    backend = Tokenizer(models.WordPiece(unk_token=specials[1]))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=_VOCAB_TARGET,
        # The trainer numbers "##x" pieces in hash-map order, and merge ties follow those ids, so the
        # learned vocab changes from run to run. Listing them up front fixes their ids; only vocab.txt
        # is handed on, so they end up as plain pieces, not special tokens.
        special_tokens=list(specials) + [f"##{c}" for c in chars],
        initial_alphabet=chars,
        show_progress=False,
    )
    backend.train_from_iterator(_corpus_lines(), trainer)
    # transformers 5 saves only tokenizer.json; vocab.txt is what 4.x and other tools read.
    (vocab_txt,) = backend.model.save(str(work_dir))
    cls = getattr(transformers, class_name)
    return cls(**_vocab_kwargs(vocab=vocab_txt), do_lower_case=True, model_max_length=_MAX_LEN, **options)


@_register("bert")
def _build_bert(work_dir: Path, seed: int) -> None:
    tokenizer = _wordpiece_tokenizer(work_dir, "BertTokenizerFast")
    _save_encoder(work_dir, "bert", tokenizer, seed)


@_register("electra")
def _build_electra(work_dir: Path, seed: int) -> None:
    # transformers 5 makes ElectraTokenizerFast an alias of BertTokenizerFast: the folder then says
    # "BertTokenizer", which every version loads.
    tokenizer = _wordpiece_tokenizer(work_dir, "ElectraTokenizerFast")
    _save_encoder(work_dir, "electra", tokenizer, seed, embedding_size=32)


@_register("roberta")
def _build_roberta(work_dir: Path, seed: int) -> None:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    backend = ByteLevelBPETokenizer()
    # RoBERTa's own id order for the first specials: <s>=0, <pad>=1, </s>=2, <unk>=3.
    backend.train_from_iterator(
        _corpus_lines(), vocab_size=_VOCAB_TARGET, min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False,
    )
    vocab_json, merges_txt = backend.save_model(str(work_dir))
    tokenizer = RobertaTokenizerFast(**_vocab_kwargs(vocab=vocab_json, merges=merges_txt), model_max_length=_MAX_LEN)
    # RoBERTa position ids start after the padding index, hence the +2 positions.
    _save_encoder(
        work_dir, "roberta", tokenizer, seed,
        max_position_embeddings=_MAX_LEN + 2, type_vocab_size=1,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
    )


@_register("funnel")
def _build_funnel(work_dir: Path, seed: int) -> None:
    # Funnel's own vocabulary layout (<pad>=0 ... </s>=6); the tokenizer gives <cls> token type 2.
    # Funnel's attention reads token_type_ids, which transformers 4.x returns and 5 drops unless
    # the folder names them: stated here, both majors feed the model the same inputs.
    tokenizer = _wordpiece_tokenizer(work_dir, "FunnelTokenizerFast", _FUNNEL_SPECIALS,
                                     model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    # AutoModel maps "funnel" to two classes and picks by config.architectures (it fails on None):
    # FunnelModel (encoder + upsampling decoder, full length), not the pooled-length FunnelBaseModel.
    _save_encoder(work_dir, "funnel", tokenizer, seed, dims=_FUNNEL_DIMS, architectures=["FunnelModel"])


@_register("xlm-roberta")
def _build_xlm_roberta(work_dir: Path, seed: int) -> None:
    import sentencepiece as spm
    from transformers import XLMRobertaTokenizerFast

    # XLM-R's sentencepiece model has <unk>=0, <s>=1, </s>=2 and no pad; the tokenizer follows
    # fairseq's dictionary: <s>=0, <pad>=1, </s>=2, <unk>=3, then pieces 3.. of the model shifted
    # by one, then <mask>. Two ids are added, so the model gets two fewer pieces.
    proto = _train_sentencepiece(
        vocab_size=_VOCAB_TARGET - 2,
        unk_id=0, unk_piece="<unk>", bos_id=1, bos_piece="<s>", eos_id=2, eos_piece="</s>", pad_id=-1,
    )
    # transformers 5 writes only tokenizer.json; 4.x reads the sentencepiece model for its slow class.
    spm_path = work_dir / "sentencepiece.bpe.model"
    spm_path.write_bytes(proto)
    if _transformers_v5():
        sp = spm.SentencePieceProcessor(model_proto=proto)
        vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
        vocab += [(sp.id_to_piece(i), sp.get_score(i)) for i in range(3, sp.get_piece_size())]
        files = {"vocab": vocab + [("<mask>", 0.0)]}
    else:
        files = {"vocab_file": str(spm_path)}
    tokenizer = XLMRobertaTokenizerFast(**files, model_max_length=_MAX_LEN)
    _save_encoder(
        work_dir, "xlm-roberta", tokenizer, seed,
        max_position_embeddings=_MAX_LEN + 2, type_vocab_size=1,  # RoBERTa's position offset
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
    )


# DeBERTa-v3's special pieces: [PAD]=0, [CLS]=1, [SEP]=2, [UNK]=3 and [MASK]=4.
_DEBERTA_SPM_SPECIALS = {
    "pad_id": 0, "pad_piece": "[PAD]", "bos_id": 1, "bos_piece": "[CLS]", "eos_id": 2, "eos_piece": "[SEP]",
    "unk_id": 3, "unk_piece": "[UNK]", "user_defined_symbols": ["[MASK]"],
}


def _train_sentencepiece(vocab_size: int = _VOCAB_TARGET, **specials) -> bytes:
    """Unigram sentencepiece model as bytes; `specials` are trainer options placing the special pieces."""
    import sentencepiece as spm

    buf = io.BytesIO()
    with open(os.devnull, "w") as sink:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(_corpus_lines()),
            model_writer=buf,
            logstream=sink,
            minloglevel=2,
            model_type="unigram",
            vocab_size=vocab_size,
            hard_vocab_limit=False,  # a small corpus may support fewer pieces; take what it gives
            **specials,
            required_chars=string.ascii_letters + string.digits + string.punctuation,
            character_coverage=1.0,
            # identity: no 240 kB NFKC table in spm.model; transformers 5 ignores it anyway.
            normalization_rule_name="identity",
            num_threads=1,  # single thread: EM updates are then bit-reproducible
        )
    return buf.getvalue()


@_register("nezha")
def _build_nezha(work_dir: Path, seed: int) -> None:
    # NeZha checkpoints ship BERT's WordPiece vocabulary and tokenizer
    tokenizer = _wordpiece_tokenizer(work_dir, "BertTokenizerFast")
    _save_encoder(work_dir, "nezha", tokenizer, seed, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)


@_register("deberta-v2")
def _build_deberta_v2(work_dir: Path, seed: int) -> None:
    import sentencepiece as spm
    from transformers import DebertaV2TokenizerFast

    proto = _train_sentencepiece(**_DEBERTA_SPM_SPECIALS)
    # transformers 5 writes only tokenizer.json; 4.x needs spm.model to load a DeBERTa-v3 folder.
    spm_path = work_dir / "spm.model"
    spm_path.write_bytes(proto)
    if _transformers_v5():
        sp = spm.SentencePieceProcessor(model_proto=proto)
        # From the piece list, not from_pretrained(spm.model): that path saves the specials as a
        # list-valued extra_special_tokens, which transformers 4.x fails to load.
        files = {"vocab": [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]}
    else:
        files = {"vocab_file": str(spm_path)}
    tokenizer = DebertaV2TokenizerFast(**files, do_lower_case=False, model_max_length=_MAX_LEN)
    _save_encoder(
        work_dir, "deberta-v2", tokenizer, seed,
        # DeBERTa-v3 style: relative attention only, log buckets, no absolute position embeddings.
        relative_attention=True, position_buckets=256, max_relative_positions=-1,
        pos_att_type=["p2c", "c2p"], position_biased_input=False, norm_rel_ebd="layer_norm",
        share_att_key=True, type_vocab_size=0, layer_norm_eps=1e-7,
    )


TINY_ARCHS: tuple[str, ...] = tuple(TINY_BUILDERS)


def build_tiny_model(arch: str, out_dir, *, seed: int = 0) -> Path:
    """Write a tiny randomly initialised encoder plus its own freshly trained tokenizer.

    The folder loads with `AutoTokenizer.from_pretrained` and `AutoModel.from_pretrained` offline
    (nezha: with `kagglekit.models.nezha.NezhaModel.from_pretrained`, or `AutoModel` after
    `register_nezha()` under transformers 5; the kit's `build_model` does that itself).
    The build happens in a temporary folder next to `out_dir` that is moved in place at the end, so
    an interrupted build never leaves a half-written model behind.

    Args:
        arch: One of `TINY_ARCHS` ("bert", "electra", "roberta", "funnel", "xlm-roberta", "nezha",
            "deberta-v2").
        out_dir: Target folder. Created if missing; if it exists, its model and tokenizer files are
            replaced and unrelated files are left alone.
        seed: Seed for the weights; the same seed gives bit-identical tensors.

    Returns:
        The model folder as a `Path`.

    Raises:
        ValueError: `arch` is not a registered tiny architecture.
    """
    if arch not in TINY_BUILDERS:
        raise ValueError(f"unknown tiny arch {arch!r}; choose one of {', '.join(TINY_BUILDERS)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir {str(out_dir)!r} is a file; pass a folder path for the model")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        with _quiet_transformers():
            TINY_BUILDERS[arch](work_dir, seed)
        _move_into_place(work_dir, out_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return out_dir


def _move_into_place(work_dir: Path, out_dir: Path) -> None:
    if out_dir.is_dir() and any(out_dir.iterdir()):
        built = {p.name for p in work_dir.iterdir()}
        for name in sorted(_MODEL_FILES - built):
            (out_dir / name).unlink(missing_ok=True)
        for name in sorted(built):
            os.replace(work_dir / name, out_dir / name)
    else:
        if out_dir.is_dir():
            out_dir.rmdir()
        os.replace(work_dir, out_dir)


class _quiet_transformers:
    """Silence transformers' logs and progress bars inside the block, restoring the caller's settings."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._logging = hf_logging
        self._level = hf_logging.get_verbosity()
        self._bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        return self

    def __exit__(self, *exc):
        self._logging.set_verbosity(self._level)
        if self._bars:
            self._logging.enable_progress_bar()
        return False


# ---------------------------------------------------------------------------------------------------
# Synthetic USPPPM data
# ---------------------------------------------------------------------------------------------------

_LEVELS = (1.0, 0.75, 0.5, 0.25, 0.0)
_LEVEL_WEIGHTS = (0.15, 0.2, 0.25, 0.2, 0.2)
_TWO_CONTEXT_SHARE = 0.1


def _pick_other(rng: random.Random, forms: list[str], avoid: str) -> str:
    others = [f for f in forms if f != avoid]
    return rng.choice(others) if others else avoid


def _make_target(rng: random.Random, level: float, code: str, mi: int, hi: int, anchor_forms) -> str:
    """One target phrase whose relation to the anchor (domain `code`, concepts mi/hi) fits `level`."""
    dom = _DOMAINS[code]
    mods, heads = dom["mods"], dom["heads"]
    am, ah = anchor_forms
    if level == 1.0:
        # Same two concepts. Mostly one word swapped for a synonym, as in the competition where 1.0 is
        # a near copy; swapping both leaves no shared word and needs real synonym knowledge.
        m, h = _pick_other(rng, mods[mi], am), _pick_other(rng, heads[hi], ah)
        if rng.random() < 0.7:
            m, h = (am, h) if rng.random() < 0.5 else (m, ah)
        return f"{m} {h}"
    if level == 0.75:
        h = rng.choice(heads[hi])
        return f"{rng.choice(_QUALIFIERS)} {h}" if rng.random() < 0.5 else h
    if level == 0.5:
        if rng.random() < 0.5:
            other = rng.choice([j for j in range(len(heads)) if j != hi])
            return f"{rng.choice(mods[mi])} {rng.choice(heads[other])}"
        other = rng.choice([j for j in range(len(mods)) if j != mi])
        return f"{rng.choice(mods[other])} {rng.choice(heads[hi])}"
    if level == 0.25:
        m = rng.choice([g for j, g in enumerate(mods) if j != mi])
        h = rng.choice([g for j, g in enumerate(heads) if j != hi])
    else:
        far = _DOMAINS[rng.choice([c for c in _DOMAINS if c != code])]
        m, h = rng.choice(far["mods"]), rng.choice(far["heads"])
    phrase = f"{rng.choice(m)} {rng.choice(h)}"
    return f"{rng.choice(_QUALIFIERS)} {phrase}" if rng.random() < 0.1 else phrase


def _row_id(seed: int, split: str, anchor: str, target: str, context: str) -> str:
    key = f"{seed}|{split}|{anchor}|{target}|{context}".encode()
    return hashlib.sha1(key).hexdigest()[:16]


def _rows_for_anchor(rng, seed, split, code, mi, hi, n_targets):
    dom = _DOMAINS[code]
    forms = [(m, h) for m in dom["mods"][mi] for h in dom["heads"][hi]]
    # Anchors stay at two or three words where the synonyms allow it, like most real USPPPM anchors.
    short = [(m, h) for m, h in forms if len(f"{m} {h}".split()) <= 3]
    am, ah = rng.choice(short or forms)
    anchor = f"{am} {ah}"
    if n_targets >= len(_LEVELS):
        levels = list(_LEVELS) + rng.choices(_LEVELS, weights=_LEVEL_WEIGHTS, k=n_targets - len(_LEVELS))
    else:
        levels = rng.sample(_LEVELS, n_targets)
    rng.shuffle(levels)
    contexts = [code]
    if rng.random() < _TWO_CONTEXT_SHARE and n_targets >= 2:
        contexts.append(dom["alt"])
    rows, seen = [], {anchor}
    for k, level in enumerate(levels):
        for _ in range(20):  # re-draw on duplicates; small concept groups collide now and then
            target = _make_target(rng, level, code, mi, hi, (am, ah))
            if target not in seen:
                break
        else:
            continue
        seen.add(target)
        # Two-context anchors alternate so that both codes really occur.
        context = contexts[k % len(contexts)]
        rows.append({"id": _row_id(seed, split, anchor, target, context), "anchor": anchor, "target": target,
                     "context": context, "score": level})
    return rows


def make_uspppm_sample(*, n_anchors: int = 120, targets_per_anchor: int = 8, n_test_anchors: int = 15,
                       seed: int = 0) -> dict:
    """Build a small synthetic data set in the USPPPM (patent phrase matching) schema.

    Anchors are two-concept phrases ("engine housing"); targets keep both concepts via synonyms (1.0),
    keep only the head (0.75), share one concept (0.5), stay in the domain (0.25) or leave it (0.0).
    Test anchors are concept pairs never used in train; about one anchor in ten has its rows split
    over two related contexts.

    Args:
        n_anchors: Distinct train anchors, each with about `targets_per_anchor` rows.
        targets_per_anchor: Targets per anchor in train and test.
        n_test_anchors: Distinct test anchors, disjoint from the train anchors.
        seed: Seed for every random choice; the same seed gives identical frames.

    Returns:
        Dict with "train" (id, anchor, target, context, score), "test" (id, anchor, target, context),
        "sample_submission" (id, score=0) data frames and "cpc_titles" ({code: title}).

    Raises:
        ValueError: More anchors are asked for than concept pairs exist, or a count is not positive.
    """
    import pandas as pd

    pairs = [(code, mi, hi) for code, dom in _DOMAINS.items()
             for mi in range(len(dom["mods"])) for hi in range(len(dom["heads"]))]
    if n_anchors < 1 or targets_per_anchor < 1 or n_test_anchors < 0:
        raise ValueError(f"counts must be positive, got n_anchors={n_anchors}, "
                         f"targets_per_anchor={targets_per_anchor}, n_test_anchors={n_test_anchors}")
    if n_anchors + n_test_anchors > len(pairs):
        raise ValueError(f"n_anchors + n_test_anchors = {n_anchors + n_test_anchors} exceeds the "
                         f"{len(pairs)} distinct anchors available; ask for fewer")
    rng = random.Random(seed)
    # Round-robin over domains keeps every CPC context represented in both splits.
    by_code: dict[str, list] = {code: [] for code in _DOMAINS}
    for p in pairs:
        by_code[p[0]].append(p)
    for lst in by_code.values():
        rng.shuffle(lst)
    codes = list(_DOMAINS)
    rng.shuffle(codes)
    order = []
    for i in range(max(len(lst) for lst in by_code.values())):
        order += [by_code[c][i] for c in codes if i < len(by_code[c])]
    test_pairs, train_pairs = order[:n_test_anchors], order[n_test_anchors:n_test_anchors + n_anchors]

    train_rows = [r for code, mi, hi in train_pairs
                  for r in _rows_for_anchor(rng, seed, "train", code, mi, hi, targets_per_anchor)]
    test_rows = [r for code, mi, hi in test_pairs
                 for r in _rows_for_anchor(rng, seed, "test", code, mi, hi, targets_per_anchor)]
    rng.shuffle(test_rows)

    ids = [r["id"] for r in train_rows + test_rows]
    if len(set(ids)) != len(ids):  # 64-bit hash prefixes; a clash would mean duplicated rows
        raise RuntimeError(f"duplicate ids for seed={seed}; try another seed")

    train = pd.DataFrame(train_rows, columns=["id", "anchor", "target", "context", "score"])
    # Sorted by anchor like the competition's train.csv, which keeps anchor groups contiguous.
    train = train.sort_values("anchor", kind="stable").reset_index(drop=True)
    train["score"] = train["score"].astype("float64")
    test = pd.DataFrame(test_rows, columns=["id", "anchor", "target", "context", "score"]).drop(columns="score")
    submission = pd.DataFrame({"id": test["id"], "score": 0})
    return {"train": train, "test": test, "sample_submission": submission, "cpc_titles": dict(SAMPLE_CPC_TITLES)}


_CPC_FILE = "cpc-section-{}_20220201.txt"


def write_cpc_titles(titles: dict, out_dir) -> Path:
    """Write CPC titles in the layout of the CPCTitleList202202 folder.

    One file per section, `cpc-section-{S}_20220201.txt`, each line `code<TAB>level<TAB>title`. The
    level is empty for sections, classes and subclasses, and numeric for groups ("0" for main groups
    like `A47B1/00`, "1" below them). Section files in `out_dir` that `titles` no longer covers are
    removed, so the folder always matches `titles` exactly.

    Args:
        titles: Mapping CPC code -> title, e.g. {"A": "...", "A47": "...", "A47B1/00": "..."}.
        out_dir: Folder to write; created if missing.

    Returns:
        `out_dir` as a `Path`.

    Raises:
        ValueError: A code does not start with a section letter, or a code/title contains a tab or
            line break.
    """
    out_dir = Path(out_dir)
    sections: dict[str, list[str]] = {}
    for code, title in titles.items():
        code, title = str(code), str(title)
        if not code or code[0] not in string.ascii_uppercase:
            raise ValueError(f"CPC code {code!r} must start with a section letter A-Z, e.g. 'A47'")
        if any(ch in code + title for ch in "\t\r\n"):
            raise ValueError(f"CPC code/title for {code!r} contains a tab or line break; remove it")
        level = "" if "/" not in code else ("0" if code.endswith("/00") else "1")
        sections.setdefault(code[0], []).append((code, f"{code}\t{level}\t{title}\n"))
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = {_CPC_FILE.format(s) for s in sections}
    for old in out_dir.glob(_CPC_FILE.format("*")):
        if old.name not in wanted:
            old.unlink()
    for section, lines in sorted(sections.items()):
        _atomic_write_text(out_dir / _CPC_FILE.format(section), "".join(line for _, line in sorted(lines)))
    return out_dir


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes files owner-only; data files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_uspppm_sample(out_dir, *, seed: int = 0, **kwargs) -> Path:
    """Write the synthetic data set as train.csv, test.csv, sample_submission.csv and cpc_titles/.

    Each file is written to a temporary name and renamed, so readers never see a partial file.

    Args:
        out_dir: Folder to write; created if missing.
        seed: Seed passed to `make_uspppm_sample`.
        **kwargs: Other `make_uspppm_sample` arguments (n_anchors, targets_per_anchor, n_test_anchors).

    Returns:
        `out_dir` as a `Path`.
    """
    out_dir = Path(out_dir)
    data = make_uspppm_sample(seed=seed, **kwargs)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("train", "test", "sample_submission"):
        _atomic_write_text(out_dir / f"{name}.csv", data[name].to_csv(index=False, lineterminator="\n"))
    write_cpc_titles(data["cpc_titles"], out_dir / "cpc_titles")
    return out_dir
