#!/usr/bin/env python3
"""The toy study's DPO-family runs in eager PyTorch: the baseline `scripts/bench-vs-torch` times dpo3d against.

The same work as `toy3d --no-ppo --no-token-toy --no-report` (the README's main job without RM+PPO and the token
toy): for every configuration and seed, the paper's MLP (one-hot prompt P=4 -> H -> ReLU -> H -> ReLU -> R=10
logits; no first-layer bias; nn.Linear's default init), an "SFT" phase fitting the scenario's target row
(soft-target cross-entropy over all P x R rows, full batch, Adam lr 1e-2, 400 epochs), then the preference loss on
the four pairs against the frozen SFT model (full batch, Adam lr 1e-3, 2000 epochs), with the (P, R) probability
matrix read back to the host every 10 epochs and before the first update, as dpo3d logs it.

Each run is written the way a PyTorch user would write it: one model per run, eager ops. Runs are spread over
`--procs` worker processes of `--threads` intra-op threads each (default: as many processes as cores, one thread
each, which was the fastest layout for these tiny matmuls), so PyTorch gets the same cores dpo3d gets.

    python3 scripts/toy_torch.py [--study | --one] [--epochs 2000] [--seeds 5] [--procs N] [--threads 1]

`--ppo` runs the study's RM+PPO runs instead (`toy3d --loss ppo --no-token-toy --no-report`, scenario 1, one run per
seed), as dpo3d does them: the SFT phase; a reward model (one-hot (prompt, response) -> 64 -> ReLU -> 64 -> ReLU -> 1)
fitted to the four pairs (Bradley-Terry, Adam lr 1e-2, 300 epochs); a value model (the SFT policy's hidden layers
and a zero scalar head); then per epoch one PPO step: 16 responses sampled per prompt (64 rows), the reward model's
score minus kl_coef (0.1) times the per-row KL estimate log pi - log pi_ref, one-token GAE (gamma 1, lambda 0.95),
whitened advantages, and 4 passes of the clipped policy loss (0.2) and the clipped value loss (0.2, weight 0.1), each
model with its own Adam (lr 1e-3); the (P, R) probabilities read back every 10 epochs.

Prints one JSON object: {"torch", "runs", "seconds", "procs", "threads", "epochs", "sft_epochs"}.
"""

import argparse
import json
import multiprocessing as mp
import os
import time

P, R = 4, 10
PAIRS = [(0, 0, 4), (1, 1, 6), (2, 2, 7), (3, 3, 5)]
ROWS = {1: (0.12, 0.12, 0.03, 0.01), 2: (0.12, 0.02, 0.40, 0.04), 3: (0.02, 0.12, 0.40, 0.04),
        4: (0.02, 0.02, 0.80, 0.04)}

# (loss, params, scenario): the study's DPO-family configurations (examples/toy3d/main.rs, `study`).
STUDY = [("dpo", {}, 1), ("flex-dpo", {"beta_neg": 0.08}, 1), ("flex-dpo", {"beta_neg": 0.05}, 1),
         ("sft-dpo", {"gamma": 0.1}, 1), ("ipo", {"eta": 0.1}, 1), ("slic", {"delta": 5.0, "eta": 0.1}, 1),
         ("dpo", {}, 2), ("dpo", {}, 3), ("dpo", {}, 4)]


def scenario_row(s):
    c, r, u8, u9 = ROWS[s]
    return [c] * 4 + [r] * 4 + [u8, u9]


def run(job):
    import torch
    import torch.nn as nn

    loss_name, kw, scenario, seed, epochs, sft_epochs, hidden, threads = job
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(P, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, R))
    eye = torch.eye(P)
    sft(model, scenario, sft_epochs)
    with torch.no_grad():
        ref = torch.log_softmax(model(eye), dim=-1)
    pr = torch.tensor([p for p, _, _ in PAIRS])
    ch = torch.tensor([c for _, c, _ in PAIRS])
    rj = torch.tensor([r for _, _, r in PAIRS])
    ref_c, ref_r = ref[pr, ch], ref[pr, rj]

    beta = 0.1
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for epoch in range(epochs + 1):
        logp = torch.log_softmax(model(eye), dim=-1)
        if epoch % 10 == 0:
            history.append(logp.detach().exp().tolist())
        if epoch == epochs:
            break
        lc, lr_ = logp[pr, ch], logp[pr, rj]
        if loss_name == "dpo":
            loss = -torch.nn.functional.logsigmoid(beta * ((lc - ref_c) - (lr_ - ref_r))).mean()
        elif loss_name == "flex-dpo":
            loss = -torch.nn.functional.logsigmoid(beta * (lc - ref_c) - kw["beta_neg"] * (lr_ - ref_r)).mean()
        elif loss_name == "sft-dpo":
            loss = (-torch.nn.functional.logsigmoid(beta * ((lc - ref_c) - (lr_ - ref_r))) - kw["gamma"] * lc).mean()
        elif loss_name == "ipo":
            loss = ((((lc - ref_c) - (lr_ - ref_r)) - 1.0 / (2 * kw["eta"])) ** 2).mean()
        elif loss_name == "slic":
            loss = (torch.clamp(kw["delta"] - (lc - lr_), min=0.0) - kw["eta"] * lc).mean()
        else:
            raise ValueError(loss_name)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return len(history)


