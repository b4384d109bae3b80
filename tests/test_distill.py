import torch

from edgekit.recipe import LossSpec
from edgekit.stages.distill.losses import total_loss
from edgekit.stages.distill.trainer import TrainSettings, train


def _problem(seed=0):
    """A small regression with dropout, so determinism covers the RNG too."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 8, generator=generator)
    y = x @ torch.randn(8, 1, generator=generator)
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))

    def step_loss(net, indices):
        loss = torch.nn.functional.mse_loss(net(x[indices]), y[indices])
        return loss, {"mse": float(loss)}

    return model, step_loss


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path):
    # setup
    settings = TrainSettings(epochs=3, batch_size=16, lr=1e-2, checkpoint_every=5)
    straight, step_loss = _problem()
    interrupted, _ = _problem()
    resumed, _ = _problem()
    # execute
    train(straight, 96, step_loss, settings, tmp_path / "a", "straight")
    first = train(interrupted, 96, step_loss, settings, tmp_path / "b", "interrupted", stop_after=10)
    second = train(resumed, 96, step_loss, settings, tmp_path / "b", "resumed")
    # assert
    assert first["steps"] == 10 and second["resumed_from"] == 10 and second["steps"] == 18
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_a_finished_run_is_loaded_not_repeated(tmp_path):
    # setup
    settings = TrainSettings(epochs=1, batch_size=32, lr=1e-2)
    model, step_loss = _problem()
    train(model, 96, step_loss, settings, tmp_path, "first")
    again, _ = _problem()
    # execute
    result = train(again, 96, step_loss, settings, tmp_path, "second")
    # assert
    assert result["cached"] and torch.equal(model[0].weight, again[0].weight)


def test_a_corrupt_checkpoint_restarts_training(tmp_path):
    # setup
    settings = TrainSettings(epochs=2, batch_size=16, lr=1e-2, checkpoint_every=3)
    model, step_loss = _problem()
    train(model, 96, step_loss, settings, tmp_path, "partial", stop_after=4)
    (tmp_path / "checkpoint.pt").write_bytes(b"truncated")
    messages = []
    # execute
    result = train(model, 96, step_loss, settings, tmp_path, "again", echo=messages.append)
    # assert
    assert result["resumed_from"] == 0 and result["steps"] == 12
    assert "fails its sha256 (corrupt or truncated); starting this training over" in messages[0]


def test_losses_are_zero_for_a_perfect_student_and_ignore_unlabeled():
    # setup
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    embedding = torch.nn.functional.normalize(torch.randn(2, 4), dim=-1)
    outputs = {"logits": {"s": logits}, "embedding": embedding}
    batch = {"labels": {"s": torch.tensor([0, -1])}, "layer_map": {}}
    specs = [LossSpec(name="kl"), LossSpec(name="mse"), LossSpec(name="cosine")]
    # execute
    loss, parts = total_loss(specs, outputs, outputs, batch)
    ce, _ = total_loss([LossSpec(name="ce")], outputs, outputs, batch)
    # assert
    assert abs(float(loss)) < 1e-6 and set(parts) == {"kl", "mse", "cosine"}
    expected = torch.nn.functional.cross_entropy(logits[:1], torch.tensor([0]))
    assert torch.isclose(ce, expected)
