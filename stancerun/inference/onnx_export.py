"""An ONNX export of a run's model for torch-free CPU serving (stancerun.inference.onnx_predict), float32
or int8 (dynamic quantization of the weights), checked against the run before it is kept.

The model is the one ``stancerun export --merge`` writes (an adapter folded into the base, the
calibration temperature and a foldable decision rule folded into the output layer), traced with
torch.export (``torch.onnx.export(dynamo=True)``) with dynamic batch and sequence axes. Before
the export directory appears, its model scores the run's validation split (predictions.csv)
through onnxruntime: too many labels changed, or the headline metric dropped too far, and
nothing is written.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stancerun.rundir import artifacts
from stancerun.rundir.layout import ONNX_FORMAT, ONNX_MODEL, PREDICTIONS, RunDir
from stancerun.errors import StancerunError, UsageError
from stancerun.inference.export import check_paths, fold_scores, stack_folding
from stancerun.inference.onnx_predict import load_onnx, onnx_logits

#: Metrics the check can recompute from labels alone; any other headline is checked on accuracy.
CHECKED_METRICS = ("accuracy", "f1_macro")


def validation_split(run_dir: Path, info: dict) -> tuple[list[str], list[str] | None, list[int], list[int]]:
    """(texts, pairs, labels, predictions) of run_dir/predictions.csv, as label indices."""
    path = RunDir(run_dir).predictions
    if not path.is_file():
        raise UsageError(f"{run_dir}: no predictions.csv to check the export against")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    names = info["labels"]
    index = {name: i for i, name in enumerate(names)}
    pair_column = info.get("text_pair_column")
    if pair_column:
        pair_column = pair_column if rows and pair_column in rows[0] else "text_pair"
    rows = [r for r in rows if r.get("label") in index]  # unlabelled rows cannot score a metric
    if not rows:
        raise UsageError(f"{run_dir}/predictions.csv: no labelled rows to check the export against")
    texts = [r["text"] for r in rows]
    pairs = [r[pair_column] for r in rows] if pair_column else None
    return texts, pairs, [index[r["label"]] for r in rows], [index[r["prediction"]] for r in rows]


def headline(run_dir: Path) -> tuple[str, str | None]:
    """(metric the check computes, why it is not the run's headline metric, or None)."""
    found = RunDir(run_dir)
    metric = found.read_results().headline if found.results.is_file() else None
    if not metric and found.config.is_file():
        config = found.read_config()
        for candidate in (config.get("evaluation", {}).get("headline"),
                          config.get("training", {}).get("metric_for_best_model")):
            if candidate and candidate.removeprefix("eval_") != "loss":
                metric = candidate.removeprefix("eval_")
                break
    if metric in CHECKED_METRICS:
        return metric, None
    return "accuracy", (f"the run's headline metric '{metric}' cannot be recomputed from labels here: "
                        "checked on accuracy" if metric else "the run names no headline metric: checked on accuracy")


def metric_value(metric: str, labels, predicted, n_labels: int) -> float:
    from sklearn.metrics import accuracy_score, f1_score

    if metric == "f1_macro":
        return float(f1_score(labels, predicted, average="macro", labels=list(range(n_labels)), zero_division=0))
    return float(accuracy_score(labels, predicted))


def refitted(run_dir: Path) -> bool:
    """Under refit_on_validation predictions.csv is the first pass's, not the shipped model's."""
    path = RunDir(run_dir).config
    if not path.is_file():
        return False
    config = RunDir(run_dir).read_config()
    return bool(config.get("training", {}).get("refit_on_validation"))


def logits_module(model, input_names: list[str]):
    """The model's forward as the graph exposes it: named int64 inputs -> float32 logits."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        if "token_type_ids" in input_names:
            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.model(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).logits.float()
        else:
            def forward(self, input_ids, attention_mask):
                return self.model(input_ids=input_ids, attention_mask=attention_mask).logits.float()

    return Logits().eval()


def sample_inputs(tokenizer, texts: list[str], pairs, max_length: int, pad: int, input_names: list[str]) -> dict:
    """Two examples padded to a common width (>= 2 on both axes, so that torch.export does not
    specialise an axis to 1): the shapes the graph is traced with, not the ones it accepts."""
    import torch

    from stancerun.data.batching import encode

    texts = (list(texts) + ["a", "b"])[:2]
    pairs = (list(pairs) + ["a", "b"])[:2] if pairs is not None else None
    encoded = encode(tokenizer, texts, pairs, max_length)
    width = max(3, *encoded.lengths)
    ids = torch.full((2, width), pad, dtype=torch.long)
    mask = torch.zeros((2, width), dtype=torch.long)
    types = torch.zeros((2, width), dtype=torch.long)
    for row in range(2):
        n = len(encoded.input_ids[row])
        ids[row, :n] = torch.tensor(encoded.input_ids[row])
        mask[row, :n] = 1
        if encoded.token_type_ids is not None:
            types[row, :n] = torch.tensor(encoded.token_type_ids[row])
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {name: feeds[name] for name in input_names}


@contextlib.contextmanager
def quiet_export():
    """torch.onnx's notices (torchvision absent, renamed axes, deprecations) say nothing about
    this model: silenced, errors still raise."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        registration.setLevel(level)


def write_onnx(model, inputs: dict, path: Path, max_length: int) -> None:
    import torch

    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=max(max_length, 3))
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    external = size > 1_800_000_000  # protobuf's 2 GB limit: weights beside the graph then
    with quiet_export():
        program = torch.onnx.export(model, (), kwargs=inputs, dynamo=True, input_names=list(inputs),
                                    output_names=["logits"], dynamic_shapes={k: {0: batch, 1: sequence} for k in inputs},
                                    external_data=external, optimize=True, verbose=False)
        program.save(str(path), external_data=external)


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic quantization of the matrix products: int8 weights (QInt8, one scale per output
    channel), activations quantized on the fly. The embedding lookups stay float32: they cost no
    arithmetic, and quantizing them (with per-tensor scales) moved a LoRA MiniLM's validation
    labels by 5.8% and its accuracy by 0.8 points; this way 0.8% and 0.0 (240 texts of the demo data)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" notice goes to the root logger
    try:
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"],
                         use_external_data_format=any(p.suffix == ".data" for p in source.parent.iterdir()))
    finally:
        root.setLevel(level)


