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
//! Rule 1 is checked when a key is decoded ([`PublicKey::from_account`]; a [`Verifier`] remembers
//! each key it checked).
//! Rules 2 and 3 are checked together, without `verify_strict`'s own decompression of `R`: with
//! `k = SHA-512(R || A || signed bytes)`, the point `[s]B − [k]A` lies in the prime-order subgroup
//! (both `B` and the checked `A` do), so a signature is accepted exactly when `s` is canonical and
//! `R`'s bytes are that point's encoding and not the identity's. Such an `R` is canonical,
//! torsion-free and not of small order, and `verify_strict` accepts it; conversely whatever
//! `verify_strict` accepts with rule 2 has this `R` (the tests check both directions on
//! adversarial signatures). [`Verifier::verify_batch`] does the same for many signatures,
//! compressing all the expected points with one field inversion; it is the same rule, not a
//! probabilistic batch equation, so no batch can accept what a single check refuses.
//!
//! # Signatures verified once
//!
//! A transaction is checked when it arrives on gossip, when the mempool admits it, when every
//! block is re-checked against the mempool, and when its block executes; a precommit is checked
//! as a vote and again inside the commit certificate. A [`Verifier`] remembers the digest of every
//! `(signed bytes, signer, signature)` it accepted, so each is verified by curve arithmetic once
//! per verifier; a node shares one between its ledger, mempool, network and consensus engine.
//! A memo only saves time, never changes an answer: only accepted triples are stored, and a hit
//! needs a sha256 collision to be wrong.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha512};

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
/// the identity (rule 1 of the module docs), and returns the point.
fn strong_point(bytes: &[u8; 32]) -> Result<EdwardsPoint, &'static str> {
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
    Ok(point)
}

/// A public key that passed the acceptance rule's key checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey {
    account: AccountId,
    /// `−A`, the form the verification equation uses.
    minus_a: EdwardsPoint,
}

/// Keys remembered as already checked, per generation of [`Recent`], with their decoded points.
/// The torsion check costs about as much as a signature verification and decoding a point a
/// fifth of one, and accounts sign again and again: a network with 10^5 active accounts must find
/// every one of them here, or each transaction pays again. About 200 bytes a key, so at most
/// ~55 MiB. The memo only saves time, it never changes an answer (only keys that passed every
/// check are stored).
const CHECKED_KEYS_PER_GENERATION: usize = 1 << 17;

/// A map of the most recently inserted entries, bounded in two generations: when the current one
/// holds `per_generation` entries it becomes the previous one (dropping the one before), so the
/// map remembers between one and two generations of entries, and what is used again survives
/// (a hit in the previous generation is carried into the current one).
struct Recent<K, V> {
    per_generation: usize,
    current: HashMap<K, V>,
    previous: HashMap<K, V>,
}

impl<K: std::hash::Hash + Eq + Copy, V: Copy> Recent<K, V> {
    fn new(per_generation: usize) -> Recent<K, V> {
        Recent { per_generation, current: HashMap::new(), previous: HashMap::new() }
    }

    /// The value remembered for `key` (carrying it into the current generation if needed).
    fn get(&mut self, key: &K) -> Option<V> {
        if let Some(value) = self.current.get(key) {
            return Some(*value);
        }
        let found = self.previous.get(key).copied();
        if let Some(value) = found {
            self.insert(*key, value);
        }
        found
    }

    fn insert(&mut self, key: K, value: V) {
        if self.current.len() >= self.per_generation {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, value);
    }
}

impl PublicKey {
    /// Decodes and checks an account's key: canonical, not small order, torsion-free.
    pub fn from_account(account: &AccountId) -> Result<PublicKey, SignatureError> {
        let point = strong_point(account.as_bytes()).map_err(|reason| match reason {
            "non-canonical point encoding" | "not a curve point" => {
                SignatureError::NonCanonicalKey { account: *account }
            }
            _ => SignatureError::WeakKey { account: *account },
        })?;
        Ok(PublicKey { account: *account, minus_a: -point })
    }

    /// The account this key is.
    pub fn account(&self) -> AccountId {
        self.account
    }
}

