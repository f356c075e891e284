#!/usr/bin/env python3
"""The eager-PyTorch counterpart of `examples/bench.rs`, for a same-machine comparison on a GPU.

Times (a) the same f32 n x n x n matmul (cuBLAS, TF32 off) at the same sizes, (b) the same GPT-2 training step
as `SftTrainer::step`: forward, mean next-token NLL, backward, global grad-norm clipping at 1.0, AdamW (lr 1e-3,
betas (0.9, 0.999), eps 1e-8, no weight decay), and reading the loss back to the host, for the same configs, and (c)
the same generation as `Generator::generate`: B prompts of 72 tokens, 24 new tokens sampled at temperature 1 with a KV
cache (the prompts' forward, then one position per step with keys and values concatenated onto the cache, as
Hugging Face's DynamicCache does), each token's log-prob summed, the tokens and log-probs read back. Prints JSON with
the bench's schema (`dispatches_per_step` is null: PyTorch launches kernels, not recorded dispatches):

    {"device": {...}, "matmul": [{"kernel", "n", "gflops", "ms"}],
     "gpt_step": [{"layers", "width", "heads", "context", "batch", "vocab", "ms_per_step", "dispatches_per_step",
                   "tokens_per_s"}],
     "generation": [{"layers", "width", "heads", "batch", "vocab", "prompt_len", "new_tokens", "ms"}]}

The model is dpo3d's GPT-2 exactly: pre-LayerNorm blocks (eps 1e-5), tanh GELU, 4C MLP, causal attention scaled by
1/sqrt(C/NH) written out as matmul + softmax (HF's "eager" attention; --sdpa uses F.scaled_dot_product_attention
instead), tied embedding/output head, biases everywhere but the head. Timing: wall clock around
torch.cuda.synchronize(), like the Rust side's submit + wait; matmuls run K times between synchronizations after a
warm-up, GPT steps report the median after warm-up steps.

    python3 scripts/bench_torch.py [--quick] [--max-n 4096] [--out runs/bench_torch.json]

Needs torch with CUDA (or --device cpu for a smoke test of the script itself).
"""

import argparse
import json
import math
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SIZES = [256, 512, 1024, 2048, 4096]
# (L, C, NH, T, B): the same as GPT_CONFIGS in examples/bench.rs.
GPT_CONFIGS = [(2, 64, 4, 64, 8), (4, 128, 4, 128, 8), (4, 256, 4, 128, 16)]
# (L, C, NH, B) and the rest: the same as GEN_CONFIGS etc. in examples/bench.rs.
GEN_CONFIGS = [(2, 64, 4, 64), (4, 128, 4, 256)]
GEN_VOCAB, GEN_PROMPT, GEN_NEW = 512, 72, 24


def no_tf32():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_matmul(n, device, target_ms):
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)
    c = torch.empty(n, n, device=device)

    def timed(k):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(k):
            torch.matmul(a, b, out=c)
        sync(device)
        return time.perf_counter() - t0

    timed(1)  # warm-up: cuBLAS handle and heuristics
    one = timed(1)
    k = max(1, min(200, math.ceil(target_ms / 1e3 / one)))
    s = one if k == 1 else timed(k) / k
    return {"kernel": "torch", "n": n, "gflops": 2.0 * n**3 / s / 1e9, "ms": s * 1e3}, k


