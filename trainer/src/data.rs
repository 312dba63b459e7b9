//! Data sets: CSV tables of numeric features with an integer label last, and UTF-8 text, read
//! with bounded sizes and preprocessed the way a task spec says.
//!
//! A CSV file has one header line, then one row per sample: `f_1,…,f_n,label`, every feature a
//! finite decimal number and the label an integer in `0..classes`. A first line made only of
//! numbers is refused as a missing header (it would otherwise be dropped as one). Any malformed line is an error
//! that names the file, the 1-based line and the 1-based column. Text is any UTF-8 file; it is
//! turned into indices with the task's vocabulary (index 0 for characters outside it).

use std::fmt;
use std::path::Path;

use candle_core::{Device, Tensor};
use consensus::task::{Preprocessing, limits};

/// Largest data file read, in bytes; checked before the file is read.
pub const DATA_BYTES_MAX: u64 = 256 << 20;
/// Most rows of a CSV table.
pub const ROWS_MAX: usize = 10_000_000;
/// Std below which a feature counts as constant; it is stored as 1 so it maps to 0, not NaN.
pub const STD_MIN: f32 = 1e-8;

/// Why a data file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("reading {file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is larger than [`DATA_BYTES_MAX`].
    #[error("{file}: {bytes} bytes is more than the {max} allowed")]
    TooLarge {
        /// The file.
        file: String,
        /// Its size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// A malformed CSV line.
    #[error("{file}:{line}:{column}: {reason}")]
    Csv {
        /// The file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// 1-based column (field) number.
        column: usize,
        /// What is wrong.
        reason: String,
    },
    /// A text file that is not UTF-8.
    #[error("{file}: not UTF-8 at byte {offset}")]
    NotUtf8 {
        /// The file.
        file: String,
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// The data does not fit the task (feature count, empty text, wrong preprocessing kind).
    #[error("{file}: {reason}")]
    Mismatch {
        /// The file.
        file: String,
        /// What does not fit.
        reason: String,
    },
}

fn csv_error(file: &str, line: usize, column: usize, reason: impl Into<String>) -> DataError {
    DataError::Csv { file: file.to_owned(), line, column, reason: reason.into() }
}

/// Reads a whole file after checking that it is at most [`DATA_BYTES_MAX`] bytes.
pub fn read_bounded(path: &Path) -> Result<Vec<u8>, DataError> {
    let file = path.display().to_string();
    let io = |source| DataError::Io { file: file.clone(), source };
    let bytes = std::fs::metadata(path).map_err(io)?.len();
    if bytes > DATA_BYTES_MAX {
        return Err(DataError::TooLarge { file, bytes, max: DATA_BYTES_MAX });
    }
    std::fs::read(path).map_err(io)
}

/// A classification table: `rows × features` values in row-major order and one label per row.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// The header's column names, the label's last.
    pub header: Vec<String>,
    /// Number of features per row.
    pub features: usize,
    /// Feature values, row-major, `rows × features`.
    pub values: Vec<f32>,
    /// The label of each row.
    pub labels: Vec<u32>,
}

impl Table {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    /// The features of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.features..(i + 1) * self.features]
    }

    /// A table of the given rows, in the given order.
    pub fn select(&self, rows: &[usize]) -> Table {
        let mut values = Vec::with_capacity(rows.len() * self.features);
        for &i in rows {
            values.extend_from_slice(self.row(i));
        }
        Table {
            header: self.header.clone(),
            features: self.features,
            values,
            labels: rows.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// The features as a `[rows, features]` F32 tensor on the CPU.
    pub fn features_tensor(&self) -> Result<Tensor, candle_core::Error> {
        Tensor::from_slice(&self.values, (self.rows(), self.features), &Device::Cpu)
    }

    /// One more than the largest label (0 for an empty table).
    pub fn label_bound(&self) -> u32 {
        self.labels.iter().max().map_or(0, |m| m + 1)
    }
}

/// What a CSV file must match, when the task is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CsvShape {
    /// Number of features (columns before the label).
    pub features: usize,
    /// Number of classes: labels must be below it.
    pub classes: u32,
}

