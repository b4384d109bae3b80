"""A Hugging Face model as torch.onnx exports it: named tensor inputs, one named output as a tuple."""

from __future__ import annotations


def hf_module(model, output: str, accepted: tuple[str, ...]):
    """`model` (a transformers PreTrainedModel) as a module whose forward takes the inputs of `accepted` that
    the model's own forward takes, by keyword, and returns `(model(...)[output],)`. Keyword arguments throughout:
    transformers 5 changed the positional order of BertModel's forward."""
    import inspect

    import torch

    takes = set(inspect.signature(model.forward).parameters)
    names = tuple(name for name in accepted if name in takes)

    class HFOutput(torch.nn.Module):
        input_names = names
        output_names = (output,)

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, pixel_values=None):
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                     "pixel_values": pixel_values}
            return (self.model(**{name: given[name] for name in names if given[name] is not None})[output],)

    return HFOutput().eval()
