"""The fast LoRA merge (stancerun_adapters.merge) against peft's own merge_and_unload.

Adapters are built directly with peft (no stancerun training) and given random non-zero
weights everywhere: peft initialises LoRA B to zero, and an all-zero adapter would make any
merge look right.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from stancerun_adapters.merge import MERGEABLE, merge_saved_lora, refused  # noqa: E402

TEXTS = ["the tax is good", "ban it awful", "park report monday very new", "no"]

# name -> (tiny model fixture, LoraConfig options)
CASES = {
    "bert": ("tiny_bert", dict(r=4, lora_alpha=8, target_modules=["query", "value"], modules_to_save=["classifier"])),
    # rsLoRA scales by alpha/sqrt(r) = 8, plain LoRA by alpha/r = 4: a wrong formula shows
    "bert-rslora": ("tiny_bert", dict(r=4, lora_alpha=16, use_rslora=True, target_modules=["query", "value"],
                                      modules_to_save=["classifier"])),
    "distilbert": ("tiny_distilbert", dict(r=4, lora_alpha=8, target_modules=["q_lin", "v_lin"],
                                           modules_to_save=["pre_classifier", "classifier"])),
}


def fresh_base(model_dir):
    """The base with its new head, identical on every call (fixed seed)."""
    from transformers import AutoModelForSequenceClassification

    from stancerun import quiet_loading

    torch.manual_seed(0)
    with quiet_loading():
        return AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=3).eval()


def save_random_adapter(model_dir, out, options):
    from peft import LoraConfig, TaskType, get_peft_model

    model = get_peft_model(fresh_base(model_dir), LoraConfig(task_type=TaskType.SEQ_CLS, **options))
    torch.manual_seed(1)
    with torch.no_grad():
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        for _, param in trainable:  # LoRA A/B and the modules_to_save copies
            param.copy_(torch.randn_like(param) * 0.3)
    assert any(".lora_B." in n for n, _ in trainable) and any("modules_to_save" in n for n, _ in trainable)
    model.save_pretrained(out, safe_serialization=True)
    return out


def peft_reference(model_dir, adapter_dir):
    from peft import PeftModel

    from stancerun import quiet_loading

    with quiet_loading():
        return PeftModel.from_pretrained(fresh_base(model_dir), adapter_dir).merge_and_unload().eval()


def logits(model, model_dir):
    from transformers import AutoTokenizer

    batch = AutoTokenizer.from_pretrained(model_dir)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


def assert_same_parameters(got, want, atol=1e-5):
    got, want = dict(got.named_parameters()), dict(want.named_parameters())
    assert sorted(got) == sorted(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=atol, rtol=0, msg=name)


def with_config(adapter_dir, out, **changes):
    """A copy of a saved adapter with adapter_config.json keys changed or added."""
    shutil.copytree(adapter_dir, out)
    config = json.loads((out / "adapter_config.json").read_text())
    config.update(changes)
    (out / "adapter_config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    """(base model dir, saved adapter dir), one per case, built once for the module."""
    fixture, options = CASES[request.param]
    model_dir = request.getfixturevalue(fixture)
    return model_dir, save_random_adapter(model_dir, tmp_path_factory.mktemp(request.param) / "adapter", options)


def test_fast_merge_equals_peft_merge_and_unload(case):
    model_dir, adapter_dir = case
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    # Fails when the installed peft writes a key MERGEABLE does not list: review MERGEABLE then.
    assert refused(config) == [], f"review MERGEABLE for peft's new adapter_config keys: {refused(config)}"
    reference = peft_reference(model_dir, adapter_dir)
    fast = fresh_base(model_dir)
    assert merge_saved_lora(fast, adapter_dir) is True
    torch.testing.assert_close(logits(fast, model_dir), logits(reference, model_dir), atol=1e-5, rtol=0)
    assert_same_parameters(fast, reference)
    # not vacuous: the adapter did change the model's output
    assert not torch.allclose(logits(fast, model_dir), logits(fresh_base(model_dir), model_dir), atol=1e-3)


@pytest.mark.parametrize("key, value", [("some_future_option", True), ("use_dora", True),
                                        ("rank_pattern", {"query": 8})])
def test_an_unknown_or_unsupported_option_refuses_and_leaves_the_model_alone(case, tmp_path, key, value):
    model_dir, adapter_dir = case
    changed = with_config(adapter_dir, tmp_path / "changed", **{key: value})
    assert key == "some_future_option" or key in MERGEABLE  # the known variants are listed, but only when off
    assert refused(json.loads((changed / "adapter_config.json").read_text())) == [key]
    model = fresh_base(model_dir)
    assert merge_saved_lora(model, changed) is False
    assert_same_parameters(model, fresh_base(model_dir), atol=0)


@pytest.mark.filterwarnings("ignore:Unexpected keyword arguments:UserWarning")  # peft on the unknown key: expected
def test_lora_restore_gives_a_plain_model_on_both_paths(tiny_bert, tmp_path):
    import peft
    from transformers import AutoTokenizer, PreTrainedModel

    import stancerun_adapters
    from stancerun.contracts import LoadedModel

    adapter_dir = save_random_adapter(tiny_bert, tmp_path / "adapter", CASES["bert"][1])
    # peft 0.21 ignores adapter_config keys it does not know, so the fallback can load this one
    future = with_config(adapter_dir, tmp_path / "future", some_future_option=True)
    want = logits(peft_reference(tiny_bert, adapter_dir), tiny_bert)
    adapter = stancerun_adapters.lora(r=4, alpha=8)
    for directory in (adapter_dir, future):  # the fast merge, then the peft fallback
        loaded = LoadedModel(model=fresh_base(tiny_bert), tokenizer=AutoTokenizer.from_pretrained(tiny_bert),
                             max_length=32, source=str(directory))
        model = adapter.restore(loaded, directory)
        assert isinstance(model, PreTrainedModel) and not isinstance(model, peft.PeftModel), type(model)
        assert not any("lora_" in n or "modules_to_save" in n for n, _ in model.named_parameters())
        torch.testing.assert_close(logits(model.eval(), tiny_bert), want, atol=1e-5, rtol=0, msg=str(directory))


def test_lora_restore_of_a_plain_adapter_does_not_import_peft(tiny_bert, tmp_path):
    adapter_dir = save_random_adapter(tiny_bert, tmp_path / "adapter", CASES["bert"][1])
    want = logits(peft_reference(tiny_bert, adapter_dir), tiny_bert)
    # a fresh process, as `stancerun predict` is: peft takes seconds to import
    probe = f"""
import json, sys, torch
import stancerun_adapters
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from stancerun.contracts import LoadedModel
torch.manual_seed(0)
base = AutoModelForSequenceClassification.from_pretrained({str(tiny_bert)!r}, num_labels=3).eval()
tokenizer = AutoTokenizer.from_pretrained({str(tiny_bert)!r})
loaded = LoadedModel(model=base, tokenizer=tokenizer, max_length=32, source={str(adapter_dir)!r})
model = stancerun_adapters.lora(r=4, alpha=8).restore(loaded, {str(adapter_dir)!r})
with torch.no_grad():
    out = model(**tokenizer({TEXTS!r}, padding=True, return_tensors="pt")).logits
print(json.dumps({{"peft": "peft" in sys.modules, "logits": out.tolist()}}))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["peft"] is False
    torch.testing.assert_close(torch.tensor(result["logits"]), want, atol=1e-5, rtol=0)
