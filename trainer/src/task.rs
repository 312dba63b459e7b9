//! Making a task from a data file: the seeded split, the preprocessing, optional label noise, and
//! the files `node task new` writes.
//!
//! - Classification (CSV): a **stratified** split: within each class, in label order, the rows
//!   are shuffled with the split seed and `round(fraction × count)` of them go to the held-out
//!   part. Both parts keep the file's row order and its original text. The spec's standardization
//!   is computed on the training part.
//! - Char LM (text): the held-out part is the **contiguous tail** of `round(fraction × chars)`
//!   characters. The vocabulary is the sorted distinct characters of the training part.
//! - Label noise (`label_noise = F`): `round(F × training rows)` rows, drawn with the seed, get a
//!   uniformly drawn *different* label. The held-out part stays clean.
//!
//! The directory holds `task.json` (the spec, without the seed), `train.csv`/`train.txt`,
//! `heldout.csv`/`heldout.txt`, `heldout.salt` (the 32-byte salt as 64 hex characters and a
//! newline) and `heldout.sealed` (salt and held-out file sealed under the task's key,
//! [`crate::sealed`]); `dataset.heldout_commitment` is `sha256(salt || heldout file bytes)`,
//! `dataset.heldout_cipher_sha256` the sha256 of `heldout.sealed` and `dataset.key_commitment`
//! `sha256(key)`. The key itself is not in the directory: the creator keeps it apart.

use std::path::{Path, PathBuf};

use consensus::commitment::{HeldoutKey, Salt, heldout_commitment};
use consensus::task::{
    Dataset, Dtype, Efficiency, Limits, Preprocessing, TaskKind, TaskSpec, Windows, limits,
};
use consensus::types::{Amount, Hash};
use rand::Rng;

use crate::data::{self, DataError, Vocabulary};
use crate::model::charlm::{self, CharLmShape};
use crate::rng;

/// Largest task.json read, in bytes.
pub const SPEC_BYTES_MAX: u64 = 16 << 20;
/// Default share of the data held out.
pub const HELDOUT_FRACTION_DEFAULT: f64 = 0.2;
/// Default most non-zero parameters of a classification model.
pub const CLASSIFICATION_PARAMS_MAX: u64 = 1_000_000;
/// Default efficiency reference of a classification task, in parameters.
pub const CLASSIFICATION_REFERENCE_PARAMS: u64 = 10_000;
/// Default score lost per doubling above the reference, in ppm.
pub const PENALTY_PPM_PER_DOUBLING: u32 = 20_000;
/// Default bond.
pub const BOND: Amount = Amount(100);
/// Default entry fee: `node task create` raises it to what the reward requires
/// ([`TaskSpec::entry_fee_min`]).
pub const ENTRY_FEE: Amount = Amount(1);
/// Default most trainers.
pub const MAX_TRAINERS: u32 = 16;
/// Default length of every window, in blocks.
pub const WINDOW_BLOCKS: u64 = 20;
/// Bytes allowed in an artifact beyond 4 per parameter (the safetensors header).
pub const ARTIFACT_HEADER_BYTES: u64 = 1 << 20;

/// What a data file becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKind {
    /// A CSV of features and an integer label.
    Classification,
    /// A UTF-8 text for a character language model.
    CharLm,
}

/// The char LM architecture a new task fixes (the vocabulary comes from the data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LmArchitecture {
    /// Context length in characters.
    pub context: u32,
    /// Model width.
    pub d_model: u32,
    /// Transformer blocks.
    pub layers: u32,
    /// Attention heads.
    pub heads: u32,
}

impl Default for LmArchitecture {
    fn default() -> Self {
        LmArchitecture { context: 64, d_model: 64, layers: 2, heads: 4 }
    }
}

/// Options of a new task.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskOptions {
    /// The task's and the data set's name.
    pub name: String,
    /// Classification or char LM.
    pub kind: DataKind,
    /// Share held out, in `(0, 1)`.
    pub heldout_fraction: f64,
    /// Share of public training labels flipped, in `[0, 1)` (classification only).
    pub label_noise: f64,
    /// The split seed (secret in a real task).
    pub seed: u64,
    /// The char LM architecture.
    pub lm: LmArchitecture,
}

