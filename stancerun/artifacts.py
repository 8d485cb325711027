"""The run directory: atomic writes, environment capture, saving and loading the model.

Every file is written to a temporary name beside its target and renamed into place, so an
interrupted run never leaves a truncated file. Weights are safetensors only.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from stancerun.errors import UsageError

MODEL_INFO = "stancerun.json"  # label map and how to rebuild the model, beside the weights


def atomic_write(path: Path, data: str | bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data) -> None:
    atomic_write(path, json.dumps(data, indent=2, ensure_ascii=False, default=_jsonable) + "\n")


def _jsonable(value):
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    return str(value)


def atomic_directory(target: Path, fill) -> None:
    """Build a directory under a temporary name with ``fill(tmp_dir)``, then rename it into place."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def new_run_dir(output_dir: str, name: str, explicit: str | None = None) -> Path:
    """``{output_dir}/{name}-{YYYYmmdd-HHMMSS}``, or exactly ``explicit`` (which must be empty)."""
    if explicit:
        path = Path(explicit)
        if path.exists() and any(path.iterdir()):
            raise UsageError(f"--output-dir {explicit}: directory exists and is not empty")
        path.mkdir(parents=True, exist_ok=True)
        return path.resolve()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(output_dir) / f"{name}-{stamp}"
    path, n = base, 1
    while path.exists():  # two runs in the same second
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path.resolve()


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit(where: Path) -> dict | None:
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain"], capture_output=True, text=True, timeout=5)
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def environment(accelerator, experiment, data_files: list[str], registry) -> dict:
    """Versions, device and data fingerprints: what is needed to trust and reproduce a run.
    No environment variables are recorded (they may hold secrets)."""
    import accelerate
    import peft
    import torch
    import transformers

    import stancerun

    device = str(accelerator.device)
    if torch.cuda.is_available() and accelerator.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(accelerator.device)})"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            "stancerun": stancerun.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "accelerate": accelerate.__version__,
        },
        "plugins": [{"name": p.name, "distribution": p.distribution, "version": p.version, "error": p.error}
                    for p in registry.plugins],
        "device": device,
        "world_size": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "cpu_threads": torch.get_num_threads(),
        "git": git_commit(experiment.path.parent),
        "data_files": {path: sha256(path) for path in data_files},
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
    }


def predictions_csv(texts, pairs, labels, predicted, probabilities, label_names, pair_column="text_pair") -> str:
    """The evaluation split with what the model said about each example."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["text"] + ([pair_column] if pairs is not None else []) + ["label", "prediction", "confidence"]
    writer.writerow(header + [f"prob_{name}" for name in label_names])
    for i, text in enumerate(texts):
        probs = probabilities[i]
        row = [text] + ([pairs[i]] if pairs is not None else [])
        row += [label_names[labels[i]] if labels[i] >= 0 else "", label_names[predicted[i]], f"{probs.max():.8f}"]
        writer.writerow(row + [f"{p:.8f}" for p in probs])
    return out.getvalue()


def save_model(model, tokenizer, target: Path, info: dict) -> None:
    """Weights (safetensors: the adapter, or the whole model), tokenizer and label map."""

    def fill(tmp: Path):
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / MODEL_INFO, info)

    atomic_directory(target, fill)


def merge_lora(model, model_dir: Path) -> bool:
    """Add a saved LoRA adapter into the base weights (W += alpha/r * B @ A) and put the saved
    head layers in place, without importing peft (which takes seconds to import; this is what
    makes `stancerun predict` start fast). Only plain LoRA on linear layers, as the built-in
    adapter writes it; anything else returns False and peft loads it."""
    import math

    import torch
    from safetensors.torch import load_file

    config = json.loads((model_dir / "adapter_config.json").read_text(encoding="utf-8"))
    plain = (config.get("peft_type") == "LORA" and not config.get("use_dora") and not config.get("rank_pattern")
             and not config.get("alpha_pattern") and config.get("bias", "none") == "none"
             and not config.get("fan_in_fan_out") and not config.get("layer_replication"))
    weights_file = model_dir / "adapter_model.safetensors"
    if not plain or not weights_file.is_file():
        return False
    r = config["r"]
    scale = config["lora_alpha"] / (math.sqrt(r) if config.get("use_rslora") else r)
    weights = {k.removeprefix("base_model.model."): v for k, v in load_file(str(weights_file)).items()}
    params = dict(model.named_parameters())
    updates = {}
    for key, value in weights.items():
        if key.endswith(".lora_A.weight"):
            module = key.removesuffix(".lora_A.weight")
            b = weights.get(f"{module}.lora_B.weight")
            if b is None or f"{module}.weight" not in params:
                return False
            updates[f"{module}.weight"] = ("add", scale * (b.float() @ value.float()))
        elif key.endswith(".lora_B.weight"):
            continue
        elif key in params:
            updates[key] = ("set", value)  # a head layer saved whole (modules_to_save)
        else:
            return False
    with torch.no_grad():
        for name, (how, value) in updates.items():
            target = params[name]
            if how == "add":
                target.add_(value.to(target.dtype))
            else:
                target.copy_(value.to(target.dtype))
    return True


def read_model_info(model_dir: Path) -> dict:
    """model/stancerun.json: labels, columns, max_length, base model (no torch needed)."""
    info_path = Path(model_dir) / MODEL_INFO
    if not info_path.is_file():
        raise UsageError(f"{model_dir}: not a stancerun model directory (no {MODEL_INFO})")
    return json.loads(info_path.read_text(encoding="utf-8"))


def load_model(model_dir: Path, device: str | None = None, dtype: str | None = None):
    """A saved run's model and tokenizer, from the run's model/ directory alone.

    ``dtype`` ("bfloat16", "float16") casts the weights after a LoRA merge done in float32,
    so the merge itself loses nothing."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = Path(model_dir)
    info = read_model_info(model_dir)
    labels = info["labels"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    label_kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                    "label2id": {name: i for i, name in enumerate(labels)}}
    from stancerun_hf import quiet_loading, resolve_model

    remote = info.get("trust_remote_code", False)
    with quiet_loading():
        if (model_dir / "adapter_config.json").is_file():
            model = AutoModelForSequenceClassification.from_pretrained(resolve_model(info["base_model"]),
                                                                       trust_remote_code=remote, **label_kwargs)
            if not merge_lora(model, model_dir):
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, model_dir)  # the head comes back from modules_to_save
        else:
            model = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=remote, **label_kwargs)
    model.eval()
    if device:
        model.to(device)
    if dtype and dtype != "float32":
        model.to(getattr(torch, dtype))
    return model, tokenizer, info
