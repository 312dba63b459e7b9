//! Bring your own model: a model trained outside the project enters a running network.
//!
//! The model here is fitted by a few lines of plain Rust (softmax regression by full-batch
//! gradient descent on the task's public training file, preprocessed as `task.json` says) and
//! written with the `safetensors` crate directly, in the documented MLP layout: nothing of the
//! trainer crate's models, training loop or artifact encoder is used, exactly as someone training
//! with numpy or PyTorch would. It is handed to a trainer node started with `--submit-dir` through
//! `node submit`, which joins, commits, reveals and serves it; the validators score it and it is
//! paid as the champion over a recipe trainer's weaker model.
//!
//! The executable is also the nodes' (see [`crucible_tests::suite`]): `cargo test -p
//! crucible-tests --test byo`.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Output};

use anyhow::{Context, bail, ensure};
use consensus::task::{Preprocessing, TaskKind, TaskSpec};
use consensus::verdict::Verdict;
use crucible_tests::net::{self, FINALIZE_TIMEOUT, check_report, with_logs};
use crucible_tests::suite::{self, Scenario};
use testnet::client::{Stage, stage};
use testnet::network::Network;
use testnet::plan::TaskSource;

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "a_model_trained_outside_is_submitted_scored_and_paid_as_champion",
        run: outside_model,
        ignore: None,
    },
    Scenario {
        name: "a_trainer_with_private_clean_data_beats_the_same_recipe_without_it",
        run: private_data,
        ignore: None,
    },
    Scenario {
        name: "the_python_example_trains_a_model_that_enters_a_running_network",
        run: python_example,
        ignore: Some("needs python3 with numpy and safetensors (`.ci/run` installs them)"),
    },
];

fn main() -> ExitCode {
    suite::main(SCENARIOS, "crucible-byo-")
}

/// Join window of the test's task, in blocks: long enough for `node submit` to hand the model
/// over after the task appears, on a loaded machine (the demo's is a handful of blocks).
const JOIN_WINDOW_BLOCKS: u64 = 48;

/// The plan's trainer-0 trains `large-plain` (a 512-wide MLP on every noisy row); the last
/// trainer's node takes its models from a submit folder. The test fits a softmax regression
/// outside the project, checks that `node submit` refuses a malformed model before anything is
/// spent, submits the good one, and follows the task to its end: the outside model is revealed
/// with the file's hash, scored by every validator, and paid the whole trainer share as champion.
/// Afterwards `node submit` refuses a finished task, and a node that is not running.
fn outside_model(dir: &Path) -> anyhow::Result<()> {
    let mut net = net::plan(dir, 4, 2, 23)?;
    let outside = net.plan.nodes.len() - 1;
    net.plan.tasks[0].spec.windows.join = JOIN_WINDOW_BLOCKS;
    with_logs(&mut net, |net| {
        let hand_in = start_with_hand_in(net, outside)?;

        let spec = net.plan.tasks[0].spec.clone();
        let train = std::fs::read(net.layout.task_dirs[0].join("train.csv"))?;
        let (weight, bias) = softmax_regression(&spec, &train)?;
        let (features, classes) = shape(&spec)?;
        let good = dir.join("outside.safetensors");
        write_mlp(&good, &[(&weight, [classes, features]), (&bias, [classes, 1])])?;
        // One input too few: the architecture check refuses it.
        let bad = dir.join("outside-bad.safetensors");
        let short: Vec<f32> = weight.chunks(features).flat_map(|r| &r[1..]).copied().collect();
        write_mlp(&bad, &[(&short, [classes, features - 1]), (&bias, [classes, 1])])?;

        let task_id = net.post_task()?;
        let me = net.plan.nodes[outside].account();
        let wrong = submit(net, task_id, &bad, &hand_in, false)?;
        let wrong =
            refused(&wrong, "wrong_architecture", "did not refuse a model of the wrong shape")?;
        ensure!(
            !hand_in.submit_dir.join(format!("task-{task_id}.safetensors")).exists(),
            "a refused model reached the submit folder"
        );
        let lead = net.clients[0].clone();
        ensure!(
            lead.task(task_id)?.submissions.iter().all(|s| s.trainer != me),
            "the outside trainer joined with a refused model"
        );
        println!("  a model of the wrong shape was refused: {}", wrong.trim());

        let handed = submit(net, task_id, &good, &hand_in, true)?;
        print!("  node submit: {}", succeeded(&handed, "node submit")?);

        let (report, last) = net.finalized(task_id, FINALIZE_TIMEOUT)?;
        check_report(net, &report)?;
        let view = lead.task(task_id)?;
        let ours = view
            .submissions
            .iter()
            .find(|s| s.trainer == me)
            .context("the outside trainer has no submission")?;
        ensure!(stage(ours) == Stage::Revealed, "the outside model was not revealed: {ours:?}");
        for t in &report.trainers {
            let who = if t.account == me { "outside softmax regression" } else { "large-plain" };
            println!(
                "  {who}: consensus {:?}, effective {} ppm, params {:?}, payout {}",
                t.consensus, t.effective_ppm, t.params, t.payout.0
            );
        }
        let entry = report.trainers.iter().find(|t| t.account == me).context("not in report")?;
        ensure!(
            matches!(entry.consensus, Some(Verdict::Scored { .. })),
            "the outside model was not scored: {entry:?}"
        );
        ensure!(
            report.champion.as_ref().map(|c| c.trainer) == Some(me) && entry.payout.0 > 0,
            "the outside model is not the paid champion: {:?}, payout {}",
            report.champion,
            entry.payout.0
        );
        let file_hash = consensus::hash::sha256(&std::fs::read(&good)?);
        ensure!(
            report.champion.as_ref().map(|c| c.model_hash) == Some(file_hash),
            "the champion {:?} is not the submitted file {file_hash}",
            report.champion
        );
        net.agreement(last + 1)?;

        let late = submit(net, task_id, &good, &hand_in, false)?;
        let late = refused(&late, "cannot enter task", "accepted a finished task")?;
        println!("  a finished task was refused: {}", late.trim());
        net.kill(outside);
        let down = submit(net, task_id, &good, &hand_in, false)?;
        let down = refused(&down, "not running", "to a stopped node")?;
        println!("  a stopped node was refused: {}", down.trim());
        Ok(())
    })
}

