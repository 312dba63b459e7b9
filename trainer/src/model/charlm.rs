//! The character language model: a small causal transformer (GPT-2 style, pre-norm).
//!
//! Hyperparameters come from the task: `vocab` (V), `context` (C), `d_model` (D), `layers` (L),
//! `heads` (H, dividing D; head width `dh = D / H`). Tensors (PyTorch layouts: `nn.Embedding`
//! `[num, dim]`, `nn.Linear` `[out, in]`), for every block `i` in `0..L`:
//!
//! | name | shape |
//! | --- | --- |
//! | `tok_emb.weight` | `[V, D]` |
//! | `pos_emb.weight` | `[C, D]` |
//! | `blocks.{i}.ln1.weight`, `blocks.{i}.ln1.bias` | `[D]` |
//! | `blocks.{i}.attn.qkv.weight` / `.bias` | `[3D, D]` / `[3D]` |
//! | `blocks.{i}.attn.proj.weight` / `.bias` | `[D, D]` / `[D]` |
//! | `blocks.{i}.ln2.weight`, `blocks.{i}.ln2.bias` | `[D]` |
//! | `blocks.{i}.mlp.fc.weight` / `.bias` | `[4D, D]` / `[4D]` |
//! | `blocks.{i}.mlp.proj.weight` / `.bias` | `[D, 4D]` / `[D]` |
//! | `ln_f.weight`, `ln_f.bias` | `[D]` |
//! | `head.weight` / `head.bias` | `[V, D]` / `[V]` |
//!
//! Forward pass for indices `x` of shape `[B, T]`, `1 ≤ T ≤ C` (learned absolute positions,
//! position `t` of every sequence uses row `t` of `pos_emb`):
//!
//! ```text
//! h = tok_emb[x] + pos_emb[0..T]
//! for each block:
//!     a = LN1(h)                          # LayerNorm over D, eps 1e-5, biased variance
//!     q, k, v = split(a·Wqkvᵀ + bqkv)     # q = columns 0..D, k = D..2D, v = 2D..3D
//!     per head j (columns j·dh..(j+1)·dh of q, k, v):
//!         s = q_j·k_jᵀ / √dh, with s[t, u] = −∞ for u > t (causal)
//!         y_j = softmax(s)·v_j
//!     h = h + concat_j(y_j)·Wprojᵀ + bproj
//!     h = h + GELU(LN2(h)·Wfcᵀ + bfc)·Wmprojᵀ + bmproj   # exact GELU, x·Φ(x) (erf)
//! logits = LN_f(h)·Wheadᵀ + bhead         # [B, T, V]; position t predicts character t+1
//! ```
//!
//! That is the forward pass of a PyTorch module built from `nn.Embedding`, `nn.LayerNorm(D)`,
//! `nn.Linear` and `F.gelu` with these names; training adds dropout on the embedding sum and on
//! each residual branch, evaluation none. Training does not run this forward pass: it runs the
//! hand-written pass of `crate::train` (the same math, with its gradients written out), which is
//! tested against candle's autograd through [`CharLm::logits`].

use candle_core::{DType, Device, Tensor};
use consensus::task::TaskKind;

use super::{ModelError, as_f32, check_shape, ops};
use crate::artifact::TensorMap;
use crate::rng::{self, TrainRng};

/// LayerNorm epsilon.
pub const LN_EPS: f64 = 1e-5;

/// The architecture's hyperparameters, as the task spec gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CharLmShape {
    /// Vocabulary size, including index 0 for unknown characters.
    pub vocab: usize,
    /// Longest context, in characters.
    pub context: usize,
    /// Model width.
    pub d_model: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads per block.
    pub heads: usize,
}

impl CharLmShape {
    /// The shape a task asks for, or an error if the task is not a char LM or its numbers are
    /// inconsistent.
    pub fn from_kind(kind: &TaskKind) -> Result<CharLmShape, ModelError> {
        match *kind {
            TaskKind::CharLm { vocab, context, d_model, layers, heads } => {
                let shape = CharLmShape {
                    vocab: vocab as usize,
                    context: context as usize,
                    d_model: d_model as usize,
                    layers: layers as usize,
                    heads: heads as usize,
                };
                shape.check()?;
                Ok(shape)
            }
            TaskKind::Classification { .. } => Err(ModelError::Invalid {
                reason: "the task is a classification task, not a char LM".into(),
            }),
        }
    }

