//! Private data: a recipe's `[data] extra` files join the public training rows, checked against
//! the task's schema, and clean private rows beat the same recipe on the noisy public file alone.

use std::path::{Path, PathBuf};

use consensus::commitment::{HeldoutKey, Salt};
use consensus::types::Hash;
use trainer::data::{self, CsvShape};
use trainer::eval;
use trainer::model::mlp::Mlp;
use trainer::recipe::Recipe;
use trainer::task::{self, DataKind, NewTask, TaskOptions};
use trainer::train::{self, Event, TrainData, TrainError};

/// The digits file cut in two: every fourth row is the trainer's private clean slice (with the
/// header), the rest is the data the task is made of (public part with 30 % wrong labels, clean
/// held-out part).
fn digits_with_private_slice(dir: &Path) -> (NewTask, PathBuf) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/digits.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let (mut public, mut private) = (format!("{header}\n"), format!("{header}\n"));
    for (i, line) in lines.enumerate() {
        let out = if i % 4 == 0 { &mut private } else { &mut public };
        out.push_str(line);
        out.push('\n');
    }
    let opts = TaskOptions {
        label_noise: 0.3,
        ..TaskOptions::new("digits", DataKind::Classification, 42)
    };
    let key = HeldoutKey(Hash([8; 32]));
    let task =
        task::new_task(public.as_bytes(), "public.csv", &opts, Salt(Hash([7; 32])), &key).unwrap();
    let mine = dir.join("mine.csv");
    std::fs::write(&mine, private).unwrap();
    (task, mine)
}

fn shape(task: &NewTask) -> CsvShape {
    match task.spec.kind {
        consensus::task::TaskKind::Classification { features, classes } => {
            CsvShape { features: features as usize, classes }
        }
        _ => unreachable!(),
    }
}

fn train(task: &NewTask, recipe: &Recipe) -> Result<(f64, Vec<String>), TrainError> {
    let table = data::parse_csv(&task.train, "train.csv", Some(shape(task))).unwrap();
    let mut notes = Vec::new();
    let mut on_event = |e: Event| {
        if let Event::Note(note) = e {
            notes.push(note);
        }
    };
    let trained = train::train(&task.spec, TrainData::Table(table), recipe, &mut on_event)?;
    let model = Mlp::from_tensors(&trained.tensors).unwrap();
    let mut held = data::parse_csv(&task.heldout, "heldout.csv", Some(shape(task))).unwrap();
    data::preprocess_table(&mut held, &task.spec.preprocessing).unwrap();
    Ok((eval::accuracy(&model, &held).unwrap(), notes))
}

#[test]
fn clean_private_rows_beat_the_same_recipe_on_the_noisy_public_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (task, mine) = digits_with_private_slice(dir.path());
    let recipe_file = dir.path().join("recipe.toml");
    std::fs::write(&recipe_file, "[data]\nextra = [\"mine.csv\"]\n").unwrap();
    let with = Recipe::load(&recipe_file).unwrap();
    assert_eq!(with.data.extra, vec![mine], "a relative path is taken from the recipe's folder");
    let without = Recipe::default();
    let (public_only, _) = train(&task, &without).unwrap();
    let (pooled, notes) = train(&task, &with).unwrap();
    println!("held-out accuracy: public only {public_only:.4}, with private rows {pooled:.4}");
    assert!(
        notes.iter().any(|n| n.starts_with("added 450 private rows")),
        "the private rows were not added: {notes:?}"
    );
    assert!(
        pooled > public_only + 0.02,
        "private clean data did not help: {pooled:.4} vs {public_only:.4}"
    );
}

#[test]
fn private_files_that_do_not_fit_the_task_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let (task, _) = digits_with_private_slice(dir.path());
    let refused = |name: &str, text: &str| -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let mut recipe = Recipe::default();
        recipe.data.extra = vec![path];
        train(&task, &recipe).unwrap_err().to_string()
    };
    let features = shape(&task).features;
    let row = |label: u32, n: usize| -> String {
        let mut cells: Vec<String> = (0..n).map(|i| (i % 16).to_string()).collect();
        cells.push(label.to_string());
        cells.join(",")
    };
    let header = |n: usize| -> String {
        let mut names: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
        names.push("label".into());
        names.join(",")
    };
    let narrow = refused("narrow.csv", &format!("{}\n{}\n", header(3), row(0, 3)));
    assert!(narrow.contains(&format!("the task has {features}")), "{narrow}");
    let labels = refused("labels.csv", &format!("{}\n{}\n", header(features), row(10, features)));
    assert!(labels.contains("labels.csv:2:") && labels.contains("out of range 0..10"), "{labels}");
    let headless = refused("headless.csv", &format!("{}\n", row(1, features)));
    assert!(headless.contains("looks like a data row"), "{headless}");
}