/// The guide's path end to end: once the task is on chain, its spec is read from the node's
/// `GET /tasks/{id}/spec` into `task.json`, `examples/python/crucible_train.py` trains on it and
/// the public `train.csv` with numpy, and `node submit --wait` hands the model in; the task
/// finalizes with the model revealed and scored (`Scored`, not rejected), its bond returned.
fn python_example(dir: &Path) -> anyhow::Result<()> {
    let mut net = net::plan(dir, 4, 2, 29)?;
    let outside = net.plan.nodes.len() - 1;
    // Python trains after the task appears: give it a join window of about 30 s.
    net.plan.tasks[0].spec.windows.join = 120;
    with_logs(&mut net, |net| {
        let hand_in = start_with_hand_in(net, outside)?;
        let task_id = net.post_task()?;
        let spec = ureq::get(&format!("{}/tasks/{task_id}/spec", hand_in.url))
            .call()
            .context("GET /tasks/{id}/spec")?
            .body_mut()
            .read_to_string()?;
        let task_json = dir.join("task.json");
        std::fs::write(&task_json, spec)?;
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/crucible_train.py");
        let model = dir.join("numpy.safetensors");
        let trained = std::process::Command::new("python3")
            .arg(script)
            .arg("--task")
            .arg(&task_json)
            .arg("--train")
            .arg(net.layout.task_dirs[0].join("train.csv"))
            .arg("--out")
            .arg(&model)
            .args(["--hidden", "32", "--epochs", "30"])
            .output()
            .context("running python3 examples/python/crucible_train.py")?;
        print!("  python: {}", succeeded(&trained, "the Python example")?);
        let handed = submit(net, task_id, &model, &hand_in, true)?;
        ensure!(handed.status.success(), "node submit failed: {}", stderr(&handed));
        let (report, _) = net.finalized(task_id, FINALIZE_TIMEOUT)?;
        check_report(net, &report)?;
        let me = net.plan.nodes[outside].account();
        let entry = report.trainers.iter().find(|t| t.account == me).context("not in report")?;
        println!(
            "  numpy model: consensus {:?}, effective {} ppm, payout {}",
            entry.consensus, entry.effective_ppm, entry.payout.0
        );
        ensure!(
            matches!(entry.consensus, Some(Verdict::Scored { .. })) && entry.forfeit.is_none(),
            "the numpy model was not scored: {entry:?}"
        );
        Ok(())
    })
}

