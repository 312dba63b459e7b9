//! Fixtures of the validator's tests (feature `testing`, never enabled by the node): the interop
//! task of `tests/interop` (a wine classification task with a numpy-trained model), a small
//! char-LM task and its text, and MLP tensors written as safetensors. Fixtures panic on misuse:
//! they serve tests.

use std::collections::BTreeMap;
use std::path::PathBuf;

use consensus::task::{Preprocessing, TaskKind, TaskSpec};

use crate::eval::{self, EvalData};

/// The interop fixture's folder (see `tests/interop/train_mlp.py`).
pub fn wine_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/wine")
}

/// Reads a fixture file.
pub fn read(name: &str) -> Vec<u8> {
    std::fs::read(wine_dir().join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

/// The fixture's task spec (13 features, 3 classes).
pub fn wine_spec() -> TaskSpec {
    serde_json::from_slice(&read("task.json")).expect("task.json is a task spec")
}

/// The fixture's held-out part, prepared (and its size checked against the spec).
pub fn wine_heldout(spec: &TaskSpec) -> EvalData {
    eval::prepare_heldout(spec, &read("heldout.csv"), "heldout.csv").expect("held-out data")
}

/// The fixture's public training part, prepared.
pub fn wine_train(spec: &TaskSpec) -> EvalData {
    eval::prepare(spec, &read("train.csv"), "train.csv").expect("training data")
}

/// The numpy-trained artifact.
pub fn wine_model() -> Vec<u8> {
    read("model.safetensors")
}

/// A small char-LM task over the characters `abcdefgh ` (vocab 10).
pub fn char_lm_spec() -> TaskSpec {
    let mut spec = wine_spec();
    spec.kind = TaskKind::CharLm { vocab: 10, context: 16, d_model: 32, layers: 2, heads: 4 };
    spec.preprocessing = Preprocessing::Vocabulary { chars: "abcdefgh ".into() };
    spec.limits.max_params = 1_000_000;
    spec
}

/// A text over the char-LM task's characters, with some structure and some unknown characters.
pub fn char_lm_text(chars: usize) -> String {
    let words = ["abc ", "bead ", "fade ", "cafe ", "hedge ", "badge ", "?"];
    let mut state = 7u64;
    let mut out = String::new();
    while out.chars().count() < chars {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        out.push_str(words[(state >> 33) as usize % words.len()]);
    }
    out.chars().take(chars).collect()
}

/// A safetensors file of F32 tensors (name → shape, row-major values), written by the trainer.
pub fn encode(tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> Vec<u8> {
    let map = tensors
        .iter()
        .map(|(name, (shape, values))| {
            let t = candle_core::Tensor::from_slice(
                values,
                shape.as_slice(),
                &candle_core::Device::Cpu,
            );
            (name.clone(), t.expect("values fit the shape"))
        })
        .collect();
    trainer::artifact::encode(&map).expect("F32 tensors encode")
}

/// The tensors of an MLP `sizes[0] → … → sizes[n]` with small deterministic values.
pub fn mlp_tensors(sizes: &[usize]) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut out = BTreeMap::new();
    let mut k = 0u32;
    let mut next = || {
        k += 1;
        ((k * 37 % 101) as f32 - 50.0) / 100.0
    };
    for (i, pair) in sizes.windows(2).enumerate() {
        let (inp, outp) = (pair[0], pair[1]);
        out.insert(
            format!("layers.{i}.weight"),
            (vec![outp, inp], (0..outp * inp).map(|_| next()).collect()),
        );
        out.insert(format!("layers.{i}.bias"), (vec![outp], (0..outp).map(|_| next()).collect()));
    }
    out
}
