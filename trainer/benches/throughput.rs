//! Training throughput of the trainer's models, against candle-nn's autograd + AdamW and, when
//! PyTorch is importable, against the identical PyTorch models on the same thread count.
//!
//! `cargo bench -p trainer --bench throughput` prints samples per second for each model and
//! implementation and the candle/PyTorch ratios. PyTorch and ours alternate for
//! `CRUCIBLE_BENCH_ROUNDS` rounds (default 5: PyTorch's models in a child process, then ours),
//! so background load on a shared machine hits both alike; the table gives medians, the median
//! of the per-round ratios and every round's ratio. candle-nn's baseline is measured once, after
//! the rounds. Set `RAYON_NUM_THREADS` to pin the thread count (PyTorch gets the same number);
//! `CRUCIBLE_BENCH_SECONDS` sets the time per measurement and `CRUCIBLE_BENCH_ONLY=<model>` runs
//! one model. The two never run at the same time, so they never compete for cores.

use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor, Var};
use candle_nn::Optimizer;
use trainer::model::charlm::{CharLm, CharLmShape};
use trainer::model::mlp::Mlp;
use trainer::optim::AdamWConfig;
use trainer::rng::{self, TrainRng};
use trainer::train::LmTrainer;
use trainer::train::mlp::MlpTrainer;

/// One MLP configuration, shared with `torch_bench.py` (same names).
struct MlpCase {
    name: &'static str,
    sizes: &'static [usize],
    batch: usize,
}

const MLPS: [MlpCase; 2] = [
    MlpCase { name: "digits-mlp", sizes: &[64, 64, 10], batch: 32 },
    MlpCase { name: "medium-mlp", sizes: &[784, 512, 512, 10], batch: 128 },
];

const LM_NAME: &str = "char-lm";
const LM: CharLmShape = CharLmShape { vocab: 72, context: 64, d_model: 64, layers: 2, heads: 4 };
const LM_BATCH: usize = 32;

