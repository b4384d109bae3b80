'use strict';
/*
 * Headless Chromium and a local static server, for anything edgekit runs in a browser page.
 *
 * Exports (CommonJS, so a caller can load it with `require` from any folder):
 *   modulesFolder()                  the node_modules folder: $EDGEKIT_WEB_MODULES, else <repo>/web/node_modules
 *   requireModule(name)              require(name) from that folder (playwright-core, ...)
 *   chromiumPath()                   $EDGEKIT_CHROMIUM, else /usr/bin/chromium
 *   launchBrowser({gpu} = {})        -> Promise<Browser> (playwright-core), headless, no sandbox, and without the
 *                                    background networking (updates, sync, QUIC probes) that floods a closed network;
 *                                    gpu: false adds --disable-gpu
 *   serve(routes)                    -> Promise<{origin, port, close(), add(urlPath, filePath), addFolder(prefix, dir)}>:
 *                                    an http server on 127.0.0.1 (a random port) serving ONLY the routes given
 *                                    ({'/index.html': '/abs/file', '/ort/': '/abs/dir/'}: a trailing slash serves
 *                                    the files directly inside that folder, no subfolders, no '..'), each with
 *                                    COOP/COEP headers so the page is crossOriginIsolated (finer performance.now(),
 *                                    SharedArrayBuffer for wasm threads)
 *   versions(browser)                -> {chromium, 'playwright-core', 'onnxruntime-web'}
 *
 * Why a server and not file://: wasm, module workers and SharedArrayBuffer need an http origin with the isolation
 * headers. Why only listed routes: the page runs files edgekit did not write (models); nothing else on disk is served.
 */
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { createRequire } = require('node:module');

function modulesFolder() {
  return process.env.EDGEKIT_WEB_MODULES || path.resolve(__dirname, '..', '..', 'web', 'node_modules');
}

function requireModule(name) {
  // createRequire needs a file inside the folder's parent: resolution then walks into node_modules.
  return createRequire(path.join(modulesFolder(), '..', 'noop.js'))(name);
}

function chromiumPath() {
  return process.env.EDGEKIT_CHROMIUM || '/usr/bin/chromium';
}

const QUIET_FLAGS = [
  '--headless=new', '--no-sandbox', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run', '--disable-quic', '--disable-default-apps', '--disable-extensions',
  '--disable-domain-reliability', '--disable-client-side-phishing-detection', '--metrics-recording-only',
  '--no-default-browser-check', '--disable-dev-shm-usage',
];

async function launchBrowser({ gpu = false } = {}) {
  const { chromium } = requireModule('playwright-core');
  const args = QUIET_FLAGS.concat(gpu ? ['--enable-unsafe-webgpu'] : ['--disable-gpu']);
  return chromium.launch({ executablePath: chromiumPath(), headless: true, args, timeout: 60000 });
}

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.cjs': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json', '.onnx': 'application/octet-stream',
  '.txt': 'text/plain; charset=utf-8', '.map': 'application/json',
};

function serve(routes = {}) {
  const files = new Map();
  const folders = new Map();
  const add = (urlPath, filePath) => files.set(urlPath, path.resolve(filePath));
  const addFolder = (prefix, dir) => folders.set(prefix.endsWith('/') ? prefix : prefix + '/', path.resolve(dir));
  for (const [urlPath, target] of Object.entries(routes)) {
    if (urlPath.endsWith('/')) addFolder(urlPath, target); else add(urlPath, target);
  }
  const resolve = (urlPath) => {
    if (files.has(urlPath)) return files.get(urlPath);
    for (const [prefix, dir] of folders) {
      if (!urlPath.startsWith(prefix)) continue;
      const name = urlPath.slice(prefix.length);
      if (!name || name.includes('/') || name.includes('\\') || name.startsWith('.')) return null;
      return path.join(dir, name);
    }
    return null;
  };
  const server = http.createServer((req, res) => {
    const headers = {
      'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp',
      'Cross-Origin-Resource-Policy': 'same-origin', 'Cache-Control': 'no-store',
    };
    let urlPath;
    try { urlPath = decodeURIComponent(new URL(req.url, 'http://x').pathname); } catch { urlPath = null; }
    const file = urlPath && resolve(urlPath);
    if (!file || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404, headers); res.end('not served'); return;
    }
    headers['Content-Type'] = TYPES[path.extname(file)] || 'application/octet-stream';
    headers['Content-Length'] = fs.statSync(file).size;
    res.writeHead(200, headers);
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      ok({ origin: `http://127.0.0.1:${port}`, port, add, addFolder,
           close: () => new Promise((done) => server.close(() => done())) });
    });
  });
}

function packageVersion(name) {
  try {
    return JSON.parse(fs.readFileSync(path.join(modulesFolder(), name, 'package.json'), 'utf8')).version;
  } catch { return null; }
}

function versions(browser) {
  return { chromium: browser ? browser.version() : null, 'playwright-core': packageVersion('playwright-core'),
           'onnxruntime-web': packageVersion('onnxruntime-web') };
}

module.exports = { modulesFolder, requireModule, chromiumPath, launchBrowser, serve, versions, QUIET_FLAGS };