    fn check(&self) -> Result<(), ModelError> {
        use consensus::task::limits;
        let ok = self.vocab >= 2
            && self.vocab <= limits::VOCAB_MAX as usize
            && self.context >= 1
            && self.context <= limits::CONTEXT_MAX as usize
            && self.d_model >= 1
            && self.d_model <= limits::D_MODEL_MAX as usize
            && self.layers >= 1
            && self.layers <= limits::LAYERS_MAX as usize
            && self.heads >= 1
            && self.d_model.is_multiple_of(self.heads);
        if ok {
            Ok(())
        } else {
            Err(ModelError::Invalid { reason: format!("invalid char LM hyperparameters {self:?}") })
        }
    }

    /// Head width `d_model / heads`.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.heads
    }
}

/// Every tensor of the architecture with its shape, in the order of the table in the module
/// docs. A valid artifact holds exactly these.
pub fn expected_tensors(shape: &CharLmShape) -> Vec<(String, Vec<usize>)> {
    let (v, c, d) = (shape.vocab, shape.context, shape.d_model);
    let mut out =
        vec![("tok_emb.weight".to_owned(), vec![v, d]), ("pos_emb.weight".to_owned(), vec![c, d])];
    for i in 0..shape.layers {
        let p = format!("blocks.{i}");
        out.extend([
            (format!("{p}.ln1.weight"), vec![d]),
            (format!("{p}.ln1.bias"), vec![d]),
            (format!("{p}.attn.qkv.weight"), vec![3 * d, d]),
            (format!("{p}.attn.qkv.bias"), vec![3 * d]),
            (format!("{p}.attn.proj.weight"), vec![d, d]),
            (format!("{p}.attn.proj.bias"), vec![d]),
            (format!("{p}.ln2.weight"), vec![d]),
            (format!("{p}.ln2.bias"), vec![d]),
            (format!("{p}.mlp.fc.weight"), vec![4 * d, d]),
            (format!("{p}.mlp.fc.bias"), vec![4 * d]),
            (format!("{p}.mlp.proj.weight"), vec![d, 4 * d]),
            (format!("{p}.mlp.proj.bias"), vec![d]),
        ]);
    }
    out.extend([
        ("ln_f.weight".to_owned(), vec![d]),
        ("ln_f.bias".to_owned(), vec![d]),
        ("head.weight".to_owned(), vec![v, d]),
        ("head.bias".to_owned(), vec![v]),
    ]);
    out
}

/// Total number of parameters of the architecture (zero or not).
pub fn parameter_count(shape: &CharLmShape) -> usize {
    expected_tensors(shape).iter().map(|(_, s)| s.iter().product::<usize>()).sum()
}

struct Norm {
    weight: Tensor,
    bias: Tensor,
}

struct Dense {
    weight: Tensor,
    bias: Tensor,
}

struct Block {
    ln1: Norm,
    qkv: Dense,
    proj: Dense,
    ln2: Norm,
    fc: Dense,
    mlp_proj: Dense,
}

/// The character LM (see the module docs for names and the forward pass).
pub struct CharLm {
    shape: CharLmShape,
    tok_emb: Tensor,
    pos_emb: Tensor,
    blocks: Vec<Block>,
    ln_f: Norm,
    head: Dense,
}

impl CharLm {
    /// Builds the model from exactly the tensors [`expected_tensors`] lists (any allowed dtype,
    /// converted to F32).
    pub fn from_tensors(shape: CharLmShape, tensors: &TensorMap) -> Result<CharLm, ModelError> {
        shape.check()?;
        let expected = expected_tensors(&shape);
        for name in tensors.keys() {
            if !expected.iter().any(|(n, _)| n == name) {
                return Err(ModelError::Unexpected { name: name.clone() });
            }
        }
        let get = |name: &str| -> Result<Tensor, ModelError> {
            let t = tensors.get(name).ok_or(ModelError::Missing { name: name.to_owned() })?;
            let (_, dims) = expected.iter().find(|(n, _)| n == name).ok_or_else(|| {
                ModelError::Invalid { reason: format!("`{name}` is not in the architecture") }
            })?;
            check_shape(name, t, dims)?;
            as_f32(t)
        };
        let norm = |p: &str| -> Result<Norm, ModelError> {
            Ok(Norm { weight: get(&format!("{p}.weight"))?, bias: get(&format!("{p}.bias"))? })
        };
        let dense = |p: &str| -> Result<Dense, ModelError> {
            Ok(Dense { weight: get(&format!("{p}.weight"))?, bias: get(&format!("{p}.bias"))? })
        };
        let mut blocks = Vec::with_capacity(shape.layers);
        for i in 0..shape.layers {
            let p = format!("blocks.{i}");
            blocks.push(Block {
                ln1: norm(&format!("{p}.ln1"))?,
                qkv: dense(&format!("{p}.attn.qkv"))?,
                proj: dense(&format!("{p}.attn.proj"))?,
                ln2: norm(&format!("{p}.ln2"))?,
                fc: dense(&format!("{p}.mlp.fc"))?,
                mlp_proj: dense(&format!("{p}.mlp.proj"))?,
            });
        }
        Ok(CharLm {
            shape,
            tok_emb: get("tok_emb.weight")?,
            pos_emb: get("pos_emb.weight")?,
            blocks,
            ln_f: norm("ln_f")?,
            head: dense("head")?,
        })
    }

