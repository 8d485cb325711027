#!/usr/bin/env python
"""The prediction contenders of benchmarks/throughput.py, written as their users write them.

    seed       the seed notebook: reload the adapter with peft (PeftModel.from_pretrained, no
               merge), then its predict(): one text at a time, truncated to 512 tokens, no_grad
    pipeline   a hand-tuned script: the same reload, merge_and_unload(), then
               transformers.pipeline("text-classification", batch_size=64), truncated to 128

throughput.py times the two loops in-process on a model it has already loaded, and also runs
this file as a whole process, as `stancerun predict` is measured: interpreter start-up,
imports and the model load included. As a script:

    python benchmarks/predict_contenders.py seed|pipeline RUN_DIR INPUT.csv OUTPUT.jsonl
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path


def seed_loop(model, tokenizer, labels: list[str], texts: list[str]) -> list[dict]:
    """The seed notebook's predict(), applied to each text in turn."""
    import torch

    def predict(text):
        inputs = tokenizer(text, return_tensors="pt", truncation=True, max_length=512)
        with torch.no_grad():
            outputs = model(**inputs)
        probs = torch.nn.functional.softmax(outputs.logits, dim=-1)
        return {"text": text, "prediction": labels[torch.argmax(probs).item()], "confidence": torch.max(probs).item()}

    return [predict(text) for text in texts]


def batched_pipeline(model, tokenizer, texts: list[str]) -> list[dict]:
    """transformers.pipeline, batch 64 in input order, each batch padded to its longest member;
    texts truncated to 128 tokens as stancerun's experiment does."""
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # it notes that a PeftModel is not a listed architecture; it runs fine
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, batch_size=64)
    return classify(texts, truncation=True, max_length=128)


def load_with_peft(run_dir: Path, merge: bool):
    """The notebook's reload: the base model with a fresh head, then the adapter (which brings
    the trained head back through modules_to_save)."""
    from peft import PeftModel
    from stancerun import resolve_model  # the packaged MiniLM's local path (no hub)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    info = json.loads((run_dir / "model" / "stancerun.json").read_text(encoding="utf-8"))
    labels = info["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(resolve_model(info["base_model"]), num_labels=len(labels),
                                                              id2label=dict(enumerate(labels)))
    model = PeftModel.from_pretrained(base, run_dir / "model")
    if merge:
        model = model.merge_and_unload()
    return model.eval(), AutoTokenizer.from_pretrained(run_dir / "model"), labels


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="one prediction contender of benchmarks/throughput.py, as a whole process")
    parser.add_argument("how", choices=("seed", "pipeline"))
    parser.add_argument("run_dir", type=Path, help="a stancerun run directory (its model/ is reloaded with peft)")
    parser.add_argument("input", type=Path, help="a CSV file with a text column")
    parser.add_argument("output", type=Path, help="where the JSONL predictions go")
    args = parser.parse_args(argv)
    with args.input.open(newline="", encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    model, tokenizer, labels = load_with_peft(args.run_dir, merge=args.how == "pipeline")
    if args.how == "seed":
        rows = seed_loop(model, tokenizer, labels, texts)
    else:
        rows = batched_pipeline(model, tokenizer, texts)
    args.output.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
