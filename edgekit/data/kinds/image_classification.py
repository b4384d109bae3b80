"""image-classification: images with class labels, scored by the argmax of a logits head.

Columns: image (float32 (N, C, H, W), the model input made by edgekit.data.preprocessing), label (int64
class index). Scored, predicted and compared as classification is; only the inputs differ: the
graph takes `pixel_values`, and an image has no token length.
"""

from __future__ import annotations

from edgekit.data.kinds.classification import Classification


class ImageClassification(Classification):
    name = "image-classification"
    input_columns = ("image",)
    target_column = "label"
    text_columns = ()
    what = ("image", "label")
    description = "images with class labels"
    images = True
    builtins = ("digits",)

    def length_texts(self, columns: dict) -> list[str]:
        return []

    def example_lengths(self, columns: dict, lengths):
        return None

    def run_logits(self, session, columns: dict, output: str, tokenizer, max_length: int, batch_size: int):
        from edgekit.runtime.graph_io import run_images

        return run_images(session, columns["image"], output, batch_size)


KIND = ImageClassification()
