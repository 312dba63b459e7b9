//! Training the MLP on the real digits data: accuracy of the default recipe, determinism,
//! artifact round trips, and the data-centric comparison under 30% label noise.

use std::path::PathBuf;

use consensus::commitment::{HeldoutKey, Salt};
use consensus::types::Hash;
use trainer::artifact;
use trainer::data::{self, CsvShape};
use trainer::eval;
use trainer::model::mlp::Mlp;
use trainer::recipe::{EarlyStopping, Filter, Recipe};
use trainer::task::{self, DataKind, NewTask, TaskOptions};
use trainer::train::{self, TrainData, Trained};

fn digits_task(label_noise: f64) -> NewTask {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/digits.csv");
    let bytes = std::fs::read(&path).unwrap();
    let opts =
        TaskOptions { label_noise, ..TaskOptions::new("digits", DataKind::Classification, 42) };
    task::new_task(&bytes, "digits.csv", &opts, Salt(Hash([7; 32])), &HeldoutKey(Hash([8; 32])))
        .unwrap()
}

fn shape(task: &NewTask) -> CsvShape {
    match task.spec.kind {
        consensus::task::TaskKind::Classification { features, classes } => {
            CsvShape { features: features as usize, classes }
        }
        _ => unreachable!(),
    }
}

fn run(task: &NewTask, recipe: &Recipe) -> Trained {
    let table = data::parse_csv(&task.train, "train.csv", Some(shape(task))).unwrap();
    train::train(&task.spec, TrainData::Table(table), recipe, &mut |_| {}).unwrap()
}

/// Held-out accuracy of a trained artifact, evaluated the way a validator does: from the bytes.
fn heldout_accuracy(task: &NewTask, trained: &Trained) -> f64 {
    let bytes = artifact::encode(&trained.tensors).unwrap();
    let model = Mlp::from_tensors(&artifact::decode(&bytes).unwrap()).unwrap();
    let mut held = data::parse_csv(&task.heldout, "heldout.csv", Some(shape(task))).unwrap();
    data::preprocess_table(&mut held, &task.spec.preprocessing).unwrap();
    eval::accuracy(&model, &held).unwrap()
}

#[test]
fn default_recipe_reaches_095_on_clean_digits_and_is_deterministic() {
    let task = digits_task(0.0);
    let recipe = Recipe::default();
    let a = run(&task, &recipe);
    let acc = heldout_accuracy(&task, &a);
    println!("default recipe, clean digits: held-out accuracy {acc:.4}, report {:?}", a.report);
    assert!(acc >= 0.95, "held-out accuracy {acc}");
    let b = run(&task, &recipe);
    let hash = |t: &Trained| artifact::sha256(&artifact::encode(&t.tensors).unwrap());
    println!("artifact sha256 {} ({} threads)", hash(&a), candle_core::utils::get_num_threads());
    assert_eq!(hash(&a), hash(&b), "one seed, one artifact");
    let other = Recipe { seed: 2, ..Recipe::default() };
    assert_ne!(hash(&a), hash(&run(&task, &other)));
}

