"""The web providers: onnxruntime-web in headless Chromium, measured like any ONNX Runtime provider.

A web app runs the shipped file in onnxruntime-web (WebAssembly kernels, not the native ones): its outputs and
its speed are those of the browser's runtime, so a file meant for the web is scored and timed there, not on the
native CPU provider. `WebSession` stands in for an ORT InferenceSession where evaluate.py and bench.py use one
(get_inputs/get_outputs/run); behind it one Node process per Python process (web_assets/bridge.cjs, started on
first use and reused by every session) drives one Chromium with playwright-core, talking JSON lines over its
stdin/stdout. Latency is taken inside the page (performance.now() around each session.run: `timed_runs`), never
across the pipe, whose round trip is not the app's.

What it needs: node on PATH, Chromium ($EDGEKIT_CHROMIUM, else /usr/bin/chromium) and the npm packages of
web/package.json ($EDGEKIT_WEB_MODULES, else <repo>/web/node_modules): `make setup-web` installs them.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import functools
import itertools
import json
import os
import queue
import secrets
import shutil
import subprocess
import threading
from collections import deque
from dataclasses import asdict
from pathlib import Path

from edgekit.errors import InvalidModelFile, ModelNotFound, ProviderUnavailable
from edgekit.trust.reading import shown

# edgekit's web provider names -> onnxruntime-web's execution provider (they are not ORT EP names).
WEB_PROVIDERS = {"wasm": "wasm", "webgpu": "webgpu"}
ASSETS = Path(__file__).resolve().parents[1] / "web_assets"
SETUP_FIX = "run `make setup-web` (Debian's chromium and web/package.json's npm packages)"
PLACEMENT = {"recorded": False, "why": "onnxruntime-web does not report node placement"}
# Seconds a bridge call may take before the bridge counts as hung: starting Chromium, making a session (the
# wasm compile), one run of a batch. Timed loops get their own allowance (timed_runs).
START_S, OPEN_S, RUN_S = 90.0, 180.0, 300.0


def is_web(provider: str) -> bool:
    return provider.lower() in WEB_PROVIDERS


def modules_folder() -> Path:
    """Where the npm packages are: $EDGEKIT_WEB_MODULES, else the checkout's web/node_modules."""
    return Path(os.environ.get("EDGEKIT_WEB_MODULES") or Path(__file__).resolve().parents[2] / "web" / "node_modules")


def chromium_path() -> Path:
    return Path(os.environ.get("EDGEKIT_CHROMIUM") or "/usr/bin/chromium")


