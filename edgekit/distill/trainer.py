"""The training loop shared by teacher fine-tuning and distillation, with resume.

A run is a deterministic function of its settings: the example order of epoch e is a
permutation seeded by (seed, e) and the torch RNG (dropout) is reseeded at every step,
so a run killed after step s and resumed from its checkpoint takes exactly the steps
the uninterrupted run would have taken. Checkpoints hold the model, optimizer and
schedule state; they are written to a temporary name and renamed, with their sha256
beside them, so a kill during a save leaves the previous checkpoint and a corrupt one
is detected and never loaded.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgekit.cache import file_problem, write_checked

CHECKPOINT = "checkpoint.pt"
FINAL = "final.pt"
WARMUP_FRACTION = 0.06


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float
    seed: int = 0
    checkpoint_every: int = 200
    weight_decay: float = 0.01
    no_decay: tuple[str, ...] = ()  # parameter names (or name prefixes) trained without weight decay


def _save(obj, path: Path) -> None:
    write_checked(path, lambda tmp: torch.save(obj, tmp))


def _load(path: Path, echo: Callable[[str], None]):
    """A checkpoint, or None when it is missing, fails its sha256 or cannot be read (then training restarts)."""
    problem = file_problem(path)
    if problem == "absent":
        return None
    if problem:
        echo(f"  {path} {problem}; starting this training over")
        return None
    # weights_only: tensors and plain containers only. A checkpoint holds nothing else, and the sha256
    # beside it is written by whoever writes the cache: on shared storage, a file that needs the full
    # unpickler could run code in every later run. Such a file is treated as corrupt.
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a file that passed its hash but still fails to load
        echo(f"  {path} is unreadable or holds more than tensors ({type(e).__name__}); starting this training over")
        return None


def _schedule(total_steps: int):
    warmup = max(1, int(total_steps * WARMUP_FRACTION))
    return lambda step: min((step + 1) / warmup, max(0.0, (total_steps - step) / max(1, total_steps - warmup)))


def epoch_batches(n_examples: int, batch_size: int, seed: int, epoch: int, lengths=None) -> list:
    """The batches (index arrays) of one epoch, a function of (seed, epoch) only.

    With `lengths`, examples are sorted by length inside random chunks of 50 batches
    and the batches shuffled: each batch pads to similar lengths (HF's group_by_length),
    which on short-text data with a few long documents halves the tokens computed."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n_examples)
    if lengths is None:
        return [order[i:i + batch_size] for i in range(0, n_examples, batch_size)]
    chunk = batch_size * 50
    batches = []
    for start in range(0, n_examples, chunk):
        group = order[start:start + chunk]
        group = group[np.argsort(np.asarray(lengths)[group], kind="stable")]
        batches.extend(group[i:i + batch_size] for i in range(0, len(group), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def _groups(model, settings: TrainSettings) -> list:
    """The optimizer's parameter groups: one (as before no_decay existed, so older checkpoints resume), or the
    decayed parameters and then the `no_decay` ones with weight decay 0."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    spared = [p for name, p in named if name.startswith(settings.no_decay)] if settings.no_decay else []
    if not spared:
        return [p for _, p in named]
    ids = {id(p) for p in spared}
    return [{"params": [p for _, p in named if id(p) not in ids]}, {"params": spared, "weight_decay": 0.0}]


def train(model, n_examples: int, step_loss: Callable, settings: TrainSettings, folder: Path, desc: str,
          echo: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
          stop_after: int | None = None, lengths=None) -> dict:
    """Train `model` in place on examples 0..n_examples-1.

    `step_loss(model, indices)` returns (loss tensor, {part: float}). `folder` holds the
    checkpoint and, once finished, the final weights: a later call with a finished
    folder only loads them. `stop_after` ends the call after that many steps in total
    (tests use it to interrupt a run). `lengths` (per example) turns on length-grouped
    batches. Parameters with requires_grad False stay frozen. Returns {"steps", "resumed_from", "loss_history"}.
    """
    from tqdm import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    final = _load(folder / FINAL, echo)
    if final is not None:
        model.load_state_dict(final["model"])
        return {"steps": final["steps"], "resumed_from": final["steps"], "loss_history": final["loss_history"],
                "cached": True}

    steps_per_epoch = math.ceil(n_examples / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(_groups(model, settings), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total))
    step, history, running = 0, [], None
    checkpoint = _load(folder / CHECKPOINT, echo)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        step, history, running = checkpoint["step"], checkpoint["loss_history"], checkpoint["running_loss"]
        echo(f"  resuming {desc} at step {step}/{total}")
    resumed_from = step
    began = time.perf_counter()
    batches, batches_epoch = [], None
    last_line = -10.0

    model.train()
    with tqdm(total=total, initial=step, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True,
              disable=None) as bar:
        while step < total:
            if stop_after is not None and step >= stop_after:
                break
            epoch, position = divmod(step, steps_per_epoch)
            if batches_epoch != epoch:
                batches, batches_epoch = epoch_batches(n_examples, settings.batch_size, settings.seed, epoch,
                                                       lengths), epoch
            indices = batches[position]
            torch.manual_seed(settings.seed * 1_000_003 + step)  # dropout depends on the step only
            loss, parts = step_loss(model, indices)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            value = float(loss.detach())
            running = value if running is None else 0.95 * running + 0.05 * value
            if step % steps_per_epoch == 0 or step == total:
                history.append({"step": step, "epoch": epoch + 1, "loss": running, **parts})
                spent = time.perf_counter() - began
                # No terminal (CI logs, files): a line per epoch instead of a bar, at most every 10 s.
                if bar.disable and (spent - last_line >= 10 or step == total):
                    last_line = spent
                    eta = spent / (step - resumed_from) * (total - step)
                    echo(f"  {desc}: epoch {epoch + 1}/{settings.epochs}, step {step}/{total}, "
                         f"loss {running:.4g}, {spent:.0f} s, ETA {eta:.0f} s")
            bar.set_postfix(loss=f"{running:.4g}", epoch=f"{epoch + 1}/{settings.epochs}")
            bar.update(1)
            if step % settings.checkpoint_every == 0 and step < total:
                _save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "loss_history": history,
                       "running_loss": running}, folder / CHECKPOINT)
    model.eval()
    if step >= total:
        _save({"model": model.state_dict(), "steps": step, "loss_history": history}, folder / FINAL)
        (folder / CHECKPOINT).unlink(missing_ok=True)
    return {"steps": step, "resumed_from": resumed_from, "loss_history": history, "cached": False}
