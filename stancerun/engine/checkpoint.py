"""Training checkpoints that `stancerun resume` continues from, exactly.

A checkpoint holds everything that changes during training, in safetensors and JSON only
(nothing is unpickled on resume): the trainable weights, the optimizer's moments, the best
weights so far, the RNG states, and the loop's position and bookkeeping. It is written under
a temporary name and renamed, so a checkpoint is complete or absent. Its state file, written last,
records each file's sha256: resume checks them and falls back to the newest intact checkpoint
(a disk that fills, a copy cut short or a bit flip after the rename is caught there).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from stancerun.rundir import artifacts
from stancerun.rundir.layout import CHECKPOINTS
from stancerun.errors import UsageError

STATE = "trainer_state.json"
#: Layout of a checkpoint; 2 keeps every process's RNG state and the number of metrics.jsonl lines.
FORMAT = 2


def gather_trainable(accelerator, model, names: list[str]) -> dict[str, torch.Tensor]:
    """The trainable weights, whole, on the CPU. Accelerate's ``get_state_dict`` gathers them
    where DeepSpeed ZeRO-3 or FSDP shard them, so every process must call this; the gathered
    copy is complete on the main process (the one that writes files)."""
    state = accelerator.get_state_dict(model)
    return {n: state[n].detach().to("cpu").contiguous().clone() for n in names if n in state}


def sharded(accelerator) -> bool:
    """FSDP: parameters are DTensor shards, which torch's distributed state-dict functions
    gather and scatter (Accelerate's own FSDP saving uses them too)."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def load_trainable(accelerator, model, tensors: dict[str, torch.Tensor]) -> None:
    """Put saved trainable weights back into a (prepared) model; every process calls this."""
    if sharded(accelerator):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
        from torch.distributed.fsdp import FSDPModule

        # The root keeps its parameters unsharded after a no-grad forward (evaluation);
        # set_model_state_dict reads the registered parameters, which must be the DTensor shards.
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()
        # The main process's full copy is scattered to every shard (a copy: torch may consume it).
        full = {k: v.clone() for k, v in tensors.items()} if accelerator.is_main_process else {}
        set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True,
                                                                   strict=False))
        return
    params = dict(accelerator.unwrap_model(model).named_parameters())
    missing = [n for n in tensors if n not in params]
    if missing:
        raise RuntimeError(f"checkpoint does not fit the model: unknown parameters {missing[:3]}")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value.to(params[name].device))


