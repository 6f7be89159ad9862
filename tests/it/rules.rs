//! The shipped dashboards (README.md, Metrics) hold together: `dashboards/rules/*.yml` passes
//! `promtool check rules` and the unit tests `dashboards/tests/*.yml` pass `promtool test rules`,
//! each glob as the README spells it (so nothing but rules sits in `rules/`), the Grafana
//! dashboard `dashboards/switchyard.json` has its variables and a query in every panel, and every
//! PromQL expression of the dashboard and the rules parses as Prometheus parses it (through
//! promtool).
//!
//! [`dashboard_expressions`] and [`rule_expressions`] give those expressions, ready to run, to
//! the tests that evaluate them against a real Prometheus scraping a real gateway.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::harness::{promtool, scratch_dir};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// What the dashboard's variables stand for when its queries are run outside Grafana: every
/// job, instance and route, and a 1m window (the rules' window, long enough for a 1 s scrape interval).
const GRAFANA_VARIABLES: &[(&str, &str)] = &[
    ("${route}", ".*"),
    ("$route", ".*"),
    ("${job}", ".*"),
    ("$job", ".*"),
    ("${instance}", ".*"),
    ("$instance", ".*"),
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
    "switchyard_route_effective_ssot_percent",
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

/// The `expr` of every rule (recording and alerting) in `dashboards/rules/*.yml`, file by file
/// in name order, each in file order.
pub fn rule_expressions() -> Vec<String> {
    rule_files()
        .iter()
        .flat_map(|path| expr_values(&read_file(path)))
        .collect()
}

/// What the shell makes of `dashboards/rules/*.yml`: the rules files, in name order.
pub fn rule_files() -> Vec<String> {
    dashboards_glob("rules")
}

/// `promtool check rules dashboards/rules/*.yml` or `promtool test rules dashboards/tests/*.yml`,
/// as the README spells them: `(success, report)`.
async fn promtool_on_glob(command: &str, dir: &str) -> (bool, String) {
    let files = dashboards_glob(dir);
    assert!(!files.is_empty(), "no dashboards/{dir}/*.yml");
    let args: Vec<&str> = [command, "rules"]
        .into_iter()
        .chain(files.iter().map(String::as_str))
        .collect();
    promtool(&args, None).await
}

#[tokio::test]
async fn alert_rules_pass_promtool_check() {
    let (success, report) = promtool_on_glob("check", "rules").await;
    assert!(
        success,
        "promtool check rules dashboards/rules/*.yml failed:\n{report}"
    );
}

#[tokio::test]
async fn alert_rules_pass_their_unit_tests() {
    let (success, report) = promtool_on_glob("test", "tests").await;
    assert!(
        success,
        "promtool test rules dashboards/tests/*.yml failed:\n{report}"
    );
}

#[test]
fn the_readme_gives_the_globs_that_work() {
    let readme = std::fs::read_to_string(format!("{MANIFEST_DIR}/README.md")).unwrap();
    for glob in [
        "rule_files: [dashboards/rules/*.yml]",
        "promtool check rules dashboards/rules/*.yml",
        "promtool test rules dashboards/tests/*.yml",
    ] {
        assert!(readme.contains(glob), "README.md does not say `{glob}`");
    }
    // Nothing else in dashboards/ looks like a rules file a broader glob would pick up.
    let stray: Vec<String> = dashboards_glob("")
        .into_iter()
        .filter(|path| path.ends_with(".yml") || path.ends_with(".yaml"))
        .collect();
    assert!(stray.is_empty(), "YAML beside the dashboard: {stray:?}");
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
    for (name, query) in [
        ("job", "label_values(switchyard_build_info, job)"),
        (
            "instance",
            r#"label_values(switchyard_build_info{job=~"$job"}, instance)"#,
        ),
        (
            "route",
            r#"label_values(switchyard_events_total{job=~"$job", instance=~"$instance"}, route)"#,
        ),
    ] {
        let variable = variable(name);
        assert_eq!(variable["type"], "query", "{variable}");
        assert_eq!(variable["query"], query, "{variable}");
        assert_eq!(variable["definition"], variable["query"], "{variable}");
        assert_eq!(variable["multi"], true, "{variable}");
        assert_eq!(variable["includeAll"], true, "{variable}");
        assert_eq!(variable["allValue"], ".*", "{variable}");
        assert_eq!(variable["datasource"]["uid"], "${datasource}", "{variable}");
    }
    let runbook = variable("runbook");
    assert_eq!(runbook["type"], "textbox", "{runbook}");

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
    let ratio = panels
        .iter()
        .copied()
        .filter(|p| p["type"] == "timeseries")
        .find(|p| {
            p["targets"].as_array().is_some_and(|targets| {
                targets.iter().any(|t| {
                    t["expr"].as_str().is_some_and(|e| {
                        e.contains(r#"outcome="delivered""#)
                            && e.contains(r#"outcome=~"delivered|write_error|path_error""#)
                    })
                })
            })
        })
        .expect("a path delivery ratio panel over time");
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

    // Every query of a switchyard metric honours the job and instance variables, and every
    // query of a per-route metric the route variable, as regexes.
    for (source, expr) in &expressions {
        for (at, _) in expr.match_indices("switchyard_") {
            if expr[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let rest = &expr[at..];
            let name_end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let selector = rest[name_end..]
                .strip_prefix('{')
                .and_then(|inside| inside.split_once('}'))
                .map_or("", |(matchers, _)| matchers);
            let wanted: &[&str] = if source.starts_with("variable \"job\"") {
                &[]
            } else if source.starts_with("variable \"instance\"") {
                &[r#"job=~"$job""#]
            } else {
                &[r#"job=~"$job""#, r#"instance=~"$instance""#]
            };
            for matcher in wanted {
                assert!(
                    selector.contains(matcher),
                    "{source}: {} without {matcher}: {expr}",
                    &rest[..name_end]
                );
            }
        }
    }
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

/// The dashboard reads top-down (README.md, Dashboard and alerts): the summary row first, with
/// the effective share (not the flag's), the path delivery ratio, the route state in distinct
/// colours, rollbacks in range, the mismatch ratio and a flags file panel that can turn red;
/// counters as whole numbers; latency that draws nothing rather than NaN; runbook links.
#[test]
fn dashboard_reads_top_down() {
    let dashboard = dashboard();
    let top = dashboard["panels"].as_array().expect("panels");
    assert_eq!(top[0]["type"], "row", "{}", top[0]);
    assert_eq!(top[0]["title"], "Summary");
    // The summary's panels are those before the next row, all above it.
    let summary: Vec<&Value> = top[1..]
        .iter()
        .take_while(|panel| panel["type"] != "row")
        .collect();
    let next_row = &top[1 + summary.len()];
    assert!(
        next_row["type"] == "row" && next_row["repeat"] == "route",
        "{next_row}"
    );
    let summary_bottom = summary
        .iter()
        .map(|p| p["gridPos"]["y"].as_u64().unwrap() + p["gridPos"]["h"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(summary_bottom <= next_row["gridPos"]["y"].as_u64().unwrap());
    let titled = |title: &str| -> &Value {
        summary
            .iter()
            .copied()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no summary panel {title:?}"))
    };
    let exprs = |panel: &Value| -> Vec<String> {
        panel["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["expr"].as_str().unwrap().to_owned())
            .collect()
    };
    let share = exprs(titled("Effective SSOT share")).join("\n");
    assert!(
        share.contains("switchyard_route_effective_ssot_percent"),
        "{share}"
    );
    assert!(!share.contains("switchyard_flag_ssot_percent"), "{share}");
    let ratio = exprs(titled("Path delivery ratio")).join("\n");
    assert!(
        ratio.contains(r#"outcome=~"delivered|write_error|path_error""#),
        "{ratio}"
    );
    let rollbacks = titled("Rollbacks in range");
    assert!(exprs(rollbacks)[0].starts_with("round("), "{rollbacks}");
    assert_eq!(rollbacks["fieldConfig"]["defaults"]["decimals"], 0);
    assert!(
        exprs(titled("Unexpected shadow mismatch ratio"))[0]
            .contains("switchyard_shadow_unexpected_mismatches_total")
    );

    // Each route state has a colour of its own, and shadow on is not latched's.
    let state = titled("Route state");
    let mapping = &state["fieldConfig"]["defaults"]["mappings"][0]["options"];
    let colours: Vec<&str> = (0..=4)
        .map(|n| {
            mapping[n.to_string()]["color"]
                .as_str()
                .expect("a colour per state")
        })
        .collect();
    let mut distinct = colours.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), colours.len(), "{colours:?}");
    for text in ["shadow on", "ramping", "LATCHED", "KILL SWITCH"] {
        assert!(mapping.to_string().contains(text), "{mapping}");
    }

    // The flags file panel turns red: a 0 in `persisted`, and any rejected reload.
    let flags = titled("Flags file");
    let overrides = flags["fieldConfig"]["overrides"].as_array().unwrap();
    let red_for = |ref_id: &str| {
        overrides
            .iter()
            .find(|o| o["matcher"]["options"] == ref_id)
            .is_some_and(|o| o.to_string().contains("\"red\""))
    };
    assert!(
        red_for("B") && red_for("C") && red_for("D"),
        "{overrides:?}"
    );
    assert_eq!(flags["options"]["colorMode"], "background");

    // Integer counters: an `increase` over a counter is rounded wherever it is shown as a count.
    for (source, expr) in raw_dashboard_expressions(&dashboard) {
        if expr.contains("increase(") && !source.starts_with("annotation") {
            assert!(expr.contains("round("), "{source}: {expr}");
        }
        // NaN-free quantiles: only over route×path that saw something in the interval.
        if expr.contains("histogram_quantile(") {
            assert!(expr.contains("and on (route, path)"), "{source}: {expr}");
        }
    }

    // Links to the runbook, from the dashboard and from every summary panel.
    let links = dashboard["links"].as_array().expect("links");
    assert!(
        links
            .iter()
            .any(|l| l["url"] == "${runbook}#operating-a-migration"),
        "{links:?}"
    );
    for panel in &summary {
        assert!(
            panel["links"].to_string().contains("${runbook}#"),
            "{}",
            panel["title"]
        );
    }
    let readme = std::fs::read_to_string(format!("{MANIFEST_DIR}/README.md")).unwrap();
    for anchor in [
        "Operating a migration",
        "Ramp a route",
        "Dashboard and alerts",
    ] {
        assert!(
            readme.contains(&format!("## {anchor}\n")),
            "README.md has no {anchor}"
        );
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
            .map(|(n, expr)| (format!("dashboards/rules rule {}", n + 1), expr)),
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
async fn rule_expressions_are_read_whole_from_the_rules_files() {
    let files = rule_files();
    let expressions = rule_expressions();
    let n_rules = files
        .iter()
        .flat_map(|path| {
            read_file(path)
                .lines()
                .map(str::trim_start)
                .filter(|line| line.starts_with("- record:") || line.starts_with("- alert:"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .count();
    assert_eq!(
        expressions.len(),
        n_rules,
        "one expr per rule: {expressions:#?}"
    );
    // promtool counts the rules the same way.
    let (success, report) = promtool_on_glob("check", "rules").await;
    assert!(success, "{report}");
    let counted: usize = report
        .lines()
        .filter_map(|line| line.trim().strip_prefix("SUCCESS: "))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<usize>().ok())
        .sum();
    assert_eq!(counted, n_rules, "{report}");
    assert!(
        expressions.iter().any(|e| e.contains('\n')),
        "the rules have block scalars: {expressions:#?}"
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
/// plain or quoted scalars, indentation indicators) is not supported: the rules do not use it,
/// and `rule_expressions_are_read_whole_from_the_rules_files` would catch it if they started to.
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

/// The files `dashboards/DIR/*` names (every file, `*.yml` under `rules/` and `tests/`), in name
/// order, as the shell's glob gives them.
fn dashboards_glob(dir: &str) -> Vec<String> {
    let path = dashboards_path(dir);
    let mut files: Vec<String> = std::fs::read_dir(&path)
        .unwrap_or_else(|error| panic!("read {path}: {error}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .filter(|path| dir.is_empty() || path.extension().is_some_and(|ext| ext == "yml"))
        .map(|path| path.display().to_string())
        .collect();
    files.sort();
    files
}

fn read_file(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("read {path}: {error}"))
}

fn read_dashboards_file(name: &str) -> String {
    read_file(&dashboards_path(name))
}