/// Parses CSV bytes; `file` names the source in errors. With `shape`, the column count and the
/// label range are checked against it; without, the header fixes the column count and labels may
/// be any integer up to [`limits::CLASSES_MAX`]` - 1`.
pub fn parse_csv(bytes: &[u8], file: &str, shape: Option<CsvShape>) -> Result<Table, DataError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| DataError::NotUtf8 { file: file.to_owned(), offset: e.valid_up_to() })?;
    let mut lines = text.lines().enumerate();
    let header_line = lines.next().map(|(_, l)| l.trim_end_matches('\r')).unwrap_or("");
    if header_line.trim().is_empty() {
        return Err(csv_error(file, 1, 1, "empty file: expected a header line"));
    }
    let header: Vec<String> = header_line.split(',').map(|s| s.trim().to_owned()).collect();
    if header.len() >= 2 && header.iter().all(|name| name.parse::<f64>().is_ok()) {
        // Without this a file with no header silently lost its first row to the header.
        return Err(csv_error(
            file,
            1,
            1,
            "the first line is all numbers, so it looks like a data row, not a header: add a \
             header line naming the columns (the features, then the label) as the first line",
        ));
    }
    let columns = header.len();
    if columns < 2 {
        return Err(csv_error(file, 1, 1, "the header needs at least one feature and the label"));
    }
    let features = columns - 1;
    if features > limits::FEATURES_MAX as usize {
        return Err(csv_error(
            file,
            1,
            columns,
            format!("{features} features; at most {}", limits::FEATURES_MAX),
        ));
    }
    let classes = match shape {
        Some(s) => {
            if s.features != features {
                return Err(csv_error(
                    file,
                    1,
                    columns,
                    format!("header has {features} features; the task has {}", s.features),
                ));
            }
            s.classes
        }
        None => limits::CLASSES_MAX,
    };
    let mut values = Vec::new();
    let mut labels = Vec::new();
    for (index, raw) in lines {
        let line = index + 1;
        let raw = raw.trim_end_matches('\r');
        if raw.trim().is_empty() {
            continue;
        }
        if labels.len() == ROWS_MAX {
            return Err(csv_error(file, line, 1, format!("more than {ROWS_MAX} rows")));
        }
        let mut count = 0;
        for (c, field) in raw.split(',').enumerate() {
            let column = c + 1;
            count = column;
            if column > columns {
                continue;
            }
            let field = field.trim();
            if field.is_empty() {
                return Err(csv_error(file, line, column, "missing value"));
            }
            if column == columns {
                let label: u32 = field.parse().map_err(|_| {
                    csv_error(file, line, column, format!("label `{field}` is not an integer"))
                })?;
                if label >= classes {
                    return Err(csv_error(
                        file,
                        line,
                        column,
                        format!("label {label} is out of range 0..{classes}"),
                    ));
                }
                labels.push(label);
            } else {
                let value: f32 = field.parse().map_err(|_| {
                    csv_error(file, line, column, format!("`{field}` is not a number"))
                })?;
                if !value.is_finite() {
                    return Err(csv_error(file, line, column, format!("`{field}` is not finite")));
                }
                values.push(value);
            }
        }
        if count != columns {
            return Err(csv_error(
                file,
                line,
                if count < columns { count + 1 } else { columns + 1 },
                format!("{count} columns; the header has {columns}"),
            ));
        }
    }
    if labels.is_empty() {
        return Err(csv_error(file, 2, 1, "no data rows after the header"));
    }
    Ok(Table { header, features, values, labels })
}

/// Per-feature mean and std of a table (population std; a std below [`STD_MIN`] becomes 1).
/// Sums run in f64 in row order, so the result is the same on every run.
pub fn feature_stats(table: &Table) -> (Vec<f32>, Vec<f32>) {
    let n = table.rows().max(1) as f64;
    let mut mean = vec![0f64; table.features];
    for i in 0..table.rows() {
        for (m, &x) in mean.iter_mut().zip(table.row(i)) {
            *m += f64::from(x);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0f64; table.features];
    for i in 0..table.rows() {
        for ((v, &x), m) in var.iter_mut().zip(table.row(i)).zip(&mean) {
            let d = f64::from(x) - m;
            *v += d * d;
        }
    }
    let std = var
        .iter()
        .map(|v| {
            let s = (v / n).sqrt() as f32;
            if s.is_finite() && s >= STD_MIN { s } else { 1.0 }
        })
        .collect();
    (mean.into_iter().map(|m| m as f32).collect(), std)
}

/// Standardizes every row in place: `x' = (x − mean) / std`.
pub fn standardize(table: &mut Table, mean: &[f32], std: &[f32]) -> Result<(), DataError> {
    if mean.len() != table.features || std.len() != table.features {
        return Err(DataError::Mismatch {
            file: "preprocessing".into(),
            reason: format!(
                "{} features, but {} means and {} stds",
                table.features,
                mean.len(),
                std.len()
            ),
        });
    }
    for row in table.values.chunks_exact_mut(table.features) {
        for ((x, m), s) in row.iter_mut().zip(mean).zip(std) {
            *x = (*x - m) / s;
        }
    }
    Ok(())
}

/// Applies a spec's preprocessing to a table (it must be `Standardize`).
pub fn preprocess_table(table: &mut Table, pre: &Preprocessing) -> Result<(), DataError> {
    match pre {
        Preprocessing::Standardize { mean, std } => standardize(table, mean, std),
        Preprocessing::Vocabulary { .. } => Err(DataError::Mismatch {
            file: "preprocessing".into(),
            reason: "a table needs `standardize` preprocessing, not a vocabulary".into(),
        }),
    }
}

/// A character vocabulary: index 0 is any unknown character, `chars[i]` is index `i + 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocabulary {
    chars: Vec<char>,
}

