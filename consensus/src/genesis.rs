//! The genesis document: chain id, validators, balances, parameters and initial tasks.
//!
//! `genesis.json` is read once, validated field by field (every malformed field gets an error that
//! names it), and hashed; peers compare genesis hashes when they connect.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::crypto::Verifier;
use crate::encoding::encode;
use crate::hash::{tagged_hash, tags};
use crate::task::{SpecError, TaskSpec, trainer_share};
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
/// Largest `max_artifact_bytes` a chain may set (what a validator downloads and checks per model).
pub const ARTIFACT_BYTES_LIMIT: u64 = 1 << 30;
/// `max_artifact_bytes` of a genesis that names none.
pub const ARTIFACT_BYTES_DEFAULT: u64 = 64 << 20;
/// Latest `genesis_time_ms`: the last millisecond of year 9999. Block times only grow from it, so
/// a later start would bring them near `u64::MAX`, where the next block's time overflows.
pub const GENESIS_TIME_MS_MAX: u64 = 253_402_300_799_999;
/// Largest `max_block_txs` a chain may set.
pub const BLOCK_TXS_LIMIT: u32 = 1_000_000;
/// Largest `mempool_txs_per_account` a chain may set.
pub const MEMPOOL_TXS_PER_ACCOUNT_LIMIT: u32 = 100_000;

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
    /// Flat fee every transaction pays, burned; positive.
    pub tx_fee: Amount,
    /// Share of a task's escrow paid to trainers, in ppm; validators share the rest.
    pub trainer_share_ppm: u32,
    /// Share of a validator's stake burned per proven equivocation, in ppm.
    pub slash_fraction_ppm: u32,
    /// How far a validator's score may be from the consensus score and still agree, in ppm.
    pub agreement_tolerance_ppm: u32,
    /// Most trainers any task may admit (a task's `max_trainers` may not exceed it).
    pub max_trainers_per_task: u32,
    /// Evidence of an equivocation more than this many heights old is refused.
    pub evidence_max_age: u64,
    /// Largest `min_improvement_ppm` a task may ask of its champion, in ppm.
    pub min_improvement_ppm_max: u32,
    /// Smallest held-out set a task may use, in examples (rows, or characters for text).
    pub heldout_examples_min: u64,
    /// Largest model artifact any task may accept, in bytes (a task's
    /// `limits.max_artifact_bytes` may not exceed it; at most [`ARTIFACT_BYTES_LIMIT`]).
    #[serde(default = "artifact_bytes_default")]
    pub max_artifact_bytes: u64,
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
    /// Share of a task's escrow burned when the task is cancelled because too little stake
    /// attested to holding its sealed held-out file, in ppm; the rest returns to the creator. A
    /// chain rule rather than a spec field: a creator would set it to 0 and make validators fetch
    /// ciphertexts for tasks it never meant to run.
    #[serde(default = "defaults::cancellation_fee_ppm")]
    pub cancellation_fee_ppm: u32,
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

    pub fn cancellation_fee_ppm() -> u32 {
        10_000
    }
}

fn artifact_bytes_default() -> u64 {
    ARTIFACT_BYTES_DEFAULT
}

impl Params {
    /// Checks what a task must satisfy on this chain, beyond [`TaskSpec::validate`]: at most
    /// `max_trainers_per_task` slots, artifacts of at most `max_artifact_bytes`, `min_improvement_ppm` within its maximum, a held-out set
    /// of at least `heldout_examples_min`, a positive `reward`, and entry fees that make filling
    /// every slot cost at least the prize (`max_trainers × entry_fee ≥ trainer share`).
    pub fn check_task(&self, spec: &TaskSpec, reward: Amount) -> Result<(), SpecError> {
        let bad = |field: &'static str, reason: String| SpecError::Invalid { field, reason };
        if spec.max_trainers > self.max_trainers_per_task {
            return Err(bad(
                "max_trainers",
                format!("at most params.max_trainers_per_task = {}", self.max_trainers_per_task),
            ));
        }
        // Every validator downloads and checks each revealed artifact: a creator may not raise
        // that cost past the network's.
        if spec.limits.max_artifact_bytes > self.max_artifact_bytes {
            return Err(bad(
                "limits.max_artifact_bytes",
                format!(
                    "{} is over this chain's max_artifact_bytes of {}",
                    spec.limits.max_artifact_bytes, self.max_artifact_bytes
                ),
            ));
        }
        if spec.min_improvement_ppm > self.min_improvement_ppm_max {
            return Err(bad(
                "min_improvement_ppm",
                format!(
                    "at most params.min_improvement_ppm_max = {}",
                    self.min_improvement_ppm_max
                ),
            ));
        }
        if spec.dataset.heldout_examples < self.heldout_examples_min {
            return Err(bad(
                "dataset.heldout_examples",
                format!(
                    "{} held-out examples; at least params.heldout_examples_min = {}",
                    spec.dataset.heldout_examples, self.heldout_examples_min
                ),
            ));
        }
        if reward.0 == 0 {
            return Err(bad("reward", "must be positive".into()));
        }
        let prize = trainer_share(reward, self.trainer_share_ppm);
        let slots_cost = u128::from(spec.max_trainers) * u128::from(spec.entry_fee.0);
        if slots_cost < u128::from(prize.0) {
            return Err(bad(
                "entry_fee",
                format!(
                    "max_trainers × entry_fee = {slots_cost} is below the trainer share {prize}: \
                     filling every slot must cost at least the prize (entry_fee at least {})",
                    spec.entry_fee_min(reward, self.trainer_share_ppm)
                ),
            ));
        }
        Ok(())
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
            max_trainers_per_task: 64,
            evidence_max_age: 10_000,
            min_improvement_ppm_max: 100_000,
            heldout_examples_min: 100,
            max_artifact_bytes: ARTIFACT_BYTES_DEFAULT,
            task_reward_min: defaults::task_reward_min(),
            spec_fee_per_byte: defaults::spec_fee_per_byte(),
            task_retention: defaults::task_retention(),
            cancellation_fee_ppm: defaults::cancellation_fee_ppm(),
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
        Genesis::from_json_with(text, &Verifier::new())
    }

