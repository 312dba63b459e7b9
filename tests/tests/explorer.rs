//! The explorer page on a live network, in headless Chromium (issue 8's browser test).
//!
//! The one scenario starts 2 validators and 2 trainers (this test executable is their node, as in
//! `e2e`; see [`crucible_tests::suite`]), posts the demo task and waits for it to finalize. Then
//! it drives headless Chromium through ChromeDriver ([`crucible_tests::webdriver`]): it opens
//! validator-0's page `/`, waits until the page has drawn the finalized task, saves a screenshot
//! to `tests/artifacts/explorer.png` (ignored by git), and checks the DOM: the task is shown
//! finalized at its finalization height, its leaderboard ranks the champion of `GET /tasks/{id}`
//! first, the champion section names it, and no section shows an error (the script draws a
//! failed fetch as one). The browser's console must stay empty: ChromeDriver records every
//! console message (script errors, uncaught exceptions, failed loads), and any one fails the test;
//! a probe page first checks that a `console.error` is indeed recorded.
//!
//! Chromium and ChromeDriver are system packages (Debian's `chromium` and `chromium-driver`, or
//! the ones `$CHROMIUM` and `$CHROMEDRIVER` name), so the scenario is ignored like an `#[ignore]`
//! test: `cargo test -p crucible-tests --test explorer -- --ignored` runs it (`.ci/run` installs
//! both and does), and it fails at once, saying how to get them, when one is missing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use crucible_tests::net::{self, FINALIZE_TIMEOUT, check_report, with_logs};
use crucible_tests::suite::{self, Scenario};
use crucible_tests::webdriver::{ChromeDriver, Session};

const SCENARIOS: &[Scenario] = &[Scenario {
    name: "chromium_shows_the_winner_and_the_finalized_height_of_a_live_network",
    run: chromium_shows_the_winner,
    ignore: Some(
        "needs Debian's chromium and chromium-driver: .ci/run installs them and runs this test \
         with --ignored",
    ),
}];

/// Longest wait for the page to draw the finalized task after it is opened.
const RENDER_TIMEOUT: Duration = Duration::from_secs(30);
/// The browser window, in CSS pixels.
const WINDOW: (u32, u32) = (1400, 1800);
/// The seed of the network's keys, split, noise and recipes.
const SEED: u64 = 8;

fn main() -> ExitCode {
    suite::main(SCENARIOS, "crucible-explorer-")
}

/// The scenario (see the module's doc).
fn chromium_shows_the_winner(dir: &Path) -> anyhow::Result<()> {
    let chromium = system_binary("CHROMIUM", "/usr/bin/chromium", "chromium")?;
    let chromedriver = system_binary("CHROMEDRIVER", "/usr/bin/chromedriver", "chromium-driver")?;
    let mut net = net::plan(dir, 2, 2, SEED)?;
    with_logs(&mut net, |net| {
        net.start_all()?;
        let task_id = net.post_task()?;
        let (report, height) = net.finalized(task_id, FINALIZE_TIMEOUT)?;
        check_report(net, &report)?;
        let champion = report
            .champion
            .as_ref()
            .with_context(|| format!("task {task_id} finalized without a champion: {report:?}"))?
            .trainer
            .to_string();
        let url = format!("{}/", net.clients[0].base());
        let driver_log = net.layout.dir.join("chromedriver.log");
        let driver = ChromeDriver::start(&chromedriver, &chromium, &driver_log)?;
        let session = driver.session(WINDOW.0, WINDOW.1)?;
        console_is_recorded(&session)?;
        session.open(&url)?;
        let dom = rendered(&session, task_id)?;
        // The screenshot comes before the checks, so a failed run leaves one too.
        let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
        std::fs::create_dir_all(&artifacts)
            .with_context(|| format!("creating {}", artifacts.display()))?;
        let shot = artifacts.join("explorer.png");
        let png = session.screenshot()?;
        ensure!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        std::fs::write(&shot, &png).with_context(|| format!("writing {}", shot.display()))?;
        let dom_file = net.layout.dir.join("explorer.html");
        std::fs::write(&dom_file, &dom)
            .with_context(|| format!("writing {}", dom_file.display()))?;

        check_page(&dom, task_id, height, &champion)
            .with_context(|| format!("the page's DOM is in {}", dom_file.display()))?;
        let console = session.console()?;
        ensure!(
            console.is_empty(),
            "the page wrote to the browser console:\n{}",
            console.iter().map(|m| m.to_string()).collect::<Vec<_>>().join("\n")
        );
        println!(
            "  task {task_id} finalized at height {height}; {url} ranks the champion {} first; \
             screenshot in {}",
            &champion[..8],
            shot.display()
        );
        Ok(())
    })
}

/// Checks that the session records console messages (so an empty console later means the page
/// wrote nothing), and leaves the record empty.
fn console_is_recorded(session: &Session<'_>) -> anyhow::Result<()> {
    session.open("data:text/html,<script>console.error('crucible-probe')</script>")?;
    let console = session.console()?;
    ensure!(
        console.iter().any(|m| m["message"].as_str().is_some_and(|t| t.contains("crucible-probe"))),
        "the browser's console is not recorded (a probe page's console.error did not show): \
         {console:?}"
    );
    Ok(())
}

/// A system binary: `$VAR` when set, else `default`; fails naming the Debian package to install.
fn system_binary(var: &str, default: &str, package: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(var).map_or(default.into(), PathBuf::from);
    ensure!(
        path.is_file(),
        "the explorer's browser test needs {} (apt-get install {package}, as .ci/run does, or \
         set {var} to its path)",
        path.display()
    );
    Ok(path)
}

/// The page's DOM once it shows task `task_id` finalized (the script draws after its first
/// fetches); fails after [`RENDER_TIMEOUT`] with the last DOM seen.
fn rendered(session: &Session<'_>, task_id: u64) -> anyhow::Result<String> {
    let marker = format!("<div class=\"task\" id=\"task-{task_id}\">");
    let started = Instant::now();
    loop {
        let dom = session.source()?;
        let drawn = dom.split_once(&marker).is_some_and(|(_, task)| {
            task.contains("class=\"finalized-height\"") && dom.contains("id=\"champion-trainer\"")
        });
        if drawn {
            return Ok(dom);
        }
        if started.elapsed() > RENDER_TIMEOUT {
            bail!(
                "the page did not show task {task_id} finalized within {} s; it showed:\n{dom}",
                RENDER_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
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
