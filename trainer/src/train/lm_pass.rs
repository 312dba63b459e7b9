//! The char LM's training pass written out by hand: forward with dropout, mean cross-entropy,
//! and the gradient of every parameter, without candle's autograd graph.
//!
//! The math is the model's ([`crate::model::charlm`]); the matrix products go through candle's
//! matmul (the `gemm` kernels, reading transposed operands in place), everything between them
//! is one fused pass of [`super::kernels`] per step of the model:
//!
//! ```text
//! embedding     h = (tok[x] + pos[t]) ⊙ d₀                       backward: scatter-add rows
//! per block     a = LN1(h)                                       (xhat, 1/σ kept)
//!               q,k,v = split(a·Wqkvᵀ + b), q scaled by 1/√dh     one pass: bias, scale, heads
//!               P = causal_softmax(q·kᵀ) per head                 one pass per row
//!               h += (merge(P·v)·Wprojᵀ + b) ⊙ d                  one pass: bias, dropout, residual
//!               h += (GELU(LN2(h)·Wfcᵀ + b)·Wmprojᵀ + b) ⊙ d      GELU and its slope in one pass
//! head          loss = CE(LN_f(h)·Wheadᵀ + b, y)                  bias, softmax, loss, gradient
//! ```
//!
//! The backward pass runs the same steps in reverse: `∂W = ∂zᵀ·input`, `∂input = ∂z·W` through
//! matmul, and each fused pass's own backward (LayerNorm's adds straight into the residual
//! stream's gradient). Attention runs as a batched matmul over the `B·H` heads on head-major
//! copies of q, k and v, so every operand is contiguous.

use std::ops::Range;

use candle_core::{CpuStorage, Device, Storage, StorageRef, Tensor};

use super::Dropout;
use super::kernels::{self, Heads, NormCache};
use crate::model::charlm::{CharLmShape, LN_EPS};

/// Where a tensor of the model sits in the trainer's parameter list.
pub(crate) type Slot = usize;

/// A weight and its bias (or a LayerNorm's weight and bias).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pair {
    /// The weight's slot.
    pub weight: Slot,
    /// The bias's slot.
    pub bias: Slot,
}

/// The slots of one block's tensors.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockSlots {
    pub ln1: Pair,
    pub qkv: Pair,
    pub proj: Pair,
    pub ln2: Pair,
    pub fc: Pair,
    pub mlp_proj: Pair,
}

/// The slots of every tensor of the model.
#[derive(Clone, Debug)]
pub(crate) struct Slots {
    pub tok_emb: Slot,
    pub pos_emb: Slot,
    pub blocks: Vec<BlockSlots>,
    pub ln_f: Pair,
    pub head: Pair,
}

impl Slots {
    /// The slots of the model's tensors in `names` (which must hold every tensor
    /// [`crate::model::charlm::expected_tensors`] lists; checked by the caller).
    pub(crate) fn new(shape: &CharLmShape, names: &[String]) -> Slots {
        let slot = |name: &str| -> Slot {
            names.iter().position(|n| n == name).unwrap_or_else(|| panic!("no tensor `{name}`"))
        };
        let pair = |prefix: &str| Pair {
            weight: slot(&format!("{prefix}.weight")),
            bias: slot(&format!("{prefix}.bias")),
        };
        Slots {
            tok_emb: slot("tok_emb.weight"),
            pos_emb: slot("pos_emb.weight"),
            blocks: (0..shape.layers)
                .map(|i| BlockSlots {
                    ln1: pair(&format!("blocks.{i}.ln1")),
                    qkv: pair(&format!("blocks.{i}.attn.qkv")),
                    proj: pair(&format!("blocks.{i}.attn.proj")),
                    ln2: pair(&format!("blocks.{i}.ln2")),
                    fc: pair(&format!("blocks.{i}.mlp.fc")),
                    mlp_proj: pair(&format!("blocks.{i}.mlp.proj")),
                })
                .collect(),
            ln_f: pair("ln_f"),
            head: pair("head"),
        }
    }
}

/// A batch of windows: `input` and `target` hold `batch · t` indices below the vocabulary size,
/// window after window (checked by the caller).
pub(crate) struct Windows<'a> {
    pub input: &'a [u32],
    pub target: &'a [u32],
    pub t: usize,
}

