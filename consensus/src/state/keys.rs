//! State keys: the chain meta's key, and the canonical key bytes of a record written as text.

use crate::encoding::encode;
use crate::storage::Tree;
use crate::types::{AccountId, Hash, Height, TaskId};

use super::StateKeyError;

/// Longest canonical key of a state record, in bytes (the largest is an evidence key).
pub const STATE_KEY_BYTES_MAX: usize = 128;

/// The key of the chain meta record in the [`Tree::Meta`] table.
pub const META_KEY: &[u8] = b"chain";

/// The canonical key bytes of a record of `table` written as text: an account id (hex) for
/// accounts and validators, a decimal id for tasks, a decimal height for validator sets,
/// `TASK:ACCOUNT` for submissions and verdicts, a hash (hex) for commitments and champions,
/// `chain` for meta; for any table, `0x` followed by the canonical key bytes in hex.
pub fn parse_state_key(table: Tree, text: &str) -> Result<Vec<u8>, StateKeyError> {
    let expected = match table {
        Tree::Accounts | Tree::Validators => "an account id (64 hex characters) or 0x+hex",
        Tree::Tasks => "a decimal task id or 0x+hex",
        Tree::ValidatorSets => "a decimal height or 0x+hex",
        Tree::Submissions | Tree::Verdicts => "TASK:ACCOUNT (decimal id, hex account) or 0x+hex",
        Tree::Commitments | Tree::Champions => "a hash (64 hex characters) or 0x+hex",
        Tree::Meta => "`chain` or 0x+hex",
        Tree::Deadlines => "HEIGHT:TASK (decimal height and id) or 0x+hex",
        Tree::ChampionIndex => "FILE:TASK (hex sha256 of the training file, decimal id) or 0x+hex",
        Tree::Evidence => "0x and the canonical key bytes in hex",
        Tree::Blocks | Tree::Commits | Tree::TxIndex | Tree::Wal => {
            return Err(StateKeyError::NotState(table.name()));
        }
    };
    let bad = || StateKeyError::BadText {
        table: table.name(),
        expected,
        found: text.chars().take(80).collect(),
    };
    if let Some(raw) = text.strip_prefix("0x") {
        if raw.len() > 2 * STATE_KEY_BYTES_MAX {
            return Err(bad());
        }
        return hex::decode(raw).map_err(|_| bad());
    }
    let key = match table {
        Tree::Accounts | Tree::Validators => encode(&text.parse::<AccountId>().map_err(|_| bad())?),
        Tree::Tasks => encode(&TaskId(text.parse().map_err(|_| bad())?)),
        Tree::ValidatorSets => encode(&Height(text.parse().map_err(|_| bad())?)),
        Tree::Submissions | Tree::Verdicts => {
            let (task, account) = text.split_once(':').ok_or_else(bad)?;
            let task = TaskId(task.parse().map_err(|_| bad())?);
            encode(&(task, account.parse::<AccountId>().map_err(|_| bad())?))
        }
        Tree::Commitments | Tree::Champions => encode(&text.parse::<Hash>().map_err(|_| bad())?),
        Tree::Meta if text == "chain" => META_KEY.to_vec(),
        Tree::Deadlines => {
            let (height, task) = text.split_once(':').ok_or_else(bad)?;
            let height = Height(height.parse().map_err(|_| bad())?);
            encode(&(height, TaskId(task.parse().map_err(|_| bad())?)))
        }
        Tree::ChampionIndex => {
            let (file, task) = text.split_once(':').ok_or_else(bad)?;
            let file = file.parse::<Hash>().map_err(|_| bad())?;
            encode(&(file, TaskId(task.parse().map_err(|_| bad())?)))
        }
        _ => return Err(bad()),
    };
    Ok(key)
}
