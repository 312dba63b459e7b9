//! The transfer rule: coin moves from the signer to another account.

use crate::state::State;
use crate::types::{AccountId, Amount};

use super::Plan;

impl State {
    /// A transfer needs no check beyond the balance [`State::execute_tx`] checks.
    pub(super) fn plan_transfer(to: AccountId, amount: Amount) -> Plan {
        Plan::Transfer { to, amount }
    }

    /// Credits the recipient (the signer paid already).
    pub(super) fn apply_transfer(&mut self, to: AccountId, amount: Amount) {
        self.credit(to, amount);
    }
}
