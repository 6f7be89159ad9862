//! Generated bad input against a real gateway, for a bounded time: malformed producer bodies
//! (byte mutations of good ones, and well-formed JSON of every shape) each get a clear answer,
//! never panic the gateway and never reach a connected client; malformed and mutated flags
//! files are refused without changing the live flags, and none of them clears a rollback latch.
//!
//! The cases come from proptest strategies run with a fixed seed, so a failure reproduces; the
//! failing input is shrunk and printed.

use std::cell::Cell;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio::time::Instant;

use crate::flags_file::rolled_back;
use crate::harness::{ADMIN_TOKEN, Client, Gateway, PRODUCER_TOKEN, ROUTES, http, route_request};

/// How long each generator may run, whatever its case count: a few seconds of the suite.
const BUDGET: Duration = Duration::from_secs(4);

/// The connected user no generated body names: any frame she receives is a leak.
const VICTIM: &str = "victim";

/// A runner with a fixed seed and no failure files.
fn runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
}

/// Runs `test` on cases of `strategy` until `cases` have run or [`BUDGET`] is spent. Fails the
/// test on a failing case (shrunk and printed) or if fewer than 50 cases fit in the budget.
/// Returns how many ran.
fn run_bounded<S: Strategy>(
    cases: u32,
    strategy: &S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> u32 {
    let started = Instant::now();
    let ran = Cell::new(0u32);
    let result = runner(cases).run(strategy, |value| {
        if started.elapsed() > BUDGET {
            return Ok(());
        }
        ran.set(ran.get() + 1);
        test(value)
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    assert!(
        ran.get() >= 50,
        "only {} cases ran in {BUDGET:?}",
        ran.get()
    );
    ran.get()
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Replace { at: usize, byte: u8 },
    Truncate { at: usize },
    Repeat { at: usize, len: usize },
}

/// Fragments that make a mutation likelier to stay JSON or TOML but say something else.
const FRAGMENTS: [&[u8]; 16] = [
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"=",
    b"\n",
    b"null",
    b"true",
    b"\\u0000",
    b"\"user_id\": \"x\",",
    b"\"event\": {},",
    b"[routes.broadcast]\n",
    b"version = 1\n",
];

/// Edits anywhere; inserted and replacing bytes are any byte, or for `text` printable ASCII and
/// line breaks (a flags file that is not UTF-8 at all is one refusal, not many).
fn mutation(text: bool) -> impl Strategy<Value = Mutation> {
    let byte = if text {
        prop_oneof![0x20u8..0x7f, Just(b'\n'), Just(b'\t')].boxed()
    } else {
        any::<u8>().boxed()
    };
    let at = any::<prop::sample::Index>();
    prop_oneof![
        (at.clone(), 1..40usize).prop_map(|(at, len)| Mutation::Delete {
            at: at.index(usize::MAX),
            len
        }),
        (
            at.clone(),
            prop_oneof![
                prop::sample::select(FRAGMENTS.to_vec()).prop_map(<[u8]>::to_vec),
                prop::collection::vec(byte.clone(), 1..8),
            ]
        )
            .prop_map(|(at, bytes)| Mutation::Insert {
                at: at.index(usize::MAX),
                bytes
            }),
        (at.clone(), byte).prop_map(|(at, byte)| Mutation::Replace {
            at: at.index(usize::MAX),
            byte
        }),
        at.clone().prop_map(|at| Mutation::Truncate {
            at: at.index(usize::MAX)
        }),
        (at, 1..40usize).prop_map(|(at, len)| Mutation::Repeat {
            at: at.index(usize::MAX),
            len
        }),
    ]
}

fn apply(template: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = template.to_vec();
    for mutation in mutations {
        let n = bytes.len().max(1);
        match mutation {
            Mutation::Delete { at, len } => {
                let at = at % n;
                let end = (at + len).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Mutation::Insert { at, bytes: new } => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Replace { at, byte } => {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = *byte;
                }
            }
            Mutation::Truncate { at } => bytes.truncate(at % n),
            Mutation::Repeat { at, len } => {
                let at = at % n;
                let end = (at + len).min(bytes.len());
                if at < end {
                    let copy = bytes[at..end].to_vec();
                    bytes.splice(end..end, copy);
                }
            }
        }
    }
    bytes
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-z_ \\n\\t\\x00-\\x1f\u{e9}/]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,8}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A producer request: the endpoint, the content type and the body bytes.
#[derive(Debug, Clone)]
struct ProducerRequest {
    path: String,
    content_type: &'static str,
    body: Vec<u8>,
}

fn producer_request() -> impl Strategy<Value = ProducerRequest> {
    let route = prop::sample::select(ROUTES.to_vec());
    // Good bodies for users nobody is connected as, then mutated.
    let mutated = (
        route.clone(),
        "fz[0-9]{1,3}",
        any::<bool>(),
        prop::collection::vec(mutation(false), 1..5),
    )
        .prop_map(|(route, user, batch, mutations)| {
            let (path, body) = route_request(route, &user, json!({"type": "agent_thinking"}));
            let body = if batch { json!([body, body]) } else { body };
            let path = if batch {
                format!("{path}/batch")
            } else {
                path.to_owned()
            };
            ProducerRequest {
                path,
                content_type: "application/json",
                body: apply(body.to_string().as_bytes(), &mutations),
            }
        });
    // Well-formed JSON of any shape in the places a body has.
    let shaped = (
        route,
        json_value(),
        json_value(),
        prop::sample::select(vec![
            "application/json",
            "application/x-ndjson",
            "text/plain",
        ]),
    )
        .prop_map(|(route, user, event, content_type)| {
            let (path, _) = route_request(route, "fz", Value::Null);
            let body = match route {
                "router_broadcast" | "broadcast" => json!({"user_id": user, "event": event}),
                _ => json!({"user_context": {"user_id": user}, "event": event}),
            };
            ProducerRequest {
                path: path.to_owned(),
                content_type,
                body: body.to_string().into_bytes(),
            }
        });
    // Good envelopes with odd user ids and events: served (legacy takes any string), or
    // refused by SSOT's user id rule; either way counted right.
    let odd_ids = (
        prop::sample::select(ROUTES.to_vec()),
        "fz[a-z0-9 \n\t/._:@|\x00-]{0,6}",
        prop::collection::btree_map("[a-z_]{1,8}", json_value(), 0..3),
    )
        .prop_map(|(route, user, fields)| {
            let mut event: serde_json::Map<String, Value> = fields.into_iter().collect();
            event.insert("type".into(), "agent_thinking".into());
            let (path, body) = route_request(route, &user, Value::Object(event));
            ProducerRequest {
                path: path.to_owned(),
                content_type: "application/json",
                body: body.to_string().into_bytes(),
            }
        });
    prop_oneof![3 => mutated, 1 => shaped, 1 => odd_ids]
}

/// Whether `answer` is a clear answer to a producer call: 200 with a result, or one of the
/// documented errors with `{"error": {"code", "message"}}`.
fn check_answer(status: StatusCode, body: &[u8]) -> Result<u16, TestCaseError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        TestCaseError::fail(format!(
            "{status}: body is not JSON ({error}): {}",
            String::from_utf8_lossy(body)
        ))
    })?;
    match status.as_u16() {
        200 => Ok(200),
        code @ (400 | 413 | 415 | 422) => {
            let error = &value["error"];
            prop_assert!(
                error["code"].as_str().is_some_and(|c| !c.is_empty())
                    && error["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{status}: {value}"
            );
            Ok(code)
        }
        _ => Err(TestCaseError::fail(format!("unexpected {status}: {value}"))),
    }
}

