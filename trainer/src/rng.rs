//! Seeded randomness: every random choice of training (initialization, shuffles, dropout masks,
//! augmentation, splits) comes from a ChaCha8 stream derived from one seed, so a run is
//! reproducible.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The seeded random stream used throughout the trainer.
pub type TrainRng = ChaCha8Rng;

/// A stream for `seed`, separated from other uses of the same seed by `purpose` (so the split
/// and the initialization never share draws).
pub fn stream(seed: u64, purpose: &str) -> TrainRng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let tag = consensus::hash::sha256(purpose.as_bytes());
    key[8..].copy_from_slice(&tag.as_bytes()[..24]);
    ChaCha8Rng::from_seed(key)
}

/// A standard normal draw (Box–Muller).
pub fn normal(rng: &mut TrainRng) -> f32 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// `n` draws from `U(-bound, bound)`.
pub fn uniform_vec(rng: &mut TrainRng, n: usize, bound: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.random::<f32>() * 2.0 - 1.0) * bound).collect()
}

/// A permutation of `0..n`.
pub fn permutation(rng: &mut TrainRng, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    // Fisher–Yates with our own draws, so the order does not depend on a library's algorithm.
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        order.swap(i, j);
    }
    order
}
