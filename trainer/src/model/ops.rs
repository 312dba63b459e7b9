//! Fused CPU kernels of the char LM, each with its backward pass: LayerNorm and the scaled causal
//! softmax of attention.
//!
//! Built from candle's elementwise operations, each of these is five to ten passes over the
//! data, each allocating a tensor (and as many more in the backward pass). Here each is one
//! pass per row, single-threaded and in a fixed order, so the results are also the same for any
//! thread count.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, InplaceOp2, Layout, Shape, Tensor, bail,
};

/// The contiguous F32 values of an op `what`'s input.
fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else { bail!("{what} needs F32") };
    let Some((a, b)) = l.contiguous_offsets() else { bail!("{what} needs contiguous tensors") };
    Ok(&v[a..b])
}

/// An op on the contiguous F32 values of two CPU tensors that writes the first in place and
/// reads the second; candle runs it wrapped in [`InPlace`].
pub(crate) trait InPlaceF32 {
    /// The op's name, for candle and for errors.
    const NAME: &'static str;

    /// Updates `a` in place from `b`.
    fn apply(&self, a: &mut [f32], b: &[f32]) -> candle_core::Result<()>;
}

/// An [`InPlaceF32`] op as a candle [`InplaceOp2`] (CPU only).
pub(crate) struct InPlace<O>(pub O);

impl<O: InPlaceF32> InplaceOp2 for InPlace<O> {
    fn name(&self) -> &'static str {
        O::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let b = f32_slice(s2, l2, O::NAME)?;
        let CpuStorage::F32(a) = s1 else { bail!("{} needs F32", O::NAME) };
        let Some((a0, a1)) = l1.contiguous_offsets() else {
            bail!("{} needs contiguous tensors", O::NAME)
        };
        self.0.apply(&mut a[a0..a1], b)
    }
}

/// `LayerNorm(x) · w + b` over the last dimension of a `[rows, D]` tensor (biased variance).
pub(crate) fn layer_norm(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f32,
) -> candle_core::Result<Tensor> {
    x.apply_op3(w, b, LayerNorm { eps })
}

/// `softmax(s · scale)` over the last dimension with every entry above the diagonal of the last
/// two dimensions masked out (probability 0); `s` is `[…, T, T]`.
pub(crate) fn causal_softmax(s: &Tensor, scale: f32) -> candle_core::Result<Tensor> {
    s.apply_op1(CausalSoftmax { scale })
}

struct LayerNorm {
    eps: f32,
}

/// Mean and reciprocal std of a row.
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, b) = (
            f32_slice(s1, l1, "layer-norm")?,
            f32_slice(s2, l2, "layer-norm")?,
            f32_slice(s3, l3, "layer-norm")?,
        );
        let d = w.len();
        if d == 0 || b.len() != d || x.len() % d != 0 {
            bail!("layer-norm: {} values for width {d}", x.len());
        }
        let mut out = vec![0f32; x.len()];
        for (row, y) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let (mean, rstd) = row_stats(row, self.eps);
            for i in 0..d {
                y[i] = (row[i] - mean) * rstd * w[i] + b[i];
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = w.elem_count();
        let rows = x.elem_count() / d;
        let packed =
            x.apply_op3_no_bwd(w, &grad.contiguous()?, &LayerNormGrad { eps: self.eps })?;
        let dx = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = packed.narrow(0, rows, 1)?.reshape(d)?;
        let db = packed.narrow(0, rows + 1, 1)?.reshape(d)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The LayerNorm backward pass: `[rows + 2, D]` holding `dx`, then `dw`, then `db`.
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let what = "layer-norm-grad";
        let (x, w, dy) =
            (f32_slice(s1, l1, what)?, f32_slice(s2, l2, what)?, f32_slice(s3, l3, what)?);
        let d = w.len();
        if d == 0 || x.len() % d != 0 || dy.len() != x.len() {
            bail!("{what}: {} values for width {d}", x.len());
        }
        let rows = x.len() / d;
        let mut out = vec![0f32; x.len() + 2 * d];
        let (dx, rest) = out.split_at_mut(x.len());
        let (dw, db) = rest.split_at_mut(d);
        let mut xhat = vec![0f32; d];
        let mut dxhat = vec![0f32; d];
        for r in 0..rows {
            let (row, g) = (&x[r * d..(r + 1) * d], &dy[r * d..(r + 1) * d]);
            let (mean, rstd) = row_stats(row, self.eps);
            let (mut sum_dxhat, mut sum_dxhat_xhat) = (0f32, 0f32);
            for i in 0..d {
                xhat[i] = (row[i] - mean) * rstd;
                dxhat[i] = g[i] * w[i];
                sum_dxhat += dxhat[i];
                sum_dxhat_xhat += dxhat[i] * xhat[i];
                dw[i] += g[i] * xhat[i];
                db[i] += g[i];
            }
            let (m1, m2) = (sum_dxhat / d as f32, sum_dxhat_xhat / d as f32);
            let out_row = &mut dx[r * d..(r + 1) * d];
            for i in 0..d {
                out_row[i] = rstd * (dxhat[i] - m1 - xhat[i] * m2);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, d))))
    }
}

