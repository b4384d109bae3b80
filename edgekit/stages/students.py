"""Student architectures derived from the teacher, initialized from its weights.

Text students keep k of the teacher's layers (DistilBERT-style every-other layer by
default) and may narrow the hidden width, heads or feed-forward size, in the teacher's own
family (TEXT_FAMILIES: the encoders whose config and weight names edgekit knows). Image students
of a Hugging Face ViT teacher are ViTs that keep k of its layers the same way (its layers sit at
`vit.encoder.layer.<i>.` too); of any other image teacher, edgekit ConvNets of the recipe's widths
and depths. Every parameter whose teacher counterpart is at least as large is initialized from the teacher's leading
slice (layer j of the student from its mapped teacher layer); the rest stay random.
Distillation does the remaining work (FIELD-NOTES: untrained 1-3 layer students
keep only 0.2-0.4 cosine to the teacher).

A sentence-encoder teacher also gets static-embedding students (`students.static`, named S<dim>):
a table of token vectors made from the teacher as model2vec makes one (edgekit.modeling.static), then
distilled like the others (networks.StaticModel).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from edgekit.errors import RecipeError
from edgekit.modeling.families import is_hf_image, text_family, wants_layer_students
from edgekit.recipe import StudentSpace

# Where the layer index sits in a parameter name: every family in TEXT_FAMILIES (`encoder.layer.3.`,
# DistilBERT's `transformer.layer.3.`, ModernBERT's `layers.3.`) and ViTs (transformers 4.x: `vit.encoder.layer.3.`,
# 5.x: `vit.layers.3.`); edgekit's ConvNet has its own.
TEXT_LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")
CONV_BLOCK = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class Candidate:
    name: str  # e.g. "L2", "L2-h256", "cnn-w8-d1"
    arch: dict  # text and ViT: layers, keep, hidden, heads, ffn; CNN: width, depth


def kept_layers(total: int, k: int, choice: str) -> list[int]:
    """Which teacher layers a k-layer student starts from. `spread` takes every
    (total/k)-th layer starting at 0 (6 -> 3: 0, 2, 4, as DistilBERT)."""
    if choice == "first":
        return list(range(k))
    if choice == "last":
        return list(range(total - k, total))
    return [round(i * total / k) for i in range(k)]


def text_candidates(teacher_config, space: StudentSpace) -> list[Candidate]:
    """Layer-dropped students of a text teacher: none when the recipe names static students alone
    (families.wants_layer_students), whatever the teacher's architecture."""
    if not wants_layer_students(space):
        return []
    family = text_family(teacher_config)  # before anything is built: an unknown family fails here
    if not family.narrow and any(value is not None for value in (*space.hidden, *space.heads, *space.ffn)):
        raise RecipeError(f"students: {family.label} students keep the teacher's widths (its fused attention and "
                          "feed-forward weights cannot be sliced): remove students.hidden, heads and ffn, and "
                          "choose students.layers.")
    return _layer_candidates(teacher_config, space, family.ffn)


def _layer_candidates(teacher_config, space: StudentSpace, ffn_name: str) -> list[Candidate]:
    """Layer-dropped (and optionally narrowed) students of a transformer teacher."""
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
                            "ffn": ffn or getattr(teacher_config, ffn_name)}
                    if arch["hidden"] % arch["heads"]:
                        raise RecipeError(f"students: hidden {arch['hidden']} is not divisible by heads "
                                          f"{arch['heads']}; pick widths that are multiples of the head count.")
                    suffix = "".join(f"-{tag}{arch[key]}" for tag, key, value in
                                     (("h", "hidden", hidden), ("a", "heads", heads), ("f", "ffn", ffn))
                                     if value is not None)
                    out.append(Candidate(f"L{k}{suffix}", arch))
    return out


def image_candidates(space: StudentSpace, teacher_model=None) -> list[Candidate]:
    """ViTs keeping students.layers of a ViT teacher's layers; else CNNs of students.widths x depths."""
    if teacher_model is not None and is_hf_image(teacher_model.net):
        return _layer_candidates(teacher_model.net.config, space, "intermediate_size")
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

    from edgekit.modeling.networks import TextModel

    arch = candidate.arch
    teacher_config = teacher_model.backbone.config
    family = text_family(teacher_config)
    config = copy.deepcopy(teacher_config)
    config.num_hidden_layers = arch["layers"]
    config.hidden_size, config.num_attention_heads = arch["hidden"], arch["heads"]
    setattr(config, family.ffn, arch["ffn"])
    for name in family.follow_hidden:
        if getattr(teacher_config, name, None) == teacher_config.hidden_size:
            setattr(config, name, arch["hidden"])
    if getattr(config, "attention_head_size", None) is not None and (
            arch["hidden"], arch["heads"]) != (teacher_config.hidden_size, teacher_config.num_attention_heads):
        config.attention_head_size = arch["hidden"] // arch["heads"]  # DeBERTa-v2 configs may spell it out
    # Attention maps are only returned by the eager implementation. Otherwise None lets transformers
    # pick sdpa where the family has it (BERT, DistilBERT, RoBERTa) and eager where it does not (MPNet,
    # DeBERTa, ELECTRA reject an explicit sdpa), whatever the teacher was loaded with.
    implementation = "eager" if attention_outputs else None
    for name, value in vars(teacher_config).items():  # per-layer settings (ModernBERT's layer_types) follow the layers
        if "layer" in name and isinstance(value, list) and len(value) == teacher_config.num_hidden_layers:
            setattr(config, name, [value[k] for k in arch["keep"]])
    auto = AutoModelForSequenceClassification if teacher_model.kind == "sequence-classifier" else AutoModel
    torch.manual_seed(0)
    backbone = auto.from_config(config, attn_implementation=implementation)
    teacher_dim = teacher_config.hidden_size
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
                        teacher_model.classifier_task, projection, copy.deepcopy(teacher_model.dense))
    init = init_from_teacher(student.backbone, teacher_model.backbone, dict(enumerate(arch["keep"])))
    return student.eval(), init


