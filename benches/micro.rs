//! Criterion microbenchmarks of the hot path's pieces: the cohort hash, the decision, serving one
//! event (plan and enqueue, with and without a shadow plan), the shadow payload comparison, and
//! the event path before delivery (parse to frame, SSOT's preparation, enrichment, the offline
//! marker, a fleet peer's decoding of an event message).
//! Run with `cargo bench --bench micro`; CI only builds them (clippy), never runs them.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard::microbench::{
    DecideFixture, EventFixture, PlanFixture, cohort_bucket, payload_diff,
};

fn cohort(c: &mut Criterion) {
    c.bench_function("cohort_bucket", |b| {
        b.iter(|| cohort_bucket(black_box("switchyard"), black_box("user-0042-abcdef")))
    });
}

fn decision(c: &mut Criterion) {
    let fixture = DecideFixture::new();
    c.bench_function("decide", |b| {
        b.iter(|| fixture.decide(black_box("user-0042-abcdef")))
    });
}

fn plan(c: &mut Criterion) {
    let fixture = PlanFixture::new();
    c.bench_function("serve_3_connections", |b| b.iter(|| fixture.serve(false)));
    c.bench_function("serve_3_connections_with_shadow_plan", |b| {
        b.iter(|| fixture.serve(true))
    });
}

fn comparison(c: &mut Criterion) {
    let primary = r#"{"type":"agent_thinking","recipient_id":"mallory","data":{"run_id":"r-1","steps":[1,2,3]},"timestamp":1}"#;
    let shadow = r#"{"type":"agent_thinking","recipient_id":"alice","data":{"run_id":"r-1","steps":[1,2,4]},"timestamp":2}"#;
    let ignore = vec!["timestamp".to_owned()];
    c.bench_function("payload_diff", |b| {
        b.iter(|| payload_diff(black_box(primary), black_box(shadow), &ignore))
    });
}

/// The event path before delivery: parsing and checking a ~200-byte event's body to its frame,
/// SSOT's preparation (no routing field, and one to rewrite), the legacy enrichment, the
/// offline copy's `"recovered"` marker, and a fleet peer's reading of an event message.
fn event_path(c: &mut Criterion) {
    let fixture = EventFixture::new();
    c.bench_function("parse_to_frame_200b", |b| {
        b.iter(|| fixture.parse_to_frame())
    });
    c.bench_function("ssot_prepare_no_routing_field", |b| {
        b.iter(|| fixture.ssot_prepare(false))
    });
    c.bench_function("ssot_prepare_rewrite", |b| {
        b.iter(|| fixture.ssot_prepare(true))
    });
    c.bench_function("enrich_user_event", |b| b.iter(|| fixture.enrich()));
    c.bench_function("recovered_marker", |b| b.iter(|| fixture.recovered()));
    c.bench_function("fleet_event_decode", |b| b.iter(|| fixture.fleet_decode()));
}

criterion_group!(benches, cohort, decision, plan, comparison, event_path);
criterion_main!(benches);
