"""No file edgekit is handed runs code: pickled modules need an explicit opt-in, cache checkpoints never unpickle."""

import os

import torch

from edgekit.modeling.models import ModelSource, load_torch_module
from edgekit.stages.distill.trainer import CHECKPOINT, FINAL, TrainSettings, train
from edgekit.testing import tiny_cnn
from edgekit.trust.cache import write_checked


class _Payload:
    """Unpickling this object calls os.system: the side effect proves whether a file's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_file(path, marker, obj=None) -> None:
    torch.save(obj if obj is not None else {"model": _Payload(marker)}, path)


def test_a_pickle_that_runs_code_is_refused_by_default_and_its_code_never_runs(tmp_path, run_cli):
    # setup
    marker = tmp_path / "ran"
    _evil_file(tmp_path / "model.pt", marker)
    # execute: as a model to export, and as a recipe's teacher file
    exported = run_cli("export", tmp_path / "model.pt", "--task", "image-classification", "-o", tmp_path / "out")
    # assert
    assert exported.exit_code == 1 and "Traceback" not in exported.output
    assert "unpickling it runs code from the file" in exported.output and "--trust-pickle" in exported.output
    assert "torch.jit.save" in exported.output
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_a_pickled_module_loads_only_with_the_opt_in(tmp_path):
    # setup: a real pickled module (torch.save(model)), and the same model as TorchScript
    pickled = tiny_cnn(tmp_path / "pickled.pt", kind="pickle")
    scripted = tiny_cnn(tmp_path / "scripted.pt", kind="torchscript")
    # execute / assert: TorchScript needs no permission; the pickle loads when trusted, and says how otherwise
    assert isinstance(load_torch_module(ModelSource("torch", str(scripted), True)), torch.nn.Module)
    assert isinstance(load_torch_module(ModelSource("torch", str(pickled), True), trust_pickle=True), torch.nn.Module)
    try:
        load_torch_module(ModelSource("torch", str(pickled), True))
        raise AssertionError("a pickled module loaded without trust_pickle")
    except Exception as e:  # noqa: BLE001 - the type is asserted below
        assert type(e).__name__ == "InvalidModelFile" and "teacher.trust_pickle: true" in str(e)


def test_a_cache_checkpoint_replaced_by_a_pickle_with_a_matching_sidecar_never_runs(tmp_path):
    # setup: whoever can write the cache writes both the file and its sha256
    folder, marker = tmp_path / "student", tmp_path / "ran"
    folder.mkdir()
    for name in (FINAL, CHECKPOINT):
        write_checked(folder / name, lambda tmp: _evil_file(tmp, marker))
    model, messages = torch.nn.Linear(4, 2), []

    def step_loss(net, indices):
        loss = net(torch.ones(len(indices), 4)).pow(2).mean()
        return loss, {"mse": float(loss.detach())}

    # execute
    history = train(model, 8, step_loss, TrainSettings(epochs=1, batch_size=4, lr=1e-2), folder, "tiny",
                    echo=messages.append)
    # assert: the entries are treated as corrupt, training runs from the start, the payload never runs
    assert not marker.exists()
    assert history["steps"] == 2 and history["cached"] is False
    assert any("holds more than tensors" in m and FINAL in m for m in messages)
    # and what training wrote back loads with the weights-only unpickler
    assert set(torch.load(folder / FINAL, weights_only=True)) == {"model", "steps", "loss_history"}


def test_a_recipes_pickled_teacher_is_refused_before_it_runs(tmp_path):
    # setup
    from edgekit.errors import InvalidModelFile
    from edgekit.pipeline import distill_and_export
    from edgekit.stages.loading import recipe_from_dict

    marker = tmp_path / "ran"
    _evil_file(tmp_path / "teacher.pt", marker, _Payload(marker))
    recipe = recipe_from_dict({
        "name": "evil", "teacher": {"model": str(tmp_path / "teacher.pt"), "kind": "image-classifier",
                                    "head": "finetune"},
        "tasks": [{"name": "digits", "kind": "image-classification", "data": {"source": "digits"}}],
        "budget": {"speedup": 1}})
    # execute / assert: refused with the fix, nothing ran, no run folder
    try:
        distill_and_export(recipe, out=tmp_path / "run", cache_dir=tmp_path / "cache", echo=print)
        raise AssertionError("the pickled teacher was loaded")
    except InvalidModelFile as e:
        assert "teacher.trust_pickle: true" in str(e)
    assert not marker.exists() and not (tmp_path / "run").exists()
