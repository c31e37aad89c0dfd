//! Many messages while sockets keep dropping: every event ends acked, dropped or undelivered,
//! and the simulator keeps up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flotilla_sim::slack::{DropMode, SlackSimConfig};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_accounted_for_through_socket_churn() {
    const MESSAGES: u64 = 2000;
    let config = SlackSimConfig { ack_timeout: Duration::from_millis(100), ..SlackSimConfig::with_apps(["family"]) };
    let sim = Arc::new(start(config).await);
    sim.handle().create_channel("busy", &["family"]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let client_task = tokio::spawn({
        let sim = sim.clone();
        let stop = stop.clone();
        async move {
            let mut connections = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (mut ws, _) = connect(&sim, "family").await;
                connections += 1;
                while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
                    if let Message::Text(t) = msg {
                        let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                        if v["type"] == "events_api" {
                            let ack = serde_json::json!({"envelope_id": v["envelope_id"]}).to_string();
                            // The socket may have been dropped under us: reconnect.
                            if ws.send(Message::text(ack)).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            connections
        }
    });
    assert!(sim.handle().wait_for_connections("family", 1, PATIENCE).await);
    let started = Instant::now();
    let modes = [DropMode::Close, DropMode::Eof, DropMode::Reset];
    for i in 0..MESSAGES {
        sim.handle().post_user_message("busy", "alice", &format!("m{i}"), None).unwrap();
        if i % 20 == 19 {
            let old: Vec<u64> = sim.handle().connections("family").iter().map(|c| c.id).collect();
            sim.handle().drop_connections("family", modes[(i / 20) as usize % 3]).unwrap();
            // Like the chaos test: the next messages come once the client is back.
            let back =
                |h: &flotilla_sim::slack::SlackHandle| h.connections("family").iter().any(|c| !old.contains(&c.id));
            assert!(sim.handle().wait_until(PATIENCE, back).await);
        }
        if i % 5 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let settled = sim
        .handle()
        .wait_until(Duration::from_secs(30), |h| {
            let s = h.stats();
            s.envelopes_acked + s.events_dropped + s.events_undelivered == MESSAGES
        })
        .await;
    stop.store(true, Ordering::Relaxed);
    let connections = client_task.await.unwrap();
    let s = sim.handle().stats();
    assert!(settled, "{s:?}");
    // Every event was sent once (unless nobody was connected) plus its retries.
    assert_eq!(s.envelopes_sent, MESSAGES - s.events_undelivered + s.envelopes_retried, "{s:?}");
    assert!(s.envelopes_acked > 0, "{s:?}");
    assert!(connections > MESSAGES / 20, "the client reconnected after every drop ({connections})");
    assert_eq!(s.connections_opened, connections);
    eprintln!("churn: {s:?} in {:?}, {connections} connections", started.elapsed());
}
