//! Keys, domain-separated signing and the one signature acceptance rule.
//!
//! # The acceptance rule
//!
//! A signature that one node accepts and another rejects forks the chain, so every path (single,
//! batch, gossip, block execution, sync) accepts exactly this:
//!
//! 1. the public key `A` is a canonical encoding of a curve point that is **not of small order and
//!    has no torsion component** (it lies in the prime-order subgroup);
//! 2. the signature's `R` is likewise canonical, not of small order and torsion-free, and its `s`
//!    is a canonical scalar (`s < ℓ`);
//! 3. ed25519-dalek's `verify_strict` accepts it over `domain_tag || chain_id || message`.
//!
//! Rule 1 is checked when a key is decoded ([`PublicKey::from_account`]); rule 2 by
//! [`check_signature_encoding`] on the batch path, and implied by `verify_strict` on the single
//! path (see [`verify`]). With `A` and `R` in the prime-order subgroup, the cofactored
//! equation that batch verification checks holds exactly when the cofactorless one of
//! `verify_strict` does, so [`verify_batch`] is only a fast path: on any batch failure it verifies
//! one by one with [`verify`] and reports the first failing index.
//!
//! # Signatures verified once
//!
//! A transaction is checked when it arrives on gossip, when the mempool admits it, when every
//! block is re-checked against the mempool, and when its block executes; a precommit is checked
//! as a vote and again inside the commit certificate. [`verify`] remembers the digest of every
//! `(signed bytes, signer, signature)` it accepted, so each is verified by curve arithmetic once
//! per process. A memo only saves time, never changes an answer: only accepted triples are stored,
//! and a hit needs a sha256 collision to be wrong.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Mutex, OnceLock, PoisonError};

use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::types::AccountId;

/// What a signature signs; each has its own tag, so no signature can be replayed as another type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// A transaction.
    Tx,
    /// A block proposal.
    Proposal,
    /// A prevote.
    Prevote,
    /// A precommit.
    Precommit,
}

impl Domain {
    /// The tag prefixed to the signed bytes.
    pub fn tag(self) -> &'static [u8] {
        match self {
            Domain::Tx => b"crucible/sign/tx/v1",
            Domain::Proposal => b"crucible/sign/proposal/v1",
            Domain::Prevote => b"crucible/sign/prevote/v1",
            Domain::Precommit => b"crucible/sign/precommit/v1",
        }
    }
}

/// The exact bytes signed: `tag || len(chain_id) || chain_id || message`.
pub fn signing_bytes(domain: Domain, chain_id: &str, message: &[u8]) -> Vec<u8> {
    let tag = domain.tag();
    let mut out = Vec::with_capacity(tag.len() + 8 + chain_id.len() + message.len());
    out.extend_from_slice(tag);
    out.extend_from_slice(&(chain_id.len() as u64).to_le_bytes());
    out.extend_from_slice(chain_id.as_bytes());
    out.extend_from_slice(message);
    out
}

/// Why a key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The public key is not a canonical point encoding.
    #[error("public key {account} is not a canonical curve point")]
    NonCanonicalKey {
        /// The key.
        account: AccountId,
    },
    /// The public key is of small order or has a torsion component.
    #[error("public key {account} is weak (small order or not in the prime-order subgroup)")]
    WeakKey {
        /// The key.
        account: AccountId,
    },
    /// The signature's R or s is not canonical, or R is weak.
    #[error("signature is malformed: {reason}")]
    MalformedSignature {
        /// Which part is wrong.
        reason: &'static str,
    },
    /// The signature does not verify for this key, domain, chain and message.
    #[error("signature by {account} does not verify")]
    Invalid {
        /// The claimed signer.
        account: AccountId,
    },
}

/// A 64-byte ed25519 signature. Hex in JSON, raw bytes in canonical encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(&self.0[..4]))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(self.0))
        } else {
            // Two fixed halves: serde implements arrays up to 32 elements.
            let (r, rest) = self.0.split_at(32);
            let r: [u8; 32] = r.try_into().expect("split at 32");
            let s_half: [u8; 32] = rest.try_into().expect("64 - 32 = 32");
            (r, s_half).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = [0u8; 64];
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            hex::decode_to_slice(&text, &mut out)
                .map_err(|_| serde::de::Error::custom("signature must be 128 hex characters"))?;
        } else {
            let (r, s) = <([u8; 32], [u8; 32])>::deserialize(d)?;
            out[..32].copy_from_slice(&r);
            out[32..].copy_from_slice(&s);
        }
        Ok(Signature(out))
    }
}

