//! The genesis document: chain id, validators, balances, parameters and initial tasks.
//!
//! `genesis.json` is read once, validated field by field (every malformed field gets an error that
//! names it), and hashed; peers compare genesis hashes when they connect.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::crypto::PublicKey;
use crate::encoding::encode;
use crate::hash::{tagged_hash, tags};
use crate::task::TaskSpec;
use crate::types::{AccountId, Amount, Hash};
use crate::validators::{VALIDATORS_MAX, ValidatorInfo, ValidatorSet};

/// Largest genesis file read, in bytes.
pub const GENESIS_BYTES_MAX: usize = 128 << 20;
/// Longest chain id, in bytes.
pub const CHAIN_ID_BYTES_MAX: usize = 64;
/// Longest validator name, in bytes.
pub const VALIDATOR_NAME_BYTES_MAX: usize = 64;
/// Most accounts with a genesis balance.
pub const BALANCES_MAX: usize = 1_000_000;
/// Most tasks opened at genesis.
pub const GENESIS_TASKS_MAX: usize = 64;
/// Largest `max_tx_bytes` a chain may set.
pub const TX_BYTES_LIMIT: u64 = 8 << 20;
/// Largest `max_block_bytes` a chain may set.
pub const BLOCK_BYTES_LIMIT: u64 = 64 << 20;

/// Chain parameters, fixed at genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Target time between blocks, in milliseconds.
    pub block_interval_ms: u64,
    /// Round-0 timeout waiting for a proposal, in milliseconds.
    pub timeout_propose_ms: u64,
    /// Round-0 timeout after a prevote quorum for anything, in milliseconds.
    pub timeout_prevote_ms: u64,
    /// Round-0 timeout after a precommit quorum for anything, in milliseconds.
    pub timeout_precommit_ms: u64,
    /// Added to each timeout per round, in milliseconds.
    pub timeout_delta_ms: u64,
    /// Largest encoded block, in bytes.
    pub max_block_bytes: u64,
    /// Largest encoded transaction, in bytes.
    pub max_tx_bytes: u64,
    /// Most transactions in one block.
    pub max_block_txs: u32,
    /// Most pending transactions per account in a mempool.
    pub mempool_txs_per_account: u32,
    /// Flat fee every transaction pays, burned.
    pub tx_fee: Amount,
    /// Share of a task's escrow paid to trainers, in ppm; validators share the rest.
    pub trainer_share_ppm: u32,
    /// Share of a validator's stake burned per proven equivocation, in ppm.
    pub slash_fraction_ppm: u32,
    /// How far a validator's score may be from the consensus score and still agree, in ppm.
    pub agreement_tolerance_ppm: u32,
    /// Relative L2 distance below which a later submission is a duplicate of an earlier one, ppm.
    pub duplicate_distance_ppm: u32,
    /// Most trainers any task may admit (a task's `max_trainers` may not exceed it).
    pub max_trainers_per_task: u32,
    /// Least escrow a task may offer, in base units; positive.
    #[serde(default = "defaults::task_reward_min")]
    pub task_reward_min: Amount,
    /// Fee per byte of a task's canonical spec, burned when the task opens, in base units: the
    /// state a task adds costs in proportion to its bytes.
    #[serde(default = "defaults::spec_fee_per_byte")]
    pub spec_fee_per_byte: Amount,
    /// Heights after its score deadline that a finalized task keeps its bulky data (its spec's
    /// preprocessing and the validators' verdict vectors) in the live state; the blocks keep it.
    #[serde(default = "defaults::task_retention")]
    pub task_retention: u64,
}

/// Values of the parameters a genesis file may leave out (older files predate them).
mod defaults {
    use crate::types::Amount;

    pub fn task_reward_min() -> Amount {
        Amount(1_000)
    }

    pub fn spec_fee_per_byte() -> Amount {
        Amount(1)
    }

    pub fn task_retention() -> u64 {
        10_000
    }
}

