//! The shipped dashboards (README.md, Metrics) hold together: `dashboards/alerts.yml` passes
//! `promtool check rules` and the unit tests in `dashboards/rules_test.yml`, the Grafana dashboard
//! `dashboards/switchyard.json` has its variables and a query in every panel, and every PromQL
//! expression of the dashboard and the rules parses as Prometheus parses it (through promtool).
//!
//! [`dashboard_expressions`] and [`rule_expressions`] give those expressions, ready to run, to
//! the tests that evaluate them against a real Prometheus scraping a real gateway.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::harness::{promtool, scratch_dir};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// What the dashboard's variables stand for when its queries are run outside Grafana: every
/// route, and a 1m window (the rules' window, long enough for a 1 s scrape interval).
const GRAFANA_VARIABLES: &[(&str, &str)] = &[
    ("${route}", ".*"),
    ("$route", ".*"),
    ("${__rate_interval}", "1m"),
    ("$__rate_interval", "1m"),
    ("${__interval}", "1m"),
    ("$__interval", "1m"),
    ("${__range}", "1m"),
    ("$__range", "1m"),
];
/// The metrics with a `route` label: a dashboard query on one of them honours the `route`
/// variable.
const PER_ROUTE_METRICS: &[&str] = &[
    "switchyard_route_requests_total",
    "switchyard_events_total",
    "switchyard_deliveries_total",
    "switchyard_delivery_latency_seconds_bucket",
    "switchyard_path_duration_seconds_bucket",
    "switchyard_shadow_comparisons_total",
    "switchyard_shadow_mismatches_total",
    "switchyard_flag_ssot_percent",
    "switchyard_flag_shadow",
    "switchyard_flag_rollback_latched",
    "switchyard_rollbacks_total",
    "switchyard_client_drop_connections_total",
    "switchyard_served_connection_seconds_total",
    "switchyard_ramp_step",
    "switchyard_guard_verdict",
];

/// Every PromQL expression of the Grafana dashboard, runnable as is: the panel targets, the
/// annotation queries, and the metric selector of each `label_values(...)` variable query, with
/// the Grafana variables replaced (`$route` by `.*`; `$__rate_interval`, `$__interval` and
/// `$__range` by `1m`).
pub fn dashboard_expressions() -> Vec<String> {
    raw_dashboard_expressions(&dashboard())
        .into_iter()
        .map(|(_, expr)| substitute_variables(&expr))
        .collect()
}

/// The `expr` of every rule (recording and alerting) in `dashboards/alerts.yml`, in file order.
pub fn rule_expressions() -> Vec<String> {
    expr_values(&read_dashboards_file("alerts.yml"))
}

#[tokio::test]
async fn alert_rules_pass_promtool_check() {
    let alerts = dashboards_path("alerts.yml");
    let (success, report) = promtool(&["check", "rules", &alerts], None).await;
    assert!(success, "promtool check rules {alerts} failed:\n{report}");
}

#[tokio::test]
async fn alert_rules_pass_their_unit_tests() {
    let tests = dashboards_path("rules_test.yml");
    let (success, report) = promtool(&["test", "rules", &tests], None).await;
    assert!(success, "promtool test rules {tests} failed:\n{report}");
}

#[test]
fn dashboard_has_its_variables_and_a_query_in_every_panel() {
    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion: {}",
        dashboard["schemaVersion"]
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list is an array");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` variable in templating.list"))
    };
    let datasource = variable("datasource");
    assert_eq!(datasource["type"], "datasource", "{datasource}");
    assert_eq!(datasource["query"], "prometheus", "{datasource}");
    let route = variable("route");
    assert_eq!(route["type"], "query", "{route}");
    assert_eq!(
        route["query"], "label_values(switchyard_events_total, route)",
        "{route}"
    );
    assert_eq!(route["definition"], route["query"], "{route}");
    assert_eq!(route["multi"], true, "{route}");
    assert_eq!(route["includeAll"], true, "{route}");
    assert_eq!(route["allValue"], ".*", "{route}");
    assert_eq!(route["datasource"]["uid"], "${datasource}", "{route}");

    let panels = leaf_panels(&dashboard);
    assert!(panels.len() >= 10, "only {} panels", panels.len());
    let mut ids: Vec<u64> = Vec::new();
    for panel in &panels {
        let title = &panel["title"];
        let id = panel["id"].as_u64().expect("every panel has a numeric id");
        assert!(!ids.contains(&id), "panel id {id} is used twice");
        ids.push(id);
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {title} uses the datasource variable"
        );
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        assert!(!targets.is_empty(), "panel {title} has no targets");
        for target in targets {
            assert!(
                target["expr"]
                    .as_str()
                    .is_some_and(|e| !e.trim().is_empty()),
                "panel {title} has a target without an expr: {target}"
            );
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "panel {title}: {target}"
            );
        }
    }

    let annotations = dashboard["annotations"]["list"]
        .as_array()
        .expect("annotations.list is an array");
    let queries: Vec<&Value> = annotations.iter().filter(|a| a["builtIn"] != 1).collect();
    assert!(!queries.is_empty(), "no annotation queries");
    for annotation in &queries {
        assert_eq!(
            annotation["datasource"]["uid"], "${datasource}",
            "{annotation}"
        );
        assert!(
            annotation["expr"]
                .as_str()
                .is_some_and(|e| !e.trim().is_empty()),
            "an annotation without an expr: {annotation}"
        );
    }
    assert!(
        queries.iter().any(|a| a["expr"]
            .as_str()
            .is_some_and(|e| e.contains("increase(switchyard_rollbacks_total"))),
        "no rollback annotation: {annotations:?}"
    );
}

