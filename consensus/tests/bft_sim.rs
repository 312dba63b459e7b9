//! The deterministic simulator over every fault mix, the mutants it must catch, and the
//! write-ahead log's reason to exist.

use consensus::bft::Mutant;
use consensus::bft::sim::{FaultMix, MIXES, SimConfig, SimOutcome, ViolationKind, run};

/// Seeds per fault mix in the normal test run.
const SEEDS_PER_MIX: u64 = 50;

fn mix(name: &str) -> &'static FaultMix {
    FaultMix::named(name).expect("a known mix")
}

/// Runs `seeds` of a mix and returns the outcomes that broke an invariant, each printed with
/// the command that replays it.
fn violations(configs: impl Iterator<Item = SimConfig>) -> Vec<SimOutcome> {
    let mut bad = Vec::new();
    for config in configs {
        let outcome = run(&config);
        if let Some(v) = &outcome.violation {
            eprintln!(
                "seed {} ({}): {v}\n  replay: {}",
                config.seed,
                config.mix.name,
                config.replay_command()
            );
            bad.push(outcome);
        }
    }
    bad
}

fn check_mix(name: &str) {
    let m = mix(name);
    let mut heights = 0;
    let mut bad = Vec::new();
    for seed in 0..SEEDS_PER_MIX {
        let outcome = run(&SimConfig::new(seed, m));
        heights += outcome.heights;
        if let Some(v) = &outcome.violation {
            eprintln!("seed {seed}: {v}\n  replay: {}", outcome.config.replay_command());
            bad.push(seed);
        } else {
            assert!(outcome.heights >= 20, "seed {seed} ended with {} heights", outcome.heights);
        }
    }
    assert!(bad.is_empty(), "mix {name}: violations at seeds {bad:?}");
    assert!(heights >= 20 * SEEDS_PER_MIX);
}

/// One test per fault mix, named after it, and a test that these are every mix, in order.
macro_rules! mix_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_mix(stringify!($name));
            }
        )*

        #[test]
        fn every_mix_is_tested() {
            let tested = [$(stringify!($name)),*];
            assert_eq!(MIXES.iter().map(|m| m.name).collect::<Vec<_>>(), tested);
        }
    };
}

mix_tests!(
    calm, lossy, partition, crash, byzantine, lagging, chaos, split, amnesia, swap, flood, disk,
    mayhem,
);

#[test]
fn a_run_replays_exactly() {
    let config = SimConfig::new(7, mix("chaos"));
    let (a, b) = (run(&config), run(&config));
    assert_eq!(
        (a.heights, a.steps, a.time_ms, a.evidence),
        (b.heights, b.steps, b.time_ms, b.evidence)
    );
}

#[test]
fn without_the_wal_a_restart_double_signs_and_with_it_never() {
    let m = mix("crash");
    let no_wal = violations(
        (0..SEEDS_PER_MIX).map(|seed| SimConfig { wal_enabled: false, ..SimConfig::new(seed, m) }),
    );
    assert!(
        no_wal.iter().any(|o| o.violation.as_ref().unwrap().kind == ViolationKind::DoubleSign),
        "no double-sign without the WAL"
    );
    let double_signing: Vec<u64> = no_wal
        .iter()
        .filter(|o| o.violation.as_ref().unwrap().kind == ViolationKind::DoubleSign)
        .map(|o| o.config.seed)
        .collect();
    let with_wal = violations(double_signing.iter().map(|&seed| SimConfig::new(seed, m)));
    assert!(with_wal.is_empty(), "the same seeds with the WAL broke an invariant");
}

/// Runs seeds of a mix with a mutant until the first violation of `kind` (at most `seeds_max`
/// seeds) and prints it with its replay command; fails if the mutant survives.
fn assert_caught(mutant: Mutant, mix_name: &str, seeds_max: u64, kind: ViolationKind) {
    let m = mix(mix_name);
    let outcome = (0..seeds_max)
        .map(|seed| run(&SimConfig { mutant: Some(mutant), ..SimConfig::new(seed, m) }))
        .find(|o| o.violation.as_ref().is_some_and(|v| v.kind == kind))
        .unwrap_or_else(|| panic!("mutant {mutant:?} survived {seeds_max} seeds of {mix_name}"));
    let v = outcome.violation.as_ref().expect("a violation");
    eprintln!(
        "mutant {mutant:?} caught at seed {} ({mix_name}): {v}\n  replay: {}",
        outcome.config.seed,
        outcome.config.replay_command()
    );
}

/// One test per mutant: `name: Mutant, "mix", seeds_max, ViolationKind;` as [`assert_caught`]
/// takes them.
macro_rules! mutant_tests {
    ($(
        $(#[$doc:meta])* $name:ident: $mutant:ident, $mix:literal, $seeds:literal, $kind:ident;
    )*) => {
        $(
            $(#[$doc])*
            #[test]
            fn $name() {
                assert_caught(Mutant::$mutant, $mix, $seeds, ViolationKind::$kind);
            }
        )*
    };
}

mutant_tests! {
    /// The lock check sees the first prevote against a lock, before any block is committed.
    mutant_without_locking_is_caught: NoLocking, "split", 150, LockViolated;
    /// The lock is read from the validator's own signed precommits, which a restart cannot
    /// forget.
    mutant_forgetting_the_lock_on_restart_is_caught:
        ForgetLockOnRestart, "amnesia", 150, LockViolated;
    /// Certificates of a floor "quorum" are also refused by validators that catch up, which
    /// stalls them (a liveness violation, found first); a safety violation comes a few seeds on:
    /// two blocks with a floor "quorum" of prevotes each, one against a validator's lock.
    mutant_with_floor_quorum_is_caught: QuorumFloor, "amnesia", 150, LockViolated;
    /// Validators locked on a block that nobody proposes again: no round can decide.
    mutant_ignoring_the_valid_round_is_caught: IgnoreValidRound, "lossy", 150, NoProgress;
    /// A proposer that sends a validated block's header with a junk body (or a relay that swaps
    /// an honest proposal's body) makes the old engine lock on and decide the junk.
    mutant_without_the_body_check_decides_swapped_bodies: NoBodyCheck, "swap", 50, InvalidCommit;
    /// One validator's far-future vote made the old engine skip the block interval and ask for
    /// commits nobody has.
    mutant_trusting_any_height_syncs_for_a_flooder: TrustAnyHeight, "flood", 50, UntrustedSync;
    mutant_with_an_unbounded_next_height_buffer_outgrows_its_bound:
        UnboundedFuture, "flood", 50, MemoryBound;
    mutant_taking_proposals_from_anyone_prevotes_a_forgery:
        AnyProposer, "flood", 50, ForeignPrevote;
    mutant_trusting_a_forged_valid_round_prevotes_against_its_lock:
        TrustValidRound, "flood", 50, LockViolated;
    mutant_reading_past_wal_corruption_is_caught:
        IgnoreWalCorruption, "disk", 50, CorruptWalOpened;
}

#[test]
fn fifty_validators_run_clean() {
    let m = mix("swap");
    let configs = (0..1).map(|seed| SimConfig {
        validators: (50, 50),
        heights_target: 3,
        ..SimConfig::new(seed, m)
    });
    assert!(violations(configs).is_empty());
}
