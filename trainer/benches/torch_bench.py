"""PyTorch side of `cargo bench -p trainer --bench throughput`.

Trains the same models as the Rust benchmark (same shapes, batch sizes, AdamW with PyTorch's
defaults, synthetic data) on a fixed thread count and prints `name samples_per_second` lines.
The char LM is the trainer's documented architecture (README "Models and artifacts"): learned
positions, pre-norm blocks, LayerNorm eps 1e-5, causal attention, exact GELU, with the same
parameter names, so `save_file(model.state_dict(), ...)` from `safetensors.torch` writes a
valid artifact.
"""

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d, eps=1e-5)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(d, 3 * d)
        self.attn.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d, eps=1e-5)
        self.mlp = nn.Module()
        self.mlp.fc = nn.Linear(d, 4 * d)
        self.mlp.proj = nn.Linear(4 * d, d)

    def forward(self, h):
        b, t, d = h.shape
        q, k, v = self.attn.qkv(self.ln1(h)).split(d, dim=2)

        def split(z):
            return z.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=True)
        h = h + self.attn.proj(y.transpose(1, 2).reshape(b, t, d))
        return h + self.mlp.proj(F.gelu(self.mlp.fc(self.ln2(h))))


class CharLm(nn.Module):
    def __init__(self, vocab, context, d, layers, heads):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, d)
        self.pos_emb = nn.Embedding(context, d)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d, eps=1e-5)
        self.head = nn.Linear(d, vocab)

    def forward(self, x):
        h = self.tok_emb(x) + self.pos_emb.weight[: x.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))


class Mlp(nn.Module):
    """`layers.{i}` are the Linear layers, as the artifact layout names them."""

    def __init__(self, sizes):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])])

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


def measure(step, seconds):
    for _ in range(3):
        step()
    start = time.perf_counter()
    steps = 0
    while time.perf_counter() - start < seconds or steps < 5:
        step()
        steps += 1
    return steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--only", help="run just this case")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)

    for name, sizes, batch in [
        ("digits-mlp", [64, 64, 10], 32),
        ("medium-mlp", [784, 512, 512, 10], 128),
    ]:
        if args.only not in (None, name):
            continue
        model = Mlp(sizes)
        opt = torch.optim.AdamW(model.parameters())
        x = torch.rand(batch, sizes[0]) * 3.4 - 1.7
        y = torch.arange(batch) % sizes[-1]

        def step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        print(f"{name} {measure(step, args.seconds) * batch:.1f}", flush=True)

    if args.only not in (None, "char-lm"):
        return
    vocab, context, batch = 72, 64, 32
    model = CharLm(vocab, context, 64, 2, 4)
    opt = torch.optim.AdamW(model.parameters())
    x = torch.randint(1, vocab, (batch, context))
    y = torch.randint(1, vocab, (batch, context))

    def lm_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1)).backward()
        opt.step()

    print(f"char-lm {measure(lm_step, args.seconds) * batch:.1f}", flush=True)


if __name__ == "__main__":
    main()
