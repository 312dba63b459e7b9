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

/// `floor(a × b / c)`, exactly, with the 256-bit product: no intermediate overflows.
///
/// Panics if `c` is 0 or the quotient does not fit in u128 (callers pass `b ≤ c`, so the
/// quotient is at most `a`).
pub fn mul_div(a: u128, b: u128, c: u128) -> u128 {
    assert!(c > 0, "mul_div by zero");
    let (hi, lo) = mul_wide(a, b);
    assert!(hi < c, "mul_div quotient overflows u128");
    // Long division of the 256-bit (hi, lo) by c, one bit of lo at a time; rem < c throughout.
    let mut rem = hi;
    let mut quotient = 0u128;
    for bit in (0..128).rev() {
        let carry = rem >> 127;
        rem = (rem << 1) | ((lo >> bit) & 1);
        quotient <<= 1;
        if carry == 1 || rem >= c {
            rem = rem.wrapping_sub(c);
            quotient |= 1;
        }
    }
    quotient
}

/// The 256-bit product of `a` and `b` as (high, low) halves.
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    const LOW: u128 = u64::MAX as u128;
    let (a1, a0) = (a >> 64, a & LOW);
    let (b1, b0) = (b >> 64, b & LOW);
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    // Middle column: the high half of p00 plus the low halves of the cross products.
    let mid = (p00 >> 64) + (p01 & LOW) + (p10 & LOW);
    let lo = (p00 & LOW) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (hi, lo)
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

    #[test]
    fn mul_div_is_exact_where_the_product_overflows_u128() {
        assert_eq!(mul_div(6, 7, 4), 10);
        assert_eq!(mul_div(u128::MAX, u128::MAX, u128::MAX), u128::MAX);
        assert_eq!(mul_div(u128::MAX, 3, 4), u128::MAX / 4 * 3 + 2);
        let a = u128::from(u64::MAX);
        let b = u128::from(u64::MAX) << 40;
        assert_eq!(mul_div(a, b, b), a);
        assert_eq!(mul_div(a, b - 1, b), a - 1);
        for (a, b, c) in [(12_345u128, 678_910u128, 1_112u128), (1 << 100, 1 << 20, 1 << 30)] {
            assert_eq!(mul_div(a, b, c), a * b / c);
        }
    }
}
