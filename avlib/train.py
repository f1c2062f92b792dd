"""One training loop for every stage: projector pretraining, joint finetuning, the vision-only twin.

A stage is (model policy, examples, hyper-parameters): `AVLM.configure_training`
picks what trains; everything else is shared. The loop is built so that runs
can be compared exactly:

* Data order is a pure function of (seed, step): step s trains on items
  s*B .. (s+1)*B of a sequence of seeded epoch permutations. The AV model and
  its vision-only twin therefore see identical batches in identical order, and
  a resumed run continues with exactly the batches it would have seen.
* The global batch is split across processes (accelerate: DDP on CPU or GPU,
  FSDP and DeepSpeed by configuration) and into gradient-accumulation
  micro-batches; the loss is the sum over supervised tokens divided by the
  global count of them, so any split computes the same gradient.
* Checkpoints (every `checkpoint_every` steps) hold only the trainable
  parameters, the optimizer, the scheduler and every RNG state, written to a
  temporary folder and renamed into place, the one before it kept: a run
  killed at any moment resumes from the last complete checkpoint (the one
  before it, if the latest was damaged since) and ends bitwise equal to an
  uninterrupted one.
* A NaN or infinite loss stops the run with `TrainingDiverged`; nothing is
  saved after it, so the last good checkpoint stays loadable.

Curves go to dvclive (loss, learning rate, gradient norm, samples/s) so
`dvc plots show` draws them; a progress bar shows the ETA.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from avlib.config import LoraConfig, TrainingConfig
from avlib.integrity import file_sha256, verify
from avlib.progress import progress_bar
from avlib.runtime import frozen_in_bf16
from avlib.template import IGNORE_INDEX, split_by_length

CHECKPOINT = "checkpoint"
FINAL = "final"
LOGGED = ("loss", "learning_rate", "grad_norm", "samples_per_second")  # per logged step, to dvclive


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class RunResult:
    steps: int
    final_loss: float
    seconds: float
    samples_per_second: float
    output: Path
    batches: list[list[int]] | None = None  # the global batch indices of each step, when recorded


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batch_indices(num_items: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The global batch of `step`: a window onto seeded epoch permutations, a pure function of its arguments."""
    if num_items == 0:
        raise ValueError("cannot train on an empty dataset")
    out: list[int] = []
    position = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(position, num_items)
        order = np.random.default_rng([seed, epoch]).permutation(num_items)
        take = order[offset : offset + batch_size - len(out)]
        out += take.tolist()
        position += len(take)
    return out


