//! `node train`: train a model for a task with a recipe and write its artifact.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use trainer::recipe::Recipe;
use trainer::train::{self, Event, TrainData};

/// Arguments of `node train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The task's task.json.
    #[arg(long)]
    pub task: PathBuf,
    /// The task's public training file (its sha256 must match the task's).
    #[arg(long)]
    pub data: PathBuf,
    /// A recipe (TOML); the default recipe without one.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Overrides the recipe's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where to write the artifact (safetensors).
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `node train`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let spec = trainer::task::read_spec(&args.task)?;
    let bytes = trainer::data::read_bounded(&args.data)?;
    let found = consensus::hash::sha256(&bytes);
    if found != spec.dataset.train_sha256 {
        bail!(
            "{} has sha256 {found}, but the task's training file has {}",
            args.data.display(),
            spec.dataset.train_sha256
        );
    }
    let data = TrainData::parse(&spec, &bytes, &args.data.display().to_string())?;
    let mut recipe = match &args.recipe {
        Some(path) => Recipe::load(path)?,
        None => Recipe::default(),
    };
    if let Some(seed) = args.seed {
        recipe.seed = seed;
    }
    let mut progress = Progress::new(std::io::stderr().is_terminal());
    let trained = train::train(&spec, data, &recipe, &mut |e| progress.show(e))?;
    progress.finish();
    let hash = trainer::artifact::save(&args.out, &trained.tensors)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let r = &trained.report;
    match r.validation {
        Some(v) => println!("validation {}: {v:.4} (local split)", r.metric),
        None => println!("validation: none (data.validation_fraction = 0)"),
    }
    if r.dropped > 0 {
        println!("rows dropped by the noise filter: {}", r.dropped);
    }
    println!("artifact: {}", args.out.display());
    println!("sha256:   {hash}");
    println!("params:   {} non-zero", r.params);
    Ok(())
}

/// Shows training events: a progress bar on a terminal, log lines otherwise.
struct Progress {
    terminal: bool,
    bar: Option<ProgressBar>,
    phase: String,
    total: u64,
}

impl Progress {
    fn new(terminal: bool) -> Progress {
        Progress { terminal, bar: None, phase: String::new(), total: 0 }
    }

    fn show(&mut self, event: Event) {
        match event {
            Event::Phase { name, total } => {
                self.finish();
                if self.terminal {
                    let bar = ProgressBar::new(total);
                    let style = ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}",
                    )
                    .expect("a fixed, valid template")
                    .progress_chars("=> ");
                    bar.set_style(style);
                    bar.set_prefix(name.clone());
                    self.bar = Some(bar);
                } else {
                    eprintln!("{name}: {total} units");
                }
                self.phase = name;
                self.total = total;
            }
            Event::Progress { done, loss, validation } => {
                let val = validation.map(|v| format!(", validation {v:.4}")).unwrap_or_default();
                match &self.bar {
                    Some(bar) => {
                        bar.set_position(done);
                        bar.set_message(format!("loss {loss:.4}{val}"));
                    }
                    None => {
                        let every = (self.total / 20).max(1);
                        if validation.is_some() || done % every == 0 || done == self.total {
                            eprintln!("{} {done}/{}: loss {loss:.4}{val}", self.phase, self.total);
                        }
                    }
                }
            }
            Event::Note(note) => match &self.bar {
                Some(bar) => bar.println(note),
                None => eprintln!("{note}"),
            },
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::task::{self, KindArg, NewArgs, TaskCommand};

    #[test]
    fn task_new_then_train_writes_a_valid_artifact() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("iris");
        let new = |out: PathBuf| {
            task::run(TaskCommand::New(NewArgs {
                data: concat!(env!("CARGO_MANIFEST_DIR"), "/../data/iris.csv").into(),
                kind: KindArg::Classification,
                out,
                data_dir: dir.path().join("creator"),
                heldout_fraction: 0.2,
                label_noise: 0.0,
                seed: Some(1),
                name: None,
                context: 64,
                d_model: 64,
                layers: 2,
                heads: 4,
            }))
        };
        new(out.clone()).unwrap();
        assert!(new(out.clone()).is_err(), "an existing task is never overwritten");
        // The key stays with the creator, never in the task directory; it opens the sealed file.
        let spec = trainer::task::read_spec(&out.join("task.json")).unwrap();
        let key = crate::keystore::load_heldout_key(
            &dir.path().join("creator"),
            &spec.dataset.key_commitment,
        )
        .unwrap();
        let sealed = std::fs::read(out.join("heldout.sealed")).unwrap();
        assert_eq!(consensus::hash::sha256(&sealed), spec.dataset.heldout_cipher_sha256);
        trainer::sealed::open(&key, &sealed, &spec.dataset.heldout_commitment).unwrap();
        assert!(
            std::fs::read_dir(&out)
                .unwrap()
                .all(|e| { !e.unwrap().file_name().to_string_lossy().ends_with(".key") })
        );
        let recipe = dir.path().join("recipe.toml");
        std::fs::write(&recipe, "[model]\nhidden = [8]\n[train]\nepochs = 5\n").unwrap();
        let model = dir.path().join("model.safetensors");
        let args = |data: &str| TrainArgs {
            task: out.join("task.json"),
            data: out.join(data),
            recipe: Some(recipe.clone()),
            seed: None,
            out: model.clone(),
        };
        run(args("train.csv")).unwrap();
        let (_, tensors) = trainer::artifact::load(&model, 1 << 20).unwrap();
        let mlp = trainer::model::mlp::Mlp::from_tensors(&tensors).unwrap();
        assert_eq!(mlp.sizes(), vec![4, 8, 3]);
        let err = run(args("heldout.csv")).unwrap_err();
        assert!(err.to_string().contains("sha256"), "{err}");
    }
}
