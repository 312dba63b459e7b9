#!/usr/bin/env python3
"""Interop fixture for the validator: an MLP trained with numpy, saved with `safetensors`.

Writes, under OUT (default: the `wine/` folder beside this script):

  train.csv, heldout.csv   a stratified split of the UCI wine table (seed 7), CSV with header
  heldout.salt             a fixed 32-byte salt, as 64 hex characters
  task.json                the task spec in Crucible's JSON form, with the standardization
                           statistics of the training part and the held-out commitment
  model.safetensors        a 13-16-8-3 ReLU MLP in PyTorch `nn.Linear` layout
                           (`layers.{i}.weight` [out, in], `layers.{i}.bias` [out]), F32
  predictions.csv          numpy's own predicted class for every held-out row, in file order
  model_other_seed.safetensors   the same recipe from another initialization seed (for the
                           near-duplicate test: independently trained models are far apart)

The model is deliberately imperfect (few full-batch gradient steps; 50-90 % held-out accuracy) so
that a disagreement on any sample would show. Training reads the preprocessing back from
task.json and applies it in float32, exactly as the task says; prediction is numpy float32 matmuls
and argmax, with no Crucible code involved. Every decision is asserted to have a clear margin
between the top two logits, so float rounding cannot flip a prediction.

The reading, preprocessing, forward and backward passes and saving are those of the "Train with
your own tools" guide's script (`examples/python/crucible_train.py`, imported here), so this
fixture, and the Rust interop test that checks our predictions against numpy's row by row, test
the guide's layout.

Regenerate with:  pip install numpy safetensors && python3 validator/tests/interop/train_mlp.py
"""

import argparse
import hashlib
import json
import os

import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "../../../examples/python"))
from crucible_train import forward, gradients, read_table, save_model  # noqa: E402  (the guide's code)

SPLIT_SEED = 7
TRAIN_SEED = 11
OTHER_TRAIN_SEED = 12
HELDOUT_FRACTION = 0.3
HIDDEN = [16, 8]
STEPS = 30
LEARNING_RATE = 0.05
MARGIN_MIN = 1e-3
SALT = bytes(range(32))


def default_data():
    for path in [os.path.join(HERE, "../../../data/wine.csv"), "/work/shared/data/wine.csv"]:
        if os.path.exists(path):
            return path
    raise SystemExit("wine.csv not found; pass --data")


def stratified_split(labels, rng):
    heldout = []
    for c in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == c)
        rng.shuffle(rows)
        heldout.extend(rows[: int(round(len(rows) * HELDOUT_FRACTION))].tolist())
    heldout = sorted(heldout)
    train = sorted(set(range(len(labels))) - set(heldout))
    return train, heldout


def write_csv(path, header, lines, rows):
    with open(path, "w", newline="\n") as f:
        f.write(header + "\n")
        for i in rows:
            f.write(lines[i] + "\n")


