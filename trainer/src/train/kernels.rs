//! Single-pass kernels on `f32` slices for the char LM's hand-written training pass
//! ([`super::lm_pass`]): LayerNorm, the causal softmax of attention, exact GELU, the softmax
//! cross-entropy, each with its backward pass, and the head split and merge of attention.
//!
//! Every kernel is one pass over its rows in a fixed order on one thread, so its result is the
//! same on every run and for every thread count. Row reductions use eight partial sums (a fixed
//! tree), which the compiler turns into vector code; `exp` and `erf` are written out as
//! polynomials for the same reason (the library functions are scalar calls). Their errors
//! (about one ulp for `exp`, 1.5·10⁻⁷ absolute for `erf`) are far below what training notices.

/// Runs `f` compiled for the best instruction set the CPU offers (AVX2 and FMA on x86-64 when
/// present, chosen once at run time by `pulp`), so the kernels' plain loops become 8-wide vector
/// code; without it they would be built for the baseline SSE2. No expression is contracted into
/// a fused multiply-add, so the results are the same bits on every instruction set.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    struct Op<F>(F);
    impl<R, F: FnOnce() -> R> pulp::WithSimd for Op<F> {
        type Output = R;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> R {
            (self.0)()
        }
    }
    pulp::Arch::new().dispatch(Op(f))
}

