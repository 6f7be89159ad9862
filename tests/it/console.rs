//! The operator console (`GET /console` on the admin listener) in a real headless Chromium,
//! driven over WebDriver (fantoccini → chromedriver on a free loopback port), against a real
//! gateway with real WebSocket clients and producers. One browser session walks every step, so
//! the suite pays for one browser start; each step saves a screenshot in the test's own temp
//! directory (printed at the start). A missing `chromium` or `chromedriver` fails the test with
//! the reason: `scripts/install-test-deps.sh` installs both.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{
    ADMIN_TOKEN, Gateway, PROMPTLY, config, free_port, http, publish_until, scratch_dir,
};

/// How long chromedriver and the browser may take to start.
const STARTUP: Duration = Duration::from_secs(30);

/// What every console asset must carry.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// A payload that would run script if the page ever rendered gateway strings as markup.
const XSS: &str = "<img src=x onerror=alert(1)>";

#[tokio::test]
async fn console_is_served_without_a_token_with_strict_headers() {
    let gateway = Gateway::start().await;
    let (status, headers, _) = http(gateway.admin, Method::GET, "/", &[], Bytes::new()).await;
    assert!(status.is_redirection(), "{status}");
    assert_eq!(headers["location"], "/console");
    for (path, content_type) in [
        ("/console", "text/html; charset=utf-8"),
        ("/console/console.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
    ] {
        let (status, headers, body) =
            http(gateway.admin, Method::GET, path, &[], Bytes::new()).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["content-security-policy"], CSP, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        let text = String::from_utf8(body.to_vec()).unwrap();
        // Nothing from another origin: the only absolute URL is the SVG namespace's name.
        let text = text.replace("http://www.w3.org/2000/svg", "");
        for foreign in ["http://", "https://", "\"//"] {
            assert!(!text.contains(foreign), "{path} names another origin");
        }
        // Gateway strings are never parsed as markup: no HTML-parsing setter in the script.
        for parser in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!text.contains(parser), "{path} uses {parser}");
        }
    }
    // The data is behind the token: the console's assets are not a way around it.
    let (status, _, _) = http(
        gateway.admin,
        Method::GET,
        "/admin/flags",
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_console_in_a_real_browser() {
    let config = config(true, &[("SWITCHYARD_ADMIN_ALLOW_FAULT_INJECTION", "true")]);
    let gateway = Arc::new(Gateway::start_with(config).await);
    let browser = Browser::start().await;
    let page = Page::new(browser.client.clone());
    println!("console screenshots: {}", page.shots.display());
    let scenario = tokio::spawn({
        let gateway = Arc::clone(&gateway);
        async move { scenario(&page, &gateway).await }
    })
    .await;
    // Stop the browser and the driver whatever happened, then report.
    browser.stop().await;
    Arc::into_inner(gateway)
        .expect("the scenario let go of the gateway")
        .stop()
        .await;
    if let Err(failure) = scenario {
        std::panic::resume_unwind(failure.into_panic());
    }
}

/// On a fleet node the page names every node Redis knows and the one it talks to; on one
/// process (the scenario above) it shows no fleet line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_names_the_fleet_nodes() {
    let redis = crate::fleet::RedisServer::start().await;
    let a = Arc::new(crate::fleet::node(&redis, "console", "node-a").await);
    let b = crate::fleet::node(&redis, "console", "node-b").await;
    let browser = Browser::start().await;
    let page = Page::new(browser.client.clone());
    let checked = tokio::spawn({
        let a = Arc::clone(&a);
        async move {
            sign_in(&page, &a).await;
            let line = page
                .wait_text("#fleet", "the fleet line", |t| {
                    t.contains("node-a (this page)") && t.contains("node-b")
                })
                .await;
            assert!(line.starts_with("fleet node node-a"), "{line}");
            assert!(!line.contains("UNREACHABLE"), "{line}");
            page.shot("fleet").await;
        }
    })
    .await;
    browser.stop().await;
    b.stop().await;
    Arc::into_inner(a)
        .expect("the check let go of the node")
        .stop()
        .await;
    if let Err(failure) = checked {
        std::panic::resume_unwind(failure.into_panic());
    }
}

