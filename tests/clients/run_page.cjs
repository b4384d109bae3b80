'use strict';
// node run_page.cjs APP_FOLDER: serves APP_FOLDER's own files (a bundle and its index.html) and the two npm packages'
// dist folders the README's import map names, opens index.html in headless Chromium (edgekit/web_assets/browser.cjs)
// and prints the page's "EDGEKIT-RESULT {...}" console line; exits 1 on a page error or after 240 s without it.
const path = require('node:path');
const { launchBrowser, modulesFolder, serve } = require('../../edgekit/web_assets/browser.cjs');

(async () => {
  const app = path.resolve(process.argv[2]);
  const modules = modulesFolder();
  const server = await serve({  // (the longer prefixes first: the first folder whose prefix matches serves)
    '/node_modules/onnxruntime-web/dist/': path.join(modules, 'onnxruntime-web', 'dist'),
    '/node_modules/@huggingface/tokenizers/dist/': path.join(modules, '@huggingface', 'tokenizers', 'dist'),
    '/': app,
  });
  const browser = await launchBrowser();
  let finish;
  const done = new Promise((resolve) => { finish = resolve; });
  const timer = setTimeout(() => finish(['timed out after 240 s without EDGEKIT-RESULT', 1]), 240000);
  try {
    const page = await browser.newPage();
    page.on('console', (message) => {
      const text = message.text();
      if (text.startsWith('EDGEKIT-RESULT ')) finish([text, 0]);
      else process.stderr.write(`console: ${text}\n`);
    });
    page.on('pageerror', (error) => finish([`page error: ${error.message}`, 1]));
    page.on('requestfailed', (request) => process.stderr.write(`request failed: ${request.url()}\n`));
    page.on('response', (response) => {
      if (response.status() >= 400 && !response.url().endsWith('/favicon.ico')) finish([`HTTP ${response.status()}: ${response.url()}`, 1]);
    });
    await page.goto(`${server.origin}/index.html`);
    const [line, code] = await done;
    (code ? process.stderr : process.stdout).write(line + '\n');
    process.exitCode = code;
  } finally {
    clearTimeout(timer);
    await browser.close();
    await server.close();
  }
})().catch((error) => { process.stderr.write(`${error.stack || error}\n`); process.exit(1); });
