"""The kinds of plugin component, each stated once: the hook that registers it, the noun that
names it in messages, where an experiment writes it, and what the core asks of it.

Every other table of kinds derives from this one (``hookspecs.KINDS``, ``registry.table.NOUNS``,
``contracts.REQUIRED``, ``config.schema.COMPONENT_SECTIONS``, ``components.assembly.SAVED``),
so a new kind is one row here plus its hook and its contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Kind:
    name: str  # plural, as the registry and the hook say it: "metrics"
    noun: str  # singular, for messages: "unknown metric 'acuracy'"
    section: str  # where an experiment names it: a top-level table, or a dotted key inside one
    many: bool  # a list of tables ([[metrics]]) or a single table ([model])
    default: Any  # what the section holds when the experiment leaves it out (None: it is required)
    required: tuple[str, ...]  # the methods every object of this kind must have (stancerun.contracts)
    saved: bool = False  # recorded in model/stancerun.json, so a saved run is rebuilt through it

    @property
    def hook(self) -> str:
        """The hook that registers this kind's factories (stancerun.hookspecs)."""
        return f"stancerun_register_{self.name}"


KINDS = (
    Kind("datasets", "dataset", "data", False, None, ("load",), saved=True),
    Kind("models", "model", "model", False, {"use": "hf"}, ("load", "save", "restore", "rebuild_options"), saved=True),
    Kind("adapters", "adapter", "adapter", False, {"use": "lora"}, ("apply",), saved=True),
    Kind("metrics", "metric", "metrics", True, [{"use": "accuracy"}], ("__call__",)),
    Kind("callbacks", "callback", "callbacks", True, [], ()),
    # Named in [evaluation] baselines, each a name or a table: per-target majority, TF-IDF + logistic
    # regression, SemEval's n-gram SVM (built-in plugin stancerun_baselines) unless it says otherwise.
    Kind("baselines", "baseline", "evaluation.baselines", True, ["majority", "tfidf", "ngram_svm"], ("fit", "predict")),
)

BY_NAME = {kind.name: kind for kind in KINDS}
