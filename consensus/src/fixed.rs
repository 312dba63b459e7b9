//! Fixed-point arithmetic for the ledger: no floats ever reach the state.

/// Fractional bits of a Q16 number: `1.0` is `1 << 16`.
pub const Q16_ONE: u64 = 1 << 16;

/// `log2(x)` in Q16 fixed point, for `x >= 1` (0 is treated as 1).
///
/// The integer part is the position of the highest set bit; the 16 fractional bits come from
/// repeatedly squaring the mantissa, normalized to `[1, 2)` in Q32, and reading off whether it
/// reached 2. Each step truncates, so the result is a deterministic lower approximation (within
/// 2⁻¹⁶ × a few ulps of the true value). Because `2x` has the same mantissa as `x`,
/// `log2_q16(2x) − log2_q16(x)` is exactly `Q16_ONE`: doubling a model costs exactly one penalty.
pub fn log2_q16(x: u64) -> u64 {
    let x = x.max(1);
    let int = 63 - u64::from(x.leading_zeros());
    // Mantissa in Q32: [2^32, 2^33).
    let mut m: u128 = (u128::from(x) << 32) >> int;
    let mut frac = 0u64;
    for _ in 0..16 {
        m = (m * m) >> 32;
        frac <<= 1;
        if m >= 1u128 << 33 {
            m >>= 1;
            frac |= 1;
        }
    }
    (int << 16) | frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_two_are_exact() {
        for k in 0..63 {
            assert_eq!(log2_q16(1 << k), k << 16);
        }
    }

    #[test]
    fn doubling_adds_exactly_one() {
        for x in [1u64, 3, 5, 7, 1000, 12_345, 999_999, 1 << 40] {
            assert_eq!(log2_q16(2 * x) - log2_q16(x), Q16_ONE, "x = {x}");
        }
    }

    #[test]
    fn close_to_the_real_logarithm() {
        for x in [3u64, 10, 1000, 123_456_789] {
            let approx = log2_q16(x) as f64 / Q16_ONE as f64;
            assert!((approx - (x as f64).log2()).abs() < 1e-4, "x = {x}: {approx}");
        }
    }
}