async fn scenario(page: &Page, gateway: &Gateway) {
    sign_in(page, gateway).await;
    assert!(
        !page.visible("#fleet").await,
        "one process has no fleet line"
    );
    set_share_with_a_reason(page, gateway).await;
    ramp_shows_on_its_card(page, gateway).await;
    roll_back_one_route(page, gateway).await;
    kill_switch_engaged_and_released(page, gateway).await;
    let traffic = Traffic::start(gateway).await;
    delivery_ratio_moves(page, gateway).await;
    shadow_mismatch_diff(page, gateway, "mallory").await;
    stale_write_shows_409(page, gateway).await;
    docs_screenshots(page).await;
    markup_in_gateway_strings_is_text(page, gateway).await;
    traffic.stop().await;
}

/// `/` leads to the console; a wrong token is refused plainly; the right one shows four cards.
async fn sign_in(page: &Page, gateway: &Gateway) {
    let base = format!("http://{}", gateway.admin);
    page.client.goto(&format!("{base}/")).await.unwrap();
    let url = page.client.current_url().await.unwrap();
    assert_eq!(url.path(), "/console");
    page.wait_visible("#token").await;
    page.shot("login").await;

    page.type_into("#token", "not-the-admin-token-000000").await;
    page.click("#sign-in").await;
    let error = page
        .wait_text("#login-error", "the refusal", |t| t.contains("401"))
        .await;
    assert!(error.contains("refused this admin token"), "{error}");
    assert_eq!(page.count("#routes .card").await, 0);
    assert_eq!(
        page.session_token().await,
        Value::Null,
        "a refused token is not kept"
    );
    page.shot("wrong-token").await;

    page.type_into("#token", ADMIN_TOKEN).await;
    page.click("#sign-in").await;
    page.wait_count("#routes .card", 4).await;
    let names = page
        .script("return [...document.querySelectorAll('#routes .card h2')].map(h => h.textContent)")
        .await;
    assert_eq!(
        names,
        json!([
            "broadcast",
            "router_broadcast",
            "scoped_broadcast",
            "user_event"
        ])
    );
    assert!(!page.visible("#login-error").await);
    // The token is in this tab's sessionStorage, and nowhere a request would carry it alone.
    assert_eq!(page.session_token().await, json!(ADMIN_TOKEN));
    assert_eq!(page.script("return document.cookie").await, json!(""));
    assert_eq!(
        page.text("#card-broadcast .ratio-ssot").await,
        "—",
        "no traffic yet"
    );
    page.shot("signed-in").await;
}

/// Set `scoped_broadcast` to 25% with a reason: the flags and the audit (on the page and in the
/// API) show it, with the admin token's name as the actor.
async fn set_share_with_a_reason(page: &Page, gateway: &Gateway) {
    let card = "#card-scoped_broadcast";
    page.type_into(&format!("{card} input.share"), "25").await;
    page.click(&format!("{card} .set-share")).await;
    page.confirm("canary: scoped_broadcast to 25%").await;
    page.wait_text(&format!("{card} .split"), "the new share", |t| t == "25%")
        .await;
    page.wait_text("#notice", "the confirmation", |t| t.starts_with("Done"))
        .await;

    let flags = admin_get(gateway, "/admin/flags").await;
    assert_eq!(flags["routes"]["scoped_broadcast"]["ssot_percent"], 25.0);
    let audit = admin_get(gateway, "/admin/audit?limit=1").await;
    assert_eq!(audit[0]["actor"], "ops", "{audit}");
    assert_eq!(audit[0]["reason"], "canary: scoped_broadcast to 25%");
    assert_eq!(
        audit[0]["changes"],
        json!(["routes.scoped_broadcast.ssot_percent: 0.00 → 25.00"])
    );
    let row = page
        .wait_text("#audit tbody tr:first-child", "the audit row", |t| {
            t.contains("canary: scoped_broadcast to 25%")
        })
        .await;
    assert!(row.contains("ops"), "{row}");
    assert!(row.contains("0.00 → 25.00"), "{row}");
    page.shot("share-25").await;
}

/// A running ramp shows on its route's card, with the step it holds.
async fn ramp_shows_on_its_card(page: &Page, gateway: &Gateway) {
    let card = "#card-scoped_broadcast";
    let ramp = json!({"steps": [1, 5, 25], "step_seconds": 300});
    gateway
        .set_route("scoped_broadcast", json!({"ramp": ramp}))
        .await;
    let text = page
        .wait_text(&format!("{card} .ramp"), "the ramp", |t| {
            t.starts_with("ramp: step")
        })
        .await;
    assert!(text.contains("of 3 (1%)"), "{text}");
    assert!(text.contains("next 5%"), "{text}");
    assert_eq!(page.text(&format!("{card} .state")).await, "ramping");
    assert_eq!(page.text(&format!("{card} .split")).await, "1%");
    page.shot("ramp").await;
    gateway
        .set_route("scoped_broadcast", json!({"ramp": null}))
        .await;
    page.wait_text(&format!("{card} .state"), "the ramp's end", |t| t == "live")
        .await;
}

