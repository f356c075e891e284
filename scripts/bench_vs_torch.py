#!/usr/bin/env python3
"""Runs dpo3d's benchmarks and their eager-PyTorch counterparts on this machine, in one run, and prints the ratios.

Called by `scripts/bench-vs-torch` (which installs and builds first). Rows:
- matmul n^3 (f32): dpo3d's fastest WGSL kernel vs torch.matmul (TF32 off); ratio = dpo3d GFLOP/s / PyTorch's.
- GPT training step (forward, loss, backward, clip, AdamW; `examples/bench.rs`, `scripts/bench_torch.py`) at three
  shapes; ratio = PyTorch ms / dpo3d ms.
- generation with a KV cache (B prompts of 72 tokens, 24 new tokens at temperature 1 with their log-probs) at the
  llm-study's small and full model sizes; ratio = PyTorch ms / dpo3d ms.
- one toy DPO run (SFT 400 + DPO 2000 epochs, metrics every 10), dpo3d on one worker vs PyTorch on one thread.
- the toy study's DPO-family runs (9 configurations x 5 seeds: `toy3d --no-ppo --no-token-toy`), dpo3d as it runs
  the study (seeds and scenarios as replicas) vs `scripts/toy_torch.py --study` (one eager model per run, as many
  single-thread worker processes as cores).
- the toy study's RM+PPO runs (5 seeds: `toy3d --loss ppo --no-token-toy`, one run per job in dpo3d too) vs
  `scripts/toy_torch.py --ppo` (the same reward model, value model and PPO step in eager PyTorch).
Ratios above 1 mean dpo3d is faster. The toy rows compare with PyTorch on the CPU even where a GPU is present
(for a 4-256-256-10 MLP that is PyTorch's fastest device).
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "examples"


def sh(cmd, **kw):
    print("+ " + " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    r = subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
        raise SystemExit(f"bench-vs-torch: {cmd[0]} failed with exit code {r.returncode}")
    return r.stdout


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def toy3d_seconds(out):
    m = re.search(r"trained (\d+) runs in ([0-9.]+) s", out)
    if not m:
        raise SystemExit("bench-vs-torch: toy3d did not report its training time")
    return int(m.group(1)), float(m.group(2))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes and budgets: checks the harness, not speed")
    ap.add_argument("--out", default="runs/bench-vs-torch")
    ap.add_argument("--skip-toy", action="store_true")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--only", choices=["matmul", "gpt", "generation"], help="of the bench rows, only these")
    a = ap.parse_args()
    out = ROOT / a.out
    out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    results = {"machine": {"cpu": cpu_name(), "cores": cores}, "rows": []}
    rows = results["rows"]

    if not a.skip_bench:
        skip = [f"--no-{part}" for part in ("matmul", "gpt", "generation") if a.only and a.only != part]
        args = ["--out", out / "dpo3d_bench.json"] + (["--quick"] if a.quick else []) + skip
        sh([BIN / "bench"] + args)
        d = json.load(open(out / "dpo3d_bench.json"))
        gpu = d["device"]["device_type"] != "Cpu"
        results["machine"]["dpo3d_adapter"] = f'{d["device"]["name"]} ({d["device"]["backend"]}, {d["device"]["driver"]})'
        max_n = max(r["n"] for r in d["matmul"]) if d["matmul"] else 512
        targs = ["--device", "cuda" if gpu else "cpu", "--threads", str(cores), "--max-n", str(max_n),
                 "--out", out / "torch_bench.json"] + (["--quick"] if a.quick else []) + skip
        sh([sys.executable, "scripts/bench_torch.py"] + targs)
        t = json.load(open(out / "torch_bench.json"))
        results["machine"]["torch"] = f"{t['device']['backend']} on {t['device']['name']}"
        for n in sorted({r["n"] for r in d["matmul"]}):
            best = max((r for r in d["matmul"] if r["n"] == n), key=lambda r: r["gflops"])
            tr = next((r for r in t["matmul"] if r["n"] == n), None)
            if tr:
                rows.append({"work": f"matmul {n}^3 (best kernel: {best['kernel']})", "dpo3d": f'{best["gflops"]:.2f} GFLOP/s',
                             "torch": f'{tr["gflops"]:.2f} GFLOP/s', "ratio": best["gflops"] / tr["gflops"]})
        for g in d["gpt_step"]:
            key = (g["layers"], g["width"], g["heads"], g["context"], g["batch"])
            tg = next((x for x in t["gpt_step"] if (x["layers"], x["width"], x["heads"], x["context"], x["batch"]) == key), None)
            if tg:
                rows.append({"work": "GPT step {}L C{} NH{} T{} B{}".format(*key), "dpo3d": f'{g["ms_per_step"]:.1f} ms',
                             "torch": f'{tg["ms_per_step"]:.1f} ms', "ratio": tg["ms_per_step"] / g["ms_per_step"]})
        for g in d.get("generation", []):
            key = (g["layers"], g["width"], g["heads"], g["batch"])
            tg = next((x for x in t.get("generation", []) if (x["layers"], x["width"], x["heads"], x["batch"]) == key), None)
            if tg:
                work = "generation {}L C{} NH{} B{}: {} + {} tokens, KV cache".format(*key, g["prompt_len"], g["new_tokens"])
                rows.append({"work": work, "dpo3d": f'{g["ms"]:.1f} ms', "torch": f'{tg["ms"]:.1f} ms',
                             "ratio": tg["ms"] / g["ms"]})

    if not a.skip_toy:
        epochs, seeds = (300, 2) if a.quick else (2000, 5)
        common = ["--epochs", epochs, "--no-report", "--no-token-toy"]
        _, dt = toy3d_seconds(sh([BIN / "toy3d", "--loss", "dpo", "--seeds", 1, "--threads", 1, "--out", out / "toy_one"] + common))
        tj = json.loads(sh([sys.executable, "scripts/toy_torch.py", "--one", "--epochs", epochs]).strip().splitlines()[-1])
        rows.append({"work": f"one toy DPO run (SFT 400 + {epochs} epochs), 1 worker", "dpo3d": f"{dt:.1f} s",
                     "torch": f'{tj["seconds"]:.1f} s (1 thread)', "ratio": tj["seconds"] / dt})
        n, dt = toy3d_seconds(sh([BIN / "toy3d", "--no-ppo", "--seeds", seeds, "--out", out / "toy_study"] + common))
        tj = json.loads(sh([sys.executable, "scripts/toy_torch.py", "--study", "--seeds", seeds, "--epochs", epochs,
                            "--procs", cores]).strip().splitlines()[-1])
        rows.append({"work": f"toy study, DPO family: {n} runs x (SFT 400 + {epochs} epochs)", "dpo3d": f"{dt:.1f} s",
                     "torch": f'{tj["seconds"]:.1f} s ({tj["procs"]} procs)', "ratio": tj["seconds"] / dt})
        n, dt = toy3d_seconds(sh([BIN / "toy3d", "--loss", "ppo", "--seeds", seeds, "--out", out / "toy_ppo"] + common))
        tj = json.loads(sh([sys.executable, "scripts/toy_torch.py", "--ppo", "--seeds", seeds, "--epochs", epochs,
                            "--procs", cores]).strip().splitlines()[-1])
        rows.append({"work": f"toy study, RM+PPO: {n} runs x (SFT 400 + RM 300 + {epochs} PPO steps)",
                     "dpo3d": f"{dt:.1f} s", "torch": f'{tj["seconds"]:.1f} s ({tj["procs"]} procs)',
                     "ratio": tj["seconds"] / dt})
        results["machine"]["torch_toy"] = f'torch {tj["torch"]} on the CPU'

    m = results["machine"]
    lines = [f'Machine: {m["cpu"]}, {m["cores"]} cores. dpo3d: {m.get("dpo3d_adapter", "-")}. '
             f'PyTorch: {m.get("torch", m.get("torch_toy", "-"))}. {time.strftime("%Y-%m-%d")}.', "",
             "| work | dpo3d | PyTorch eager | ratio (>1: dpo3d faster) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f'| {r["work"]} | {r["dpo3d"]} | {r["torch"]} | {r["ratio"]:.2f} |')
    table = "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    json.dump(results, open(out / "results.json", "w"), indent=1)
    print(table)


if __name__ == "__main__":
    main()
