// Crucible explorer: polls the node's JSON API (docs/api.md) and redraws the page.
// Plain JavaScript, no build step, no libraries. Every request goes through `api(path)` with a
// relative path, so the page works from any node and `node/tests/http_api.rs` can check that each
// path it reads exists.
"use strict";

const POLL_MS = 1500;
const RECENT_BLOCKS = 12;
const RECENT_TASKS = 20;
const ACCOUNT_TASKS = 20;
const COLORS = ["#2f6fdb", "#d9480f", "#2b8a3e", "#862e9c", "#c2255c", "#0b7285", "#e67700",
  "#5c940d", "#364fc7", "#a61e4d"];

// Finalized tasks never change: their details are fetched once.
const finalizedTasks = new Map();
// Validator names by account, from /validators.
let names = new Map();
let selectedAccount = accountFromHash();

// ---------------------------------------------------------------- helpers

async function api(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) {
    throw new Error(body && body.error ? body.error : "HTTP " + response.status);
  }
  return body;
}

function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;",
  })[c]);
}

function short(hex) {
  return hex ? hex.slice(0, 8) + "…" : "";
}

function label(account) {
  return names.get(account) || short(account);
}

function accountLink(account) {
  if (!account) return "<span class=\"muted\">—</span>";
  return "<a class=\"account\" href=\"#account=" + esc(account) + "\" title=\"" + esc(account) +
    "\">" + esc(label(account)) + "</a>";
}

function ppm(value) {
  return value === null || value === undefined ? "—" : (value / 10000).toFixed(2) + " %";
}

function amount(value) {
  return value === null || value === undefined ? "—" : esc(value);
}

function ago(timeMs) {
  const seconds = Math.max(0, Math.round((Date.now() - timeMs) / 1000));
  if (seconds < 120) return seconds + " s ago";
  if (seconds < 7200) return Math.round(seconds / 60) + " min ago";
  return new Date(timeMs).toISOString().slice(11, 19);
}

