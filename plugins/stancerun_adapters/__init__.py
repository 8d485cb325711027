"""Built-in adapters: ``lora`` (peft), ``full`` (every weight trains), ``frozen`` (the head only).

Each keeps :class:`stancerun.Adapter`: ``apply(loaded)`` returns the model to train.
``lora`` keeps weights of its own, so it also saves them and restores them over a fresh base;
``full`` and ``frozen`` leave saving the whole model to the model plugin.
"""

from __future__ import annotations

from typing import Annotated, Literal

import stancerun
from stancerun import Range, quiet_loading

#: Head layer names of common architectures, used when loading reported no new layers.
HEAD_NAMES = ("classifier", "pre_classifier", "score", "classification_head")


def head_modules(loaded) -> list[str]:
    """Newly initialised layers, or else the architecture's usual head layers."""
    if loaded.new_modules:
        return list(loaded.new_modules)
    names = {name for name, _ in loaded.model.named_modules()}
    return sorted({n for n in names if n.split(".")[-1] in HEAD_NAMES})


#: Attention projections LoRA targets by default, per model_type (query/value, as in the LoRA
#: paper); peft's own table is the fallback, and lacks some encoders (DistilBERT among them).
DEFAULT_TARGETS = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "electra": ["query", "value"],
    "albert": ["query", "value"],
    "camembert": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "mpnet": ["q", "v"],
    "deberta": ["in_proj"],
    "deberta-v2": ["query_proj", "value_proj"],
    "modernbert": ["Wqkv"],
}


def default_targets(model) -> list[str]:
    model_type = getattr(model.config, "model_type", None)
    if model_type in DEFAULT_TARGETS:
        return DEFAULT_TARGETS[model_type]
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    if model_type in PEFT_DEFAULTS:
        return list(PEFT_DEFAULTS[model_type])
    raise ValueError(f"lora: no default target_modules for model type '{model_type}'; set adapter.target_modules "
                     "to the names of its attention projections")


class LoRA:
    kind = "lora"

    def __init__(self, r, alpha, dropout, target_modules, bias, modules_to_save, use_rslora):
        self.r, self.alpha, self.dropout = r, alpha, dropout
        self.target_modules, self.bias = target_modules, bias
        self.modules_to_save, self.use_rslora = modules_to_save, use_rslora

    def apply(self, loaded):
        from peft import LoraConfig, TaskType, get_peft_model

        # Every newly initialised layer must travel with the adapter, or a reloaded model
        # gets fresh random weights there and predicts differently.
        save = sorted(set(head_modules(loaded)) | set(self.modules_to_save or ()))
        config = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules or default_targets(loaded.model),
            bias=self.bias,
            modules_to_save=save,
            use_rslora=self.use_rslora,
        )
        with quiet_loading():
            return get_peft_model(loaded.model, config)

    def save(self, model, directory, state_dict=None):
        """The adapter and the head layers (safetensors), loadable by plain peft code."""
        model.save_pretrained(directory, state_dict=state_dict, safe_serialization=True)

    def restore(self, loaded, directory):
        """The base with the saved adapter merged into its weights: a plain model again."""
        from stancerun_adapters.merge import merge_saved_lora

        if merge_saved_lora(loaded.model, directory):
            return loaded.model
        from peft import PeftModel

        with quiet_loading():
            # the head comes back from modules_to_save; peft's own merge folds the rest in
            return PeftModel.from_pretrained(loaded.model, directory).merge_and_unload()


class Full:
    kind = "full"

    def apply(self, loaded):
        for param in loaded.model.parameters():
            param.requires_grad = True
        return loaded.model


class Frozen:
    kind = "frozen"

    def apply(self, loaded):
        head = head_modules(loaded)
        if not head:
            raise ValueError("frozen: found no classification head to train")
        for name, param in loaded.model.named_parameters():
            param.requires_grad = any(name == h or name.startswith(h + ".") for h in head)
        return loaded.model


def lora(*, r: Annotated[int, Range(ge=1)] = 8, alpha: Annotated[float, Range(gt=0)] = 16,
         dropout: Annotated[float, Range(ge=0, lt=1)] = 0.1, target_modules: list[str] | None = None,
         bias: Literal["none", "all", "lora_only"] = "none", modules_to_save: list[str] | None = None,
         use_rslora: bool = False):
    """Low-rank adapters (peft) on ``target_modules`` (default: peft's choice for the
    architecture, e.g. query/value for BERT); the new head layers train fully and are saved
    with the adapter."""
    return LoRA(r, alpha, dropout, target_modules, bias, modules_to_save, use_rslora)


def full():
    """Fine-tune every weight."""
    return Full()


def frozen():
    """Freeze the encoder; train only the classification head."""
    return Frozen()


@stancerun.hookimpl
def stancerun_register_adapters(register):
    register("lora", lora)
    register("full", full)
    register("frozen", frozen)
