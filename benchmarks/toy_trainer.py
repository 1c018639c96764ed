"""Training-step cost of the hooked toy model against plain PyTorch, Bigram-Backcopy sizes.

    .venv/bin/python benchmarks/toy_trainer.py [--layers 1] [--steps 40] [--threads 1]

One AdamW step (forward, backward, update) on a batch of 64 x 64 tokens, for:
  hooked         the HookedTransformer the experiments train (hook points at every activation)
  plain          the same architecture in plain PyTorch, same operations (explicit softmax attention)
  plain_sdpa     the same, with PyTorch's fused scaled_dot_product_attention
Modes run round-robin in one process; the table gives steps/s and the ratio to `plain`. Results also
go to benchmarks/results/toy_trainer.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import report  # noqa: E402
from toy_tasks import bigram_backcopy as bb  # noqa: E402
from toy_tasks.trainer import lm_loss  # noqa: E402


class PlainBlock(nn.Module):
    def __init__(self, d: int, sdpa: bool):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.ReLU(), nn.Linear(4 * d, d))
        self.sdpa = sdpa

    def forward(self, x):
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)  # one head of width d
        if self.sdpa:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
            mask = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)
            z = scores.masked_fill(mask, float("-inf")).softmax(-1) @ v
        x = x + self.out(z)
        return x + self.mlp(self.ln2(x))


class Plain(nn.Module):
    def __init__(self, vocab: int, d: int, n_ctx: int, n_layers: int, sdpa: bool):
        super().__init__()
        self.embed, self.pos = nn.Embedding(vocab, d), nn.Embedding(n_ctx, d)
        self.blocks = nn.ModuleList(PlainBlock(d, sdpa) for _ in range(n_layers))
        self.ln, self.unembed = nn.LayerNorm(d), nn.Linear(d, vocab)

    def forward(self, tokens):
        x = self.embed(tokens) + self.pos(torch.arange(tokens.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln(x))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=1, help="transformer layers")
    p.add_argument("--steps", type=int, default=40, help="timed steps per mode, in rounds of 5")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    d_model, seq_len, batch_size = 64, 64, 64  # Bigram-Backcopy's sizes
    task = bb.char_task()
    hooked = bb.build_model(task, args.layers, "softmax", d_model, seq_len).module.train()
    models = {
        "hooked": hooked,
        "plain": Plain(task.d_vocab, d_model, seq_len, args.layers, sdpa=False),
        "plain_sdpa": Plain(task.d_vocab, d_model, seq_len, args.layers, sdpa=True),
    }
    n_params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}
    batch = bb.sample(task, batch_size, seq_len, torch.Generator().manual_seed(0))

    def step(name):
        loss = lm_loss(models[name], batch)
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()

    for name in models:  # warm-up
        for _ in range(3):
            step(name)
    times = {k: [] for k in models}
    for _ in range(args.steps // 5):
        for name in models:
            t0 = time.perf_counter()
            for _ in range(5):
                step(name)
            times[name].append((time.perf_counter() - t0) / 5)
    base = statistics.median(times["plain"])
    rows = {k: {"ms_per_step": statistics.median(v) * 1e3, "steps_per_s": 1 / statistics.median(v),
                "time_vs_plain": statistics.median(v) / base, "params": n_params[k]} for k, v in times.items()}
    report(f"toy_trainer_{args.layers}l", args.threads, {
        "model": f"Bigram-Backcopy model: {args.layers} layer(s), d_model {d_model}, 1 head, MLP 4d, vocab {task.d_vocab}",
        "batch": f"{batch_size} x {seq_len} tokens, AdamW step",
    }, {"ms_per_step": "ms / step:.1f", "steps_per_s": "steps/s:.1f", "time_vs_plain": "time vs plain:.2f", "params": "parameters:,"}, rows)

if __name__ == "__main__":
    main()
