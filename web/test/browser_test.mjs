// Browser test of the dpo3d demo: serves the built page with ./web/serve --no-build, drives Debian's Chromium
// (headless, WebGPU on its software renderer SwiftShader where there is no GPU) with playwright-core, and checks:
//  1. DPO on scenario 1 for a few hundred epochs: the rejected probability falls by orders of magnitude, the
//     charts receive the data, the canvases are drawn, and a screenshot of the page is not blank;
//  2. the exports: metrics as JSONL (one record per logged epoch) and the charts as a PNG;
//  3. several runs side by side (DPO, Flex-DPO, SFT-DPO, RM+PPO): every one of them trains;
//  4. without WebGPU the page says so and how to enable it, instead of staying blank;
//  5. every shaders/*.wgsl entry point compiles into a pipeline in Chromium's WGSL compiler (Tint).
// Prints the epochs per second measured in the browser. Usage (after ./web/build):
//   node web/test/browser_test.mjs        env: CHROMIUM (default /usr/bin/chromium), PORT (default 8765),
//                                         EPOCHS (default 300), DPO3D_GPU=1 to use a real GPU (no SwiftShader)

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const webDir = path.resolve(here, '..');
const outDir = path.join(here, 'out');
fs.mkdirSync(outDir, { recursive: true });
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PORT = Number(process.env.PORT || 8765);
const EPOCHS = Number(process.env.EPOCHS || 300);
const BASE = `http://127.0.0.1:${PORT}/`;

// Headless WebGPU in Debian's Chromium runs on its software renderer (SwiftShader) and needs --enable-unsafe-webgpu
// (without it requestAdapter() returns null); the others keep a test run quiet and offline. A fresh profile each run.
const QUIET = ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--no-first-run', '--disable-quic', '--disable-dev-shm-usage'];
const WEBGPU = ['--enable-unsafe-webgpu',
  ...(process.env.DPO3D_GPU ? ['--enable-features=Vulkan', '--use-angle=vulkan', '--ignore-gpu-blocklist'] : [])];

let passed = 0, failed = 0;
function check(name, ok, detail = '') {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? 'ok' : 'FAIL'} - ${name}${detail ? `: ${detail}` : ''}`);
  return ok;
}

function startServer() {
  return new Promise((resolve, reject) => {
    const proc = spawn(path.join(webDir, 'serve'), ['--no-build'], { env: { ...process.env, PORT: String(PORT) }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const timer = setTimeout(() => reject(new Error(`server did not start: ${out}`)), 15000);
    const onData = (d) => {
      out += d;
      process.stdout.write(`[server] ${d}`);
      const m = out.match(/http:\/\/127\.0\.0\.1:(\d+)\//);
      if (m) {
        clearTimeout(timer);
        resolve(proc);
      }
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.on('exit', (code) => reject(new Error(`server exited (${code}): ${out}`)));
  });
}

// Playwright gives every launch a fresh temporary profile (a fresh --user-data-dir).
async function launch(extra) {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...QUIET, ...extra] });
}

async function openPage(browser, query) {
  const context = await browser.newContext({ viewport: { width: 1500, height: 1100 }, acceptDownloads: true });
  // Main-thread responsiveness probe: the longest a 100 ms timer was late, per page status (building = the SFT
  // phase inside WebToy.create; running = the animation-frame training loop).
  await context.addInitScript(() => {
    let last = performance.now();
    window.__timerDelayMs = {};
    setInterval(() => {
      const now = performance.now();
      const st = (window.dpo3d && window.dpo3d.status) || 'loading';
      window.__timerDelayMs[st] = Math.max(window.__timerDelayMs[st] || 0, now - last - 100);
      last = now;
    }, 100);
  });
  const page = await context.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(`[console.${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`[pageerror] ${e.message}`));
  await page.goto(BASE + query);
  return { page, logs };
}

/** Wait until window.dpo3d.status is one of `states`; returns the state. */
async function waitStatus(page, states, timeoutMs) {
  await page.waitForFunction((s) => window.dpo3d && s.includes(window.dpo3d.status), states, { timeout: timeoutMs, polling: 250 });
  return page.evaluate(() => JSON.parse(JSON.stringify(window.dpo3d, (k, v) => (k === 'sftProbs' ? undefined : v))));
}

/** Distinct colours and the share of non-white pixels of an image (a data URL), decoded by the browser itself. */
async function imageStats(page, dataUrl) {
  return page.evaluate(async (src) => {
    const img = new Image();
    img.src = src;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.width;
    c.height = img.height;
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    const colours = new Set();
    let ink = 0;
    for (let i = 0; i < d.length; i += 4 * 7) {
      colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
      if (d[i] < 235 || d[i + 1] < 235 || d[i + 2] < 235) ink++;
    }
    return { width: c.width, height: c.height, colours: colours.size, ink: ink / (d.length / (4 * 7)) };
  }, dataUrl);
}

