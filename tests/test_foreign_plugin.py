"""The plugin boundary holds end to end: a third-party plugin with no transformers in it (a
bag-of-embeddings classifier with its own hashing tokenizer, its own TSV dataset and its own
callback), installed as a distribution of its own, trains, saves, predicts in a fresh process,
evaluates, resumes after SIGKILL, refuses export, and is named when it is missing.

Everything below runs the real CLI in subprocesses, so nothing is shared in memory: the core
can only know the plugin through the entry point and stancerun.contracts.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import stance_rows
from stancerun import contracts
from stancerun.registry import discovery as plugins

# -- the third-party plugin, written to disk at test time ------------------------------------

PLUGIN_INIT = '''
"""bagplug: a stancerun plugin that owes nothing to transformers. Torch is imported lazily
(bagplug.net), so `stancerun validate` and `stancerun plugins` stay torch-free with it too."""

from __future__ import annotations

import json
import os
import signal
import zlib
from pathlib import Path
from typing import Annotated

import stancerun
from stancerun import File, Range, Split
from stancerun.contracts import LoadedModel
from stancerun.data.rows import RowDataset, read_csv


# -- dataset: tab-separated files, with option names of its own ------------------------------
class TsvDataset(RowDataset):
    def __init__(self, *, paths, **common):
        super().__init__(**common)
        self.paths = paths

    def sources(self):
        return {split: read_csv(path, delimiter="\\t") if path else None for split, path in self.paths.items()}

    def read_file(self, path):  # `stancerun evaluate --data`: always TSV here
        return read_csv(path, delimiter="\\t")

    def files(self):
        return [p for p in self.paths.values() if p]


def tsv(*, train: File, validation: File | None = None, test: File | None = None, split: Split = Split(),
        text_field: str = "text", pair_field: str | None = None, label_field: str = "label",
        labels: list[str] | None = None):
    """Tab-separated files with a header row."""
    return TsvDataset(paths={"train": train, "validation": validation, "test": test}, split=split,
                      text_column=text_field, text_pair_column=pair_field, label_column=label_field, labels=labels)


# -- tokenizer: lowercase words hashed into buckets (no vocabulary to fit: load() sees no data) --
class HashTokenizer:
    pad_token_id = 0
    unknown_id = 1  # an empty text still gets one token

    def __init__(self, buckets: int):
        self.buckets = buckets

    def ids(self, text: str, salt: str = "") -> list[int]:
        # crc32, not hash(): Python salts str hashes per process, and predict runs in another one.
        return [2 + zlib.crc32((salt + word).encode()) % self.buckets for word in text.lower().split()] or [self.unknown_id]

    def __call__(self, text, text_pair=None, *, truncation: bool, max_length: int, padding: bool):
        if text_pair is None:
            rows = [self.ids(t) for t in text]
        else:  # (pairs, texts): the pair's words hash apart from the text's
            rows = [self.ids(p, "pair:") + self.ids(t) for p, t in zip(text, text_pair)]
        return {"input_ids": [row[:max_length] if truncation else row for row in rows]}


# -- model ------------------------------------------------------------------------------------
WEIGHTS, CONFIG, TOKENIZER = "bag.safetensors", "bag_config.json", "bag_tokenizer.json"


class BagModel:
    def __init__(self, dim, buckets, max_length, seed):
        self.dim, self.buckets, self.max_length, self.seed = dim, buckets, max_length, seed

    def rebuild_options(self) -> dict:
        return {"dim": self.dim, "buckets": self.buckets, "max_length": self.max_length, "seed": self.seed}

    def load(self, labels):
        from bagplug.net import build

        model = build(self.buckets + 2, self.dim, len(labels), self.seed)
        return LoadedModel(model, HashTokenizer(self.buckets), self.max_length, source="bagplug:hashed-bag",
                           new_modules=["embed", "classifier"])

    def save(self, loaded, directory, model=None, state_dict=None):
        directory = Path(directory)
        (directory / TOKENIZER).write_text(json.dumps({"kind": "crc32-words", "buckets": loaded.tokenizer.buckets}))
        (directory / CONFIG).write_text(json.dumps({"dim": self.dim, "max_length": loaded.max_length}))
        if model is not None:
            from safetensors.torch import save_file

            weights = state_dict if state_dict is not None else model.state_dict()
            save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(directory / WEIGHTS))

    def restore(self, labels, directory):
        from safetensors.torch import load_file

        from bagplug.net import build

        directory = Path(directory)
        config = json.loads((directory / CONFIG).read_text())
        buckets = json.loads((directory / TOKENIZER).read_text())["buckets"]
        model = build(buckets + 2, config["dim"], len(labels), self.seed)
        model.load_state_dict(load_file(str(directory / WEIGHTS)), strict=True)
        return LoadedModel(model, HashTokenizer(buckets), config["max_length"], source=str(directory))

    # no export(): `stancerun export` must say this model cannot be exported


def bag(*, dim: Annotated[int, Range(ge=1)] = 16, buckets: Annotated[int, Range(ge=1)] = 1024,
        max_length: Annotated[int, Range(ge=1)] = 32, seed: int = 0):
    """Mean of word embeddings, then a linear layer."""
    return BagModel(dim, buckets, max_length, seed)


# -- callback: dies at a chosen step, only in the process the test armed ----------------------
class Killer:
    def __init__(self, at_step):
        self.at_step = at_step

    def on_log(self, run, logs):
        # Armed by the environment, not an option: one experiment file then trains the killed
        # run, its resumption and the uninterrupted reference alike.
        if run.global_step == self.at_step and os.environ.get("BAGPLUG_KILL") == "1":
            os.kill(os.getpid(), signal.SIGKILL)


def bag_killer(*, at_step: int):
    return Killer(at_step)


@stancerun.hookimpl
def stancerun_register_datasets(register):
    register("tsv", tsv)


@stancerun.hookimpl
def stancerun_register_models(register):
    register("bag", bag)


@stancerun.hookimpl
def stancerun_register_callbacks(register):
    register("bag_killer", bag_killer)
'''

PLUGIN_NET = '''
"""The torch module: forward follows the transformers sequence-classification convention."""

from types import SimpleNamespace

import torch


class BagClassifier(torch.nn.Module):
    def __init__(self, vocab_size, dim, num_labels):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, dim, padding_idx=0)
        self.classifier = torch.nn.Linear(dim, num_labels)

    def forward(self, input_ids, attention_mask=None, labels=None, **ignored):
        mask = (input_ids != 0 if attention_mask is None else attention_mask).unsqueeze(-1).float()
        mean = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
        logits = self.classifier(mean)
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SimpleNamespace(logits=logits, loss=loss)


def build(vocab_size, dim, num_labels, seed):
    """Weights from a generator of its own: reproducible, and the global RNG is left alone."""
    model = BagClassifier(vocab_size, dim, num_labels)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
        model.embed.weight[0].zero_()
    return model
'''

EXPERIMENT = """
name = "bag"
seed = 3
output_dir = "runs"