    /// [`Genesis::from_json`], checking the keys through `verifier` (which remembers them).
    pub fn from_json_with(text: &str, verifier: &Verifier) -> Result<Genesis, GenesisError> {
        if text.len() > GENESIS_BYTES_MAX {
            return Err(GenesisError::TooLarge { found: text.len() });
        }
        let genesis: Genesis = serde_json::from_str(text).map_err(|e| GenesisError::Json {
            line: e.line(),
            column: e.column(),
            reason: e.to_string(),
        })?;
        genesis.validate_with(verifier)?;
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
        self.validate_with(&Verifier::new())
    }

    /// [`Genesis::validate`], checking the keys through `verifier` (which remembers them).
    pub fn validate_with(&self, verifier: &Verifier) -> Result<(), GenesisError> {
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
            verifier.check_key(&v.account).map_err(|e| invalid(field("account"), e.to_string()))?;
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
            verifier
                .check_key(&b.account)
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
        self.validate_bounds(total)?;
        if self.tasks.len() > GENESIS_TASKS_MAX {
            return Err(invalid("tasks", format!("at most {GENESIS_TASKS_MAX} tasks")));
        }
        let mut spent: std::collections::BTreeMap<AccountId, u128> = Default::default();
        for (i, t) in self.tasks.iter().enumerate() {
            t.spec
                .validate(self.validators.len())
                .map_err(|e| invalid(format!("tasks[{i}].spec"), e.to_string()))?;
            self.params.check_task(&t.spec, t.reward).map_err(|e| match e {
                SpecError::Invalid { field, reason } => {
                    invalid(format!("tasks[{i}].{field}"), reason)
                }
            })?;
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
            ("params.min_improvement_ppm_max", p.min_improvement_ppm_max),
            ("params.cancellation_fee_ppm", p.cancellation_fee_ppm),
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
        if p.tx_fee.0 == 0 {
            return Err(invalid("params.tx_fee", "must be positive"));
        }
        if p.evidence_max_age == 0 {
            return Err(invalid("params.evidence_max_age", "must be positive"));
        }
        if p.heldout_examples_min == 0 {
            return Err(invalid("params.heldout_examples_min", "must be positive"));
        }
        Ok(())
    }

    /// Refuses values that pass the field checks above but would overflow or halt the chain
    /// later: a start time whose block times overflow, a fee nobody can pay, limits no node can
    /// hold in memory. `supply` is the genesis stakes and balances together.
    fn validate_bounds(&self, supply: u128) -> Result<(), GenesisError> {
        let p = &self.params;
        if self.genesis_time_ms > GENESIS_TIME_MS_MAX {
            return Err(invalid(
                "genesis_time_ms",
                format!(
                    "{} is after year 9999 (at most {GENESIS_TIME_MS_MAX}): block times would \
                     overflow",
                    self.genesis_time_ms
                ),
            ));
        }
        if u128::from(p.tx_fee.0) > supply {
            return Err(invalid(
                "params.tx_fee",
                format!(
                    "{} is more than every stake and balance together ({supply}): no account \
                     could ever pay it",
                    p.tx_fee.0
                ),
            ));
        }
        if p.max_block_txs > BLOCK_TXS_LIMIT {
            return Err(invalid(
                "params.max_block_txs",
                format!("{} is over the limit of {BLOCK_TXS_LIMIT}", p.max_block_txs),
            ));
        }
        if p.mempool_txs_per_account > MEMPOOL_TXS_PER_ACCOUNT_LIMIT {
            return Err(invalid(
                "params.mempool_txs_per_account",
                format!(
                    "{} is over the limit of {MEMPOOL_TXS_PER_ACCOUNT_LIMIT}",
                    p.mempool_txs_per_account
                ),
            ));
        }
        if p.max_artifact_bytes == 0 || p.max_artifact_bytes > ARTIFACT_BYTES_LIMIT {
            return Err(invalid(
                "params.max_artifact_bytes",
                format!("{} must be 1 to {ARTIFACT_BYTES_LIMIT}", p.max_artifact_bytes),
            ));
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
            (Box::new(|g| g.params.tx_fee = Amount(0)), "params.tx_fee"),
            (Box::new(|g| g.params.evidence_max_age = 0), "params.evidence_max_age"),
            (Box::new(|g| g.params.heldout_examples_min = 0), "params.heldout_examples_min"),
            (
                Box::new(|g| g.params.min_improvement_ppm_max = 1_000_001),
                "params.min_improvement_ppm_max",
            ),
            // Values that passed before and then halted a chain (issue 19).
            (Box::new(|g| g.genesis_time_ms = u64::MAX - 1), "genesis_time_ms"),
            (Box::new(|g| g.genesis_time_ms = GENESIS_TIME_MS_MAX + 1), "genesis_time_ms"),
            (Box::new(|g| g.params.tx_fee = Amount(u64::MAX)), "params.tx_fee"),
            (Box::new(|g| g.params.tx_fee = Amount(11)), "params.tx_fee"),
            (Box::new(|g| g.params.max_block_txs = u32::MAX), "params.max_block_txs"),
            (
                Box::new(|g| g.params.mempool_txs_per_account = u32::MAX),
                "params.mempool_txs_per_account",
            ),
            (Box::new(|g| g.params.max_artifact_bytes = 0), "params.max_artifact_bytes"),
            (Box::new(|g| g.params.max_artifact_bytes = 4 << 30), "params.max_artifact_bytes"),
            (Box::new(|g| g.params.timeout_delta_ms = u64::MAX), "params.timeout_delta_ms"),
            (Box::new(|g| g.validators[0].stake = Amount(u64::MAX)), "balances"),
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
    fn a_task_may_not_raise_its_artifacts_past_the_chains_cap() {
        let params = Params { max_artifact_bytes: 1 << 20, ..Params::default() };
        let mut spec = crate::task::tests::spec();
        spec.limits.max_artifact_bytes = 1 << 20;
        let reward = Amount(spec.entry_fee.0);
        params.check_task(&spec, reward).unwrap();
        spec.limits.max_artifact_bytes = (1 << 20) + 1;
        let err = params.check_task(&spec, reward).unwrap_err();
        assert!(
            matches!(&err, SpecError::Invalid { field: "limits.max_artifact_bytes", .. }),
            "{err}"
        );
    }

    #[test]
    fn the_latest_start_time_and_a_payable_fee_pass() {
        let v = Keypair::from_seed([1; 32]);
        let mut g = genesis(&[(&v, 10)], &[]);
        g.genesis_time_ms = GENESIS_TIME_MS_MAX;
        g.params.tx_fee = Amount(10);
        g.params.max_artifact_bytes = ARTIFACT_BYTES_LIMIT;
        Genesis::from_json(&g.to_json()).unwrap();
    }

    #[test]
    fn a_genesis_without_an_artifact_cap_gets_the_default() {
        let v = Keypair::from_seed([1; 32]);
        let g = genesis(&[(&v, 10)], &[]);
        let json = g
            .to_json()
            .replace(&format!(",\n    \"max_artifact_bytes\": {ARTIFACT_BYTES_DEFAULT}"), "");
        assert!(!json.contains("max_artifact_bytes"), "{json}");
        assert_eq!(
            Genesis::from_json(&json).unwrap().params.max_artifact_bytes,
            ARTIFACT_BYTES_DEFAULT
        );
    }

    #[test]
    fn bad_json_reports_position() {
        let err = Genesis::from_json("{\n  \"chain_id\": 5\n}").unwrap_err();
        assert!(matches!(err, GenesisError::Json { line: 2, .. }), "{err}");
        let err = Genesis::from_json("{\"chain_id\": \"x\", \"surprise\": 1}").unwrap_err();
        assert!(matches!(err, GenesisError::Json { .. }), "{err}");
    }
}