async function canvasStats(page) {
  return page.evaluate(() => [...document.querySelectorAll('canvas.chart')].map((c) => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const colours = new Set();
    for (let i = 0; i < d.length; i += 4 * 5) colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    return colours.size;
  }));
}

async function testDpo(browser) {
  const q = `?runs=dpo&scenario=1&epochs=${EPOCHS}&speed=25&log_every=10&autostart=1`;
  const { page, logs } = await openPage(browser, q);
  let st;
  try {
    st = await waitStatus(page, ['done', 'error', 'no-webgpu'], 300000);
  } catch (e) {
    st = await page.evaluate(() => window.dpo3d);
    console.log(logs.join('\n'));
    check('DPO run finishes', false, `timed out in status ${st && st.status}`);
    return;
  }
  if (!check('DPO run finishes without error', st.status === 'done', st.error || st.status)) {
    console.log(logs.join('\n'));
    return;
  }
  const run = st.runs[0];
  const a = st.adapterWasm || {};
  if (!check('DPO run built and trained', !run.error && run.first && run.last, run.error || '')) {
    console.log(logs.join('\n'));
    return;
  }
  console.log(`[browser] WebGPU adapter: ${st.adapter} (wgpu: ${a.backend}, ${a.device_type})`);
  check('trained the requested epochs', run.epoch === EPOCHS, `epoch ${run.epoch}`);
  const first = run.first, last = run.last;
  const dropLog10 = (last['toy/logp_rejected_avg'] - first['toy/logp_rejected_avg']) / Math.LN10;
  console.log(`[browser] rejected pi: ${first['toy/rejected_avg'].toExponential(3)} at epoch ${first.epoch} -> ` +
    `${last['toy/rejected_avg'].toExponential(3)} at epoch ${last.epoch} (log10 geo-mean change ${dropLog10.toFixed(2)}); ` +
    `chosen ${first['toy/chosen_avg'].toFixed(3)} -> ${last['toy/chosen_avg'].toFixed(3)}`);
  check('rejected probability fell by orders of magnitude', dropLog10 <= -2 && last['toy/rejected_avg'] < first['toy/rejected_avg'] / 100,
    `log10 change ${dropLog10.toFixed(2)}`);
  check('chosen probability rose (drastic drop is on the rejected side)', last['toy/chosen_avg'] > first['toy/chosen_avg']);
  check('rejected gradient grew past the chosen one', last['grad/log10_rejected'] - last['grad/log10_chosen'] > 1,
    `log10 |dl/dpi-| ${last['grad/log10_rejected']?.toFixed(1)}, |dl/dpi+| ${last['grad/log10_chosen']?.toFixed(1)}`);
  const logged = Math.floor(EPOCHS / 10) + 1;
  const cp = run.chartPoints;
  check('curves chart received every logged epoch', cp.curves === 5 * logged && run.records === logged, `${cp.curves} points, ${run.records} records`);
  check('log panel received the data', cp.log >= 3 * logged, `${cp.log} points`);
  check('heatmap received probability matrices', cp.heatmap > 1, `${cp.heatmap} updates`);
  const delays = await page.evaluate(() => window.__timerDelayMs);
  check('the page never froze while training (main thread free)', (delays.running || 0) < 1000,
    `longest timer delay ${(delays.running || 0).toFixed(0)} ms while running, ${(delays.building || 0).toFixed(0)} ms while building (SFT)`);
  const colours = await canvasStats(page);
  check('every chart canvas is drawn', colours.length === 3 && colours.every((n) => n > 8), `distinct colours ${colours.join(', ')}`);

  console.log(`[browser] DPO scenario 1, H 256, ${EPOCHS} epochs on ${st.adapter}: ${st.epochsPerSecond.toFixed(1)} epochs/s ` +
    `wall clock (${st.stepEpochsPerSecond.toFixed(1)} inside step(); ${st.frames} frames of 25 epochs; SFT + setup ${st.setupSeconds.toFixed(1)} s)`);

  const shotPath = path.join(outDir, 'dpo3d-dpo.png');
  const shot = await page.screenshot({ path: shotPath, fullPage: true });
  const s = await imageStats(page, 'data:image/png;base64,' + shot.toString('base64'));
  check('screenshot is not blank', s.colours > 40 && s.ink > 0.05, `${s.width}x${s.height}, ${s.colours} colours, ${(s.ink * 100).toFixed(1)}% ink -> ${path.relative(process.cwd(), shotPath)}`);

  // Exports.
  const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#export-jsonl')]);
  const jsonl = fs.readFileSync(await dl.path(), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  check('JSONL export has one record per logged epoch', jsonl.length === logged && jsonl[0].run && jsonl.at(-1).epoch === EPOCHS &&
    'toy/rejected_avg' in jsonl[0], `${jsonl.length} lines, last epoch ${jsonl.at(-1)?.epoch}`);
  const [dl2] = await Promise.all([page.waitForEvent('download'), page.click('#export-png')]);
  const png = fs.readFileSync(await dl2.path());
  fs.writeFileSync(path.join(outDir, 'dpo3d-charts-export.png'), png);
  const ps = await imageStats(page, 'data:image/png;base64,' + png.toString('base64'));
  check('PNG chart export is an image with the charts', png.subarray(1, 4).toString() === 'PNG' && ps.colours > 20, `${ps.width}x${ps.height}, ${ps.colours} colours`);
  const bad = logs.filter((l) => l.startsWith('[pageerror]') || /panicked|error/i.test(l));
  check('no page errors', bad.length === 0, bad.slice(0, 3).join(' | '));
  await page.context().close();
}

async function testCompare(browser) {
  // Smaller than the DPO check (hidden 64, 60 epochs, 10 per frame): this one is about the runs side by side and
  // the controls; RM+PPO (many sampled responses per epoch) sets the pace of the whole group.
  const epochs = 60;
  const { page, logs } = await openPage(browser, `?preset=compare&epochs=${epochs}&hidden=64&speed=10&autostart=1`);
  let st;
  try {
    st = await waitStatus(page, ['done', 'error'], 300000);
  } catch (e) {
    console.log(logs.join('\n'));
    check('side-by-side runs finish', false, 'timed out');
    return;
  }
  if (!check('side-by-side runs finish', st.status === 'done', st.error || st.status)) return;
  const labels = st.runs.map((r) => r.label);
  check('DPO, Flex-DPO, SFT-DPO and RM+PPO are shown side by side', st.runs.length === 4 &&
    ['dpo', 'flex-dpo', 'sft-dpo', 'ppo'].every((m, i) => st.runs[i].method === m), labels.join(', '));
  // Every build of dpo3d has RM+PPO: all four runs must train (a construction error fails here, with its text).
  for (const r of st.runs) {
    check(`${r.label} trained`, !r.error && r.epoch === epochs && r.records > 0, r.error || `epoch ${r.epoch}`);
  }
  const trained = st.runs.filter((r) => r.records > 0).length;
  // Pause, resume, reset: the controls drive the same loop.
  await page.click('#reset');
  await waitStatus(page, ['ready'], 300000);
  await page.click('#start');
  await page.waitForFunction(() => window.dpo3d.runs[0].epoch > 0, null, { timeout: 120000 });
  await page.click('#pause');
  await waitStatus(page, ['paused'], 10000);
  await page.waitForFunction(() => document.querySelector('#start').textContent === 'Resume');
  const e1 = await page.evaluate(async () => {
    // Let the step in flight when Pause was pressed land, then read the epoch.
    for (let i = 0; i < 1200 && window.dpo3d.stepping; i++) await new Promise((r) => setTimeout(r, 100));
    await new Promise((r) => setTimeout(r, 500));
    return window.dpo3d.runs[0].epoch;
  });
  await page.waitForTimeout(1500);
  const e2 = await page.evaluate(() => window.dpo3d.runs[0].epoch);
  check('pause stops training', e1 === e2 && e1 > 0 && e1 < epochs, `epoch ${e1} then ${e2}`);
  await page.click('#start');
  const st2 = await waitStatus(page, ['done', 'error'], 300000);
  check('resume trains to the end after reset', st2.status === 'done' && st2.runs[0].epoch === epochs, `${st2.status}, epoch ${st2.runs[0].epoch}`);
  console.log(`[browser] ${trained} runs side by side, H 64, ${epochs} epochs: ${st.epochsPerSecond.toFixed(1)} epochs/s per run, ` +
    `${st.runEpochsPerSecond.toFixed(1)} run-epochs/s (SFT + setup ${st.setupSeconds.toFixed(2)} s)`);
  const last = Object.fromEntries(st.runs.filter((r) => r.last).map((r) => [r.method, r.last['toy/chosen_avg']]));
  console.log(`[browser] chosen avg at epoch ${epochs}: ${Object.entries(last).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(', ')}`);
  await page.screenshot({ path: path.join(outDir, 'dpo3d-compare.png'), fullPage: true });
  await page.context().close();
}

async function testShadersInTint(browser) {
  // Every kernel of the crate, not only the toy's: Chromium compiles WGSL with Tint, which is stricter than naga
  // in places (literal ranges, for one); each entry point becomes a compute pipeline with WebGPU's default limits.
  // A *_subgroup.wgsl file extends its base file (matmul_subgroup.wgsl uses matmul.wgsl's bindings and helpers) and
  // needs subgroups: natively dpo3d compiles it only on devices with them, and wgpu offers none on the web. It is
  // compiled here, after its base and `enable subgroups;`, where this browser's adapter has the feature.
  const dir = path.resolve(webDir, '..', 'shaders');
  const read = (f) => fs.readFileSync(path.join(dir, f), 'utf8');
  const shaders = fs.readdirSync(dir).filter((f) => f.endsWith('.wgsl')).sort().map((f) => {
    const subgroups = f.endsWith('_subgroup.wgsl');
    const code = subgroups ? `enable subgroups;\n${read(f.replace('_subgroup', ''))}\n${read(f)}` : read(f);
    return { name: f, code, subgroups };
  });
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(BASE);
  const results = await page.evaluate(async (list) => {
    const adapter = await navigator.gpu.requestAdapter();
    // With the feature where the adapter has it: the other files still compile without it (Tint accepts a subgroup
    // builtin only after `enable subgroups;`, which only the *_subgroup files get).
    const hasSubgroups = adapter.features.has('subgroups');
    const device = await adapter.requestDevice(hasSubgroups ? { requiredFeatures: ['subgroups'] } : {});
    const out = [];
    for (const { name, code, subgroups } of list) {
      if (subgroups && !hasSubgroups) {
        out.push({ name, entries: 0, msgs: [], skipped: 'this browser\'s adapter has no subgroups' });
        continue;
      }
      device.pushErrorScope('validation');
      const module = device.createShaderModule({ label: name, code });
      const info = await module.getCompilationInfo();
      const msgs = info.messages.filter((m) => m.type === 'error').map((m) => `${name}:${m.lineNum}:${m.linePos} ${m.message}`);
      const entries = [...code.matchAll(/@compute[^{]*?fn\s+(\w+)/g)].map((m) => m[1]);
      for (const entry of entries) {
        try {
          await device.createComputePipelineAsync({ label: entry, layout: 'auto', compute: { module, entryPoint: entry } });
        } catch (e) {
          msgs.push(`${name} ${entry}: ${e.message.split('\n')[0]}`);
        }
      }
      const err = await device.popErrorScope();
      if (err && !msgs.length) msgs.push(`${name}: ${err.message.split('\n')[0]}`);
      out.push({ name, entries: entries.length, msgs });
    }
    return out;
  }, shaders);
  for (const r of results) {
    if (r.skipped) console.log(`[browser] ${r.name} not compiled: ${r.skipped} (dpo3d uses it on native devices with subgroups only)`);
    else check(`${r.name} compiles in Tint (${r.entries} entry points)`, r.msgs.length === 0, r.msgs.slice(0, 3).join(' | '));
  }
  await context.close();
}

async function testNoWebGPU() {
  // Without --enable-unsafe-webgpu, headless Chromium on Linux offers no adapter: the page must explain.
  const browser = await launch([]);
  try {
    const { page } = await openPage(browser, '?autostart=1');
    const st = await waitStatus(page, ['no-webgpu', 'idle', 'done', 'running', 'ready', 'building', 'error'], 60000);
    if (st.status !== 'no-webgpu') {
      console.log(`[browser] note: this Chromium offered WebGPU even without the flag (status ${st.status}); checking the message by hiding navigator.gpu`);
      await page.addInitScript(() => Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined }));
      await page.goto(BASE + '?autostart=1');
      await waitStatus(page, ['no-webgpu'], 60000);
    }
    const text = await page.locator('#nogpu').innerText();
    check('without WebGPU the page says so and how to enable it', await page.locator('#nogpu').isVisible() &&
      /WebGPU/.test(text) && /enable-unsafe-webgpu/.test(text) && /Chrome/.test(text), text.slice(0, 90).replace(/\s+/g, ' '));
    await page.screenshot({ path: path.join(outDir, 'dpo3d-no-webgpu.png') });
  } finally {
    await browser.close();
  }
}

async function main() {
  if (!fs.existsSync(path.join(webDir, 'pkg', 'dpo3d_bg.wasm'))) {
    console.error('web/pkg/ is missing: run ./web/build first (scripts/test-browser does both)');
    process.exit(2);
  }
  const server = await startServer();
  let browser;
  try {
    browser = await launch(WEBGPU);
    await testShadersInTint(browser);
    await testDpo(browser);
    await testCompare(browser);
    await browser.close();
    browser = null;
    await testNoWebGPU();
  } catch (e) {
    check('browser test ran', false, e.stack || String(e));
  } finally {
    if (browser) await browser.close();
    server.kill('SIGTERM');
  }
  console.log(`browser: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main();