impl Default for Params {
    /// Parameters for a local network on one machine.
    fn default() -> Self {
        Params {
            block_interval_ms: 500,
            timeout_propose_ms: 1_000,
            timeout_prevote_ms: 500,
            timeout_precommit_ms: 500,
            timeout_delta_ms: 500,
            max_block_bytes: 4 << 20,
            max_tx_bytes: 256 << 10,
            max_block_txs: 10_000,
            mempool_txs_per_account: 64,
            tx_fee: Amount(1),
            trainer_share_ppm: 700_000,
            slash_fraction_ppm: 100_000,
            agreement_tolerance_ppm: 1_000,
            duplicate_distance_ppm: 10_000,
            max_trainers_per_task: 64,
            task_reward_min: defaults::task_reward_min(),
            spec_fee_per_byte: defaults::spec_fee_per_byte(),
            task_retention: defaults::task_retention(),
        }
    }
}

/// A validator at genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisValidator {
    /// Its account (public key).
    pub account: AccountId,
    /// Its stake: its voting power, and its weight in validator rewards.
    pub stake: Amount,
    /// A human-readable name.
    pub name: String,
}

/// An initial balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisBalance {
    /// The account.
    pub account: AccountId,
    /// Its balance.
    pub amount: Amount,
}

/// A task opened at genesis; its escrow comes out of the creator's genesis balance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisTask {
    /// Who opens it (pays the escrow, receives refunds).
    pub creator: AccountId,
    /// The task.
    pub spec: TaskSpec,
    /// The escrow.
    pub reward: Amount,
}

/// The genesis document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// The chain's id; every signature covers it.
    pub chain_id: String,
    /// The chain's start time, in milliseconds since the Unix epoch.
    pub genesis_time_ms: u64,
    /// The initial validators.
    pub validators: Vec<GenesisValidator>,
    /// Initial balances.
    #[serde(default)]
    pub balances: Vec<GenesisBalance>,
    /// Chain parameters.
    pub params: Params,
    /// Tasks opened at genesis.
    #[serde(default)]
    pub tasks: Vec<GenesisTask>,
}

/// Why a genesis document is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    /// The file is larger than any genesis.
    #[error("genesis is {found} bytes, over the limit of {GENESIS_BYTES_MAX}")]
    TooLarge {
        /// Its size.
        found: usize,
    },
    /// The JSON does not parse or has the wrong shape.
    #[error("genesis JSON is malformed at line {line}, column {column}: {reason}")]
    Json {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        reason: String,
    },
    /// A field's value is not acceptable.
    #[error("genesis field `{field}` is invalid: {reason}")]
    Invalid {
        /// The field's path, e.g. `validators[2].stake`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> GenesisError {
    GenesisError::Invalid { field: field.into(), reason: reason.into() }
}

impl Genesis {
    /// Parses and validates a genesis document.
    pub fn from_json(text: &str) -> Result<Genesis, GenesisError> {
        if text.len() > GENESIS_BYTES_MAX {
            return Err(GenesisError::TooLarge { found: text.len() });
        }
        let genesis: Genesis = serde_json::from_str(text).map_err(|e| GenesisError::Json {
            line: e.line(),
            column: e.column(),
            reason: e.to_string(),
        })?;
        genesis.validate()?;
        Ok(genesis)
    }

