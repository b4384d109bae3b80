// The page side of edgekit's web provider: onnxruntime-web sessions, their runs, and their timing.
// Latency is taken here, with performance.now() around each session.run (crossOriginIsolated: microsecond
// resolution), so it holds no Python<->Node<->page traffic. Tensors travel as base64 of their little-endian bytes.
const params = new URLSearchParams(location.search);
const ort = await import(`/ort/${params.get('bundle') || 'ort.wasm.min.mjs'}`);
const threads = Number(params.get('threads') || '1');
// Global to the wasm module, fixed at its first session: hence one page per thread count (bridge.cjs).
ort.env.wasm.numThreads = threads;
ort.env.wasm.wasmPaths = '/ort/';
ort.env.wasm.proxy = false;
ort.env.logLevel = 'error';

const ARRAYS = {
  float32: Float32Array, float64: Float64Array, int64: BigInt64Array, int32: Int32Array, int16: Int16Array,
  int8: Int8Array, uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, uint64: BigUint64Array,
  bool: Uint8Array, float16: Uint16Array,
};

function fromBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function toBase64(bytes) {
  let raw = '';
  for (let i = 0; i < bytes.length; i += 0x8000) raw += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(raw);
}

function tensor(spec) {
  const Kind = ARRAYS[spec.dtype];
  if (!Kind) throw new Error(`input dtype ${spec.dtype} is not supported by edgekit's web runtime`);
  const bytes = fromBase64(spec.data);
  const data = new Kind(bytes.buffer, bytes.byteOffset, bytes.byteLength / Kind.BYTES_PER_ELEMENT);
  return new ort.Tensor(spec.dtype, data, spec.shape);
}

function feedsOf(specs) {
  return Object.fromEntries(Object.entries(specs).map(([name, spec]) => [name, tensor(spec)]));
}

function encoded(value) {
  const data = value.data;
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return { dtype: value.type, shape: Array.from(value.dims), data: toBase64(bytes) };
}

const sessions = new Map();
let next = 1;

window.edgekit = {
  version: ort.env.versions ? ort.env.versions.web || ort.env.versions.common : null,
  isolated: crossOriginIsolated,
  async open(url, provider, optimization, external) {
    const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
    const session = await ort.InferenceSession.create(bytes, {
      executionProviders: [provider], graphOptimizationLevel: optimization || "all",
      ...(external && external.length ? { externalData: external } : {}),
    });
    const id = next++;
    sessions.set(id, session);
    return { id, inputs: session.inputNames, outputs: session.outputNames };
  },
  async run(id, specs, names) {
    const session = sessions.get(id);
    const results = await session.run(feedsOf(specs));
    const out = {};
    for (const name of names && names.length ? names : session.outputNames) out[name] = encoded(results[name]);
    return out;
  },
  // The first run, `warmup` more, then runs until both min_runs and min_seconds are reached, cycling the feeds in
  // whole passes (bench.py's run_benchmark): every file's samples cover each feed equally often.
  async timed(id, feedList, warmup, minRuns, minSeconds) {
    const session = sessions.get(id);
    const feeds = feedList.map(feedsOf);
    let t0 = performance.now();
    await session.run(feeds[0]);
    const firstMs = performance.now() - t0;
    for (let i = 0; i < warmup; i++) await session.run(feeds[i % feeds.length]);
    const samples = [];
    const began = performance.now();
    const deadline = began + minSeconds * 1000;
    for (let i = 0; i < minRuns || performance.now() < deadline || i % feeds.length !== 0; i++) {
      t0 = performance.now();
      await session.run(feeds[i % feeds.length]);
      samples.push(performance.now() - t0);
    }
    return { samples_ms: samples, first_ms: firstMs, timed_seconds: (performance.now() - began) / 1000,
             isolated: crossOriginIsolated };
  },
  async release(id) {
    const session = sessions.get(id);
    sessions.delete(id);
    if (session) await session.release();
    return true;
  },
};
window.edgekitReady = true;
