//! The `main` of a test target that starts networks of node processes (`harness = false`).
//!
//! A test in one package cannot find another package's binary, so such a target's executable is
//! its own node: started with `argv[0]` = `node` it runs `node::cli::main`, exactly as the
//! `testnet` launcher does with its own executable. That needs its own `main`, so the target has
//! no libtest harness; [`main`] dispatches on `argv[0]` and otherwise runs the selected scenarios
//! one after another (never two networks at once on the two cores), each in a fresh temporary
//! directory that is kept, and named, when the scenario fails after writing into it.
//!
//! It reads libtest's arguments: positional filters (a name containing one runs; `--exact`: equal
//! to one), `--skip FILTER`, `--list`, `--ignored` (only the ignored scenarios) and
//! `--include-ignored`; other flags are accepted and change nothing. As with `#[ignore]`, an
//! ignored scenario that is not asked for is reported as `ignored`, never as passed.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use testnet::network::is_node_mode;

/// One scenario of a test target.
pub struct Scenario {
    /// Its name, as filters and `--list` see it.
    pub name: &'static str,
    /// Runs it; the directory it gets does not exist yet, in a fresh temporary directory.
    pub run: fn(&Path) -> anyhow::Result<()>,
    /// Why it runs only with `--ignored` or `--include-ignored` (as `#[ignore = "…"]` says), or
    /// `None` if it always runs.
    pub ignore: Option<&'static str>,
}

/// The whole `main` of a multi-call test target: node mode when `argv[0]` is `node`, else the
/// scenarios that the arguments select, with libtest's report; a temporary directory of a
/// scenario starts with `tmp_prefix`.
pub fn main(scenarios: &'static [Scenario], tmp_prefix: &str) -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if is_node_mode(Path::new(&argv0)) {
        return node::cli::main();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let selected = select(scenarios, &args);
    if args.iter().any(|a| a == "--list") {
        for scenario in &selected {
            println!("{}: test", scenario.name);
        }
        return ExitCode::SUCCESS;
    }
    let run_ignored = args.iter().any(|a| a == "--ignored" || a == "--include-ignored");
    let plural = if selected.len() == 1 { "" } else { "s" };
    println!("\nrunning {} test{plural}", selected.len());
    let mut failed = Vec::new();
    let mut ignored = 0;
    for scenario in &selected {
        if let Some(reason) = scenario.ignore.filter(|_| !run_ignored) {
            println!("test {} ... ignored, {reason}", scenario.name);
            ignored += 1;
            continue;
        }
        println!("test {} ...", scenario.name);
        let started = Instant::now();
        let result = tempfile::Builder::new()
            .prefix(tmp_prefix)
            .tempdir()
            .context("creating a temporary directory")
            .and_then(|tmp| {
                let dir = tmp.path().join("net");
                let result = (scenario.run)(&dir);
                if result.is_err() && dir.exists() {
                    let kept = tmp.keep();
                    eprintln!("files and logs kept in {}", kept.display());
                }
                result
            });
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok(()) => println!("test {} ... ok ({secs:.1} s)", scenario.name),
            Err(err) => {
                eprintln!("error: {err:#}");
                println!("test {} ... FAILED ({secs:.1} s)", scenario.name);
                failed.push(scenario.name);
            }
        }
    }
    let passed = selected.len() - failed.len() - ignored;
    if failed.is_empty() {
        println!("\ntest result: ok. {passed} passed; 0 failed; {ignored} ignored\n");
        ExitCode::SUCCESS
    } else {
        println!("\nfailures:\n    {}", failed.join("\n    "));
        println!(
            "\ntest result: FAILED. {passed} passed; {} failed; {ignored} ignored\n",
            failed.len()
        );
        ExitCode::FAILURE
    }
}

/// The scenarios that libtest-style arguments select: names containing a positional filter (or
/// equal to it with `--exact`), all without filters, less those matching a `--skip`; with
/// `--ignored`, only the ignored ones. Other flags are accepted and change nothing.
fn select(scenarios: &'static [Scenario], args: &[String]) -> Vec<&'static Scenario> {
    const WITH_VALUE: &[&str] =
        &["--test-threads", "--format", "--color", "--logfile", "--skip", "-Z", "--shuffle-seed"];
    let mut filters = Vec::new();
    let mut skips = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--skip" {
            skips.extend(iter.next().cloned());
        } else if WITH_VALUE.contains(&arg.as_str()) {
            iter.next();
        } else if !arg.starts_with('-') {
            filters.push(arg.clone());
        }
    }
    let only_ignored = args.iter().any(|a| a == "--ignored");
    let exact = args.iter().any(|a| a == "--exact");
    let matches = |name: &str, pattern: &String| {
        if exact { name == pattern } else { name.contains(pattern.as_str()) }
    };
    scenarios
        .iter()
        .filter(|s| !only_ignored || s.ignore.is_some())
        .filter(|s| filters.is_empty() || filters.iter().any(|f| matches(s.name, f)))
        .filter(|s| !skips.iter().any(|f| matches(s.name, f)))
        .collect()
}