#[test]
fn saved_and_loaded_artifact_predicts_identically() {
    let task = digits_task(0.0);
    let recipe = Recipe {
        train: trainer::recipe::TrainRecipe { epochs: 3, ..Default::default() },
        ..Default::default()
    };
    let trained = run(&task, &recipe);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let hash = artifact::save(&path, &trained.tensors).unwrap();
    let (bytes, loaded) = artifact::load(&path, task.spec.limits.max_artifact_bytes).unwrap();
    assert_eq!(artifact::sha256(&bytes), hash);
    assert_eq!(artifact::nonzero_params(&loaded).unwrap(), trained.report.params);
    let before = Mlp::from_tensors(&trained.tensors).unwrap();
    let after = Mlp::from_tensors(&loaded).unwrap();
    let mut held = data::parse_csv(&task.heldout, "heldout.csv", Some(shape(&task))).unwrap();
    data::preprocess_table(&mut held, &task.spec.preprocessing).unwrap();
    let x = held.features_tensor().unwrap();
    let l1 = before.logits(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let l2 = after.logits(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(l1, l2);
    // A half-precision copy of the same artifact loads and predicts (nearly) the same.
    let half: artifact::TensorMap = loaded
        .iter()
        .map(|(n, t)| (n.clone(), t.to_dtype(candle_core::DType::F16).unwrap()))
        .collect();
    let half =
        Mlp::from_tensors(&artifact::decode(&artifact::encode(&half).unwrap()).unwrap()).unwrap();
    let agree = half
        .predict(&x)
        .unwrap()
        .iter()
        .zip(after.predict(&x).unwrap())
        .filter(|(a, b)| **a == *b)
        .count();
    assert!(agree as f64 >= 0.98 * held.rows() as f64);
}

/// The data-centric point: with 30% of the public labels flipped, a small model with label-noise
/// filtering and early stopping beats the large plain model (the default recipe, hidden widths
/// ×8, same epochs) on the clean held-out part.
#[test]
fn small_filtered_model_beats_large_plain_model_under_label_noise() {
    let task = digits_task(0.3);
    let default = Recipe::default();
    let large = Recipe {
        model: trainer::recipe::ModelRecipe {
            hidden: default.model.hidden.iter().map(|w| w * 8).collect(),
            ..default.model.clone()
        },
        ..default.clone()
    };
    let large_early = Recipe { early_stopping: Some(EarlyStopping::default()), ..large.clone() };
    let small = Recipe {
        model: trainer::recipe::ModelRecipe { hidden: vec![32], ..default.model.clone() },
        filter: Some(Filter::default()),
        early_stopping: Some(EarlyStopping::default()),
        ..default.clone()
    };
    let size = |r: &Recipe| {
        let mut s = vec![64];
        s.extend(&r.model.hidden);
        s.push(10);
        s.windows(2).map(|p| p[0] * p[1] + p[1]).sum::<usize>()
    };
    assert!(8 * size(&small) <= size(&large), "{} vs {}", size(&small), size(&large));
    let large_run = run(&task, &large);
    let small_run = run(&task, &small);
    let early_run = run(&task, &large_early);
    let (l, s, e) = (
        heldout_accuracy(&task, &large_run),
        heldout_accuracy(&task, &small_run),
        heldout_accuracy(&task, &early_run),
    );
    println!(
        "30% label noise, held-out accuracy: large plain {l:.4} ({} params), large + early stopping {e:.4}, small filtered + early stopping {s:.4} ({} params, {} rows dropped)",
        large_run.report.params, small_run.report.params, small_run.report.dropped
    );
    assert!(s > l, "small filtered {s} must beat large plain {l}");
}

/// The other recipe knobs: data fraction, augmentation, dropout, pruning to a budget, and
/// fine-tuning from an artifact.
#[test]
fn pruning_augmentation_and_fine_tuning_work() {
    use trainer::recipe::{Augment, Base, DataRecipe, ModelRecipe, Prune, TrainRecipe};
    let task = digits_task(0.0);
    let pruned = Recipe {
        model: ModelRecipe { hidden: vec![64], dropout: 0.1 },
        data: DataRecipe { fraction: 0.5, ..DataRecipe::default() },
        train: TrainRecipe { epochs: 10, ..TrainRecipe::default() },
        augment: Some(Augment::default()),
        prune: Some(Prune { params: 1000, epochs: 5 }),
        ..Recipe::default()
    };
    let run_a = run(&task, &pruned);
    let acc = heldout_accuracy(&task, &run_a);
    println!(
        "pruned to {} params with augmentation: held-out accuracy {acc:.4}",
        run_a.report.params
    );
    assert!(run_a.report.params <= 1000);
    assert_eq!(run_a.report.rows, 647, "half of the 1438 rows, less a 10% validation split");
    assert!(acc > 0.5, "{acc}");

    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.safetensors");
    artifact::save(&base, &run_a.tensors).unwrap();
    let tuned = Recipe {
        model: ModelRecipe { hidden: vec![7], dropout: 0.0 },
        train: TrainRecipe { epochs: 2, ..TrainRecipe::default() },
        base: Some(Base { path: base }),
        ..Recipe::default()
    };
    let run_b = run(&task, &tuned);
    let model = Mlp::from_tensors(&run_b.tensors).unwrap();
    assert_eq!(model.hidden(), vec![64], "the base artifact's sizes win over model.hidden");
    assert!(heldout_accuracy(&task, &run_b) > 0.8);
}