function utc(timeMs) {
  return new Date(timeMs).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function verdictText(v) {
  if (!v) return "<span class=\"muted\">—</span>";
  if (v.verdict === "scored") return ppm(v.score_ppm);
  if (v.verdict === "rejected") {
    const why = v.reason_text || v.reason || "";
    return "<span class=\"bad\" title=\"" + esc(why) + "\">rejected: " +
      esc(v.reason || "") + "</span>";
  }
  return "<span class=\"warn\">" + esc(v.verdict) + "</span>";
}

function table(headers, rows) {
  const head = headers.map((h) => {
    const num = h.startsWith("#");
    return "<th" + (num ? " class=\"num\"" : "") + ">" + esc(num ? h.slice(1) : h) + "</th>";
  }).join("");
  const body = rows.map((cells) => "<tr>" + cells.map((c, i) =>
    "<td" + (headers[i].startsWith("#") ? " class=\"num\"" : "") + ">" + c + "</td>").join("") +
    "</tr>").join("");
  return "<table><thead><tr>" + head + "</tr></thead><tbody>" + body + "</tbody></table>";
}

function setHtml(id, html) {
  const el = document.getElementById(id);
  if (el.innerHTML !== html) el.innerHTML = html;
}

function accountFromHash() {
  const match = /^#account=([0-9a-f]{64})$/.exec(location.hash);
  return match ? match[1] : null;
}

// ---------------------------------------------------------------- sections

function renderStatus(status) {
  setHtml("status", esc(status.chain_id) + " · height <b id=\"height\">" + status.height +
    "</b> · " + esc(status.role) + " " + accountLink(status.account) + " · " + status.peers +
    " peers");
  setHtml("chain", "<dl class=\"kv\">" +
    "<dt>chain</dt><dd>" + esc(status.chain_id) + "</dd>" +
    "<dt>height</dt><dd>" + status.height + "</dd>" +
    "<dt>tip</dt><dd class=\"mono\">" + esc(status.block_hash) + "</dd>" +
    "<dt>tip time</dt><dd>" + utc(status.time_ms) + " (" + ago(status.time_ms) + ")</dd>" +
    "<dt>state root</dt><dd class=\"mono\">" + esc(status.state_root) + "</dd>" +
    "<dt>genesis</dt><dd class=\"mono\">" + esc(status.genesis_hash) + "</dd>" +
    "<dt>this node</dt><dd>" + esc(status.role) + " " + accountLink(status.account) +
    " <span class=\"mono muted\">" + esc(status.peer_id) + "</span></dd>" +
    "<dt>reachability</dt><dd>" + esc(status.reachability) + "</dd>" +
    "<dt>listening</dt><dd class=\"mono\">" +
      (status.listen_addrs.map(esc).join("<br>") || "<span class=\"muted\">—</span>") + "</dd>" +
    "</dl>");
}

function renderBlocks(blocks) {
  if (blocks.length === 0) return setHtml("blocks", "<p class=\"muted\">no blocks yet</p>");
  const rows = blocks.slice().reverse().map((b) => [
    String(b.height), "<span class=\"mono\">" + esc(short(b.hash)) + "</span>",
    accountLink(b.proposer), String(b.tx_count), ago(b.time_ms),
  ]);
  setHtml("blocks", table(["#height", "hash", "proposer", "#txs", "time"], rows));
}

function renderValidators(validators) {
  const rows = validators.map((v) => [
    accountLink(v.account), amount(v.stake), amount(v.power),
    v.in_set ? "yes" : "<span class=\"muted\">no</span>",
    "<span class=\"votes\">" + v.last_votes.map((vote) =>
      "<span class=\"" + (vote.signed ? "signed" : "") + "\" title=\"height " + vote.height +
      ", round " + vote.round + (vote.signed ? ": signed" : ": missing") + "\"></span>")
      .join("") + "</span>" + liveVote(v.live_vote),
  ]);
  setHtml("validators", table(["validator", "#stake", "#power", "in set", "last votes"], rows));
}

// The validator's latest vote heard for the height in progress, under its certified votes.
function liveVote(vote) {
  if (vote === null) return "";
  const target = vote.block === null ? "nil" : "block " + vote.block;
  const title = vote.kind + " for " + target + " at height " + vote.height + ", round " +
    vote.round;
  return "<br><small class=\"muted\" title=\"" + esc(title) + "\">now: " + esc(vote.kind) +
    " " + vote.height + "/" + vote.round + (vote.block === null ? " nil" : "") + "</small>";
}

function renderPeers(peers) {
  if (peers === null) return setHtml("peers", "<p class=\"muted\">network not answering</p>");
  if (peers.length === 0) return setHtml("peers", "<p class=\"muted\">no peers</p>");
  const rows = peers.map((p) => [
    accountLink(p.account),
    "<span class=\"mono muted\" title=\"" + esc(p.peer_id) + "\">…" + esc(p.peer_id.slice(-10)) +
      "</span>",
    p.score === null ? "—" : p.score.toFixed(3),
    esc(p.mesh_topics.join(", ")),
    p.connections.map((c) => "<span class=\"" + (c.relayed ? "relayed" : "direct") +
      "\" title=\"" + esc(c.address) + "\">" + (c.relayed ? "relayed" : "direct") + " " +
      (c.outbound ? "out" : "in") + "</span>").join("<br>"),
    blobBytes(p.blob_bytes_received),
  ]);
  setHtml("peers", table(["peer", "peer id", "#score", "mesh", "connection", "blobs in"], rows));
}

// The blob bytes a peer served this node, and how many of them came through a relay.
function blobBytes(b) {
  const total = b.direct + b.relayed;
  if (total === 0) return "<span class=\"muted\">—</span>";
  const kb = (n) => (n / 1024).toFixed(1) + " KiB";
  return esc(kb(total)) + (b.relayed ? " <span class=\"relayed\">(" + esc(kb(b.relayed)) +
    " relayed)</span>" : "");
}

function deadlinesText(task) {
  const d = task.deadlines;
  return ["join", "commit", "key", "reveal", "score_commit", "score"].map((k) =>
    esc(k) + " " + d[k]).join(" · ");
}

function leaderboard(task) {
  const validators = task.verdicts.map((v) => v.validator);
  const report = task.report;
  const byTrainer = new Map(report ? report.trainers.map((t) => [t.account, t]) : []);
  const consensus = new Map(task.consensus.map((c) => [c.subject, c]));
  const verdictOf = (validator, subject) => {
    const entry = task.verdicts.find((v) => v.validator === validator);
    if (!entry) return verdictText(null);
    if (!entry.verdicts) return "<span class=\"muted\">committed</span>";
    return verdictText(entry.verdicts.find((x) => x.subject === subject) || null);
  };
  const subs = task.submissions.slice();
  subs.sort((a, b) => {
    const ra = byTrainer.has(a.trainer) ? byTrainer.get(a.trainer).rank : null;
    const rb = byTrainer.has(b.trainer) ? byTrainer.get(b.trainer).rank : null;
    return (ra === null ? 1e9 : ra) - (rb === null ? 1e9 : rb);
  });
  const rows = subs.map((s) => {
    const r = byTrainer.get(s.trainer);
    let state = s.reveal ? "revealed" : s.commitment ? "committed" : "joined";
    if (r && r.forfeit) state = "<span class=\"bad\" title=\"" + esc(r.forfeit.text) + "\">" +
      "bond " + esc(r.bond_forfeit) + " forfeited: " + esc(r.forfeit.reason) + "</span>";
    const champion = report && report.champion && report.champion.trainer === s.trainer;
    return [
      r && r.rank !== null ? String(r.rank) : "—",
      accountLink(s.trainer) + (champion ? " <span class=\"pill finalized\">champion</span>" : ""),
      state,
      s.reveal ? amount(s.reveal.params) : "—",
    ].concat(validators.map((v) => verdictOf(v, s.trainer))).concat([
      verdictText(consensus.get(s.trainer)),
      r ? ppm(r.effective_ppm) : "—",
      r ? amount(r.payout) : "—",
    ]);
  });
  const headers = ["#rank", "trainer", "state", "#params"]
    .concat(validators.map((v) => "#" + label(v)))
    .concat(["#consensus", "#effective", "#payout"]);
  return rows.length ? table(headers, rows) : "<p class=\"muted\">no trainers joined</p>";
}

function sealedText(task) {
  const a = task.attestation;
  const key = task.key_revealed_at !== null && task.key_revealed_at !== undefined
    ? "key revealed at height " + esc(task.key_revealed_at)
    : "key not revealed";
  return "sealed held-out: attested stake " + esc(a.attested_stake) + " (" +
    esc(a.needed_stake) + " needed)" + (a.quorum ? "" : " <span class=\"bad\">short</span>") +
    " · " + key;
}

// The height a finalized task ended at: a cancelled task at its join deadline, one whose key was
// withheld at its key deadline, every other at its score deadline.
function finalizedAt(task) {
  const outcome = task.report && task.report.outcome;
  if (outcome === "cancelled") return task.deadlines.join;
  if (outcome === "key_withheld") return task.deadlines.key;
  return task.score_deadline;
}

function renderTask(task) {
  const outcome = task.outcome
    ? "<span class=\"pill " + esc(task.outcome) + "\">" + esc(task.outcome) +
      "</span> at height <b class=\"finalized-height\">" + finalizedAt(task) + "</b>"
    : "<span class=\"pill\">" + esc(task.phase) + "</span> finalizes at height " +
      task.score_deadline;
  let summary = "";
  if (task.report && (task.report.outcome === "cancelled" || task.report.outcome === "key_withheld")) {
    const r = task.report;
    const why = r.outcome === "cancelled"
      ? "cancelled at the join deadline: attested stake " + esc(r.attested_stake) + " of " +
        esc(r.total_stake) + " (more than 2/3 needed) · cancellation fee " + esc(r.cancellation_fee) +
        " burned"
      : "the creator withheld the held-out key: escrow burned, no model revealed";
    summary = "<p class=\"muted\">" + why + " · bonds and entry fees returned · creator refund " +
      esc(r.creator_refund) + " · burned " + esc(r.burned) + "</p>";
  } else if (task.report) {
    const r = task.report;
    const champion = r.champion
      ? "champion takes the trainer share (" + esc(r.champion.effective_ppm) + " ppm effective)"
      : "no champion";
    summary = "<p class=\"muted\">winner takes all: " + champion + " · bar: baseline " +
      ppm(r.baseline_ppm) + " + " + ppm(r.min_improvement_ppm) + " · revealed stake " +
      esc(r.revealed_stake) + " of " + esc(r.total_stake) + " · creator refund " +
      esc(r.creator_refund) + " · burned " + esc(r.burned) + "</p>";
    const vrows = r.validators.map((v) => [accountLink(v.account), amount(v.stake),
      v.revealed ? "yes" : "<span class=\"bad\">no</span>", String(v.agreed_entries),
      amount(v.payout)]);
    summary += table(["validator", "#stake", "revealed", "#agreed", "#payout"], vrows);
  }
  if (task.references && task.references.length) {
    summary += "<p class=\"muted\">existing models in the baseline: " + task.references.map((r) =>
      esc(r.subject.startsWith("champion:") ? "earlier champion" : "base model") + " " +
      esc(short(r.model_hash)) + " (recorded " + ppm(r.recorded_ppm) + ")").join(", ") + "</p>";
  }
  return "<div class=\"task\" id=\"task-" + task.id + "\"><h3>task " + task.id + ": " +
    esc(task.name) + " " + outcome + "</h3><p class=\"muted\">reward " + esc(task.reward) +
    " · creator " + accountLink(task.creator) + " · " + task.joined + "/" + task.max_trainers +
    " trainers · entry fee " + esc(task.spec.entry_fee) + " (burned) · bond " +
    esc(task.spec.bond) + " · deadlines: " + deadlinesText(task) + "</p><p class=\"muted sealed\">" +
    sealedText(task) + "</p>" + leaderboard(task) + summary +
    "</div>";
}

function renderTasks(tasks) {
  if (tasks.length === 0) return setHtml("tasks", "<p class=\"muted\">no tasks yet</p>");
  setHtml("tasks", tasks.slice().reverse().map(renderTask).join(""));
}

function renderChampion(tasks) {
  const done = tasks.filter((t) => t.report && t.report.champion);
  if (done.length === 0) {
    return setHtml("champion", "<p class=\"muted\">no finalized task with a champion yet</p>");
  }
  const task = done[done.length - 1];
  const c = task.report.champion;
  setHtml("champion", "<dl class=\"kv\">" +
    "<dt>task</dt><dd>" + task.id + ": " + esc(task.name) + "</dd>" +
    "<dt>trainer</dt><dd id=\"champion-trainer\">" + accountLink(c.trainer) +
    " <span class=\"mono muted\">" + esc(c.trainer) + "</span></dd>" +
    "<dt>effective score</dt><dd>" + ppm(c.effective_ppm) + "</dd>" +
    "<dt>params</dt><dd>" + esc(c.params) + "</dd>" +
    "<dt>model hash</dt><dd class=\"mono\">" + esc(c.model_hash) + "</dd>" +
    "<dt>finalized at</dt><dd>height " + task.score_deadline + "</dd>" +
    "</dl>");
}

// Payouts per account (trainers and validators): one horizontal bar per account, the largest
// total first, stacked by task (one colour per task), so one finalized task reads as well as many.
function renderChart(tasks) {
  const done = tasks.filter((t) => t.outcome).sort((a, b) => a.id - b.id);
  if (done.length === 0) return setHtml("chart", "<p class=\"muted\">no finalized task yet</p>");
  const totals = new Map();
  const parts = new Map();
  done.forEach((task, k) => {
    for (const p of task.payouts) {
      if (p.role === "creator" || Number(p.amount) === 0) continue;
      totals.set(p.account, (totals.get(p.account) || 0) + Number(p.amount));
      if (!parts.has(p.account)) parts.set(p.account, []);
      parts.get(p.account).push([k, Number(p.amount)]);
    }
  });
  if (totals.size === 0) return setHtml("chart", "<p class=\"muted\">no payouts yet</p>");
  const accounts = [...totals.keys()].sort((a, b) => totals.get(b) - totals.get(a));
  const maxX = Math.max(1, ...totals.values());
  const BAR = 22, GAP = 6, L = 150, R = 90, T = 6, W = 760;
  const H = T + accounts.length * (BAR + GAP);
  const x = (v) => (v / maxX) * (W - L - R);
  let svg = "<svg viewBox=\"0 0 " + W + " " + H + "\" width=\"100%\" style=\"max-width:" + W +
    "px\" role=\"img\" aria-label=\"payouts per account\">";
  accounts.forEach((account, row) => {
    const top = T + row * (BAR + GAP);
    svg += "<text x=\"" + (L - 6) + "\" y=\"" + (top + BAR * 0.7) + "\" text-anchor=\"end\">" +
      esc(label(account)) + "</text>";
    let at = L;
    for (const [k, amount] of parts.get(account)) {
      const w = x(amount);
      svg += "<rect x=\"" + at.toFixed(1) + "\" y=\"" + top + "\" width=\"" +
        Math.max(1, w).toFixed(1) + "\" height=\"" + BAR + "\" fill=\"" +
        COLORS[k % COLORS.length] + "\"><title>" + esc(label(account)) + ", task " + done[k].id +
        ": " + amount + "</title></rect>";
      at += w;
    }
    svg += "<text x=\"" + (at + 6).toFixed(1) + "\" y=\"" + (top + BAR * 0.7) + "\">" +
      totals.get(account) + "</text>";
  });
  svg += "</svg>";
  const legend = done.map((task, k) => "<span><i style=\"background:" + COLORS[k % COLORS.length] +
    "\"></i>task " + task.id + " (" + esc(task.name) + ")</span>").join("");
  setHtml("chart", svg + "<div class=\"legend\">" + legend + "</div>");
}

function explainTask(t) {
  let html = "<h3>task " + t.task + ": " + esc(t.name) + " <span class=\"pill " +
    esc(t.outcome || "") + "\">" + esc(t.outcome || t.phase) + "</span></h3>";
  if (t.as_creator) {
    html += "<p class=\"explain\">creator: escrowed " + esc(t.as_creator.reward) + ", refund " +
      amount(t.as_creator.refund) + "</p>";
  }
  if (t.as_trainer) {
    const a = t.as_trainer;
    html += "<p class=\"explain\"><b>trainer:</b> " + esc(a.explanation) + "</p>";
    html += table(["validator", "#stake", "revealed", "verdict", "agrees"],
      a.validator_verdicts.map((v) => [accountLink(v.validator), amount(v.stake),
        v.revealed ? "yes" : "no", verdictText(v.verdict),
        v.agrees ? "<span class=\"good\">yes</span>" : "<span class=\"bad\">no</span>"]));
    html += "<p class=\"muted\">consensus " + verdictText(a.consensus) + " · penalty " +
      ppm(a.penalty_ppm) + " · effective " + ppm(a.effective_ppm) + " · rank " +
      (a.rank === null ? "—" : a.rank) + " · payout " + amount(a.payout) + " · bond refund " +
      amount(a.bond_refund) + " · bond forfeit " + amount(a.bond_forfeit) + "</p>";
  }
  if (t.as_validator) {
    const a = t.as_validator;
    html += "<p class=\"explain\"><b>validator:</b> " + esc(a.explanation) + "</p>";
    if (a.disagreements && a.disagreements.length) {
      html += table(["subject", "its verdict", "consensus"], a.disagreements.map((d) => [
        d.subject === "baseline" || d.subject === "base_model" ? esc(d.subject)
          : accountLink(d.subject), verdictText(d.verdict), verdictText(d.consensus)]));
    }
  }
  return html;
}

async function refreshAccount() {
  if (!selectedAccount) {
    return setHtml("account", "<p class=\"muted\">enter an account id or click an account</p>");
  }
  const id = selectedAccount;
  let html;
  try {
    const a = await api("/accounts/" + id + "?limit=" + ACCOUNT_TASKS);
    html = "<dl class=\"kv\"><dt>account</dt><dd class=\"mono\">" + esc(a.account) +
      (names.has(a.account) ? " (" + esc(names.get(a.account)) + ")" : "") + "</dd>" +
      "<dt>balance</dt><dd>" + esc(a.balance) + "</dd><dt>stake</dt><dd>" + esc(a.stake) +
      "</dd><dt>nonce</dt><dd>" + a.nonce + "</dd><dt>tasks</dt><dd>" + a.tasks_total +
      "</dd></dl>" + a.tasks.map(explainTask).join("");
  } catch (e) {
    html = "<p class=\"error\">" + esc(short(id)) + ": " + esc(e.message) + "</p>";
  }
  if (id === selectedAccount) setHtml("account", html);
}

// ---------------------------------------------------------------- polling

async function taskDetails(summaries) {
  const recent = summaries.slice(-RECENT_TASKS);
  return Promise.all(recent.map(async (s) => {
    if (finalizedTasks.has(s.id)) return finalizedTasks.get(s.id);
    const task = await api("/tasks/" + s.id);
    if (task.outcome) finalizedTasks.set(s.id, task);
    return task;
  }));
}

async function refresh() {
  const [status, blocks, validators, summaries] = await Promise.all([
    api("/status"), api("/blocks?limit=" + RECENT_BLOCKS), api("/validators"),
    api("/tasks?limit=200"),
  ]);
  // /peers answers 503 while the network is busy; the rest of the page still draws.
  const peers = await api("/peers").catch(() => null);
  names = new Map(validators.filter((v) => v.name).map((v) => [v.account, v.name]));
  const tasks = await taskDetails(summaries);
  renderStatus(status);
  renderBlocks(blocks);
  renderValidators(validators);
  renderPeers(peers);
  renderTasks(tasks);
  renderChampion(tasks);
  renderChart(tasks);
  await refreshAccount();
}

async function loop() {
  try {
    await refresh();
  } catch (e) {
    setHtml("status", "<span class=\"error\">" + esc(e.message) + "</span>");
  }
  setTimeout(loop, POLL_MS);
}

function select(account) {
  selectedAccount = account;
  document.getElementById("account-input").value = account || "";
  refreshAccount();
}

document.getElementById("account-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = document.getElementById("account-input").value.trim().toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(value)) {
    selectedAccount = null;
    setHtml("account", "<p class=\"error\">an account id is 64 lowercase hex characters</p>");
    return;
  }
  history.replaceState(null, "", "#account=" + value);
  select(value);
});

window.addEventListener("hashchange", () => {
  const account = accountFromHash();
  if (account) {
    select(account);
    document.getElementById("account-section").scrollIntoView({ behavior: "smooth" });
  }
});

if (selectedAccount) document.getElementById("account-input").value = selectedAccount;
loop();
