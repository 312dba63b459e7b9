//! The explorer page on a live network, in headless Chromium (issue 8's browser test).
//!
//! The one scenario starts 2 validators and 2 trainers (this test executable is their node, as in
//! `e2e`; see [`crucible_tests::suite`]), posts the demo task and waits for it to finalize. Then
//! headless Chromium loads validator-0's page `/` twice, with virtual time so the script's first
//! fetches and redraws finish: once dumping the DOM, once saving a screenshot to
//! `tests/artifacts/explorer.png` (ignored by git). The DOM must show the task finalized at its
//! finalization height, its leaderboard must rank the champion of `GET /tasks/{id}` first, the
//! champion section must name it, and no section may show an error; in neither run may the page
//! write to the console (Chromium's `:CONSOLE` log lines: script errors, uncaught exceptions and
//! rejections). A failed fetch is caught by the script and drawn as an error, which the DOM check
//! sees.
//!
//! Chromium is a system package (Debian's `chromium`, or the one `$CHROMIUM` names), so the
//! scenario is ignored like an `#[ignore]` test: `cargo test -p crucible-tests --test explorer --
//! --ignored` runs it (`.ci/run` installs Chromium and does), and it fails at once, saying how to
//! get one, when Chromium is missing.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use crucible_tests::net::{Net, check_report, with_logs};
use crucible_tests::suite::{self, Scenario};

const SCENARIOS: &[Scenario] = &[Scenario {
    name: "chromium_shows_the_winner_and_the_finalized_height_of_a_live_network",
    run: chromium_shows_the_winner,
    ignore: Some("needs Debian's chromium: .ci/run installs it and runs this test with --ignored"),
}];

/// Longest one Chromium run may take (start, load, virtual time, dump or screenshot) on a loaded
/// two-core machine.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);
/// Virtual time the page gets before Chromium dumps or shoots it, in ms: the first refresh and
/// two more polls.
const VIRTUAL_TIME_MS: u32 = 5_000;
/// The seed of the network's keys, split, noise and recipes.
const SEED: u64 = 8;

fn main() -> ExitCode {
    suite::main(SCENARIOS, "crucible-explorer-")
}

/// The scenario (see the module's doc).
fn chromium_shows_the_winner(dir: &Path) -> anyhow::Result<()> {
    let chromium = chromium()?;
    let mut net = Net::plan(dir, 2, 2, SEED)?;
    with_logs(&mut net, |net| {
        net.start_all()?;
        let task_id = net.post_task()?;
        let (report, height) = net.finalized(task_id)?;
        check_report(net, &report)?;
        let champion = report
            .champion
            .as_ref()
            .with_context(|| format!("task {task_id} finalized without a champion: {report:?}"))?
            .trainer
            .to_string();
        let url = format!("{}/", net.clients[0].base());
        let scratch = net.layout.dir.join("chromium");
        let (dom, dom_log) = run_chromium(&chromium, &scratch.join("dom"), &["--dump-dom"], &url)?;
        // The screenshot comes before the checks, so a failed run leaves one too.
        let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
        std::fs::create_dir_all(&artifacts)
            .with_context(|| format!("creating {}", artifacts.display()))?;
        let shot = artifacts.join("explorer.png");
        if shot.exists() {
            std::fs::remove_file(&shot).with_context(|| format!("removing {}", shot.display()))?;
        }
        let args = [
            "--hide-scrollbars",
            "--window-size=1400,1800",
            &format!("--screenshot={}", shot.display()),
        ];
        let (_, shot_log) = run_chromium(&chromium, &scratch.join("screenshot"), &args, &url)?;
        let png = std::fs::read(&shot)
            .with_context(|| format!("Chromium saved no screenshot at {}", shot.display()))?;
        ensure!(png.starts_with(b"\x89PNG"), "{} is not a PNG", shot.display());

        let dom_file = scratch.join("dom").join("stdout");
        check_page(&dom, task_id, height, &champion)
            .with_context(|| format!("the page's DOM is in {}", dom_file.display()))?;
        no_console(&dom_log, "loading the page")?;
        no_console(&shot_log, "loading it for the screenshot")?;
        println!(
            "  task {task_id} finalized at height {height}; {url} ranks the champion {} first; \
             screenshot in {}",
            &champion[..8],
            shot.display()
        );
        Ok(())
    })
}