def build_image_student(teacher_model, candidate: Candidate, in_channels: int, num_classes: int):
    """An ImageModel around an edgekit ConvNet (initialized from the teacher when it is one too), or
    around a layer-dropped ViT of a ViT teacher."""
    import torch

    from edgekit.modeling.networks import ConvNet, ImageModel

    arch = candidate.arch
    if is_hf_image(teacher_model.net):
        return _build_vit_student(teacher_model, candidate)
    torch.manual_seed(0)
    net = ConvNet(in_channels, arch["width"], arch["depth"], num_classes)
    init = {"copied": 0, "random": [n for n, _ in net.state_dict().items()]}
    if isinstance(teacher_model.net, ConvNet):
        total = teacher_model.net.config["depth"]
        layer_map = dict(enumerate(kept_layers(total, min(arch["depth"], total), "spread")))
        init = init_from_teacher(net, teacher_model.net, layer_map, CONV_BLOCK)
    return ImageModel(net, teacher_model.task).eval(), init


def _build_vit_student(teacher_model, candidate: Candidate):
    """A ViT keeping the candidate's teacher layers: patch projection, position embeddings and [CLS]
    token, the kept layers, the final layernorm and the classifier copied (sliced when narrower)."""
    import torch
    from transformers import AutoModelForImageClassification

    from edgekit.modeling.networks import ImageModel

    arch, teacher_config = candidate.arch, teacher_model.net.config
    config = copy.deepcopy(teacher_config)
    config.num_hidden_layers = arch["layers"]
    config.hidden_size, config.num_attention_heads = arch["hidden"], arch["heads"]
    config.intermediate_size = arch["ffn"]
    torch.manual_seed(0)
    # The teacher's attention implementation: eager when it was loaded for the attention loss.
    net = AutoModelForImageClassification.from_config(
        config, attn_implementation=getattr(teacher_config, "_attn_implementation", None))
    init = init_from_teacher(net, teacher_model.net, dict(enumerate(arch["keep"])))
    return ImageModel(net, teacher_model.task).eval(), init


def static_vocabulary(recipe, teacher, token_ids: list[list[int]] | None = None):
    """The kept vocabulary (edgekit.modeling.static.Vocabulary) of the recipe's static students over the teacher's
    token ids: `token_ids` are the tokenized distillation texts (students.static_vocab: data)."""
    from edgekit.modeling.static import vocabulary

    size = teacher.model.backbone.get_input_embeddings().num_embeddings
    return vocabulary(teacher.tokenizer, size, recipe.students.static_vocab, token_ids)


def static_candidates(recipe, teacher, token_ids: list[list[int]] | None = None) -> list[Candidate]:
    """S<dim> for each of students.static: a table of `dim`-wide rows, one per kept token, projected to the
    teacher's width."""
    if not recipe.students.static:
        return []
    if recipe.teacher.kind != "sentence-encoder":  # the recipe's own check says so first; code-built specs too
        raise RecipeError(f"students.static: static-embedding students learn a sentence encoder's embeddings, "
                          f"and this teacher is a {recipe.teacher.kind}: remove students.static")
    width = teacher.model.backbone.config.hidden_size
    vocab = static_vocabulary(recipe, teacher, token_ids)
    out = []
    for dim in sorted(set(recipe.students.static), reverse=True):
        if dim > width:
            raise RecipeError(f"students.static: {dim} is wider than the teacher's {width}-wide embeddings (PCA "
                              f"keeps at most that many dimensions): pick dimensions up to {width}")
        # mean_of: what the embedding averages (its cache key: students trained before averaged special tokens too)
        out.append(Candidate(f"S{dim}", {"static": dim, "vocab": vocab.rows, "projection": width,
                                         "mean_of": "text tokens"}))
    return out


def is_static(candidate: Candidate) -> bool:
    return "static" in candidate.arch


