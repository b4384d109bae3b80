"""The training loop shared by teacher fine-tuning and distillation, with resume.

A run is a deterministic function of its settings: the example order of epoch e is a
permutation seeded by (seed, e) and the torch RNG (dropout) is reseeded at every step,
so a run killed after step s and resumed from its checkpoint takes exactly the steps
the uninterrupted run would have taken. Checkpoints hold the model, optimizer and
schedule state; they are written to a temporary name and renamed, with their sha256
beside them, so a kill during a save leaves the previous checkpoint and a corrupt one
is detected and never loaded.

Data-parallel (`ranks`, from ddp.py): every rank takes its slice of each global batch (the
same batches, in the same order, as one process), DDP averages the gradients, and rank 0
alone reads and writes the checkpoints; what it read is broadcast, so all ranks start alike.
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

from edgekit.trust.cache import open_checked, write_checked
from edgekit.trust.reading import shown

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


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel group whose torch.distributed process group is initialized."""

    rank: int
    world: int


class _Step(torch.nn.Module):
    """`step_loss(model, indices)` as a module's forward: DDP prepares its gradient all-reduce in forward, and
    the losses call the model's own methods (`internals`), not its forward."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, step_loss, indices):
        return step_loss(self.model, indices)


def _save(obj, path: Path) -> None:
    write_checked(path, lambda tmp: torch.save(obj, tmp))


def _load(path: Path, echo: Callable[[str], None]):
    """A checkpoint, or None when it is missing, fails its sha256 or cannot be read (then training restarts)."""
    # Hashed and loaded through one descriptor: a FIFO, device or symlink in the checkpoint's place is refused
    # unopened, and a checkpoint another run replaces meanwhile cannot slip in unverified.
    f, problem = open_checked(path)
    if problem == "absent":
        return None
    if problem:
        echo(f"  {shown(path)} {problem}; starting this training over")
        return None
    # weights_only: tensors and plain containers only. A checkpoint holds nothing else, and the sha256
    # beside it is written by whoever writes the cache: on shared storage, a file that needs the full
    # unpickler could run code in every later run. Such a file is treated as corrupt.
    with f:
        try:
            state = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a file that passed its hash but still fails to load
            echo(f"  {shown(path)} is unreadable or holds more than tensors ({type(e).__name__}); starting this "
                 "training over")
            return None
    if not isinstance(state, dict):  # a checkpoint is a dict; anything else would fail later, as a traceback
        echo(f"  {shown(path)} holds a {type(state).__name__}, not a checkpoint; starting this training over")
        return None
    return state


FINAL_KEYS = {"model": dict, "steps": int, "loss_history": list}
CHECKPOINT_KEYS = {"model": dict, "optimizer": dict, "scheduler": dict, "step": int, "loss_history": list,
                   "running_loss": (float, type(None))}


def _usable(state, model, path: Path, echo: Callable[[str], None], keys: dict, total: int | None = None):
    """`state` (a loaded FINAL or CHECKPOINT) when it holds `keys` of their types and weights of `model`'s
    names and shapes, else None (said through `echo`): a file that passed its hash can still be another
    network's, or hand-made, and would otherwise fail mid-load, as a traceback, with the model half-loaded."""
    if state is None:
        return None
    wrong = [key for key, kind in keys.items() if not isinstance(state.get(key), kind)
             or (kind is int and isinstance(state.get(key), bool))]
    problem = f"lacks {', '.join(wrong)} (or holds another type there)" if wrong else None
    if problem is None:
        own, weights = model.state_dict(), state["model"]
        if set(weights) != set(own) or any(isinstance(value, torch.Tensor) and (
                not isinstance(weights[name], torch.Tensor) or weights[name].shape != value.shape)
                for name, value in own.items()):
            problem = "holds the weights of another network"
    step = state.get("step", state.get("steps"))
    if problem is None and not 0 <= step <= (total if total is not None else step):
        problem = f"stops at step {step}, outside this training's 0 to {total}"
    if problem:
        echo(f"  {shown(path)} {problem}; starting this training over")
        return None
    return state


def _shared(obj, ranks: Ranks | None):
    """What rank 0 read (a checkpoint, or None), on every rank."""
    if ranks is None:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _shard(indices, ranks: Ranks) -> tuple:
    """(this rank's slice of a global batch, its share of the batch's examples). A batch smaller than the world
    leaves a rank with nothing: it still runs a step (DDP needs every rank in each all-reduce) on one example,
    with share 0, so it adds nothing to the gradient."""
    part = np.array_split(indices, ranks.world)[ranks.rank]
    if len(part) == 0:
        return indices[:1], 0.0
    return part, len(part) / len(indices)


def _reseed(seed: int, step: int, rank: int) -> None:
    """Dropout depends on the step (and rank) only. Rank 0, and a single process, keep the seed they always had
    (earlier caches resume); other ranks draw their own masks rather than repeat rank 0's."""
    if rank == 0:
        torch.manual_seed(seed * 1_000_003 + step)
    else:
        torch.manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))


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