/// Accepted signatures remembered per generation of [`Recent`] (a few MiB at most).
const VERIFIED_PER_GENERATION: usize = 1 << 16;

/// Checks signatures with the acceptance rule, remembering the keys it checked and the
/// signatures it accepted (see the module docs). Share one (`Arc<Verifier>`) between whoever
/// checks the same signatures; [`Verifier::new`] costs nothing until it is used.
pub struct Verifier {
    /// Checked keys, with their `−A`.
    keys: Mutex<Recent<AccountId, EdwardsPoint>>,
    /// Digests of accepted `(signed bytes, signer, signature)` triples.
    verified: Mutex<Recent<[u8; 32], ()>>,
}

impl Default for Verifier {
    fn default() -> Verifier {
        Verifier::new()
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

/// The memo's key for a signature over `signed` bytes.
fn verified_digest(signed: &[u8], signer: &AccountId, signature: &Signature) -> [u8; 32] {
    crate::hash::tagged_hash(
        b"crucible/verified-signature/v1",
        &[signed, signer.as_bytes(), &signature.0],
    )
    .0
}

/// The point `[s]B − [k]A` that the signature's `R` must encode, where
/// `k = SHA-512(R || A || signed) mod ℓ`; refuses a non-canonical `s`.
fn expected_r(
    key: &PublicKey,
    signed: &[u8],
    signature: &Signature,
) -> Result<EdwardsPoint, SignatureError> {
    let s: [u8; 32] = signature.0[32..].try_into().expect("64-byte signature");
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s))
        .ok_or(SignatureError::MalformedSignature { reason: "s is not a canonical scalar" })?;
    let mut hasher = Sha512::new();
    hasher.update(&signature.0[..32]);
    hasher.update(key.account.as_bytes());
    hasher.update(signed);
    let k = Scalar::from_bytes_mod_order_wide(&hasher.finalize().into());
    Ok(EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &key.minus_a, &s))
}

/// One item for [`Verifier::verify_batch`].
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

impl Verifier {
    /// A verifier that remembers nothing yet.
    pub fn new() -> Verifier {
        Verifier {
            keys: Mutex::new(Recent::new(CHECKED_KEYS_PER_GENERATION)),
            verified: Mutex::new(Recent::new(VERIFIED_PER_GENERATION)),
        }
    }

    /// Checks that `account` is a key the acceptance rule allows (rule 1 of the module docs),
    /// remembering it: a signature by a key checked here costs no second key check. The node
    /// checks its genesis keys through its verifier, so the first tx of a genesis account is not
    /// charged a subgroup check again.
    pub fn check_key(&self, account: &AccountId) -> Result<(), SignatureError> {
        self.key(account).map(|_| ())
    }

    /// [`PublicKey::from_account`], remembered per key.
    fn key(&self, account: &AccountId) -> Result<PublicKey, SignatureError> {
        // A poisoned lock only means another thread panicked mid-insert of a checked key; the map
        // still holds only checked keys.
        let memo = || self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(minus_a) = memo().get(account) {
            return Ok(PublicKey { account: *account, minus_a });
        }
        let key = PublicKey::from_account(account)?;
        memo().insert(*account, key.minus_a);
        Ok(key)
    }

    /// Verifies one signature with the acceptance rule (a triple accepted before is answered
    /// from the memo; see the module docs).
    pub fn verify(
        &self,
        domain: Domain,
        chain_id: &str,
        signer: &AccountId,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), SignatureError> {
        let item = BatchItem { domain, signer, message, signature };
        self.verify_batch(chain_id, std::slice::from_ref(&item)).map_err(|(_, error)| error)
    }