def candidates(recipe, teacher, inputs=None) -> list[Candidate]:
    """The recipe's student space over the prepared teacher, checked against the distillation losses
    (hidden_mse and attention transfer compare tensors of the teacher's width and head count).
    `inputs` (the distillation set's TextInputs): the texts a static student's vocabulary is pruned to."""
    if recipe.teacher.images:
        found = image_candidates(recipe.students, teacher.model)
        if not found or "width" in found[0].arch:  # CNN students
            return _some(found)
        teacher_config = teacher.model.net.config  # a ViT's: its students are checked as text ones are
    else:
        teacher_config = teacher.model.backbone.config
        found = text_candidates(teacher_config, recipe.students)
    names = {loss.name for loss in recipe.distill.losses}
    for candidate in found:
        if "hidden_mse" in names and candidate.arch["hidden"] != teacher_config.hidden_size:
            raise RecipeError(f"distill.losses: hidden_mse compares hidden states of equal width, but student "
                              f"{candidate.name} is {candidate.arch['hidden']} wide and the teacher "
                              f"{teacher_config.hidden_size}: drop students.hidden or the hidden_mse loss.")
        if "attention" in names and candidate.arch["heads"] != teacher_config.num_attention_heads:
            raise RecipeError(f"distill.losses: attention transfer needs the teacher's head count "
                              f"({teacher_config.num_attention_heads}); student {candidate.name} has "
                              f"{candidate.arch['heads']}: drop students.heads or the attention loss.")
    if not recipe.teacher.images:
        found += static_candidates(recipe, teacher, inputs.ids if inputs is not None else None)
    return _some(found)


def _some(found: list[Candidate]) -> list[Candidate]:
    if not found:
        raise RecipeError("students: the student space is empty: name teacher layers to keep (students.layers, "
                          "e.g. [1, 2]) or, for a sentence encoder, static-embedding widths (students.static, "
                          "e.g. [256])")
    return found


def build_static_student(teacher, candidate: Candidate, vocab=None, cache=None):
    """A StaticModel of the candidate's shape: (model, init record). With `vocab` (its kept vocabulary,
    edgekit.modeling.static.Vocabulary) its table and projection start from the teacher (edgekit.modeling.static, the token
    pass cached in `cache`); without, they stay random (a probe: latency depends on shapes only)."""
    import torch

    from edgekit.modeling.networks import StaticModel
    from edgekit.modeling.static import initial_weights

    arch, teacher_model = candidate.arch, teacher.model
    size = teacher_model.backbone.get_input_embeddings().num_embeddings
    if vocab is not None and vocab.rows != arch["vocab"]:
        raise ValueError(f"{candidate.name} keeps {arch['vocab']} rows, its vocabulary now {vocab.rows}: "
                         "candidates and students must see the same distillation texts")
    # A probe's remap only has to stay inside the table: which row an id lands on does not change the time.
    remap = torch.from_numpy(vocab.remap) if vocab is not None else torch.arange(size) % arch["vocab"]
    heads = {name: copy.deepcopy(head) for name, head in teacher_model.heads.items()}
    torch.manual_seed(0)
    student = StaticModel(remap, arch["vocab"], arch["static"], arch["projection"], heads, teacher_model.normalize,
                          copy.deepcopy(teacher_model.dense), tuple(teacher.tokenizer.all_special_ids))
    names = [name for name, _ in student.state_dict().items()]
    if vocab is None:
        return student.eval(), {"copied": 0, "random": names}
    start = initial_weights(teacher_model, teacher.tokenizer, vocab, arch["static"], teacher.encoder_digest, cache)
    with torch.no_grad():
        student.backbone.table.weight.copy_(torch.from_numpy(start["table"]))
        # The PCA components, transposed: the projection maps a row back into the teacher's space, so the
        # untrained student's cosine similarities are the model2vec model's.
        student.projection.weight.copy_(torch.from_numpy(start["projection"]))
        student.projection.bias.zero_()
    made = ["backbone.table.weight", "projection.weight", "projection.bias", "backbone.remap"]
    made += [name for name in names if name.startswith(("heads.", "dense."))]  # the teacher's, copied
    return student.eval(), {"copied": len(made), "random": [name for name in names if name not in made],
                            "explained_variance": start["explained"]}


def build(candidate: Candidate, recipe, teacher, tasks, inputs=None, cache=None):
    """The untrained student of `candidate`, initialized from the teacher: (model, init record).
    A static student needs `inputs` (the distillation set: its vocabulary) and `cache` (the teacher's token
    pass) to start from the teacher; without them (a probe) its weights are random."""
    if is_static(candidate):
        vocab = None if inputs is None else static_vocabulary(recipe, teacher, inputs.ids)
        return build_static_student(teacher, candidate, vocab, cache)
    if recipe.teacher.images:
        task = tasks[0]
        return build_image_student(teacher.model, candidate, task.test["image"].shape[1], len(task.labels))
    attention = any(loss.name == "attention" for loss in recipe.distill.losses)
    return build_text_student(teacher.model, candidate, attention_outputs=attention)
