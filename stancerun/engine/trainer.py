"""The training loop: one Accelerate loop, read top to bottom.

It runs unchanged on a CPU, one GPU, or many (``accelerate launch -m stancerun ...``):
Accelerate places the model and shards the batches; evaluation gathers each process's logits
with their example indices, so every example counts exactly once whatever the process count.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import gather_object

from stancerun.rundir import artifacts
from stancerun.rundir.layout import CHECKPOINTS, METRICS
from stancerun.rundir.results import ModelUsed, Results, TrainFigures
from stancerun.engine import checkpoint
from stancerun.data.batching import (Collator, IndexDataset, LengthBucketBatches, encode_examples, model_inputs,
                                sorted_batches)
from stancerun.components.assembly import Components
from stancerun.config.experiment import Experiment
from stancerun.errors import UsageError
from stancerun.contracts import EvalPrediction


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc; absent on macOS, Windows and musl
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Hand the heap pages freed since the last call back to the operating system.

    glibc keeps freed memory mapped. Evaluation allocates tensors of a new shape for every
    length-sorted batch, and without this their pages stay resident through training and the
    next evaluation (benchmarks/memory.py: peak RSS 905-911 MiB without, 818-838 MiB with)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@dataclass
class RunState:
    """What callbacks see as ``run`` (SPEC section 4)."""

    config: dict
    output_dir: Path | None
    is_main_process: bool
    greater_is_better: bool
    global_step: int = 0
    epoch: float = 0.0
    should_stop: bool = False


@dataclass
class Evaluation:
    metrics: dict
    logits: np.ndarray  # in the split's original order
    labels: np.ndarray


@dataclass
class Outcome:
    """What a training pass hands on: its model, its evaluations (metrics with the logits) and how
    it trained. :meth:`results` is the part of results.json it fills; the model and logits stay here."""

    model: object
    baseline: Evaluation  # the untrained model on validation
    final: Evaluation  # the chosen model on validation (a stack's scores once one ships)
    test: Evaluation | None
    train: TrainFigures
    shipped: object = None  # a stancerun.evaluation.ensemble.Shipped when [ensemble] ships a stack

    def results(self, model: ModelUsed) -> Results:
        return Results(model=model, baseline=self.baseline.metrics, final=self.final.metrics, train=self.train,
                       test=self.test.metrics if self.test is not None else None)


def make_optimizer(model, training):
    """AdamW; biases and LayerNorm weights get no weight decay (as transformers' Trainer)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": training.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    params = [p for g in groups for p in g["params"]]
    # The fused kernel (one pass over all parameters) where every parameter's device has one.
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
                for p in params)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=training.learning_rate,
                             betas=(training.adam_beta1, training.adam_beta2), eps=training.adam_epsilon, fused=fused)