/// Read access to the values of a contiguous F32 CPU tensor.
struct Values<'a> {
    guard: StorageRef<'a>,
    range: Range<usize>,
}

impl Values<'_> {
    fn get(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.range.clone()],
            _ => unreachable!("checked when the view was made"),
        }
    }
}

fn values(t: &Tensor) -> candle_core::Result<Values<'_>> {
    let (guard, layout) = t.storage_and_layout();
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("the training pass needs contiguous tensors");
    };
    if !matches!(&*guard, Storage::Cpu(CpuStorage::F32(_))) {
        candle_core::bail!("the training pass needs F32 CPU tensors");
    }
    Ok(Values { guard, range: start..end })
}

fn tensor(v: Vec<f32>, dims: &[usize]) -> candle_core::Result<Tensor> {
    Tensor::from_vec(v, dims, &Device::Cpu)
}

/// What the backward pass of one block needs from its forward pass.
struct BlockCache {
    ln1: NormCache,
    a1: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    p: Tensor,
    y: Tensor,
    attn_mask: Option<Vec<f32>>,
    ln2: NormCache,
    a2: Tensor,
    gelu: Tensor,
    gelu_slope: Vec<f32>,
    mlp_mask: Option<Vec<f32>>,
}

/// `h += (z + b) ⊙ mask`, rows of width `b.len()`.
fn add_branch(h: &mut [f32], z: &[f32], b: &[f32], mask: Option<&[f32]>) {
    let d = b.len();
    match mask {
        Some(m) => {
            for ((h, z), m) in h.chunks_exact_mut(d).zip(z.chunks_exact(d)).zip(m.chunks_exact(d)) {
                for i in 0..d {
                    h[i] += (z[i] + b[i]) * m[i];
                }
            }
        }
        None => {
            for (h, z) in h.chunks_exact_mut(d).zip(z.chunks_exact(d)) {
                for i in 0..d {
                    h[i] += z[i] + b[i];
                }
            }
        }
    }
}

/// `h += (x·Wᵀ + b) ⊙ mask` with `lin`'s weight `W` and bias `b`.
fn add_linear_branch(
    h: &mut [f32],
    x: &Tensor,
    lin: Pair,
    params: &[Tensor],
    mask: Option<&[f32]>,
) -> candle_core::Result<()> {
    let z = x.matmul(&params[lin.weight].t()?)?;
    add_branch(h, values(&z)?.get(), values(&params[lin.bias])?.get(), mask);
    Ok(())
}

/// `LayerNorm(h)` with `ln`'s weight and bias, and what its backward pass needs.
fn norm(h: &[f32], ln: Pair, params: &[Tensor]) -> candle_core::Result<(Vec<f32>, NormCache)> {
    let (w, b) = (values(&params[ln.weight])?, values(&params[ln.bias])?);
    Ok(kernels::layer_norm(h, w.get(), b.get(), LN_EPS as f32))
}

/// `g ⊙ mask` (a copy of `g` without a mask).
fn masked(g: &[f32], mask: Option<&[f32]>) -> Vec<f32> {
    match mask {
        Some(m) => g.iter().zip(m).map(|(g, m)| g * m).collect(),
        None => g.to_vec(),
    }
}

