// dpo3d browser demo: builds the runs from the controls, trains them through the wasm `WebToy` (WebGPU) a few
// epochs per animation frame, and feeds the charts. The page's state is mirrored in `window.dpo3d` (status, epochs,
// first and last records, chart point counts, epochs per second) for the browser test and for curious users.

import init, { WebToy } from './pkg/dpo3d.js';
import { LineChart, Heatmap, composePng } from './charts.js';

const PAIRS = [[0, 0, 4], [1, 1, 6], [2, 2, 7], [3, 3, 5]];
const SCENARIOS = {
  1: { row: [0.12, 0.12, 0.03, 0.01], name: 'both on-policy' },
  2: { row: [0.12, 0.02, 0.40, 0.04], name: 'chosen on-, rejected off-policy' },
  3: { row: [0.02, 0.12, 0.40, 0.04], name: 'chosen off-, rejected on-policy' },
  4: { row: [0.02, 0.02, 0.80, 0.04], name: 'both off-policy' },
};
// Loss types (src/objectives/preference.rs, serde tag `loss_type`) with their parameters' defaults; `ppo` is the
// RM + PPO method (src/toy/mod.rs ToyMethod::Ppo).
const METHODS = {
  'dpo': { label: 'DPO', params: { beta: 0.1 } },
  'flex-dpo': { label: 'Flex-DPO', params: { beta_pos: 0.1, beta_neg: 0.05 } },
  'sft-dpo': { label: 'SFT-DPO', params: { beta: 0.1, gamma: 0.1 } },
  'ppo': { label: 'RM+PPO', params: { kl_coef: 0.1, rm_epochs: 300, samples_per_prompt: 16 } },
  'ipo': { label: 'IPO', params: { eta: 0.1 } },
  'slic': { label: 'SLiC', params: { delta: 5, eta: 0.1 } },
  'hinge': { label: 'hinge', params: { beta: 0.1 } },
  'cdpo': { label: 'cDPO', params: { beta: 0.1, label_smoothing: 0.1 } },
  'robust': { label: 'robust DPO', params: { beta: 0.1, label_smoothing: 0.1 } },
  'dpop': { label: 'DPOP', params: { beta: 0.1, lambda: 5 } },
  'simpo': { label: 'SimPO', params: { beta: 2.0, margin: 0.5 } },
};
const INT_PARAMS = new Set(['rm_epochs', 'samples_per_prompt']);
const PRESETS = {
  compare: {
    note: 'DPO against its two fixes and reward-model RLHF, all from the same SFT model. Watch the rejected ' +
      'probability of DPO collapse (drastic drop), its chosen probability rise then fall (degradation) and the mass ' +
      'spread to unseen responses (dispersion); Flex-DPO (beta- < beta+) and SFT-DPO keep more on the chosen ones.',
    runs: [{ method: 'dpo', scenario: 1 }, { method: 'flex-dpo', scenario: 1 }, { method: 'sft-dpo', scenario: 1 },
      { method: 'ppo', scenario: 1 }],
    heat: 'prob',
  },
  fig1: {
    note: 'The prompt x response probabilities, as change since SFT: DPO drains the rejected cells (red outlines) ' +
      'and, late in training, the chosen ones too, while the mass moves to responses in no pair.',
    runs: [{ method: 'dpo', scenario: 1 }, { method: 'ppo', scenario: 1 }],
    heat: 'delta',
  },
  fig2: {
    note: 'Average and minimum chosen, average and maximum rejected, and average unseen probability over epochs ' +
      '(scenario 1). Log panel: the gradient on the rejected probability grows by tens of orders of magnitude as ' +
      'pi- falls, while the chosen one vanishes.',
    runs: [{ method: 'dpo', scenario: 1 }, { method: 'ppo', scenario: 1 }],
    heat: 'log',
  },
  fig3: {
    note: 'DPO on the four data scenarios (on-policy 0.12 / off-policy 0.02 initial likelihoods). The paper finds ' +
      'both-on-policy best; an independent re-implementation did not reproduce that robustly: judge for yourself.',
    runs: [1, 2, 3, 4].map((s) => ({ method: 'dpo', scenario: s })),
    heat: 'prob',
  },
};