@dataclass
class Reference:
    """What the export is checked against: the run's validation split, the labels the run gave
    it (from ``source``), and the metric compared."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[int]
    predicted: list[int]
    metric: str
    metric_note: str | None
    source: str = PREDICTIONS


def refuse_stacked(run_dir: Path, info: dict) -> None:
    members = (info.get("ensemble") or {}).get("members")
    if members:  # what stack_folding refuses, said for this command
        raise UsageError(f"{run_dir} ships the fine-tuned model stacked with {', '.join(members)}: a single ONNX "
                         "model cannot hold the stacked baselines, and its predictions.csv is the stack's. "
                         f"`stancerun predict {run_dir}` uses the whole stack")


def reference_of(run_dir: Path, info: dict) -> Reference:
    texts, pairs, labels, run_predicted = validation_split(run_dir, info)
    metric, metric_note = headline(run_dir)
    return Reference(texts, pairs, labels, run_predicted, metric, metric_note)


def use_shipped_predictions(reference: Reference, run_dir: Path, saved) -> None:
    """Under refit_on_validation the export must agree with the shipped model, not predictions.csv."""
    if refitted(run_dir):
        from stancerun.inference.predict import shipped_logits

        reference.predicted = shipped_logits(saved, reference.texts, reference.pairs, 64).argmax(axis=1).tolist()
        reference.source = "the shipped model (refit_on_validation: predictions.csv is the first pass's)"


def input_names_of(tokenizer, max_length: int) -> list[str]:
    probe = tokenizer(["a"], truncation=True, max_length=max_length, padding=False)
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if probe.get("token_type_ids") is not None else [])


def write_model(directory: Path, wrapped, inputs: dict, max_length: int, int8: bool) -> None:
    """model.onnx in ``directory``: float32, or quantized from a float32 one written beside it first."""
    if int8:
        float_dir = directory / ".float32"
        float_dir.mkdir()
        write_onnx(wrapped, inputs, float_dir / ONNX_MODEL, max_length)
        quantize_int8(float_dir / ONNX_MODEL, directory / ONNX_MODEL)
        shutil.rmtree(float_dir)
    else:
        write_onnx(wrapped, inputs, directory / ONNX_MODEL, max_length)


def export_record(run_dir: Path, info: dict, saved, input_names: list[str], pad: int, int8: bool) -> dict:
    """The export's stancerun.json: the run's model info, less what is folded in, and how to tokenize."""
    tokenizer = saved.tokenizer
    backend = getattr(tokenizer, "tokenizer", tokenizer)  # a pair-joining wrapper's own tokenizer
    exported = {k: v for k, v in info.items() if k not in ("ensemble", "format")}  # folded in
    record = {**exported, "info_format": info.get("format"), "weights": "model", "format": ONNX_FORMAT,
              "quantized": "int8" if int8 else None, "max_length": saved.max_length,
              "exported_from": str(run_dir), "temperature": 1.0, "inputs": input_names,
              "pad_token_id": pad, "truncation_side": getattr(backend, "truncation_side", "right"),
              "split_special_tokens": bool(getattr(backend, "split_special_tokens", False))}
    if getattr(tokenizer, "pair_format", None):
        record["pair_format"] = tokenizer.pair_format
    return record


def compare_with_run(export_dir: Path, reference: Reference, n_labels: int) -> dict:
    """The export's labels and metric on the validation split against the run's. The export runs
    as a user will run it: through stancerun.inference.onnx_predict."""
    predicted = onnx_logits(load_onnx(export_dir), reference.texts, reference.pairs, 64).argmax(axis=1)
    agreement = float(np.mean(predicted == np.asarray(reference.predicted)))
    of_run = metric_value(reference.metric, reference.labels, reference.predicted, n_labels)
    of_export = metric_value(reference.metric, reference.labels, predicted.tolist(), n_labels)
    return {"agreement": agreement, "disagreement": 1.0 - agreement, "n": len(reference.labels),
            "metric": reference.metric, "metric_run": of_run, "metric_export": of_export, "metric_drop": of_run - of_export}


def reject_if_off(found: dict, run_dir: Path, int8: bool) -> None:
    """StancerunError when too many labels changed or the metric dropped too far."""
    if found["disagreement"] > found["max_disagreement"] or found["metric_drop"] > found["max_metric_drop"]:
        note = found.get("note")
        raise StancerunError(
            f"ONNX export{' (int8)' if int8 else ''} of {run_dir} rejected on its {found['n']} validation examples: "
            f"{found['disagreement']:.2%} of labels differ from the run's (at most {found['max_disagreement']:.2%} "
            f"allowed); {found['metric']} {found['metric_export']:.4f} against the run's {found['metric_run']:.4f}, "
            f"a drop of {found['metric_drop']:+.4f} (at most {found['max_metric_drop']:.4f} allowed)"
            + (f"; {note}" if note else "") + (". Try without --int8, or raise the bounds" if int8 else ""))


def export_onnx(run_dir: Path, out_dir: Path, int8: bool = False, max_disagreement: float = 0.01,
                max_metric_drop: float = 0.005, trust_remote_code: bool = False) -> dict:
    """Write an ONNX export of ``run_dir``'s model to ``out_dir`` (model.onnx, the tokenizer,
    stancerun.json), after checking it against the run's validation predictions: at most
    ``max_disagreement`` of the labels may change and the headline metric may drop by at most
    ``max_metric_drop`` (absolute), else StancerunError and nothing at ``out_dir``.
    Returns what the check found (also in stancerun.json's "agreement")."""
    started = time.perf_counter()
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    check_paths(run_dir, out_dir)
    info = artifacts.check_saved_model(RunDir(run_dir).model, trust_remote_code)
    refuse_stacked(run_dir, info)
    scale, shift = stack_folding(info, run_dir, fine_tuned_only=False)  # the decision rule alone folds in
    reference = reference_of(run_dir, info)

    # The adapter's restore folds its weights into the base: a plain model of the base architecture.
    saved = artifacts.load_model(RunDir(run_dir).model, trust_remote_code=trust_remote_code)
    use_shipped_predictions(reference, run_dir, saved)
    fold_scores(saved.model, len(info["labels"]), info.get("temperature", 1.0), scale, shift)

    tokenizer = saved.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_names = input_names_of(tokenizer, saved.max_length)
    found: dict = {}

    def fill(tmp: Path):
        inputs = sample_inputs(tokenizer, reference.texts, reference.pairs, saved.max_length, pad, input_names)
        write_model(tmp, logits_module(saved.model, input_names), inputs, saved.max_length, int8)
        tokenizer.save_pretrained(tmp)
        record = export_record(run_dir, info, saved, input_names, pad, int8)
        artifacts.write_json(tmp / artifacts.MODEL_INFO, record)
        found.update(compare_with_run(tmp, reference, len(info["labels"])))
        found.update({"max_disagreement": max_disagreement, "max_metric_drop": max_metric_drop,
                      "reference": reference.source, "quantized": "int8" if int8 else None})
        if reference.metric_note:
            found["note"] = reference.metric_note
        reject_if_off(found, run_dir, int8)
        found["file_size"] = os.path.getsize(tmp / ONNX_MODEL)
        found["seconds"] = round(time.perf_counter() - started, 3)
        artifacts.write_json(tmp / artifacts.MODEL_INFO, {**record, "agreement": dict(found)})

    artifacts.atomic_directory(out_dir, fill)
    return dict(found)
