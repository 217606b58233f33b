//! The deploy kit's queries against what a fresh process exports: every
//! series the alert rules (deploy/prometheus/alerts.yml) and the dashboard
//! (deploy/grafana/imggo-receiver.json) select must be on `/metrics` from
//! start-up, before any traffic. A series that appears only with its first
//! event leaves `increase()` and `unless` blind until then.
//!
//! The names are read out of those files, so a rule or panel on a metric
//! the service does not export fails here.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::helpers::*;

/// One sample of the Prometheus text format: name and labels.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
}

/// A selector as a rule or panel writes it: `name{label="value",...}`.
/// Only label values the series must carry are kept: `=` matchers, and
/// `=~` alternations of plain words (`outcome=~"received|duplicate"` needs
/// both). Other matchers (`!=`, real regexes, Grafana's `$variables`) say
/// nothing about which series must exist.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Selector {
    name: String,
    required: Vec<(String, String)>,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Reads a double-quoted string starting at `chars[i] == '"'`; returns the
/// unescaped text and the index after the closing quote.
fn quoted(chars: &[char], mut i: usize) -> (String, usize) {
    assert_eq!(chars[i], '"');
    i += 1;
    let mut out = String::new();
    while chars[i] != '"' {
        if chars[i] == '\\' {
            i += 1;
            out.push(match chars[i] {
                'n' => '\n',
                c => c,
            });
        } else {
            out.push(chars[i]);
        }
        i += 1;
    }
    (out, i + 1)
}

/// `label op "value"` pairs between `{` at `chars[i]` and its `}`; returns
/// them and the index after the `}`.
fn matchers(chars: &[char], mut i: usize) -> (Vec<(String, String, String)>, usize) {
    assert_eq!(chars[i], '{');
    i += 1;
    let mut out = Vec::new();
    loop {
        while chars[i].is_whitespace() || chars[i] == ',' {
            i += 1;
        }
        if chars[i] == '}' {
            return (out, i + 1);
        }
        let start = i;
        while is_name_char(chars[i]) {
            i += 1;
        }
        let label: String = chars[start..i].iter().collect();
        while chars[i].is_whitespace() {
            i += 1;
        }
        let op_start = i;
        while matches!(chars[i], '=' | '!' | '~') {
            i += 1;
        }
        let op: String = chars[op_start..i].iter().collect();
        while chars[i].is_whitespace() {
            i += 1;
        }
        let (value, next) = quoted(chars, i);
        i = next;
        out.push((label, op, value));
    }
}