const $ = (id) => document.getElementById(id);
const LN10 = Math.log(10);

// Everything the test reads. Kept plain (numbers, strings, small objects).
const state = (window.dpo3d = {
  status: 'loading', // loading | no-webgpu | building | ready | running | paused | done | error
  error: null,
  adapter: null,
  runs: [],
  epochsPerSecond: 0, // epochs of each run per wall-clock second while running (frame waits included)
  runEpochsPerSecond: 0, // the same summed over the runs that train
  stepEpochsPerSecond: 0, // epochs of each run per second spent inside toy.step() (the GPU-bound rate)
  setupSeconds: 0,
  frames: 0,
  chartPoints: 0,
  stepping: false, // a toy.step() is in flight
});

let toy = null; // the wasm WebToy
let generation = 0; // bumped by every reset so a stale build or loop stops
let runSpecs = []; // [{method, scenario, params}]
let views = []; // per run: {col, curves, logs, heat, meta, errBox}
let info = null;
let records = []; // every record received, in order (the JSONL export)
let timing = { ms: 0, wallMs: 0, epochs: 0, prevEnd: null };
let loopActive = false; // one animation-frame loop at a time (pause + resume while a step is in flight)
let stepInFlight = null; // the pending toy.step() promise: a reset waits for it before freeing the toy

// ---------------------------------------------------------------- WebGPU availability

