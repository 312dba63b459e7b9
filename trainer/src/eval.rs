//! Evaluation in a fixed order: accuracy of a classifier, bits per character of a char LM, and
//! the unigram and bigram baselines of a text.
//!
//! Every sum runs sequentially in data order in f64, and every forward pass sees the same fixed
//! batches, so a result does not depend on the thread count.
//!
//! **Bits per character of a char LM.** For indices `s[0..n]` the model predicts every character
//! but the first, each exactly once: windows start at `0, C, 2C, …` (C = context); a window
//! starting at `w` feeds `s[w..min(w+C, n−1)]` and scores the prediction at each of its positions
//! `t` against `s[t+1]`. The result is the mean of `−log2 p(next)` over those `n − 1`
//! predictions, with the probabilities from a log-softmax of the logits computed in f64.

use candle_core::{Device, Tensor};

use crate::data::Table;
use crate::model::ModelError;
use crate::model::charlm::CharLm;
use crate::model::mlp::{Mlp, argmax};

/// Rows (classification) per forward pass.
pub const ROWS_PER_BATCH: usize = 1024;
/// Windows (char LM) per forward pass.
pub const WINDOWS_PER_BATCH: usize = 32;

/// A table in forward passes of at most [`ROWS_PER_BATCH`] rows, in order: each pass's
/// `[rows, features]` input and its labels.
fn batches(table: &Table) -> impl Iterator<Item = Result<(Tensor, &[u32]), ModelError>> {
    (0..table.rows()).step_by(ROWS_PER_BATCH).map(|start| {
        let end = (start + ROWS_PER_BATCH).min(table.rows());
        let values = &table.values[start * table.features..end * table.features];
        let x = Tensor::from_slice(values, (end - start, table.features), &Device::Cpu)?;
        Ok((x, &table.labels[start..end]))
    })
}

/// The fraction of rows of a standardized table whose predicted class equals the label.
pub fn accuracy(model: &Mlp, table: &Table) -> Result<f64, ModelError> {
    Ok(correct(model, table)? as f64 / table.rows().max(1) as f64)
}

/// The number of rows predicted correctly.
pub fn correct(model: &Mlp, table: &Table) -> Result<usize, ModelError> {
    let mut count = 0;
    for batch in batches(table) {
        let (x, labels) = batch?;
        let predicted = model.predict(&x)?;
        count += predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    }
    Ok(count)
}

/// Mean cross-entropy (natural log) of the model on a standardized table.
pub fn cross_entropy(model: &Mlp, table: &Table) -> Result<f64, ModelError> {
    let mut total = 0f64;
    for batch in batches(table) {
        let (x, labels) = batch?;
        let logits = model.logits(&x)?.to_vec2::<f32>()?;
        for (row, &label) in logits.iter().zip(labels) {
            total -= log_softmax_at(row, label as usize);
        }
    }
    Ok(total / table.rows().max(1) as f64)
}

/// Class probabilities of each row (softmax of the logits, computed in f64).
pub fn probabilities(model: &Mlp, table: &Table) -> Result<Vec<Vec<f64>>, ModelError> {
    let mut out = Vec::with_capacity(table.rows());
    for batch in batches(table) {
        for row in model.logits(&batch?.0)?.to_vec2::<f32>()? {
            let max = row[argmax(&row)] as f64;
            let exp: Vec<f64> = row.iter().map(|&z| (z as f64 - max).exp()).collect();
            let sum: f64 = exp.iter().sum();
            out.push(exp.iter().map(|e| e / sum).collect());
        }
    }
    Ok(out)
}

/// `log softmax(row)[index]`, in f64.
fn log_softmax_at(row: &[f32], index: usize) -> f64 {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &z| m.max(z as f64));
    let sum: f64 = row.iter().map(|&z| (z as f64 - max).exp()).sum();
    row[index] as f64 - max - sum.ln()
}

/// Bits per character of a char LM on indices `s` (see the module docs for the windows).
/// Needs at least two characters.
pub fn bits_per_char(model: &CharLm, s: &[u32]) -> Result<f64, ModelError> {
    if s.len() < 2 {
        return Err(ModelError::Invalid {
            reason: "evaluation text needs at least 2 characters".into(),
        });
    }
    let c = model.shape().context;
    let starts: Vec<usize> = (0..s.len() - 1).step_by(c).collect();
    let mut nats = 0f64;
    // Full windows go in batches; the last, shorter window (if any) alone.
    let full: Vec<usize> = starts.iter().copied().filter(|&w| w + c < s.len()).collect();
    for chunk in full.chunks(WINDOWS_PER_BATCH) {
        nats += window_nats(model, s, chunk, c)?;
    }
    if let Some(&last) = starts.last()
        && last + c > s.len() - 1
    {
        nats += window_nats(model, s, &[last], s.len() - 1 - last)?;
    }
    Ok(nats / (s.len() - 1) as f64 / std::f64::consts::LN_2)
}

fn window_nats(model: &CharLm, s: &[u32], starts: &[usize], len: usize) -> Result<f64, ModelError> {
    let mut input = Vec::with_capacity(starts.len() * len);
    for &w in starts {
        input.extend_from_slice(&s[w..w + len]);
    }
    let x = Tensor::from_vec(input, (starts.len(), len), &Device::Cpu)?;
    let logits = model.logits(&x)?.to_vec3::<f32>()?;
    let mut nats = 0f64;
    for (window, &w) in logits.iter().zip(starts) {
        for (t, row) in window.iter().enumerate() {
            nats -= log_softmax_at(row, s[w + t + 1] as usize);
        }
    }
    Ok(nats)
}

/// Bits per character of an add-one-smoothed unigram model counted on `train`, scored on `eval`
/// (indices below `vocab`). This is the char LM's trivial baseline.
pub fn unigram_bits(train: &[u32], eval: &[u32], vocab: usize) -> f64 {
    let mut counts = vec![1f64; vocab];
    for &c in train {
        counts[c as usize] += 1.0;
    }
    let total: f64 = counts.iter().sum();
    let bits: f64 = eval.iter().map(|&c| -(counts[c as usize] / total).log2()).sum();
    bits / eval.len().max(1) as f64
}

/// Bits per character of an add-one-smoothed bigram model counted on `train`, scored on the
/// `eval.len() − 1` transitions of `eval` (indices below `vocab`).
pub fn bigram_bits(train: &[u32], eval: &[u32], vocab: usize) -> f64 {
    let mut counts = vec![1f64; vocab * vocab];
    let mut rows = vec![vocab as f64; vocab];
    for pair in train.windows(2) {
        counts[pair[0] as usize * vocab + pair[1] as usize] += 1.0;
        rows[pair[0] as usize] += 1.0;
    }
    let bits: f64 = eval
        .windows(2)
        .map(|p| -(counts[p[0] as usize * vocab + p[1] as usize] / rows[p[0] as usize]).log2())
        .sum();
    bits / eval.len().saturating_sub(1).max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_on_a_periodic_text() {
        let text: Vec<u32> = (0..3000).map(|i| (i % 3) as u32 + 1).collect();
        let uni = unigram_bits(&text, &text, 4);
        assert!((uni - 3f64.log2()).abs() < 0.01, "{uni}");
        // Each next character is certain given the previous one.
        assert!(bigram_bits(&text, &text, 4) < 0.01);
    }
}
