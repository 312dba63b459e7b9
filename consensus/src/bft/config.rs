//! The engine's timing parameters.

use serde::{Deserialize, Serialize};

use crate::types::Round;

use super::types::TimeoutKind;

/// Timeouts of the engine, in milliseconds. The node maps the genesis parameters onto it, so
/// every validator runs the same values.
///
/// A round's timeout is `base + delta × round`: it grows each round, so once messages arrive
/// within some unknown bound (after GST), rounds become long enough to decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// How long to wait for a proposal in round 0.
    pub timeout_propose_ms: u64,
    /// How long to wait, after a quorum of prevotes for different values, before precommitting
    /// nil in round 0.
    pub timeout_prevote_ms: u64,
    /// How long to wait, after a quorum of precommits for different values, before the next
    /// round, in round 0.
    pub timeout_precommit_ms: u64,
    /// What each further round adds to each of the three timeouts above.
    pub timeout_delta_ms: u64,
    /// The wait after a commit before the next height's first round (Tendermint's
    /// `timeout_commit`): a block comes about every interval, with or without transactions.
    pub block_interval_ms: u64,
    /// The largest encoded value (block) a peer may hand the engine, in bytes: larger proposals
    /// are dropped, and every buffer of peer messages is sized from it (the node sets it to the
    /// chain's gossip limit, which no honest block exceeds).
    pub value_bytes_max: u64,
}

/// Smallest `value_bytes_max`: room for a header and a commit certificate.
pub const VALUE_BYTES_MIN: u64 = 16 << 10;

/// A configuration that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("engine setting {name} is {value}; it must be at least {min}")]
pub struct ConfigError {
    /// The offending field.
    pub name: &'static str,
    /// Its value.
    pub value: u64,
    /// The least it may be.
    pub min: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            timeout_propose_ms: 3_000,
            timeout_prevote_ms: 1_000,
            timeout_precommit_ms: 1_000,
            timeout_delta_ms: 500,
            block_interval_ms: 1_000,
            value_bytes_max: 4 << 20,
        }
    }
}

impl EngineConfig {
    /// Checks that every round timeout is positive (a zero timeout would spin rounds) and that
    /// a value can hold a header and a certificate.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value, min) in [
            ("timeout_propose_ms", self.timeout_propose_ms, 1),
            ("timeout_prevote_ms", self.timeout_prevote_ms, 1),
            ("timeout_precommit_ms", self.timeout_precommit_ms, 1),
            ("value_bytes_max", self.value_bytes_max, VALUE_BYTES_MIN),
        ] {
            if value < min {
                return Err(ConfigError { name, value, min });
            }
        }
        Ok(())
    }

    /// `value_bytes_max` as a size in memory.
    pub fn value_bytes(&self) -> usize {
        usize::try_from(self.value_bytes_max).unwrap_or(usize::MAX)
    }

    /// The duration of a timer in a round, in milliseconds.
    pub fn timeout_ms(&self, kind: TimeoutKind, round: Round) -> u64 {
        let grow =
            |base: u64| base.saturating_add(self.timeout_delta_ms.saturating_mul(round.0.into()));
        match kind {
            TimeoutKind::Propose => grow(self.timeout_propose_ms),
            TimeoutKind::Prevote => grow(self.timeout_prevote_ms),
            TimeoutKind::Precommit => grow(self.timeout_precommit_ms),
            // Re-send at the pace of a whole round, so a round that lost messages repairs itself
            // before it times out for good, without flooding the network.
            TimeoutKind::Rebroadcast => grow(self.timeout_propose_ms),
            TimeoutKind::Commit => self.block_interval_ms,
        }
    }
}