def lr_factor(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to `min_ratio` of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def predicting(labels: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: the positions whose next token is supervised, where the loss needs logits."""
    return F.pad(labels[:, 1:] != IGNORE_INDEX, (0, 1), value=False)


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor, at: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the logits the model gave at `at` (`logits_at=at`, at = predicting(labels)) against
    the next tokens there, in the same order."""
    targets = labels[:, 1:][at[:, :-1]].to(logits.device)
    return F.cross_entropy(logits.float(), targets, reduction=reduction)


def _rng_state() -> dict:
    """Every generator's state, as tensors and numbers only, so the file loads with torch.load(weights_only=True)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
            "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def _previous(folder: Path) -> Path:
    return folder.parent / f"{folder.name}.previous"


def save_checkpoint(folder: Path, model, optimizer, scheduler, step: int, extra: dict, history: list[dict] = ()) -> None:
    """Write the checkpoint to a temporary folder, then rotate it into place.

    The checkpoint it replaces is kept as `<folder>.previous`, so a latest one
    damaged after it was written (a bad disk, a truncated copy) still leaves a
    complete one to resume from. history.json holds the metrics logged so far,
    for a resumed run to log them again. progress.json, written last, records
    the sha256 of the other files.
    """
    tmp = folder.parent / f".{folder.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), tmp / "trainable.safetensors")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state()}, tmp / "state.pt")
    (tmp / "history.json").write_text(json.dumps(list(history)))
    files = {name: file_sha256(tmp / name) for name in ("trainable.safetensors", "state.pt", "history.json")}
    (tmp / "progress.json").write_text(json.dumps({"step": step, **extra, "files": files}))
    previous = _previous(folder)
    shutil.rmtree(previous, ignore_errors=True)
    if folder.exists():
        os.replace(folder, previous)
    os.replace(tmp, folder)


def _log_row(live, row: dict) -> None:
    """One logged row of the run's metrics into dvclive, at its step."""
    live.step = row["step"]
    for name in LOGGED:
        live.log_metric(name, row[name])


def find_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint whose progress.json was written: the folder itself, else the one before it."""
    return next(iter(checkpoint_candidates(folder)), None)


def checkpoint_candidates(folder: Path) -> list[Path]:
    """The checkpoints kept for one run, newest first (a swap interrupted between the renames leaves only the previous)."""
    return [c for c in (folder, _previous(folder)) if (c / "progress.json").is_file()]


def load_checkpoint(folder: Path, model, optimizer, scheduler) -> dict:
    """Restore a checkpoint into the model, optimizer, scheduler and RNGs; ValueError naming the folder if it is damaged."""
    try:
        progress = json.loads((folder / "progress.json").read_text())
        verify(folder, progress.get("files", {}), "it was damaged after it was written")
        trainable = load_file(folder / "trainable.safetensors")
        state = torch.load(folder / "state.pt", weights_only=True)  # tensors and numbers: a shared checkpoint cannot run code
    except Exception as err:  # truncated or damaged: digests, safetensors' and torch's errors of every kind
        raise ValueError(f"{folder}: the checkpoint is damaged ({type(err).__name__}: {err})") from None
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(trainable) != expected:
        raise ValueError(f"{folder} holds other trainable parameters than this run trains; is it another stage's checkpoint?")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in trainable.items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return progress


def resume(folder: Path, run_id: str, model, optimizer, scheduler, say) -> dict:
    """Load the newest intact checkpoint this run wrote; returns its progress (step, loss, logged history), or
    step 0 when there is none to resume."""
    damaged = []
    for candidate in checkpoint_candidates(folder):
        try:
            if json.loads((candidate / "progress.json").read_text()).get("run") != run_id:  # none recorded: not provably this run
                say(f"{candidate} was written by another run (its settings, code or starting point differ): starting afresh")
                return {"step": 0}
            progress = load_checkpoint(candidate, model, optimizer, scheduler)
        except ValueError as err:
            say(f"{err}; trying the checkpoint before it")
            damaged.append(candidate)
            continue
        say(f"resuming from step {progress['step']} ({candidate})")
        history = candidate / "history.json"
        return {**progress, "history": json.loads(history.read_text()) if history.is_file() else []}
    if damaged:
        raise ValueError(f"every checkpoint kept in {folder.parent} is damaged ({', '.join(str(d) for d in damaged)}); "
                         "delete them to start the stage afresh")
    return {"step": 0}


def code_digest() -> str:
    """sha256 of avlib's source: a checkpoint written by other code is another run's, even with the same settings."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def run_identity(stage: str, cfg: TrainingConfig, seed: int, lora: LoraConfig | None, examples: int, config=None,
                 identity: dict | None = None) -> str:
    """A digest of everything that makes a training run this run: a checkpoint resumes only the run that wrote it."""
    described = {"stage": stage, "code": code_digest(), "training": dataclasses.asdict(cfg), "seed": seed, "examples": examples,
                 "lora": dataclasses.asdict(lora) if lora is not None else None,
                 "params": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else None, "identity": identity}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train(
    model,
    dataset: Sequence[dict],
    stage: str,
    cfg: TrainingConfig,
    out: str | Path,
    seed: int = 0,
    lora: LoraConfig | None = None,
    config=None,
    accelerator=None,
    record_batches: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    identity: dict | None = None,
) -> RunResult:
    """Train `model` on `dataset` (items with question, answer, video_features, audio_features).

    Saves the trained parts to out/final (`AVLM.save_trained`) and dvclive logs
    to out/dvclive. Checkpoints go to `checkpoint_dir` (default out/checkpoint;
    the pipeline keeps them outside DVC's outputs, which DVC deletes before a
    rerun) and a run resumes from one only if it was written by the same run:
    same stage, settings, seed, data size and `identity` (what the run starts
    from); another run's checkpoint is set aside with a message. `stop_after`
    ends the run early at that step (as a kill would), leaving its checkpoint.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    out = Path(out)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else out / CHECKPOINT
    run_id = run_identity(stage, cfg, seed, lora, len(dataset), config, identity)
    if cfg.steps < 1:
        raise ValueError(f"{stage}: steps must be at least 1, got {cfg.steps}; a run with no step would save an untrained model")
    if accelerator is None:
        mixed = "bf16" if torch.cuda.is_available() else "no"
        accelerator = Accelerator(
            cpu=not torch.cuda.is_available(),  # without it, processes launched on a CPU machine do not form a group
            mixed_precision=mixed,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.batch_size % (world * cfg.grad_accum):
        raise ValueError(f"batch_size {cfg.batch_size} must divide evenly into {world} processes x {cfg.grad_accum} accumulation steps")
    seed_everything(seed)
    model.configure_training(stage, lora)
    if accelerator.device.type == "cuda":
        frozen_in_bf16(model)
    if cfg.gradient_checkpointing:
        model.llm.activation_checkpointing_enable()
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups: list = trainable
    # The projectors may learn at their own rate (Bunny's mm_projector_lr), the audio projector at its own again.
    rates = {"vision_projector": cfg.projector_lr or cfg.lr, "audio_projector": cfg.audio_projector_lr or cfg.projector_lr or cfg.lr}
    if any(rate != cfg.lr for rate in rates.values()):
        part_of = {id(p): n.split(".")[0] for n, p in model.named_parameters()}
        groups = [{"params": [p for p in trainable if part_of[id(p)] not in rates], "lr": cfg.lr}]
        groups += [{"params": [p for p in trainable if part_of[id(p)] == part], "lr": rate} for part, rate in rates.items()]
        groups = [g for g in groups if g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.steps, cfg.warmup, cfg.min_lr_ratio))
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    progress_at = resume(checkpoint_dir, run_id, model, optimizer, scheduler, lambda line: accelerator.print(f"{stage}: {line}"))
    start_step = progress_at["step"]
    history: list[dict] = progress_at.get("history", [])
    live = None
    if accelerator.is_main_process:
        from dvclive import Live

        # The logs start afresh and replay the checkpoint's history: complete even where DVC deleted the old ones.
        live = Live(dir=str(out / "dvclive"), resume=False, save_dvc_exp=False, dvcyaml=None, report=None)
        for row in history:
            _log_row(live, row)
        live.step = start_step
    local = cfg.batch_size // world
    micro = local // cfg.grad_accum
    batches: list[list[int]] = []
    loss_value, started, samples = progress_at.get("loss", float("nan")), time.monotonic(), 0
    model.train()
    bar = progress_bar(range(start_step, cfg.steps), show=progress and accelerator.is_main_process, initial=start_step, total=cfg.steps,
                       desc=stage)
    for step in bar:
        if stop_after is not None and step >= stop_after:
            break
        indices = batch_indices(len(dataset), cfg.batch_size, step, seed)
        if record_batches:
            batches.append(indices)
        mine = indices[rank * local : (rank + 1) * local]
        parts = [part for k in range(0, local, micro)
                 for part in split_by_length(model.collate([dataset[i] for i in mine[k : k + micro]]), cfg.length_groups)]
        count = torch.tensor(sum(int((p["labels"][:, 1:] != IGNORE_INDEX).sum()) for p in parts), device=accelerator.device)
        total_count = accelerator.reduce(count, reduction="sum").item()
        loss_sum = 0.0
        for k, part in enumerate(parts):
            sync = accelerator.no_sync(wrapped) if k < len(parts) - 1 else contextlib.nullcontext()
            with sync, accelerator.autocast():
                at = predicting(part["labels"])
                logits = wrapped(
                    part["input_ids"].to(accelerator.device), part["attention_mask"].to(accelerator.device),
                    [None if f is None else f.to(accelerator.device) for f in part["video_features"]],
                    [None if f is None else f.to(accelerator.device) for f in part["audio_features"]],
                    logits_at=at,
                )
                summed = supervised_loss(logits, part["labels"], at, reduction="sum")
                # DDP averages gradients over processes: scale so the result is d(global mean)/dθ.
                loss = summed * world / max(total_count, 1)
                accelerator.backward(loss)
            loss_sum += summed.item()
        loss_value = accelerator.reduce(torch.tensor(loss_sum, device=accelerator.device), reduction="sum").item() / max(total_count, 1)
        if not math.isfinite(loss_value):
            last = find_checkpoint(checkpoint_dir)
            raise TrainingDiverged(
                f"{stage}: loss became {loss_value} at step {step}; stopped without saving. "
                f"The last good checkpoint is {last if last else '(none yet)'}; lower the learning rate and resume."
            )
        grad_norm = accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        samples += cfg.batch_size
        elapsed = time.monotonic() - started
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            row = {"step": step, "loss": loss_value,  # step: the batch whose loss it is, from 0
                   "learning_rate": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                   "samples_per_second": samples / max(elapsed, 1e-9)}
            history.append(row)
            if live is not None:
                _log_row(live, row)
            bar.set_postfix(loss=f"{loss_value:.3f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                save_checkpoint(checkpoint_dir, model, optimizer, scheduler, step + 1,
                                {"loss": loss_value, "processes": world, "run": run_id}, history)
    bar.close()
    accelerator.wait_for_everyone()
    finished = stop_after is None or stop_after >= cfg.steps
    if finished and accelerator.is_main_process:
        model.save_trained(out / FINAL, config=config)
        if live is not None:
            live.log_metric("final_loss", loss_value, plot=False)
            live.end()
    elapsed = time.monotonic() - started
    return RunResult(steps=cfg.steps if finished else (stop_after or 0), final_loss=loss_value, seconds=elapsed,
                     samples_per_second=samples / max(elapsed, 1e-9), output=out / FINAL, batches=batches if record_batches else None)
