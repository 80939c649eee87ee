"""Sentence-embedding similarity of the two texts of a pair, as a numeric feature of the pair model.

A bi-encoder (e.g. all-MiniLM-L6-v2) embeds each text on its own; the cosine of the two embeddings
is a strong, label-free signal that a cross-encoder learns slowly from a few thousand pairs. With
``embedding_model: FOLDER`` the kit computes ``embedding_cosine`` for every row (train, extra,
augmented and test rows alike) and fuses it with the pooled vector like any numeric feature.

The run keeps its own copy of the embedding model in ``<run>/embedding_model/`` (written atomically,
once), so predict rebuilds the feature from the run folder alone, offline.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from kagglekit.config import EMBEDDING_FEATURES, EMBEDDING_POOLINGS  # declared with the config keys
from kagglekit.run import EMBEDDER_DIR  # the run folder's copy of the embedding model: part of the run's layout

__all__ = ["EMBEDDING_FEATURES", "EMBEDDER_DIR", "POOLINGS", "TextEmbedder", "find_embedder", "locate_embedder", "resolve_pooling"]

EMBEDDER_FILE = "kagglekit_embedder.json"  # pooling, max_len and digest of the copy
POOLINGS = EMBEDDING_POOLINGS  # the embedding_pooling key's choices


def resolve_pooling(folder: str | os.PathLike, pooling: str = "auto") -> str:
    """``mean`` or ``cls``. ``auto`` reads a sentence-transformers folder's ``1_Pooling/config.json``
    (CLS-token pooling → cls) and is ``mean`` otherwise, which is what most sentence encoders use."""
    if pooling not in POOLINGS:
        raise ValueError(f"config key 'embedding_pooling' is {pooling!r}; use one of {list(POOLINGS)}.")
    if pooling != "auto":
        return pooling
    path = Path(folder) / "1_Pooling" / "config.json"
    if path.is_file():
        settings = json.loads(path.read_text(encoding="utf-8"))
        if settings.get("pooling_mode_cls_token") and not settings.get("pooling_mode_mean_tokens"):
            return "cls"
    return "mean"


class TextEmbedder:
    """Unit-length sentence embeddings of texts, each text embedded once per process.

    Args:
        folder: a local model folder (config, tokenizer, weights), e.g. a sentence-transformers model.
        pooling: ``mean`` (masked mean of the last hidden states), ``cls`` or ``auto`` (see `resolve_pooling`).
        max_len: texts are truncated to this many tokens.
        batch_size: texts per forward pass (texts are sorted by length, so padding is small).
        device: where the encoder runs; it runs in fp32 so features agree across devices.

    Examples:
        >>> emb = TextEmbedder("models/all-MiniLM-L6-v2")
        >>> emb.cosine(["a cat sits"], ["a cat is sitting"])  # doctest: +SKIP
        array([0.93...])
    """

    def __init__(self, folder: str | os.PathLike, pooling: str = "auto", *, max_len: int = 256, batch_size: int = 64, device="cpu"):
        from kagglekit.models.pair_model import check_backbone

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"embedding_model: folder not found: {self.folder}. Point embedding_model at a local sentence-embedding model "
                "folder (e.g. all-MiniLM-L6-v2), or leave it empty."
            )
        check_backbone(self.folder, key="embedding_model", max_len=max_len, setting="embedding_max_len")
        self.pooling = resolve_pooling(self.folder, pooling)
        self.max_len = max_len
        self.batch_size = batch_size
        self.device = device
        self._model = None
        self._tokenizer = None
        self._cache: dict[str, np.ndarray] = {}

    def _load(self) -> None:
        from kagglekit.models.pair_model import load_backbone

        if self._model is None:
            model, self._tokenizer = load_backbone(self.folder)
            self._model = model.to(self.device).eval()

    def release(self) -> None:
        """Free the encoder (the embeddings already computed stay cached), and its GPU memory."""
        import torch

        on_gpu = self._model is not None and next(self._model.parameters()).is_cuda
        self._model = None
        if on_gpu:
            torch.cuda.empty_cache()

    def encode(self, texts: Iterable[str]) -> np.ndarray:
        """Unit-length float32 embeddings, shape (N, D), one row per text in order."""
        import torch

        texts = [str(t) for t in texts]
        new = sorted({t for t in texts if t not in self._cache}, key=len)
        if new:
            self._load()
            for start in range(0, len(new), self.batch_size):
                chunk = new[start:start + self.batch_size]
                batch = self._tokenizer(chunk, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
                with torch.no_grad():
                    hidden = self._model(**batch).last_hidden_state.float()  # (B, T, H)
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                pooled = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()  # (B, H)
                self._cache.update(zip(chunk, pooled))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def cosine(self, text_a: Sequence[str], text_b: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each pair (a_i, b_i), float64, shape (N,), in [-1, 1]."""
        if len(text_a) != len(text_b):
            raise ValueError(f"cosine: {len(text_a)} first texts but {len(text_b)} second texts.")
        if len(text_a) == 0:
            return np.zeros(0)
        a, b = self.encode(text_a), self.encode(text_b)
        return np.clip((a.astype(np.float64) * b).sum(axis=1), -1.0, 1.0)

    def transform(self, frame) -> "np.ndarray":
        """The ``EMBEDDING_FEATURES`` of each row of a frame with ``text_a``, ``text_b``: shape (N, 1)."""
        return self.cosine(frame["text_a"].tolist(), frame["text_b"].tolist())[:, None]

    def save(self, path: str | os.PathLike) -> None:
        """Write the encoder and tokenizer to `path` (atomically) for predict (see `state`)."""
        from kagglekit._io import atomic_dir, write_json
        from kagglekit.models.pair_model import VOCAB_FILES

        self._load()
        with atomic_dir(path) as tmp:
            self._model.save_pretrained(str(tmp))
            self._tokenizer.save_pretrained(str(tmp))
            for name in VOCAB_FILES:  # transformers 5 saves tokenizer.json only; 4.x may need these
                if (self.folder / name).is_file() and not (tmp / name).exists():
                    (tmp / name).write_bytes((self.folder / name).read_bytes())
            write_json(tmp / EMBEDDER_FILE, {"pooling": self.pooling, "max_len": self.max_len})

    def state(self, path: str | os.PathLike) -> dict:
        """What a model folder records of the copy at `path`: its folder name, pooling, max_len and digest."""
        return {"dir": Path(path).name, "pooling": self.pooling, "max_len": self.max_len, "digest": folder_digest(path)}


