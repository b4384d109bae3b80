'use strict';
/*
 * edgekit's web runtime bridge: one Node process per Python process (edgekit/runtime/web_runtime.py starts it), driving
 * onnxruntime-web in headless Chromium. Protocol: JSON lines on stdin, one reply line per request on stdout:
 *   {"id", "op", ...}  ->  {"id", "ok": true, "result"} | {"id", "ok": false, "error"}
 * ops: hello, register {token, path, extra: {name: path}}, open {token, provider, threads}, run {session, feeds,
 * outputs}, timed {session, feeds, warmup, min_runs, min_seconds}, release {session}, probe_webgpu, close.
 * Models are served by the token Python registered, never by a path the page asks for.
 * stdout carries replies only: anything else this process prints goes to stderr.
 */
const path = require('node:path');
const readline = require('node:readline');
const browserKit = require('./browser.cjs');

const log = (...args) => process.stderr.write(args.join(' ') + '\n');
console.log = log;  // a stray console.log from a dependency must not corrupt the reply stream
const reply = (message) => process.stdout.write(JSON.stringify(message) + '\n');

let browser = null;
let server = null;
const pages = new Map();  // "provider:threads" -> {page, errors}
const models = new Map();  // token -> {url, external: [{path, data}]}

async function start() {
  if (browser) return;
  server = await browserKit.serve({
    '/page.html': path.join(__dirname, 'page.html'), '/page.mjs': path.join(__dirname, 'page.mjs'),
    '/ort/': path.join(browserKit.modulesFolder(), 'onnxruntime-web', 'dist'),
  });
  browser = await browserKit.launchBrowser({ gpu: false });
  browser.on('disconnected', () => { if (!closing) { log('chromium exited'); process.exit(3); } });
}

async function pageFor(provider, threads) {
  const key = `${provider}:${threads}`;
  if (pages.has(key)) return pages.get(key);
  const page = await browser.newPage();
  const entry = { page, errors: [] };
  page.on('pageerror', (e) => entry.errors.push(String(e && e.message || e)));
  page.on('console', (m) => { if (m.type() === 'error') entry.errors.push(m.text()); });
  page.on('crash', () => entry.errors.push('the page crashed (out of memory?)'));
  const bundle = provider === 'webgpu' ? 'ort.webgpu.min.mjs' : 'ort.wasm.min.mjs';
  await page.goto(`${server.origin}/page.html?threads=${threads}&bundle=${bundle}`);
  try {
    await page.waitForFunction(() => window.edgekitReady === true, null, { timeout: 60000 });
  } catch (e) {
    throw new Error(`the page did not load onnxruntime-web: ${entry.errors.slice(-3).join('; ') || e.message}`);
  }
  pages.set(key, entry);
  return entry;
}

const sessions = new Map();  // bridge session id -> {entry, id}
let nextSession = 1;

async function call(entry, fn, arg) {
  const before = entry.errors.length;
  try {
    return await entry.page.evaluate(fn, arg);
  } catch (e) {
    const seen = entry.errors.slice(before).join('; ');
    const text = String(e && e.message || e).replace(/^page\.evaluate: /, '').split('\n')[0];
    throw new Error(seen ? `${text} (page: ${seen})` : text);
  }
}

let closing = false;
const ops = {
  async hello() {
    await start();
    return { versions: browserKit.versions(browser), node: process.version };
  },
  async register({ token, file, extra }) {
    await start();
    const url = `/model/${token}/model.onnx`;
    server.add(url, file);
    const external = [];
    for (const [name, where] of Object.entries(extra || {})) {
      server.add(`/model/${token}/${name}`, where);
      external.push({ path: name, data: `/model/${token}/${encodeURIComponent(name)}` });
    }
    models.set(token, { url, external });
    return true;
  },
  async open({ token, provider, threads, optimization }) {
    await start();
    const model = models.get(token);
    if (!model) throw new Error(`model token ${token} was not registered`);
    const entry = await pageFor(provider, threads);
    const opened = await call(entry, ([url, ep, opt, external]) => window.edgekit.open(url, ep, opt, external),
      [model.url, provider, optimization, model.external]);
    const id = nextSession++;
    sessions.set(id, { entry, id: opened.id });
    return { session: id, inputs: opened.inputs, outputs: opened.outputs, isolated: await entry.page.evaluate(() => crossOriginIsolated) };
  },
  async run({ session, feeds, outputs }) {
    const s = sessions.get(session);
    if (!s) throw new Error(`session ${session} is not open`);
    return call(s.entry, ([id, f, o]) => window.edgekit.run(id, f, o), [s.id, feeds, outputs]);
  },
  async timed({ session, feeds, warmup, min_runs: minRuns, min_seconds: minSeconds }) {
    const s = sessions.get(session);
    if (!s) throw new Error(`session ${session} is not open`);
    return call(s.entry, ([id, f, w, r, sec]) => window.edgekit.timed(id, f, w, r, sec),
      [s.id, feeds, warmup, minRuns, minSeconds]);
  },
  async release({ session }) {
    const s = sessions.get(session);
    sessions.delete(session);
    if (s) await call(s.entry, (id) => window.edgekit.release(id), s.id);
    return true;
  },
  async probe_webgpu() {
    // Its own browser with the GPU process on: the runtime's browser runs with --disable-gpu.
    const other = await browserKit.launchBrowser({ gpu: true });
    try {
      const page = await other.newPage();
      await page.goto(`${server ? server.origin : 'about:blank'}${server ? '/page.html?threads=1' : ''}`);
      return await page.evaluate(async () => {
        if (!navigator.gpu) return { api: false };
        const adapter = await navigator.gpu.requestAdapter();
        if (!adapter) return { api: true, adapter: null };
        const info = adapter.info || {};
        return { api: true, adapter: { vendor: info.vendor, architecture: info.architecture,
                                       description: info.description, fallback: !!info.isFallbackAdapter } };
      });
    } finally {
      await other.close();
    }
  },
  async close() {
    closing = true;
    if (browser) await browser.close().catch(() => {});
    if (server) await server.close();
    return true;
  },
};

// Requests run one at a time, in order: a page's runs must not overlap their timing.
let queue = Promise.resolve();
const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  queue = queue.then(async () => {
    let message;
    try { message = JSON.parse(line); } catch { reply({ id: null, ok: false, error: 'not JSON' }); return; }
    const op = ops[message.op];
    try {
      if (!op) throw new Error(`unknown op ${message.op}`);
      reply({ id: message.id, ok: true, result: await op(message) });
    } catch (e) {
      reply({ id: message.id, ok: false, error: String(e && e.message || e) });
    }
    if (message.op === 'close') process.exit(0);
  });
});
// Python gone (stdin closed): close the browser with it, so no Chromium outlives the run.
lines.on('close', () => { queue.then(() => ops.close()).finally(() => process.exit(0)); });
