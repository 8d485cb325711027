"""`stancerun export RUN_DIR OUT_DIR [--merge]`: a standalone model that loads offline with no
stancerun code (for transformers models: `pipeline("text-classification", model=OUT_DIR)`),
with a model card that says how to use it."""

from __future__ import annotations

from pathlib import Path

from stancerun.rundir import artifacts
from stancerun.rundir.layout import MODEL, MODEL_INFO, RunDir, read_json
from stancerun.config import tomlio
from stancerun.errors import UsageError


def output_layer(model, num_labels: int):
    """The last linear layer that produces the logits (classifier, classifier.out_proj, score...)."""
    import torch

    found = None
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module.out_features == num_labels:
            found = module
    if found is None:
        raise UsageError("export: cannot find the classification layer to fold the temperature into")
    return found


def fold_scores(model, num_labels: int, temperature: float, scale: float = 1.0, shift=None) -> None:
    """softmax((scale * log_softmax(logits) + shift) / T) == softmax of the output layer with its
    weight times scale / T and its bias (bias * scale + shift) / T, since log_softmax only
    subtracts a per-row constant: the exported model then gives the run's calibrated (and
    decision-offset) probabilities with no stancerun code."""
    import torch

    if temperature == 1.0 and scale == 1.0 and shift is None:
        return
    layer = output_layer(model, num_labels)
    with torch.no_grad():
        layer.weight.mul_(scale / temperature)
        if layer.bias is None:
            layer.bias = torch.nn.Parameter(torch.zeros(num_labels, dtype=layer.weight.dtype, device=layer.weight.device))
        layer.bias.mul_(scale)
        if shift is not None:
            layer.bias.add_(torch.as_tensor(shift, dtype=layer.bias.dtype, device=layer.bias.device))
        layer.bias.div_(temperature)


def card_sources(run_dir: Path) -> tuple[dict, object, dict]:
    """(config, results, environment) the model card is written from: read before the model loads,
    so a missing or garbled one is named at once."""
    found = RunDir(run_dir)
    for needed in (found.config, found.results):
        if not needed.is_file():
            raise UsageError(f"{needed}: missing; the model card is written from it (a finished run has it)")
    environment = (read_json(found.environment, "a JSON object (the run's environment)")
                   if found.environment.is_file() else {})
    return found.read_config(), found.read_results(), environment


def model_card(sources: tuple[dict, object, dict], info: dict, merged: bool, usage: str) -> str:
    config, results, environment = sources  # card_sources()
    library = "sentence-transformers" if "SentenceTransformer(" in usage else "transformers"
    lines = [
        "---", f"library_name: {library}", "pipeline_tag: text-classification", "tags: [stancerun, stance]", "---", "",
        f"# {config['name']}", "",
        config.get("description") or "A text classifier fine-tuned with stancerun.", "",
        f"- base model: `{info['base_model']}`; adapter: `{info['adapter']}`" + (" (merged into the weights)" if merged else ""),
        f"- labels (id order): {', '.join(info['labels'])}",
        f"- input: {'(' + info['text_pair_column'] + ', text) pairs' if info.get('text_pair_column') else 'text'}, "
        f"truncated to {info['max_length']} tokens",
    ]
    if info.get("temperature", 1.0) != 1.0:
        lines.append(f"- calibrated: temperature {info['temperature']:.4f} folded into the output layer")
    lines += ["", "## Validation results", "", "| metric | value | 95% interval |", "|---|---:|---|"]
    for key, value in results.final.items():
        ci = results.interval("final", key)
        lines.append(f"| {key} | {value:.4f} | " + (f"[{ci['low']:.4f}, {ci['high']:.4f}]" if ci else "") + " |")
    if results.test is not None:
        lines += ["", "## Test results", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in results.test.items()]
    lines += ["", "## Data", "", "| file | sha256 |", "|---|---|"]
    lines += [f"| `{Path(path).name}` | `{digest}` |" for path, digest in environment.get("data_files", {}).items()]
    lines += ["", "## Experiment", "", "```toml", tomlio.dumps(config).rstrip(), "```", "",
              "## Use", "", "```python", usage.rstrip(), "```", ""]
    return "\n".join(lines)


