//! `docs/api.md` against the served API: the routes it documents are the router's, and every
//! example answer in it reads back as the route's view type and writes again unchanged (so it
//! names every field the view serializes, no other, in the view's value formats). List items
//! `"…"` stand for more of the same and are dropped; a fragment of an answer is fenced
//! ```` ```json fragment ```` and not checked.

use std::collections::BTreeSet;

use node::http::views::{
    AccountView, BlobStored, BlockDetail, BlockSummary, PeerView, ProofView, StatusView,
    TaskDetail, TaskSummary, TxView, TxsAnswer, ValidatorView,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const DOC: &str = include_str!("../../docs/api.md");

/// One `### \`METHOD /path…\`` section of the doc: its route (query string cut) and its JSON
/// examples.
struct Section {
    method: String,
    path: String,
    examples: Vec<String>,
}

fn sections(doc: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if let Some(route) = line.strip_prefix("### `").and_then(|r| r.strip_suffix('`')) {
            let (method, path) = route.split_once(' ').expect("a heading is `METHOD /path`");
            let path = path.split('?').next().unwrap_or(path);
            out.push(Section { method: method.into(), path: path.into(), examples: Vec::new() });
        } else if line.starts_with("## ") {
            // A section that is not a route ends the last route's examples.
            out.push(Section { method: String::new(), path: String::new(), examples: Vec::new() });
        } else if line == "```json" {
            let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            if let Some(section) = out.last_mut() {
                section.examples.push(block.join("\n"));
            }
        }
    }
    out.retain(|s| !s.method.is_empty());
    out
}

/// Reads `example` as a `T` and writes it again: it must come back unchanged.
fn round_trip<T: Serialize + DeserializeOwned>(route: &str, example: &Value) -> Result<(), String> {
    let view: T = serde_json::from_value(example.clone())
        .map_err(|e| format!("{route}: the example does not read as the view: {e}"))?;
    let written = serde_json::to_value(&view).expect("a view serializes");
    if &written != example {
        return Err(format!(
            "{route}: the example and the view differ:\n  doc:  {example}\n  view: {written}"
        ));
    }
    Ok(())
}

/// Checks `example` against the view type of `route`; `None` for a route without one.
fn check(route: &str, example: &Value) -> Option<Result<(), String>> {
    Some(match route {
        "GET /status" => round_trip::<StatusView>(route, example),
        "GET /peers" => round_trip::<Vec<PeerView>>(route, example),
        "GET /validators" => round_trip::<Vec<ValidatorView>>(route, example),
        "GET /blocks" => round_trip::<Vec<BlockSummary>>(route, example),
        "GET /blocks/{height}" => round_trip::<BlockDetail>(route, example),
        "GET /txs/{hash}" => round_trip::<TxView>(route, example),
        "POST /txs" => round_trip::<TxsAnswer>(route, example),
        "GET /tasks" => round_trip::<Vec<TaskSummary>>(route, example),
        "GET /tasks/{id}" => round_trip::<TaskDetail>(route, example),
        "GET /accounts/{id}" => round_trip::<AccountView>(route, example),
        "GET /proof/{table}/{key}" => round_trip::<ProofView>(route, example),
        "POST /blobs" => round_trip::<BlobStored>(route, example),
        _ => return None,
    })
}

/// Removes the list items that stand for more of the same (`"…"`, `"… 8 more"`).
fn drop_placeholders(value: &mut Value) {
    match value {
        Value::Array(items) => {
            items.retain(|i| !i.as_str().is_some_and(|s| s.starts_with('…')));
            items.iter_mut().for_each(drop_placeholders);
        }
        Value::Object(map) => map.values_mut().for_each(drop_placeholders),
        _ => {}
    }
}

/// Every problem of `doc` against the served API.
fn problems(doc: &str) -> Vec<String> {
    let sections = sections(doc);
    let mut problems = Vec::new();
    let documented: BTreeSet<(String, String)> =
        sections.iter().map(|s| (s.method.clone(), s.path.clone())).collect();
    let served: BTreeSet<(String, String)> =
        node::http::routes().into_iter().map(|(m, p)| (m.into(), p.into())).collect();
    for (method, path) in served.difference(&documented) {
        problems.push(format!("{method} {path} is served but not documented"));
    }
    for (method, path) in documented.difference(&served) {
        problems.push(format!("{method} {path} is documented but not served"));
    }
    for section in &sections {
        let route = format!("{} {}", section.method, section.path);
        let mut checked = 0;
        for text in &section.examples {
            let mut example: Value = match serde_json::from_str(text) {
                Ok(v) => v,
                // Shortened with a bare `…`: an illustration, not a whole answer.
                Err(_) if text.contains('…') => continue,
                Err(e) => {
                    problems.push(format!("{route}: an example is not JSON: {e}"));
                    continue;
                }
            };
            drop_placeholders(&mut example);
            if example.to_string().contains('…') {
                continue;
            }
            let is_error =
                example.as_object().is_some_and(|o| o.len() == 1 && o.contains_key("error"));
            if is_error {
                continue;
            }
            match check(&route, &example) {
                Some(Ok(())) => checked += 1,
                Some(Err(problem)) => problems.push(problem),
                None => problems.push(format!("{route}: an example answer, but no view to check")),
            }
        }
        if checked == 0 && check(&route, &Value::Null).is_some() {
            problems.push(format!("{route}: no whole example answer to check"));
        }
    }
    problems
}

#[test]
fn the_doc_matches_the_served_api() {
    let problems = problems(DOC);
    assert!(problems.is_empty(), "docs/api.md disagrees with the API:\n{}", problems.join("\n"));
}

#[test]
fn a_missing_field_or_route_is_caught() {
    let no_field = DOC.replacen("  \"tx_count\": 3,\n", "", 1);
    assert_ne!(no_field, DOC, "the doc has the line this test removes");
    assert!(problems(&no_field).iter().any(|p| p.contains("GET /blocks/{height}")));
    let no_route = DOC.replacen("### `GET /peers`", "### `GET /peer`", 1);
    let found = problems(&no_route);
    assert!(found.iter().any(|p| p == "GET /peers is served but not documented"), "{found:?}");
}
