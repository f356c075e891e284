// Canvas 2D charts for the dpo3d demo: a line chart (linear or log10-valued axes, live-appendable series) and a
// prompt x response heatmap. Deliberately small: the page draws a few hundred points per series, and a chart is
// redrawn at most once per animation frame, so plain Canvas 2D is fast enough and keeps the page offline and
// dependency-free. Every chart can render itself into a PNG (canvas.toBlob).

const FONT = '12px system-ui, -apple-system, "Segoe UI", sans-serif';
const SMALL = '11px system-ui, -apple-system, "Segoe UI", sans-serif';

function niceStep(span, target) {
  const raw = span / Math.max(1, target);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const n = raw / mag;
  return (n < 1.5 ? 1 : n < 3 ? 2 : n < 7 ? 5 : 10) * mag;
}

function ticks(lo, hi, target) {
  if (!(hi > lo)) return [lo];
  const step = niceStep(hi - lo, target);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

function fmt(v) {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(0);
  return String(+v.toPrecision(3));
}

/** Size a canvas for its CSS box and the device pixel ratio; returns the 2D context in CSS pixels. */
function fitCanvas(canvas, cssW, cssH) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.round(cssW * dpr), h = Math.round(cssH * dpr);
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  canvas.style.width = cssW + 'px';
  canvas.style.height = cssH + 'px';
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}

export class LineChart {
  /**
   * @param {HTMLElement} parent
   * @param {object} opts title, xLabel, yLabel, yMin/yMax (fixed; otherwise auto), xMax (fixed end of the x axis),
   *   series: [{key, name, color, dash}], hlines: [{y, label, color}], yTickFormat
   */
  constructor(parent, opts) {
    this.opts = opts;
    this.canvas = document.createElement('canvas');
    this.canvas.className = 'chart';
    this.canvas.setAttribute('role', 'img');
    this.canvas.setAttribute('aria-label', opts.title || 'chart');
    parent.appendChild(this.canvas);
    this.data = new Map(opts.series.map((s) => [s.key, []]));
    this.dirty = true;
  }

  /** Append one point to series `key` (non-finite y values are skipped: a gap, not a crash). */
  push(key, x, y) {
    const arr = this.data.get(key);
    if (!arr || y === null || y === undefined || !Number.isFinite(y)) return;
    arr.push([x, y]);
    this.dirty = true;
  }

  clear() {
    for (const arr of this.data.values()) arr.length = 0;
    this.dirty = true;
  }

  /** Total points received, all series together (read by the browser test). */
  pointCount() {
    let n = 0;
    for (const arr of this.data.values()) n += arr.length;
    return n;
  }

  setXMax(x) {
    this.opts.xMax = x;
    this.dirty = true;
  }

  draw(force = false) {
    if (!this.dirty && !force) return;
    this.dirty = false;
    const o = this.opts;
    const cssW = Math.max(200, this.canvas.parentElement ? this.canvas.parentElement.clientWidth : 360);
    const cssH = o.height || 220;
    const ctx = fitCanvas(this.canvas, cssW, cssH);
    // The legend flows in rows between the title and the plot, so it never hides a curve.
    ctx.font = SMALL;
    const legend = [];
    {
      let x = 52, row = 0;
      for (const s of o.series) {
        const w = ctx.measureText(s.name).width + 34;
        if (x + w > cssW - 10 && x > 52) {
          x = 52;
          row++;
        }
        legend.push({ s, x, row });
        x += w;
      }
    }
    const legendRows = legend.length ? legend[legend.length - 1].row + 1 : 0;
    const pad = { l: 52, r: 10, t: 24 + legendRows * 14, b: 34 };
    const W = cssW - pad.l - pad.r, H = cssH - pad.t - pad.b;
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, cssW, cssH);

    // Ranges: x from 0 to xMax (or the data); y fixed or from the data plus the reference lines that fall near it.
    let xMax = o.xMax || 1, yLo = Infinity, yHi = -Infinity;
    for (const arr of this.data.values()) {
      for (const [x, y] of arr) {
        if (x > xMax) xMax = x;
        if (y < yLo) yLo = y;
        if (y > yHi) yHi = y;
      }
    }
    if (o.yMin !== undefined) yLo = o.yMin;
    if (o.yMax !== undefined) yHi = Math.max(o.yMax, o.yMaxGrow ? yHi : o.yMax);
    if (!Number.isFinite(yLo) || !Number.isFinite(yHi)) {
      yLo = 0;
      yHi = 1;
    }
    if (o.includeHlines) {
      for (const h of o.hlines || []) {
        yLo = Math.min(yLo, h.y);
        yHi = Math.max(yHi, h.y);
      }
    }
    if (yHi - yLo < 1e-9) {
      yHi += 0.5;
      yLo -= 0.5;
    }
    const m = (yHi - yLo) * 0.04;
    if (o.yMin === undefined) yLo -= m;
    if (o.yMax === undefined) yHi += m;
    const X = (x) => pad.l + (x / xMax) * W;
    const Y = (y) => pad.t + (1 - (y - yLo) / (yHi - yLo)) * H;