struct CausalSoftmax {
    scale: f32,
}

/// Rows of the last dimension with the position of each row in its `T × T` block.
fn causal_dims(l: &Layout) -> candle_core::Result<usize> {
    let dims = l.dims();
    match dims {
        [.., t, u] if t == u && *t > 0 => Ok(*t),
        _ => bail!("causal softmax needs [..., T, T], got {dims:?}"),
    }
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "causal-softmax")?;
        let t = causal_dims(l)?;
        let mut out = vec![0f32; x.len()];
        for (r, (row, y)) in x.chunks_exact(t).zip(out.chunks_exact_mut(t)).enumerate() {
            let visible = r % t + 1;
            let max = row[..visible].iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) * self.scale;
            let mut sum = 0f32;
            for i in 0..visible {
                y[i] = (row[i] * self.scale - max).exp();
                sum += y[i];
            }
            let inv = 1.0 / sum;
            y[..visible].iter_mut().for_each(|v| *v *= inv);
        }
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            res.apply_op2_no_bwd(&grad.contiguous()?, &CausalSoftmaxGrad { scale: self.scale })?,
        ))
    }
}

/// `scale · p ⊙ (g − Σ g ⊙ p)` per row: the gradient of the scaled softmax.
struct CausalSoftmaxGrad {
    scale: f32,
}

impl CustomOp2 for CausalSoftmaxGrad {
    fn name(&self) -> &'static str {
        "causal-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (p, g) =
            (f32_slice(s1, l1, "causal-softmax-grad")?, f32_slice(s2, l2, "causal-softmax-grad")?);
        let t = causal_dims(l1)?;
        if g.len() != p.len() {
            bail!("causal-softmax-grad: shapes differ");
        }
        let mut out = vec![0f32; p.len()];
        for (r, ((pr, gr), y)) in
            p.chunks_exact(t).zip(g.chunks_exact(t)).zip(out.chunks_exact_mut(t)).enumerate()
        {
            let visible = r % t + 1;
            let dot: f32 = (0..visible).map(|i| pr[i] * gr[i]).sum();
            for i in 0..visible {
                y[i] = self.scale * pr[i] * (gr[i] - dot);
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{D, Device, Var};

    use super::*;

    fn close(a: &Tensor, b: &Tensor) {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a.len(), b.len(), "tensors of different sizes");
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-4, "{a:?}\nvs\n{b:?}");
        }
    }

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::rng::stream(seed, "ops-test");
        let n = shape.iter().product();
        Tensor::from_vec(crate::rng::uniform_vec(&mut rng, n, 2.0), shape, &Device::Cpu).unwrap()
    }

    /// Forward and gradients equal the same function built from candle's basic operations.
    #[test]
    fn layer_norm_matches_composed_ops() {
        let (x, w, b) =
            (Var::from_tensor(&random(&[5, 6], 1)).unwrap(), random(&[6], 2), random(&[6], 3));
        let (w, b) = (Var::from_tensor(&w).unwrap(), Var::from_tensor(&b).unwrap());
        let probe = random(&[5, 6], 4);
        let ours = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
        let mean = x.as_tensor().mean_keepdim(D::Minus1).unwrap();
        let c = x.as_tensor().broadcast_sub(&mean).unwrap();
        let var = c.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let reference = c
            .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(w.as_tensor())
            .unwrap()
            .broadcast_add(b.as_tensor())
            .unwrap();
        close(&ours, &reference);
        let g1 = (ours * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (reference * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &w, &b] {
            close(g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap());
        }
    }

    #[test]
    fn causal_softmax_matches_composed_ops() {
        let s = Var::from_tensor(&random(&[2, 4, 4], 5)).unwrap();
        let probe = random(&[2, 4, 4], 6);
        let ours = causal_softmax(s.as_tensor(), 0.5).unwrap();
        let mask: Vec<f32> =
            (0..16).map(|i| if i % 4 > i / 4 { f32::NEG_INFINITY } else { 0.0 }).collect();
        let mask = Tensor::from_vec(mask, (4, 4), &Device::Cpu).unwrap();
        let z = (s.as_tensor() * 0.5).unwrap().broadcast_add(&mask).unwrap();
        let max = z.max_keepdim(D::Minus1).unwrap();
        let e = z.broadcast_sub(&max).unwrap().exp().unwrap();
        let reference = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
        close(&ours, &reference);
        let g1 = (ours * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (reference * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        close(g1.get(s.as_tensor()).unwrap(), g2.get(s.as_tensor()).unwrap());
    }
}