/// The mean cross-entropy of the batch (nats) and the gradient of every parameter, in slot
/// order. `params` are the model's tensors in slot order (F32, contiguous).
pub(crate) fn gradients(
    shape: &CharLmShape,
    slots: &Slots,
    params: &[Tensor],
    batch: &Windows<'_>,
    mut dropout: Option<Dropout<'_>>,
) -> candle_core::Result<(f64, Vec<Tensor>)> {
    let (d, v, t) = (shape.d_model, shape.vocab, batch.t);
    let rows = batch.input.len();
    let heads = Heads { batch: rows / t, t, heads: shape.heads, dh: shape.head_dim() };
    let bh = heads.batch * heads.heads;
    let scale = 1.0 / (heads.dh as f32).sqrt();
    let mut mask = |n: usize| match dropout.as_mut() {
        Some(Dropout { p, rng }) if *p > 0.0 => Some(super::dropout_mask(rng, n, *p)),
        _ => None,
    };

    // Forward.
    let embed_mask = mask(rows * d);
    let mut h = vec![0f32; rows * d];
    {
        let (tok, pos) = (values(&params[slots.tok_emb])?, values(&params[slots.pos_emb])?);
        let (tok, pos) = (tok.get(), pos.get());
        for (n, (row, &id)) in h.chunks_exact_mut(d).zip(batch.input).enumerate() {
            let (e, p) = (&tok[id as usize * d..][..d], &pos[(n % t) * d..][..d]);
            for i in 0..d {
                row[i] = e[i] + p[i];
            }
        }
        if let Some(m) = &embed_mask {
            h.iter_mut().zip(m).for_each(|(h, m)| *h *= m);
        }
    }
    let mut caches = Vec::with_capacity(slots.blocks.len());
    for s in &slots.blocks {
        let (a1, ln1) = norm(&h, s.ln1, params)?;
        let a1 = tensor(a1, &[rows, d])?;
        let qkv = a1.matmul(&params[s.qkv.weight].t()?)?;
        let [q, k, vv] =
            heads.split_qkv(values(&qkv)?.get(), values(&params[s.qkv.bias])?.get(), scale);
        let dims = [bh, t, heads.dh];
        let (q, k, vv) = (tensor(q, &dims)?, tensor(k, &dims)?, tensor(vv, &dims)?);
        let scores = q.matmul(&k.t()?)?;
        let p = tensor(kernels::causal_softmax(values(&scores)?.get(), t), &[bh, t, t])?;
        let y = tensor(heads.merge(values(&p.matmul(&vv)?)?.get()), &[rows, d])?;
        let attn_mask = mask(rows * d);
        add_linear_branch(&mut h, &y, s.proj, params, attn_mask.as_deref())?;
        let (a2, ln2) = norm(&h, s.ln2, params)?;
        let a2 = tensor(a2, &[rows, d])?;
        let f = a2.matmul(&params[s.fc.weight].t()?)?;
        let (gelu, gelu_slope) =
            kernels::bias_gelu(values(&f)?.get(), values(&params[s.fc.bias])?.get());
        let gelu = tensor(gelu, &[rows, 4 * d])?;
        let mlp_mask = mask(rows * d);
        add_linear_branch(&mut h, &gelu, s.mlp_proj, params, mlp_mask.as_deref())?;
        caches.push(BlockCache {
            ln1,
            a1,
            q,
            k,
            v: vv,
            p,
            y,
            attn_mask,
            ln2,
            a2,
            gelu,
            gelu_slope,
            mlp_mask,
        });
    }
    let (af, lnf) = norm(&h, slots.ln_f, params)?;
    let af = tensor(af, &[rows, d])?;
    let logits = af.matmul(&params[slots.head.weight].t()?)?;
    let (loss, dlogits) = kernels::bias_cross_entropy(
        values(&logits)?.get(),
        values(&params[slots.head.bias])?.get(),
        batch.target,
    );

    // Backward.
    let mut grads: Vec<Option<Tensor>> = vec![None; params.len()];
    let mut put = |slot: Slot, g: Tensor| {
        assert!(grads[slot].is_none(), "slot {slot} has two gradients");
        grads[slot] = Some(g);
    };
    let mut head_bias = vec![0f32; v];
    kernels::add_column_sums(&dlogits, &mut head_bias);
    put(slots.head.bias, tensor(head_bias, &[v])?);
    let dlogits = tensor(dlogits, &[rows, v])?;
    put(slots.head.weight, dlogits.t()?.matmul(&af)?);
    let mut dh = vec![0f32; rows * d];
    norm_backward(
        &dlogits.matmul(&params[slots.head.weight])?,
        &lnf,
        params,
        slots.ln_f,
        &mut dh,
        &mut put,
    )?;
    for (s, c) in slots.blocks.iter().zip(caches).rev() {
        // MLP branch.
        let dm = masked(&dh, c.mlp_mask.as_deref());
        let dg = linear_backward(dm, &c.gelu, s.mlp_proj, params, &mut put)?;
        let dz: Vec<f32> =
            values(&dg)?.get().iter().zip(&c.gelu_slope).map(|(g, s)| g * s).collect();
        let da2 = linear_backward(dz, &c.a2, s.fc, params, &mut put)?;
        norm_backward(&da2, &c.ln2, params, s.ln2, &mut dh, &mut put)?;

        // Attention branch.
        let dout = masked(&dh, c.attn_mask.as_deref());
        let dy = linear_backward(dout, &c.y, s.proj, params, &mut put)?;
        let dy = tensor(heads.split(values(&dy)?.get()), &[bh, t, heads.dh])?;
        let dv = c.p.t()?.matmul(&dy)?;
        let mut ds = dy.matmul(&c.v.t()?)?.flatten_all()?.to_vec1::<f32>()?;
        kernels::causal_softmax_backward(values(&c.p)?.get(), &mut ds, t);
        let ds = tensor(ds, &[bh, t, t])?;
        let dq = ds.matmul(&c.k)?;
        let dk = ds.t()?.matmul(&c.q)?;
        let mut db = vec![0f32; 3 * d];
        let dqkv = heads.merge_qkv(
            [values(&dq)?.get(), values(&dk)?.get(), values(&dv)?.get()],
            scale,
            &mut db,
        );
        put(s.qkv.bias, tensor(db, &[3 * d])?);
        let dqkv = tensor(dqkv, &[rows, 3 * d])?;
        put(s.qkv.weight, dqkv.t()?.matmul(&c.a1)?);
        norm_backward(
            &dqkv.matmul(&params[s.qkv.weight])?,
            &c.ln1,
            params,
            s.ln1,
            &mut dh,
            &mut put,
        )?;
    }
    if let Some(m) = &embed_mask {
        dh.iter_mut().zip(m).for_each(|(g, m)| *g *= m);
    }
    let (mut dtok, mut dpos) = (vec![0f32; v * d], vec![0f32; shape.context * d]);
    for (n, (row, &id)) in dh.chunks_exact(d).zip(batch.input).enumerate() {
        let (e, p) = (&mut dtok[id as usize * d..][..d], &mut dpos[(n % t) * d..][..d]);
        for i in 0..d {
            e[i] += row[i];
            p[i] += row[i];
        }
    }
    put(slots.tok_emb, tensor(dtok, &[v, d])?);
    put(slots.pos_emb, tensor(dpos, &[shape.context, d])?);
    let grads = grads
        .into_iter()
        .enumerate()
        .map(|(i, g)| g.unwrap_or_else(|| panic!("slot {i} has no gradient")))
        .collect();
    Ok((loss, grads))
}

