"""A fast LoRA merge for inference: W += scale * B @ A from a saved adapter, without importing peft.

peft takes about two seconds to import, which is most of `stancerun predict`'s start-up on a
small model. This merge handles plain LoRA on linear layers only, and it decides by an
allow-list: every key of adapter_config.json must be listed in :data:`MERGEABLE` with a value
its check accepts. Anything else (DoRA, per-layer ranks, an option a newer peft adds) returns
False and the caller loads the adapter with peft. tests/test_lora_merge.py compares this with
peft's ``merge_and_unload`` and checks that the fast path is taken for the installed peft.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def _any(value) -> bool:
    return True


def _off(value) -> bool:
    """Unset: None, False or empty."""
    return value is None or value is False or value == {} or value == []


#: adapter_config.json key -> whether the fast merge gives peft's result with that value.
MERGEABLE = {
    "peft_type": lambda v: v == "LORA",
    "r": lambda v: isinstance(v, int) and v > 0,
    "lora_alpha": lambda v: isinstance(v, (int, float)) and v > 0,
    "use_rslora": lambda v: isinstance(v, bool),
    "bias": lambda v: v == "none",
    "fan_in_fan_out": lambda v: v is False,
    # Which modules carry LoRA or are saved whole shows in the weights file itself.
    "target_modules": _any,
    "modules_to_save": _any,
    # Training-time or bookkeeping settings: no effect on the saved weights' meaning.
    "lora_dropout": _any,
    "init_lora_weights": _any,
    "inference_mode": _any,
    "task_type": _any,
    "base_model_name_or_path": _any,
    "revision": _any,
    "auto_mapping": _any,
    "peft_version": _any,
    "megatron_core": _any,  # a module name, used only with megatron_config
    "qalora_group_size": _any,  # used only with use_qalora
    # Variants the fast merge does not implement: merged only when off.
    "use_dora": _off,
    "lora_bias": _off,
    "rank_pattern": _off,
    "alpha_pattern": _off,
    "layer_replication": _off,
    "layers_to_transform": _off,
    "layers_pattern": _off,
    "exclude_modules": _off,
    "loftq_config": _off,
    "eva_config": _off,
    "corda_config": _off,
    "megatron_config": _off,
    "use_qalora": _off,
    "target_parameters": _off,
    "trainable_token_indices": _off,
    "alora_invocation_tokens": _off,
    "arrow_config": _off,
    "ensure_weight_tying": _off,
    "kasa_config": _off,
    "lora_ga_config": _off,
    "monteclora_config": _off,
    "velora_config": _off,
    "use_bdlora": _off,
}


def refused(config: dict) -> list[str]:
    """The adapter_config.json keys that keep the fast merge off (unknown keys included)."""
    return sorted(key for key, value in config.items() if not MERGEABLE.get(key, lambda v: False)(value))


def merge_saved_lora(model, model_dir: Path) -> bool:
    """Add a saved LoRA adapter into ``model``'s weights and put its saved head layers in place;
    False (``model`` untouched) when the adapter is not one this merge handles."""
    import torch
    from safetensors.torch import load_file

    config = json.loads((Path(model_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    weights_file = Path(model_dir) / "adapter_model.safetensors"
    if refused(config) or not weights_file.is_file():
        return False
    r = config["r"]
    scale = config["lora_alpha"] / (math.sqrt(r) if config.get("use_rslora") else r)
    weights = {k.removeprefix("base_model.model."): v for k, v in load_file(str(weights_file)).items()}
    params = dict(model.named_parameters())
    updates = {}
    for key, value in weights.items():
        if key.endswith(".lora_A.weight"):
            module = key.removesuffix(".lora_A.weight")
            b = weights.get(f"{module}.lora_B.weight")
            if b is None or f"{module}.weight" not in params:
                return False
            updates[f"{module}.weight"] = ("add", scale * (b.float() @ value.float()))
        elif key.endswith(".lora_B.weight"):
            continue
        elif key in params:
            updates[key] = ("set", value)  # a head layer saved whole (modules_to_save)
        else:
            return False
    with torch.no_grad():
        for name, (how, value) in updates.items():
            target = params[name]
            if how == "add":
                target.add_(value.to(target.dtype))
            else:
                target.copy_(value.to(target.dtype))
    return True
