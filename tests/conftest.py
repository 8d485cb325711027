from __future__ import annotations

import os

import pytest

# Nothing in the test suite may reach a model or dataset hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(autouse=True)
def _only_builtin_plugins(monkeypatch):
    """Tests see the built-in plugins only, whatever else is installed, and a fresh registry."""
    from stancerun import plugins

    monkeypatch.setenv(plugins.ALLOW_ENV, "")
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def builtin_registry():
    from stancerun.plugins import get_registry

    return get_registry()


# -- tiny models and data, made on the fly ----------------------------------------------
import random  # noqa: E402
from pathlib import Path  # noqa: E402

POSITIVE = "good great fine excellent love support yes agree helpful fair".split()
NEGATIVE = "bad awful poor terrible hate oppose no disagree harmful unfair".split()
NEUTRAL = "table chair window monday report meeting schedule paper street number".split()
FILLER = "the a this policy plan it is was very really about our city new".split()
TARGETS = ["tax", "ban", "park"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(POSITIVE + NEGATIVE + NEUTRAL + FILLER + TARGETS))


def stance_rows(n: int, seed: int = 0) -> list[dict]:
    """Short texts whose label is told by their words, with lengths that vary (for padding tests)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label, words = [("support", POSITIVE), ("oppose", NEGATIVE), ("neutral", NEUTRAL)][i % 3]
        text = " ".join(rng.choice(FILLER) for _ in range(rng.randint(0, 8)))
        text = f"{text} {' '.join(rng.choice(words) for _ in range(rng.randint(1, 3)))}".strip()
        rows.append({"text": text, "target": TARGETS[i % len(TARGETS)], "label": label})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def save_tiny_model(folder: Path, arch: str) -> Path:
    """A 2-layer encoder without a classification head (the head is new at load time, as with
    a real pretrained checkpoint) and a word-level tokenizer over the test vocabulary."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer, DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    vocab = {token: i for i, token in enumerate(VOCAB)}
    if arch == "bert":
        config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=37, max_position_embeddings=64)
        model = BertModel(config)
    else:
        config = DistilBertConfig(vocab_size=len(VOCAB), dim=32, n_layers=2, n_heads=2, hidden_dim=37,
                                  max_position_embeddings=64)
        model = DistilBertModel(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer = BertTokenizer(vocab=vocab)
    tokenizer.model_max_length = 64
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-distilbert"), "distilbert")


@pytest.fixture
def stance_data(tmp_path):
    """train.csv (90 rows) and test.csv (30 rows) with text, target and label columns."""
    return {"train": write_csv(tmp_path / "data" / "train.csv", stance_rows(90, seed=1)),
            "test": write_csv(tmp_path / "data" / "test.csv", stance_rows(30, seed=2))}


def tiny_experiment(tmp_path: Path, model_dir: Path, adapter: str = "lora", extra: str = "", data: str = "") -> Path:
    """An experiment file over the tiny model and the stance data, fast enough for a unit test."""
    adapter_table = {"lora": 'use = "lora"\nr = 4\nalpha = 8\n', "full": 'use = "full"\n', "frozen": 'use = "frozen"\n'}[adapter]
    text = f"""
name = "tiny"
seed = 7
output_dir = "runs"

[data]
use = "csv"
train = "data/train.csv"
test = "data/test.csv"
labels = ["support", "neutral", "oppose"]
{data}

[model]
use = "hf"
name = "{model_dir}"
max_length = 32

[adapter]
{adapter_table}

[training]
num_train_epochs = 3
per_device_train_batch_size = 8
per_device_eval_batch_size = 16
learning_rate = {"5e-3" if adapter != "full" else "1e-3"}
eval_strategy = "epoch"
save_strategy = "epoch"
logging_steps = 5
metric_for_best_model = "accuracy"

[[metrics]]
use = "accuracy"

[[metrics]]
use = "f1"
average = "macro"
{extra}
"""
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path