/// The backward pass of the linear layer `lin` (`z = x·Wᵀ + b`) for the output gradient `dz`
/// (`[rows, width]`, row-major): hands out `∂W = dzᵀ·x` and `∂b` (column sums of `dz`) and
/// returns `∂x = dz·W`.
fn linear_backward(
    dz: Vec<f32>,
    x: &Tensor,
    lin: Pair,
    params: &[Tensor],
    put: &mut impl FnMut(Slot, Tensor),
) -> candle_core::Result<Tensor> {
    let width = params[lin.bias].elem_count();
    let mut db = vec![0f32; width];
    kernels::add_column_sums(&dz, &mut db);
    put(lin.bias, tensor(db, &[width])?);
    let rows = dz.len() / width;
    let dz = tensor(dz, &[rows, width])?;
    put(lin.weight, dz.t()?.matmul(x)?);
    dz.matmul(&params[lin.weight])
}

/// The LayerNorm backward pass for output gradient `dy` (a matmul result), adding into the
/// residual gradient `dh` and handing out the weight and bias gradients.
fn norm_backward(
    dy: &Tensor,
    cache: &NormCache,
    params: &[Tensor],
    pair: Pair,
    dh: &mut [f32],
    put: &mut impl FnMut(Slot, Tensor),
) -> candle_core::Result<()> {
    let w = values(&params[pair.weight])?;
    let d = w.get().len();
    let (mut dw, mut db) = (vec![0f32; d], vec![0f32; d]);
    kernels::layer_norm_backward(values(dy)?.get(), cache, w.get(), dh, &mut dw, &mut db);
    put(pair.weight, tensor(dw, &[d])?);
    put(pair.bias, tensor(db, &[d])?);
    Ok(())
}
