"""Predictions from an ONNX export (``stancerun.inference.onnx_export``) with onnxruntime and numpy alone:
no torch is imported, so a small CPU image (onnxruntime + tokenizers) serves the model.

Tokenization is stancerun.data.batching.encode's, done by the same Rust tokenizer that transformers
drives (the export's ``tokenizer.json``, with the truncation transformers applies): importing
transformers would import torch whenever it is installed. Batches are sorted by length and
padded to their longest member, as stancerun.inference.predict does; results come back in input order.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stancerun.rundir.layout import MODEL, MODEL_INFO, ONNX_FORMAT, ONNX_MODEL, RunDir
from stancerun.data.order import sorted_batches
from stancerun.errors import UsageError



def read_info(path: Path) -> dict | None:
    info_path = Path(path) / MODEL_INFO
    if not info_path.is_file():
        return None
    try:
        return json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_onnx_export(path) -> bool:
    """Whether ``path`` is a directory written by ``stancerun.inference.onnx_export.export_onnx``."""
    return RunDir(path).kind == RunDir.ONNX


def check_model_dir(path, dtype: str = "float32") -> bool:
    """What `predict` and `serve` were given: True for an ONNX export, False for a run directory;
    a UsageError for anything else, or for a dtype asked of an export (it runs as exported)."""
    found = RunDir.open(path, RunDir.RUN, RunDir.ONNX)
    onnx = found.kind == RunDir.ONNX
    if not onnx and not found.model.is_dir():
        raise UsageError(f"{path}: a run directory without {MODEL}/: the run has not finished")
    if onnx and dtype != "float32":
        raise UsageError("--dtype is for a run's torch model; an ONNX export runs as it was exported (float32 or int8)")
    return onnx


class RustTokenizer:
    """The export's ``tokenizer.json`` through the ``tokenizers`` library, set up as transformers
    sets it up for ``tokenizer(texts, truncation=True, max_length=n, padding=False)``."""

    def __init__(self, path: Path, max_length: int, truncation_side: str, split_special_tokens: bool):
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_file(str(path))
        self.backend.no_padding()
        self.backend.enable_truncation(max_length, stride=0, strategy="longest_first", direction=truncation_side)
        self.backend.encode_special_tokens = bool(split_special_tokens)

    def __call__(self, texts: list[str], pairs: list[str] | None) -> tuple[list[list[int]], list[list[int]]]:
        inputs = list(zip(pairs, texts)) if pairs is not None else list(texts)
        encodings = self.backend.encode_batch(inputs, add_special_tokens=True)
        return [e.ids for e in encodings], [e.type_ids for e in encodings]


class AutoTokenizerAdapter:
    """Fallback for an export without ``tokenizer.json`` (a sentencepiece-only tokenizer):
    transformers' AutoTokenizer, which imports torch when torch is installed."""

    def __init__(self, export_dir: Path, max_length: int):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(export_dir))
        self.max_length = max_length

    def __call__(self, texts, pairs):
        args = (pairs, texts) if pairs is not None else (texts,)
        enc = self.tokenizer(*args, truncation=True, max_length=self.max_length, padding=False)
        ids = enc["input_ids"]
        return ids, enc.get("token_type_ids") or [[0] * len(i) for i in ids]


@dataclass
class OnnxModel:
    """A loaded export: the onnxruntime session, its tokenizer and stancerun.json."""

    session: object  # onnxruntime.InferenceSession
    tokenizer: object  # called as tokenizer(texts, pairs) -> (input_ids, token_type_ids)
    info: dict
    input_names: list[str]

    @property
    def max_length(self) -> int:
        return int(self.info["max_length"])

    @property
    def labels(self) -> list[str]:
        return list(self.info["labels"])


def default_threads() -> int:
    """The CPUs this process may use (its affinity, not the machine's count), at most 8: beyond
    that one session's matrix products for tweet-length batches stop getting faster."""
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    return max(1, min(8, available))


def load_onnx(export_dir, threads: int | None = None) -> OnnxModel:
    """The export in ``export_dir`` on the CPU: an onnxruntime session with ``threads`` intra-op
    threads (default: the CPUs available, at most 8) and the tokenizer it was exported with."""
    import onnxruntime as ort

    export_dir = Path(export_dir)
    info = read_info(export_dir)
    if not info or info.get("format") != ONNX_FORMAT:
        raise UsageError(f"{export_dir}: not an ONNX export of stancerun (no {MODEL_INFO} with format \"onnx\")")
    model_path = export_dir / ONNX_MODEL
    if not model_path.is_file():
        raise UsageError(f"{export_dir}: no {ONNX_MODEL}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    max_length = int(info["max_length"])
    if RunDir(export_dir).tokenizer.is_file():
        tokenizer = RustTokenizer(RunDir(export_dir).tokenizer, max_length, info.get("truncation_side", "right"),
                                  info.get("split_special_tokens", False))
    else:
        tokenizer = AutoTokenizerAdapter(export_dir, max_length)
    return OnnxModel(session, tokenizer, info, [i.name for i in session.get_inputs()])


def joined(model: OnnxModel, texts: list[str], pairs: list[str] | None) -> tuple[list[str], list[str] | None]:
    """A model that reads a (pair, text) as one sentence (the ``sentence`` model's pair_format)."""
    pair_format = model.info.get("pair_format")
    if pairs is None or not pair_format:
        return texts, pairs
    return [pair_format.format(pair=p, text=t) for p, t in zip(pairs, texts)], None


def onnx_logits(model: OnnxModel, texts: list[str], pairs: list[str] | None, batch_size: int = 64) -> np.ndarray:
    """The exported model's logits (float32, N x labels), in input order."""
    texts = [str(t) for t in texts]
    if pairs is not None:
        if len(pairs) != len(texts):
            raise UsageError(f"{len(texts)} texts but {len(pairs)} pairs")
        pairs = [str(p) for p in pairs]
    if not texts:
        return np.empty((0, len(model.labels)), dtype=np.float32)
    ids, types = model.tokenizer(*joined(model, texts, pairs))
    pad = model.info.get("pad_token_id")
    pad = 0 if pad is None else int(pad)
    logits = np.empty((len(texts), len(model.labels)), dtype=np.float32)
    for indices in sorted_batches([len(i) for i in ids], max(1, int(batch_size))):
        width = max(len(ids[i]) for i in indices)
        input_ids = np.full((len(indices), width), pad, dtype=np.int64)
        attention = np.zeros((len(indices), width), dtype=np.int64)
        token_types = np.zeros((len(indices), width), dtype=np.int64)
        for row, i in enumerate(indices):
            n = len(ids[i])
            input_ids[row, :n] = ids[i]
            attention[row, :n] = 1
            token_types[row, :n] = types[i]
        feeds = {"input_ids": input_ids, "attention_mask": attention, "token_type_ids": token_types}
        (out,) = model.session.run(["logits"], {name: feeds[name] for name in model.input_names})
        logits[indices] = out
    return logits


def predict_onnx(export_dir, texts: list[str], pairs: list[str] | None, batch_size: int = 64,
                 model: OnnxModel | None = None) -> list[dict]:
    """One row per text, as stancerun.inference.predict.predict: text, the pair column (when pairs), label,
    confidence and every label's probability. ``model``: the export already loaded."""
    from stancerun.inference.predict import rows_of  # torch is imported only inside its torch functions
    from stancerun.evaluation.stats import softmax

    model = model or load_onnx(export_dir)
    probs = softmax(onnx_logits(model, texts, pairs, batch_size), model.info.get("temperature", 1.0))
    return rows_of(texts, pairs, probs, model.info)