def _package_version(name: str) -> str | None:
    try:
        return json.loads((modules_folder() / name / "package.json").read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


@functools.cache
def _chromium_version(path: str) -> str | None:
    """'150.0.7871.100', from `chromium --version` (no browser started: cache keys need it on every run)."""
    try:
        out = subprocess.run([path, "--version"], check=False, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    words = [w for w in out.split() if w[:1].isdigit() and "." in w]
    return words[0] if words else None


def web_versions() -> dict:
    """{"onnxruntime-web", "playwright-core", "chromium"}: what a web provider's scores and timings depend on
    (measure.py puts them in the cache keys, so the native CPU's entries never serve a web row)."""
    return {"onnxruntime-web": _package_version("onnxruntime-web"),
            "playwright-core": _package_version("playwright-core"),
            "chromium": _chromium_version(str(chromium_path()))}


def check_available(provider: str) -> str:
    """The web provider's name, or ProviderUnavailable naming what is missing and the fix."""
    provider = provider.lower()
    node = shutil.which("node")
    if node is None:
        raise ProviderUnavailable(f"the {provider} provider runs onnxruntime-web through Node, and `node` is not on "
                                  f"PATH. Fix: install Node.js 18 or newer, then {SETUP_FIX}.")
    modules = modules_folder()
    missing = [name for name in ("onnxruntime-web", "playwright-core") if _package_version(name) is None]
    if missing:
        raise ProviderUnavailable(f"the {provider} provider needs the npm packages {', '.join(missing)} in "
                                  f"'{shown(modules)}', which has none. Fix: {SETUP_FIX}, or set EDGEKIT_WEB_MODULES "
                                  "to a node_modules folder that has them.")
    chromium = chromium_path()
    if not (chromium.is_file() and os.access(chromium, os.X_OK)):
        raise ProviderUnavailable(f"the {provider} provider runs in headless Chromium, and there is none at "
                                  f"'{shown(chromium)}'. Fix: {SETUP_FIX} (apt-get install chromium), or set "
                                  "EDGEKIT_CHROMIUM to a Chromium executable.")
    if provider == "webgpu":
        _check_webgpu()
    return provider


@functools.cache
def _webgpu_adapter() -> dict:
    return _bridge().call("probe_webgpu", timeout=START_S)


def _check_webgpu() -> None:
    """WebGPU counts as available only on a hardware adapter: headless Chromium without a GPU offers SwiftShader,
    a software rasterizer on the CPU, whose timings say nothing about a GPU and which wasm beats."""
    found = _webgpu_adapter()
    if not found.get("api"):
        why = "this Chromium exposes no navigator.gpu"
    elif not found.get("adapter"):
        why = "Chromium offers no WebGPU adapter here"
    elif found["adapter"].get("fallback") or found["adapter"].get("architecture") == "swiftshader":
        adapter = found["adapter"]
        why = (f"the only WebGPU adapter here is a software fallback ({adapter.get('vendor')} "
               f"{adapter.get('architecture')}, on the CPU)")
    else:
        return
    raise ProviderUnavailable(f"webgpu is not available: {why}. Fix: measure webgpu on a machine with a GPU whose "
                              "driver Chromium's WebGPU supports (Vulkan on Linux), or use the wasm provider.")


# ---------------------------------------------------------------------------- the Node bridge

class _Bridge:
    """One Node process (bridge.cjs) and the Chromium it drives; calls are serialized and each has a timeout, so
    a hung browser is an error, not a hang."""

    def __init__(self):
        node = shutil.which("node")
        env = dict(os.environ, EDGEKIT_WEB_MODULES=str(modules_folder()), EDGEKIT_CHROMIUM=str(chromium_path()))
        self._process = subprocess.Popen([node, str(ASSETS / "bridge.cjs")], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
                                         encoding="utf-8", bufsize=1)
        self._replies: queue.Queue = queue.Queue()
        self._stderr: deque = deque(maxlen=40)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._ended = False
        threading.Thread(target=self._read, args=(self._process.stdout, self._replies.put, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self._process.stderr, self._stderr.append), daemon=True).start()
        try:
            self.hello = self.call("hello", timeout=START_S)
        except (BridgeError, PageError):
            self.close(force=True)
            raise

    def _read(self, stream, put, ends: bool = False) -> None:
        for line in stream:
            put(line.rstrip("\n"))
        if ends:  # the process closed its stdout: a call waiting for a reply learns it now, not at its timeout
            self._ended = True
            put(None)

    def alive(self) -> bool:
        # Its stdout closed counts as gone even before the exit is reaped: no reply could come.
        return not self._ended and self._process.poll() is None

    def log(self) -> str:
        lines = [line for line in self._stderr if line.strip()]
        return " | ".join(lines[-5:])[-600:]

    def call(self, op: str, timeout: float, **fields):
        with self._lock:
            if not self.alive():
                raise BridgeError(f"the web runtime's Node process exited ({self.log() or 'no output'})")
            request_id = next(self._ids)
            try:
                self._process.stdin.write(json.dumps({"id": request_id, "op": op, **fields}) + "\n")
                self._process.stdin.flush()
            except (BrokenPipeError, OSError) as e:
                raise BridgeError(f"the web runtime's Node process is gone ({e}; {self.log()})") from None
            while True:
                try:
                    line = self._replies.get(timeout=timeout)
                except queue.Empty:
                    self.close(force=True)
                    raise BridgeError(f"no answer to '{op}' within {timeout:.0f} s (Chromium hung; it was "
                                      "stopped)") from None
                if line is None:
                    raise BridgeError(f"the web runtime's Node process exited ({self.log() or 'no output'})")
                try:
                    message = json.loads(line)
                except ValueError:
                    continue  # not a reply (bridge.cjs sends its own logs to stderr; a dependency may not)
                if message.get("id") == request_id:
                    break
        if not message.get("ok"):
            raise PageError(message.get("error") or "unknown error")
        return message.get("result")

    def close(self, force: bool = False) -> None:
        if self.alive() and not force:
            try:
                self._process.stdin.write(json.dumps({"id": 0, "op": "close"}) + "\n")
                self._process.stdin.flush()
                self._process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                pass
        if self.alive():
            self._process.kill()  # Node's exit closes its Chromium's pipe, and with it Chromium
            self._process.wait(timeout=10)


class BridgeError(Exception):
    """The bridge or its browser failed (not the file): turned into ProviderUnavailable naming the file."""


class PageError(Exception):
    """onnxruntime-web refused or failed inside the page: turned into an edgekit error naming the file."""


_lock = threading.Lock()
_current: _Bridge | None = None


def _bridge() -> _Bridge:
    """The process's bridge, started on first use (and again if it died)."""
    global _current
    with _lock:
        if _current is None or not _current.alive():
            try:
                _current = _Bridge()
            except (BridgeError, PageError, OSError) as e:
                _current = None
                raise ProviderUnavailable(f"the web runtime (Node + headless Chromium at '{chromium_path()}') did "
                                          f"not start: {e}. Fix: {SETUP_FIX}, or set EDGEKIT_CHROMIUM / "
                                          "EDGEKIT_WEB_MODULES.") from None
        return _current


@atexit.register
def close_bridge() -> None:
    """Stop the bridge and its Chromium (at exit; tests call it too)."""
    global _current
    with _lock:
        if _current is not None:
            _current.close()
            _current = None


# ---------------------------------------------------------------------------- sessions

class _Meta:
    """An input or output as ORT's NodeArg shows it: .name, .type ('tensor(int64)'), .shape (ints, names, None)."""

    def __init__(self, name: str, type: str, shape: list):
        self.name, self.type, self.shape = name, type, shape

    def __repr__(self):
        return f"NodeArg(name={self.name!r}, type={self.type!r}, shape={self.shape!r})"


def _signature(model) -> tuple[list[_Meta], list[_Meta]]:
    from onnx import TensorProto

    def meta(value):
        tensor = value.type.tensor_type
        kind = TensorProto.DataType.Name(tensor.elem_type).lower()
        kind = {"float": "float", "double": "double"}.get(kind, kind)
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
        return _Meta(value.name, f"tensor({kind})", shape)

    initializers = {t.name for t in model.graph.initializer}
    return ([meta(v) for v in model.graph.input if v.name not in initializers],
            [meta(v) for v in model.graph.output])


class _Modelmeta:
    def __init__(self, model):
        self.producer_name, self.graph_name = model.producer_name, model.graph.name
        self.domain, self.description, self.version = model.domain, model.doc_string, model.model_version
        self.custom_metadata_map = {p.key: p.value for p in model.metadata_props}


_TYPES = {"float32", "float64", "int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64", "bool",
          "float16"}


def _encode(name: str, value, path: Path) -> dict:
    import numpy as np

    array = np.ascontiguousarray(value)
    dtype = "bool" if array.dtype == np.bool_ else array.dtype.name
    if dtype not in _TYPES:
        raise InvalidModelFile(f"'{shown(path)}': input '{name}' is {array.dtype}, which edgekit's web runtime does "
                               "not pass to onnxruntime-web. Fix: feed numeric tensors (a string input: the tokenizer "
                               "inside the graph, which onnxruntime-web does not run).")
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return {"dtype": dtype, "shape": list(array.shape), "data": base64.b64encode(little.tobytes()).decode("ascii")}


def _decode(spec: dict):
    import numpy as np

    dtype = np.bool_ if spec["dtype"] == "bool" else np.dtype(spec["dtype"]).newbyteorder("<")
    return np.frombuffer(base64.b64decode(spec["data"]), dtype=dtype).reshape(spec["shape"]).astype(
        np.bool_ if spec["dtype"] == "bool" else np.dtype(spec["dtype"]), copy=True)


class WebSession:
    """An onnxruntime-web session in the bridge's Chromium, with what evaluate.py and bench.py use of an ORT
    InferenceSession. Each session's file is registered with the bridge under a random token: the page fetches
    that token, and nothing else on disk is served."""

    def __init__(self, path: Path, provider: str, threads: int, optimization: str = "all"):
        import onnx

        self.path, self.provider, self.threads = path, provider, threads
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
            raise InvalidModelFile(f"'{shown(path)}' is not a loadable ONNX model: {str(e)[:200]}. The file may be "
                                   "truncated or corrupt: re-export it with `edgekit export`.") from None
        self._inputs, self._outputs = _signature(model)
        self._meta = _Modelmeta(model)
        external = {entry.value for t in model.graph.initializer for entry in t.external_data
                    if entry.key == "location"}
        self._bridge = _bridge()
        self.token = secrets.token_hex(12)
        self._guard("register", START_S, token=self.token, file=str(path.resolve()),
                    extra={name: str((path.parent / name).resolve()) for name in sorted(external)})
        opened = self._guard("open", OPEN_S, token=self.token, provider=WEB_PROVIDERS[provider], threads=threads,
                             optimization=optimization)
        self._id, self.cross_origin_isolated = opened["session"], opened["isolated"]

    def _guard(self, op: str, timeout: float, **fields):
        """A bridge call whose failures are edgekit errors naming the file: the browser or Node failing is
        ProviderUnavailable (the provider, not the file), onnxruntime-web refusing the file InvalidModelFile."""
        if not self._bridge.alive():
            raise ProviderUnavailable(f"'{shown(self.path)}' on {self.provider}: the web runtime's browser exited "
                                      f"earlier ({self._bridge.log() or 'no output'}); make a new session.")
        try:
            return self._bridge.call(op, timeout, **fields)
        except BridgeError as e:
            raise ProviderUnavailable(f"'{shown(self.path)}' on {self.provider} (onnxruntime-web in headless "
                                      f"Chromium): {e}. Fix: {SETUP_FIX}; if it persists, measure this file on "
                                      "the cpu provider.") from None
        except PageError as e:
            what = "failed to start a session for" if op == "open" else "failed running"
            raise InvalidModelFile(f"onnxruntime-web ({self.provider}) {what} '{shown(self.path)}': "
                                   f"{shown(str(e)[:400])}. The file uses an operator or type onnxruntime-web lacks, "
                                   "or is malformed: check it with `edgekit bench --provider cpu`, re-export it, or "
                                   "leave the web provider out of budget.providers.") from None

    def get_inputs(self):
        return list(self._inputs)

    def get_outputs(self):
        return list(self._outputs)

    def get_providers(self):
        return [self.provider]

    def get_modelmeta(self):
        return self._meta

    def _feeds(self, feed: dict) -> dict:
        return {name: _encode(name, value, self.path) for name, value in feed.items()}

    def run(self, output_names, input_feed, run_options=None):
        names = list(output_names or [meta.name for meta in self._outputs])
        result = self._guard("run", RUN_S, session=self._id, feeds=self._feeds(input_feed), outputs=names)
        return [_decode(result[name]) for name in names]

    def timed_runs(self, feeds: list[dict], warmup: int, min_runs: int, min_seconds: float) -> dict:
        """The first run, `warmup` more, then runs until min_runs and min_seconds are both reached and a pass over
        `feeds` ends, each timed in the page with performance.now(): {"samples_ms", "first_ms", "timed_seconds",
        "isolated"}."""
        # generous: a hang, not a slow file, trips it (whole passes: up to len(feeds) - 1 runs past min_runs)
        allowance = RUN_S + 3 * min_seconds + 5 * (min_runs + len(feeds) + warmup)
        return self._guard("timed", allowance, session=self._id, feeds=[self._feeds(f) for f in feeds],
                           warmup=warmup, min_runs=min_runs, min_seconds=min_seconds)

    def release(self) -> None:
        if self._id is not None and self._bridge.alive():
            try:
                self._bridge.call("release", OPEN_S, session=self._id)
            except (BridgeError, PageError):
                pass
        self._id = None

    def __del__(self):
        # Sessions live in the page until released; a run makes many (a file per round, per provider). Released
        # only when nobody else is talking to the bridge: a __del__ inside another call must not wait on its lock.
        bridge = getattr(self, "_bridge", None)
        if bridge is not None and getattr(self, "_id", None) is not None and bridge._lock.acquire(blocking=False):
            bridge._lock.release()
            with contextlib.suppress(Exception):  # never raise from __del__ (interpreter shutdown included)
                self.release()


def create_web_session(path: str | Path, settings) -> tuple[WebSession, dict]:
    """(a WebSession on settings.provider, its record): providers.create_session's counterpart for web providers."""
    path = Path(path)
    provider = check_available(settings.provider)
    if not path.exists():
        raise ModelNotFound(f"ONNX file '{shown(path)}' does not exist. Export one with `edgekit export`.")
    if path.suffix == ".ort":
        raise InvalidModelFile(f"'{shown(path)}' is an .ort file; edgekit's web provider runs .onnx files (the web "
                               "bundle ships model.onnx). Fix: measure the .onnx file.")
    session = WebSession(path, provider, settings.threads, settings.graph_optimization)
    versions = web_versions() | {"chromium": session._bridge.hello["versions"].get("chromium")}
    record = {**asdict(settings), "options": {}, "provider": provider, "session_providers": [provider],
              "runtime": f"onnxruntime-web {versions['onnxruntime-web']} ({provider}) in headless Chromium "
                         f"{versions['chromium']}",
              "versions": versions, "cross_origin_isolated": session.cross_origin_isolated,
              "inter_op_threads": 1, "execution_mode": "sequential",
              "placement": {**PLACEMENT, "provider": provider}}
    return session, record