def _optimizer(model, settings: TrainSettings) -> torch.optim.AdamW:
    """AdamW over `model`'s trainable parameters, fused (one kernel for every tensor's update) where torch has
    that kernel for them. On CPU the default multi-tensor AdamW step dominates a small network's training step:
    measured on 2 cores, 133 ms per step for a 15k x 256 static table, 13 ms fused; a checkpoint of either
    resumes in the other (the optimizer state is the same tensors)."""
    groups = _groups(model, settings)
    try:
        return torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay)


def _silent(message: str) -> None:
    pass


def _global(loss, parts: dict, share: float) -> tuple[float, dict]:
    """The global batch's loss and parts, from every rank's own (weighted by its share of the batch's examples)."""
    import torch.distributed as dist

    values = torch.tensor([float(loss.detach()), *parts.values()], dtype=torch.float64, device=loss.device) * share
    dist.all_reduce(values)
    return float(values[0]), dict(zip(parts, values[1:].tolist()))


def train(model, n_examples: int, step_loss: Callable, settings: TrainSettings, folder: Path, desc: str,
          echo: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
          stop_after: int | None = None, lengths=None, ranks: Ranks | None = None) -> dict:
    """Train `model` in place on examples 0..n_examples-1.

    `step_loss(model, indices)` returns (loss tensor, {part: float}). `folder` holds the
    checkpoint and, once finished, the final weights: a later call with a finished
    folder only loads them. `stop_after` ends the call after that many steps in total
    (tests use it to interrupt a run). `lengths` (per example) turns on length-grouped
    batches. Parameters with requires_grad False stay frozen. `ranks`: this process is one rank of a
    data-parallel group (see the module's docstring); the loss history is the global batch's on every rank.
    Returns {"steps", "resumed_from", "loss_history"}.
    """
    from tqdm import tqdm

    lead = ranks is None or ranks.rank == 0
    echo = echo if lead else _silent  # rank 0 speaks for the group
    folder.mkdir(parents=True, exist_ok=True)
    final = _shared(_usable(_load(folder / FINAL, echo), model, folder / FINAL, echo, FINAL_KEYS) if lead
                    else None, ranks)
    if final is not None:
        model.load_state_dict(final["model"])
        return {"steps": final["steps"], "resumed_from": final["steps"], "loss_history": final["loss_history"],
                "cached": True}

    steps_per_epoch = math.ceil(n_examples / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(model, settings)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total))
    step, history, running = 0, [], None
    checkpoint = _shared(_usable(_load(folder / CHECKPOINT, echo), model, folder / CHECKPOINT, echo,
                                 CHECKPOINT_KEYS, total) if lead else None, ranks)
    if checkpoint is not None:
        initial = {name: value.detach().clone() for name, value in model.state_dict().items()}
        try:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            step, history, running = checkpoint["step"], checkpoint["loss_history"], checkpoint["running_loss"]
            echo(f"  resuming {desc} at step {step}/{total}")
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
            # Every rank read the same checkpoint, so every rank fails alike and starts over alike.
            echo(f"  {shown(folder / CHECKPOINT)} does not fit this training ({type(e).__name__}); starting this "
                 "training over")
            model.load_state_dict(initial)
            optimizer = _optimizer(model, settings)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total))
            step, history, running = 0, [], None
    resumed_from = step
    began = time.perf_counter()
    batches, batches_epoch = [], None
    last_line = -10.0

    parallel = None
    if ranks is not None:
        from torch.nn.parallel import DistributedDataParallel

        # find_unused_parameters: a loss may leave some of the student out (heads of tasks no loss reads).
        parallel = DistributedDataParallel(_Step(model), find_unused_parameters=True)

    model.train()
    with tqdm(total=total, initial=step, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True,
              disable=None if lead else True) as bar:
        while step < total:
            if stop_after is not None and step >= stop_after:
                break
            epoch, position = divmod(step, steps_per_epoch)
            if batches_epoch != epoch:
                batches, batches_epoch = epoch_batches(n_examples, settings.batch_size, settings.seed, epoch,
                                                       lengths), epoch
            indices = batches[position]
            _reseed(settings.seed, step, ranks.rank if ranks else 0)
            optimizer.zero_grad(set_to_none=True)
            if parallel is None:
                loss, parts = step_loss(model, indices)
                loss.backward()
                value = float(loss.detach())
            else:
                shard, share = _shard(indices, ranks)
                loss, parts = parallel(step_loss, shard)
                # DDP averages gradients over ranks: weighting each rank's mean loss by world x its share of the
                # batch makes the average the gradient of the global batch's mean (exact for per-example means).
                (loss * (share * ranks.world)).backward()
                value, parts = _global(loss, parts, share)
            # After the all-reduce every rank holds the same gradient: clipping and the step stay identical.
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
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
            if lead and step % settings.checkpoint_every == 0 and step < total:
                _save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "loss_history": history,
                       "running_loss": running}, folder / CHECKPOINT)
    model.eval()
    if lead and step >= total:
        _save({"model": model.state_dict(), "steps": step, "loss_history": history}, folder / FINAL)
        (folder / CHECKPOINT).unlink(missing_ok=True)
    return {"steps": step, "resumed_from": resumed_from, "loss_history": history, "cached": False}
