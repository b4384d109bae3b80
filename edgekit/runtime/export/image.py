"""Image classification: plain torch modules (TorchScript or pickled) and HF image models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from edgekit.data import load_images
from edgekit.errors import DataError
from edgekit.modeling.models import ModelSource, load_config, load_hf, load_torch_module
from edgekit.modeling.sentence_config import read_json
from edgekit.runtime.export.wrappers import hf_module
from edgekit.runtime.feeds import batched

PARITY_BATCH = 16


def _hf_pixel_values(images, source: ModelSource, config):
    """Resize (N, C, H, W) [0, 1] images to the model's input and normalize them as its
    image processor would (mean/std from preprocessor_config.json when present)."""
    import numpy as np
    import torch

    size = getattr(config, "image_size", images.shape[-1])
    channels = getattr(config, "num_channels", images.shape[1])
    x = torch.nn.functional.interpolate(torch.from_numpy(images), size=(size, size), mode="bilinear")
    if x.shape[1] != channels:
        x = x.mean(dim=1, keepdim=True).repeat(1, channels, 1, 1)
    mean, std = [0.5] * channels, [0.5] * channels
    processor_file = Path(source.location) / "preprocessor_config.json"
    if source.local and processor_file.is_file():
        processor = read_json(processor_file)  # size and depth limited, errors name the file
        mean, std = processor.get("image_mean", mean), processor.get("image_std", std)
    x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    return x.numpy().astype(np.float32)


@dataclass(frozen=True)
class ImageClassification:
    name: str = "image-classification"
    default_data: str = "digits"
    # For torch.onnx.export; outputs get the same batch axis.
    inputs: ClassVar[dict] = {"pixel_values": {0: "batch_size"}}

    def check_source(self, source: ModelSource) -> None:
        pass  # both HF image models and plain torch modules serve this task

    def load_torch(self, source: ModelSource, trust_pickle: bool = False):
        if source.kind == "hf":
            return load_hf(source, "AutoModelForImageClassification")
        return load_torch_module(source, trust_pickle)

    def parity_batches(self, source: ModelSource, data: str | None, samples: int,
                       static_shape: tuple[int, int] | None = None, column: str = "text") -> list[dict]:
        """Real images (scikit-learn digits by default), every class represented."""
        images = load_images(data or self.default_data)
        images = images[:: max(1, len(images) // samples)][:samples]
        if source.kind == "hf":
            images = _hf_pixel_values(images, source, load_config(source))
        batch_size = static_shape[0] if static_shape else PARITY_BATCH
        if len(images) < batch_size:
            raise DataError(f"only {len(images)} images for a batch of {batch_size}: give more images.")
        return [{"pixel_values": chunk} for chunk in batched(images, batch_size, exact=bool(static_shape))]

    def input_axes(self, names) -> dict:
        return dict(self.inputs)

    def export_module(self, model):
        """A Hugging Face classifier as the exporter takes it (pixel_values in, logits out); a torch module as
        it is (its outputs named by torch_outputs)."""
        if hasattr(getattr(model, "config", None), "model_type"):
            return hf_module(model, "logits", ("pixel_values",))
        return model

    def real_positions(self, feed: dict, output):
        return None  # every value of an image model's output is meaningful

    def torch_outputs(self, model, feed: dict) -> dict:
        import torch

        with torch.inference_mode():
            out = model(torch.from_numpy(feed["pixel_values"]))
        if isinstance(out, torch.Tensor):
            return {"logits": out.numpy()}
        if isinstance(out, dict) or hasattr(out, "items"):
            return {k: v.numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}
        return {f"output_{i}": t.numpy() for i, t in enumerate(out)}