class Block(nn.Module):
    def __init__(self, c, nh, sdpa):
        super().__init__()
        self.nh, self.sdpa = nh, sdpa
        self.ln_1 = nn.LayerNorm(c, eps=1e-5)
        self.c_attn = nn.Linear(c, 3 * c)
        self.attn_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c, eps=1e-5)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)

    def attention(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.nh, c // self.nh).transpose(1, 2) for z in (q, k, v))  # (B, NH, T, hs)
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // self.nh))  # (B, NH, T, T)
            causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
            y = att @ v
        return self.attn_proj(y.transpose(1, 2).contiguous().view(b, t, c))

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    def forward_cached(self, x, cache):
        """x (B, t, C) at the positions after the cache's (None: the prompts' forward); returns (x, new cache)."""
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.nh, c // self.nh).transpose(1, 2) for z in (q, k, v))  # (B, NH, t, hs)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // self.nh))  # (B, NH, t, T so far)
        if t > 1:
            causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            att = att.masked_fill(~causal, float("-inf"))
        y = att.softmax(dim=-1) @ v
        x = x + self.attn_proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")), (k, v)


class Gpt(nn.Module):
    def __init__(self, v, t, layers, c, nh, sdpa):
        super().__init__()
        self.wte = nn.Embedding(v, c)
        self.wpe = nn.Embedding(t, c)
        self.h = nn.ModuleList(Block(c, nh, sdpa) for _ in range(layers))
        self.ln_f = nn.LayerNorm(c, eps=1e-5)
        # GPT-2 initialisation (as dpo3d's GptRef::init); it does not affect the timing.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * layers))
            elif name == "wpe.weight":
                nn.init.normal_(p, std=0.01)
            elif "ln_" in name:
                nn.init.ones_(p) if name.endswith("weight") else nn.init.zeros_(p)
            elif name.endswith("weight"):
                nn.init.normal_(p, std=0.02)
            else:
                nn.init.zeros_(p)

    def forward(self, idx):  # (B, T) -> (B, T, V)
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()  # tied head


@torch.no_grad()
def generate(model, prompts, new_tokens, gen):
    """Sample new_tokens per row at temperature 1 with a KV cache; returns (tokens (B, new), log-prob sums (B))."""
    b, lp = prompts.shape
    x = model.wte(prompts) + model.wpe(torch.arange(lp, device=prompts.device))
    caches = []
    for block in model.h:
        x, kv = block.forward_cached(x, None)
        caches.append(kv)
    out, logp_sum = [], torch.zeros(b, device=prompts.device)
    for s in range(new_tokens):
        logp = F.log_softmax(model.ln_f(x[:, -1]) @ model.wte.weight.t(), dim=-1)  # (B, V)
        tok = torch.multinomial(logp.exp(), 1, generator=gen)  # (B, 1)
        logp_sum += logp.gather(1, tok).squeeze(1)
        out.append(tok)
        if s + 1 == new_tokens:
            break
        x = model.wte(tok) + model.wpe.weight[lp + s]
        for i, block in enumerate(model.h):
            x, caches[i] = block.forward_cached(x, caches[i])
    return torch.cat(out, dim=1).cpu(), logp_sum.cpu()  # read back, as Generator::generate does


def bench_generation(cfg, device, reps):
    layers, c, nh, b = cfg
    torch.manual_seed(0)
    model = Gpt(GEN_VOCAB, GEN_PROMPT + GEN_NEW, layers, c, nh, False).to(device).eval()
    prompts = torch.randint(0, GEN_VOCAB, (b, GEN_PROMPT), device=device)
    gen = torch.Generator(device=device).manual_seed(2)
    generate(model, prompts, GEN_NEW, gen)  # warm-up
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        generate(model, prompts, GEN_NEW, gen)
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"layers": layers, "width": c, "heads": nh, "batch": b, "vocab": GEN_VOCAB, "prompt_len": GEN_PROMPT,
            "new_tokens": GEN_NEW, "ms": statistics.median(times) * 1e3}


def bench_gpt_step(cfg, vocab, device, warmup, steps, sdpa):
    layers, c, nh, t, b = cfg
    torch.manual_seed(0)
    model = Gpt(vocab, t, layers, c, nh, sdpa).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    ids = torch.randint(0, vocab, (b, t + 1), device=device)
    tokens, targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()

    def step():
        opt.zero_grad(set_to_none=False)  # dpo3d zeroes its gradient buffer every step
        logits = model(tokens)
        loss = F.cross_entropy(logits.view(-1, vocab), targets.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()  # the host reads the loss back every step, as SftTrainer::step does

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    return {
        "layers": layers,
        "width": c,
        "heads": nh,
        "context": t,
        "batch": b,
        "vocab": vocab,
        "ms_per_step": ms,
        "dispatches_per_step": None,
        "tokens_per_s": b * t / (ms / 1e3),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-n", type=int, default=4096)
    ap.add_argument("--quick", action="store_true", help="n <= 512, the smallest GPT config only, 3 steps")
    ap.add_argument("--steps", type=int, default=None, help="timed GPT steps per config (default 5; --quick 3)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--target-ms", type=float, default=500.0)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--sdpa", action="store_true", help="attention through F.scaled_dot_product_attention")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU runs)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--no-matmul", action="store_true", help="skip the matmul part")
    ap.add_argument("--no-gpt", action="store_true", help="skip the GPT training step part")
    ap.add_argument("--no-generation", action="store_true", help="skip the generation part")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    no_tf32()
    max_n = min(args.max_n, 512) if args.quick else args.max_n
    steps = args.steps or (3 if args.quick else 5)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    info = {
        "name": name,
        "backend": f"PyTorch {torch.__version__} eager ({'CUDA ' + str(torch.version.cuda) if device.type == 'cuda' else 'CPU'})",
        "tf32": False,
        "attention": "sdpa" if args.sdpa else "eager matmul + softmax",
    }
    matmul = []
    for n in [n for n in SIZES if n <= max_n and not args.no_matmul]:
        r, _ = bench_matmul(n, device, args.target_ms / (4.0 if args.quick else 1.0))
        matmul.append(r)
    gpt_step = [
        bench_gpt_step(cfg, args.vocab, device, args.warmup, steps, args.sdpa)
        for cfg in ([] if args.no_gpt else GPT_CONFIGS[:1] if args.quick else GPT_CONFIGS)
    ]
    gen_configs = [] if args.no_generation else GEN_CONFIGS[:1] if args.quick else GEN_CONFIGS
    generation = [bench_generation(cfg, device, steps) for cfg in gen_configs]
    text = json.dumps({"device": info, "matmul": matmul, "gpt_step": gpt_step, "generation": generation}, indent=2)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
