import { spawn } from 'node:child_process';
import { chromium } from 'playwright-core';
const srv = spawn('./web/serve', ['--no-build'], { env: { ...process.env, PORT: '8766' }, stdio: 'ignore' });
await new Promise((r) => setTimeout(r, 800));
const b = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--enable-unsafe-webgpu'] });
for (const [h, sft] of [[32, 400], [256, 400]]) {
  const ctx = await b.newContext();
  await ctx.addInitScript(() => { const o = GPUDevice.prototype.createShaderModule; GPUDevice.prototype.createShaderModule = function (d) { return o.call(this, { ...d, code: d.code.replaceAll('3.4028235e38', '3.4028234e38') }); }; });
  const p = await ctx.newPage();
  await p.goto(`http://127.0.0.1:8766/?runs=dpo&epochs=100&hidden=${h}&speed=50&autostart=1`);
  await p.waitForFunction(() => ['done', 'error'].includes(window.dpo3d.status), null, { timeout: 600000 });
  const st = await p.evaluate(() => window.dpo3d);
  console.log(`H ${h}: setup ${st.setupSeconds.toFixed(1)} s, ${st.epochsPerSecond.toFixed(1)} epochs/s ${st.error || ''}`);
  await ctx.close();
}
await b.close(); srv.kill();