[data]
use = "tsv"
train = "data/train.tsv"
validation = "data/val.tsv"
text_field = "tweet"
pair_field = "target"
label_field = "stance"
labels = ["support", "neutral", "oppose"]

[model]
use = "bag"
dim = 16

[adapter]
use = "full"

[training]
num_train_epochs = 3             # 60 rows / batch 8: 8 steps an epoch, 24 in all
per_device_train_batch_size = 8
per_device_eval_batch_size = 16
learning_rate = 0.05
eval_strategy = "epoch"
save_strategy = "steps"
save_steps = 5                   # checkpoints at 5, 10, 15, 20
logging_steps = 1
metric_for_best_model = "accuracy"

[evaluation]
baselines = ["majority"]
bootstrap_resamples = 0
plots = false

[[metrics]]
use = "accuracy"

[[metrics]]
use = "f1"
average = "macro"

[[callbacks]]
use = "bag_killer"
at_step = 12                     # mid-epoch 2: resumes from step-10, two batches into the epoch
"""

LABELS = ["support", "neutral", "oppose"]
NO_PICKLES = (".bin", ".pt", ".pth", ".pkl", ".pickle")


def write_tsv(path: Path, rows: list[dict]) -> Path:
    """The conftest rows under column names no built-in default uses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["tweet", "target", "stance"])
        writer.writerows([r["text"], r["target"], r["label"]] for r in rows)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The plugin as an installed distribution (a package plus its dist-info, which
    importlib.metadata finds on sys.path), its data, and the experiment."""
    root = tmp_path_factory.mktemp("foreign")
    site = root / "site"
    (site / "bagplug").mkdir(parents=True)
    (site / "bagplug" / "__init__.py").write_text(PLUGIN_INIT)
    (site / "bagplug" / "net.py").write_text(PLUGIN_NET)
    info = site / "bagplug-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bagplug\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[stancerun]\nbag = bagplug\n")

    val_rows = stance_rows(30, seed=2)
    write_tsv(root / "data" / "train.tsv", stance_rows(60, seed=1))
    write_tsv(root / "data" / "val.tsv", val_rows)
    (root / "exp.toml").write_text(EXPERIMENT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           plugins.ALLOW_ENV: "bagplug", "HF_HUB_OFFLINE": "1"}
    env.pop("BAGPLUG_KILL", None)
    return SimpleNamespace(root=root, site=site, exp=root / "exp.toml", val_rows=val_rows, env=env)


def stancerun(world, *args, **env):
    """`python -m stancerun ARGS` in a fresh process, with the plugin installed unless env says otherwise."""
    return subprocess.run([sys.executable, "-m", "stancerun", *map(str, args)], cwd=world.root,
                          env={**world.env, **env}, capture_output=True, text=True, timeout=300)


def ok(done) -> None:
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def probabilities(rows: list[dict]) -> np.ndarray:
    return np.array([[float(r[f"prob_{name}"]) for name in LABELS] for r in rows])


@pytest.fixture(scope="module")
def trained(world) -> Path:
    """The uninterrupted run: what steps 2-4, 6 and 7 inspect and the resumed run must equal."""
    run = world.root / "straight"
    ok(stancerun(world, "run", world.exp, "--output-dir", run))
    return run


# -- 0. discovery: in process, through importlib.metadata like any installed distribution ------
def test_plugin_is_found_as_a_distribution_and_keeps_the_contracts(world, monkeypatch):
    from stancerun.config.experiment import build, load_experiment

    monkeypatch.syspath_prepend(str(world.site))
    monkeypatch.setenv(plugins.ALLOW_ENV, "bagplug")
    plugins.reset()
    registry = plugins.get_registry()
    info = next(p for p in registry.plugins if p.name == "bag")
    assert (info.distribution, info.version, info.error) == ("bagplug", "0.1.0", None)
    assert {kind: registry.get(kind, name).plugin for kind, name in
            [("datasets", "tsv"), ("models", "bag"), ("callbacks", "bag_killer")]} == dict.fromkeys(
        ["datasets", "models", "callbacks"], "bag")

    # Its options are validated against its own factories' signatures.
    config = load_experiment(world.exp, registry=registry).config
    assert config["data"]["text_field"] == "tweet" and config["model"] == {"use": "bag", "dim": 16, "buckets": 1024,
                                                                            "max_length": 32, "seed": 0}
    model = build(registry, "models", config["model"])
    assert isinstance(model, contracts.Model)
    loaded = model.load(LABELS)
    assert isinstance(loaded, contracts.LoadedModel) and isinstance(loaded.tokenizer, contracts.Tokenizer)
    encoded = loaded.tokenizer(["tax"], ["good plan"], truncation=True, max_length=2, padding=False)
    assert [len(ids) for ids in encoded["input_ids"]] == [2]
    assert "transformers" not in type(loaded.model).__module__


# -- 1 and 2. trains, and saves what its plugin wrote, recorded with the plugin ----------------
def test_trains_and_saves_through_the_plugin(world, trained):
    results = json.loads((trained / "results.json").read_text())
    assert results["train"]["global_step"] == 24
    assert results["final"]["accuracy"] > results["baseline"]["accuracy"]  # it learned something

    model_dir = trained / "model"
    assert {p.name for p in model_dir.iterdir()} == {"bag.safetensors", "bag_config.json", "bag_tokenizer.json",
                                                      "stancerun.json"}
    assert not [p for p in trained.rglob("*") if p.suffix in NO_PICKLES]
    from safetensors.torch import load_file

    assert set(load_file(str(model_dir / "bag.safetensors"))) == {"embed.weight", "classifier.weight", "classifier.bias"}

    saved = json.loads((model_dir / "stancerun.json").read_text())
    who = {"plugin": "bag", "distribution": "bagplug", "version": "0.1.0"}
    components = saved["components"]
    assert {k: components["model"][k] for k in ("use", *who)} == {"use": "bag", **who}
    assert {k: components["data"][k] for k in ("use", *who)} == {"use": "tsv", **who}
    assert components["adapter"]["use"] == "full" and components["adapter"]["distribution"] == "stancerun"
    assert components["model"]["options"] == {"dim": 16, "buckets": 1024, "max_length": 32, "seed": 0}
    assert components["data"]["options"]["text_field"] == "tweet"
    assert (saved["labels"], saved["text_column"], saved["text_pair_column"], saved["label_column"]) == (
        LABELS, "tweet", "target", "stance")
    env = json.loads((trained / "environment.json").read_text())
    assert {"name": "bag", "distribution": "bagplug", "version": "0.1.0", "error": None} in env["plugins"]


# -- 3. predicts in a fresh process, reproducing the run's own predictions ---------------------
def test_predict_in_a_fresh_process_reproduces_predictions(world, trained):
    # The input is headed by the dataset's column names, which the run recorded.
    source = world.root / "to_predict.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tweet", "target"])
        writer.writerows([r["text"], r["target"]] for r in world.val_rows)
    out = world.root / "out.csv"
    ok(stancerun(world, "predict", trained, "--input", source, "--output", out))

    saved, predicted = read_csv(trained / "predictions.csv"), read_csv(out)
    assert len(predicted) == len(saved) == 30  # the explicit validation split, in file order
    assert [r["label"] for r in predicted] == [r["prediction"] for r in saved]
    np.testing.assert_allclose(probabilities(predicted), probabilities(saved), atol=1e-5)


# -- 4. evaluates a .tsv file, read by the plugin's dataset --------------------------------------
def test_evaluate_reads_the_file_through_the_plugin_dataset(world, trained):
    # A TSV the built-in CSV reader would see as a single column: only the plugin reads it right.
    ok(stancerun(world, "evaluate", trained, "--data", world.root / "data" / "val.tsv"))
    (folder,) = (trained / "evaluations").iterdir()
    evaluated = json.loads((folder / "results.json").read_text())
    assert evaluated["examples"] == 30
    final = json.loads((trained / "results.json").read_text())["final"]
    # The validation split again: the run's own final scores, from the saved model.
    for key in ("accuracy", "f1_macro"):
        assert evaluated["metrics"][key] == pytest.approx(final[key], abs=1e-6)


# -- 5. resumes after SIGKILL and ends where the uninterrupted run ends --------------------------
def test_resume_after_sigkill_equals_the_uninterrupted_run(world, trained):
    run = world.root / "killed"
    done = stancerun(world, "run", world.exp, "--output-dir", run, BAGPLUG_KILL="1")
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if not p.name.startswith(".")) == ["step-10", "step-5"]
    assert not (run / "results.json").exists() and not (run / "model").exists()

    ok(stancerun(world, "resume", run))
    resumed, reference = (json.loads((d / "results.json").read_text()) for d in (run, trained))
    assert resumed["final"].keys() == reference["final"].keys()
    for key, value in reference["final"].items():
        assert resumed["final"][key] == pytest.approx(value, abs=1e-6), key
    for key in ("global_step", "best_step", "best_metric"):
        assert resumed["train"][key] == reference["train"][key]
    np.testing.assert_allclose(probabilities(read_csv(run / "predictions.csv")),
                               probabilities(read_csv(trained / "predictions.csv")), atol=1e-6)
    from safetensors.torch import load_file

    got, want = (load_file(str(d / "model" / "bag.safetensors")) for d in (run, trained))
    for name, tensor in want.items():
        np.testing.assert_allclose(got[name].numpy(), tensor.numpy(), atol=1e-6, err_msg=name)


# -- 6. export: the bag model has no export(), and the CLI says so -------------------------------
def test_export_says_this_model_cannot_be_exported(world, trained):
    out = world.root / "exported"
    done = stancerun(world, "export", trained, out)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "cannot be exported" in done.stderr and "'bag'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists() or not any(out.iterdir())


# -- 7. without the plugin, predict fails and names the distribution to install ---------------
@pytest.mark.parametrize("how", ["left out by the allow-list", "not on the path"])
def test_predict_without_the_plugin_names_its_distribution(world, trained, how):
    env = {plugins.ALLOW_ENV: ""} if how == "left out by the allow-list" else {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    done = stancerun(world, "predict", trained, "some text", "--pair", "tax", **env)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert "bagplug" in done.stderr and "Traceback" not in done.stderr