/// Rolling a route back latches it: the card says so, and the next producer answer is served by
/// legacy. Clearing the latch from the card puts it back on SSOT.
async fn roll_back_one_route(page: &Page, gateway: &Gateway) {
    gateway
        .set_route("user_event", json!({"ssot_percent": 100}))
        .await;
    assert_eq!(
        gateway.publish("user_event", "carol", ping()).await.path,
        "ssot"
    );
    let card = "#card-user_event";
    page.wait_text(
        &format!("{card} .latch-action"),
        "the rollback button",
        |t| t == "Roll back",
    )
    .await;
    page.click(&format!("{card} .latch-action")).await;
    page.confirm("SSOT drops frames on user_event").await;
    let latch = page
        .wait_text(&format!("{card} .latch"), "the latch", |t| {
            t.starts_with("Latched")
        })
        .await;
    assert!(latch.contains("by ops (api)"), "{latch}");
    assert!(latch.contains("SSOT drops frames on user_event"), "{latch}");
    assert_eq!(
        page.text(&format!("{card} .effective")).await,
        "0% (latched)"
    );
    assert_eq!(page.text(&format!("{card} .state")).await, "rolled back");
    let published = gateway.publish("user_event", "carol", ping()).await;
    assert_eq!(published.status, 200);
    assert_eq!(published.path, "legacy");
    page.shot("rolled-back").await;

    page.click(&format!("{card} .latch-action")).await;
    page.confirm("fix deployed").await;
    page.wait_text(&format!("{card} .latch"), "the cleared latch", |t| {
        t == "not latched"
    })
    .await;
    assert_eq!(
        gateway.publish("user_event", "carol", ping()).await.path,
        "ssot"
    );
}

/// The kill switch, engaged from the page (`POST /admin/kill-switch` with the reason and
/// `If-Match`), shows in the header and on every card and sends producers to legacy; released,
/// the routes' own flags decide again. `GET /admin/flags` and the audit agree with the page.
async fn kill_switch_engaged_and_released(page: &Page, gateway: &Gateway) {
    press_kill_switch(
        page,
        ("Engage kill switch", "incident: everything to legacy"),
        "KILL SWITCH ENGAGED: incident: everything to legacy",
    )
    .await;
    for route in [
        "router_broadcast",
        "scoped_broadcast",
        "user_event",
        "broadcast",
    ] {
        let card = format!("#card-{route}");
        page.wait_text(&format!("{card} .state"), "the card's kill switch", |t| {
            t == "kill switch"
        })
        .await;
        assert_eq!(
            page.text(&format!("{card} .effective")).await,
            "0% (kill switch)"
        );
    }
    let flags = admin_get(gateway, "/admin/flags").await;
    assert_eq!(
        flags["kill_switch"],
        json!({"engaged": true, "reason": "incident: everything to legacy"})
    );
    assert_eq!(flags["routes"]["user_event"]["ssot_percent"], 100.0);
    let audit = admin_get(gateway, "/admin/audit?limit=1").await;
    assert_eq!(audit[0]["actor"], "ops", "{audit}");
    assert_eq!(audit[0]["reason"], "incident: everything to legacy");
    assert_eq!(
        audit[0]["changes"][0],
        json!("kill_switch.engaged: false → true"),
        "{audit}"
    );
    assert_eq!(
        gateway.publish("user_event", "carol", ping()).await.path,
        "legacy"
    );
    page.shot("kill-switch").await;

    press_kill_switch(
        page,
        ("Release kill switch", "incident over"),
        "kill switch off",
    )
    .await;
    page.wait_text("#card-user_event .state", "the card back live", |t| {
        t == "live"
    })
    .await;
    assert_eq!(page.text("#card-user_event .effective").await, "100%");
    let flags = admin_get(gateway, "/admin/flags").await;
    assert_eq!(
        flags["kill_switch"],
        json!({"engaged": false, "reason": ""})
    );
    assert_eq!(
        gateway.publish("user_event", "carol", ping()).await.path,
        "ssot"
    );
}