/// Checks that `bytes` is a canonical encoding of a point in the prime-order subgroup, other than
/// the identity (rules 1 and 2 of the module docs).
fn is_strong_point(bytes: &[u8; 32]) -> Result<(), &'static str> {
    let compressed = CompressedEdwardsY(*bytes);
    let point = compressed.decompress().ok_or("not a curve point")?;
    if point.compress().to_bytes() != *bytes {
        return Err("non-canonical point encoding");
    }
    if point.is_small_order() {
        return Err("small-order point");
    }
    if !point.is_torsion_free() {
        return Err("point has a torsion component");
    }
    Ok(())
}

/// Checks a signature's encoding: `R` canonical and strong, `s` a canonical scalar.
pub fn check_signature_encoding(signature: &Signature) -> Result<(), SignatureError> {
    let r: [u8; 32] = signature.0[..32].try_into().expect("64-byte signature");
    let s: [u8; 32] = signature.0[32..].try_into().expect("64-byte signature");
    is_strong_point(&r).map_err(|reason| SignatureError::MalformedSignature { reason })?;
    if Option::<Scalar>::from(Scalar::from_canonical_bytes(s)).is_none() {
        return Err(SignatureError::MalformedSignature { reason: "s is not a canonical scalar" });
    }
    Ok(())
}

/// A public key that passed the acceptance rule's key checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey {
    account: AccountId,
    key: VerifyingKey,
}

/// Keys remembered as already checked, per generation of [`Recent`]. The torsion check costs
/// about as much as a signature verification, and accounts sign again and again; a network with
/// 10^5 active accounts must find every one of them here, or each transaction pays twice. The
/// memo only saves time, it never changes an answer (only keys that passed every check are
/// stored); a hit still decodes the point, a few microseconds.
const CHECKED_KEYS_PER_GENERATION: usize = 1 << 17;

fn checked_keys() -> &'static Mutex<Recent<AccountId>> {
    static KEYS: OnceLock<Mutex<Recent<AccountId>>> = OnceLock::new();
    KEYS.get_or_init(|| Mutex::new(Recent::new(CHECKED_KEYS_PER_GENERATION)))
}

/// A set of the most recently inserted values, bounded in two generations: when the current one
/// holds `per_generation` values it becomes the previous one (dropping the one before), so the
/// set remembers between one and two generations of values, and what is used again survives
/// (a hit in the previous generation is carried into the current one).
struct Recent<T> {
    per_generation: usize,
    current: HashSet<T>,
    previous: HashSet<T>,
}

impl<T: std::hash::Hash + Eq + Copy> Recent<T> {
    fn new(per_generation: usize) -> Recent<T> {
        Recent { per_generation, current: HashSet::new(), previous: HashSet::new() }
    }

    /// Whether `value` is remembered (carrying it into the current generation if needed).
    fn contains(&mut self, value: &T) -> bool {
        if self.current.contains(value) {
            return true;
        }
        let found = self.previous.contains(value);
        if found {
            self.insert(*value);
        }
        found
    }

    fn insert(&mut self, value: T) {
        if self.current.len() >= self.per_generation {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(value);
    }
}

impl PublicKey {
    /// Decodes and checks an account's key: canonical, not small order, torsion-free.
    pub fn from_account(account: &AccountId) -> Result<PublicKey, SignatureError> {
        // A poisoned lock only means another thread panicked mid-insert of a checked key; the set
        // is still one of checked keys.
        let checked =
            checked_keys().lock().unwrap_or_else(PoisonError::into_inner).contains(account);
        if !checked {
            match is_strong_point(account.as_bytes()) {
                Ok(()) => {}
                Err("non-canonical point encoding" | "not a curve point") => {
                    return Err(SignatureError::NonCanonicalKey { account: *account });
                }
                Err(_) => return Err(SignatureError::WeakKey { account: *account }),
            }
        }
        let key = VerifyingKey::from_bytes(account.as_bytes())
            .map_err(|_| SignatureError::NonCanonicalKey { account: *account })?;
        if !checked {
            checked_keys().lock().unwrap_or_else(PoisonError::into_inner).insert(*account);
        }
        Ok(PublicKey { account: *account, key })
    }