    /// Fresh tensors for `shape`: linear weights and embeddings from a uniform distribution with
    /// std 0.02 (residual projections scaled by `1/√(2L)`), biases 0, norm weights 1.
    pub fn init_tensors(shape: CharLmShape, rng: &mut TrainRng) -> Result<TensorMap, ModelError> {
        shape.check()?;
        let bound = 0.02 * 3f32.sqrt();
        let residual = bound / (2.0 * shape.layers as f32).sqrt();
        let mut map = TensorMap::new();
        for (name, dims) in expected_tensors(&shape) {
            let n: usize = dims.iter().product();
            let values = if name.ends_with(".bias") {
                vec![0.0; n]
            } else if name.starts_with("ln_f") || name.contains(".ln") {
                vec![1.0; n]
            } else if name.ends_with("proj.weight") {
                rng::uniform_vec(rng, n, residual)
            } else {
                rng::uniform_vec(rng, n, bound)
            };
            map.insert(name, Tensor::from_vec(values, dims, &Device::Cpu)?);
        }
        Ok(map)
    }

    /// The hyperparameters.
    pub fn shape(&self) -> CharLmShape {
        self.shape
    }

    /// The tensors, named as documented.
    pub fn tensors(&self) -> TensorMap {
        let mut map = TensorMap::new();
        let mut put = |name: String, t: &Tensor| {
            map.insert(name, t.clone());
        };
        put("tok_emb.weight".into(), &self.tok_emb);
        put("pos_emb.weight".into(), &self.pos_emb);
        for (i, b) in self.blocks.iter().enumerate() {
            let p = format!("blocks.{i}");
            for (part, w, bias) in [
                ("ln1", &b.ln1.weight, &b.ln1.bias),
                ("attn.qkv", &b.qkv.weight, &b.qkv.bias),
                ("attn.proj", &b.proj.weight, &b.proj.bias),
                ("ln2", &b.ln2.weight, &b.ln2.bias),
                ("mlp.fc", &b.fc.weight, &b.fc.bias),
                ("mlp.proj", &b.mlp_proj.weight, &b.mlp_proj.bias),
            ] {
                put(format!("{p}.{part}.weight"), w);
                put(format!("{p}.{part}.bias"), bias);
            }
        }
        put("ln_f.weight".into(), &self.ln_f.weight);
        put("ln_f.bias".into(), &self.ln_f.bias);
        put("head.weight".into(), &self.head.weight);
        put("head.bias".into(), &self.head.bias);
        map
    }

