#!/usr/bin/env python3
"""Train a model for a Crucible classification task with numpy alone, and save it as an artifact.

No Rust and no Crucible code: this reads the task's spec (`task.json`, or a node's
`GET /tasks/{id}/spec`) and its public training file (`train.csv`), applies the documented
preprocessing, trains a small ReLU MLP (or, with `--hidden` empty, a softmax regression) with
Adam, and writes the documented tensors with the `safetensors` package:

    layers.{i}.weight  [out_i, in_i]  float32   (PyTorch nn.Linear layout)
    layers.{i}.bias    [out_i]        float32

Then hand it to your trainer node (started with `--submit-dir DIR`):

    node submit --task ID --model model.safetensors --data-dir D --node http://127.0.0.1:8081

Private data: `--extra mine.csv` (repeatable) trains on your own rows too. They must have the
task's columns (a header line, the same features in the same order, labels 0..classes-1); they
are standardized with the task's statistics like the public rows and never leave your machine.

Needs: python3, numpy, safetensors  (pip install numpy safetensors)
"""

import argparse
import json
import sys

import numpy as np
from safetensors.numpy import save_file


def read_task(path):
    """The spec's classification shape, standardization and limits, as plain values."""
    with open(path) as f:
        spec = json.load(f)
    kind = spec["kind"].get("classification")
    if kind is None:
        raise SystemExit(f"{path}: this example trains classification tasks only")
    pre = spec["preprocessing"]["standardize"]
    return {
        "features": int(kind["features"]),
        "classes": int(kind["classes"]),
        "mean": np.array(pre["mean"], dtype=np.float32),
        "std": np.array(pre["std"], dtype=np.float32),
        "max_params": int(spec["limits"]["max_params"]),
        "max_artifact_bytes": int(spec["limits"]["max_artifact_bytes"]),
    }


def read_table(path, features=None, classes=None):
    """A CSV with a header line, then `f_1,...,f_n,label` rows: float32 features, int labels."""
    with open(path) as f:
        header = f.readline().strip().split(",")
        if all(_is_number(h) for h in header):
            raise SystemExit(f"{path}: the first line is all numbers; add a header line")
        rows = [line.strip().split(",") for line in f if line.strip()]
    if features is not None and len(header) != features + 1:
        raise SystemExit(f"{path}: {len(header) - 1} features, the task has {features}")
    x = np.array([[np.float32(v) for v in r[:-1]] for r in rows], dtype=np.float32)
    y = np.array([int(r[-1]) for r in rows], dtype=np.int64)
    if classes is not None and len(y) and (y.min() < 0 or y.max() >= classes):
        raise SystemExit(f"{path}: labels must be 0..{classes - 1}, found {sorted(set(y.tolist()))}")
    return x, y


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def standardize(x, task):
    """x' = (x - mean) / std, in float32, with the task's statistics (never your own)."""
    return (x - task["mean"]) / task["std"]


def forward(params, x):
    """The logits, float32: ReLU between layers, none after the last (the validators' forward)."""
    h = x
    n = len(params) // 2
    for i in range(n):
        h = h @ params[f"layers.{i}.weight"].T + params[f"layers.{i}.bias"]
        if i + 1 < n:
            h = np.maximum(h, np.float32(0))
    return h


def nonzero_params(params):
    """The parameter count validators charge: non-zero values over every tensor."""
    return int(sum(np.count_nonzero(v) for v in params.values()))


def save_model(params, path):
    """Writes the artifact: float32 tensors under the documented names, nothing else."""
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in params.items()}, path)


def init(widths, rng):
    params = {}
    for i in range(len(widths) - 1):
        bound = 1.0 / np.sqrt(widths[i])
        params[f"layers.{i}.weight"] = rng.uniform(-bound, bound, (widths[i + 1], widths[i])).astype(np.float32)
        params[f"layers.{i}.bias"] = np.zeros(widths[i + 1], dtype=np.float32)
    return params


def gradients(params, x, onehot):
    n = len(params) // 2
    acts = [x]
    for i in range(n):
        z = acts[-1] @ params[f"layers.{i}.weight"].T + params[f"layers.{i}.bias"]
        acts.append(np.maximum(z, 0) if i + 1 < n else z)
    logits = acts[-1]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    grad = (p - onehot) / len(x)
    grads = {}
    for i in reversed(range(n)):
        w = params[f"layers.{i}.weight"]
        grads[f"layers.{i}.weight"] = grad.T @ acts[i]
        grads[f"layers.{i}.bias"] = grad.sum(axis=0)
        if i > 0:
            grad = (grad @ w) * (acts[i] > 0)
    return grads


def accuracy(params, x, y):
    return float((forward(params, x).argmax(axis=1) == y).mean()) if len(y) else 0.0


def train(x, y, task, hidden, epochs, lr, weight_decay, batch, validation, seed):
    """Adam on mini-batches; keeps the weights of the best epoch on a validation split."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_val = int(round(validation * len(y)))
    val, tr = order[:n_val], order[n_val:]
    widths = [task["features"]] + hidden + [task["classes"]]
    params = init(widths, rng)
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(v) for k, v in params.items()}
    onehot = np.eye(task["classes"], dtype=np.float32)[y]
    best, best_acc, step = dict(params), -1.0, 0
    for _ in range(epochs):
        rng.shuffle(tr)
        for start in range(0, len(tr), batch):
            rows = tr[start:start + batch]
            grads = gradients(params, x[rows], onehot[rows])
            step += 1
            for k in params:
                g = grads[k] + weight_decay * params[k]
                m[k] = 0.9 * m[k] + 0.1 * g
                v[k] = 0.999 * v[k] + 0.001 * g * g
                mh = m[k] / (1 - 0.9 ** step)
                vh = v[k] / (1 - 0.999 ** step)
                params[k] = (params[k] - lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
        acc = accuracy(params, x[val], y[val]) if n_val else 0.0
        if not n_val or acc > best_acc:
            best, best_acc = dict(params), acc
    return best, (best_acc if n_val else None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, help="task.json (or saved GET /tasks/{id}/spec)")
    ap.add_argument("--train", required=True, help="the task's public training CSV")
    ap.add_argument("--extra", action="append", default=[], help="a private CSV of your own (repeatable)")
    ap.add_argument("--out", required=True, help="where to write the .safetensors artifact")
    ap.add_argument("--hidden", default="32", help="hidden widths, comma-separated; empty for softmax regression")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--validation", type=float, default=0.15, help="share kept to pick the best epoch")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    task = read_task(args.task)
    x, y = read_table(args.train, task["features"], task["classes"])
    for path in args.extra:
        px, py = read_table(path, task["features"], task["classes"])
        print(f"{path}: {len(py)} private rows")
        x, y = np.concatenate([x, px]), np.concatenate([y, py])
    hidden = [int(w) for w in args.hidden.split(",") if w.strip()]
    params, val_acc = train(standardize(x, task), y, task, hidden, args.epochs, args.lr,
                            args.weight_decay, args.batch, args.validation, args.seed)
    count = nonzero_params(params)
    if count > task["max_params"]:
        raise SystemExit(f"{count} non-zero parameters, the task allows {task['max_params']}")
    save_model(params, args.out)
    shown = "none" if val_acc is None else f"{val_acc:.4f}"
    print(f"wrote {args.out}: widths {[task['features']] + hidden + [task['classes']]}, "
          f"{count} non-zero parameters, {len(y)} training rows, validation accuracy {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