/// Private data through the real network: every fourth row of the digits file is held back as a
/// trainer's private clean slice, the task is made of the rest (30 % of its public labels wrong,
/// held-out part clean). Two trainers run the same recipe, seed included; trainer-1's names the
/// slice in `[data] extra`. The validators score both on the clean held-out part, and the one
/// with the private rows scores higher and is the champion.
fn private_data(dir: &Path) -> anyhow::Result<()> {
    let text = std::str::from_utf8(testnet::plan::DIGITS)?;
    let mut lines = text.lines();
    let header = lines.next().context("digits.csv has a header")?;
    let (mut public, mut private) = (format!("{header}\n"), format!("{header}\n"));
    for (i, line) in lines.filter(|l| !l.trim().is_empty()).enumerate() {
        let out = if i % 4 == 0 { &mut private } else { &mut public };
        out.push_str(line);
        out.push('\n');
    }
    let task = TaskSource { bytes: public.into_bytes(), ..TaskSource::digits() };
    let mut net = net::plan_with(dir, 4, 2, 31, task)?;
    let trainers: Vec<usize> = net
        .plan
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.role == testnet::plan::Role::Trainer)
        .map(|(i, _)| i)
        .collect();
    let [plain, with_private] = trainers[..] else { bail!("two trainers planned") };
    let mine = net.layout.dir.join("mine.csv");
    std::fs::write(&mine, private)?;
    let recipe = "seed = 5\n[model]\nhidden = [64]\n[train]\nepochs = 40\n";
    let plain_recipe = net.layout.dir.join("same.recipe.toml");
    std::fs::write(&plain_recipe, recipe)?;
    let private_recipe = net.layout.dir.join("same-private.recipe.toml");
    std::fs::write(
        &private_recipe,
        format!("{recipe}[data]\nextra = [{:?}]\n", mine.display().to_string()),
    )?;
    with_logs(&mut net, |net| {
        net.start_all_but(&trainers)?;
        for (i, recipe) in [(plain, &plain_recipe), (with_private, &private_recipe)] {
            net.start_with(i, &["--recipe".into(), recipe.display().to_string()])?;
            net.wait_ready(i)?;
        }
        let task_id = net.post_task()?;
        let (report, last) = net.finalized(task_id, FINALIZE_TIMEOUT)?;
        check_report(net, &report)?;
        let score = |i: usize| -> anyhow::Result<u32> {
            let account = net.plan.nodes[i].account();
            let entry = report.trainers.iter().find(|t| t.account == account).context("report")?;
            match entry.consensus {
                Some(Verdict::Scored { score_ppm }) => Ok(score_ppm.0),
                other => bail!("{} was not scored: {other:?}", net.plan.nodes[i].name),
            }
        };
        let (without, with) = (score(plain)?, score(with_private)?);
        println!(
            "  same recipe, held-out accuracy: public file only {without} ppm, with 450 private \
             clean rows {with} ppm"
        );
        ensure!(with > without, "private clean data did not help: {with} vs {without} ppm");
        let champion = report.champion.as_ref().map(|c| c.trainer);
        ensure!(
            champion == Some(net.plan.nodes[with_private].account()),
            "the trainer with private data is not the champion: {champion:?}"
        );
        net.agreement(last + 1)?;
        Ok(())
    })
}

/// The trainer that hands in models trained outside the project, through its submit folder.
struct HandIn {
    /// Its submit folder.
    submit_dir: PathBuf,
    /// Its data dir (its key signs `node submit`'s transactions).
    data_dir: PathBuf,
    /// Its node's API.
    url: String,
}

/// Starts every plan node, trainer `outside` with a submit folder instead of its recipe, and
/// waits until they answer.
fn start_with_hand_in(net: &mut Network, outside: usize) -> anyhow::Result<HandIn> {
    let submit_dir = net.layout.dir.join("submit");
    let data_dir = net.layout.dir.join(&net.plan.nodes[outside].name);
    let url = net.layout.urls[outside].clone();
    net.start_all_but(&[outside])?;
    net.start_with(outside, &["--submit-dir".into(), submit_dir.display().to_string()])?;
    net.wait_ready(outside)?;
    Ok(HandIn { submit_dir, data_dir, url })
}