/// `log2(e)`.
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` as a short part (`k · LN2_HI` is exact in f32 for `|k| < 2¹⁵`) plus the rest, for the
/// range reduction of [`exp`].
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// `1.5 · 2²³`: adding and subtracting it rounds an f32 of magnitude below 2²² to an integer.
const ROUND: f32 = 12_582_912.0;

/// `eˣ`, within about one ulp for `x` in `[−87, 88]` (clamped to that range outside it).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let k = (x * LOG2E + ROUND) - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // k is in [−126, 127], so k + 127 is a valid biased exponent.
    p * f32::from_bits(((k as i32 + 127) as u32) << 23)
}

/// Sum of a slice in eight interleaved partial sums, added in a fixed order.
#[inline(always)]
pub(crate) fn sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    let mut total =
        ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &x in rest {
        total += x;
    }
    total
}

/// Largest value of a slice (−∞ for an empty one), in eight interleaved partial maxima.
#[inline(always)]
pub(crate) fn max(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut best = acc.iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    for &x in rest {
        best = if x > best { x } else { best };
    }
    best
}

/// Dot product of two equally long slices, summed like [`sum`].
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot of slices of different lengths");
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut total =
        ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        total += x * y;
    }
    total
}

/// What the LayerNorm backward pass needs: the normalized rows and each row's `1/σ`.
pub(crate) struct NormCache {
    /// `(x − μ)/σ`, `[rows, D]`.
    pub xhat: Vec<f32>,
    /// `1/σ` per row.
    pub rstd: Vec<f32>,
}

/// LayerNorm over rows of width `w.len()` (biased variance, `eps` added to it): returns
/// `xhat · w + b` and the cache for [`layer_norm_backward`].
pub(crate) fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32) -> (Vec<f32>, NormCache) {
    vectorized(
        #[inline(always)]
        || {
            let d = w.len();
            assert!(
                d > 0 && b.len() == d && x.len().is_multiple_of(d),
                "layer norm: {} values, width {d}",
                x.len()
            );
            let rows = x.len() / d;
            // Filled row by row without zeroing first (a memset of every output measured 5% of
            // a step).
            let (mut y, mut xhat, mut rstd) = (
                Vec::with_capacity(x.len()),
                Vec::with_capacity(x.len()),
                Vec::with_capacity(rows),
            );
            let inv_d = 1.0 / d as f32;
            for row in x.chunks_exact(d) {
                let mean = sum(row) * inv_d;
                let at = xhat.len();
                xhat.extend(row.iter().map(|&v| v - mean));
                let xh = &mut xhat[at..];
                let s = 1.0 / (dot(xh, xh) * inv_d + eps).sqrt();
                rstd.push(s);
                xh.iter_mut().for_each(|v| *v *= s);
                y.extend(xh.iter().zip(w).zip(b).map(|((&h, &w), &b)| h * w + b));
            }
            (y, NormCache { xhat, rstd })
        },
    )
}

/// The LayerNorm backward pass for output gradient `dy`: adds the input gradient to `dx` (the
/// residual stream's gradient) and the parameter gradients to `dw` and `db`.
pub(crate) fn layer_norm_backward(
    dy: &[f32],
    cache: &NormCache,
    w: &[f32],
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
) {
    vectorized(
        #[inline(always)]
        || {
            let d = w.len();
            assert!(
                dy.len() == cache.xhat.len() && dx.len() == dy.len(),
                "layer norm backward: sizes"
            );
            let inv_d = 1.0 / d as f32;
            let mut dxhat = vec![0f32; d];
            for (r, (g, xh)) in dy.chunks_exact(d).zip(cache.xhat.chunks_exact(d)).enumerate() {
                for i in 0..d {
                    dxhat[i] = g[i] * w[i];
                    dw[i] += g[i] * xh[i];
                    db[i] += g[i];
                }
                let m1 = sum(&dxhat) * inv_d;
                let m2 = dot(&dxhat, xh) * inv_d;
                let s = cache.rstd[r];
                let out = &mut dx[r * d..(r + 1) * d];
                for i in 0..d {
                    out[i] += s * (dxhat[i] - m1 - xh[i] * m2);
                }
            }
        },
    )
}

/// Row-wise softmax of the scores `s` `[blocks, T, T]` with every entry above the diagonal
/// masked out (probability exactly 0).
pub(crate) fn causal_softmax(s: &[f32], t: usize) -> Vec<f32> {
    vectorized(
        #[inline(always)]
        || {
            assert!(
                t > 0 && s.len().is_multiple_of(t * t),
                "causal softmax: {} values for T = {t}",
                s.len()
            );
            let mut p = Vec::with_capacity(s.len());
            for (r, row) in s.chunks_exact(t).enumerate() {
                let visible = r % t + 1;
                let max = max(&row[..visible]);
                let at = p.len();
                p.extend(row[..visible].iter().map(|&v| exp(v - max)));
                let out = &mut p[at..];
                let inv = 1.0 / sum(out);
                out.iter_mut().for_each(|v| *v *= inv);
                p.extend(std::iter::repeat_n(0.0, t - visible));
            }
            p
        },
    )
}

/// The causal softmax's backward pass: `p ⊙ (dp − Σ p ⊙ dp)` per row, in place on `dp`
/// (masked entries become 0).
pub(crate) fn causal_softmax_backward(p: &[f32], dp: &mut [f32], t: usize) {
    vectorized(
        #[inline(always)]
        || {
            assert_eq!(p.len(), dp.len(), "causal softmax backward: sizes");
            for (r, (pr, g)) in p.chunks_exact(t).zip(dp.chunks_exact_mut(t)).enumerate() {
                let visible = r % t + 1;
                let inner = dot(&pr[..visible], &g[..visible]);
                for (g, &p) in g[..visible].iter_mut().zip(&pr[..visible]) {
                    *g = p * (*g - inner);
                }
                g[visible..].iter_mut().for_each(|g| *g = 0.0);
            }
        },
    )
}

/// `z + b` for rows of width `b.len()`, then exact GELU `z·Φ(z)`: returns the activations and
/// the derivative `Φ(z) + z·φ(z)` at each point (what the backward pass multiplies by).
pub(crate) fn bias_gelu(z: &[f32], b: &[f32]) -> (Vec<f32>, Vec<f32>) {
    vectorized(
        #[inline(always)]
        || {
            let w = b.len();
            assert!(w > 0 && z.len().is_multiple_of(w), "bias gelu: {} values, width {w}", z.len());
            let (mut out, mut slope) = (Vec::with_capacity(z.len()), Vec::with_capacity(z.len()));
            for row in z.chunks_exact(w) {
                let at = out.len();
                out.extend(row.iter().zip(b).map(|(z, b)| z + b));
                slope.extend_from_slice(&out[at..]);
                for (o, s) in out[at..].iter_mut().zip(&mut slope[at..]) {
                    let x = *o;
                    // Abramowitz & Stegun 7.1.26 for erf(|x|/√2); e = exp(−x²/2) also gives φ(x).
                    let a = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
                    let t = 1.0 / (1.0 + 0.327_591_1 * a);
                    let poly = t
                        * (0.254_829_6
                            + t * (-0.284_496_74
                                + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
                    let e = exp(-0.5 * x * x);
                    let erf = 1.0 - poly * e;
                    let cdf = 0.5 + 0.5 * erf.copysign(x);
                    *o = x * cdf;
                    *s = cdf
                        + x * e
                            * (0.5
                                * std::f32::consts::FRAC_2_SQRT_PI
                                * std::f32::consts::FRAC_1_SQRT_2);
                }
            }
            (out, slope)
        },
    )
}

/// Mean softmax cross-entropy of `logits + b` (rows of width `b.len()`) against `targets`, and
/// its gradient with respect to the logits. The loss is summed in f64 in row order.
pub(crate) fn bias_cross_entropy(logits: &[f32], b: &[f32], targets: &[u32]) -> (f64, Vec<f32>) {
    vectorized(
        #[inline(always)]
        || {
            let v = b.len();
            assert!(v > 0 && logits.len() == targets.len() * v, "cross entropy: sizes");
            let scale = 1.0 / targets.len() as f32;
            let mut grad = vec![0f32; logits.len()];
            let mut loss = 0f64;
            for ((row, g), &target) in
                logits.chunks_exact(v).zip(grad.chunks_exact_mut(v)).zip(targets)
            {
                for i in 0..v {
                    g[i] = row[i] + b[i];
                }
                let max = max(g);
                let target_logit = g[target as usize] - max;
                for x in g.iter_mut() {
                    *x = exp(*x - max);
                }
                let total = sum(g);
                loss += f64::from(total.ln() - target_logit);
                let k = scale / total;
                g.iter_mut().for_each(|x| *x *= k);
                g[target as usize] -= scale;
            }
            (loss / targets.len() as f64, grad)
        },
    )
}

/// Sums of the columns of `m` `[rows, width]`, added to `out` (a bias gradient).
pub(crate) fn add_column_sums(m: &[f32], out: &mut [f32]) {
    vectorized(
        #[inline(always)]
        || {
            for row in m.chunks_exact(out.len()) {
                for (o, &x) in out.iter_mut().zip(row) {
                    *o += x;
                }
            }
        },
    )
}

/// The dimensions of an attention layer's activations: `batch` windows of `t` positions,
/// `heads` heads of width `dh`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Heads {
    /// Windows.
    pub batch: usize,
    /// Positions per window.
    pub t: usize,
    /// Heads.
    pub heads: usize,
    /// Head width.
    pub dh: usize,
}

impl Heads {
    fn d(&self) -> usize {
        self.heads * self.dh
    }

    /// Adds the bias to `qkv` `[B·T, 3D]` and splits it into `q`, `k`, `v`, each head-major
    /// `[B, H, T, dh]`; `q` is multiplied by `scale` (the `1/√dh` of the scores).
    pub(crate) fn split_qkv(&self, qkv: &[f32], bias: &[f32], scale: f32) -> [Vec<f32>; 3] {
        vectorized(
            #[inline(always)]
            || {
                let (d, dh, t) = (self.d(), self.dh, self.t);
                assert!(
                    qkv.len() == self.batch * t * 3 * d && bias.len() == 3 * d,
                    "split qkv: sizes"
                );
                let mut out = [
                    vec![0f32; qkv.len() / 3],
                    vec![0f32; qkv.len() / 3],
                    vec![0f32; qkv.len() / 3],
                ];
                for (n, row) in qkv.chunks_exact(3 * d).enumerate() {
                    let (b, pos) = (n / t, n % t);
                    for (part, dst) in out.iter_mut().enumerate() {
                        let factor = if part == 0 { scale } else { 1.0 };
                        for h in 0..self.heads {
                            let src = part * d + h * dh;
                            let at = ((b * self.heads + h) * t + pos) * dh;
                            for i in 0..dh {
                                dst[at + i] = (row[src + i] + bias[src + i]) * factor;
                            }
                        }
                    }
                }
                out
            },
        )
    }

    /// `[B, H, T, dh]` to `[B·T, D]` (heads side by side, as `concat_j(y_j)`).
    pub(crate) fn merge(&self, y: &[f32]) -> Vec<f32> {
        self.permute(y, false)
    }

    /// `[B·T, D]` to `[B, H, T, dh]` (the inverse of [`Heads::merge`]).
    pub(crate) fn split(&self, x: &[f32]) -> Vec<f32> {
        self.permute(x, true)
    }

    /// Copies `from` into the other layout: `[B·T, D]` into `[B, H, T, dh]` when `split`, the
    /// other way otherwise.
    fn permute(&self, from: &[f32], split: bool) -> Vec<f32> {
        vectorized(
            #[inline(always)]
            || {
                let (d, dh, t) = (self.d(), self.dh, self.t);
                let mut out = vec![0f32; from.len()];
                for n in 0..from.len() / d {
                    let (b, pos) = (n / t, n % t);
                    for h in 0..self.heads {
                        let row = n * d + h * dh;
                        let at = ((b * self.heads + h) * t + pos) * dh;
                        let (src, dst) = if split { (row, at) } else { (at, row) };
                        out[dst..dst + dh].copy_from_slice(&from[src..src + dh]);
                    }
                }
                out
            },
        )
    }

    /// The gradients of `q` (scaled), `k`, `v`, head-major, back to `[B·T, 3D]` (the inverse of
    /// [`Heads::split_qkv`], `q`'s part multiplied by `scale`), with the column sums added to
    /// `bias_grad`.
    pub(crate) fn merge_qkv(
        &self,
        parts: [&[f32]; 3],
        scale: f32,
        bias_grad: &mut [f32],
    ) -> Vec<f32> {
        vectorized(
            #[inline(always)]
            || {
                let (d, dh, t) = (self.d(), self.dh, self.t);
                let mut out = vec![0f32; 3 * parts[0].len()];
                for (n, row) in out.chunks_exact_mut(3 * d).enumerate() {
                    let (b, pos) = (n / t, n % t);
                    for (part, src) in parts.iter().enumerate() {
                        let factor = if part == 0 { scale } else { 1.0 };
                        for h in 0..self.heads {
                            let at = ((b * self.heads + h) * t + pos) * dh;
                            let dst = part * d + h * dh;
                            for i in 0..dh {
                                row[dst + i] = src[at + i] * factor;
                            }
                        }
                    }
                    for (g, &x) in bias_grad.iter_mut().zip(row.iter()) {
                        *g += x;
                    }
                }
                out
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_close_to_the_library_function() {
        for i in -8000..=8000 {
            let x = i as f32 / 100.0;
            let (ours, want) = (exp(x), x.exp());
            assert!((ours - want).abs() <= 4.0 * f32::EPSILON * want, "exp({x}): {ours} vs {want}");
        }
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) >= 0.0);
    }

    #[test]
    fn gelu_matches_the_erf_definition() {
        let z: Vec<f32> = (-600..=600).map(|i| i as f32 / 100.0).collect();
        let (out, slope) = bias_gelu(&z, &[0.0]);
        for ((&x, &g), &s) in z.iter().zip(&out).zip(&slope) {
            let x64 = f64::from(x);
            let cdf = 0.5 * (1.0 + erf64(x64 / std::f64::consts::SQRT_2));
            let pdf = (-0.5 * x64 * x64).exp() / (2.0 * std::f64::consts::PI).sqrt();
            assert!((f64::from(g) - x64 * cdf).abs() < 2e-6, "gelu({x})");
            assert!((f64::from(s) - (cdf + x64 * pdf)).abs() < 1e-6, "gelu'({x})");
        }
    }

    /// erf by its Taylor series (enough terms for |x| ≤ 5), as an independent reference.
    fn erf64(x: f64) -> f64 {
        let mut term = x;
        let mut total = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            total += term / (2 * n + 1) as f64;
        }
        total * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn head_split_and_merge_are_inverse() {
        let heads = Heads { batch: 2, t: 3, heads: 2, dh: 2 };
        let x: Vec<f32> = (0..2 * 3 * 4).map(|i| i as f32).collect();
        assert_eq!(heads.merge(&heads.split(&x)), x);
        let qkv: Vec<f32> = (0..2 * 3 * 12).map(|i| i as f32).collect();
        let parts = heads.split_qkv(&qkv, &[0.0; 12], 1.0);
        let mut bias = [0f32; 12];
        let back = heads.merge_qkv([&parts[0], &parts[1], &parts[2]], 1.0, &mut bias);
        assert_eq!(back, qkv);
        assert_eq!(parts[1][..2], [4.0, 5.0], "k of head 0 at position 0 is columns 4..6");
    }
}
