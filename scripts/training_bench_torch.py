#!/usr/bin/env python3
"""PyTorch's training speed on a Llama-architecture shape, for comparison with `minnow train`.

The same model as Minnow trains (pre-norm RMSNorm blocks, rotary attention with grouped-query heads, SwiGLU MLP,
tied embedding), the same batch and context, AdamW, gradient clipping; random token ids (speed does not depend on
the data). Prints one JSON line with tokens_per_second over the timed steps.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Block(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = a.heads, a.kv_heads, a.hidden // a.heads
        self.attn_norm = RMSNorm(a.hidden, 1e-5)
        self.q = nn.Linear(a.hidden, a.heads * self.head_dim, bias=False)
        self.k = nn.Linear(a.hidden, a.kv_heads * self.head_dim, bias=False)
        self.v = nn.Linear(a.hidden, a.kv_heads * self.head_dim, bias=False)
        self.o = nn.Linear(a.heads * self.head_dim, a.hidden, bias=False)
        self.mlp_norm = RMSNorm(a.hidden, 1e-5)
        self.gate = nn.Linear(a.hidden, a.ffn, bias=False)
        self.up = nn.Linear(a.hidden, a.ffn, bias=False)
        self.down = nn.Linear(a.ffn, a.hidden, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        h = self.attn_norm(x)
        q = self.q(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        group = self.heads // self.kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        mask = torch.ones(t, t, dtype=torch.bool).triu(1)
        y = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1) @ v
        x = x + self.o(y.transpose(1, 2).reshape(b, t, -1))
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed = nn.Embedding(a.vocab, a.hidden)
        self.blocks = nn.ModuleList(Block(a) for _ in range(a.layers))
        self.norm = RMSNorm(a.hidden, 1e-5)
        head_dim = a.hidden // a.heads
        inv = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        angles = torch.outer(torch.arange(a.ctx).float(), inv)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, ids):
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x, self.cos, self.sin)
        return F.linear(self.norm(x), self.embed.weight)


def main():
    p = argparse.ArgumentParser()
    for name, default in [("vocab", 2048), ("hidden", 256), ("layers", 4), ("heads", 4), ("kv_heads", 2), ("ffn", 512),
                          ("ctx", 128), ("batch", 16), ("steps", 20), ("warmup", 3), ("threads", 2)]:
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=int, default=default)
    a = p.parse_args()
    torch.manual_seed(1)
    torch.set_num_threads(a.threads)
    model = Llama(a)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    ids = torch.randint(0, a.vocab, (a.batch, a.ctx + 1))
    start = None
    for step in range(a.warmup + a.steps):
        if step == a.warmup:
            start = time.perf_counter()
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, a.vocab), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    seconds = time.perf_counter() - start
    params = sum(t.numel() for t in model.parameters())
    print(json.dumps({"engine": "pytorch", "torch": torch.__version__, "parameters": params, "threads": a.threads,
                      "batch": a.batch, "ctx": a.ctx, "steps": a.steps, "seconds": seconds,
                      "tokens_per_second": a.steps * a.batch * a.ctx / seconds, "loss": float(loss)}))


if __name__ == "__main__":
    main()
