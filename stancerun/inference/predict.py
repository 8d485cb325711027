"""Predictions from a run directory's saved model alone: batched, length-sorted, in input order."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from stancerun.errors import UsageError


def read_inputs(path: Path, text_column: str, pair_column: str | None) -> tuple[list[str], list[str] | None]:
    """Texts (and pairs) from a CSV or JSONL file."""
    if not path.is_file():
        raise UsageError(f"--input {path}: file not found")
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    if not rows:
        raise UsageError(f"--input {path}: no rows")
    for column in [text_column] + ([pair_column] if pair_column else []):
        if column not in rows[0]:
            raise UsageError(f"--input {path}: no column '{column}' (columns: {', '.join(rows[0])})")
    texts = [str(row[text_column]) for row in rows]
    pairs = [str(row[pair_column]) for row in rows] if pair_column else None
    return texts, pairs


def inference_device() -> str:
    """The first visible GPU when there is one (choose it with CUDA_VISIBLE_DEVICES), else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def dtype_note(dtype: str, device: str) -> str | None:
    """Why --dtype bfloat16 will be slow here: a CPU without AMX or AVX512-BF16 emulates
    bfloat16 matrix products, slower than float32."""
    import torch

    if device != "cpu" or dtype != "bfloat16":
        return None
    # Private helpers of torch >= 2.3; when absent, say nothing rather than guess.
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if any(check is None or check() for check in checks):
        return None
    return "this CPU has no native bfloat16 instructions (AMX, AVX512-BF16): --dtype bfloat16 will be slower than float32"


def predict_logits(model, tokenizer, texts, pairs, max_length: int, batch_size: int) -> np.ndarray:
    import torch

    from stancerun.data.batching import Collator, encode, model_inputs, sorted_batches

    encoded = encode(tokenizer, texts, pairs, max_length)
    collate = Collator(encoded, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    device = next(model.parameters()).device
    logits = None
    with torch.inference_mode():
        for indices in sorted_batches(encoded.lengths, batch_size):
            batch = {k: v.to(device) for k, v in model_inputs(collate(indices)).items()}
            out = model(**batch).logits.float().cpu().numpy()
            if logits is None:
                logits = np.empty((len(texts), out.shape[1]), dtype=np.float32)
            logits[indices] = out
    return logits if logits is not None else np.empty((0, 0), dtype=np.float32)


def shipped_logits(saved, texts: list[str], pairs: list[str] | None, batch_size: int) -> np.ndarray:
    """The scores a run ships for these texts (``saved``: :func:`stancerun.rundir.artifacts.load_model`):
    the fine-tuned model's logits, stacked and offset as the run fitted them, when it did."""
    from stancerun.data.rows import Examples

    logits = predict_logits(saved.model, saved.tokenizer, texts, pairs, saved.max_length, batch_size)
    if saved.shipped is None:
        return logits
    return saved.shipped.apply(logits, Examples(list(texts), [-1] * len(texts), list(pairs) if pairs is not None else None))


def predict(run_dir: Path, texts: list[str], pairs: list[str] | None, batch_size: int, saved=None,
            trust_remote_code: bool = False) -> list[dict]:
    """One row per text: the label, its confidence and every label's probability.
    ``saved``: the run's model already loaded (:func:`stancerun.rundir.artifacts.load_model`)."""
    from stancerun.rundir.artifacts import load_model
    from stancerun.rundir.layout import RunDir
    from stancerun.evaluation.stats import softmax

    saved = saved or load_model(RunDir(run_dir).model, trust_remote_code=trust_remote_code)
    info = saved.info
    logits = shipped_logits(saved, texts, pairs, batch_size)
    return rows_of(texts, pairs, softmax(logits, info.get("temperature", 1.0)), info)  # 1.0 unless calibrated


def rows_of(texts: list[str], pairs: list[str] | None, probs: np.ndarray, info: dict) -> list[dict]:
    """One row per text: the text (and its pair), the label, its confidence, every label's probability."""
    labels = info["labels"]
    results = []
    for i, text in enumerate(texts):
        best = int(probs[i].argmax())
        row = {"text": text}
        if pairs is not None:
            row[info.get("text_pair_column") or "text_pair"] = pairs[i]
        row.update({"label": labels[best], "confidence": float(probs[i, best]),
                    "probabilities": {name: float(p) for name, p in zip(labels, probs[i])}})
        results.append(row)
    return results


def format_rows(rows: list[dict], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if rows:
        fixed = [k for k in rows[0] if k != "probabilities"]
        names = list(rows[0]["probabilities"])
        writer.writerow(fixed + [f"prob_{n}" for n in names])
        for r in rows:
            writer.writerow([r[k] if not isinstance(r[k], float) else f"{r[k]:.8f}" for k in fixed]
                            + [f"{r['probabilities'][n]:.8f}" for n in names])
    return out.getvalue()
