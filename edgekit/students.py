"""Student architectures derived from the teacher, initialized from its weights.

Text students keep k of the teacher's layers (DistilBERT-style every-other layer by
default) and may narrow the hidden width, heads or feed-forward size; image students
are edgekit ConvNets of the recipe's widths and depths. Every parameter whose
teacher counterpart is at least as large is initialized from the teacher's leading
slice (layer j of the student from its mapped teacher layer); the rest stay random.
Distillation does the remaining work (FIELD-NOTES: untrained 1-3 layer students
keep only 0.2-0.4 cosine to the teacher).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from edgekit.recipe import RecipeError, StudentSpace

# Where the layer index sits in a parameter name: BERT-family encoders and edgekit's ConvNet.
TEXT_LAYER = re.compile(r"\.layer\.(\d+)\.")
CONV_BLOCK = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class Candidate:
    name: str  # e.g. "L2", "L2-h256", "cnn-w8-d1"
    arch: dict  # text: layers, keep, hidden, heads, ffn; image: width, depth


def kept_layers(total: int, k: int, choice: str) -> list[int]:
    """Which teacher layers a k-layer student starts from. `spread` takes every
    (total/k)-th layer starting at 0 (6 -> 3: 0, 2, 4, as DistilBERT)."""
    if choice == "first":
        return list(range(k))
    if choice == "last":
        return list(range(total - k, total))
    return [round(i * total / k) for i in range(k)]


def text_candidates(teacher_config, space: StudentSpace) -> list[Candidate]:
    total = teacher_config.num_hidden_layers
    out = []
    for k in sorted(set(space.layers)):
        if not 1 <= k < total:
            raise RecipeError(f"students.layers: {k} is not between 1 and {total - 1} (the teacher has {total} "
                              "layers; a student keeps fewer).")
        for hidden in space.hidden:
            for heads in space.heads:
                for ffn in space.ffn:
                    arch = {"layers": k, "keep": kept_layers(total, k, space.layer_choice),
                            "hidden": hidden or teacher_config.hidden_size,
                            "heads": heads or teacher_config.num_attention_heads,
                            "ffn": ffn or teacher_config.intermediate_size}
                    if arch["hidden"] % arch["heads"]:
                        raise RecipeError(f"students: hidden {arch['hidden']} is not divisible by heads "
                                          f"{arch['heads']}; pick widths that are multiples of the head count.")
                    suffix = "".join(f"-{tag}{arch[key]}" for tag, key, value in
                                     (("h", "hidden", hidden), ("a", "heads", heads), ("f", "ffn", ffn))
                                     if value is not None)
                    out.append(Candidate(f"L{k}{suffix}", arch))
    return out


def image_candidates(space: StudentSpace) -> list[Candidate]:
    return [Candidate(f"cnn-w{w}-d{d}", {"width": w, "depth": d})
            for d in sorted(set(space.depths)) for w in sorted(set(space.widths))]


def _slice_into(target, source) -> bool:
    """Copy source's leading slice into target when every dimension allows."""
    if target.ndim != source.ndim or any(t > s for t, s in zip(target.shape, source.shape)):
        return False
    target.copy_(source[tuple(slice(0, n) for n in target.shape)])
    return True


def _teacher_name(name: str, pattern: re.Pattern, layer_map: dict[int, int]) -> str:
    match = pattern.search(name)
    if not match or int(match.group(1)) not in layer_map:
        return name
    return name[:match.start(1)] + str(layer_map[int(match.group(1))]) + name[match.end(1):]


def init_from_teacher(student, teacher, layer_map: dict[int, int], pattern: re.Pattern = TEXT_LAYER) -> dict:
    """Initialize student parameters from the teacher's; `layer_map` maps a student layer
    index (found in names by `pattern`) to the teacher layer it starts from.
    Returns {"copied": n, "random": [names]}."""
    import torch

    teacher_state = teacher.state_dict()
    copied, random = 0, []
    with torch.no_grad():
        for name, tensor in student.state_dict().items():
            source = teacher_state.get(_teacher_name(name, pattern, layer_map))
            if source is not None and _slice_into(tensor, source):
                copied += 1
            else:
                random.append(name)
    return {"copied": copied, "random": random}


def build_text_student(teacher_model, candidate: Candidate, attention_outputs: bool = False):
    """A TextModel with the candidate's shape, initialized from the teacher's TextModel."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    from edgekit.networks import TextModel

    arch = candidate.arch
    config = copy.deepcopy(teacher_model.backbone.config)
    config.num_hidden_layers = arch["layers"]
    config.hidden_size, config.num_attention_heads = arch["hidden"], arch["heads"]
    config.intermediate_size = arch["ffn"]
    # Attention maps are only returned by the eager implementation.
    implementation = "eager" if attention_outputs else "sdpa"
    auto = AutoModelForSequenceClassification if teacher_model.kind == "sequence-classifier" else AutoModel
    torch.manual_seed(0)
    backbone = auto.from_config(config, attn_implementation=implementation)
    teacher_dim = teacher_model.backbone.config.hidden_size
    projection = None
    if teacher_model.kind == "sentence-encoder" and arch["hidden"] != teacher_dim:
        # A narrower student projects into the teacher's embedding space, so embedding
        # losses and the teacher's heads still apply (TinyBERT's W_h).
        projection = torch.nn.Linear(arch["hidden"], teacher_dim)
        with torch.no_grad():
            projection.weight.copy_(torch.eye(teacher_dim, arch["hidden"]))
            projection.bias.zero_()
    heads = {name: copy.deepcopy(head) for name, head in teacher_model.heads.items()}
    student = TextModel(backbone, teacher_model.kind, heads, teacher_model.pooling, teacher_model.normalize,
                        teacher_model.classifier_task, projection)
    init = init_from_teacher(student.backbone, teacher_model.backbone, dict(enumerate(arch["keep"])))
    return student.eval(), init


def build_image_student(teacher_model, candidate: Candidate, in_channels: int, num_classes: int):
    """An ImageModel around an edgekit ConvNet; initialized from the teacher when it is one too."""
    import torch

    from edgekit.networks import ConvNet, ImageModel

    arch = candidate.arch
    torch.manual_seed(0)
    net = ConvNet(in_channels, arch["width"], arch["depth"], num_classes)
    init = {"copied": 0, "random": [n for n, _ in net.state_dict().items()]}
    if isinstance(teacher_model.net, ConvNet):
        total = teacher_model.net.config["depth"]
        layer_map = dict(enumerate(kept_layers(total, min(arch["depth"], total), "spread")))
        init = init_from_teacher(net, teacher_model.net, layer_map, CONV_BLOCK)
    return ImageModel(net, teacher_model.task).eval(), init