    /// Eval-mode forward: next-character logits `[B, T, vocab]` for indices `[B, T]` (U32,
    /// `1 ≤ T ≤ context`, every index below `vocab`).
    /// Built from candle tensor operations (and the fused kernels of [`ops`], which carry their
    /// backward passes), so it is differentiable with candle's autograd.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let (b, t) = match x.dims() {
            [b, t] if *t >= 1 && *t <= self.shape.context && *b >= 1 => (*b, *t),
            dims => {
                return Err(ModelError::Invalid {
                    reason: format!(
                        "input shape {dims:?}; expected [batch, 1..={}]",
                        self.shape.context
                    ),
                });
            }
        };
        if x.dtype() != DType::U32 {
            return Err(ModelError::Invalid {
                reason: format!("input dtype {:?}; expected U32", x.dtype()),
            });
        }
        let max = x.flatten_all()?.max(0)?.to_vec0::<u32>()?;
        if max as usize >= self.shape.vocab {
            return Err(ModelError::Invalid {
                reason: format!("index {max} is outside the vocabulary of {}", self.shape.vocab),
            });
        }
        let (d, h, dh) = (self.shape.d_model, self.shape.heads, self.shape.head_dim());
        let tok = self.tok_emb.index_select(&x.flatten_all()?, 0)?.reshape((b, t, d))?;
        let pos = self.pos_emb.narrow(0, 0, t)?;
        let mut hidden = tok.broadcast_add(&pos)?.reshape((b * t, d))?;
        let scale = 1.0 / (dh as f32).sqrt();
        for block in &self.blocks {
            let a = layer_norm(&hidden, &block.ln1)?;
            let qkv = dense(&a, &block.qkv)?.reshape((b, t, 3 * d))?;
            let heads = |i: usize| -> Result<Tensor, candle_core::Error> {
                qkv.narrow(2, i * d, d)?.reshape((b, t, h, dh))?.transpose(1, 2)?.contiguous()
            };
            let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
            let attn = ops::causal_softmax(&q.matmul(&k.t()?)?, scale)?;
            let y = attn.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b * t, d))?;
            hidden = (hidden + dense(&y, &block.proj)?)?;
            let a = layer_norm(&hidden, &block.ln2)?;
            let m = dense(&dense(&a, &block.fc)?.gelu_erf()?, &block.mlp_proj)?;
            hidden = (hidden + m)?;
        }
        let out = dense(&layer_norm(&hidden, &self.ln_f)?, &self.head)?;
        Ok(out.reshape((b, t, self.shape.vocab))?)
    }
}

fn dense(x: &Tensor, layer: &Dense) -> Result<Tensor, candle_core::Error> {
    x.matmul(&layer.weight.t()?)?.broadcast_add(&layer.bias)
}

/// LayerNorm over the last dimension (biased variance, eps [`LN_EPS`]).
fn layer_norm(x: &Tensor, norm: &Norm) -> Result<Tensor, candle_core::Error> {
    ops::layer_norm(x, &norm.weight, &norm.bias, LN_EPS as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> CharLmShape {
        CharLmShape { vocab: 7, context: 5, d_model: 8, layers: 2, heads: 2 }
    }

    #[test]
    fn names_and_shapes_are_as_documented() {
        let names = expected_tensors(&shape());
        assert_eq!(names.len(), 2 + 12 * 2 + 4);
        assert_eq!(names[0], ("tok_emb.weight".to_owned(), vec![7, 8]));
        assert_eq!(names[1], ("pos_emb.weight".to_owned(), vec![5, 8]));
        assert_eq!(names[4], ("blocks.0.attn.qkv.weight".to_owned(), vec![24, 8]));
        assert_eq!(names[12], ("blocks.0.mlp.proj.weight".to_owned(), vec![8, 32]));
        assert_eq!(names[names.len() - 2], ("head.weight".to_owned(), vec![7, 8]));
        let mut rng = crate::rng::stream(1, "test");
        let map = CharLm::init_tensors(shape(), &mut rng).unwrap();
        let model = CharLm::from_tensors(shape(), &map).unwrap();
        let got: Vec<(String, Vec<usize>)> =
            model.tensors().iter().map(|(n, t)| (n.clone(), t.dims().to_vec())).collect();
        let mut want = names.clone();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(
            parameter_count(&shape()),
            got.iter().map(|(_, s)| s.iter().product::<usize>()).sum::<usize>()
        );
    }

    #[test]
    fn forward_is_causal_and_checks_inputs() {
        let mut rng = crate::rng::stream(2, "test");
        let map = CharLm::init_tensors(shape(), &mut rng).unwrap();
        let model = CharLm::from_tensors(shape(), &map).unwrap();
        let a = Tensor::new(&[[1u32, 2, 3, 4, 5]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[[1u32, 2, 3, 6, 0]], &Device::Cpu).unwrap();
        let la = model.logits(&a).unwrap().to_vec3::<f32>().unwrap();
        let lb = model.logits(&b).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!(la[0][..3], lb[0][..3], "positions before the change must not see it");
        assert_ne!(la[0][3], lb[0][3]);
        let bad = Tensor::new(&[[7u32]], &Device::Cpu).unwrap();
        assert!(model.logits(&bad).is_err());
        let long = Tensor::zeros((1, 6), DType::U32, &Device::Cpu).unwrap();
        assert!(model.logits(&long).is_err());
        let mut wrong = map.clone();
        wrong.remove("head.bias");
        assert!(matches!(CharLm::from_tensors(shape(), &wrong), Err(ModelError::Missing { .. })));
    }
}