def pipeline_usage(pair_column: str | None) -> str:
    """How a transformers model exported by ``stancerun export`` is used (PATH: its folder)."""
    call = 'classify({"text": "TARGET", "text_pair": "TEXT"})' if pair_column else 'classify("...")'
    return ("from transformers import pipeline\n\n"
            'classify = pipeline("text-classification", model="PATH", top_k=None)\n'
            f"print({call})\n")


def usage(component, pair_column: str | None) -> str:
    """The model's own ``export_usage`` (stancerun.contracts.Model), else the transformers pipeline."""
    own = getattr(component, "export_usage", None)
    return own(pair_column) if callable(own) else pipeline_usage(pair_column)


def stack_folding(info: dict, run_dir: Path, fine_tuned_only: bool) -> tuple[float, list | None]:
    """(scale, shift) that fold the run's shipped stack into the output layer; a stack with
    baseline members cannot be folded, and export says what it can do instead."""
    entry = info.get("ensemble")
    if not entry or fine_tuned_only:
        return 1.0, None
    if entry["members"]:
        raise UsageError(f"{run_dir} ships the fine-tuned model stacked with {', '.join(entry['members'])}: a single "
                         "transformers model cannot hold the stacked baselines. `stancerun predict` uses the whole "
                         "stack; add --fine-tuned-only to export the transformer alone (the report's "
                         "\"fine-tuned alone\" row)")
    return entry["weights"][0], [b + o for b, o in zip(entry["bias"], entry["offsets"])]


def check_paths(run_dir: Path, out_dir: Path) -> None:
    """A run directory to export from, and a new or empty place to export to (every export)."""
    if not RunDir(run_dir).model.is_dir():
        raise UsageError(f"{run_dir}: not a run directory (no {MODEL}/ inside)")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UsageError(f"{out_dir}: exists and is not empty")


def export(run_dir: Path, out_dir: Path, merge: bool, fine_tuned_only: bool = False,
           trust_remote_code: bool = False) -> Path:
    check_paths(run_dir, out_dir)
    info = artifacts.check_saved_model(RunDir(run_dir).model, trust_remote_code)
    sources = card_sources(run_dir)
    scale, shift = stack_folding(info, run_dir, fine_tuned_only)
    is_adapter = info.get("weights") == "adapter"
    if is_adapter and not merge:
        raise UsageError(f"{run_dir} holds the '{info['adapter']}' adapter's weights only: add --merge to write a "
                         f"standalone model (the adapter alone is in {RunDir(run_dir).model})")
    # The adapter's restore folds its weights into the base: a plain model of the base architecture.
    saved = artifacts.load_model(RunDir(run_dir).model, trust_remote_code=trust_remote_code)
    write = getattr(saved.component, "export", None)
    if not callable(write):
        record = info["components"]["model"]
        raise UsageError(f"export: model '{record['use']}' (plugin '{record['plugin']}') cannot be exported as a "
                         "standalone transformers model: its plugin has no export() (see stancerun.contracts.Model); "
                         f"`stancerun predict {run_dir}` still uses it")
    # The temperature was fitted on the shipped scores; the transformer alone exports uncalibrated.
    temperature = 1.0 if fine_tuned_only and info.get("ensemble") else info.get("temperature", 1.0)
    fold_scores(saved.model, len(info["labels"]), temperature, scale, shift)
    how = usage(saved.component, info.get("text_pair_column"))

    def fill(tmp: Path):
        write(saved.loaded, saved.model, tmp)
        artifacts.atomic_write(tmp / "README.md", model_card(sources, info, is_adapter, how))
        exported = {k: v for k, v in info.items() if k != "ensemble"}  # folded in, or left out on request
        artifacts.write_json(tmp / MODEL_INFO, {**exported, "temperature": 1.0, "weights": "model",
                                                          "exported_from": str(run_dir)})

    artifacts.atomic_directory(out_dir, fill)
    return out_dir
