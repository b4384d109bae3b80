"""Errors a user can fix. Each message says what went wrong and how to fix it.

The CLI prints these without a traceback and exits non-zero; any other
exception is a bug in edgekit and keeps its traceback.
"""


class EdgekitError(Exception):
    """Base class: an error whose message names the fix."""

    exit_code = 1


class ModelNotFound(EdgekitError):
    """A model path or hub id that cannot be loaded."""


class UnknownTask(EdgekitError):
    """A task name edgekit does not support, or one the model cannot serve."""


class DataError(EdgekitError):
    """A data source that is missing, unreadable or of the wrong shape."""


class ExportFailed(EdgekitError):
    """The exporter itself failed (before any parity check could run)."""


class ExportMismatch(EdgekitError):
    """The ONNX file disagrees with PyTorch on real inputs.

    `mismatches` maps each differing output name to its max absolute difference.
    """

    def __init__(self, message: str, mismatches: dict[str, float]):
        super().__init__(message)
        self.mismatches = mismatches


class InvalidModelFile(EdgekitError):
    """A file that is not a loadable ONNX model (truncated, corrupt, wrong format)."""


class ExecutorError(EdgekitError):
    """An executor that cannot run the work: Ray missing, its cluster unreachable, no node to time on."""


class UnreadableModel(InvalidModelFile):
    """An ONNX file stamped with an IR version or opset newer than the installed onnxruntime reads."""


class ProviderUnavailable(EdgekitError):
    """An ONNX Runtime execution provider that is not installed or fell back to another."""


class BenchConfigError(EdgekitError):
    """Benchmark settings that do not fit the model (shapes, dims, lengths)."""


class TeacherTooWeak(EdgekitError):
    """The teacher is no better than a trivial predictor on a task: there is nothing to distill."""


class QuantizationFailed(EdgekitError):
    """ONNX Runtime's quantizer failed on a file (or wrote one that does not load)."""
class BudgetNotMet(EdgekitError):
    """No candidate can meet the latency (or size) budget."""

    exit_code = 2


class OutsideFolder(EdgekitError):
    """A file name read from a manifest, report or ONNX file that resolves outside its folder."""


class BundleMismatch(EdgekitError):
    """A bundle whose files, outputs or timing differ from its manifest."""


class RecipeError(EdgekitError):
    """A recipe that does not validate, or whose parts do not fit together."""


class TeacherError(EdgekitError):
    """A teacher whose outputs cannot be learned from (NaN or inf)."""


class SigningError(EdgekitError):
    """A key or signature edgekit cannot use (missing, wrong kind, the signing extra not installed)."""


class OutputExists(EdgekitError):
    """The output folder already holds results."""


class OutputLocked(EdgekitError):
    """Another process is writing the same output folder."""


class BundleError(EdgekitError):
    """A bundle that cannot be written from this run (unknown file, not a run folder, .ort mismatch)."""


class ExtensionsMissing(EdgekitError):
    """A model with onnxruntime-extensions' custom ops (a tokenizer inside the graph) and no package to run them."""
