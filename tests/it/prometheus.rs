//! End to end with a real Prometheus (Debian's 2.42, installed by scripts/install-test-deps.sh)
//! scraping a real gateway every second with the shipped rules loaded: traffic on every route and
//! path with shadow mismatches, a stalled client, an SSOT degradation by fault injection that the
//! guard rolls back, a rejected flags reload, an unpersisted change, and finally the gateway going
//! away. Every dashboard query and every recording rule must return data; every alert expression
//! must evaluate, and each alert the scenario can honestly cause must return data.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::harness::{
    Gateway, Producer, config, free_port, http, keep_one_stalled, parse_json, scratch_dir,
};
use crate::rules::{dashboard_expressions, rule_expressions};

const WINDOW_SECONDS: u64 = 4;
/// `global.external_labels.runbook_base` of the test's Prometheus.
const RUNBOOK_BASE: &str = "https://runbooks.example/switchyard/README.md";

/// A Prometheus server scraping `target` every second, killed on drop.
struct Prometheus {
    /// Held for `kill_on_drop`.
    _child: Child,
    addr: SocketAddr,
}

impl Prometheus {
    async fn start(target: SocketAddr) -> Prometheus {
        let dir = scratch_dir();
        // The README's glob, as an operator writes it into prometheus.yml, and the runbook base
        // the alerts' runbook_url is built from.
        let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/rules/*.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n  external_labels:\n    \
             runbook_base: {RUNBOOK_BASE}\nrule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: switchyard\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        // Prometheus cannot report a port it chose, so take a free one from the kernel first.
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("prometheus: {error}; run scripts/install-test-deps.sh")
            });
        let prometheus = Prometheus {
            _child: child,
            addr,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                let (status, _, _) =
                    http(addr, Method::GET, "/-/ready", &[], Default::default()).await;
                if status == 200 {
                    return prometheus;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The result vector of an instant query (panics on a query error).
    async fn query(&self, expr: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", percent_encode(expr));
        let (status, _, body) = http(self.addr, Method::GET, &path, &[], Default::default()).await;
        let answer = parse_json(&body);
        assert_eq!(status, 200, "{expr}: {answer}");
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The JSON answer of a GET on the HTTP API.
    async fn api(&self, path: &str) -> Value {
        let (status, _, body) = http(self.addr, Method::GET, path, &[], Default::default()).await;
        let answer = parse_json(&body);
        assert_eq!(status, 200, "{path}: {answer}");
        answer
    }

    /// Waits until `expr` returns data.
    async fn wait_for(&self, expr: &str, within: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let result = self.query(expr).await;
            if !result.is_empty() {
                return result;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no data within {within:?} for {expr}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn value_of(sample: &Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

/// Publishes on every route until `stop`: mostly to connected users, some to offline users and
/// some with a routing field naming someone else, so shadowed routes see mismatches.
async fn traffic(addr: SocketAddr, users: Vec<String>, stop: Arc<AtomicBool>) {
    let mut producer = Producer::connect(addr).await;
    let mut n = 0usize;
    while !stop.load(Ordering::Acquire) {
        for route in crate::harness::ROUTES {
            let (user, event) = match n % 10 {
                0 => (format!("offline-{n}"), json!({"type": "agent_started"})),
                1 => (
                    users[n % users.len()].clone(),
                    json!({"type": "agent_thinking", "recipient_id": "mallory"}),
                ),
                _ => (
                    users[n % users.len()].clone(),
                    json!({"type": "tool_executing"}),
                ),
            };
            let published = producer.publish(route, &user, event).await;
            assert_eq!(published.status, 200, "{route}: {}", published.body);
        }
        if n % 25 == 0 {
            // Short-lived clients and a bad token now and then, for the closes and auth panels.
            let url = format!("ws://{addr}/ws?user_id=passer-by");
            if let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await {
                let _ = socket.close(None).await;
            }
            let headers = [
                ("content-type", "application/json".to_owned()),
                ("authorization", "Bearer not-a-producer-token".to_owned()),
            ];
            let (status, _, _) =
                http(addr, Method::POST, "/v1/broadcast", &headers, "{}".into()).await;
            assert_eq!(status, 401);
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_sees_every_series_the_dashboard_and_rules_use() {
    let config = config(
        true,
        &[
            ("SWITCHYARD_ADMIN_ALLOW_FAULT_INJECTION", "true"),
            ("SWITCHYARD_LIMITS_SEND_QUEUE_BYTES", "65536"),
        ],
    );
    std::fs::write(
        &config.server.flags_path,
        format!(
            "[routes.router_broadcast]\nssot_percent = 100\nshadow = true\n\n\
             [routes.scoped_broadcast]\nssot_percent = 0\nshadow = true\n\n\
             [routes.user_event]\nssot_percent = 50\nshadow = true\n\n\
             [guard]\nwindow_seconds = {WINDOW_SECONDS}\nmin_events = 30\nconsecutive_breaches = 2\n"
        ),
    )
    .unwrap();
    let gateway = Gateway::start_with(config).await;
    let prometheus = Prometheus::start(gateway.admin).await;

    let (users, readers) = gateway.readers("viewer", 20).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(traffic(gateway.public, users.clone(), Arc::clone(&stop)));
    // A client that stops reading, again and again, on the canonical route (all SSOT): its
    // losses are the client-caused drops the dashboard shows apart, and never roll back.
    let (stalled, stalled_load) =
        keep_one_stalled(&gateway, "broadcast", "stalled-viewer", Arc::clone(&stop));

    // Enough scrapes for rates over every route and path.
    prometheus
        .wait_for(
            r#"switchyard:delivery_ratio:rate1m{route="user_event",path="legacy"}"#,
            Duration::from_secs(30),
        )
        .await;

    // A rejected reload: a bad flags file saved over the good one.
    let bad = gateway.flags_path.with_extension("bad");
    std::fs::write(&bad, "[routes.nope]\nshadow = true\n").unwrap();
    std::fs::rename(&bad, &gateway.flags_path).unwrap();

    // SSOT degrades on router_broadcast; the guard must roll it back.
    gateway
        .inject_fault(json!({"route": "router_broadcast", "path": "ssot", "drop_ratio": 0.3, "reason": "e2e drill"}))
        .await;
    let faulted_at = tokio::time::Instant::now();
    let deadline = faulted_at + Duration::from_secs(WINDOW_SECONDS + 3);
    loop {
        let (_, _, flags) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
        if flags["routes"]["router_broadcast"]["latch"]["trigger"] == "guard" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no guard rollback within one window plus an evaluation: {flags}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ratio = prometheus
        .wait_for(
            r#"switchyard:delivery_ratio:rate1m{route="router_broadcast",path="ssot"} < 0.995"#,
            Duration::from_secs(10),
        )
        .await;
    assert!(value_of(&ratio[0]) < 0.995);
    prometheus
        .wait_for(
            r#"switchyard_rollbacks_total{route="router_broadcast",trigger="guard"} == 1"#,
            Duration::from_secs(10),
        )
        .await;

    // The delivery-ratio alert stays quiet: the guard's rollback already answered the breach
    // its expression sees (without the `unless` clauses, it returns the route).
    let ratio_alert = rule_expressions()
        .into_iter()
        .find(|expr| {
            expr.starts_with(r#"switchyard:path_delivery_ratio:rate1m{path="ssot"} < 0.995"#)
        })
        .expect("the SSOT delivery ratio alert");
    let (breach, _) = ratio_alert
        .split_once("unless")
        .expect("the alert is inhibited by `unless`");
    let breached = prometheus.wait_for(breach, Duration::from_secs(10)).await;
    assert_eq!(
        breached[0]["metric"]["route"], "router_broadcast",
        "{breached:?}"
    );
    assert!(
        prometheus.query(&ratio_alert).await.is_empty(),
        "the delivery ratio alert fires for a route the guard has latched"
    );
    // Prometheus loaded every rule through the glob, and the rollback alert links the runbook
    // under the configured base.
    let rules = prometheus.api("/api/v1/rules").await;
    let loaded: usize = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| group["rules"].as_array().unwrap().len())
        .sum();
    assert_eq!(loaded, rule_expressions().len(), "{rules}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let rollback_alert = loop {
        let alerts = prometheus.api("/api/v1/alerts").await;
        let found = alerts["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|alert| alert["labels"]["alertname"] == "SwitchyardRollbackFired")
            .cloned();
        if let Some(alert) = found {
            break alert;
        }
        assert!(tokio::time::Instant::now() < deadline, "{alerts}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        rollback_alert["annotations"]["runbook_url"],
        format!("{RUNBOOK_BASE}#operating-a-migration"),
        "{rollback_alert}"
    );

    // A change that cannot be written back: the file is read-only.
    let mut permissions = std::fs::metadata(&gateway.flags_path)
        .unwrap()
        .permissions();
    permissions.set_readonly(true);
    std::fs::set_permissions(&gateway.flags_path, permissions).unwrap();
    gateway
        .set_route("broadcast", json!({"shadow": true}))
        .await;
    prometheus
        .wait_for("switchyard_flags_persisted == 0", Duration::from_secs(10))
        .await;

    // Traffic kept flowing on legacy after the rollback, every frame delivered.
    prometheus
        .wait_for(
            r#"switchyard:delivery_ratio:rate1m{route="router_broadcast",path="legacy"} == 1"#,
            Duration::from_secs(10),
        )
        .await;

    // Every dashboard query returns data.
    for expr in dashboard_expressions() {
        let result = prometheus.query(&expr).await;
        assert!(
            !result.is_empty(),
            "dashboard query returned nothing: {expr}"
        );
    }
    // Every rule expression evaluates; all return data but the two a correct gateway cannot
    // cause (a cross-user plan, unexpected mismatches), the gateway being down (next) and its
    // target missing from Prometheus altogether.
    let mut empty = Vec::new();
    for expr in rule_expressions() {
        if prometheus.query(&expr).await.is_empty() {
            empty.push(expr);
        }
    }
    // An SSOT path that makes its clients slower than legacy's is, like the first two, a defect
    // a correct gateway cannot cause (the guard's property and unit tests cover that rule). The
    // SSOT delivery ratio alert is answered by the rollback (checked above).
    let cannot_happen = |expr: &str| {
        expr.contains(r#"kind="cross_user""#)
            || expr == ratio_alert
            || expr.contains("switchyard:shadow_unexpected_mismatch_ratio:rate1m > 0.01")
            || expr.contains(r#"switchyard:client_drop_ratio:rate1m{path="ssot"}"#)
            || expr.contains(r#"up{job="switchyard"} == 0"#)
            || expr.contains(r#"absent(up{job="switchyard"})"#)
    };
    assert!(
        empty.iter().all(|expr| cannot_happen(expr)),
        "rule expressions without data: {empty:#?}"
    );
    assert_eq!(empty.len(), 6, "{empty:#?}");
    // The stalled client's losses are there, on the client's side of the table only.
    let lost = prometheus
        .query(r#"switchyard:client_drops:rate1m{route="broadcast",path="ssot"} > 0"#)
        .await;
    assert!(
        !lost.is_empty(),
        "the stalled client's drops reach Prometheus"
    );
    let path_ratio = prometheus
        .query(r#"switchyard:path_delivery_ratio:rate1m{route="broadcast",path="ssot"}"#)
        .await;
    assert_eq!(value_of(&path_ratio[0]), 1.0, "{path_ratio:?}");
    for path in ["ssot", "legacy"] {
        let inputs = prometheus
            .query(&format!(
                r#"switchyard:client_drop_ratio:rate1m{{route="user_event",path="{path}"}}"#
            ))
            .await;
        assert!(!inputs.is_empty(), "client drop ratio of user_event {path}");
    }
    // Their inputs are there all the same.
    let unexpected = prometheus
        .query("switchyard:shadow_unexpected_mismatch_ratio:rate1m")
        .await;
    assert!(!unexpected.is_empty());
    let cross_user = prometheus
        .query(r#"switchyard_shadow_mismatches_total{kind="cross_user"}"#)
        .await;
    assert_eq!(cross_user.len(), 4, "one series per route");

    stop.store(true, Ordering::Release);
    load.await.unwrap();
    stalled.await.unwrap();
    let (_, rolled_back) = stalled_load.await.unwrap();
    assert_eq!(
        rolled_back, None,
        "the stalled client never rolled broadcast back"
    );
    let mut permissions = std::fs::metadata(&gateway.flags_path)
        .unwrap()
        .permissions();
    #[allow(
        clippy::permissions_set_readonly_false,
        reason = "a scratch file the test made read-only"
    )]
    permissions.set_readonly(false);
    std::fs::set_permissions(&gateway.flags_path, permissions).unwrap();
    for reader in readers {
        reader.abort();
    }
    gateway.stop().await;
    // The gateway is gone: the down alert's expression fires on the next scrape.
    prometheus
        .wait_for(r#"up{job="switchyard"} == 0"#, Duration::from_secs(10))
        .await;
    drop(prometheus);
}
