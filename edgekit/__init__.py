"""edgekit: ship small, fast models to edge devices, with measured proof.

Importing the package stays light: torch and onnxruntime load only inside the
functions that need them, so `edgekit --help` starts instantly.

The Python API of the main job:

    from edgekit import load_recipe, distill_and_export
    report = distill_and_export(load_recipe("recipes/minilm-multitask.yaml"), out="runs/demo")
    report.selected        # {"name", "onnx", "provider", "bundle"}, or None
    report.files           # the evaluation matrix: every file x provider, metrics and latency
    report.data            # everything in report.json
"""

__version__ = "0.1.0"

# name -> module; resolved on first use so `import edgekit` loads neither pydantic nor torch.
_API = {
    "Recipe": "edgekit.recipe",
    "load_recipe": "edgekit.stages.loading",
    "recipe_from_dict": "edgekit.stages.loading",
    "distill_and_export": "edgekit.pipeline",
    "RunReport": "edgekit.stages.report",
    "sweep": "edgekit.pipeline",
    "quantize_file": "edgekit.runtime.quantize",
    "bundle_from_run": "edgekit.stages.bundle",
    "verify_bundle": "edgekit.trust.verify",
}
__all__ = ["Recipe", "RunReport", "__version__", "bundle_from_run", "distill_and_export", "load_recipe",
           "quantize_file", "recipe_from_dict", "sweep", "verify_bundle"]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'edgekit' has no attribute '{name}'")
