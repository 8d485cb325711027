"""The run directory: atomic writes, environment capture, saving and loading the model.

Every file is written to a temporary name beside its target and renamed into place, so an
interrupted run never leaves a truncated file. Weights are safetensors only.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from stancerun.errors import UsageError
from stancerun.rundir.layout import MODEL_INFO, STATUS, read_json  # noqa: F401 (both were defined here first)


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


@contextlib.contextmanager
def run_status(run_dir: Path, is_main_process: bool, step):
    """status.json says what became of a run: "running", then "finished", "interrupted" (a signal;
    `stancerun resume` continues it) or "failed" with the error, the step (``step()``) and the
    traceback, so that a person, `compare` and `resume` can tell a failed run from an unfinished
    one, or "pruned" or "taken" (a sweep stopped it early). A run killed outright (SIGKILL, power) stays "running"."""
    started = datetime.now().isoformat(timespec="seconds")

    def write(status: str, **fields) -> None:
        if is_main_process:
            write_json(run_dir / STATUS, {"status": status, "started": started,
                                          "updated": datetime.now().isoformat(timespec="seconds"), **fields})

    with sigterm_interrupts():
        try:
            write("running")
            yield
        except KeyboardInterrupt:
            write("interrupted", step=step())
            raise
        except BaseException as error:
            status = getattr(error, "run_status", "failed")  # errors.RunPruned, TrialTaken
            write(status, step=step(), error=f"{type(error).__name__}: {error}",
                  **({"traceback": traceback.format_exc()} if status == "failed" else {}))
            raise
        write("finished", step=step())


@contextlib.contextmanager
def sigterm_interrupts():
    """SIGTERM raises KeyboardInterrupt, as SIGINT does: a run stopped by either, at any moment (set-up,
    final evaluation, report), says so in status.json and exits 130 instead of dying with "running".
    The training loop sets its own handler inside (finish the step, save a checkpoint, then stop)."""
    if threading.current_thread() is not threading.main_thread():  # signal.signal works only there
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def read_status(run_dir: Path) -> dict | None:
    path = Path(run_dir) / STATUS
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


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
    from stancerun.rundir.redact import redact_argv

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
        "command": [Path(sys.argv[0]).name, *redact_argv(sys.argv[1:])],  # no --storage password, no --api-key
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


def save_model(components, model, state_dict: dict | None, target: Path, info: dict, shipped=None) -> None:
    """model/: the weights (through the adapter when it keeps its own, else the whole model, by the
    model's plugin), the tokenizer, and stancerun.json (labels, columns, the plugins that rebuild it).
    ``state_dict`` is the full set of weights gathered from every process; ``shipped``, an
    :class:`stancerun.evaluation.ensemble.Shipped` whose members are saved beside the weights."""
    from stancerun.contracts import saves_itself

    def fill(tmp: Path):
        if saves_itself(components.adapter):
            components.adapter.save(model, tmp, state_dict=state_dict)
            components.model_component.save(components.loaded, tmp)
        else:
            components.model_component.save(components.loaded, tmp, model=model, state_dict=state_dict)
        if shipped is not None:
            shipped.save(tmp)
        write_json(tmp / MODEL_INFO, info)

    atomic_directory(target, fill)


def read_model_info(model_dir: Path) -> dict:
    """model/stancerun.json: labels, columns, the component records (no torch needed)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UsageError(f"{model_dir}: missing; expected the run's saved model (a run writes it when it finishes)")
    info_path = model_dir / MODEL_INFO
    if not info_path.is_file():
        raise UsageError(f"{model_dir}: not a stancerun model directory (no {MODEL_INFO})")
    expected = "a JSON object with the model's labels and how to rebuild it"
    info = read_json(info_path, expected)
    labels = info.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(label, str) for label in labels):
        raise UsageError(f"{info_path}: no \"labels\" (a list of label names); expected {expected}")
    return info