impl Vocabulary {
    /// The vocabulary of a spec's `chars` string.
    pub fn new(chars: &str) -> Vocabulary {
        Vocabulary { chars: chars.chars().collect() }
    }

    /// The sorted distinct characters of a text.
    pub fn of_text(text: &str) -> Vocabulary {
        let set: std::collections::BTreeSet<char> = text.chars().collect();
        Vocabulary { chars: set.into_iter().collect() }
    }

    /// The vocabulary from a spec's preprocessing (it must be `Vocabulary`).
    pub fn from_preprocessing(pre: &Preprocessing) -> Result<Vocabulary, DataError> {
        match pre {
            Preprocessing::Vocabulary { chars } => Ok(Vocabulary::new(chars)),
            Preprocessing::Standardize { .. } => Err(DataError::Mismatch {
                file: "preprocessing".into(),
                reason: "text needs a vocabulary, not `standardize` preprocessing".into(),
            }),
        }
    }

    /// Number of indices, including 0 for unknown characters.
    pub fn size(&self) -> usize {
        self.chars.len() + 1
    }

    /// The known characters as one string, in index order (the spec's `chars`).
    pub fn chars(&self) -> String {
        self.chars.iter().collect()
    }

    /// The index of every character of `text` (0 for unknown ones).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut sorted: Vec<(char, u32)> =
            self.chars.iter().enumerate().map(|(i, &c)| (c, i as u32 + 1)).collect();
        sorted.sort_unstable();
        text.chars()
            .map(|c| sorted.binary_search_by_key(&c, |&(k, _)| k).map_or(0, |p| sorted[p].1))
            .collect()
    }
}

impl fmt::Display for Vocabulary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} characters + unknown", self.chars.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse_csv(text.as_bytes(), "t.csv", Some(CsvShape { features: 2, classes: 3 }))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn parses_a_table() {
        let no_header = parse_csv(b"1,2,0\n3.5,-4,2\n", "t.csv", None).unwrap_err().to_string();
        assert!(no_header.starts_with("t.csv:1:1: the first line is all numbers"), "{no_header}");
        assert!(parse_csv(b"1,2,label\n1,2,0\n", "t.csv", None).is_ok(), "one name is enough");
        let t = parse_csv(b"a,b,label\n1,2,0\n3.5,-4,2\n", "t.csv", None).unwrap();
        assert_eq!(t.features, 2);
        assert_eq!(t.values, vec![1.0, 2.0, 3.5, -4.0]);
        assert_eq!(t.labels, vec![0, 2]);
        assert_eq!(t.label_bound(), 3);
    }

    #[test]
    fn malformed_csv_names_file_line_and_column() {
        assert_eq!(err("a,b,label\n1,2,0\n1,2\n"), "t.csv:3:3: 2 columns; the header has 3");
        assert_eq!(err("a,b,label\n1,x,0\n"), "t.csv:2:2: `x` is not a number");
        assert_eq!(err("a,b,label\n1,2,0\n1,2,3\n"), "t.csv:3:3: label 3 is out of range 0..3");
        assert_eq!(err("a,b,label\n1,,0\n"), "t.csv:2:2: missing value");
        assert_eq!(err("a,b,label\n1,2,1.5\n"), "t.csv:2:3: label `1.5` is not an integer");
        assert_eq!(err("a,b,label\n1,2,0,4\n"), "t.csv:2:4: 4 columns; the header has 3");
        assert_eq!(err("a,b,label\n1,inf,0\n"), "t.csv:2:2: `inf` is not finite");
        assert_eq!(err(""), "t.csv:1:1: empty file: expected a header line");
        assert_eq!(err("a,b,label\n"), "t.csv:2:1: no data rows after the header");
        assert_eq!(err("a,label\n1,0\n"), "t.csv:1:2: header has 1 features; the task has 2");
    }

    #[test]
    fn constant_feature_standardizes_to_zero_not_nan() {
        let mut t = parse_csv(b"a,b,label\n5,1,0\n5,3,1\n5,5,0\n", "t.csv", None).unwrap();
        let (mean, std) = feature_stats(&t);
        assert_eq!(std[0], 1.0);
        standardize(&mut t, &mean, &std).unwrap();
        assert!(t.values.iter().all(|v| v.is_finite()));
        assert_eq!(t.row(1), &[0.0, 0.0]);
    }

    #[test]
    fn vocabulary_maps_unknown_to_zero() {
        let v = Vocabulary::of_text("banana");
        assert_eq!(v.chars(), "abn");
        assert_eq!(v.size(), 4);
        assert_eq!(v.encode("nab!"), vec![3, 1, 2, 0]);
    }
}