/// The headless browser: `$CHROMIUM`, or Debian's `chromium` at `/usr/bin/chromium`.
fn chromium() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("CHROMIUM").map_or("/usr/bin/chromium".into(), PathBuf::from);
    ensure!(
        path.is_file(),
        "the explorer's browser test needs headless Chromium at {} (apt-get install chromium, as \
         .ci/run does, or set CHROMIUM to its path)",
        path.display()
    );
    Ok(path)
}

/// Runs headless Chromium on `url` with `args`, a fresh profile and its output in `scratch`;
/// returns its stdout and its log (stderr). Virtual time lets the page's fetches and redraws
/// finish before it dumps or shoots the page; the process is killed if it outlives
/// [`CHROMIUM_TIMEOUT`].
fn run_chromium(
    chromium: &Path,
    scratch: &Path,
    args: &[&str],
    url: &str,
) -> anyhow::Result<(String, String)> {
    std::fs::create_dir_all(scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let (out, err) = (scratch.join("stdout"), scratch.join("stderr"));
    let mut child = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        .args(["--disable-component-update", "--disable-sync", "--no-first-run"])
        .args(["--enable-logging=stderr", "--v=0"])
        .arg(format!("--virtual-time-budget={VIRTUAL_TIME_MS}"))
        .arg(format!("--user-data-dir={}", scratch.join("profile").display()))
        .args(args)
        .arg(url)
        .stdout(File::create(&out).with_context(|| format!("creating {}", out.display()))?)
        .stderr(File::create(&err).with_context(|| format!("creating {}", err.display()))?)
        .spawn()
        .with_context(|| format!("starting {}", chromium.display()))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for Chromium")? {
            break status;
        }
        if started.elapsed() > CHROMIUM_TIMEOUT {
            // Best effort: the error below is what matters.
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "Chromium did not finish loading {url} within {} s; its log is {}",
                CHROMIUM_TIMEOUT.as_secs(),
                err.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    };
    let log = read(&err)?;
    ensure!(status.success(), "Chromium failed on {url} ({status}):\n{log}");
    Ok((read(&out)?, log))
}

/// Checks the rendered page: task `task_id` is finalized at `height`, its leaderboard's first row
/// is `champion` with rank 1, the champion section names `champion`, and nothing shows an error.
fn check_page(dom: &str, task_id: u64, height: u64, champion: &str) -> anyhow::Result<()> {
    let task = between(dom, &format!("<div class=\"task\" id=\"task-{task_id}\">"), "</div>")
        .with_context(|| format!("the page shows no task {task_id}"))?;
    let finalized = format!(
        "<span class=\"pill finalized\">finalized</span> at height <b \
         class=\"finalized-height\">{height}</b>"
    );
    ensure!(
        task.contains(&finalized),
        "task {task_id} is not shown finalized at height {height}: {task}"
    );
    let first_row = between(task, "<tbody><tr>", "</tr>")
        .with_context(|| format!("task {task_id} shows no leaderboard: {task}"))?;
    let winner =
        format!("<td class=\"num\">1</td><td><a class=\"account\" href=\"#account={champion}\"");
    ensure!(
        first_row.starts_with(&winner),
        "the leaderboard's first row is not the champion {champion} ranked 1: {first_row}"
    );
    let section = between(dom, "<dd id=\"champion-trainer\">", "</dd>")
        .context("the page shows no champion trainer")?;
    let link = format!("<a class=\"account\" href=\"#account={champion}\"");
    ensure!(
        section.starts_with(&link),
        "the champion section names another trainer than {champion}: {section}"
    );
    if let Some(error) = between(dom, "class=\"error\">", "</") {
        bail!("the page shows an error: {error}");
    }
    Ok(())
}

/// The text of `haystack` between the first `start` and the next `end` after it.
fn between<'a>(haystack: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let (_, rest) = haystack.split_once(start)?;
    rest.split_once(end).map(|(inside, _)| inside)
}

/// Fails with every console line of a Chromium log (`:CONSOLE(` or `:CONSOLE:` by version).
fn no_console(log: &str, doing: &str) -> anyhow::Result<()> {
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    ensure!(
        console.is_empty(),
        "the page wrote to the console while {doing}:\n{}",
        console.join("\n")
    );
    Ok(())
}