#[test]
fn generated_bad_producer_bodies_get_a_clear_error_and_reach_nobody() {
    let rt = runtime();
    let (gateway, mut victim): (Gateway, Client) = rt.block_on(async {
        let gateway = Gateway::start().await;
        let victim = gateway.connect(VICTIM).await;
        (gateway, victim)
    });
    let served = Cell::new(0u64);
    run_bounded(400, &producer_request(), |request| {
        let headers = [
            ("content-type", request.content_type.to_owned()),
            ("authorization", format!("Bearer {PRODUCER_TOKEN}")),
        ];
        let (status, _, body) = rt.block_on(http(
            gateway.public,
            Method::POST,
            &request.path,
            &headers,
            Bytes::from(request.body.clone()),
        ));
        if check_answer(status, &body)? == 200 {
            let value: Value = serde_json::from_slice(&body).unwrap();
            // A batch's good items are served too.
            let n = value["results"].as_array().map_or(1, |items| {
                items.iter().filter(|i| i["status"] == 200).count()
            });
            served.set(served.get() + n as u64);
        }
        Ok(())
    });
    rt.block_on(async {
        // The victim got nothing, and every served event and only those were counted.
        victim.expect_silence(Duration::from_millis(200)).await;
        let mut counted = 0.0;
        for route in ROUTES {
            for path in ["legacy", "ssot"] {
                let labels = format!(r#"path="{path}",role="primary",route="{route}""#);
                counted += gateway.metric("events_total", &labels).await;
            }
        }
        assert_eq!(counted, served.get() as f64);
        // And the gateway still serves.
        let (status, _, result) = gateway.broadcast(VICTIM, json!({"type": "after"})).await;
        assert_eq!(status, StatusCode::OK, "{result}");
        assert_eq!(victim.next_json().await["type"], "after");
        drop(victim);
        gateway.stop().await;
    });
}

/// A flags file and whether it is one of the mutations of the file the gateway wrote.
fn flags_file(written: String) -> impl Strategy<Value = Vec<u8>> {
    let mutated = prop::collection::vec(mutation(true), 1..4)
        .prop_map(move |mutations| apply(written.as_bytes(), &mutations));
    let garbage = prop::collection::vec(
        prop_oneof![
            prop::sample::select(FRAGMENTS.to_vec()).prop_map(<[u8]>::to_vec),
            "[a-z_.]{1,12} = [0-9a-z\"]{0,6}\n".prop_map(String::into_bytes),
            "[ -~\n]{1,6}".prop_map(String::into_bytes),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat());
    prop_oneof![3 => mutated, 1 => garbage]
}

#[test]
fn generated_bad_flags_files_change_nothing_and_never_clear_a_latch() {
    let rt = runtime();
    let (gateway, written) = rt.block_on(async {
        let (gateway, _) = rolled_back().await;
        let written = std::fs::read_to_string(&gateway.flags_path).unwrap();
        (gateway, written)
    });
    let flags = |gateway: &Gateway| {
        rt.block_on(async {
            let (status, _, flags) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
            assert_eq!(status, StatusCode::OK);
            flags
        })
    };
    let refused = Cell::new(0u32);
    let ran = run_bounded(300, &flags_file(written), |text| {
        let before = flags(&gateway);
        std::fs::write(&gateway.flags_path, &text).unwrap();
        let headers = [("authorization", format!("Bearer {ADMIN_TOKEN}"))];
        let (status, _, body) = rt.block_on(http(
            gateway.admin,
            Method::POST,
            "/admin/flags/reload",
            &headers,
            Bytes::new(),
        ));
        let answer: Value = serde_json::from_slice(&body)
            .map_err(|e| TestCaseError::fail(format!("{status}: not JSON: {e}")))?;
        let after = flags(&gateway);
        match status.as_u16() {
            // A valid file meant to replace the flags (a mutation of a number, say).
            200 => {}
            422 => {
                refused.set(refused.get() + 1);
                prop_assert_eq!(&answer["error"]["code"], "invalid_flags");
                // The watcher may have applied a valid version of this same file first; a
                // refused one changes nothing.
                if after["version"] != before["version"] {
                    prop_assert_eq!(&after["source"], "file", "{}", after);
                }
            }
            _ => return Err(TestCaseError::fail(format!("{status}: {answer}"))),
        }
        // Whatever the file said, the rollback holds: no generated file says clear_latch.
        prop_assert!(
            after["routes"]["broadcast"]["latch"].is_object(),
            "latch cleared by {:?}: {}",
            String::from_utf8_lossy(&text),
            after
        );
        Ok(())
    });
    assert!(
        refused.get() > ran / 2,
        "{} of {ran} refused",
        refused.get()
    );
    rt.block_on(gateway.stop());
}
