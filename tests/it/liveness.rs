//! Liveness: protocol-level pings, the idle timeout, and what keeps a connection open.

use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Gateway, PROMPTLY, config};

fn quick_heartbeat() -> switchyard::Config {
    config(
        true,
        &[
            ("SWITCHYARD_LIMITS_HEARTBEAT_INTERVAL_MS", "100"),
            ("SWITCHYARD_LIMITS_IDLE_TIMEOUT_MS", "400"),
        ],
    )
}

#[tokio::test]
async fn server_pings_and_a_client_that_answers_stays_open() {
    let gateway = Gateway::start_with(quick_heartbeat()).await;
    let mut client = gateway.connect("pat").await;
    // Reading makes tungstenite answer every ping with a pong, as browsers do.
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1200);
    while let Ok(message) = tokio::time::timeout_at(deadline, client.socket.next()).await {
        match message {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("only pings expected, got {other:?}"),
        }
    }
    assert!(pings >= 5, "a ping every 100 ms, got {pings} in 1.2 s");
    // Three idle timeouts later the connection still delivers.
    let (status, _, result) = gateway
        .broadcast("pat", serde_json::json!({"type": "agent_started"}))
        .await;
    assert_eq!(
        (status.as_u16(), &result["successful_sends"]),
        (200, &1.into())
    );
    assert_eq!(client.next_json().await["type"], "agent_started");
    gateway.stop().await;
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    let gateway = Gateway::start_with(quick_heartbeat()).await;
    let mut client = gateway.connect("quinn").await;
    // Not reading means not answering pings: the client is silent.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut close = None;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(PROMPTLY, client.socket.next()).await {
        match message {
            Message::Ping(_) => continue,
            Message::Close(frame) => {
                close = frame.map(|f| u16::from(f.code));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(close, Some(1000));
    gateway
        .metric_reaches("connections_closed_total", r#"reason="idle_timeout""#, 1.0)
        .await;
    gateway.stop().await;
}