    /// The account this key is.
    pub fn account(&self) -> AccountId {
        self.account
    }
}

/// Accepted signatures remembered per generation of [`Recent`] (a few MiB at most).
const VERIFIED_PER_GENERATION: usize = 1 << 16;

/// Digests of accepted `(signed bytes, signer, signature)` triples.
fn verified_signatures() -> &'static Mutex<Recent<[u8; 32]>> {
    static VERIFIED: OnceLock<Mutex<Recent<[u8; 32]>>> = OnceLock::new();
    VERIFIED.get_or_init(|| Mutex::new(Recent::new(VERIFIED_PER_GENERATION)))
}

/// The memo's key for a signature over `signed` bytes.
fn verified_digest(signed: &[u8], signer: &AccountId, signature: &Signature) -> [u8; 32] {
    crate::hash::tagged_hash(
        b"crucible/verified-signature/v1",
        &[signed, signer.as_bytes(), &signature.0],
    )
    .0
}

/// Verifies one signature with the acceptance rule (a triple accepted before is answered from
/// the memo; see the module docs).
///
/// `R`'s torsion check is implied here: `verify_strict` recomputes `R = [s]B − [k]A` and compares
/// encodings, and with `A` torsion-free that point lies in the prime-order subgroup. The batch
/// path must check it explicitly ([`check_signature_encoding`]).
pub fn verify(
    domain: Domain,
    chain_id: &str,
    signer: &AccountId,
    message: &[u8],
    signature: &Signature,
) -> Result<(), SignatureError> {
    let signed = signing_bytes(domain, chain_id, message);
    let digest = verified_digest(&signed, signer, signature);
    // A poisoned lock only means another thread panicked mid-insert; every stored digest is
    // still one of an accepted signature.
    let memo = || verified_signatures().lock().unwrap_or_else(PoisonError::into_inner);
    if memo().contains(&digest) {
        return Ok(());
    }
    verify_uncached(&signed, signer, signature)?;
    memo().insert(digest);
    Ok(())
}

/// The acceptance rule's arithmetic on the exact signed bytes, without the memo.
fn verify_uncached(
    signed: &[u8],
    signer: &AccountId,
    signature: &Signature,
) -> Result<(), SignatureError> {
    let key = PublicKey::from_account(signer)?;
    let s: [u8; 32] = signature.0[32..].try_into().expect("64-byte signature");
    if Option::<Scalar>::from(Scalar::from_canonical_bytes(s)).is_none() {
        return Err(SignatureError::MalformedSignature { reason: "s is not a canonical scalar" });
    }
    let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
    key.key.verify_strict(signed, &sig).map_err(|_| SignatureError::Invalid { account: *signer })
}

/// One item for [`verify_batch`].
#[derive(Clone, Copy, Debug)]
pub struct BatchItem<'a> {
    /// What is signed.
    pub domain: Domain,
    /// The signer.
    pub signer: &'a AccountId,
    /// The canonical message bytes (without tag or chain id).
    pub message: &'a [u8],
    /// The signature.
    pub signature: &'a Signature,
}

/// Fewest signatures not yet in the memo for which [`verify_batch`] tries the batch equation;
/// below it, one by one is as fast.
const BATCH_EQUATION_MIN: usize = 4;