/// Every `imggo_*` selector in `text` (PromQL, or a rule file with its
/// comment lines left out).
fn selectors(text: &str) -> Vec<Selector> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_name = (i == 0 || !is_name_char(chars[i - 1]))
            && chars[i..].starts_with(&['i', 'm', 'g', 'g', 'o', '_']);
        if !starts_name {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_name_char(chars[i]) {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect();
        let mut required = Vec::new();
        if chars.get(i) == Some(&'{') {
            let (found, next) = matchers(&chars, i);
            i = next;
            for (label, op, value) in found {
                let plain =
                    |v: &str| !v.is_empty() && v.chars().all(|c| is_name_char(c) && c != ':');
                match op.as_str() {
                    "=" if !value.contains('$') => required.push((label, value)),
                    "=~" if value.split('|').all(plain) => {
                        // Each alternative is a series of its own.
                        for alt in value.split('|') {
                            out.push(Selector {
                                name: name.clone(),
                                required: vec![(label.clone(), alt.to_owned())],
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
        out.push(Selector { name, required });
    }
    out
}

/// The selectors of a rule file, comments left out.
fn rule_file_selectors(path: &Path) -> Vec<Selector> {
    let text = std::fs::read_to_string(path).unwrap();
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    selectors(&code)
}

/// The selectors of every query string in a Grafana dashboard.
fn dashboard_selectors(path: &Path) -> Vec<Selector> {
    fn walk(v: &Value, out: &mut Vec<Selector>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr" | "query" | "definition", Value::String(q)) => {
                            out.extend(selectors(q))
                        }
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    walk(&dashboard, &mut out);
    out
}

/// The samples of a Prometheus text-format scrape.
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let chars: Vec<char> = line.chars().collect();
            let end = chars.iter().position(|&c| !is_name_char(c)).unwrap();
            let name = chars[..end].iter().collect();
            let mut labels = BTreeMap::new();
            if chars[end] == '{' {
                let (found, _) = matchers(&chars, end);
                for (label, op, value) in found {
                    assert_eq!(op, "=", "{line}");
                    labels.insert(label, value);
                }
            }
            Sample { name, labels }
        })
        .collect()
}

/// The selectors no sample satisfies.
fn unexported<'a>(selectors: &'a [Selector], samples: &[Sample]) -> Vec<&'a Selector> {
    selectors
        .iter()
        .filter(|sel| {
            !samples.iter().any(|s| {
                s.name == sel.name && sel.required.iter().all(|(k, v)| s.labels.get(k) == Some(v))
            })
        })
        .collect()
}

#[test]
fn selectors_are_read_as_promql_writes_them() {
    let found = selectors(
        r#"sum(rate(imggo_a_total{reason="invalid", instance=~"$instance"}[5m]))
           unless imggo_b_count{outcome=~"received|duplicate",route!="/x"} > 0
           and imggo_c{route="/v1/jobs/{job_id}"} or not_ours{} or x_imggo_d"#,
    );
    let want = |name: &str, req: &[(&str, &str)]| Selector {
        name: name.to_owned(),
        required: req
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    assert_eq!(
        found,
        vec![
            want("imggo_a_total", &[("reason", "invalid")]),
            want("imggo_b_count", &[("outcome", "received")]),
            want("imggo_b_count", &[("outcome", "duplicate")]),
            want("imggo_b_count", &[]),
            want("imggo_c", &[("route", "/v1/jobs/{job_id}")]),
        ]
    );
    let scraped = samples(
        "# TYPE imggo_a_total counter\nimggo_a_total{reason=\"invalid\"} 0\n\nimggo_b_count{outcome=\"received\"} 0\n",
    );
    let missing: Vec<_> = unexported(&found, &scraped)
        .into_iter()
        .map(|s| s.name.as_str())
        .collect();
    // imggo_b_count{outcome="duplicate"} and imggo_c are not in the scrape.
    assert_eq!(missing, vec!["imggo_b_count", "imggo_c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_rules_and_dashboard_use_is_exported_at_start() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = rule_file_selectors(&root.join("deploy/prometheus/alerts.yml"));
    let dashboard = dashboard_selectors(&root.join("deploy/grafana/imggo-receiver.json"));
    let names = |sels: &[Selector]| {
        sels.iter()
            .map(|s| s.name.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    // Guards against reading nothing (a moved file, a broken extractor).
    assert!(names(&rules).len() >= 7, "{rules:?}");
    assert!(names(&dashboard).len() >= 20, "{dashboard:?}");

    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let mut env: Vec<(String, String)> = secret_env(&db.url).into_iter().collect();
    env.extend([
        (
            "IMGGO__SERVER__BIND".to_owned(),
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "IMGGO__ADMIN__BIND".to_owned(),
            format!("127.0.0.1:{admin}"),
        ),
    ]);
    // The forwarding series are per destination: one is configured (its
    // endpoint need not answer), and each of its series must be there.
    let closed = free_port();
    env.extend(crate::forward_support::http_destination(
        "deploykit",
        &format!("http://127.0.0.1:{closed}/hook"),
    ));
    let mut server = Server::start(command(dir.path(), &env));
    server.wait_for("listening");
    // The first and only request this process serves.
    let text = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scraped = samples(&text);

    for (file, sels) in [
        ("deploy/prometheus/alerts.yml", &rules),
        ("deploy/grafana/imggo-receiver.json", &dashboard),
    ] {
        let missing = unexported(sels, &scraped);
        assert!(
            missing.is_empty(),
            "{file} selects series a fresh instance does not export: {missing:#?}\n\
             register them at zero in metrics::install\n--- /metrics ---\n{text}"
        );
    }
}