impl TaskOptions {
    /// Options of a task `name` of `kind` split with `seed`: the default held-out share, no
    /// label noise, the default char LM architecture.
    pub fn new(name: impl Into<String>, kind: DataKind, seed: u64) -> Self {
        TaskOptions {
            name: name.into(),
            kind,
            heldout_fraction: HELDOUT_FRACTION_DEFAULT,
            label_noise: 0.0,
            seed,
            lm: LmArchitecture::default(),
        }
    }
}

/// A task ready to be written: its spec and the bytes of its files.
#[derive(Clone, Debug)]
pub struct NewTask {
    /// The spec (`task.json`).
    pub spec: TaskSpec,
    /// The public training file.
    pub train: Vec<u8>,
    /// The held-out file.
    pub heldout: Vec<u8>,
    /// The held-out salt.
    pub salt: Salt,
    /// Salt and held-out file sealed under the task's key (`heldout.sealed`).
    pub sealed: Vec<u8>,
    /// `csv` or `txt`.
    pub extension: &'static str,
    /// Training rows (or characters) and held-out rows (or characters).
    pub sizes: (usize, usize),
    /// Training labels flipped by the label noise.
    pub flipped: usize,
}

/// Why a task could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The data file is malformed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// An option is out of range or does not fit the data.
    #[error("{0}")]
    Invalid(String),
    /// The spec does not validate.
    #[error(transparent)]
    Spec(#[from] consensus::task::SpecError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `task.json` is not a valid spec.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: String,
        /// The parser's error.
        source: serde_json::Error,
    },
}

/// Splits `bytes` (the data file; `file` names it in errors) into a task whose held-out part is
/// sealed under `key` (a fresh key per task: a key seals exactly one file).
pub fn new_task(
    bytes: &[u8],
    file: &str,
    opts: &TaskOptions,
    salt: Salt,
    key: &HeldoutKey,
) -> Result<NewTask, TaskError> {
    let mut task = split_task(bytes, file, opts, salt)?;
    task.sealed = crate::sealed::seal(key, &task.salt, &task.heldout);
    task.spec.dataset.heldout_cipher_sha256 = consensus::hash::sha256(&task.sealed);
    task.spec.dataset.key_commitment = key.commitment();
    Ok(task)
}

/// The split, before sealing: the dataset's cipher hash and key commitment are zero.
fn split_task(
    bytes: &[u8],
    file: &str,
    opts: &TaskOptions,
    salt: Salt,
) -> Result<NewTask, TaskError> {
    if !(opts.heldout_fraction > 0.0 && opts.heldout_fraction < 1.0) {
        return Err(TaskError::Invalid("the held-out fraction must be in (0, 1)".into()));
    }
    if !(0.0..1.0).contains(&opts.label_noise) {
        return Err(TaskError::Invalid("the label noise must be in [0, 1)".into()));
    }
    match opts.kind {
        DataKind::Classification => classification_task(bytes, file, opts, salt),
        DataKind::CharLm => {
            if opts.label_noise > 0.0 {
                return Err(TaskError::Invalid(
                    "label noise applies to classification only".into(),
                ));
            }
            text_task(bytes, file, opts, salt)
        }
    }
}

/// Most distinct labels named in a label error.
const LABELS_SHOWN_MAX: usize = 20;

/// Checks that the labels are exactly `0..K`, every class present: the task's class count is one
/// more than the largest label, so labels `1..=3` would make 4 classes (one never seen) and
/// `0, 5, 9` ten. Refused with the labels found and how to renumber them.
pub fn check_labels(labels: &[u32], file: &str) -> Result<(), TaskError> {
    let found: std::collections::BTreeSet<u32> = labels.iter().copied().collect();
    let bound = found.last().map_or(0, |m| m + 1);
    if found.len() as u64 == u64::from(bound) {
        return Ok(());
    }
    let mut shown: Vec<String> = found.iter().take(LABELS_SHOWN_MAX).map(u32::to_string).collect();
    if found.len() > LABELS_SHOWN_MAX {
        shown.push(format!("… ({} in all)", found.len()));
    }
    Err(TaskError::Invalid(format!(
        "{file}: the labels must be 0..{} with every class present (the largest label fixes the \
         class count, {bound}), but the file holds the labels {{{}}}: renumber them 0..{} in \
         this order",
        found.len().saturating_sub(1),
        shown.join(", "),
        found.len().saturating_sub(1)
    )))
}

