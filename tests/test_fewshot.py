"""The few-shot method: the ``sentence`` model and the ``contrastive`` adapter, through the real
loading code on a tiny encoder made on the fly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import stance_rows, write_csv

from stancerun.cli.main import main
from stancerun.config.experiment import load_experiment
from stancerun.engine.run import run_experiment


def fewshot_experiment(tmp_path, model_dir, extra: str = "", adapter: str = "contrastive") -> object:
    write_csv(tmp_path / "data" / "train.csv", stance_rows(24, seed=1))
    write_csv(tmp_path / "data" / "validation.csv", stance_rows(12, seed=2))
    write_csv(tmp_path / "data" / "test.csv", stance_rows(15, seed=3))
    adapter_table = {"contrastive": 'use = "contrastive"\nsteps = 4\nbatch_size = 8\nlearning_rate = 1e-3\n',
                     "full": 'use = "full"\n'}[adapter]
    path = tmp_path / "fewshot.toml"
    path.write_text(f"""
name = "fewshot"
seed = 3
output_dir = "runs"

[data]
use = "csv"
train = "data/train.csv"
validation = "data/validation.csv"
test = "data/test.csv"
text_pair_column = "target"
labels = ["support", "neutral", "oppose"]

[model]
use = "sentence"
name = "{model_dir}"
max_length = 32

[adapter]
{adapter_table}

[training]
num_train_epochs = 2
per_device_train_batch_size = 8
learning_rate = 1e-3
eval_strategy = "epoch"
save_strategy = "epoch"
metric_for_best_model = "f1_macro"

[evaluation]
baselines = ["majority"]
bootstrap_resamples = 0
plots = false
{extra}