#[test]
fn dashboard_shows_what_design_asks_for() {
    let dashboard = dashboard();
    let expressions = raw_dashboard_expressions(&dashboard);
    let shown = |metric: &str| expressions.iter().any(|(_, e)| e.contains(metric));
    for metric in [
        "switchyard_deliveries_total",
        "switchyard_events_total",
        "switchyard_flag_ssot_percent",
        "switchyard_flag_shadow",
        "switchyard_flag_rollback_latched",
        "switchyard_kill_switch_engaged",
        "switchyard_shadow_mismatches_total",
        "switchyard_delivery_latency_seconds_bucket",
        "switchyard_connections",
        "switchyard_connected_users",
        "switchyard_connections_closed_total",
        "switchyard_rollbacks_total",
        "switchyard_client_drop_connections_total",
        "switchyard_served_connection_seconds_total",
        "switchyard_ramp_step",
        "switchyard_guard_verdict",
    ] {
        assert!(shown(metric), "no dashboard query shows {metric}");
    }
    for quantile in ["histogram_quantile(0.5,", "histogram_quantile(0.99,"] {
        assert!(
            expressions.iter().any(|(_, e)| e.contains(quantile)
                && e.contains("switchyard_delivery_latency_seconds_bucket")),
            "no latency {quantile}...) query"
        );
    }

    // The delivery ratio panel judges the path (the outcome → cause table of README, Metrics:
    // path-caused are write_error and path_error) and draws the 99.5% line.
    let panels = leaf_panels(&dashboard);
    let with_expr = |wanted: &dyn Fn(&str) -> bool| {
        panels.iter().copied().find(|p| {
            p["targets"].as_array().is_some_and(|targets| {
                targets
                    .iter()
                    .any(|t| t["expr"].as_str().is_some_and(wanted))
            })
        })
    };
    let ratio = with_expr(&|e| {
        e.contains(r#"outcome="delivered""#)
            && e.contains(r#"outcome=~"delivered|write_error|path_error""#)
    })
    .expect("a path delivery ratio panel");
    assert!(
        with_expr(&|e| e.contains(r#"outcome!~"offline_.*""#)).is_none(),
        "no panel shows a ratio that counts clients' losses against the path"
    );
    // Client-caused drops have their own panel, by reason (outcome) and path.
    let drops = with_expr(&|e| {
        e.contains(r#"outcome=~"dropped_.*""#) && e.contains("by (route, path, outcome)")
    })
    .expect("a client-caused drops panel by reason and path");
    assert!(drops["title"].as_str().unwrap().contains("Client-caused"));
    let defaults = &ratio["fieldConfig"]["defaults"];
    assert_eq!(
        defaults["custom"]["thresholdsStyle"]["mode"], "line",
        "{}",
        ratio["title"]
    );
    assert!(
        defaults["thresholds"]["steps"]
            .as_array()
            .is_some_and(|steps| steps.iter().any(|s| s["value"] == json!(0.995))),
        "the delivery ratio panel has no 0.995 threshold: {defaults}"
    );

    // Every query of a per-route metric honours the route variable, as a regex.
    for (source, expr) in &expressions {
        assert!(
            !expr.contains(r#"route="$route""#),
            "{source}: `route` must be matched as a regex (route=~\"$route\"): {expr}"
        );
        if source.starts_with("variable") {
            continue;
        }
        for metric in PER_ROUTE_METRICS {
            for selector in selectors_of(expr, metric) {
                assert!(
                    selector.contains(r#"route=~"$route""#),
                    "{source}: {metric} without route=~\"$route\": {expr}"
                );
            }
        }
    }
}

#[tokio::test]
async fn every_dashboard_and_rule_expression_parses_in_prometheus() {
    let sources = raw_dashboard_expressions(&dashboard());
    let runnable = dashboard_expressions();
    assert_eq!(sources.len(), runnable.len());
    let mut checked: Vec<(String, String)> = sources
        .into_iter()
        .zip(runnable)
        .map(|((source, _), expr)| {
            assert!(
                !expr.contains('$'),
                "{source}: a Grafana variable this test does not know: {expr}"
            );
            (format!("dashboard {source}"), expr)
        })
        .collect();
    checked.extend(
        rule_expressions()
            .into_iter()
            .enumerate()
            .map(|(n, expr)| (format!("alerts.yml rule {}", n + 1), expr)),
    );

    // No `promtool check query` in Prometheus 2.42: one recording rule per expression instead,
    // in a rules file written as JSON (which YAML reads as is), so nothing needs escaping.
    let rules_file = json!({
        "groups": [{
            "name": "switchyard_expression_check",
            "rules": checked
                .iter()
                .enumerate()
                .map(|(n, (_, expr))| json!({"record": format!("check:expr_{n}"), "expr": expr}))
                .collect::<Vec<_>>(),
        }],
    });
    let dir = scratch_dir();
    let path = dir.join("expressions.rules.json");
    std::fs::write(&path, serde_json::to_string_pretty(&rules_file).unwrap()).unwrap();
    let (success, report) = promtool(&["check", "rules", &path.display().to_string()], None).await;
    let _ = std::fs::remove_dir_all(&dir);
    let legend: String = checked
        .iter()
        .enumerate()
        .map(|(n, (source, expr))| format!("check:expr_{n} ({source}): {expr}\n"))
        .collect();
    assert!(
        success,
        "an expression does not parse:\n{report}\n--- expressions ---\n{legend}"
    );
    assert!(
        report.contains(&format!("SUCCESS: {} rules found", checked.len())),
        "promtool did not check every expression:\n{report}"
    );
}

#[tokio::test]
async fn rule_expressions_are_read_whole_from_alerts_yml() {
    let alerts = read_dashboards_file("alerts.yml");
    let expressions = rule_expressions();
    let n_rules = alerts
        .lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with("- record:") || line.starts_with("- alert:"))
        .count();
    assert_eq!(
        expressions.len(),
        n_rules,
        "one expr per rule: {expressions:#?}"
    );
    // promtool counts the rules the same way.
    let (success, report) =
        promtool(&["check", "rules", &dashboards_path("alerts.yml")], None).await;
    assert!(success, "{report}");
    assert!(
        report.contains(&format!("SUCCESS: {n_rules} rules found")),
        "{report}"
    );
    assert!(
        expressions.iter().any(|e| e.contains('\n')),
        "alerts.yml has block scalars: {expressions:#?}"
    );
    assert!(
        expressions
            .iter()
            .any(|e| e == r#"up{job="switchyard"} == 0"#),
        "{expressions:#?}"
    );
}

#[test]
fn expr_values_reads_plain_quoted_and_block_scalars() {
    let yaml = r#"
groups:
  - name: g
    rules:
      # expr: commented out
      - record: plain
        expr: sum(rate(a_total[1m])) # a comment
      - record: double_quoted
        expr: "b{x=\"y\"} > 0"
      - record: single_quoted
        expr: 'c{x=''y''}'
      - expr: d
        record: expr_first
      - alert: literal
        expr: |
          e
          /
          f

        for: 1m
      - alert: folded
        expr: >-
          g
            and
          h
        labels:
          expr: not-a-rule-but-read
      - record: last
        expr: |
          i
"#;
    assert_eq!(
        expr_values(yaml),
        [
            "sum(rate(a_total[1m]))",
            r#"b{x="y"} > 0"#,
            "c{x='y'}",
            "d",
            "e\n/\nf",
            "g and h",
            "not-a-rule-but-read",
            "i",
        ]
    );
}

/// The dashboard, parsed.
fn dashboard() -> Value {
    let text = read_dashboards_file("switchyard.json");
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("switchyard.json: {error}"))
}

/// Every panel that is not a row, rows' nested panels included (a collapsed row holds its
/// panels).
fn leaf_panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in panels.as_array().map_or(&[][..], Vec::as_slice) {
            if panel["type"] == "row" {
                walk(&panel["panels"], out);
            } else {
                out.push(panel);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The dashboard's PromQL as written (with Grafana variables), each with where it is from.
fn raw_dashboard_expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut expressions = Vec::new();
    for panel in leaf_panels(dashboard) {
        for target in panel["targets"].as_array().map_or(&[][..], Vec::as_slice) {
            let expr = target["expr"].as_str().unwrap_or_default();
            let source = format!("panel {} target {}", panel["title"], target["refId"]);
            expressions.push((source, expr.to_owned()));
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
    {
        if let Some(expr) = annotation["expr"].as_str() {
            expressions.push((
                format!("annotation {}", annotation["name"]),
                expr.to_owned(),
            ));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
    {
        // `label_values(SELECTOR, LABEL)` is Grafana's; the selector in it is PromQL.
        if let Some(selector) = variable["query"]
            .as_str()
            .and_then(|q| q.strip_prefix("label_values("))
            .and_then(|rest| rest.rsplit_once(','))
            .map(|(selector, _)| selector.trim())
        {
            expressions.push((
                format!("variable {}", variable["name"]),
                selector.to_owned(),
            ));
        }
    }
    expressions
}

fn substitute_variables(expr: &str) -> String {
    GRAFANA_VARIABLES
        .iter()
        .fold(expr.to_owned(), |expr, (variable, value)| {
            expr.replace(variable, value)
        })
}

/// The label matchers (`{...}`) after each use of `metric` in `expr`, or an empty string where it
/// has none. Uses of longer names that start with `metric` are not uses of it.
fn selectors_of<'a>(expr: &'a str, metric: &str) -> Vec<&'a str> {
    let mut selectors = Vec::new();
    for (at, _) in expr.match_indices(metric) {
        let rest = &expr[at + metric.len()..];
        if rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let selector = rest
            .strip_prefix('{')
            .and_then(|inside| inside.split_once('}'))
            .map_or("", |(matchers, _)| matchers);
        selectors.push(selector);
    }
    selectors
}

/// The values of every `expr:` key in `yaml`, in order, read line by line: plain one-line
/// scalars (up to a ` #` comment), single- and double-quoted one-line scalars, and `|` / `>`
/// block scalars (with `-` or `+` chomping; trailing newlines are dropped, and folding joins
/// every line with a space, which is the same PromQL). Other YAML (flow collections, multi-line
/// plain or quoted scalars, indentation indicators) is not supported: alerts.yml does not use it,
/// and `rule_expressions_are_read_whole_from_alerts_yml` would catch it if it started to.
fn expr_values(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |line: &str| line.len() - line.trim_start().len();
    let mut values = Vec::new();
    let mut n = 0;
    while n < lines.len() {
        let line = lines[n];
        n += 1;
        let mut key_indent = indent(line);
        let mut entry = line.trim_start();
        if let Some(item) = entry.strip_prefix("- ") {
            key_indent += 2 + indent(item);
            entry = item.trim_start();
        }
        let Some(value) = entry.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        let header = value.split(" #").next().unwrap_or_default().trim();
        if let Some(chomping) = header
            .strip_prefix('|')
            .map(|rest| (rest, "\n"))
            .or_else(|| header.strip_prefix('>').map(|rest| (rest, " ")))
        {
            let (indicator, separator) = chomping;
            assert!(
                ["", "-", "+"].contains(&indicator),
                "unsupported block scalar header `{header}` at line {n}"
            );
            let mut block = Vec::new();
            while n < lines.len() && (lines[n].trim().is_empty() || indent(lines[n]) > key_indent) {
                block.push(lines[n]);
                n += 1;
            }
            while block.last().is_some_and(|line| line.trim().is_empty()) {
                block.pop();
            }
            let content_indent = block.first().map_or(0, |line| indent(line));
            let text: Vec<&str> = block
                .iter()
                .map(|line| {
                    if separator == " " {
                        line.trim()
                    } else {
                        line.get(content_indent..).unwrap_or_default()
                    }
                })
                .collect();
            values.push(text.join(separator));
        } else if let Some(quoted) = value.strip_prefix('"') {
            // YAML's double-quoted escapes include JSON's, which are all PromQL needs.
            let end = closing_double_quote(quoted)
                .unwrap_or_else(|| panic!("unterminated double-quoted expr at line {n}"));
            let json = format!("\"{}\"", &quoted[..end]);
            values.push(
                serde_json::from_str(&json)
                    .unwrap_or_else(|error| panic!("double-quoted expr at line {n}: {error}")),
            );
        } else if let Some(quoted) = value.strip_prefix('\'') {
            let unquoted = quoted.replace("''", "\u{0}");
            let (inside, _) = unquoted
                .split_once('\'')
                .unwrap_or_else(|| panic!("unterminated single-quoted expr at line {n}"));
            values.push(inside.replace('\u{0}', "'"));
        } else {
            values.push(header.to_owned());
        }
    }
    values
}

/// The byte offset of the `"` that ends a double-quoted scalar whose opening quote is already
/// stripped.
fn closing_double_quote(quoted: &str) -> Option<usize> {
    let mut escaped = false;
    for (at, c) in quoted.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(at),
            _ => {}
        }
    }
    None
}

fn dashboards_path(name: &str) -> String {
    [MANIFEST_DIR, "dashboards", name]
        .iter()
        .collect::<PathBuf>()
        .display()
        .to_string()
}

fn read_dashboards_file(name: &str) -> String {
    let path = dashboards_path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {path}: {error}"))
}