def sft(model, scenario, sft_epochs):
    """The SFT phase: soft-target cross-entropy of every prompt's row, full batch, Adam lr 1e-2."""
    import torch

    eye = torch.eye(P)
    target = torch.tensor(scenario_row(scenario)).repeat(P, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(sft_epochs):
        opt.zero_grad()
        loss = -(target * torch.log_softmax(model(eye), dim=-1)).sum(dim=-1).mean()
        loss.backward()
        opt.step()


def run_ppo(job):
    """One RM+PPO run (see the module docstring); returns the number of probability read-backs."""
    import copy

    import torch
    import torch.nn as nn

    seed, epochs, sft_epochs, hidden, threads = job
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    policy = nn.Sequential(nn.Linear(P, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                           nn.Linear(hidden, R))
    sft(policy, 1, sft_epochs)
    eye = torch.eye(P)
    with torch.no_grad():
        ref = torch.log_softmax(policy(eye), dim=-1)

    # Reward model over one-hot (prompt, response) pairs, Bradley-Terry on the four pairs.
    rm = nn.Sequential(nn.Linear(P * R, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    pair_eye = torch.eye(P * R)
    xc = pair_eye[[p * R + c for p, c, _ in PAIRS]]
    xr = pair_eye[[p * R + r for p, _, r in PAIRS]]
    opt = torch.optim.Adam(rm.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        loss = -torch.nn.functional.logsigmoid(rm(xc) - rm(xr)).mean()
        loss.backward()
        opt.step()

    # Value model: the policy's hidden layers and a zero scalar head.
    value = nn.Sequential(*copy.deepcopy(list(policy.children())[:4]), nn.Linear(hidden, 1))
    nn.init.zeros_(value[4].weight)
    nn.init.zeros_(value[4].bias)

    samples, kl_coef, clip, clip_v, vf_coef = 16, 0.1, 0.2, 0.2, 0.1
    prompts = torch.arange(P).repeat_interleave(samples)  # (64,)
    x = eye[prompts]
    rows = torch.arange(P * samples)
    opt_p = torch.optim.Adam(policy.parameters(), lr=1e-3)
    opt_v = torch.optim.Adam(value.parameters(), lr=1e-3)
    history = []
    for epoch in range(epochs + 1):
        if epoch % 10 == 0 or epoch == epochs:
            with torch.no_grad():
                history.append(torch.softmax(policy(eye), dim=-1).tolist())
        if epoch == epochs:
            break
        with torch.no_grad():
            logp_all = torch.log_softmax(policy(x), dim=-1)  # (64, R)
            resp = torch.multinomial(logp_all.exp(), 1).squeeze(1)
            old_logp = logp_all[rows, resp]
            kl = old_logp - ref[prompts, resp]
            score = rm(pair_eye[prompts * R + resp]).squeeze(1)
            old_v = value(x).squeeze(1)
            reward = score - kl_coef * kl
            adv = reward - old_v  # one token: GAE's advantage is delta = r - V whatever gamma and lambda
            ret = adv + old_v
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        for _ in range(4):
            logp = torch.log_softmax(policy(x), dim=-1)[rows, resp]
            ratio = torch.exp(logp - old_logp)
            pg = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - clip, 1 + clip)).mean()
            opt_p.zero_grad()
            pg.backward()
            opt_p.step()
            v = value(x).squeeze(1)
            v_clipped = old_v + torch.clamp(v - old_v, -clip_v, clip_v)
            vf = vf_coef * 0.5 * torch.max((v - ret) ** 2, (v_clipped - ret) ** 2).mean()
            opt_v.zero_grad()
            vf.backward()
            opt_v.step()
    return len(history)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--study", action="store_true", help="the study's 9 DPO-family configurations (default)")
    g.add_argument("--one", action="store_true", help="one DPO run (scenario 1, seed 0)")
    g.add_argument("--ppo", action="store_true", help="the study's RM+PPO runs (scenario 1, one per seed)")
    ap.add_argument("--epochs", type=int, default=2000)
    ap.add_argument("--sft-epochs", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    configs = STUDY[:1] if a.one else STUDY
    seeds = 1 if a.one else a.seeds
    jobs = [(l, kw, s, seed, a.epochs, a.sft_epochs, a.hidden, a.threads) for (l, kw, s) in configs
            for seed in range(seeds)]
    fn = run
    if a.ppo:
        fn = run_ppo
        jobs = [(seed, a.epochs, a.sft_epochs, a.hidden, a.threads) for seed in range(a.seeds)]
    procs = 1 if a.one else max(1, min(a.procs, len(jobs)))
    import torch
    # Warm up in the parent (PyTorch's first ops initialise lazily, ~1 s); forked workers inherit that state.
    torch.set_num_threads(a.threads)
    run(("dpo", {}, 1, 0, 2, 2, a.hidden, a.threads))
    if a.ppo:
        run_ppo((0, 2, 2, a.hidden, a.threads))
    t0 = time.perf_counter()
    if procs == 1:
        for j in jobs:
            fn(j)
    else:
        # fork: the workers inherit the imported, warmed-up torch (with --threads intra-op threads).
        with mp.get_context("fork").Pool(procs) as pool:
            pool.map(fn, jobs, chunksize=1)
    seconds = time.perf_counter() - t0
    print(json.dumps({"torch": torch.__version__, "runs": len(jobs), "seconds": seconds, "procs": procs,
                      "threads": a.threads, "epochs": a.epochs, "sft_epochs": a.sft_epochs}))


if __name__ == "__main__":
    main()