    // Grid and axes.
    ctx.font = SMALL;
    ctx.strokeStyle = '#e6e6e6';
    ctx.fillStyle = '#555';
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (const t of ticks(yLo, yHi, 5)) {
      const y = Y(t);
      ctx.beginPath();
      ctx.moveTo(pad.l, y);
      ctx.lineTo(pad.l + W, y);
      ctx.stroke();
      ctx.fillText(o.yTickFormat ? o.yTickFormat(t) : fmt(t), pad.l - 4, y);
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (const t of ticks(0, xMax, 5)) {
      const x = X(t);
      ctx.beginPath();
      ctx.moveTo(x, pad.t);
      ctx.lineTo(x, pad.t + H);
      ctx.stroke();
      ctx.fillText(fmt(t), x, pad.t + H + 3);
    }
    ctx.strokeStyle = '#999';
    ctx.strokeRect(pad.l, pad.t, W, H);
    ctx.fillStyle = '#333';
    ctx.font = FONT;
    ctx.textAlign = 'left';
    ctx.fillText(o.title || '', pad.l, 5);
    ctx.font = SMALL;
    ctx.textAlign = 'center';
    ctx.fillText(o.xLabel || 'epoch', pad.l + W / 2, pad.t + H + 18);

    ctx.save();
    ctx.beginPath();
    ctx.rect(pad.l, pad.t, W, H);
    ctx.clip();
    // Reference lines (f32 limits on the log panel).
    for (const h of o.hlines || []) {
      if (h.y < yLo || h.y > yHi) continue;
      ctx.strokeStyle = h.color || '#aaa';
      ctx.setLineDash([2, 3]);
      ctx.beginPath();
      ctx.moveTo(pad.l, Y(h.y));
      ctx.lineTo(pad.l + W, Y(h.y));
      ctx.stroke();
      ctx.setLineDash([]);
      ctx.fillStyle = h.color || '#888';
      ctx.textAlign = 'right';
      ctx.textBaseline = 'bottom';
      ctx.fillText(h.label, pad.l + W - 3, Y(h.y) - 1);
    }
    // Series.
    for (const s of o.series) {
      const arr = this.data.get(s.key);
      if (!arr.length) continue;
      ctx.strokeStyle = s.color;
      ctx.lineWidth = s.width || 1.6;
      ctx.setLineDash(s.dash || []);
      ctx.beginPath();
      arr.forEach(([x, y], i) => (i ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
      ctx.stroke();
    }
    ctx.restore();
    ctx.setLineDash([]);

    // Legend.
    ctx.font = SMALL;
    ctx.textAlign = 'left';
    ctx.textBaseline = 'middle';
    for (const { s, x, row } of legend) {
      const y = 26 + row * 14;
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.setLineDash(s.dash || []);
      ctx.beginPath();
      ctx.moveTo(x, y);
      ctx.lineTo(x + 18, y);
      ctx.stroke();
      ctx.setLineDash([]);
      ctx.fillStyle = '#333';
      ctx.fillText(s.name, x + 22, y);
    }
  }
}

/** A prompt x response heatmap: value per cell, chosen/rejected cells outlined. */
export class Heatmap {
  /**
   * @param {HTMLElement} parent
   * @param {object} opts title, pairs [(prompt, chosen, rejected)], prompts, responses
   */
  constructor(parent, opts) {
    this.opts = opts;
    this.canvas = document.createElement('canvas');
    this.canvas.className = 'chart';
    this.canvas.setAttribute('role', 'img');
    this.canvas.setAttribute('aria-label', opts.title || 'heatmap');
    parent.appendChild(this.canvas);
    this.values = null; // (P, R) row-major
    this.mode = 'prob';
    this.updates = 0;
    this.dirty = true;
  }

  /** logProbs: (P, R) natural-log probabilities; ref: (P, R) probabilities of pi0 (for the change view). */
  set(logProbs, ref) {
    if (!logProbs || !logProbs.length) return;
    this.values = logProbs.slice();
    this.ref = ref;
    this.updates++;
    this.dirty = true;
  }

  setMode(mode) {
    this.mode = mode;
    this.dirty = true;
  }

  draw(force = false) {
    if (!this.dirty && !force) return;
    this.dirty = false;
    const { prompts: P, responses: R, pairs } = this.opts;
    const cssW = Math.max(200, this.canvas.parentElement ? this.canvas.parentElement.clientWidth : 360);
    const cell = Math.max(14, Math.min(40, Math.floor((cssW - 70) / R)));
    const cssH = 22 + P * cell + 58;
    const ctx = fitCanvas(this.canvas, cssW, cssH);
    const x0 = 56, y0 = 22;
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, cssW, cssH);
    ctx.fillStyle = '#333';
    ctx.font = FONT;
    ctx.textAlign = 'left';
    ctx.textBaseline = 'top';
    const titles = { prob: 'pi(response | prompt)', log: 'log10 pi(response | prompt)', delta: 'pi - pi0 (change since SFT)' };
    ctx.fillText(`${this.opts.title}: ${titles[this.mode]}`, 4, 4);
    if (!this.values) return;
    const LN10 = Math.log(10);
    for (let p = 0; p < P; p++) {
      for (let r = 0; r < R; r++) {
        const lp = this.values[p * R + r];
        const prob = Math.exp(lp);
        let color, label;
        if (this.mode === 'prob') {
          color = seq(Math.min(1, prob / 0.6));
          label = prob >= 0.995 ? '1' : prob.toFixed(2).replace(/^0/, '');
        } else if (this.mode === 'log') {
          const l10 = lp / LN10;
          color = seq(Math.max(0, 1 + l10 / 30), 1); // linear in log10: dark at 1, white at 1e-30 and below
          label = Number.isFinite(l10) ? Math.round(l10).toString() : '-inf';
        } else {
          const d = this.ref && this.ref.length ? prob - this.ref[p * R + r] : 0;
          color = div(Math.max(-1, Math.min(1, d / 0.4)));
          label = (d >= 0 ? '+' : '') + d.toFixed(2).replace(/^(-?)0/, '$1');
        }
        const x = x0 + r * cell, y = y0 + p * cell;
        ctx.fillStyle = color;
        ctx.fillRect(x, y, cell - 1, cell - 1);
        if (cell >= 26) {
          ctx.fillStyle = lum(color) < 0.5 ? '#fff' : '#222';
          ctx.font = '10px system-ui, sans-serif';
          ctx.textAlign = 'center';
          ctx.textBaseline = 'middle';
          ctx.fillText(label, x + cell / 2, y + cell / 2);
        }
      }
    }
    // Chosen (green) and rejected (red) cells of each prompt's pair.
    ctx.lineWidth = 2;
    for (const [p, c, r] of pairs) {
      ctx.strokeStyle = '#1a9850';
      ctx.strokeRect(x0 + c * cell + 1, y0 + p * cell + 1, cell - 3, cell - 3);
      ctx.strokeStyle = '#d73027';
      ctx.strokeRect(x0 + r * cell + 1, y0 + p * cell + 1, cell - 3, cell - 3);
    }
    ctx.fillStyle = '#555';
    ctx.font = SMALL;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (let p = 0; p < P; p++) ctx.fillText(`prompt ${p}`, x0 - 4, y0 + p * cell + cell / 2);
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (let r = 0; r < R; r++) ctx.fillText(String(r), x0 + r * cell + cell / 2, y0 + P * cell + 2);
    ctx.textAlign = 'left';
    ctx.fillText('response  (green: chosen, red: rejected, 8-9: in no pair)', x0, y0 + P * cell + 18);
  }
}

// Sequential colour scale (white -> deep blue) and diverging (red <- white -> blue), t in [0, 1] / [-1, 1].
function seq(t, gamma = 0.5) {
  const a = [247, 251, 255], b = [8, 48, 107];
  return rgb(a.map((v, i) => v + (b[i] - v) * Math.pow(t, gamma)));
}
function div(t) {
  const w = [247, 247, 247], pos = [33, 102, 172], neg = [178, 24, 43];
  const e = t >= 0 ? pos : neg, s = Math.abs(t);
  return rgb(w.map((v, i) => v + (e[i] - v) * s));
}
function rgb(c) {
  return `rgb(${c.map((v) => Math.round(v)).join(',')})`;
}
function lum(color) {
  const [r, g, b] = color.match(/\d+/g).map(Number);
  return (0.299 * r + 0.587 * g + 0.114 * b) / 255;
}

/** Draw several canvases, each with a caption, into one PNG blob (for "export charts"). */
export async function composePng(groups, title) {
  // groups: [{caption, canvases: [canvas...]}], laid out as columns.
  const dpr = window.devicePixelRatio || 1;
  const gap = 12 * dpr, head = 40 * dpr, cap = 22 * dpr;
  const colW = Math.max(...groups.flatMap((g) => g.canvases.map((c) => c.width)));
  const colH = groups.map((g) => g.canvases.reduce((h, c) => h + c.height + gap, cap));
  const out = document.createElement('canvas');
  out.width = groups.length * (colW + gap) + gap;
  out.height = head + Math.max(...colH) + gap;
  const ctx = out.getContext('2d');
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, out.width, out.height);
  ctx.fillStyle = '#222';
  ctx.font = `${16 * dpr}px system-ui, sans-serif`;
  ctx.textBaseline = 'top';
  ctx.fillText(title, gap, 12 * dpr);
  groups.forEach((g, i) => {
    const x = gap + i * (colW + gap);
    let y = head;
    ctx.font = `${13 * dpr}px system-ui, sans-serif`;
    ctx.fillStyle = '#222';
    ctx.fillText(g.caption, x, y);
    y += cap;
    for (const c of g.canvases) {
      ctx.drawImage(c, x, y);
      y += c.height + gap;
    }
  });
  return new Promise((resolve) => out.toBlob(resolve, 'image/png'));
}