def train(x, y, classes, rng):
    widths = [x.shape[1]] + HIDDEN + [classes]
    params = {}
    for i in range(len(widths) - 1):
        bound = 1.0 / np.sqrt(widths[i])
        params[f"layers.{i}.weight"] = rng.uniform(-bound, bound, (widths[i + 1], widths[i])).astype(np.float32)
        params[f"layers.{i}.bias"] = rng.uniform(-bound, bound, widths[i + 1]).astype(np.float32)
    onehot = np.eye(classes, dtype=np.float32)[y]
    for _ in range(STEPS):
        for k, g in gradients(params, x, onehot).items():
            params[k] = (params[k] - LEARNING_RATE * g).astype(np.float32)
    return params


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="the wine CSV (default: data/wine.csv)")
    ap.add_argument("--out", default=os.path.join(HERE, "wine"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    with open(args.data or default_data()) as f:
        text = f.read().splitlines()
    header, lines = text[0], [l for l in text[1:] if l.strip()]
    labels = np.array([int(l.split(",")[-1]) for l in lines])
    classes = int(labels.max()) + 1
    train_rows, heldout_rows = stratified_split(labels, np.random.default_rng(SPLIT_SEED))
    train_path = os.path.join(args.out, "train.csv")
    heldout_path = os.path.join(args.out, "heldout.csv")
    write_csv(train_path, header, lines, train_rows)
    write_csv(heldout_path, header, lines, heldout_rows)
    with open(os.path.join(args.out, "heldout.salt"), "w") as f:
        f.write(SALT.hex() + "\n")

    x_train, y_train = read_table(train_path)
    mean = x_train.astype(np.float64).mean(axis=0)
    std = np.sqrt(((x_train.astype(np.float64) - mean) ** 2).mean(axis=0))
    std = np.where(std.astype(np.float32) >= 1e-8, std, 1.0)
    features = x_train.shape[1]
    with open(train_path, "rb") as f:
        train_sha = hashlib.sha256(f.read()).hexdigest()
    with open(heldout_path, "rb") as f:
        commitment = hashlib.sha256(SALT + f.read()).hexdigest()
    spec = {
        "name": "wine-interop",
        "kind": {"classification": {"features": features, "classes": classes}},
        "preprocessing": {
            "standardize": {
                "mean": [float(np.float32(m)) for m in mean],
                "std": [float(np.float32(s)) for s in std],
            }
        },
        "dataset": {
            "name": "wine",
            "train_sha256": train_sha,
            "heldout_commitment": commitment,
            # The fixture is scored offline from the plaintext (`node score --heldout`), so no
            # sealed file exists: the cipher hash is that of no bytes, and the key a fixed,
            # public one (only its commitment is in the spec).
            "heldout_cipher_sha256": hashlib.sha256(b"").hexdigest(),
            "key_commitment": hashlib.sha256(
                hashlib.sha256(b"crucible/wine-interop/heldout-key").digest()
            ).hexdigest(),
            "heldout_examples": len(heldout_rows),
        },
        "limits": {"max_params": 10000, "max_artifact_bytes": 1 << 20, "dtypes": ["F32", "F16", "BF16"]},
        "efficiency": {"reference_params": 1000, "penalty_ppm_per_doubling": 20000},
        "bond": 100,
        "entry_fee": 10,
        "max_trainers": 8,
        "min_improvement_ppm": 0,
        "windows": {"join": 10, "commit": 10, "key": 10, "reveal": 10, "score_commit": 10, "score_reveal": 10},
        "base_model": None,
    }
    task_path = os.path.join(args.out, "task.json")
    with open(task_path, "w") as f:
        json.dump(spec, f, indent=2)
        f.write("\n")

    # From here on, only what task.json says: the preprocessing is read back from it.
    with open(task_path) as f:
        pre = json.load(f)["preprocessing"]["standardize"]
    mean32 = np.array(pre["mean"], dtype=np.float32)
    std32 = np.array(pre["std"], dtype=np.float32)
    params = train((x_train - mean32) / std32, y_train, classes, np.random.default_rng(TRAIN_SEED))
    save_model(params, os.path.join(args.out, "model.safetensors"))
    other = train((x_train - mean32) / std32, y_train, classes, np.random.default_rng(OTHER_TRAIN_SEED))
    save_model(other, os.path.join(args.out, "model_other_seed.safetensors"))

    x_held, y_held = read_table(heldout_path)
    logits = forward(params, (x_held - mean32) / std32)
    top2 = np.sort(logits, axis=1)[:, -2:]
    margin = float((top2[:, 1] - top2[:, 0]).min())
    assert margin >= MARGIN_MIN, f"a prediction is too close to call (margin {margin})"
    predictions = logits.argmax(axis=1)
    accuracy = float((predictions == y_held).mean())
    assert 0.5 <= accuracy <= 0.9, f"held-out accuracy {accuracy} is outside 50-90 %"
    with open(os.path.join(args.out, "predictions.csv"), "w") as f:
        f.write("prediction\n")
        for p in predictions:
            f.write(f"{int(p)}\n")
    params_nonzero = int(sum(np.count_nonzero(v) for v in params.values()))
    print(f"held-out rows {len(y_held)}, accuracy {accuracy:.4f}, min margin {margin:.4g}, "
          f"non-zero params {params_nonzero}")


if __name__ == "__main__":
    main()
