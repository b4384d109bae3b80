import numpy as np

from edgekit.data.inputs import TextInputs, run_model
from edgekit.data.tasks import load_task_data
from edgekit.stages.teacher import prepare_teacher
from edgekit.testing import tiny_recipe
from edgekit.trust.cache import Cache


def test_linear_heads_and_embeddings_computed_once_per_text(tiny_bert, tmp_path):
    # setup
    recipe = tiny_recipe(tiny_bert)
    tasks = [load_task_data(spec) for spec in recipe.tasks]
    cache = Cache(tmp_path)
    # execute
    teacher = prepare_teacher(recipe, tasks, cache)
    train = tasks[0].train["text"]
    extra = ["an unlabeled sentence", train[0]]  # one new text, one the head fit already embedded
    out = teacher.outputs(TextInputs(teacher.tokenizer, extra, teacher.max_length), "", cache)
    # assert: the memo holds each distinct text once, and matches a direct forward pass
    (entry,) = (tmp_path / "teacher-embeddings").iterdir()
    assert len(np.load(entry / "arrays.npz")["keys"]) == len(set(train)) + 1
    direct = run_model(teacher.model, TextInputs(teacher.tokenizer, extra, teacher.max_length))
    np.testing.assert_allclose(out["embedding"], direct["embedding"], atol=1e-5)
    np.testing.assert_allclose(out["logits"]["sentiment"], direct["logits"]["sentiment"], atol=1e-4)
    assert teacher.prepared["sentiment"]["train_examples"] == len(train)
    assert teacher.digest != teacher.encoder_digest  # the heads are part of the teacher's identity