/// The stratified split: held-out row indices and training row indices, each ascending.
pub fn stratified_split(labels: &[u32], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = rng::stream(seed, "split");
    let classes = labels.iter().max().map_or(0, |m| *m as usize + 1);
    let mut by_class = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let mut held = Vec::new();
    for rows in &by_class {
        let take = (fraction * rows.len() as f64).round() as usize;
        let order = rng::permutation(&mut rng, rows.len());
        held.extend(order[..take].iter().map(|&k| rows[k]));
    }
    held.sort_unstable();
    let mut is_held = vec![false; labels.len()];
    held.iter().for_each(|&i| is_held[i] = true);
    let train = (0..labels.len()).filter(|&i| !is_held[i]).collect();
    (held, train)
}

fn classification_task(
    bytes: &[u8],
    file: &str,
    opts: &TaskOptions,
    salt: Salt,
) -> Result<NewTask, TaskError> {
    let table = data::parse_csv(bytes, file, None)?;
    let classes = table.label_bound();
    if classes < 2 {
        return Err(TaskError::Invalid(format!("{file}: needs at least 2 classes")));
    }
    check_labels(&table.labels, file)?;
    // The text of every data row, in table order, so both parts keep the original values.
    let text = std::str::from_utf8(bytes).map_err(|e| {
        TaskError::Data(DataError::NotUtf8 { file: file.into(), offset: e.valid_up_to() })
    })?;
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    let header = lines.next().unwrap_or_default();
    let rows: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(rows.len(), table.rows(), "parse_csv and the row scan disagree");
    let (held, train) = stratified_split(&table.labels, opts.heldout_fraction, opts.seed);
    if held.is_empty() || train.is_empty() {
        return Err(TaskError::Invalid(format!(
            "{file}: {} rows are too few to hold out {}",
            table.rows(),
            opts.heldout_fraction
        )));
    }
    let mut labels: Vec<u32> = train.iter().map(|&i| table.labels[i]).collect();
    let flipped = flip_labels(&mut labels, classes, opts.label_noise, opts.seed);
    let render = |indices: &[usize], labels: Option<&[u32]>| -> Vec<u8> {
        let mut out = String::with_capacity(bytes.len());
        out.push_str(header);
        out.push('\n');
        for (k, &i) in indices.iter().enumerate() {
            let row = rows[i];
            match labels {
                Some(labels) => {
                    let cut = row.rfind(',').expect("a parsed row has a label column");
                    out.push_str(&row[..=cut]);
                    out.push_str(&labels[k].to_string());
                }
                None => out.push_str(row),
            }
            out.push('\n');
        }
        out.into_bytes()
    };
    let train_bytes = render(&train, Some(&labels));
    let heldout_bytes = render(&held, None);
    let (mean, std) = data::feature_stats(&table.select(&train));
    let spec = spec(
        opts,
        TaskKind::Classification { features: table.features as u32, classes },
        Preprocessing::Standardize { mean, std },
        dataset(opts, &train_bytes, &heldout_bytes, held.len(), &salt),
        CLASSIFICATION_PARAMS_MAX,
        CLASSIFICATION_REFERENCE_PARAMS,
    )?;
    Ok(NewTask {
        spec,
        train: train_bytes,
        heldout: heldout_bytes,
        salt,
        sealed: Vec::new(),
        extension: "csv",
        sizes: (train.len(), held.len()),
        flipped,
    })
}

