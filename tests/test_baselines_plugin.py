"""The built-in baselines plugin (plugins/stancerun_baselines): majority, tfidf and ngram_svm
on synthetic data, their save/restore round trip (safetensors and JSON only), and their
registration through the real entry point. No torch needed."""

from __future__ import annotations

import random
import re
import subprocess
import sys

import numpy as np
import pytest
import stancerun_baselines as baselines

from stancerun.data.rows import Examples

LABELS = ["against", "none", "favor"]
AGAINST, NONE, FAVOR = 0, 1, 2
FILLER = ["the", "a", "this", "plan", "policy", "it", "is", "was", "very", "really", "about", "our", "new", "city"]
ODD_TARGET = "a/b: ünï || ..\\ \n*?"  # a target that would make a bad file name


def examples(rows: list[tuple[str, int, str | None]]) -> Examples:
    pairs = [p for _, _, p in rows]
    return Examples([t for t, _, _ in rows], [label for _, label, _ in rows], None if pairs[0] is None else pairs)


def sentence(rng: random.Random, word: str) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(1, 5))]
    words.insert(rng.randint(0, len(words)), word)
    return " ".join(words)


WORDS = {FAVOR: "great", AGAINST: "awful", NONE: "tuesday"}


def toy(n: int, seed: int, targets=("tax", "ban"), flip: str | None = None) -> Examples:
    """'great' -> favor, 'awful' -> against, 'tuesday' -> none, for every target (for the
    target ``flip``, favor and against swap: only a model per target can learn both)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = (AGAINST, NONE, FAVOR)[i % 3]
        target = targets[(i // 3) % len(targets)]
        word = WORDS[label]
        if target == flip and label != NONE:
            label = FAVOR if label == AGAINST else AGAINST
        rows.append((sentence(rng, word), label, target))
    return examples(rows)


def fitted(name: str, train: Examples, labels=LABELS, **options):
    baseline = getattr(baselines, name)(**options)
    baseline.fit(train, labels)
    return baseline


# -- majority -------------------------------------------------------------------------------
def test_majority_counts_per_target_and_falls_back_to_the_global_majority():
    train = examples([("x", FAVOR, "tax")] * 3 + [("x", AGAINST, "tax")] + [("x", AGAINST, "ban")] * 3
                     + [("x", NONE, "ban")] + [("x", AGAINST, "park")])
    model = fitted("majority", train)
    test = examples([("y", NONE, "tax"), ("y", NONE, "ban"), ("y", NONE, "park"), ("y", NONE, "never seen")])
    scores = model.predict(test)
    assert scores.dtype == np.float32 and scores.shape == (4, 3)
    assert scores.argmax(1).tolist() == [FAVOR, AGAINST, AGAINST, AGAINST]  # unseen: global (5 against, 3 favor)
    # honest log-probabilities: the training frequencies of the target
    assert np.allclose(np.exp(scores).sum(1), 1.0, atol=1e-5)
    assert np.exp(scores[0]) == pytest.approx([0.25, 0.0, 0.75], abs=1e-3)
    # without pairs at predict time, or fitted without them: the global majority
    assert model.predict(Examples(["y", "z"], [0, 0])).argmax(1).tolist() == [AGAINST, AGAINST]
    plain = fitted("majority", Examples(train.texts, train.labels))
    assert plain.predict(test).argmax(1).tolist() == [AGAINST] * 4


def test_majority_ties_go_to_the_lowest_label_id():
    train = examples([("x", FAVOR, "tax"), ("x", AGAINST, "tax"), ("x", FAVOR, "ban"), ("x", NONE, "ban"),
                      ("x", AGAINST, "park"), ("x", NONE, "park")])
    model = fitted("majority", train)
    test = examples([("y", 0, t) for t in ("tax", "ban", "park", "unseen")])
    # global counts: against 2, none 2, favor 2 -> against
    assert model.predict(test).argmax(1).tolist() == [AGAINST, NONE, AGAINST, AGAINST]


# -- tfidf and ngram_svm --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tfidf", "ngram_svm"])
@pytest.mark.parametrize("per_target", [True, False])
def test_learns_a_separable_toy_set(name, per_target):
    options = {"per_target": per_target} if name == "ngram_svm" else {}
    model = fitted(name, toy(60, seed=1), **options)
    test = toy(30, seed=2)
    scores = model.predict(test)
    assert scores.dtype == np.float32 and scores.shape == (30, 3)
    assert scores.argmax(1).tolist() == test.labels
    if name == "tfidf":  # log-probabilities
        assert np.allclose(np.exp(scores).sum(1), 1.0, atol=1e-4)


def test_ngram_svm_fits_one_model_per_target():
    train, test = toy(90, seed=3, flip="ban"), toy(30, seed=4, flip="ban")
    per_target = fitted("ngram_svm", train)
    assert per_target.predict(test).argmax(1).tolist() == test.labels
    assert sorted(per_target.targets) == ["ban", "tax"]


def test_ngram_svm_with_two_labels():
    rng = random.Random(5)
    rows = [(sentence(rng, "great" if i % 2 else "awful"), i % 2, ("tax", "ban")[i % 4 // 2]) for i in range(40)]
    model = fitted("ngram_svm", examples(rows), labels=["against", "favor"])
    test = examples([("what a great plan", 1, "tax"), ("awful", 0, "ban"), ("great great", 1, "unseen")])
    scores = model.predict(test)
    assert scores.shape == (3, 2) and scores.argmax(1).tolist() == [1, 0, 1]
    assert np.allclose(scores[:, 0], -scores[:, 1])  # one margin, two columns


def test_ngram_svm_labels_missing_from_a_target():
    rows = [("great plan", FAVOR, "solo"), ("really great", FAVOR, "solo"),  # one training label
            ("great", FAVOR, "duo"), ("awful", AGAINST, "duo"), ("very great", FAVOR, "duo"), ("so awful", AGAINST, "duo")]
    model = fitted("ngram_svm", examples(rows))
    scores = model.predict(examples([("awful awful", AGAINST, "solo"), ("great", FAVOR, "duo"), ("awful", AGAINST, "duo")]))
    assert scores[0].tolist() == [baselines.ABSENT_MARGIN, baselines.ABSENT_MARGIN, 0.0]
    assert (scores[1:, NONE] == baselines.ABSENT_MARGIN).all()  # never seen for "duo"
    assert scores.argmax(1).tolist() == [FAVOR, FAVOR, AGAINST]


def test_tfidf_and_ngram_svm_score_like_scikit_learn():
    """The weights are applied by hand (so that restore needs no pickle): same numbers."""
    import scipy.sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    train, test = toy(60, seed=6), toy(15, seed=7)
    joined = [f"{p} || {t}" for p, t in zip(train.pairs, train.texts)]
    test_joined = [f"{p} || {t}" for p, t in zip(test.pairs, test.texts)]

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    lr = LogisticRegression(max_iter=2000, C=10.0, class_weight="balanced", random_state=0)
    lr.fit(vectorizer.fit_transform(joined), train.labels)
    expected = lr.predict_proba(vectorizer.transform(test_joined))
    assert np.allclose(np.exp(fitted("tfidf", train).predict(test)), expected, atol=1e-5)

    word = TfidfVectorizer(ngram_range=(1, 3), sublinear_tf=True)
    char = TfidfVectorizer(analyzer="char", ngram_range=(2, 5), sublinear_tf=True)
    svm = LinearSVC(C=1.0, random_state=0)
    svm.fit(scipy.sparse.hstack([word.fit_transform(joined), char.fit_transform(joined)]).tocsr(), train.labels)
    expected = svm.decision_function(scipy.sparse.hstack([word.transform(test_joined), char.transform(test_joined)]))
    assert np.allclose(fitted("ngram_svm", train, per_target=False).predict(test), expected, atol=1e-5)


# -- save and restore -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["majority", "tfidf", "ngram_svm"])
def test_save_restore_gives_the_same_scores(name, tmp_path):
    train = toy(60, seed=8, targets=("tax", ODD_TARGET, "ban"))
    train = Examples(train.texts + ["great"], train.labels + [FAVOR], train.pairs + ["solo"])
    model = fitted(name, train)
    test = toy(30, seed=9, targets=("tax", ODD_TARGET, "never seen", "solo"))
    before = model.predict(test)
    model.save(tmp_path / "saved")

    files = [p for p in (tmp_path / "saved").rglob("*") if p.is_file()]
    assert files and all(p.suffix in (".json", ".safetensors") for p in files), files
    assert all(re.fullmatch(r"[A-Za-z0-9_.]+", p.name) for p in files), files  # targets are indexed
    assert not [p for p in files if p.suffix in (".pkl", ".pickle", ".joblib")]
    for path in files:
        assert not path.read_bytes().startswith(b"\x80"), f"{path} looks like a pickle"

    fresh = getattr(baselines, name)()
    fresh.restore(tmp_path / "saved", LABELS)
    after = fresh.predict(test)
    assert after.dtype == np.float32 and after.shape == before.shape
    assert np.allclose(after, before, atol=1e-5)
    # an unseen target after restore: the model over every target
    unseen = examples([("great", FAVOR, "brand new"), ("awful", AGAINST, "brand new")])
    assert np.allclose(fresh.predict(unseen), model.predict(unseen), atol=1e-5)
    if name != "majority":
        assert fresh.predict(unseen).argmax(1).tolist() == [FAVOR, AGAINST]

    with pytest.raises(ValueError, match="labels"):
        getattr(baselines, name)().restore(tmp_path / "saved", ["favor", "against"])


def test_predict_before_fit_says_so():
    for name in ("majority", "tfidf", "ngram_svm"):
        with pytest.raises(RuntimeError, match="fit or restore"):
            getattr(baselines, name)().predict(Examples(["x"], [0]))


# -- registration ---------------------------------------------------------------------------
def test_registered_through_the_entry_point(builtin_registry):
    from stancerun.config.experiment import build, options_schema

    components = builtin_registry.components["baselines"]
    assert {"majority", "tfidf", "ngram_svm"} <= set(components)
    assert {components[n].plugin for n in ("majority", "tfidf", "ngram_svm")} == {"baselines"}
    assert builtin_registry.plugin("baselines").distribution == "stancerun"
    schema, extra = options_schema(components["ngram_svm"].factory)
    assert not extra and schema == {"C": (float, 1.0), "per_target": (bool, True)}
    assert options_schema(components["tfidf"].factory)[0] == {"C": (float, 10.0)}
    assert options_schema(components["majority"].factory)[0] == {}
    svm = build(builtin_registry, "baselines", {"use": "ngram_svm", "C": 0.5, "per_target": False})
    assert (svm.C, svm.per_target) == (0.5, False)


def test_importing_the_plugin_stays_cheap():
    code = "import sys, stancerun_baselines; print(sorted(m for m in ('sklearn', 'scipy', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- embedding probe ------------------------------------------------------------------------
def test_embedding_probe_learns_from_frozen_embeddings_and_round_trips(tiny_bert, tmp_path):
    """Through sentence-transformers on the tiny model (mean pooling: it has no pooling config)."""
    train = toy(90, seed=10, targets=("tax", ODD_TARGET))
    probe = fitted("embedding_probe", train, model=str(tiny_bert), C=100.0)
    scores = probe.predict(train)
    assert scores.shape == (90, 3) and scores.dtype == np.float32
    assert np.allclose(np.exp(scores).sum(axis=1), 1, atol=1e-4)  # log-probabilities
    assert (scores.argmax(1) == np.asarray(train.labels)).mean() > 0.6  # the words tell the label
    assert set(probe.targets) == {"tax", ODD_TARGET}
    probe.save(tmp_path / "probe")
    assert sorted(p.name for p in (tmp_path / "probe").iterdir()) == ["baseline.json", "probe.safetensors"]
    fresh = baselines.embedding_probe(model=str(tiny_bert), C=100.0)
    fresh.restore(tmp_path / "probe", LABELS)
    test = toy(12, seed=11, targets=("tax", "never seen"))
    assert np.allclose(fresh.predict(test), probe.predict(test), atol=1e-5)


def test_embedding_probe_reads_the_pair_as_one_sentence_and_chooses_C_by_cross_validation(tiny_bert, tmp_path):
    """As the few-shot recipe stacks it: one regression over "target: text", C chosen by cross-validated
    log-loss (tested against scikit-learn's own cross-validation), kept through save and restore."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    train = toy(60, seed=12, targets=("tax", "ban"))
    probe = fitted("embedding_probe", train, model=str(tiny_bert), pair_format="{pair}: {text}",
                   choose_C=[0.01, 1.0, 100.0])
    assert probe.targets == {}  # one regression: the pair is part of what it reads
    features = probe._encode([f"{p}: {t}" for p, t in zip(train.pairs, train.texts)])
    split = StratifiedKFold(4, shuffle=True, random_state=0)
    losses = {C: -cross_val_score(LogisticRegression(C=C, max_iter=3000), features, train.labels, cv=split,
                                  scoring="neg_log_loss").mean() for C in (0.01, 1.0, 100.0)}
    assert probe.fitted_C == {"overall": min(losses, key=losses.get)}
    reading_pairs = probe.predict(train)
    probe.save(tmp_path / "probe")
    fresh = baselines.embedding_probe(model=str(tiny_bert))  # options not given again: the folder says how it reads
    fresh.restore(tmp_path / "probe", LABELS)
    assert np.allclose(fresh.predict(train), reading_pairs, atol=1e-5)
    with pytest.raises(ValueError, match="pair_format"):
        baselines.embedding_probe(pair_format="{text}")
    with pytest.raises(ValueError, match="choose_C"):
        baselines.embedding_probe(choose_C=[])