async function checkWebGPU() {
  const ua = navigator.userAgent;
  if (!window.isSecureContext) {
    return `<b>This page is not in a secure context</b>, so the browser hides WebGPU. Open it as
      <code>http://127.0.0.1:PORT/</code> or <code>http://localhost:PORT/</code> (what <code>./web/serve</code>
      prints), or over HTTPS.`;
  }
  const how = `WebGPU ships in Chrome and Edge 113+ on Windows, macOS and ChromeOS (Android from 121), Safari 26+,
    and Firefox 141+ on Windows; on Linux it is still behind a flag for most GPUs. Where it is off, enable it:
    Chrome/Edge/Chromium <code>chrome://flags/#enable-unsafe-webgpu</code> (on Linux also
    <code>chrome://flags/#enable-vulkan</code>), or start Chromium with
    <code>--enable-unsafe-webgpu --enable-features=Vulkan</code>; Firefox <code>about:config</code> →
    <code>dom.webgpu.enabled</code>; Safari → Settings → Feature Flags → WebGPU. <code>chrome://gpu</code> tells
    whether WebGPU is hardware accelerated.`;
  if (!('gpu' in navigator)) {
    return `<b>This browser does not expose WebGPU</b> (<code>navigator.gpu</code> is missing), and dpo3d trains on
      the GPU through it. ${how}<br><small>${escapeHtml(ua)}</small>`;
  }
  let adapter = null;
  try {
    adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch (e) {
    adapter = null;
  }
  if (!adapter) {
    return `<b>WebGPU is present but offered no GPU adapter</b> (<code>requestAdapter()</code> returned null): the
      GPU or its driver may be blocklisted, or WebGPU is disabled for it. ${how}<br><small>${escapeHtml(ua)}</small>`;
  }
  const ai = adapter.info || {};
  state.adapter = [ai.vendor, ai.architecture, ai.description].filter(Boolean).join(' ') || 'WebGPU adapter';
  return null;
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
}

// ---------------------------------------------------------------- controls

function methodLabel(spec) {
  const m = METHODS[spec.method];
  const p = spec.params;
  let extra = '';
  if (spec.method === 'flex-dpo') extra = ` (β-=${p.beta_neg})`;
  if (spec.method === 'sft-dpo') extra = ` (γ=${p.gamma})`;
  return `${m.label}${extra}`;
}

function runLabels(specs) {
  const multiScenario = new Set(specs.map((s) => s.scenario)).size > 1;
  const seen = new Map();
  return specs.map((s) => {
    let l = methodLabel(s) + (multiScenario ? ` · scenario ${s.scenario}` : '');
    const n = (seen.get(l) || 0) + 1;
    seen.set(l, n);
    return n > 1 ? `${l} #${n}` : l;
  });
}

function renderRunControls() {
  const box = $('runs');
  box.innerHTML = '';
  runSpecs.forEach((spec, i) => {
    const row = document.createElement('div');
    row.className = 'run-row';
    const opts = Object.entries(METHODS).map(([k, m]) => `<option value="${k}"${k === spec.method ? ' selected' : ''}>${m.label}</option>`).join('');
    const scen = [1, 2, 3, 4].map((s) => `<option value="${s}"${s === spec.scenario ? ' selected' : ''}>scenario ${s}</option>`).join('');
    row.innerHTML = `<div class="head">
        <label>method <select data-k="method">${opts}</select></label>
        <label>data <select data-k="scenario">${scen}</select></label>
        <button class="remove" type="button" title="remove this run" aria-label="remove run">×</button>
      </div>
      <div class="params">${Object.entries(spec.params).map(([k, v]) =>
        `<label>${k} <input data-p="${k}" type="number" step="any" value="${v}"></label>`).join('')}</div>`;
    row.querySelector('[data-k=method]').addEventListener('change', (e) => {
      spec.method = e.target.value;
      spec.params = { ...METHODS[spec.method].params };
      renderRunControls();
      settingsChanged();
    });
    row.querySelector('[data-k=scenario]').addEventListener('change', (e) => {
      spec.scenario = +e.target.value;
      settingsChanged();
    });
    row.querySelectorAll('[data-p]').forEach((inp) => inp.addEventListener('change', (e) => {
      const k = e.target.dataset.p;
      spec.params[k] = INT_PARAMS.has(k) ? Math.round(+e.target.value) : +e.target.value;
      settingsChanged();
    }));
    row.querySelector('.remove').addEventListener('click', () => {
      if (runSpecs.length > 1) {
        runSpecs.splice(i, 1);
        renderRunControls();
        settingsChanged();
      }
    });
    box.appendChild(row);
  });
}

function settingsChanged() {
  $('preset').value = 'custom';
  $('preset-note').textContent = '';
  if (toy) $('dirty').hidden = false;
}

function globals() {
  return {
    optimizer: $('optimizer').value,
    lr: +$('lr').value,
    hidden: Math.max(1, Math.round(+$('hidden').value)),
    seed: Math.max(0, Math.round(+$('seed').value)),
    epochs: Math.max(1, Math.round(+$('epochs').value)),
    log_every: Math.max(1, Math.round(+$('log-every').value)),
  };
}

/** The ToyConfig JSON (src/toy/mod.rs) of one run. */
function toyConfig(spec, label, g) {
  const method = spec.method === 'ppo'
    ? { method: 'ppo', ...spec.params }
    : { method: 'preference', loss: { loss_type: spec.method, ...spec.params } };
  return { run: label, method, scenario: spec.scenario, ...g };
}

function applyPreset(name) {
  const p = PRESETS[name];
  if (!p) return;
  $('preset').value = name;
  $('preset-note').textContent = p.note;
  runSpecs = p.runs.map((r) => ({ method: r.method, scenario: r.scenario, params: { ...METHODS[r.method].params } }));
  $('heat-mode').value = p.heat;
  renderRunControls();
}

// ---------------------------------------------------------------- board

function buildBoard(labels) {
  const board = $('board');
  board.innerHTML = '';
  const g = globals();
  views = labels.map((label, i) => {
    const spec = runSpecs[i];
    const col = document.createElement('div');
    col.className = 'run-col';
    const sc = SCENARIOS[spec.scenario];
    col.innerHTML = `<h3>${escapeHtml(label)}</h3>
      <div class="meta">scenario ${spec.scenario} (${sc.name}; SFT row ${sc.row.join(' | ')}) · seed ${g.seed} ·
        H ${g.hidden} · ${g.optimizer} lr ${g.lr}<br><span class="live">building…</span></div>`;
    const errBox = document.createElement('div');
    errBox.className = 'run-error';
    errBox.hidden = true;
    col.appendChild(errBox);
    const box = () => {
      const b = document.createElement('div');
      b.className = 'chart-box';
      col.appendChild(b);
      return b;
    };
    const cb = box(), lb = box(), hb = box();
    const curves = new LineChart(cb, {
      title: 'probabilities (figure 2)', yMin: 0, yMax: 0.7, yMaxGrow: true, xMax: g.epochs, height: 250,
      series: [
        { key: 'chosen_avg', name: 'chosen avg', color: '#1a9850' },
        { key: 'chosen_min', name: 'chosen min', color: '#1a9850', dash: [5, 3] },
        { key: 'rejected_avg', name: 'rejected avg', color: '#d73027' },
        { key: 'rejected_max', name: 'rejected max', color: '#d73027', dash: [5, 3] },
        { key: 'unseen_avg', name: 'unseen avg', color: '#4575b4' },
      ],
    });
    const logs = new LineChart(lb, {
      title: 'log10 scale: likelihoods and |dl/dpi|', xMax: g.epochs, height: 250,
      series: [
        { key: 'lp_c', name: 'log10 pi+ (chosen)', color: '#1a9850' },
        { key: 'lp_r', name: 'log10 pi- (rejected)', color: '#d73027' },
        { key: 'g_c', name: 'log10 |dl/dpi+|', color: '#1a9850', dash: [2, 2] },
        { key: 'g_r', name: 'log10 |dl/dpi-|', color: '#d73027', dash: [2, 2] },
      ],
      hlines: [
        { y: Math.log10(1.4e-45), label: 'float32 underflow (1e-45): paper\'s curves stop', color: '#888' },
        { y: Math.log10(3.4e38), label: 'float32 overflow (3e38)', color: '#888' },
      ],
    });
    const heat = new Heatmap(hb, { title: 'heatmap (figure 1)', prompts: 4, responses: 10, pairs: PAIRS });
    heat.setMode($('heat-mode').value);
    for (const [chart, b, name] of [[curves, cb, 'curves'], [logs, lb, 'log'], [heat, hb, 'heatmap']]) {
      const btn = document.createElement('button');
      btn.className = 'png';
      btn.type = 'button';
      btn.textContent = 'PNG';
      btn.title = 'download this chart as PNG';
      btn.addEventListener('click', () => chart.canvas.toBlob((b2) => download(b2, `dpo3d-${slug(label)}-${name}.png`), 'image/png'));
      b.appendChild(btn);
    }
    board.appendChild(col);
    return { col, curves, logs, heat, live: col.querySelector('.live'), errBox, label };
  });
  drawAll(true);
}

function drawAll(force = false) {
  for (const v of views) {
    v.curves.draw(force);
    v.logs.draw(force);
    v.heat.draw(force);
  }
}

function ingest(out) {
  out.runs.forEach((r, i) => {
    const v = views[i];
    const s = state.runs[i];
    if (!v || !s) return;
    for (const rec of r.records) {
      records.push(rec);
      const e = rec.epoch;
      v.curves.push('chosen_avg', e, rec['toy/chosen_avg']);
      v.curves.push('chosen_min', e, rec['toy/chosen_min']);
      v.curves.push('rejected_avg', e, rec['toy/rejected_avg']);
      v.curves.push('rejected_max', e, rec['toy/rejected_max']);
      v.curves.push('unseen_avg', e, rec['toy/unseen_avg']);
      const lc = rec['toy/logp_chosen_avg'], lr = rec['toy/logp_rejected_avg'];
      v.logs.push('lp_c', e, lc == null ? null : lc / LN10);
      v.logs.push('lp_r', e, lr == null ? null : lr / LN10);
      v.logs.push('g_c', e, rec['grad/log10_chosen']);
      v.logs.push('g_r', e, rec['grad/log10_rejected']);
      if (!s.first) s.first = rec;
      s.last = rec;
      s.records++;
    }
    if (r.log_probs && r.log_probs.length) v.heat.set(r.log_probs, s.sftProbs);
    s.epoch = r.epoch;
    s.finished = r.finished;
    if (r.error && !s.error) {
      s.error = r.error;
      v.errBox.hidden = false;
      v.errBox.textContent = `stopped: ${r.error}`;
    }
    const last = s.last;
    v.live.textContent = last
      ? `epoch ${r.epoch}: chosen ${fmtP(last['toy/chosen_avg'])}, rejected ${fmtLogP(last['toy/logp_rejected_avg'])} (geo-mean), unseen ${fmtP(last['toy/unseen_avg'])}`
      : `epoch ${r.epoch}`;
    s.chartPoints = { curves: v.curves.pointCount(), log: v.logs.pointCount(), heatmap: v.heat.updates };
  });
  state.chartPoints = views.reduce((n, v) => n + v.curves.pointCount() + v.logs.pointCount(), 0);
}

function fmtP(p) {
  return p == null ? '–' : p.toFixed(3);
}
function fmtLogP(lp) {
  if (lp == null) return '–';
  const l10 = lp / LN10;
  if (l10 > -3) return Math.exp(lp).toFixed(4);
  const ex = Math.floor(l10);
  return `${Math.pow(10, l10 - ex).toFixed(1)}e${ex}`;
}

// ---------------------------------------------------------------- lifecycle

function setStatus(st, text) {
  state.status = st;
  $('status').textContent = text || st;
  $('start').disabled = !(st === 'ready' || st === 'paused' || st === 'idle');
  $('start').textContent = st === 'paused' ? 'Resume' : 'Start';
  $('pause').disabled = st !== 'running';
  $('reset').disabled = st === 'loading' || st === 'no-webgpu';
}

function showError(msg) {
  state.error = String(msg);
  $('error').hidden = false;
  $('error').textContent = `Error: ${msg}`;
}

async function build() {
  const gen = ++generation;
  if (stepInFlight) await stepInFlight.catch(() => {});
  if (gen !== generation) return false;
  loopActive = false;
  if (toy) {
    toy.free();
    toy = null;
  }
  records = [];
  timing = { ms: 0, wallMs: 0, epochs: 0, prevEnd: null };
  state.error = null;
  state.epochsPerSecond = 0;
  state.runEpochsPerSecond = 0;
  state.frames = 0;
  $('error').hidden = true;
  $('dirty').hidden = true;
  $('speedo').textContent = '';
  const g = globals();
  const labels = runLabels(runSpecs);
  state.runs = labels.map((label, i) => ({ label, method: runSpecs[i].method, scenario: runSpecs[i].scenario,
    epoch: 0, records: 0, finished: false, error: null, first: null, last: null, sftProbs: null, chartPoints: {} }));
  buildBoard(labels);
  setStatus('building', 'building: SFT phase and runs…');
  const cfg = { runs: runSpecs.map((s, i) => toyConfig(s, labels[i], g)) };
  const t0 = performance.now();
  // The SFT phase (400 epochs per scenario) runs inside create(); the page stays live meanwhile, so show a clock.
  const ticker = setInterval(() => {
    if (gen === generation && state.status === 'building') {
      $('status').textContent = `building: SFT phase and runs… ${((performance.now() - t0) / 1000).toFixed(0)} s`;
    }
  }, 500);
  let made;
  try {
    made = await WebToy.create(JSON.stringify(cfg));
  } catch (e) {
    clearInterval(ticker);
    if (gen !== generation) return false;
    showError(e && e.message ? e.message : e);
    setStatus('error', 'error');
    return false;
  }
  clearInterval(ticker);
  if (gen !== generation) {
    made.free();
    return false;
  }
  toy = made;
  state.setupSeconds = (performance.now() - t0) / 1000;
  info = JSON.parse(toy.info());
  state.adapterWasm = info.adapter;
  info.runs.forEach((r, i) => {
    const s = state.runs[i];
    s.sftProbs = r.sft_probs;
    if (r.sft_probs && r.sft_probs.length) views[i].heat.set(r.sft_probs.map(Math.log), r.sft_probs);
    if (r.error) {
      s.error = r.error;
      s.finished = true;
      views[i].errBox.hidden = false;
      // The construction error itself (a kernel the browser rejects, a size over the adapter's limits, ...).
      views[i].errBox.textContent = `${s.label} could not be built: ${r.error}. The other runs go on.`;
      views[i].live.textContent = 'not running';
      // Nothing will be plotted: keep only pi0's heatmap (when SFT ran) so the column stays small.
      views[i].curves.canvas.parentElement.hidden = true;
      views[i].logs.canvas.parentElement.hidden = true;
      if (!(r.sft_probs && r.sft_probs.length)) views[i].heat.canvas.parentElement.hidden = true;
    } else {
      views[i].live.textContent = 'epoch 0 (after SFT)';
    }
  });
  drawAll(true);
  if (state.runs.every((r) => r.error)) {
    showError(`no run could be built. ${state.runs[0].error}`);
    setStatus('error', 'error');
    return false;
  }
  const a = info.adapter;
  setStatus('ready', `ready on ${a.name || state.adapter || 'WebGPU'} (${a.backend}); SFT + setup ${state.setupSeconds.toFixed(1)} s`);
  return true;
}

function start() {
  if (!toy || !(state.status === 'ready' || state.status === 'paused')) return;
  setStatus('running', 'running');
  timing.prevEnd = null; // time paused does not count
  if (!loopActive) {
    loopActive = true;
    const gen = generation;
    requestAnimationFrame(() => frame(gen));
  }
}

async function frame(gen) {
  if (gen !== generation) return;
  if (state.status !== 'running' || !toy) {
    loopActive = false;
    return;
  }
  const epochs = +$('speed').value;
  const t0 = performance.now();
  let out;
  try {
    state.stepping = true;
    stepInFlight = toy.step(epochs);
    out = JSON.parse(await stepInFlight);
  } catch (e) {
    if (gen !== generation) return;
    loopActive = false;
    showError(e && e.message ? e.message : e);
    setStatus('error', 'error');
    return;
  } finally {
    stepInFlight = null;
    state.stepping = false;
  }
  if (gen !== generation) return;
  const before = Math.max(0, ...state.runs.map((r) => r.epoch));
  ingest(out);
  const after = Math.max(0, ...state.runs.map((r) => r.epoch));
  const t1 = performance.now();
  const dt = t1 - t0;
  timing.ms += dt;
  timing.wallMs += t1 - (timing.prevEnd === null ? t0 : timing.prevEnd);
  timing.prevEnd = t1;
  timing.epochs += after - before;
  state.frames++;
  const active = state.runs.filter((r) => !r.error || r.records > 0).length;
  if (timing.ms > 0) {
    state.stepEpochsPerSecond = (timing.epochs / timing.ms) * 1000;
    state.epochsPerSecond = (timing.epochs / timing.wallMs) * 1000;
    state.runEpochsPerSecond = state.epochsPerSecond * active;
  }
  $('speedo').textContent = `epoch ${after} / ${globals().epochs} · ${state.epochsPerSecond.toFixed(0)} epochs/s per run` +
    ` (${state.runEpochsPerSecond.toFixed(0)} run-epochs/s) · ${dt.toFixed(0)} ms per ${epochs}-epoch step`;
  drawAll();
  if (out.done) {
    loopActive = false;
    setStatus('done', `done: ${after} epochs`);
    return;
  }
  requestAnimationFrame(() => frame(gen));
}

function pause() {
  if (state.status === 'running') setStatus('paused', 'paused');
}

// ---------------------------------------------------------------- exports

function slug(s) {
  return s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}

function download(blob, name) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function exportJsonl() {
  const text = records.map((r) => JSON.stringify(r)).join('\n') + (records.length ? '\n' : '');
  download(new Blob([text], { type: 'application/x-ndjson' }), 'dpo3d-toy-metrics.jsonl');
}

async function exportPng() {
  const groups = views.map((v) => ({ caption: v.label, canvases: [v.curves.canvas, v.logs.canvas, v.heat.canvas] }));
  const g = globals();
  const blob = await composePng(groups, `dpo3d toy: seed ${g.seed}, H ${g.hidden}, ${g.optimizer} lr ${g.lr}, epoch ${Math.max(0, ...state.runs.map((r) => r.epoch))}`);
  download(blob, 'dpo3d-toy-charts.png');
}

// ---------------------------------------------------------------- wiring

function fromUrl() {
  const q = new URLSearchParams(location.search);
  applyPreset(q.get('preset') || 'compare');
  if (q.has('runs')) {
    const sc = +(q.get('scenario') || 1);
    runSpecs = q.get('runs').split(',').filter((m) => METHODS[m])
      .map((m) => ({ method: m, scenario: sc, params: { ...METHODS[m].params } }));
    if (!runSpecs.length) applyPreset('compare');
    else {
      $('preset').value = 'custom';
      $('preset-note').textContent = '';
    }
    renderRunControls();
  }
  for (const [param, id] of [['epochs', 'epochs'], ['hidden', 'hidden'], ['seed', 'seed'], ['lr', 'lr'],
    ['optimizer', 'optimizer'], ['log_every', 'log-every'], ['speed', 'speed'], ['heat', 'heat-mode']]) {
    if (q.has(param)) $(id).value = q.get(param);
  }
  $('speed-val').textContent = $('speed').value;
  return q.get('autostart') === '1';
}

function wire() {
  const tbody = $('scen-rows');
  for (const [s, sc] of Object.entries(SCENARIOS)) {
    const tr = document.createElement('tr');
    tr.innerHTML = `<th title="${sc.name}">${s}</th>${sc.row.map((v) => `<td>${v.toFixed(2)}</td>`).join('')}`;
    tbody.appendChild(tr);
  }
  $('preset').addEventListener('change', async (e) => {
    if (e.target.value === 'custom') return;
    applyPreset(e.target.value);
    if (await build()) start();
  });
  $('add-run').addEventListener('click', () => {
    runSpecs.push({ method: 'dpo', scenario: runSpecs.length ? runSpecs[runSpecs.length - 1].scenario : 1, params: { ...METHODS.dpo.params } });
    renderRunControls();
    settingsChanged();
  });
  for (const id of ['optimizer', 'lr', 'hidden', 'seed', 'epochs', 'log-every']) $(id).addEventListener('change', settingsChanged);
  $('speed').addEventListener('input', () => ($('speed-val').textContent = $('speed').value));
  $('heat-mode').addEventListener('change', (e) => {
    for (const v of views) v.heat.setMode(e.target.value);
    drawAll();
  });
  $('start').addEventListener('click', async () => {
    if (!toy && !(await build())) return;
    start();
  });
  $('pause').addEventListener('click', pause);
  $('reset').addEventListener('click', () => build());
  $('export-jsonl').addEventListener('click', exportJsonl);
  $('export-png').addEventListener('click', exportPng);
  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => drawAll(true), 100);
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === ' ' && e.target === document.body) {
      e.preventDefault();
      if (state.status === 'running') pause();
      else start();
    }
  });
}

async function main() {
  wire();
  const autostart = fromUrl();
  const problem = await checkWebGPU();
  if (problem) {
    $('nogpu').hidden = false;
    $('nogpu').innerHTML = problem;
    setStatus('no-webgpu', 'no WebGPU: see the note below');
    return;
  }
  try {
    await init();
  } catch (e) {
    showError(`could not load the wasm module (build it with ./web/serve): ${e && e.message ? e.message : e}`);
    setStatus('error', 'error');
    return;
  }
  setStatus('idle', `WebGPU adapter: ${state.adapter}. Press Start.`);
  if (autostart && (await build())) start();
}

main();