/// Flips `round(noise × n)` labels, each to a uniformly drawn different class; returns how many.
pub fn flip_labels(labels: &mut [u32], classes: u32, noise: f64, seed: u64) -> usize {
    let count = (noise * labels.len() as f64).round() as usize;
    if count == 0 || classes < 2 {
        return 0;
    }
    let mut rng = rng::stream(seed, "label-noise");
    let order = rng::permutation(&mut rng, labels.len());
    for &i in &order[..count] {
        let shift = rng.random_range(1..classes);
        labels[i] = (labels[i] + shift) % classes;
    }
    count
}

fn text_task(
    bytes: &[u8],
    file: &str,
    opts: &TaskOptions,
    salt: Salt,
) -> Result<NewTask, TaskError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        TaskError::Data(DataError::NotUtf8 { file: file.into(), offset: e.valid_up_to() })
    })?;
    let chars = text.chars().count();
    let held_chars = (opts.heldout_fraction * chars as f64).round() as usize;
    let train_chars = chars - held_chars;
    if held_chars < 2 || train_chars < 2 {
        return Err(TaskError::Invalid(format!(
            "{file}: {chars} characters are too few to hold out {}",
            opts.heldout_fraction
        )));
    }
    let cut = text.char_indices().nth(train_chars).map_or(text.len(), |(i, _)| i);
    let (train, heldout) = text.split_at(cut);
    let vocab = Vocabulary::of_text(train);
    if vocab.size() > limits::VOCAB_MAX as usize {
        return Err(TaskError::Invalid(format!(
            "{file}: {} distinct characters; a vocabulary holds at most {}",
            vocab.size() - 1,
            limits::VOCAB_MAX - 1
        )));
    }
    let a = opts.lm;
    let kind = TaskKind::CharLm {
        vocab: vocab.size() as u32,
        context: a.context,
        d_model: a.d_model,
        layers: a.layers,
        heads: a.heads,
    };
    let shape = CharLmShape::from_kind(&kind).map_err(|e| TaskError::Invalid(e.to_string()))?;
    let params = charlm::parameter_count(&shape) as u64;
    let spec = spec(
        opts,
        kind,
        Preprocessing::Vocabulary { chars: vocab.chars() },
        dataset(opts, train.as_bytes(), heldout.as_bytes(), held_chars, &salt),
        params,
        params,
    )?;
    Ok(NewTask {
        spec,
        train: train.as_bytes().to_vec(),
        heldout: heldout.as_bytes().to_vec(),
        salt,
        sealed: Vec::new(),
        extension: "txt",
        sizes: (train_chars, held_chars),
        flipped: 0,
    })
}

fn dataset(
    opts: &TaskOptions,
    train: &[u8],
    heldout: &[u8],
    heldout_examples: usize,
    salt: &Salt,
) -> Dataset {
    Dataset {
        name: opts.name.clone(),
        train_sha256: consensus::hash::sha256(train),
        heldout_commitment: heldout_commitment(salt, heldout),
        heldout_cipher_sha256: Hash([0; 32]),
        key_commitment: Hash([0; 32]),
        heldout_examples: heldout_examples as u64,
    }
}

/// A validated spec of `kind` with the defaults every generated task shares: limits from
/// `max_params`, efficiency from `reference_params`, fees, trainer cap and windows.
fn spec(
    opts: &TaskOptions,
    kind: TaskKind,
    preprocessing: Preprocessing,
    dataset: Dataset,
    max_params: u64,
    reference_params: u64,
) -> Result<TaskSpec, TaskError> {
    let spec = TaskSpec {
        name: opts.name.clone(),
        kind,
        preprocessing,
        dataset,
        limits: Limits {
            max_params,
            max_artifact_bytes: 4 * max_params + ARTIFACT_HEADER_BYTES,
            dtypes: vec![Dtype::F32, Dtype::F16, Dtype::BF16],
        },
        efficiency: Efficiency {
            reference_params,
            penalty_ppm_per_doubling: PENALTY_PPM_PER_DOUBLING,
        },
        bond: BOND,
        entry_fee: ENTRY_FEE,
        max_trainers: MAX_TRAINERS,
        min_improvement_ppm: 0,
        windows: Windows {
            join: WINDOW_BLOCKS,
            commit: WINDOW_BLOCKS,
            key: WINDOW_BLOCKS,
            reveal: WINDOW_BLOCKS,
            score_commit: WINDOW_BLOCKS,
            score_reveal: WINDOW_BLOCKS,
        },
        base_model: None,
    };
    spec.validate(0)?;
    Ok(spec)
}