/// Runs `node submit` (this executable as `node`) for `hand_in`'s node.
fn submit(
    net: &Network,
    task: u64,
    model: &Path,
    hand_in: &HandIn,
    wait: bool,
) -> anyhow::Result<Output> {
    let mut command = net.node_command();
    let url = hand_in.url.as_str();
    command.args(["submit", "--task", &task.to_string(), "--node", url, "--model"]);
    command.arg(model).arg("--data-dir").arg(&hand_in.data_dir);
    if wait {
        command.arg("--wait");
    }
    command.output().context("running node submit")
}

/// `output`'s stdout, if `what` (the command that gave it) succeeded; else an error with all it
/// printed.
fn succeeded(output: &Output, what: &str) -> anyhow::Result<String> {
    ensure!(output.status.success(), "{what} failed: {}{}", stdout(output), stderr(output));
    Ok(stdout(output))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// What `node submit` said on stderr, when it failed saying `reason`; an error saying
/// `node submit {what}` otherwise.
fn refused(output: &Output, reason: &str, what: &str) -> anyhow::Result<String> {
    let said = stderr(output);
    ensure!(!output.status.success() && said.contains(reason), "node submit {what}: {said}");
    Ok(said)
}

/// The task's feature and class counts.
fn shape(spec: &TaskSpec) -> anyhow::Result<(usize, usize)> {
    match spec.kind {
        TaskKind::Classification { features, classes } => Ok((features as usize, classes as usize)),
        TaskKind::CharLm { .. } => bail!("a classification task was expected"),
    }
}

/// Fits a softmax regression to the CSV `train` (header line, then features and an integer label
/// per row), standardized with the spec's mean and std: 300 epochs of full-batch gradient descent
/// with a small L2 penalty. Returns the weight (`[classes, features]`, row-major) and the bias.
fn softmax_regression(spec: &TaskSpec, train: &[u8]) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
    let (features, classes) = shape(spec)?;
    let Preprocessing::Standardize { mean, std } = &spec.preprocessing else {
        bail!("a standardized task was expected");
    };
    let text = std::str::from_utf8(train)?;
    let mut rows: Vec<(Vec<f64>, usize)> = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cells: Vec<f64> =
            line.split(',').map(|c| c.trim().parse::<f64>()).collect::<Result<_, _>>()?;
        ensure!(cells.len() == features + 1, "a row of {} cells", cells.len());
        let x =
            (0..features).map(|j| (cells[j] - f64::from(mean[j])) / f64::from(std[j])).collect();
        rows.push((x, cells[features] as usize));
    }
    let (epochs, lr, l2) = (300, 0.5, 1e-3);
    let mut w = vec![0.0f64; classes * features];
    let mut b = vec![0.0f64; classes];
    let n = rows.len() as f64;
    for _ in 0..epochs {
        let mut gw = vec![0.0f64; classes * features];
        let mut gb = vec![0.0f64; classes];
        for (x, y) in &rows {
            let logits: Vec<f64> = (0..classes)
                .map(|c| b[c] + (0..features).map(|j| w[c * features + j] * x[j]).sum::<f64>())
                .collect();
            let top = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let exp: Vec<f64> = logits.iter().map(|z| (z - top).exp()).collect();
            let total: f64 = exp.iter().sum();
            for c in 0..classes {
                let g = exp[c] / total - f64::from(u8::from(c == *y));
                gb[c] += g;
                for j in 0..features {
                    gw[c * features + j] += g * x[j];
                }
            }
        }
        for (wi, gi) in w.iter_mut().zip(&gw) {
            *wi -= lr * (gi / n + l2 * *wi);
        }
        for (bi, gi) in b.iter_mut().zip(&gb) {
            *bi -= lr * gi / n;
        }
    }
    Ok((w.iter().map(|&v| v as f32).collect(), b.iter().map(|&v| v as f32).collect()))
}

/// Writes one linear layer (`layers.0.weight`, `layers.0.bias`) as F32 safetensors with the
/// `safetensors` crate, as Python's `safetensors.numpy.save_file` would.
fn write_mlp(path: &Path, tensors: &[(&[f32], [usize; 2]); 2]) -> anyhow::Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(v, _)| v.iter().flat_map(|f| f.to_le_bytes()).collect()).collect();
    let weight = TensorView::new(Dtype::F32, tensors[0].1.to_vec(), &bytes[0])?;
    let bias = TensorView::new(Dtype::F32, vec![tensors[1].1[0]], &bytes[1])?;
    let views = vec![("layers.0.weight".to_string(), weight), ("layers.0.bias".to_string(), bias)];
    let file = safetensors::serialize(views, None)?;
    std::fs::write(path, file).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