def make_scheduler(optimizer, training, total_steps: int):
    from transformers import get_scheduler

    warmup = training.warmup_steps or math.ceil(training.warmup_ratio * total_steps)
    return get_scheduler(training.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def plan_steps(batches_per_epoch: int, training, num_processes: int) -> tuple[int, int, int]:
    """(optimizer updates per epoch, total updates, epochs to iterate) for a run."""
    per_epoch = max(1, math.ceil(batches_per_epoch / num_processes / training.gradient_accumulation_steps))
    total = training.max_steps if training.max_steps > 0 else math.ceil(training.num_train_epochs * per_epoch)
    return per_epoch, total, math.ceil(total / per_epoch)


@dataclass
class LoopPosition:
    """Where the loop stands: saved in every checkpoint, so a resumed run continues exactly here."""

    epoch_index: int = 0  # the epoch being iterated
    batches_done: int = 0  # its micro-batches already trained on
    samples: int = 0  # training examples this process has seen
    running_loss: object = 0.0  # loss summed since the last log line: a device tensor while training
    elapsed: float = 0.0  # training seconds before this process started
    last_eval_step: int | None = None

    def saved(self, elapsed: float) -> dict:
        # float() syncs the device: only here, when a checkpoint is written, never per step.
        return {"epoch_index": self.epoch_index, "batches_done": self.batches_done, "samples": self.samples,
                "running_loss": float(self.running_loss), "elapsed": elapsed, "last_eval_step": self.last_eval_step}

    @classmethod
    def from_saved(cls, saved: dict) -> "LoopPosition":
        return cls(**{k: saved[k] for k in ("epoch_index", "batches_done", "samples", "running_loss", "elapsed",
                                            "last_eval_step")})


@dataclass
class Loop:
    """One fit's prepared objects, plan and position."""

    model: torch.nn.Module
    optimizer: object
    scheduler: object
    train_loader: object
    train_batches: LengthBucketBatches
    total_steps: int
    epochs: int
    per_epoch: int  # optimizer updates per epoch
    baseline: Evaluation
    position: LoopPosition
    saved: dict | None = None  # the checkpoint resumed from, until its RNG state is put back
    first_epoch: int = 0
    skip: int = 0  # micro-batches of the first epoch trained on before the checkpoint
    started: float = 0.0
    progress: object = None


class Trainer:
    """Holds the state of one run; ``fit`` is the loop."""

    def __init__(self, experiment: Experiment, components: Components, accelerator, run_dir: Path | None, reporter):
        self.experiment = experiment
        self.training = experiment.training
        self.c = components
        self.accelerator = accelerator
        self.run_dir = run_dir
        self.reporter = reporter
        self.labels = components.splits.labels
        self.run = RunState(experiment.config, run_dir, accelerator.is_main_process, self.training.best_is_greater)
        # Named before Accelerate wraps the model: what checkpoints and the best-model copy keep.
        self.trainable_names = [n for n, p in components.model.named_parameters() if p.requires_grad]
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.best_state: dict | None = None
        self.history: list[dict] = []
        self.interrupted: str | None = None

    # -- data ---------------------------------------------------------------------------
    def loaders(self):
        tokenizer, max_length = self.c.loaded.tokenizer, self.c.loaded.max_length
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.encoded = {name: encode_examples(tokenizer, examples, max_length)
                        for name, examples in (("train", self.c.splits.train), ("validation", self.c.splits.validation),
                                               ("test", self.c.splits.test)) if examples is not None}
        t = self.training
        train_batches = LengthBucketBatches(self.encoded["train"].lengths, t.per_device_train_batch_size,
                                            self.experiment.config["seed"], t.group_by_length)
        train = torch.utils.data.DataLoader(IndexDataset(len(self.encoded["train"])), batch_sampler=train_batches,
                                            collate_fn=Collator(self.encoded["train"], pad),
                                            num_workers=t.dataloader_num_workers)
        self.eval_loaders = {name: self.eval_loader(enc, pad) for name, enc in self.encoded.items() if name != "train"}
        return train, train_batches

    def eval_loader(self, encoded, pad):
        batches = sorted_batches(encoded.lengths, self.training.per_device_eval_batch_size)
        return torch.utils.data.DataLoader(IndexDataset(len(encoded)), batch_sampler=batches,
                                           collate_fn=Collator(encoded, pad),
                                           num_workers=self.training.dataloader_num_workers)

    def truncated(self) -> dict[str, int]:
        """Texts per split that reached max_length tokens (and so were probably cut)."""
        limit = self.c.loaded.max_length
        return {name: sum(length >= limit for length in enc.lengths) for name, enc in self.encoded.items()}

    # -- evaluation ---------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, split: str) -> Evaluation:
        """Logits for every example of a split, in the split's order, and the metrics on them.
        Each process scores its share of the batches; the logits are gathered with their
        example indices, so every example counts exactly once whatever the process count."""
        release_freed_memory()  # what training freed, before evaluation's batches need pages
        model.eval()
        logits_parts, index_parts = [], []
        for batch in self.eval_loaders[split]:
            logits = model(**model_inputs(batch)).logits.float()
            index = batch["index"]
            if self.accelerator.num_processes > 1:
                # Batches differ in size across processes (length-sorted); pad to gather, drop
                # the padding (index -1) below.
                logits = self.accelerator.pad_across_processes(logits, dim=0)
                index = self.accelerator.pad_across_processes(index, dim=0, pad_index=-1)
                logits, index = self.accelerator.gather((logits, index))
            logits_parts.append(logits.cpu())
            index_parts.append(index.cpu())
        model.train()
        release_freed_memory()
        encoded = self.encoded[split]
        index, gathered = torch.cat(index_parts).numpy(), torch.cat(logits_parts).numpy()
        # Every example exactly once, back in input order: Accelerate repeats a few examples
        # to even out the processes' batches, and padding rows carry index -1.
        keep = index >= 0
        index, gathered = index[keep], gathered[keep]
        index, first = np.unique(index, return_index=True)
        if len(index) != len(encoded):
            raise RuntimeError(f"evaluation saw {len(index)} of {len(encoded)} {split} examples")
        logits = np.empty((len(encoded), len(self.labels)), dtype=np.float32)
        logits[index] = gathered[first]
        labels = np.asarray(encoded.labels)
        loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
        metrics = {"loss": loss, **self.c.metric_fn(EvalPrediction(logits, labels, self.labels))}
        return Evaluation(metrics, logits, labels)

    # -- best model ---------------------------------------------------------------------
    def metric_name(self) -> str:
        return self.training.metric_for_best_model.removeprefix("eval_")

    def check_metric_exists(self, metrics: dict) -> None:
        if self.metric_name() not in metrics:
            raise UsageError(f"training.metric_for_best_model: '{self.metric_name()}' is not an evaluation result; "
                             f"available: {', '.join(sorted(metrics))}")

    def is_better(self, value: float) -> bool:
        if self.best_metric is None:
            return True
        return value > self.best_metric if self.run.greater_is_better else value < self.best_metric

    def remember_best(self, model, metrics: dict) -> None:
        value = metrics[self.metric_name()]
        if self.is_better(value):
            self.best_metric, self.best_step = value, self.run.global_step
            if self.training.load_best_model_at_end:
                # Only trainable weights change; copying them (LoRA: ~1% of the model) is cheap.
                self.best_state = checkpoint.gather_trainable(self.accelerator, model, self.trainable_names)

    def restore_best(self, model) -> None:
        if self.best_state is not None:
            checkpoint.load_trainable(self.accelerator, model, self.best_state)

    # -- logging ------------------------------------------------------------------------
    def record(self, kind: str, values: dict) -> None:
        entry = {"type": kind, "step": self.run.global_step, "epoch": round(self.run.epoch, 4), **values}
        self.history.append(entry)
        if self.accelerator.is_main_process and self.run_dir is not None:
            artifacts.atomic_write(self.run_dir / METRICS, "".join(json.dumps(e) + "\n" for e in self.history))

    def callback(self, event: str, *args) -> None:
        for cb in self.c.callbacks:
            method = getattr(cb, event, None)
            if method is not None:
                method(self.run, *args)

    # -- checkpoints --------------------------------------------------------------------
    def save_checkpoint(self, loop: Loop) -> None:
        """Everything resume needs, at the current position (see stancerun.engine.checkpoint)."""
        if self.run_dir is None:
            return
        acc = self.accelerator
        acc.wait_for_everyone()
        # Every process takes part: under ZeRO-3 or FSDP each holds only a shard.
        weights = checkpoint.gather_trainable(acc, loop.model, self.trainable_names)
        moments = checkpoint.optimizer_state(acc, loop.model, loop.optimizer)
        rng = gather_object([checkpoint.rng_state()])  # each process's own: its dropout differs
        target = self.run_dir / CHECKPOINTS / f"step-{self.run.global_step}"
        if acc.is_main_process:
            state = {"global_step": self.run.global_step, "epoch": self.run.epoch, "best_metric": self.best_metric,
                     "best_step": self.best_step, "should_stop": self.run.should_stop, "history_lines": len(self.history),
                     **loop.position.saved(time.perf_counter() - loop.started),
                     "scheduler": loop.scheduler.state_dict(),
                     "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in self.c.callbacks]}
            checkpoint.save(target, weights, moments, rng, state, self.best_state)
            self.prune_checkpoints()
        self.callback("on_save", target)

    def restore(self, saved: dict, loop: Loop) -> LoopPosition:
        """Put weights, optimizer, scheduler, bookkeeping and callbacks back as they were saved."""
        checkpoint.load_trainable(self.accelerator, loop.model, saved["trainable"])
        checkpoint.load_optimizer(self.accelerator, loop.model, loop.optimizer, saved["optimizer"],
                                  saved["optimizer_param_groups"])
        loop.scheduler.load_state_dict(saved["scheduler"])
        self.run.global_step, self.run.epoch = saved["global_step"], saved["epoch"]
        self.run.should_stop = saved["should_stop"]
        self.best_metric, self.best_step, self.best_state = saved["best_metric"], saved["best_step"], saved["best"]
        for cb, state in zip(self.c.callbacks, saved["callbacks"]):
            if state is not None and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(state)
        if self.run_dir is not None and (self.run_dir / METRICS).is_file():
            # Lines written after the checkpoint belong to the run that was killed (an epoch's
            # evaluation can follow a checkpoint at the same step: count lines, not steps).
            lines = (self.run_dir / METRICS).read_text(encoding="utf-8").splitlines()
            self.history = [json.loads(line) for line in lines[: saved["history_lines"]]]
        return LoopPosition.from_saved(saved)

    @contextlib.contextmanager
    def signals_saved(self):
        """SIGINT/SIGTERM finish the current step, save a checkpoint and stop (exit 130)."""
        self.interrupted = None
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            self.interrupted = signal.Signals(signum).name

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def prune_checkpoints(self) -> None:
        limit = self.training.save_total_limit
        if not limit:
            return
        folder = self.run_dir / CHECKPOINTS
        steps = sorted(int(p.name.split("-")[1]) for p in folder.glob("step-*") if p.is_dir())
        keep = set(steps[-limit:]) | ({self.best_step} if self.best_step is not None else set())
        for step in steps:
            if step not in keep:
                import shutil

                shutil.rmtree(folder / f"step-{step}", ignore_errors=True)

    # -- the loop -----------------------------------------------------------------------
    def fit(self, resume_from: Path | None = None) -> Outcome:
        """Train; with ``resume_from`` (a checkpoint directory), continue exactly where it was saved."""
        loop = self.set_up(resume_from)
        with self.signals_saved():
            for epoch in range(loop.first_epoch, loop.epochs):
                # Through the prepared loader: Accelerate re-sets the epoch from its own pass counter,
                # which starts at 0 in a resumed process (a run resumed in epoch 2 replayed epoch 0's order).
                loop.train_loader.set_epoch(epoch)
                loop.train_batches.set_epoch(epoch)
                for done, batch in enumerate(loop.train_loader, 1):
                    if epoch == loop.first_epoch and done <= loop.skip:
                        continue  # trained on before the checkpoint
                    self.resume_rng(loop)
                    if self.step(loop, batch, epoch, done):
                        break
                else:  # the epoch ran to its end
                    self.run.epoch = float(epoch + 1)
                self.resume_rng(loop)  # a checkpoint at an epoch's last batch: the rest goes on from here
                self.end_epoch(loop, epoch)
                if self.finished(loop):
                    break
        return self.finish(loop)

    def set_up(self, resume_from: Path | None) -> Loop:
        """Loaders, optimizer and schedule, Accelerate's preparation, the untrained model's score,
        and, when resuming, everything the checkpoint saved."""
        acc, t = self.accelerator, self.training
        train_loader, train_batches = self.loaders()
        model = self.c.model
        prepare, prepared_s = getattr(self.c.adapter, "prepare", None), 0.0
        if callable(prepare) and resume_from is None:  # a checkpoint already holds what the phase made
            self.reporter.console.print(f"[bold]adapter '{self.experiment.config['adapter']['use']}':[/] "
                                        "its own phase before the loop")
            began = time.perf_counter()
            prepare(model, self.c.splits.train, self.c.splits.labels, acc.device)
            prepared_s = time.perf_counter() - began
        optimizer = make_optimizer(model, t)
        per_epoch, total_steps, epochs = plan_steps(len(train_loader), t, acc.num_processes)
        # The scheduler is stepped by us once per optimizer update, so it is not prepared
        # (a prepared scheduler steps once per process).
        scheduler = make_scheduler(optimizer, t, total_steps)
        model, optimizer, train_loader = acc.prepare(model, optimizer, train_loader)
        self.eval_loaders = {name: acc.prepare(loader) for name, loader in self.eval_loaders.items()}

        self.reporter.plan(self, total_steps, epochs)
        # The untrained model is scored on resume too: the fresh weights are the same (same seed).
        baseline = self.evaluate(model, "validation")
        self.check_metric_exists(baseline.metrics)
        loop = Loop(model, optimizer, scheduler, train_loader, train_batches, total_steps, epochs, per_epoch, baseline,
                    LoopPosition())
        if resume_from is None:
            self.record("baseline", {f"eval_{k}": v for k, v in baseline.metrics.items()})
            self.reporter.evaluation("baseline (before training)", baseline.metrics)
        else:
            loop.saved = checkpoint.load(resume_from)
            loop.position = self.restore(loop.saved, loop)
            self.reporter.console.print(f"[bold]resuming[/] from {resume_from.name} (step {self.run.global_step})")
        loop.first_epoch, loop.skip = loop.position.epoch_index, loop.position.batches_done

        self.callback("on_train_begin")
        model.train()
        loop.position.running_loss = torch.full((), loop.position.running_loss, device=acc.device)
        # Training time counts the adapter's own phase too (it is training).
        loop.started = time.perf_counter() - loop.position.elapsed - prepared_s
        loop.progress = self.reporter.progress(total_steps)
        loop.progress.update(self.run.global_step)
        if loop.skip == 0:
            # Saved at an epoch's end: the next epoch's loader draws its seed from this state, as it
            # did in the uninterrupted run.
            self.resume_rng(loop)
        return loop

    def resume_rng(self, loop: Loop) -> None:
        """Put back the RNG state the checkpoint saved, once, at the point where it was saved:
        dropout and the loaders' seeds then go on as in the uninterrupted run."""
        if loop.saved is not None:
            checkpoint.set_rng_state(loop.saved, self.accelerator.process_index)
            loop.saved = None

    def step(self, loop: Loop, batch, epoch: int, done: int) -> bool:
        """One micro-batch; after each optimizer update, log, evaluate and save as planned.
        Returns whether training is over."""
        acc, t, position = self.accelerator, self.training, loop.position
        with acc.accumulate(loop.model):
            out = loop.model(**model_inputs(batch), labels=batch["labels"])
            acc.backward(out.loss)
            if acc.sync_gradients and t.max_grad_norm > 0:
                acc.clip_grad_norm_(loop.model.parameters(), t.max_grad_norm)
            loop.optimizer.step()
            loop.optimizer.zero_grad(set_to_none=True)
        # No .item() here: reading the loss every step would sync the device.
        position.running_loss += out.loss.detach() / t.gradient_accumulation_steps
        position.samples += batch["labels"].shape[0]
        position.epoch_index, position.batches_done = epoch, done
        if not acc.sync_gradients:
            return False  # accumulating gradients: no update yet

        loop.scheduler.step()
        self.run.global_step += 1
        self.run.epoch = epoch + done / max(1, len(loop.train_loader))
        step = self.run.global_step
        if step % t.logging_steps == 0 or step == loop.total_steps:
            steps_in_window = step % t.logging_steps or t.logging_steps
            logs = {"loss": acc.reduce(position.running_loss, "mean").item() / steps_in_window,
                    "learning_rate": loop.scheduler.get_last_lr()[0]}
            position.running_loss.zero_()
            self.record("train", logs)
            self.callback("on_log", logs)
            loop.progress.update(step, logs)
        else:
            loop.progress.update(step)
        if t.eval_strategy == "steps" and step % (t.eval_steps or t.logging_steps) == 0:
            self.evaluation_step(loop.model)
            position.last_eval_step = step
        if (t.save_strategy == "steps" and step % t.save_steps == 0) or self.interrupted:
            self.save_checkpoint(loop)
        if self.interrupted:
            raise KeyboardInterrupt(f"stopped by signal {self.interrupted} after saving step {step}")
        return self.finished(loop)

    def end_epoch(self, loop: Loop, epoch: int) -> None:
        if self.training.eval_strategy == "epoch" and loop.position.last_eval_step != self.run.global_step:
            self.evaluation_step(loop.model)
            loop.position.last_eval_step = self.run.global_step
        loop.position.epoch_index, loop.position.batches_done = epoch + 1, 0
        if self.training.save_strategy == "epoch":
            self.save_checkpoint(loop)

    def finished(self, loop: Loop) -> bool:
        return self.run.should_stop or self.run.global_step >= loop.total_steps

    def finish(self, loop: Loop) -> Outcome:
        """The best weights back, the final (and test) evaluation, and the run's figures."""
        acc, t, model = self.accelerator, self.training, loop.model
        runtime = time.perf_counter() - loop.started
        loop.progress.close()
        # A stop requested at the last planned step ended nothing early.
        stopped_early = self.run.should_stop and self.run.global_step < loop.total_steps
        if t.load_best_model_at_end and self.best_state is not None:
            self.restore_best(model)
        final = self.evaluate(model, "validation")
        # Under refit_on_validation the test split is scored by the model that ships, the second pass's.
        test = self.evaluate(model, "test") if "test" in self.eval_loaders and not t.refit_on_validation else None
        self.record("final", {f"eval_{k}": v for k, v in final.metrics.items()})
        total_samples = acc.reduce(torch.tensor(loop.position.samples, device=acc.device), "sum").item()
        train = TrainFigures(
            runtime_s=round(runtime, 3), samples_per_second=round(total_samples / runtime, 3) if runtime else None,
            global_step=self.run.global_step, epochs=round(self.run.epoch, 4), total_steps_planned=loop.total_steps,
            steps_per_epoch=loop.per_epoch, train_samples=len(self.encoded["train"]),
            eval_samples=len(self.encoded["validation"]), best_step=self.best_step, best_metric=self.best_metric,
            metric_for_best_model=self.metric_name(), restored_best=bool(t.load_best_model_at_end and self.best_state is not None),
            stopped_early=stopped_early, world_size=acc.num_processes)
        return Outcome(model, loop.baseline, final, test, train)

    def evaluation_step(self, model) -> None:
        evaluation = self.evaluate(model, "validation")
        self.record("eval", {f"eval_{k}": v for k, v in evaluation.metrics.items()})
        self.reporter.evaluation(f"step {self.run.global_step} (epoch {self.run.epoch:.2f})", evaluation.metrics,
                                 best=self.metric_name())
        self.remember_best(model, evaluation.metrics)
        self.callback("on_evaluate", evaluation.metrics)