/// Verifies many signatures of one chain; accepts exactly what [`verify`] accepts for each, and
/// shares its memo: triples accepted before cost a hash, and the ones checked here are
/// remembered, so the same txs met again (in a block, from another peer) are not checked twice.
///
/// Returns `Err((index, error))` for the first item that fails the single-signature rule.
pub fn verify_batch(
    chain_id: &str,
    items: &[BatchItem<'_>],
) -> Result<(), (usize, SignatureError)> {
    let signed: Vec<Vec<u8>> =
        items.iter().map(|item| signing_bytes(item.domain, chain_id, item.message)).collect();
    let digests: Vec<[u8; 32]> = items
        .iter()
        .zip(&signed)
        .map(|(item, bytes)| verified_digest(bytes, item.signer, item.signature))
        .collect();
    let memo = || verified_signatures().lock().unwrap_or_else(PoisonError::into_inner);
    let fresh: Vec<usize> = {
        let mut memo = memo();
        (0..items.len()).filter(|&i| !memo.contains(&digests[i])).collect()
    };
    if fresh.len() >= BATCH_EQUATION_MIN && batch_equation_holds(&fresh, items, &signed) {
        let mut memo = memo();
        for &i in &fresh {
            memo.insert(digests[i]);
        }
        return Ok(());
    }
    // One by one: below the batch size, or to find the culprit of a failed batch with the single
    // rule, which is authoritative (every item verifying alone though the batch did not cannot
    // happen with strong points, but then the items are accepted).
    for &i in &fresh {
        let item = &items[i];
        verify_uncached(&signed[i], item.signer, item.signature).map_err(|e| (i, e))?;
        memo().insert(digests[i]);
    }
    Ok(())
}

/// Whether the `chosen` items pass the key and encoding checks and the batch equation.
fn batch_equation_holds(chosen: &[usize], items: &[BatchItem<'_>], signed: &[Vec<u8>]) -> bool {
    let mut keys = Vec::with_capacity(chosen.len());
    let mut sigs = Vec::with_capacity(chosen.len());
    for &i in chosen {
        let item = &items[i];
        let Ok(key) = PublicKey::from_account(item.signer) else { return false };
        if check_signature_encoding(item.signature).is_err() {
            return false;
        }
        keys.push(key.key);
        sigs.push(ed25519_dalek::Signature::from_bytes(&item.signature.0));
    }
    let messages: Vec<&[u8]> = chosen.iter().map(|&i| signed[i].as_slice()).collect();
    ed25519_dalek::verify_batch(&messages, &sigs, &keys).is_ok()
}

/// An ed25519 signing key.
pub struct Keypair {
    key: SigningKey,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.account().short())
    }
}

/// Why a key could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The operating system's random source failed.
    #[error("the OS random source failed: {0}")]
    Rng(String),
    /// The key file is not valid JSON of the expected shape.
    #[error("key file is malformed: {0}")]
    Malformed(String),
    /// The key file names a key type other than ed25519.
    #[error("key file holds a {found:?} key; only \"ed25519\" is supported")]
    UnsupportedType {
        /// The type it names.
        found: String,
    },
    /// The key file's account does not match its secret key.
    #[error("key file says account {claimed} but its secret key is account {actual}")]
    AccountMismatch {
        /// The account written in the file.
        claimed: AccountId,
        /// The account of the secret key.
        actual: AccountId,
    },
}

/// The JSON key file: `{"type": "ed25519", "account": hex, "secret_key": hex}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    account: AccountId,
    secret_key: String,
}