def folder_digest(path: str | os.PathLike) -> str:
    """SHA-1 over the names and bytes of a folder's files (not its subfolders).

    Read once per process while the files keep their sizes and modification times: predict checks
    a run's copy before reading the test file and again when it embeds it.
    """
    files = sorted(f for f in Path(path).iterdir() if f.is_file())
    return _digest(tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=32)
def _digest(files: tuple) -> str:
    digest = hashlib.sha1()
    for name, _, _ in files:
        digest.update(Path(name).name.encode("utf-8") + b"\0")
        with open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def find_embedder(model_folder: str | os.PathLike, state: dict, device="cpu") -> TextEmbedder:
    """The embedding model a model folder was trained with (see `locate_embedder`), ready to embed."""
    return TextEmbedder(locate_embedder(model_folder, state), state["pooling"], max_len=state["max_len"], device=device)


def locate_embedder(model_folder: str | os.PathLike, state: dict) -> Path:
    """The run's copy of the embedding model a model folder was trained with: ``<run>/embedding_model``
    beside its fold folders (or inside the model folder), checked against the digest recorded at training.
    Raises FileNotFoundError when it is missing and ValueError when its files changed."""
    model_folder = Path(model_folder)
    name = state["dir"]
    candidates = [model_folder / name, model_folder.parent / name]
    folder = next((c for c in candidates if (c / EMBEDDER_FILE).is_file()), None)
    if folder is None:
        raise FileNotFoundError(
            f"{model_folder} was trained with embedding_model, but neither {candidates[0]} nor {candidates[1]} holds the "
            f"run's copy of it ({EMBEDDER_FILE}). Attach the whole run folder (its {name}/ beside the fold folders)."
        )
    got = folder_digest(folder)
    if got != state["digest"]:
        raise ValueError(
            f"{folder} is not the embedding model {model_folder} was trained with (digest {got[:12]} != {state['digest'][:12]}): "
            "re-attach the run folder as it was written by kagglekit train."
        )
    return folder