def check_weights(model_dir: Path) -> None:
    """Weights are safetensors only: without one, say so before transformers takes the folder for a hub id."""
    if not any(Path(model_dir).glob("*.safetensors")):
        raise UsageError(f"{model_dir}: no weights (*.safetensors); expected the run's saved model weights")


def asking_for_remote_code(tables: dict) -> list[str]:
    """The sections whose options set ``trust_remote_code``. A run directory may come from anyone:
    code from a model folder runs only when the command was told so. Checked by the name
    transformers gives the permission, so the core needs no plugin's knowledge and every plugin
    that follows the convention is covered."""
    return [section for section, options in tables.items()
            if isinstance(options, dict) and options.get("trust_remote_code")]


def refuse_remote_code(info: dict, model_dir: Path, trust_remote_code: bool) -> None:
    """A UsageError when a saved model's records ask to run code and the command was not told to trust it."""
    records = info.get("components") if isinstance(info.get("components"), dict) else {}
    asking = asking_for_remote_code({s: r.get("options") for s, r in records.items() if isinstance(r, dict)})
    if asking and not trust_remote_code:
        raise UsageError(f"{model_dir}: asks to run code from its folder (trust_remote_code in {MODEL_INFO}, "
                         f"{', '.join(asking)}); add --trust-remote-code to allow it if you trust where it came from")


def check_saved_model(model_dir: Path, trust_remote_code: bool = False) -> dict:
    """model/stancerun.json once everything :func:`load_model` needs is there and allowed: commands
    that load in the background (serve) call it first, so a refusal exits 2 before they start."""
    from stancerun.components.assembly import saved_record

    info = read_model_info(model_dir)
    saved_record(info, "model", model_dir)  # an older layout says so first
    refuse_remote_code(info, model_dir, trust_remote_code)
    check_weights(model_dir)
    return info


@dataclass
class SavedModel:
    """A run's trained model, rebuilt through the plugins that built it, ready for inference."""

    loaded: object  # a stancerun.contracts.LoadedModel whose model carries the trained weights
    info: dict  # model/stancerun.json
    component: object  # the stancerun.contracts.Model that rebuilt it (export asks it)
    shipped: object = None  # a stancerun.evaluation.ensemble.Shipped when the run stacked baselines or tuned a decision rule

    @property
    def model(self):
        return self.loaded.model

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def max_length(self) -> int:
        return self.loaded.max_length


def load_model(model_dir: Path, device: str | None = None, dtype: str | None = None, registry=None,
               trust_remote_code: bool = False) -> SavedModel:
    """A saved run's model and tokenizer, from the run's model/ directory alone.

    The model and adapter plugins recorded in stancerun.json rebuild it: an adapter that keeps
    its own weights restores them over a freshly loaded base; otherwise the model plugin
    restores the whole saved model. ``dtype`` ("bfloat16", "float16") casts the weights
    afterwards, so an adapter's merge into the base loses nothing. Code from the folder runs only
    with ``trust_remote_code`` (see :func:`refuse_remote_code`)."""
    from dataclasses import replace

    from stancerun.components.assembly import rebuild, saved_record
    from stancerun.registry.discovery import get_registry

    model_dir = Path(model_dir)
    info = check_saved_model(model_dir, trust_remote_code)
    registry = registry or get_registry()
    component = rebuild(registry, "models", saved_record(info, "model", model_dir))
    if info["weights"] == "adapter":
        # Only then is the adapter's plugin needed: whole weights come back through the model's alone.
        adapter = rebuild(registry, "adapters", saved_record(info, "adapter", model_dir))
        loaded = component.load(info["labels"])
        loaded = replace(loaded, model=adapter.restore(loaded, model_dir))
    else:
        loaded = component.restore(info["labels"], model_dir)
    loaded.model.eval()
    if device:
        loaded.model.to(device)
    if dtype and dtype != "float32":
        import torch

        loaded.model.to(getattr(torch, dtype))
    from stancerun.evaluation.ensemble import restore

    return SavedModel(loaded, info, component, restore(info, model_dir, registry))