def optimizer_state(accelerator, model, optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """The optimizer's moments as flat tensors ("<param>.<key>") and its param groups (JSON);
    under FSDP gathered whole, keyed by parameter name. Every process calls this."""
    if sharded(accelerator):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        state = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        state = optimizer.state_dict()
    if not state:  # FSDP, full state dict: only rank 0 receives it (nothing to write elsewhere)
        return {}, []
    tensors = {f"{pid}.{key}": value.detach().to("cpu").contiguous()
               for pid, entry in state["state"].items() for key, value in entry.items() if torch.is_tensor(value)}
    return tensors, state["param_groups"]


def load_optimizer(accelerator, model, optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict = {}
    for name, value in tensors.items():
        pid, key = name.rsplit(".", 1)  # a parameter index, or under FSDP a dotted parameter name
        state.setdefault(int(pid) if pid.isdigit() else pid, {})[key] = value
    if sharded(accelerator):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": groups},
                                 options=StateDictOptions(full_state_dict=True))
        return
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_state() -> tuple[dict, dict[str, torch.Tensor]]:
    py = random.getstate()
    np_state = np.random.get_state()
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    return {"python": [py[0], list(py[1]), py[2]],
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}, tensors


def set_rng_state(saved: dict, rank: int) -> None:
    """Put back the RNG state a checkpoint saved for this process (each process draws its own
    dropout masks); a process the checkpoint did not have (more processes now) takes rank 0's."""
    states = saved["rng"]
    rank = rank if rank < len(states) else 0
    plain = states[rank]
    tensors = {key.split(".", 1)[1]: value for key, value in saved["rng_tensors"].items()
               if key.split(".", 1)[0] == str(rank)}
    version, values, gauss = plain["python"]
    random.setstate((version, tuple(values), gauss))
    kind, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save(target: Path, weights: dict[str, torch.Tensor], optimizer: tuple[dict, list], rng: list[tuple[dict, dict]],
         state: dict, best: dict | None) -> None:
    """One complete checkpoint directory, written atomically (``weights``: :func:`gather_trainable`,
    ``optimizer``: :func:`optimizer_state`, ``rng``: every process's :func:`rng_state`, by rank)."""
    moments, groups = optimizer

    def fill(tmp: Path):
        save_file(weights, str(tmp / "trainable.safetensors"))
        save_file(moments, str(tmp / "optimizer.safetensors"))
        save_file({f"{rank}.{key}": value for rank, (_, tensors) in enumerate(rng) for key, value in tensors.items()},
                  str(tmp / "rng.safetensors"))
        if best is not None:
            save_file({k: v.contiguous() for k, v in best.items()}, str(tmp / "best.safetensors"))
        # Hashing reads back what was just written (from the page cache): about a second per GB,
        # i.e. nothing for adapters, ~1-2 s per checkpoint for a full fine-tune of a base-size model.
        checksums = {f.name: artifacts.sha256(str(f)) for f in sorted(tmp.glob("*.safetensors"))}
        artifacts.write_json(tmp / STATE, {**state, "format": FORMAT, "optimizer_param_groups": groups,
                                           "rng": [plain for plain, _ in rng], "checksums": checksums})

    artifacts.atomic_directory(target, fill)


def complete(run_dir: Path) -> list[Path]:
    """The complete checkpoints, newest first (temporary directories start with a dot and are ignored)."""
    found = [p for p in (Path(run_dir) / CHECKPOINTS).glob("step-*") if (p / STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]), reverse=True)


def damage(path: Path) -> str | None:
    """What is wrong with a complete checkpoint's files (one line naming the file), or None when
    intact. A checkpoint from before checksums were recorded is trusted as before, its files only
    opened (a truncated safetensors file fails there)."""
    try:
        state = json.loads((path / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return f"{path / STATE}: not readable JSON ({error})"
    checksums = state.get("checksums") if isinstance(state, dict) else None
    if checksums is None:
        from safetensors import safe_open

        for name in ("trainable.safetensors", "optimizer.safetensors", "rng.safetensors", "best.safetensors"):
            if name != "best.safetensors" or (path / name).is_file():
                try:
                    with safe_open(str(path / name), framework="pt"):
                        pass
                except Exception as error:  # noqa: BLE001 - safetensors' errors have no common type
                    return f"{path / name}: not a readable safetensors file ({error})"
        return None
    for name, digest in checksums.items():
        if not (path / name).is_file():
            return f"{path / name}: missing"
        if artifacts.sha256(str(path / name)) != digest:
            return f"{path / name}: sha256 differs from the one recorded in {STATE} (truncated or corrupted)"
    return None


def newest_intact(run_dir: Path) -> tuple[Path | None, list[str]]:
    """(the newest complete checkpoint whose files are intact, what is wrong with each newer one)."""
    broken = []
    for path in complete(run_dir):
        problem = damage(path)
        if problem is None:
            return path, broken
        broken.append(problem)
    return None, broken


def latest(run_dir: Path) -> Path | None:
    """The newest complete, intact checkpoint (see :func:`newest_intact`)."""
    return newest_intact(run_dir)[0]


def load(path: Path) -> dict:
    state = json.loads((path / STATE).read_text(encoding="utf-8"))
    if state.get("format") != FORMAT:
        raise UsageError(f"{path}: a checkpoint from an older stancerun, which this version cannot continue exactly; "
                         "start the run again")
    state["trainable"] = load_file(str(path / "trainable.safetensors"))
    state["optimizer"] = load_file(str(path / "optimizer.safetensors"))
    state["rng_tensors"] = load_file(str(path / "rng.safetensors"))
    state["best"] = load_file(str(path / "best.safetensors")) if (path / "best.safetensors").is_file() else None
    return state
