//! Evaluation throughput of the validator, per architecture: held-out samples per second of
//! `judge` (checks + model build + evaluation) and of the evaluation alone.
//!
//! `cargo bench -p validator --bench eval_throughput` prints one line per model. Models carry
//! random weights (speed does not depend on their values); the held-out data are synthetic.
//! Set `RAYON_NUM_THREADS` to fix the thread count.

use std::time::Instant;

use consensus::task::{Dtype, Efficiency, Limits, Preprocessing, TaskKind, TaskSpec};
use consensus::testing::example_spec;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trainer::data::Table;
use trainer::model::charlm::{CharLm, CharLmShape};
use trainer::model::mlp::Mlp;
use trainer::rng;
use validator::eval::{EvalData, Model};
use validator::score::judge;

const REPEATS: usize = 5;

fn spec(kind: TaskKind, preprocessing: Preprocessing) -> TaskSpec {
    TaskSpec {
        name: "bench".into(),
        kind,
        preprocessing,
        limits: Limits {
            max_params: 100_000_000,
            max_artifact_bytes: 1 << 30,
            dtypes: vec![Dtype::F32],
        },
        efficiency: Efficiency { reference_params: 1_000, penalty_ppm_per_doubling: 0 },
        max_trainers: 1,
        ..example_spec(2)
    }
}

/// Median seconds of `f` over [`REPEATS`] runs.
fn median_seconds(mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[REPEATS / 2]
}

fn report(name: &str, spec: &TaskSpec, bytes: &[u8], data: &EvalData, samples: usize) {
    let judged = median_seconds(|| {
        judge(bytes, spec, None, data).expect("judge");
    });
    let model = Model::build(
        &spec.kind,
        &validator::check::check_artifact(bytes, spec, None).expect("a valid artifact").weights,
    )
    .expect("model");
    let evaluated = median_seconds(|| {
        model.evaluate(data).expect("evaluate");
    });
    println!(
        "{name}: {samples} samples, {} bytes; judge {:.0} samples/s ({:.1} ms); evaluate only \
         {:.0} samples/s ({:.1} ms)",
        bytes.len(),
        samples as f64 / judged,
        judged * 1e3,
        samples as f64 / evaluated,
        evaluated * 1e3,
    );
}

fn mlp(name: &str, sizes: &[usize], rows: usize) {
    let (features, classes) = (sizes[0], sizes[sizes.len() - 1]);
    let mut r = rng::stream(1, "bench");
    let model = Mlp::init(sizes, &mut r).expect("mlp");
    let bytes = trainer::artifact::encode(&model.tensors()).expect("encode");
    let mut data_rng = ChaCha8Rng::seed_from_u64(2);
    let table = Table {
        header: (0..=features).map(|i| format!("c{i}")).collect(),
        features,
        values: (0..rows * features).map(|_| data_rng.random_range(-2.0..2.0)).collect(),
        labels: (0..rows).map(|_| data_rng.random_range(0..classes as u32)).collect(),
    };
    let spec = spec(
        TaskKind::Classification { features: features as u32, classes: classes as u32 },
        Preprocessing::Standardize { mean: vec![0.0; features], std: vec![1.0; features] },
    );
    report(name, &spec, &bytes, &EvalData::Table(table), rows);
}

fn char_lm(name: &str, shape: CharLmShape, chars: usize) {
    let mut r = rng::stream(1, "bench");
    let tensors = CharLm::init_tensors(shape, &mut r).expect("char lm");
    let bytes = trainer::artifact::encode(&tensors).expect("encode");
    let mut data_rng = ChaCha8Rng::seed_from_u64(2);
    let tokens = (0..chars).map(|_| data_rng.random_range(0..shape.vocab as u32)).collect();
    let vocabulary: String = (0..shape.vocab - 1).map(|i| char::from(b' ' + i as u8)).collect();
    let spec = spec(
        TaskKind::CharLm {
            vocab: shape.vocab as u32,
            context: shape.context as u32,
            d_model: shape.d_model as u32,
            layers: shape.layers as u32,
            heads: shape.heads as u32,
        },
        Preprocessing::Vocabulary { chars: vocabulary },
    );
    report(name, &spec, &bytes, &EvalData::Text { tokens, vocab: shape.vocab }, chars - 1);
}

fn main() {
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into());
    println!("validator evaluation throughput (RAYON_NUM_THREADS={threads}, median of {REPEATS})");
    mlp("mlp digits 64-128-10", &[64, 128, 10], 20_000);
    mlp("mlp medium 784-512-512-10", &[784, 512, 512, 10], 5_000);
    let shape = CharLmShape { vocab: 65, context: 64, d_model: 64, layers: 2, heads: 4 };
    char_lm("char-lm v65 c64 d64 l2 h4", shape, 20_001);
}