[[metrics]]
use = "f1"
average = "macro"
""")
    return path


def reference_supcon(z: torch.Tensor, labels: list[int], temperature: float) -> float:
    """Khosla et al.'s L_out written as the paper's sums, one anchor and one positive at a time."""
    z = torch.nn.functional.normalize(z, dim=-1)
    total, anchors = 0.0, 0
    for i in range(len(labels)):
        positives = [p for p in range(len(labels)) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(torch.exp(z[i] @ z[a] / temperature) for a in range(len(labels)) if a != i)
        total += -sum(torch.log(torch.exp(z[i] @ z[p] / temperature) / denominator) for p in positives) / len(positives)
        anchors += 1
    return float(total / anchors)


def test_supervised_contrastive_loss_matches_the_papers_sums():
    from stancerun_fewshot import supervised_contrastive_loss

    torch.manual_seed(0)
    z = torch.randn(9, 5)
    labels = [0, 0, 1, 1, 1, 2, 0, 2, 3]  # label 3 has no partner: not an anchor
    got = supervised_contrastive_loss(torch.nn.functional.normalize(z, dim=-1), torch.tensor(labels), 0.3)
    assert float(got) == pytest.approx(reference_supcon(z, labels, 0.3), rel=1e-5)


def test_a_fewshot_run_predicts_reloads_and_exports_for_sentence_transformers(tmp_path, tiny_bert):
    from sentence_transformers import SentenceTransformer

    from stancerun.inference.predict import predict

    run = run_experiment(load_experiment(fewshot_experiment(tmp_path, tiny_bert, "calibrate = true\n")),
                         output_dir=str(tmp_path / "run"))
    results = json.loads((run / "results.json").read_text())
    assert results["model"]["adapter"] == "contrastive" and "test" in results
    info = json.loads((run / "model" / "stancerun.json").read_text())
    assert info["components"]["model"]["use"] == "sentence" and info["weights"] == "model"
    assert not list(run.rglob("*.bin")) and not list(run.rglob("*.pt")), "safetensors only"

    texts, pairs = ["good fair plan", "awful harmful", "the table report"], ["tax", "ban", "park"]
    expected = predict(run, texts, pairs, 8)
    for want, got in zip(expected, predict(run, texts, pairs, 2)):  # padding changes nothing but rounding
        assert want["label"] == got["label"]
        np.testing.assert_allclose(list(want["probabilities"].values()), list(got["probabilities"].values()), atol=1e-5)

    out = tmp_path / "exported"
    assert main(["export", str(run), str(out)]) == 0
    card = (out / "README.md").read_text()
    assert "library_name: sentence-transformers" in card and "SentenceTransformer(\"PATH\")" in card
    # The documented call, with no stancerun code: the sentence is "target: text", as the model read it.
    model = SentenceTransformer(str(out), device="cpu")
    labels = json.loads((out / "stancerun_labels.json").read_text())
    assert labels == info["labels"]
    probabilities = model.encode([f"{p}: {t}" for p, t in zip(pairs, texts)], convert_to_tensor=True).softmax(-1)
    for want, got in zip(expected, probabilities.tolist()):
        np.testing.assert_allclose(got, [want["probabilities"][k] for k in labels], atol=1e-4)


def test_a_refitted_fewshot_run_ships_the_second_pass(tmp_path, tiny_bert, capsys):
    # The recipe's refit: the contrastive phase and the loop run again on train + validation, and the
    # saved model (rebuilt through the sentence model's restore) is the one that scored the test split.
    overrides = ["training.refit_on_validation=true", "training.load_best_model_at_end=false"]
    run = run_experiment(load_experiment(fewshot_experiment(tmp_path, tiny_bert), overrides),
                         output_dir=str(tmp_path / "run"))
    results = json.loads((run / "results.json").read_text())
    assert results["train"]["refit"]["train_samples"] == 24 + 12 and results["train"]["refit"]["epochs"] == 2
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(tmp_path / "data" / "test.csv")]) == 0
    evaluated = json.loads((next((run / "evaluations").iterdir()) / "results.json").read_text())
    assert evaluated["metrics"]["f1_macro"] == pytest.approx(results["test"]["f1_macro"], abs=1e-6)


def test_the_contrastive_phase_trains_the_encoder_and_fits_the_head(tmp_path, tiny_bert):
    from stancerun.components.assembly import build_components
    from stancerun.registry.discovery import get_registry

    experiment = load_experiment(fewshot_experiment(tmp_path, tiny_bert))
    components = build_components(experiment, get_registry())
    model, train = components.model, components.splits.train
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    batches = []
    handle = model.encoder.register_forward_pre_hook(lambda _, args: batches.append(len(args[0]["input_ids"])))
    components.adapter.prepare(model, train, components.splits.labels, torch.device("cpu"))
    handle.remove()

    # Bounded and lazy: 4 steps of 8 examples seen twice (two dropout views), then one pass to fit the head.
    assert batches[:4] == [16, 16, 16, 16] and sum(batches[4:]) == len(train)
    assert any(not torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    from stancerun.data.batching import Collator, encode_examples, model_inputs

    encoded = encode_examples(components.loaded.tokenizer, train, components.loaded.max_length)
    model.eval()
    with torch.no_grad():
        logits = model(**model_inputs(Collator(encoded, 0)(list(range(len(train)))))).logits
    # The head is the logistic regression fitted on the training embeddings: it fits them.
    assert (logits.argmax(-1).numpy() == np.array(train.labels)).mean() >= 0.8
    # ... and it is scikit-learn's own, with head_C weighing the mean loss: C = head_C / examples.
    from sklearn.linear_model import LogisticRegression

    with torch.no_grad():
        features = model.embed(**model_inputs(Collator(encoded, 0)(list(range(len(train)))))).double().numpy()
    reference = LogisticRegression(C=components.adapter.head_C / len(train), max_iter=2000).fit(features, train.labels)
    assert len(reference.classes_) == 3
    np.testing.assert_allclose(model.classifier.weight.detach().double().numpy(), reference.coef_, atol=1e-4)
    np.testing.assert_allclose(model.classifier.bias.detach().double().numpy(), reference.intercept_, atol=1e-4)


def test_pairs_are_read_as_one_sentence(tiny_bert):
    from stancerun_fewshot import sentence

    loaded = sentence(name=str(tiny_bert), max_length=32).load(["a", "b"])
    joined = loaded.tokenizer(["tax"], ["good plan"], truncation=True, max_length=32, padding=False)
    alone = loaded.tokenizer(["tax: good plan"], truncation=True, max_length=32, padding=False)
    assert joined["input_ids"] == alone["input_ids"]


def test_contrastive_needs_a_sentence_model(tmp_path, tiny_bert, capsys):
    path = fewshot_experiment(tmp_path, tiny_bert)
    path.write_text(path.read_text().replace('use = "sentence"', 'use = "hf"'))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "adapter 'contrastive' needs" in err and 'use = "sentence"' in err and "Traceback" not in err