fn seconds() -> f64 {
    std::env::var("CRUCIBLE_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0)
}

/// Runs `step` a few times to warm up, then for about `seconds()`; returns steps per second.
fn time(mut step: impl FnMut()) -> f64 {
    for _ in 0..3 {
        step();
    }
    let budget = Duration::from_secs_f64(seconds());
    let started = Instant::now();
    let mut steps = 0u32;
    while started.elapsed() < budget || steps < 5 {
        step();
        steps += 1;
    }
    f64::from(steps) / started.elapsed().as_secs_f64()
}

fn synthetic(rng: &mut TrainRng, case: &MlpCase) -> (Tensor, Vec<u32>) {
    let (features, classes) = (case.sizes[0], case.sizes[case.sizes.len() - 1]);
    let values = rng::uniform_vec(rng, case.batch * features, 1.7);
    let x = Tensor::from_vec(values, (case.batch, features), &Device::Cpu).expect("tensor");
    let labels = (0..case.batch).map(|i| (i % classes) as u32).collect();
    (x, labels)
}

/// Our MLP step: hand-written forward/backward and the fused AdamW.
fn ours_mlp(case: &MlpCase) -> f64 {
    let mut rng = rng::stream(1, "bench");
    let mlp = Mlp::init(case.sizes, &mut rng).expect("init");
    let mut trainer = MlpTrainer::new(&mlp, AdamWConfig::default(), 0.0).expect("trainer");
    let (x, labels) = synthetic(&mut rng, case);
    time(|| {
        trainer.step(&x, &labels, &mut rng).expect("step");
    }) * case.batch as f64
}

/// The straightforward candle version the trainer started from: autograd through
/// `candle_nn::Linear` layers and candle-nn's AdamW.
fn candle_nn_mlp(case: &MlpCase) -> f64 {
    let mut rng = rng::stream(1, "bench");
    let mlp = Mlp::init(case.sizes, &mut rng).expect("init");
    let vars: Vec<Var> = mlp
        .layers()
        .iter()
        .flat_map(|l| [l.weight.clone(), l.bias.clone()])
        .map(|t| Var::from_tensor(&t).expect("var"))
        .collect();
    let mut opt =
        candle_nn::AdamW::new(vars.clone(), candle_nn::ParamsAdamW::default()).expect("adamw");
    let (x, labels) = synthetic(&mut rng, case);
    let y = Tensor::new(labels.as_slice(), &Device::Cpu).expect("labels");
    let layers: Vec<candle_nn::Linear> = vars
        .chunks(2)
        .map(|p| candle_nn::Linear::new(p[0].as_tensor().clone(), Some(p[1].as_tensor().clone())))
        .collect();
    time(|| {
        let mut h = x.clone();
        for (i, layer) in layers.iter().enumerate() {
            h = candle_nn::Module::forward(layer, &h).expect("forward");
            if i + 1 < layers.len() {
                h = h.relu().expect("relu");
            }
        }
        let loss = candle_nn::loss::cross_entropy(&h, &y).expect("loss");
        opt.backward_step(&loss).expect("step");
    }) * case.batch as f64
}

/// Inputs and targets of `LM_BATCH` random windows, window after window.
fn lm_batch(rng: &mut TrainRng) -> (Vec<u32>, Vec<u32>) {
    let n = LM_BATCH * LM.context;
    let mut ids = || -> Vec<u32> {
        (0..n).map(|_| rand::Rng::random_range(&mut *rng, 1..LM.vocab as u32)).collect()
    };
    (ids(), ids())
}

/// Our char LM step: the hand-written forward/backward pass and the fused AdamW.
fn ours_lm() -> f64 {
    let mut rng = rng::stream(1, "bench");
    let init = CharLm::init_tensors(LM, &mut rng).expect("init");
    let mut trainer = LmTrainer::new(LM, &init, AdamWConfig::default()).expect("trainer");
    let (x, y) = lm_batch(&mut rng);
    time(|| {
        trainer.step(&x, &y, LM.context, None).expect("step");
    }) * LM_BATCH as f64
}

/// The char LM with candle-nn's AdamW.
fn candle_nn_lm() -> f64 {
    let mut rng = rng::stream(1, "bench");
    let init = CharLm::init_tensors(LM, &mut rng).expect("init");
    let vars: Vec<Var> = init.values().map(|t| Var::from_tensor(t).expect("var")).collect();
    let map = init.keys().cloned().zip(vars.iter().map(|v| v.as_tensor().clone())).collect();
    let model = CharLm::from_tensors(LM, &map).expect("model");
    let mut opt = candle_nn::AdamW::new(vars, candle_nn::ParamsAdamW::default()).expect("adamw");
    let (x, y) = lm_batch(&mut rng);
    let x = Tensor::from_vec(x, (LM_BATCH, LM.context), &Device::Cpu).expect("x");
    let y = Tensor::new(y.as_slice(), &Device::Cpu).expect("y");
    time(|| {
        let logits = model.logits(&x).expect("forward");
        let logits = logits.reshape((LM_BATCH * LM.context, LM.vocab)).expect("reshape");
        let loss = candle_nn::loss::cross_entropy(&logits, &y).expect("loss");
        opt.backward_step(&loss).expect("step");
    }) * LM_BATCH as f64
}

/// PyTorch's samples/s by case name (`only`: just that case), when `python3` can import torch.
fn torch(threads: usize, only: Option<&str>) -> Option<Vec<(String, f64)>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_bench.py");
    let mut command = Command::new("python3");
    command.args([script, "--threads", &threads.to_string(), "--seconds", &seconds().to_string()]);
    if let Some(name) = only {
        command.args(["--only", name]);
    }
    let output = command.output().ok()?;
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        println!("PyTorch comparison skipped: {}", err.lines().last().unwrap_or(""));
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let parse = |l: &str| {
        let (name, value) = l.split_once(' ')?;
        Some((name.to_owned(), value.trim().parse().ok()?))
    };
    Some(text.lines().filter_map(parse).collect())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

/// Our samples/s for a case by name.
fn ours(name: &str) -> f64 {
    match MLPS.iter().find(|c| c.name == name) {
        Some(case) => ours_mlp(case),
        None => ours_lm(),
    }
}

fn main() {
    let threads = candle_core::utils::get_num_threads();
    let only = std::env::var("CRUCIBLE_BENCH_ONLY").ok();
    let rounds: usize = std::env::var("CRUCIBLE_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&r| r >= 1)
        .unwrap_or(5);
    let names: Vec<&str> = MLPS
        .iter()
        .map(|c| c.name)
        .chain([LM_NAME])
        .filter(|n| only.as_deref().is_none_or(|o| o == *n))
        .collect();
    println!(
        "training throughput in samples/s on {threads} threads, {rounds} rounds of PyTorch then ours"
    );
    // Ours and PyTorch alternate, so load from elsewhere on the machine falls on both alike; the
    // figures are medians over the rounds and each round gives one ratio.
    let mut ours_runs: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut torch_runs: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for round in 0..rounds {
        let torch = torch(threads, only.as_deref());
        for (i, name) in names.iter().enumerate() {
            let t = torch.as_ref().and_then(|r| r.iter().find(|(n, _)| n == name)).map(|(_, v)| *v);
            let o = ours(name);
            println!(
                "round {}: {name:<11} ours {o:>10.0}  pytorch {}",
                round + 1,
                t.map_or("-".to_owned(), |t| format!("{t:.0}  ratio {:.2}", o / t))
            );
            ours_runs[i].push(o);
            torch_runs[i].extend(t);
        }
    }
    println!(
        "{:<11} {:>10} {:>10} {:>10} {:>13} {:>18}  ours/pytorch per round",
        "model", "ours", "candle-nn", "pytorch", "ours/pytorch", "candle-nn/pytorch"
    );
    for (i, name) in names.iter().enumerate() {
        let plain = match MLPS.iter().find(|c| c.name == *name) {
            Some(case) => candle_nn_mlp(case),
            None => candle_nn_lm(),
        };
        let o = median(&ours_runs[i]);
        if torch_runs[i].len() == ours_runs[i].len() {
            let ratios: Vec<f64> =
                ours_runs[i].iter().zip(&torch_runs[i]).map(|(o, t)| o / t).collect();
            let t = median(&torch_runs[i]);
            let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
            println!(
                "{name:<11} {o:>10.0} {plain:>10.0} {t:>10.0} {:>13.2} {:>18.2}  {}",
                median(&ratios),
                plain / t,
                listed.join(" ")
            );
        } else {
            println!("{name:<11} {o:>10.0} {plain:>10.0} {:>10} {:>13} {:>18}", "-", "-", "-");
        }
    }
}
