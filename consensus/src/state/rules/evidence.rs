//! The evidence rule: two conflicting votes by one validator slash its stake, once per
//! equivocation; the including proposer earns a share and the rest burns.

use crate::state::{EVIDENCE_PROPOSER_DIVISOR, EvidenceKey, State, TxError};
use crate::types::{Amount, Height};
use crate::vote::SignedVote;

use super::{Plan, TxContext};

impl State {
    /// Checks an `Evidence`: two conflicting, validly signed votes by a validator, recent
    /// enough, not slashed before; the slash is `slash_fraction_ppm` of its stake.
    pub(super) fn plan_evidence(
        &self,
        a: &SignedVote,
        b: &SignedVote,
        h: Height,
    ) -> Result<Plan, TxError> {
        if !a.conflicts_with(b) {
            return Err(TxError::InvalidEvidence("the votes do not conflict"));
        }
        a.verify(&self.verifier, &self.meta.chain_id)
            .map_err(|_| TxError::InvalidEvidence("first vote's signature is invalid"))?;
        b.verify(&self.verifier, &self.meta.chain_id)
            .map_err(|_| TxError::InvalidEvidence("second vote's signature is invalid"))?;
        let record = self
            .validators
            .get(&a.validator)
            .ok_or(TxError::InvalidEvidence("the signer is not a validator"))?;
        let max_age = self.meta.params.evidence_max_age;
        if a.vote.height.plus(max_age) < h {
            return Err(TxError::EvidenceTooOld { height: a.vote.height, max_age });
        }
        let key = (a.validator, a.vote.height, a.vote.round, a.vote.kind);
        if self.evidence.contains(&key) {
            return Err(TxError::EvidenceUsed {
                validator: a.validator,
                height: a.vote.height,
                round: a.vote.round,
            });
        }
        let slash = u128::from(record.stake.0) * u128::from(self.meta.params.slash_fraction_ppm)
            / 1_000_000;
        let amount = Amount(u64::try_from(slash).expect("a fraction of a u64 stake fits in u64"));
        Ok(Plan::Slash { key, amount })
    }

    /// Slashes the validator, pays the proposer its cut and burns the rest.
    pub(super) fn apply_slash(&mut self, key: EvidenceKey, amount: Amount, ctx: TxContext) {
        self.validators.modify(&key.0, |v| v.stake.0 -= amount.0);
        self.evidence.insert(key, ctx.height);
        let proposer_cut = Amount(amount.0 / EVIDENCE_PROPOSER_DIVISOR);
        self.credit(ctx.proposer, proposer_cut);
        self.burn(Amount(amount.0 - proposer_cut.0));
    }
}
