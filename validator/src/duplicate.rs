//! Near-duplicate detection: how far apart the weights of two same-architecture artifacts are.
//!
//! The distance of a later artifact `b` from an earlier one `a` is the relative L2 distance
//!
//! ```text
//! d(a, b) = ‖a − b‖₂ / ‖a‖₂
//! ```
//!
//! over all tensors concatenated in name order (each row-major, values as decoded to `f32`, sums
//! in `f64` in that fixed order), reported in ppm: `floor(d × 1e6)`, saturated at `u32::MAX`.
//! Two artifacts are comparable only when they hold the same tensor names with the same shapes; an
//! all-zero `a` is at distance 0 from an all-zero `b` and at `u32::MAX` from anything else.
//!
//! `b` is a duplicate of `a` when `d(a, b)` in ppm is strictly below the ledger's
//! `duplicate_distance_ppm`. A copy with a few weights nudged lies within a few ppm of its
//! original, while independently trained models are tens of percent apart.

use consensus::types::AccountId;

use crate::artifact::Weights;

/// Relative L2 distance of `later` from `earlier` in ppm, or `None` when their tensor names or
/// shapes differ.
pub fn relative_distance_ppm(earlier: &Weights, later: &Weights) -> Option<u32> {
    if earlier.len() != later.len() {
        return None;
    }
    let mut diff_sq = 0f64;
    let mut norm_sq = 0f64;
    for ((name_a, a), (name_b, b)) in earlier.iter().zip(later) {
        if name_a != name_b || a.shape != b.shape {
            return None;
        }
        for (&x, &y) in a.values.iter().zip(&b.values) {
            let (x, y) = (f64::from(x), f64::from(y));
            diff_sq += (x - y) * (x - y);
            norm_sq += x * x;
        }
    }
    if norm_sq == 0.0 {
        return Some(if diff_sq == 0.0 { 0 } else { u32::MAX });
    }
    let ppm = (diff_sq.sqrt() / norm_sq.sqrt() * 1e6).floor();
    // `as` saturates, and NaN cannot occur: both sums are finite for finite weights.
    Some(if ppm >= f64::from(u32::MAX) { u32::MAX } else { ppm as u32 })
}

/// For each submission in commit order, the earliest earlier-committed one whose weights lie
/// strictly within `duplicate_distance_ppm` of it. `None` weights (a rejected or unavailable
/// artifact) are never flagged and never flag another.
pub fn flag_duplicates(
    submissions_in_commit_order: &[(AccountId, Option<&Weights>)],
    duplicate_distance_ppm: u32,
) -> Vec<Option<AccountId>> {
    submissions_in_commit_order
        .iter()
        .enumerate()
        .map(|(i, (_, later))| {
            let later = (*later)?;
            submissions_in_commit_order[..i].iter().find_map(|(earlier_id, earlier)| {
                let d = relative_distance_ppm((*earlier)?, later)?;
                (d < duplicate_distance_ppm).then_some(*earlier_id)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use consensus::task::Dtype;

    use super::*;
    use crate::artifact::TensorValues;

    fn weights(values: &[f32]) -> Weights {
        let t =
            TensorValues { dtype: Dtype::F32, shape: vec![values.len()], values: values.into() };
        [("w".to_string(), t)].into_iter().collect()
    }

    #[test]
    fn distance_is_relative_to_the_earlier_norm() {
        let a = weights(&[3.0, 4.0]);
        assert_eq!(relative_distance_ppm(&a, &a), Some(0));
        // ‖(0, 0.5)‖ / ‖(3, 4)‖ = 0.1
        assert_eq!(relative_distance_ppm(&a, &weights(&[3.0, 4.5])), Some(100_000));
        assert_eq!(relative_distance_ppm(&a, &weights(&[3.0])), None);
        let zero = weights(&[0.0, 0.0]);
        assert_eq!(relative_distance_ppm(&zero, &zero), Some(0));
        assert_eq!(relative_distance_ppm(&zero, &a), Some(u32::MAX));
    }

    #[test]
    fn later_copies_point_at_the_earliest_original() {
        let (x, y, z) = (AccountId([1; 32]), AccountId([2; 32]), AccountId([3; 32]));
        let a = weights(&[3.0, 4.0]);
        let near = weights(&[3.0, 4.001]);
        let far = weights(&[-3.0, 1.0]);
        let subs = [(z, Some(&a)), (x, None), (y, Some(&near)), (x, Some(&far))];
        assert_eq!(flag_duplicates(&subs, 1_000), vec![None, None, Some(z), None]);
        assert_eq!(flag_duplicates(&subs, 200), vec![None, None, Some(z), None]);
        // 4.001 as f32 is 4.00099993, so the distance is 199.98… ppm, floored to 199: within a
        // threshold of 200, not of 199.
        assert_eq!(flag_duplicates(&subs, 199), vec![None; 4]);
    }
}
