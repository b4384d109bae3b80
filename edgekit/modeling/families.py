"""The architectures edgekit derives students from, read from a teacher's config alone.

Layer-dropped (and narrowed) text students need a teacher of TEXT_FAMILIES (encoders whose config and weight
names edgekit knows); static-embedding students need only the teacher's outputs, so any model that turns text
into an embedding serves them (decoder embedders such as Qwen3 or Gemma3 included). A Hugging Face image
teacher must be one of IMAGE_FAMILIES; any torch module image teacher gets edgekit CNN students.
`family_problem` runs in the recipe check, before any work; edgekit.stages.students builds them.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.errors import RecipeError


@dataclass(frozen=True)
class TextFamily:
    """What a student of one encoder family needs beyond BERT's config names.

    Layers, hidden width and heads go through num_hidden_layers / hidden_size / num_attention_heads in
    every family (DistilBERT's config maps them to n_layers / dim / n_heads); the feed-forward width
    has no common name. `follow_hidden`: widths that equal hidden_size in the teacher and must shrink
    with a narrower student (DeBERTa's pooler runs on the hidden states; an embedding_size equal to
    hidden_size means "no embedding projection", as in ELECTRA-base)."""

    label: str
    ffn: str = "intermediate_size"
    follow_hidden: tuple[str, ...] = ()
    # Narrower students copy each weight's leading slice; a fused weight (ModernBERT's Wqkv holds Q, K and V,
    # its Wi the GLU's two halves) would get the wrong rows, so such a family keeps the teacher's widths.
    narrow: bool = True


# config.model_type -> family. Each one keeps its layers at `layer.<i>.` or `layers.<i>.` (students.TEXT_LAYER), takes
# attention_mask, and is tested in tests/test_families.py (build, copy, forward, ONNX parity).
# Relative position tables (MPNet's relative_attention_bias (buckets, heads), DeBERTa's rel_embeddings
# (2 * buckets, hidden)) live outside the layers and are sliced like any other tensor.
TEXT_FAMILIES = {
    "bert": TextFamily("BERT (MiniLM, BGE, E5, ...)"),
    "distilbert": TextFamily("DistilBERT", ffn="hidden_dim"),
    "roberta": TextFamily("RoBERTa"),
    "xlm-roberta": TextFamily("XLM-RoBERTa"),
    "camembert": TextFamily("CamemBERT"),
    "mpnet": TextFamily("MPNet"),
    "electra": TextFamily("ELECTRA", follow_hidden=("embedding_size",)),
    "deberta": TextFamily("DeBERTa", follow_hidden=("pooler_hidden_size", "embedding_size")),
    "deberta-v2": TextFamily("DeBERTa-v2/v3", follow_hidden=("pooler_hidden_size", "embedding_size")),
    # Per-layer settings (layer_types: global or sliding-window attention) follow the kept layers (students.py).
    "modernbert": TextFamily("ModernBERT", narrow=False),
}


# config.model_type -> label of the Hugging Face image classifiers students are derived from by
# keeping layers (tests/test_vit.py). Other architectures (Swin, ConvNeXt, ...) name their stages
# differently and are refused up front (family_problem).
IMAGE_FAMILIES = {"vit": "ViT (ViTForImageClassification)"}


def _supported() -> str:
    return ", ".join(f"{name} ({family.label})" for name, family in TEXT_FAMILIES.items())


def _unsupported(model_type: str | None, where: str) -> str:
    what = f"a '{model_type}' model" if model_type else "a model whose config.json names no model_type"
    return (f"edgekit cannot derive layer-dropped students (students.layers) from {where}: it is {what}, and "
            f"those are derived from the encoder families {_supported()}. Fix: distill static-embedding students "
            "only (students: {static: [256], layers: []}: they need only the teacher's outputs, any embedder "
            "serves), or pick a teacher of one of these families (any sentence-transformers or "
            "text-classification model built on them).")


def wants_layer_students(students) -> bool:
    """Whether the recipe asks for layer-dropped students: students.layers given, or left at its default while
    no static students are named (a recipe naming only static students by width wants those alone, whatever
    the teacher's architecture)."""
    if students is None:
        return True
    return bool(students.layers) and ("layers" in students.model_fields_set or not students.static)


def text_family(teacher_config) -> TextFamily:
    """The teacher's family, or RecipeError naming its architecture and the supported ones."""
    family = TEXT_FAMILIES.get(teacher_config.model_type)
    if family is None:
        architecture = ", ".join(getattr(teacher_config, "architectures", None) or []) or teacher_config.model_type
        raise RecipeError(_unsupported(teacher_config.model_type, f"the teacher ({architecture})"))
    return family


def family_problem(spec, students=None) -> str | None:
    """Why the recipe's students (a StudentSpace; None: layer-dropped ones) cannot be derived from its teacher,
    read from a local folder's config.json alone (so `check_recipe` finds it before any work), or None. Hub ids
    are checked when their config is loaded (text_candidates); image teachers are not text encoders."""
    from edgekit.errors import EdgekitError
    from edgekit.modeling.models import read_config, resolve_model

    if spec.images and spec.model == "edgekit:cnn":
        return None
    try:
        source = resolve_model(spec.model)
    except EdgekitError:
        return None  # the teacher check reports a teacher that cannot be found
    if source.kind != "hf" or not source.local:
        return None
    config = read_config(source.location)
    model_type = config.get("model_type")
    model_type = model_type if isinstance(model_type, str) else None  # a file's value: maybe any JSON type
    architectures = config.get("architectures")
    architecture = (", ".join(a for a in architectures if isinstance(a, str))
                    if isinstance(architectures, list) else "") or model_type
    where = f"'{spec.model}'" + (f" ({architecture})" if architecture else "")
    if spec.images:
        return None if model_type in IMAGE_FAMILIES else image_family_problem(model_type, where)
    if model_type in TEXT_FAMILIES or not wants_layer_students(students):
        return None
    return _unsupported(model_type, where)


def image_family_problem(model_type: str | None, where: str) -> str:
    what = f"a '{model_type}' model" if model_type else "a model whose config.json names no model_type"
    return (f"edgekit cannot derive image students from {where}: it is {what}, and students are derived from "
            f"the Hugging Face image classifiers {', '.join(f'{k} ({v})' for k, v in IMAGE_FAMILIES.items())}. "
            "Fix: pick a ViT teacher, a TorchScript or torch.save'd module file (students are then edgekit "
            "CNNs), or edgekit:cnn.")


def is_hf_image(net) -> bool:
    """A Hugging Face image classifier students are derived from by keeping layers (a ViT)."""
    return getattr(getattr(net, "config", None), "model_type", None) in IMAGE_FAMILIES