/// The paths of a task's files in `dir`: task.json, train, held-out, salt, sealed held-out.
pub fn paths(dir: &Path, extension: &str) -> [PathBuf; 5] {
    [
        dir.join("task.json"),
        dir.join(format!("train.{extension}")),
        dir.join(format!("heldout.{extension}")),
        dir.join("heldout.salt"),
        dir.join("heldout.sealed"),
    ]
}

/// Writes the task's five files into `dir` (created if needed) and returns their paths.
pub fn write(dir: &Path, task: &NewTask) -> Result<[PathBuf; 5], TaskError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| TaskError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let files = paths(dir, task.extension);
    let json = serde_json::to_string_pretty(&task.spec).expect("a spec always serializes");
    std::fs::write(&files[0], json + "\n").map_err(io(&files[0]))?;
    std::fs::write(&files[1], &task.train).map_err(io(&files[1]))?;
    std::fs::write(&files[2], &task.heldout).map_err(io(&files[2]))?;
    std::fs::write(&files[3], format!("{}\n", task.salt.0)).map_err(io(&files[3]))?;
    std::fs::write(&files[4], &task.sealed).map_err(io(&files[4]))?;
    Ok(files)
}

/// Reads and validates a `task.json` (bounded to [`SPEC_BYTES_MAX`]).
pub fn read_spec(path: &Path) -> Result<TaskSpec, TaskError> {
    let name = path.display().to_string();
    let io = |source| TaskError::Io { path: name.clone(), source };
    if std::fs::metadata(path).map_err(io)?.len() > SPEC_BYTES_MAX {
        return Err(TaskError::Invalid(format!("{name}: larger than {SPEC_BYTES_MAX} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let spec: TaskSpec =
        serde_json::from_str(&text).map_err(|source| TaskError::Json { path: name, source })?;
    spec.validate(0)?;
    Ok(spec)
}

/// Reads a `heldout.salt` file (64 hex characters, optional trailing newline).
pub fn read_salt(path: &Path) -> Result<Salt, TaskError> {
    let name = path.display().to_string();
    let io = |source| TaskError::Io { path: name.clone(), source };
    if std::fs::metadata(path).map_err(io)?.len() > 1024 {
        return Err(TaskError::Invalid(format!("{name}: not a salt file")));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let hash: Hash =
        text.trim().parse().map_err(|e| TaskError::Invalid(format!("{name}: not a salt: {e}")))?;
    Ok(Salt(hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv() -> Vec<u8> {
        let mut s = String::from("a,b,label\n");
        for i in 0..100 {
            s.push_str(&format!("{},{},{}\n", i, 7, i % 4));
        }
        s.into_bytes()
    }

    fn opts(seed: u64) -> TaskOptions {
        TaskOptions::new("toy", DataKind::Classification, seed)
    }

    #[test]
    fn labels_that_are_not_zero_to_k_are_refused_with_the_labels_found() {
        let salt = Salt(Hash([3; 32]));
        let key = HeldoutKey(Hash([4; 32]));
        let with_labels = |labels: &[u32]| -> Vec<u8> {
            let mut s = String::from("a,b,label\n");
            for i in 0..60 {
                s.push_str(&format!("{i},7,{}\n", labels[i % labels.len()]));
            }
            s.into_bytes()
        };
        let one_based = new_task(&with_labels(&[1, 2, 3]), "t.csv", &opts(1), salt, &key);
        let message = one_based.unwrap_err().to_string();
        assert!(
            message.contains("the labels {1, 2, 3}") && message.contains("renumber them 0..2"),
            "{message}"
        );
        let sparse = new_task(&with_labels(&[0, 5, 9]), "t.csv", &opts(1), salt, &key);
        assert!(sparse.unwrap_err().to_string().contains("the labels {0, 5, 9}"));
        let dense = new_task(&with_labels(&[2, 0, 1]), "t.csv", &opts(1), salt, &key).unwrap();
        assert_eq!(dense.spec.kind, TaskKind::Classification { features: 2, classes: 3 });
    }

    #[test]
    fn split_is_deterministic_disjoint_and_stratified() {
        let labels: Vec<u32> = (0..103).map(|i| (i % 5) as u32).collect();
        let (held, train) = stratified_split(&labels, 0.2, 9);
        assert_eq!(stratified_split(&labels, 0.2, 9), (held.clone(), train.clone()));
        assert_ne!(stratified_split(&labels, 0.2, 10).0, held);
        let mut all: Vec<usize> = held.iter().chain(&train).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..103).collect::<Vec<_>>(), "disjoint and complete");
        for class in 0..5u32 {
            let total = labels.iter().filter(|&&l| l == class).count();
            let in_held = held.iter().filter(|&&i| labels[i] == class).count();
            assert_eq!(in_held, (0.2 * total as f64).round() as usize, "class {class}");
        }
    }

    #[test]
    fn task_files_commit_to_the_heldout_and_keep_it_clean() {
        let salt = Salt(Hash([3; 32]));
        let mut o = opts(5);
        o.label_noise = 0.3;
        let key = HeldoutKey(Hash([4; 32]));
        let task = new_task(&csv(), "toy.csv", &o, salt, &key).unwrap();
        assert_eq!(task.sizes, (80, 20));
        let d = &task.spec.dataset;
        assert_eq!(d.heldout_cipher_sha256, consensus::hash::sha256(&task.sealed));
        assert_eq!(d.key_commitment, key.commitment());
        let opened = crate::sealed::open(&key, &task.sealed, &d.heldout_commitment).unwrap();
        assert_eq!((opened.salt, opened.bytes), (salt, task.heldout.clone()));
        assert_eq!(task.flipped, 24);
        assert_eq!(task.spec.dataset.heldout_commitment, heldout_commitment(&salt, &task.heldout));
        assert_eq!(task.spec.dataset.train_sha256, consensus::hash::sha256(&task.train));
        let held = data::parse_csv(&task.heldout, "h", None).unwrap();
        assert!(
            held.row(0)[1] == 7.0
                && held
                    .labels
                    .iter()
                    .zip(held.values.chunks(2))
                    .all(|(l, r)| *l == r[0] as u32 % 4)
        );
        let train = data::parse_csv(&task.train, "t", None).unwrap();
        let wrong = train
            .labels
            .iter()
            .zip(train.values.chunks(2))
            .filter(|(l, r)| **l != r[0] as u32 % 4)
            .count();
        assert_eq!(wrong, 24);
        let Preprocessing::Standardize { std, .. } = &task.spec.preprocessing else { panic!() };
        assert_eq!(std[1], 1.0, "a constant feature's std is stored as 1");
        let dir = tempfile::tempdir().unwrap();
        let files = write(dir.path(), &task).unwrap();
        assert_eq!(read_spec(&files[0]).unwrap(), task.spec);
        assert_eq!(read_salt(&files[3]).unwrap(), salt);
    }

    #[test]
    fn text_task_holds_out_the_tail() {
        let mut o = opts(1);
        o.kind = DataKind::CharLm;
        o.lm = LmArchitecture { context: 8, d_model: 8, layers: 1, heads: 2 };
        let task = new_task(
            "abcabcabcabcxyz!".as_bytes(),
            "t.txt",
            &o,
            Salt(Hash([0; 32])),
            &HeldoutKey(Hash([1; 32])),
        )
        .unwrap();
        assert_eq!(task.heldout, b"yz!");
        let TaskKind::CharLm { vocab, .. } = task.spec.kind else { panic!() };
        assert_eq!(vocab, 5, "a, b, c, x and unknown");
    }
}
