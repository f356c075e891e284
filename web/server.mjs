// Static file server for the dpo3d demo (no dependencies): serves web/ on 127.0.0.1 (WebGPU needs a secure context,
// which loopback addresses are), with the right MIME types (application/wasm lets the browser compile the module
// while it downloads). Usage: node web/server.mjs [port]; PORT and HOST from the environment also work.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(fileURLToPath(import.meta.url));
const port = Number(process.argv[2] || process.env.PORT || 8000);
const host = process.env.HOST || '127.0.0.1';
const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.wasm': 'application/wasm', '.json': 'application/json', '.png': 'image/png',
  '.svg': 'image/svg+xml', '.ico': 'image/x-icon', '.txt': 'text/plain; charset=utf-8', '.map': 'application/json',
};
// Only the page and its assets are served, never the test folder's outputs or node_modules.
const BLOCKED = ['node_modules', 'test'];

const server = http.createServer((req, res) => {
  let rel;
  try {
    rel = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  } catch {
    res.writeHead(400).end('bad request');
    return;
  }
  if (rel.endsWith('/')) rel += 'index.html';
  const file = path.normalize(path.join(root, rel));
  const first = path.relative(root, file).split(path.sep)[0];
  if (!file.startsWith(root + path.sep) || BLOCKED.includes(first)) {
    res.writeHead(404).end('not found');
    return;
  }
  fs.stat(file, (err, st) => {
    if (err || !st.isFile()) {
      const hint = rel.startsWith('/pkg/') ? ' (the wasm package is missing: run ./web/serve, which builds it)' : '';
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: ${rel}${hint}`);
      return;
    }
    res.writeHead(200, {
      'content-type': TYPES[path.extname(file)] || 'application/octet-stream',
      'content-length': st.size,
      'cache-control': 'no-cache',
    });
    if (req.method === 'HEAD') res.end();
    else fs.createReadStream(file).pipe(res);
  });
});

server.on('error', (e) => {
  console.error(`[serve] cannot listen on ${host}:${port}: ${e.message}` + (e.code === 'EADDRINUSE' ? ' (set PORT to another port)' : ''));
  process.exit(1);
});
server.listen(port, host, () => {
  const a = server.address();
  console.log(`[serve] dpo3d demo at http://${host}:${a.port}/  (Ctrl-C to stop)`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));