    /// The document as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("genesis serializes")
    }

    /// The genesis hash: a tagged hash of the canonical bytes.
    pub fn hash(&self) -> Hash {
        tagged_hash(tags::GENESIS, &[&encode(self)])
    }

    /// The validator set of heights 1 and 2.
    pub fn validator_set(&self) -> ValidatorSet {
        ValidatorSet::new(
            self.validators
                .iter()
                .map(|v| ValidatorInfo {
                    account: v.account,
                    power: v.stake.0,
                    name: v.name.clone(),
                })
                .collect(),
        )
    }

    /// Checks every field and relationship.
    pub fn validate(&self) -> Result<(), GenesisError> {
        let id = &self.chain_id;
        if id.is_empty()
            || id.len() > CHAIN_ID_BYTES_MAX
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(invalid(
                "chain_id",
                format!("must be 1 to {CHAIN_ID_BYTES_MAX} characters of [A-Za-z0-9._-]"),
            ));
        }
        if self.validators.is_empty() || self.validators.len() > VALIDATORS_MAX {
            return Err(invalid(
                "validators",
                format!("must list 1 to {VALIDATORS_MAX} validators"),
            ));
        }
        let mut seen = BTreeSet::new();
        let mut total: u128 = 0;
        for (i, v) in self.validators.iter().enumerate() {
            let field = |f: &str| format!("validators[{i}].{f}");
            PublicKey::from_account(&v.account)
                .map_err(|e| invalid(field("account"), e.to_string()))?;
            if !seen.insert(v.account) {
                return Err(invalid(field("account"), "listed twice"));
            }
            if v.stake.0 == 0 {
                return Err(invalid(field("stake"), "must be positive"));
            }
            if v.name.is_empty() || v.name.len() > VALIDATOR_NAME_BYTES_MAX {
                return Err(invalid(
                    field("name"),
                    format!("must be 1 to {VALIDATOR_NAME_BYTES_MAX} bytes"),
                ));
            }
            total += u128::from(v.stake.0);
        }
        if self.balances.len() > BALANCES_MAX {
            return Err(invalid("balances", format!("at most {BALANCES_MAX} entries")));
        }
        let mut seen = BTreeSet::new();
        for (i, b) in self.balances.iter().enumerate() {
            PublicKey::from_account(&b.account)
                .map_err(|e| invalid(format!("balances[{i}].account"), e.to_string()))?;
            if !seen.insert(b.account) {
                return Err(invalid(format!("balances[{i}].account"), "listed twice"));
            }
            total += u128::from(b.amount.0);
        }
        if total > u128::from(u64::MAX / 4) {
            return Err(invalid(
                "balances",
                "stakes and balances together must stay below u64::MAX / 4",
            ));
        }
        self.validate_params()?;
        if self.tasks.len() > GENESIS_TASKS_MAX {
            return Err(invalid("tasks", format!("at most {GENESIS_TASKS_MAX} tasks")));
        }
        let mut spent: std::collections::BTreeMap<AccountId, u128> = Default::default();
        for (i, t) in self.tasks.iter().enumerate() {
            t.spec
                .validate(self.validators.len())
                .map_err(|e| invalid(format!("tasks[{i}].spec"), e.to_string()))?;
            if t.spec.max_trainers > self.params.max_trainers_per_task {
                return Err(invalid(
                    format!("tasks[{i}].spec.max_trainers"),
                    format!(
                        "at most params.max_trainers_per_task = {}",
                        self.params.max_trainers_per_task
                    ),
                ));
            }
            if t.spec.base_model.is_some() {
                return Err(invalid(
                    format!("tasks[{i}].spec.base_model"),
                    "no champion exists at genesis",
                ));
            }
            let balance =
                self.balances.iter().find(|b| b.account == t.creator).map_or(0, |b| b.amount.0);
            let used = spent.entry(t.creator).or_default();
            *used += u128::from(t.reward.0);
            if *used > u128::from(balance) {
                return Err(invalid(
                    format!("tasks[{i}].reward"),
                    format!(
                        "creator {} has a genesis balance of {balance}, less than its task rewards",
                        t.creator
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_params(&self) -> Result<(), GenesisError> {
        let p = &self.params;
        for (field, ms) in [
            ("params.block_interval_ms", p.block_interval_ms),
            ("params.timeout_propose_ms", p.timeout_propose_ms),
            ("params.timeout_prevote_ms", p.timeout_prevote_ms),
            ("params.timeout_precommit_ms", p.timeout_precommit_ms),
        ] {
            if ms == 0 || ms > 3_600_000 {
                return Err(invalid(field, "must be 1 ms to 1 hour"));
            }
        }
        if p.timeout_delta_ms > 3_600_000 {
            return Err(invalid("params.timeout_delta_ms", "must be at most 1 hour"));
        }
        if p.max_tx_bytes < 256 || p.max_tx_bytes > TX_BYTES_LIMIT {
            return Err(invalid("params.max_tx_bytes", format!("must be 256 to {TX_BYTES_LIMIT}")));
        }
        if p.max_block_bytes < p.max_tx_bytes || p.max_block_bytes > BLOCK_BYTES_LIMIT {
            return Err(invalid(
                "params.max_block_bytes",
                format!("must be at least max_tx_bytes and at most {BLOCK_BYTES_LIMIT}"),
            ));
        }
        if p.max_block_txs == 0 {
            return Err(invalid("params.max_block_txs", "must be positive"));
        }
        if p.mempool_txs_per_account == 0 {
            return Err(invalid("params.mempool_txs_per_account", "must be positive"));
        }
        for (field, ppm) in [
            ("params.trainer_share_ppm", p.trainer_share_ppm),
            ("params.slash_fraction_ppm", p.slash_fraction_ppm),
            ("params.agreement_tolerance_ppm", p.agreement_tolerance_ppm),
            ("params.duplicate_distance_ppm", p.duplicate_distance_ppm),
        ] {
            if ppm > 1_000_000 {
                return Err(invalid(field, "must be at most 1000000 ppm"));
            }
        }
        if p.max_trainers_per_task == 0 || p.max_trainers_per_task > 1_024 {
            return Err(invalid("params.max_trainers_per_task", "must be 1 to 1024"));
        }
        if p.task_reward_min == Amount::ZERO {
            return Err(invalid("params.task_reward_min", "must be positive"));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crypto::Keypair;

    pub(crate) fn genesis(validators: &[(&Keypair, u64)], balances: &[(&Keypair, u64)]) -> Genesis {
        Genesis {
            chain_id: "test-chain".into(),
            genesis_time_ms: 1_000,
            validators: validators
                .iter()
                .enumerate()
                .map(|(i, (k, s))| GenesisValidator {
                    account: k.account(),
                    stake: Amount(*s),
                    name: format!("v{i}"),
                })
                .collect(),
            balances: balances
                .iter()
                .map(|(k, a)| GenesisBalance { account: k.account(), amount: Amount(*a) })
                .collect(),
            params: Params::default(),
            tasks: vec![],
        }
    }

    #[test]
    fn valid_genesis_round_trips_and_hashes_stably() {
        let v = Keypair::from_seed([1; 32]);
        let g = genesis(&[(&v, 10)], &[(&v, 5)]);
        let parsed = Genesis::from_json(&g.to_json()).unwrap();
        assert_eq!(parsed, g);
        assert_eq!(parsed.hash(), g.hash());
    }

    #[test]
    fn a_genesis_without_the_growth_fees_gets_their_defaults() {
        let v = Keypair::from_seed([1; 32]);
        let g = genesis(&[(&v, 10)], &[(&v, 5)]);
        let mut json: serde_json::Value = serde_json::from_str(&g.to_json()).unwrap();
        let params = json["params"].as_object_mut().unwrap();
        for field in ["task_reward_min", "spec_fee_per_byte", "task_retention"] {
            assert!(params.remove(field).is_some(), "{field} is written");
        }
        let older = Genesis::from_json(&json.to_string()).unwrap();
        assert_eq!(older.params, Params::default());
        assert_eq!(older.params.task_reward_min, Amount(1_000));
    }

    #[test]
    fn malformed_genesis_names_the_field() {
        let v = Keypair::from_seed([1; 32]);
        let g = genesis(&[(&v, 10)], &[]);
        type Mutation = Box<dyn Fn(&mut Genesis)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|g| g.chain_id = String::new()), "chain_id"),
            (Box::new(|g| g.chain_id = "bad id!".into()), "chain_id"),
            (Box::new(|g| g.validators.clear()), "validators"),
            (Box::new(|g| g.validators[0].stake = Amount(0)), "validators[0].stake"),
            (Box::new(|g| g.validators[0].account = AccountId([0; 32])), "validators[0].account"),
            (Box::new(|g| g.validators.push(g.validators[0].clone())), "validators[1].account"),
            (Box::new(|g| g.params.block_interval_ms = 0), "params.block_interval_ms"),
            (Box::new(|g| g.params.trainer_share_ppm = 1_000_001), "params.trainer_share_ppm"),
            (Box::new(|g| g.params.max_block_bytes = 10), "params.max_block_bytes"),
            (Box::new(|g| g.params.task_reward_min = Amount::ZERO), "params.task_reward_min"),
        ];
        for (mutate, field) in cases {
            let mut bad = g.clone();
            mutate(&mut bad);
            let err = Genesis::from_json(&bad.to_json()).unwrap_err();
            assert!(
                matches!(&err, GenesisError::Invalid { field: f, .. } if f == field),
                "expected an error on {field}, got {err}"
            );
        }
    }

    #[test]
    fn bad_json_reports_position() {
        let err = Genesis::from_json("{\n  \"chain_id\": 5\n}").unwrap_err();
        assert!(matches!(err, GenesisError::Json { line: 2, .. }), "{err}");
        let err = Genesis::from_json("{\"chain_id\": \"x\", \"surprise\": 1}").unwrap_err();
        assert!(matches!(err, GenesisError::Json { .. }), "{err}");
    }
}