impl Keypair {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Keypair, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Rng(e.to_string()))?;
        Ok(Keypair::from_seed(seed))
    }

    /// The key with this 32-byte secret seed (for reproducible testnets and tests).
    pub fn from_seed(seed: [u8; 32]) -> Keypair {
        Keypair { key: SigningKey::from_bytes(&seed) }
    }

    /// The 32-byte secret seed.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The account (public key) of this key.
    pub fn account(&self) -> AccountId {
        AccountId(self.key.verifying_key().to_bytes())
    }

    /// Signs `message` for `domain` on `chain_id`.
    pub fn sign(&self, domain: Domain, chain_id: &str, message: &[u8]) -> Signature {
        Signature(self.key.sign(&signing_bytes(domain, chain_id, message)).to_bytes())
    }

    /// The key file's JSON text.
    pub fn to_key_file(&self) -> String {
        let file = KeyFile {
            kind: "ed25519".into(),
            account: self.account(),
            secret_key: hex::encode(self.secret_bytes()),
        };
        serde_json::to_string_pretty(&file).expect("key file serializes")
    }

    /// Parses a key file and checks that its account matches its secret key.
    pub fn from_key_file(text: &str) -> Result<Keypair, KeyError> {
        let file: KeyFile =
            serde_json::from_str(text).map_err(|e| KeyError::Malformed(e.to_string()))?;
        if file.kind != "ed25519" {
            return Err(KeyError::UnsupportedType { found: file.kind });
        }
        let mut seed = [0u8; 32];
        hex::decode_to_slice(&file.secret_key, &mut seed).map_err(|_| {
            KeyError::Malformed("secret_key must be 64 hex characters (32 bytes)".into())
        })?;
        let key = Keypair::from_seed(seed);
        if key.account() != file.account {
            return Err(KeyError::AccountMismatch { claimed: file.account, actual: key.account() });
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::EIGHT_TORSION;

    fn key(n: u8) -> Keypair {
        Keypair::from_seed([n; 32])
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let k = key(1);
        let sig = k.sign(Domain::Tx, "c", b"hello");
        verify(Domain::Tx, "c", &k.account(), b"hello", &sig).unwrap();
    }

    #[test]
    fn a_signature_is_bound_to_domain_chain_and_message() {
        let k = key(1);
        let sig = k.sign(Domain::Prevote, "c", b"m");
        let a = k.account();
        assert!(verify(Domain::Precommit, "c", &a, b"m", &sig).is_err());
        assert!(verify(Domain::Prevote, "other", &a, b"m", &sig).is_err());
        assert!(verify(Domain::Prevote, "c", &a, b"n", &sig).is_err());
        assert!(verify(Domain::Prevote, "c", &key(2).account(), b"m", &sig).is_err());
    }

    #[test]
    fn an_accepted_signature_remembered_changes_no_other_answer() {
        let k = key(3);
        let a = k.account();
        let sig = k.sign(Domain::Prevote, "memo", b"m");
        // Twice: the second pass answers the accepted triple from the memo, and the refused ones
        // (never remembered) from the arithmetic again.
        for _ in 0..2 {
            verify(Domain::Prevote, "memo", &a, b"m", &sig).unwrap();
            assert!(verify(Domain::Precommit, "memo", &a, b"m", &sig).is_err());
            assert!(verify(Domain::Prevote, "memo", &a, b"n", &sig).is_err());
            assert!(verify(Domain::Prevote, "memo", &key(4).account(), b"m", &sig).is_err());
            let mut flipped = sig;
            flipped.0[5] ^= 1;
            assert!(verify(Domain::Prevote, "memo", &a, b"m", &flipped).is_err());
        }
    }

    #[test]
    fn recent_values_hold_two_generations_and_carry_what_is_used() {
        let mut recent = Recent::new(4);
        for i in 0..6u32 {
            recent.insert(i);
        }
        // Generations {0,1,2,3} and {4,5}: everything is still remembered.
        assert!((0..6).all(|i| recent.current.contains(&i) || recent.previous.contains(&i)));
        // 0 is used again: carried into the current generation, it outlives 1, 2 and 3.
        assert!(recent.contains(&0));
        for i in 6..9 {
            recent.insert(i);
        }
        assert!(recent.contains(&0), "a value in use survives the generation turning");
        assert!(!recent.contains(&1), "an unused value of the dropped generation is forgotten");
        assert!(recent.current.len() <= 4 && recent.previous.len() <= 4);
    }

    #[test]
    fn small_order_keys_are_weak() {
        for point in EIGHT_TORSION.iter() {
            let account = AccountId(point.compress().to_bytes());
            let err = PublicKey::from_account(&account).unwrap_err();
            assert!(
                matches!(
                    err,
                    SignatureError::WeakKey { .. } | SignatureError::NonCanonicalKey { .. }
                ),
                "{err}"
            );
        }
    }

    #[test]
    fn mixed_order_key_is_weak() {
        // A real key plus a torsion point: a valid curve point, not in the prime-order subgroup.
        let k = key(3);
        let a = CompressedEdwardsY(k.account().0).decompress().unwrap();
        let mixed = a + EIGHT_TORSION[1];
        let account = AccountId(mixed.compress().to_bytes());
        assert!(matches!(PublicKey::from_account(&account), Err(SignatureError::WeakKey { .. })));
    }

    #[test]
    fn non_canonical_s_is_malformed() {
        let k = key(1);
        let mut sig = k.sign(Domain::Tx, "c", b"m");
        sig.0[63] |= 0xf0; // s >= l
        assert!(matches!(
            verify(Domain::Tx, "c", &k.account(), b"m", &sig),
            Err(SignatureError::MalformedSignature { .. })
        ));
    }

    /// A signature whose R carries a 2-torsion component, with s computed honestly for that R.
    /// A cofactorless batch equation that trusted R's subgroup could accept it for some random
    /// coefficients; ed25519-dalek 3.0's batch rejects it as well, and our encoding check refuses it
    /// before any batch runs, whatever the batch library does.
    fn mixed_order_r_signature(
        k: &Keypair,
        domain: Domain,
        chain_id: &str,
        message: &[u8],
    ) -> Signature {
        use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
        use sha2::{Digest, Sha512};
        let expanded = Sha512::digest(k.secret_bytes());
        let mut lower = [0u8; 32];
        lower.copy_from_slice(&expanded[..32]);
        let a = Scalar::from_bytes_mod_order(curve25519_dalek::scalar::clamp_integer(lower));
        let r = Scalar::from(123_456_789u64);
        let big_r = r * ED25519_BASEPOINT_POINT + EIGHT_TORSION[4];
        let r_bytes = big_r.compress().to_bytes();
        let msg = signing_bytes(domain, chain_id, message);
        let mut h = Sha512::new();
        h.update(r_bytes);
        h.update(k.account().0);
        h.update(&msg);
        let mut wide = [0u8; 64];
        wide.copy_from_slice(&h.finalize());
        let s = r + Scalar::from_bytes_mod_order_wide(&wide) * a;
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&r_bytes);
        out[32..].copy_from_slice(s.as_bytes());
        Signature(out)
    }

    #[test]
    fn mixed_order_r_is_rejected_by_single_and_batch() {
        let k = key(4);
        let sig = mixed_order_r_signature(&k, Domain::Tx, "c", b"m");
        assert!(verify(Domain::Tx, "c", &k.account(), b"m", &sig).is_err());
        let account = k.account();
        let item =
            BatchItem { domain: Domain::Tx, signer: &account, message: b"m", signature: &sig };
        for _ in 0..16 {
            // Random batch coefficients differ per call; every call must refuse.
            assert!(verify_batch("c", &[item, item]).is_err());
        }
    }

    #[test]
    fn batch_agrees_with_single_and_names_the_culprit() {
        let keys: Vec<Keypair> = (1..=5).map(key).collect();
        let accounts: Vec<AccountId> = keys.iter().map(Keypair::account).collect();
        let msgs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10]).collect();
        let mut sigs: Vec<Signature> =
            keys.iter().zip(&msgs).map(|(k, m)| k.sign(Domain::Tx, "c", m)).collect();
        let items = |sigs: &[Signature]| -> Vec<(usize, Signature)> {
            sigs.iter().copied().enumerate().collect()
        };
        let run = |sigs: &[Signature]| {
            let owned = items(sigs);
            let batch: Vec<BatchItem<'_>> = owned
                .iter()
                .map(|(i, s)| BatchItem {
                    domain: Domain::Tx,
                    signer: &accounts[*i],
                    message: &msgs[*i],
                    signature: s,
                })
                .collect();
            verify_batch("c", &batch).map_err(|(i, _)| i)
        };
        assert_eq!(run(&sigs), Ok(()));
        sigs[3].0[0] ^= 1;
        assert_eq!(run(&sigs), Err(3));
    }

    #[test]
    fn key_file_round_trip_and_checks() {
        let k = key(9);
        let text = k.to_key_file();
        assert_eq!(Keypair::from_key_file(&text).unwrap().account(), k.account());
        let tampered = text.replace(&k.account().to_hex(), &key(8).account().to_hex());
        assert!(matches!(Keypair::from_key_file(&tampered), Err(KeyError::AccountMismatch { .. })));
        assert!(matches!(Keypair::from_key_file("{}"), Err(KeyError::Malformed(_))));
    }
}