/// Presses the header's kill-switch button once it reads `button`, confirms with `reason`, and
/// waits for the header's badge to read `badge`.
async fn press_kill_switch(page: &Page, (button, reason): (&str, &str), badge: &str) {
    page.wait_text("#kill-switch", "the kill-switch button", |t| t == button)
        .await;
    page.click("#kill-switch").await;
    page.confirm(reason).await;
    page.wait_text("#kill-state", "the kill switch's badge", |t| t == badge)
        .await;
}

/// Under traffic the path delivery ratio appears; a path fault pulls it under the guard's line.
async fn delivery_ratio_moves(page: &Page, gateway: &Gateway) {
    let cell = "#card-router_broadcast .ratio-legacy";
    page.wait_text(cell, "a delivery ratio", |t| t == "100.00%")
        .await;
    let rate = page.text("#card-router_broadcast .events-legacy").await;
    assert!(rate.parse::<f64>().unwrap() > 0.0, "events/s {rate}");
    let (status, _, body) = gateway
        .admin(
            Method::POST,
            "/admin/faults",
            Some(json!({"route": "router_broadcast", "path": "legacy", "drop_ratio": 0.5})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ratio = page
        .wait_text(cell, "a falling delivery ratio", |t| {
            t.trim_end_matches('%')
                .parse::<f64>()
                .is_ok_and(|ratio| ratio < 99.5)
        })
        .await;
    let class = page
        .script(&format!(
            "return document.querySelector('{cell}').className"
        ))
        .await;
    assert!(class.as_str().unwrap().contains("bad"), "{ratio}: {class}");
    // The chart has drawn the legacy path's ratio over time.
    let points = page
        .script("return document.querySelector('#card-router_broadcast polyline.line-legacy').getAttribute('points').split(' ').length")
        .await;
    assert!(points.as_u64().unwrap() >= 2, "{points}");
    let (status, _, _) = gateway
        .admin(Method::DELETE, "/admin/faults", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    page.shot("ratio-under-fault").await;
}

/// Shadow on from the card, then an event whose routing field names another user: the
/// mismatch's diff (pointer, primary, shadow) shows, and the route filter hides it elsewhere.
async fn shadow_mismatch_diff(page: &Page, gateway: &Gateway, named: &str) {
    let card = "#card-router_broadcast";
    if page.text(&format!("{card} .shadow")).await == "off" {
        page.click(&format!("{card} .shadow-toggle")).await;
        page.confirm("shadow before ramp").await;
        page.wait_text(&format!("{card} .shadow"), "shadow on", |t| {
            t.starts_with("on")
        })
        .await;
        let flags = admin_get(gateway, "/admin/flags").await;
        assert_eq!(flags["routes"]["router_broadcast"]["shadow"], true);
    }
    let published = gateway
        .publish(
            "router_broadcast",
            "reader-00",
            json!({"type": "agent_started", "recipient_id": named}),
        )
        .await;
    assert_eq!(published.status, 200);
    page.select("#mismatch-route", "router_broadcast").await;
    let primary = format!("\"{named}\"");
    let cell = page
        .wait_text("#mismatches li td.primary", "the mismatch diff", |t| {
            t == primary
        })
        .await;
    assert_eq!(cell, primary);
    let row = page.text("#mismatches li tr:has(td.primary)").await;
    assert!(row.contains("/recipient_id"), "{row}");
    assert!(row.contains("\"reader-00\""), "{row}");
    let head = page.text("#mismatches li p").await;
    assert!(
        head.contains("router_broadcast · user reader-00 · payload"),
        "{head}"
    );
    page.shot("mismatch").await;

    page.select("#mismatch-route", "scoped_broadcast").await;
    page.wait_count("#mismatches li", 0).await;
    page.select("#mismatch-route", "router_broadcast").await;
    page.wait_text("#mismatches li td.primary", "the diff again", |t| {
        t == primary
    })
    .await;
}

/// A change confirmed against a version someone else has moved past answers 409, shown plainly,
/// and changes nothing.
async fn stale_write_shows_409(page: &Page, gateway: &Gateway) {
    let card = "#card-broadcast";
    let before =
        admin_get(gateway, "/admin/flags").await["routes"]["broadcast"]["ssot_percent"].clone();
    assert_ne!(before, json!(5.0));
    page.type_into(&format!("{card} input.share"), "5").await;
    page.click(&format!("{card} .set-share")).await;
    page.wait_visible("#confirm-reason").await;
    // Another operator changes the flags while this one types the reason.
    gateway
        .set_route("broadcast", json!({"shadow_sample_percent": 50}))
        .await;
    page.confirm("canary 5%").await;
    let notice = page
        .wait_text("#notice", "the conflict", |t| t.contains("409"))
        .await;
    assert!(
        notice.contains("409 Conflict, nothing was changed"),
        "{notice}"
    );
    assert!(notice.contains("If-Match names version"), "{notice}");
    let flags = admin_get(gateway, "/admin/flags").await;
    assert_eq!(flags["routes"]["broadcast"]["ssot_percent"], before);
    page.shot("stale-write-409").await;
}

/// The README's two screenshots, at 1280×800 and at a phone's width.
async fn docs_screenshots(page: &Page) {
    page.script("document.querySelector('#notice').hidden = true; window.scrollTo(0, 0)")
        .await;
    for (name, width, height) in [("console", 1280, 800), ("console-phone", 390, 844)] {
        page.set_viewport(width, height).await;
        // Nothing wider than the window: the page is usable without sideways scrolling.
        let overflow = page
            .script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            .await;
        assert_eq!(overflow, json!(0), "{name} scrolls sideways");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = page.client.screenshot().await.unwrap();
        std::fs::write(page.shots.join(format!("{name}.png")), png).unwrap();
    }
    page.set_viewport(1280, 800).await;
}

/// A reason and an event field holding markup show as text and run nothing.
async fn markup_in_gateway_strings_is_text(page: &Page, gateway: &Gateway) {
    page.click("#rollback-all").await;
    page.confirm(&format!("drill {XSS}")).await;
    for card in [
        "broadcast",
        "router_broadcast",
        "scoped_broadcast",
        "user_event",
    ] {
        page.wait_text(&format!("#card-{card} .latch"), "the latch", |t| {
            t.ends_with(&format!("drill {XSS}"))
        })
        .await;
    }
    shadow_mismatch_diff(page, gateway, XSS).await;
    page.wait_text("#audit tbody tr:first-child .reason", "the audit", |t| {
        t == format!("drill {XSS}")
    })
    .await;
    assert_eq!(page.count("img").await, 0, "markup became an element");
    let alert = page.client.get_alert_text().await;
    assert!(alert.is_err(), "an alert opened: {alert:?}");
    page.shot("markup-as-text").await;
    let flags = admin_get(gateway, "/admin/flags").await;
    for (route, flags) in flags["routes"].as_object().unwrap() {
        assert_eq!(flags["latch"]["reason"], format!("drill {XSS}"), "{route}");
    }
}

fn ping() -> Value {
    json!({"type": "agent_thinking"})
}

async fn admin_get(gateway: &Gateway, path: &str) -> Value {
    let (status, _, body) = gateway.admin(Method::GET, path, None, None).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

/// Readers that take everything they are sent and a producer publishing to them on
/// `router_broadcast`.
struct Traffic {
    stop: Arc<AtomicBool>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    producer: tokio::task::JoinHandle<(u64, Option<tokio::time::Instant>)>,
}

impl Traffic {
    async fn start(gateway: &Gateway) -> Traffic {
        let (users, readers) = gateway.readers("reader", 4).await;
        let stop = Arc::new(AtomicBool::new(false));
        let producer = publish_until(
            gateway.public,
            "router_broadcast",
            users,
            0,
            Arc::clone(&stop),
        );
        Traffic {
            stop,
            readers,
            producer,
        }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let (sent, _) = self.producer.await.expect("the producer did not panic");
        assert!(sent > 0);
        for reader in self.readers {
            reader.abort();
        }
    }
}

/// chromedriver on a free loopback port and one headless Chromium session behind it, with a
/// fresh profile directory.
struct Browser {
    driver: tokio::process::Child,
    client: Client,
    profile: PathBuf,
}

impl Browser {
    async fn start() -> Browser {
        let chromium = on_path("chromium");
        let chromedriver = on_path("chromedriver");
        let port = free_port();
        let driver = tokio::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", chromedriver.display()));
        let url = format!("http://127.0.0.1:{port}");
        let profile = scratch_dir().join("chromium-profile");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let capabilities = match capabilities {
            Value::Object(map) => map,
            _ => unreachable!("a JSON object"),
        };
        let deadline = tokio::time::Instant::now() + STARTUP;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let attempt = ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await;
            match attempt {
                Ok(client) => break client,
                // The driver is still starting.
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!(
                    "no browser session from {} within {STARTUP:?}: {error}",
                    chromedriver.display()
                ),
            }
        };
        Browser {
            driver,
            client,
            profile,
        }
    }

    async fn stop(mut self) {
        // Ends the session, which quits the browser, then the driver.
        let _ = self.client.close().await;
        let _ = self.driver.kill().await;
        if let Some(dir) = self.profile.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The path of `binary` on PATH; a missing one fails the test with how to install it.
fn on_path(binary: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(binary))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{binary} is not on PATH: the console's browser tests need headless Chromium and \
                 its WebDriver; install them with scripts/install-test-deps.sh (Debian packages \
                 chromium, chromium-driver)"
            )
        })
}

/// The console page in the browser, with helpers that wait for the page's next refresh.
struct Page {
    client: Client,
    shots: PathBuf,
    taken: AtomicUsize,
}

impl Page {
    fn new(client: Client) -> Page {
        let shots = scratch_dir().join("console-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Page {
            client,
            shots,
            taken: AtomicUsize::new(0),
        }
    }

    async fn script(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|error| panic!("script {script:?}: {error}"))
    }

    /// Runs `script` with `css` as its argument.
    async fn query(&self, script: &str, css: &str) -> Value {
        self.client
            .execute(script, vec![json!(css)])
            .await
            .unwrap_or_else(|error| panic!("{css}: {error}"))
    }

    /// The `textContent` of the first element matching `css`, or "" when there is none.
    async fn text(&self, css: &str) -> String {
        let script =
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''";
        let value = self.query(script, css).await;
        value.as_str().unwrap_or_default().to_owned()
    }

    async fn count(&self, css: &str) -> usize {
        let script = "return document.querySelectorAll(arguments[0]).length";
        self.query(script, css).await.as_u64().unwrap_or_default() as usize
    }

    async fn visible(&self, css: &str) -> bool {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("{css}: {error}"))
            .is_displayed()
            .await
            .unwrap()
    }

    async fn session_token(&self) -> Value {
        self.script("return sessionStorage.getItem('switchyard.adminToken')")
            .await
    }

    /// Waits until the text of `css` satisfies `ready`; fails naming `what` and the last text.
    async fn wait_text(&self, css: &str, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        loop {
            let text = self.text(css).await;
            if ready(&text) {
                return text;
            }
            if tokio::time::Instant::now() > deadline {
                self.shot(&format!("failed-{}", what.replace(' ', "-")))
                    .await;
                panic!("{what}: {css} reads {text:?} after {PROMPTLY:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_count(&self, css: &str, want: usize) {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        while self.count(css).await != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{css}: {} elements, expected {want}",
                self.count(css).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_visible(&self, css: &str) {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        loop {
            let shown = self.client.find(Locator::Css(css)).await;
            if let Ok(element) = shown
                && element.is_displayed().await.unwrap_or(false)
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{css} is not shown");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn click(&self, css: &str) {
        self.wait_visible(css).await;
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap_or_else(|error| panic!("click {css}: {error}"));
    }

    async fn type_into(&self, css: &str, text: &str) {
        self.wait_visible(css).await;
        let input = self.client.find(Locator::Css(css)).await.unwrap();
        input.clear().await.unwrap();
        input
            .send_keys(text)
            .await
            .unwrap_or_else(|error| panic!("type into {css}: {error}"));
    }

    async fn select(&self, css: &str, value: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .select_by_value(value)
            .await
            .unwrap_or_else(|error| panic!("select {value} in {css}: {error}"));
    }

    /// Gives the open confirmation dialog its reason and confirms.
    async fn confirm(&self, reason: &str) {
        self.type_into("#confirm-reason", reason).await;
        self.click("#confirm-ok").await;
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        while self
            .script("return document.querySelector('#confirm').open")
            .await
            == json!(true)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the dialog stays open"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sizes the window so that the page itself (the viewport) is `width` × `height`.
    async fn set_viewport(&self, width: u32, height: u32) {
        let viewport = || async {
            let size = self
                .script("return [window.innerWidth, window.innerHeight]")
                .await;
            (size[0].as_u64().unwrap(), size[1].as_u64().unwrap())
        };
        self.client.set_window_size(width, height).await.unwrap();
        let (inner_width, inner_height) = viewport().await;
        self.client
            .set_window_size(
                2 * width - inner_width as u32,
                2 * height - inner_height as u32,
            )
            .await
            .unwrap();
        assert_eq!(viewport().await, (u64::from(width), u64::from(height)));
    }

    /// Saves a screenshot, numbered in step order.
    async fn shot(&self, name: &str) {
        let n = self.taken.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::write(shot_path(&self.shots, n, name), png);
        }
    }
}

fn shot_path(dir: &Path, n: usize, name: &str) -> PathBuf {
    dir.join(format!("{n:02}-{name}.png"))
}
