//! The `--scenario private-data` demo: trainers who hold clean data of their own next to the
//! task's noisy public file.
//!
//! The data file's rows are dealt, with the seed, into three private slices of different sizes
//! (A: 8 %, B: 12 %, C: 30 % of the rows, labels clean) and the rest, which becomes the task
//! (split into the public part, with the usual label noise, and the clean held-out part). Four
//! trainers run one recipe, seed included, and differ only in their private data (the recipe's
//! `[data] extra`): slice A, slice B, slice C, and A and B pooled. The slices are files in the
//! testnet directory (`private/`) that only their trainer's recipe names; nothing uploads them.
//! The leaderboard's recipe column says where each model's data came from; the most clean rows
//! should win (C, more than A and B together), and pooling A and B should beat either alone.

use std::path::PathBuf;

use anyhow::ensure;
use trainer::recipe::{EarlyStopping, ModelRecipe, Recipe};
use trainer::task::DataKind;

use crate::plan::{NamedRecipe, Plan, Role, Settings, derive_u64};

/// Each private slice: its name and its share of the data file's rows.
pub const SLICES: [(&str, f64); 3] = [("a", 0.08), ("b", 0.12), ("c", 0.30)];

/// Which slices each trainer holds, in trainer order.
pub const HOLDINGS: [&[usize]; 4] = [&[0], &[1], &[2], &[0, 1]];

/// A trainer's private file, written into the testnet directory.
#[derive(Clone, Debug, PartialEq)]
pub struct PrivateFile {
    /// Its path relative to the testnet directory (and to the recipes beside it).
    pub path: PathBuf,
    /// Its bytes: the data file's header and the slice's rows, as they were.
    pub bytes: Vec<u8>,
    /// Its rows.
    pub rows: usize,
}

/// Plans the private-data scenario from `settings` (a classification data file; the trainer
/// count is fixed at four).
pub fn plan(mut settings: Settings) -> anyhow::Result<Plan> {
    ensure!(
        settings.task.kind == DataKind::Classification,
        "the private-data scenario needs a classification data set"
    );
    let text = std::str::from_utf8(&settings.task.bytes)?;
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    let header = lines.next().unwrap_or_default();
    let rows: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
    let order = trainer::rng::permutation(
        &mut trainer::rng::stream(settings.seed, "private-slices"),
        rows.len(),
    );
    let mut taken = 0;
    let mut files = Vec::new();
    for (name, share) in SLICES {
        let count = (share * rows.len() as f64).round() as usize;
        let mut slice: Vec<usize> = order[taken..taken + count].to_vec();
        slice.sort_unstable();
        taken += count;
        files.push(render(
            header,
            &rows,
            &slice,
            PathBuf::from(format!("private/slice-{name}.csv")),
        ));
    }
    let mut public: Vec<usize> = order[taken..].to_vec();
    public.sort_unstable();
    settings.task.bytes = render(header, &rows, &public, PathBuf::new()).bytes;
    settings.trainers = HOLDINGS.len();
    let mut plan = Plan::new(settings)?;
    let seed = derive_u64(plan.settings.seed, "recipe/private-data");
    let trainers = plan.nodes.iter_mut().filter(|n| n.role == Role::Trainer);
    for (node, holding) in trainers.zip(HOLDINGS) {
        let names: Vec<String> = holding.iter().map(|&i| SLICES[i].0.to_uppercase()).collect();
        let rows: usize = holding.iter().map(|&i| files[i].rows).sum();
        let recipe = Recipe {
            seed,
            model: ModelRecipe { hidden: vec![64], dropout: 0.0 },
            early_stopping: Some(EarlyStopping::default()),
            ..Recipe::default()
        };
        let mut recipe = recipe;
        recipe.data.extra = holding.iter().map(|&i| files[i].path.clone()).collect();
        let label = format!("public+{} ({rows} private rows)", names.join("+"));
        node.recipe = Some(NamedRecipe { label, recipe });
    }
    plan.private = files;
    Ok(plan)
}

fn render(header: &str, rows: &[&str], pick: &[usize], path: PathBuf) -> PrivateFile {
    let mut out = String::from(header);
    out.push('\n');
    for &i in pick {
        out.push_str(rows[i]);
        out.push('\n');
    }
    PrivateFile { path, bytes: out.into_bytes(), rows: pick.len() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::TaskSource;

    #[test]
    fn slices_are_clean_rows_of_the_file_left_out_of_the_task() {
        let settings =
            Settings { validators: 4, trainers: 3, seed: 3, rounds: 1, task: TaskSource::digits() };
        let digits = settings.task.bytes.clone();
        let plan = plan(settings).unwrap();
        let text = std::str::from_utf8(&digits).unwrap();
        let all: Vec<&str> = text.lines().skip(1).collect();
        let lines = |b: &[u8]| -> Vec<String> {
            std::str::from_utf8(b).unwrap().lines().skip(1).map(String::from).collect()
        };
        let slices: Vec<Vec<String>> = plan.private.iter().map(|f| lines(&f.bytes)).collect();
        assert_eq!(slices.iter().map(Vec::len).collect::<Vec<_>>(), [144, 216, 539]);
        let task = &plan.tasks[0];
        let (public, held) = (lines(&task.train), lines(&task.heldout));
        for slice in &slices {
            assert!(slice.iter().all(|r| all.contains(&r.as_str())), "clean: rows as they were");
        }
        assert_eq!(public.len() + held.len() + 144 + 216 + 539, all.len(), "dealt, not copied");
        assert!(task.flipped > 0, "the public part is noisy");
        let labels: Vec<&str> =
            plan.nodes.iter().filter_map(|n| n.recipe.as_ref().map(|r| r.label.as_str())).collect();
        assert_eq!(
            labels,
            [
                "public+A (144 private rows)",
                "public+B (216 private rows)",
                "public+C (539 private rows)",
                "public+A+B (360 private rows)"
            ]
        );
    }
}