    /// Verifies many signatures of one chain with the acceptance rule; accepts exactly what
    /// [`Verifier::verify`] accepts for each, and shares its memo: triples accepted before cost a
    /// hash, and the ones checked here are remembered, so the same txs met again (in a block,
    /// from another peer) are not checked twice. The expected `R` points are compressed together
    /// (one field inversion for the whole batch instead of one per signature).
    ///
    /// Returns `Err((index, error))` for the first item that fails.
    pub fn verify_batch(
        &self,
        chain_id: &str,
        items: &[BatchItem<'_>],
    ) -> Result<(), (usize, SignatureError)> {
        let memo = || self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        let mut fresh = Vec::new();
        {
            let mut memo = memo();
            for (index, item) in items.iter().enumerate() {
                let signed = signing_bytes(item.domain, chain_id, item.message);
                let digest = verified_digest(&signed, item.signer, item.signature);
                if memo.get(&digest).is_none() {
                    fresh.push((index, signed, digest));
                }
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let mut points = Vec::with_capacity(fresh.len());
        let mut first_error = None;
        for (index, signed, _) in &fresh {
            let item = &items[*index];
            match self.key(item.signer).and_then(|key| expected_r(&key, signed, item.signature)) {
                Ok(point) => points.push(point),
                Err(error) => {
                    first_error = Some((*index, error));
                    break;
                }
            }
        }
        // Items after a refused one are not needed: only the first failure is reported.
        let checked = &fresh[..points.len()];
        let compressed = EdwardsPoint::compress_batch_alloc(&points);
        for ((index, _, _), r) in checked.iter().zip(&compressed) {
            let item = &items[*index];
            if !accepts(r, item.signature) {
                return Err((*index, SignatureError::Invalid { account: *item.signer }));
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        let mut memo = memo();
        for (_, _, digest) in fresh {
            memo.insert(digest, ());
        }
        Ok(())
    }
}

/// The identity point's encoding: `y = 1`, sign bit 0.
const IDENTITY_ENCODING: [u8; 32] = {
    let mut bytes = [0u8; 32];
    bytes[0] = 1;
    bytes
};

/// Whether a signature's `R` bytes are `expected` (the encoding of `[s]B − [k]A`) and not the
/// identity. `[s]B − [k]A` lies in the prime-order subgroup (both `B` and the checked `A` do), so
/// this is exactly ed25519-dalek's `verify_strict` with rule 2: the `R` that matches is canonical
/// (it is an encoding the library produced), torsion-free, and of small order only if it is the
/// identity.
fn accepts(expected: &CompressedEdwardsY, signature: &Signature) -> bool {
    expected.0 == signature.0[..32] && expected.0 != IDENTITY_ENCODING
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
    /// A fresh key from the operating system's random source (feature `os-rng`).
    #[cfg(feature = "os-rng")]
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
    fn genesis_keys_checked_through_a_verifier_are_remembered_and_a_bad_one_is_refused() {
        let genesis = crate::testing::genesis(&[10, 10], 2);
        let v = Verifier::new();
        genesis.validate_with(&v).unwrap();
        let mut keys = v.keys.lock().unwrap();
        for account in genesis.balances.iter().map(|b| &b.account) {
            assert!(keys.get(account).is_some(), "{account} was not remembered");
        }
        drop(keys);

        // A key with a torsion component fails the genesis and is not remembered.
        let mut bad = genesis.clone();
        let a = CompressedEdwardsY(key(9).account().0).decompress().unwrap();
        let mixed = AccountId((a + EIGHT_TORSION[1]).compress().to_bytes());
        bad.balances[0].account = mixed;
        let v = Verifier::new();
        assert!(bad.validate_with(&v).is_err());
        assert!(v.keys.lock().unwrap().get(&mixed).is_none());
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let v = Verifier::new();
        let k = key(1);
        let sig = k.sign(Domain::Tx, "c", b"hello");
        v.verify(Domain::Tx, "c", &k.account(), b"hello", &sig).unwrap();
    }

    #[test]
    fn a_signature_is_bound_to_domain_chain_and_message() {
        let v = Verifier::new();
        let k = key(1);
        let sig = k.sign(Domain::Prevote, "c", b"m");
        let a = k.account();
        assert!(v.verify(Domain::Precommit, "c", &a, b"m", &sig).is_err());
        assert!(v.verify(Domain::Prevote, "other", &a, b"m", &sig).is_err());
        assert!(v.verify(Domain::Prevote, "c", &a, b"n", &sig).is_err());
        assert!(v.verify(Domain::Prevote, "c", &key(2).account(), b"m", &sig).is_err());
    }

    #[test]
    fn an_accepted_signature_remembered_changes_no_other_answer() {
        let v = Verifier::new();
        let k = key(3);
        let a = k.account();
        let sig = k.sign(Domain::Prevote, "memo", b"m");
        // Twice: the second pass answers the accepted triple from the memo, and the refused ones
        // (never remembered) from the arithmetic again.
        for _ in 0..2 {
            v.verify(Domain::Prevote, "memo", &a, b"m", &sig).unwrap();
            assert!(v.verify(Domain::Precommit, "memo", &a, b"m", &sig).is_err());
            assert!(v.verify(Domain::Prevote, "memo", &a, b"n", &sig).is_err());
            assert!(v.verify(Domain::Prevote, "memo", &key(4).account(), b"m", &sig).is_err());
            let mut flipped = sig;
            flipped.0[5] ^= 1;
            assert!(v.verify(Domain::Prevote, "memo", &a, b"m", &flipped).is_err());
        }
    }

    #[test]
    fn verifiers_share_no_memo() {
        let (one, other) = (Verifier::new(), Verifier::new());
        let k = key(5);
        let sig = k.sign(Domain::Tx, "c", b"m");
        one.verify(Domain::Tx, "c", &k.account(), b"m", &sig).unwrap();
        let digest = verified_digest(&signing_bytes(Domain::Tx, "c", b"m"), &k.account(), &sig);
        // (signature remembered, key remembered)
        let memo = |v: &Verifier| {
            let signature = v.verified.lock().unwrap().get(&digest).is_some();
            (signature, v.keys.lock().unwrap().get(&k.account()).is_some())
        };
        assert_eq!(memo(&one), (true, true));
        assert_eq!(memo(&other), (false, false), "another verifier remembers nothing of it");
    }

    #[test]
    fn recent_values_hold_two_generations_and_carry_what_is_used() {
        let mut recent = Recent::new(4);
        for i in 0..6u32 {
            recent.insert(i, i * 10);
        }
        // Generations {0,1,2,3} and {4,5}: everything is still remembered.
        assert!(
            (0..6).all(|i| recent.current.contains_key(&i) || recent.previous.contains_key(&i))
        );
        // 0 is used again: carried into the current generation, it outlives 1, 2 and 3.
        assert_eq!(recent.get(&0), Some(0));
        for i in 6..9 {
            recent.insert(i, i * 10);
        }
        assert_eq!(recent.get(&0), Some(0), "a value in use survives the generation turning");
        assert_eq!(recent.get(&1), None, "an unused value of the dropped generation is forgotten");
        assert_eq!(recent.get(&8), Some(80));
        assert!(recent.current.len() <= 4 && recent.previous.len() <= 4);
    }

    /// The rule as first written: rule 2's checks on `R` and `s`, then ed25519-dalek's
    /// `verify_strict` (rule 1 holds for the keys used).
    fn reference_rule(signer: &Keypair, signed: &[u8], sig: &Signature) -> bool {
        let r: [u8; 32] = sig.0[..32].try_into().unwrap();
        let s: [u8; 32] = sig.0[32..].try_into().unwrap();
        let r_ok = CompressedEdwardsY(r).decompress().is_some_and(|p| {
            p.compress().to_bytes() == r && !p.is_small_order() && p.is_torsion_free()
        });
        let s_ok = Option::<Scalar>::from(Scalar::from_canonical_bytes(s)).is_some();
        let key = ed25519_dalek::VerifyingKey::from_bytes(&signer.account().0).unwrap();
        r_ok && s_ok
            && key.verify_strict(signed, &ed25519_dalek::Signature::from_bytes(&sig.0)).is_ok()
    }

    /// A signature with the given `R` and `s = r + k·a` honestly computed for it, where `R` need
    /// not be `[r]B`: what an attacker who holds the key can make.
    fn signature_with_r(k: &Keypair, signed: &[u8], r: Scalar, big_r: [u8; 32]) -> Signature {
        let expanded = Sha512::digest(k.secret_bytes());
        let mut lower = [0u8; 32];
        lower.copy_from_slice(&expanded[..32]);
        let a = Scalar::from_bytes_mod_order(curve25519_dalek::scalar::clamp_integer(lower));
        let mut h = Sha512::new();
        h.update(big_r);
        h.update(k.account().0);
        h.update(signed);
        let s = r + Scalar::from_bytes_mod_order_wide(&h.finalize().into()) * a;
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&big_r);
        out[32..].copy_from_slice(s.as_bytes());
        Signature(out)
    }

    #[test]
    fn the_rule_agrees_with_verify_strict_on_adversarial_signatures() {
        let v = Verifier::new();
        use curve25519_dalek::constants::ED25519_BASEPOINT_POINT as B;
        let k = key(6);
        let signed = signing_bytes(Domain::Tx, "c", b"m");
        let r = Scalar::from(987_654_321u64);
        let mut cases = vec![k.sign(Domain::Tx, "c", b"m")];
        // R with each torsion component, s honest for that R (mixed order, and the pure torsion
        // points themselves with r = 0).
        for t in EIGHT_TORSION.iter() {
            cases.push(signature_with_r(&k, &signed, r, (r * B + t).compress().to_bytes()));
            cases.push(signature_with_r(&k, &signed, Scalar::ZERO, t.compress().to_bytes()));
        }
        // Non-canonical encodings of R: y + p for small y, and a flipped sign bit on x = 0.
        let mut y_plus_p = [0xffu8; 32];
        y_plus_p[0] = 0xee; // 2^255 − 19 + 1 = p + 1: y = 1 written non-canonically
        y_plus_p[31] = 0x7f;
        cases.push(signature_with_r(&k, &signed, Scalar::ZERO, y_plus_p));
        let mut neg_zero = IDENTITY_ENCODING;
        neg_zero[31] |= 0x80;
        cases.push(signature_with_r(&k, &signed, Scalar::ZERO, neg_zero));
        // s + ℓ (a non-canonical s that reduces to the right one), and bit flips everywhere.
        let honest = cases[0];
        let mut s_plus_l = honest;
        let s = Scalar::from_canonical_bytes(honest.0[32..].try_into().unwrap()).unwrap();
        let l_bytes = (-Scalar::ONE).to_bytes(); // ℓ − 1
        let mut carry = 1u16;
        for (i, (s_byte, l_byte)) in s.as_bytes().iter().zip(&l_bytes).enumerate() {
            let sum = u16::from(*s_byte) + u16::from(*l_byte) + carry;
            s_plus_l.0[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        cases.push(s_plus_l);
        for byte in [0, 17, 31, 32, 50, 63] {
            let mut flipped = honest;
            flipped.0[byte] ^= 0x04;
            cases.push(flipped);
        }
        let mut accepted = 0;
        for (i, sig) in cases.iter().enumerate() {
            let expected = reference_rule(&k, &signed, sig);
            let single = v.verify(Domain::Tx, "c", &k.account(), b"m", sig).is_ok();
            let account = k.account();
            let item =
                BatchItem { domain: Domain::Tx, signer: &account, message: b"m", signature: sig };
            let honest_item = BatchItem {
                domain: Domain::Tx,
                signer: &account,
                message: b"m",
                signature: &honest,
            };
            let batch = v.verify_batch("c", &[honest_item, item, honest_item]).is_ok();
            assert_eq!(single, expected, "case {i}: single path disagrees with verify_strict");
            assert_eq!(batch, expected, "case {i}: batch path disagrees with verify_strict");
            accepted += usize::from(expected);
        }
        // The honest signature and the honest R with the identity torsion point (the same bytes).
        assert_eq!(accepted, 2, "only the honest signature is accepted");
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
        let v = Verifier::new();
        let k = key(1);
        let mut sig = k.sign(Domain::Tx, "c", b"m");
        sig.0[63] |= 0xf0; // s >= l
        assert!(matches!(
            v.verify(Domain::Tx, "c", &k.account(), b"m", &sig),
            Err(SignatureError::MalformedSignature { .. })
        ));
    }

    #[test]
    fn batch_agrees_with_single_and_names_the_culprit() {
        let v = Verifier::new();
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
            v.verify_batch("c", &batch).map_err(|(i, _)| i)
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
