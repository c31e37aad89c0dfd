//! Socket Mode: hello, envelopes, acks, redelivery, pings, disconnects, half-open sockets,
//! link_disabled, drops and connection limits.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use flotilla_sim::slack::{DisconnectReason, DropMode, EnvelopeKind, SlackFault, SlackSimConfig};
use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::support::*;

/// A short ack timeout. Tests that ack must ack within it, so it is not too short for a
/// loaded machine.
fn acks_within(ms: u64) -> SlackSimConfig {
    SlackSimConfig { ack_timeout: Duration::from_millis(ms), ..SlackSimConfig::with_apps(["family", "ops"]) }
}

#[tokio::test]
async fn hello_reports_how_many_connections_share_the_token() {
    let sim = start_default().await;
    let app = sim.handle().app("family").unwrap();
    let (_a, hello) = connect(&sim, "family").await;
    assert_eq!(hello["num_connections"], 1);
    assert_eq!(hello["connection_info"]["app_id"], app.app_id);
    assert!(hello["debug_info"]["host"].is_string());
    assert!(hello["debug_info"]["approximate_connection_time"].is_u64());
    let (_b, hello) = connect(&sim, "family").await;
    assert_eq!(hello["num_connections"], 2);
    // Another app's count is its own.
    let (_c, hello) = connect(&sim, "ops").await;
    assert_eq!(hello["num_connections"], 1);
    assert_eq!(sim.handle().connection_count("family"), 2);

    // A URL works once.
    let url = open_url(&sim, "family").await;
    let _d = connect_url(&url).await;
    assert!(tokio_tungstenite::connect_async(&url).await.is_err());
    assert!(tokio_tungstenite::connect_async(format!("ws://{}/link/?ticket=made-up", sim.addr())).await.is_err());
}

#[tokio::test]
async fn each_event_goes_to_exactly_one_connection() {
    let sim = start_default().await;
    let (mut a, _) = connect(&sim, "family").await;
    let (mut b, _) = connect(&sim, "family").await;
    let mut posted = BTreeSet::new();
    for i in 0..6 {
        let p = sim.handle().post_user_message("general", "alice", &format!("m{i}"), None).unwrap();
        assert_eq!(p.deliveries.iter().filter(|d| d.app == "family").count(), 1);
        posted.insert(p.ts);
    }
    let per_conn: Vec<usize> = sim.handle().connections("family").iter().map(|c| c.envelopes as usize).collect();
    assert_eq!(per_conn, [3, 3], "round robin over the two connections");
    let mut got = Vec::new();
    for ws in [&mut a, &mut b] {
        for _ in 0..3 {
            let env = next_event(ws).await;
            ack(ws, &env).await;
            got.push(env["payload"]["event"]["ts"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(got.len(), 6);
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), posted);
    assert!(sim.handle().wait_until(PATIENCE, |h| h.stats().envelopes_acked == 6).await);
}

#[tokio::test]
async fn envelopes_have_slacks_shape() {
    let sim = start_default().await;
    let family = sim.handle().app("family").unwrap();
    let ops = sim.handle().app("ops").unwrap();
    let alice = sim.handle().user_id("alice").unwrap();
    let general = channel(&sim, "general");
    let (mut ws, _) = connect(&sim, "family").await;
    let (mut ws_ops, _) = connect(&sim, "ops").await;

    let text = format!("<@{}> hello there", family.bot_user_id);
    let posted = sim.handle().post_user_message("general", "alice", &text, None).unwrap();
    let kinds: Vec<(&str, &str)> = posted.deliveries.iter().map(|d| (d.app.as_str(), d.event_type.as_str())).collect();
    assert_eq!(kinds, [("family", "message"), ("family", "app_mention"), ("ops", "message")]);

    let env = next_event(&mut ws).await;
    assert!(env["envelope_id"].as_str().is_some_and(|e| e.len() == 36));
    assert_eq!(
        (&env["accepts_response_payload"], &env["retry_attempt"], &env["retry_reason"]),
        (&json!(false), &json!(0), &json!(""))
    );
    let p = &env["payload"];
    assert_eq!(p["type"], "event_callback");
    assert_eq!(p["api_app_id"], family.app_id);
    assert_eq!(p["team_id"], sim.handle().workspace().team_id);
    assert!(p["event_id"].as_str().is_some_and(|e| e.starts_with("Ev")));
    assert!(p["event_time"].is_u64());
    assert_eq!(p["authorizations"][0]["user_id"], family.bot_user_id);
    let e = &p["event"];
    assert_eq!((e["type"].as_str(), e["channel_type"].as_str()), (Some("message"), Some("channel")));
    assert_eq!((e["user"].as_str(), e["text"].as_str()), (Some(alice.as_str()), Some(text.as_str())));
    assert_eq!((e["ts"].as_str(), e["event_ts"].as_str()), (Some(posted.ts.as_str()), Some(posted.ts.as_str())));
    assert_eq!(e["channel"], general);
    assert!(e["client_msg_id"].is_string());
    assert!(e.get("thread_ts").is_none());
    let message_event_id = p["event_id"].clone();
    ack(&mut ws, &env).await;

    let env = next_event(&mut ws).await;
    let e = &env["payload"]["event"];
    assert_eq!(e["type"], "app_mention");
    assert_eq!((e["ts"].as_str(), e["channel"].as_str()), (Some(posted.ts.as_str()), Some(general.as_str())));
    assert_ne!(env["payload"]["event_id"], message_event_id);
    ack(&mut ws, &env).await;

    // The other bot sees the message but no mention.
    let env = next_event(&mut ws_ops).await;
    assert_eq!(env["payload"]["event"]["type"], "message");
    assert_eq!(env["payload"]["api_app_id"], ops.app_id);
    ack(&mut ws_ops, &env).await;

    // A DM reply in a thread.
    let d = dm(&sim, "alice", "family");
    let parent = sim.handle().post_user_message(&d, "alice", "in a dm", None).unwrap();
    let reply = sim.handle().post_user_message(&d, "alice", "follow-up", Some(&parent.ts)).unwrap();
    assert_eq!(reply.deliveries.len(), 1, "only the DM's bot: {:?}", reply.deliveries);
    let first = next_event(&mut ws).await;
    assert_eq!(first["payload"]["event"]["channel_type"], "im");
    ack(&mut ws, &first).await;
    let env = next_event(&mut ws).await;
    let e = &env["payload"]["event"];
    assert_eq!((e["channel_type"].as_str(), e["thread_ts"].as_str()), (Some("im"), Some(parent.ts.as_str())));
    assert_eq!(e["parent_user_id"], alice);
    ack(&mut ws, &env).await;

    // The bot's own post comes back as a message event with its bot_id.
    bot_post(&sim, "family", &d, "answer", Some(&parent.ts), None).await;
    let env = next_event(&mut ws).await;
    let e = &env["payload"]["event"];
    assert_eq!(
        (e["bot_id"].as_str(), e["user"].as_str()),
        (Some(family.bot_id.as_str()), Some(family.bot_user_id.as_str()))
    );
    assert!(e.get("client_msg_id").is_none());
}

#[tokio::test]
async fn bot_messages_are_not_echoed_when_configured_so() {
    let sim = start(SlackSimConfig { echo_bot_messages: false, ..SlackSimConfig::with_apps(["family"]) }).await;
    let (_ws, _) = connect(&sim, "family").await;
    bot_post(&sim, "family", &channel(&sim, "general"), "quiet", None, None).await;
    assert_eq!(sim.handle().stats().envelopes_sent, 0);
    sim.handle().post_user_message("general", "bob", "loud", None).unwrap();
    assert_eq!(sim.handle().stats().envelopes_sent, 1);
}

#[tokio::test]
async fn unacked_envelopes_are_redelivered_with_retry_attempt() {
    let sim = start(acks_within(1000)).await;
    let (mut ws, _) = connect(&sim, "family").await;
    let acked = sim.handle().post_user_message("random", "alice", "acked", None).unwrap();
    let env = next_event(&mut ws).await;
    assert_eq!(env["payload"]["event"]["ts"], acked.ts.as_str());
    ack(&mut ws, &env).await;
    assert!(sim.handle().wait_until(PATIENCE, |h| h.stats().envelopes_acked == 1).await);

    let ignored = sim.handle().post_user_message("random", "alice", "ignored", None).unwrap();
    let first = next_event(&mut ws).await;
    let event_id = first["payload"]["event_id"].clone();
    assert_eq!(first["payload"]["event"]["ts"], ignored.ts.as_str());
    let mut envelope_ids = BTreeSet::from([first["envelope_id"].as_str().unwrap().to_owned()]);
    for attempt in 1..=3 {
        let env = next_event(&mut ws).await;
        // The acked message is never sent again: its deadline came first.
        assert_eq!(env["payload"]["event"]["ts"], ignored.ts.as_str());
        assert_eq!(env["payload"]["event_id"], event_id);
        assert_eq!((&env["retry_attempt"], &env["retry_reason"]), (&json!(attempt), &json!("timeout")));
        envelope_ids.insert(env["envelope_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(envelope_ids.len(), 4, "each delivery has its own envelope id");
    assert!(sim.handle().wait_until(PATIENCE, |h| h.stats().events_dropped == 1).await);
    let stats = sim.handle().stats();
    assert_eq!((stats.envelopes_sent, stats.envelopes_retried), (5, 3));

    // Acking a retry stops the retries.
    let third = sim.handle().post_user_message("random", "alice", "acked late", None).unwrap();
    let _first = next_event(&mut ws).await;
    let retry = next_event(&mut ws).await;
    assert_eq!((&retry["payload"]["event"]["ts"], &retry["retry_attempt"]), (&json!(third.ts), &json!(1)));
    ack(&mut ws, &retry).await;
    assert!(sim.handle().wait_until(PATIENCE, |h| h.stats().envelopes_acked == 2).await);
    // A fourth message's first retry is the next thing on the socket: nothing more of the
    // third came in between.
    let fourth = sim.handle().post_user_message("random", "alice", "fourth", None).unwrap();
    let a = next_event(&mut ws).await;
    let b = next_event(&mut ws).await;
    assert_eq!((&a["payload"]["event"]["ts"], &a["retry_attempt"]), (&json!(fourth.ts), &json!(0)));
    assert_eq!((&b["payload"]["event"]["ts"], &b["retry_attempt"]), (&json!(fourth.ts), &json!(1)));
}

#[tokio::test]
async fn redelivery_moves_to_another_connection() {
    let sim = start(acks_within(200)).await;
    let (mut a, _) = connect(&sim, "ops").await;
    let (mut b, _) = connect(&sim, "ops").await;
    sim.handle().post_user_message("general", "carol", "who gets it", None).unwrap();
    // Round robin: the first envelope goes to the second connection, the retry to the first.
    let first = next_event(&mut b).await;
    let retry = next_event(&mut a).await;
    assert_eq!(retry["payload"]["event_id"], first["payload"]["event_id"]);
    assert_eq!(retry["retry_attempt"], 1);
    ack(&mut a, &retry).await;
    assert!(sim.handle().wait_until(PATIENCE, |h| h.stats().envelopes_acked == 1).await);
}

#[tokio::test]
async fn messages_sent_while_disconnected_only_reach_history() {
    let sim = start_default().await;
    let missed = sim.handle().post_user_message("general", "bob", "while away", None).unwrap();
    assert!(missed.deliveries.iter().all(|d| d.envelope_id.is_none()));
    assert_eq!(sim.handle().stats().events_undelivered, 2);
    let (mut ws, _) = connect(&sim, "family").await;
    let live = sim.handle().post_user_message("general", "bob", "back", None).unwrap();
    let env = next_event(&mut ws).await;
    assert_eq!(env["payload"]["event"]["ts"], live.ts.as_str(), "the missed message is not replayed");
    let v =
        call(&sim, &bot_token(&sim, "family"), "conversations.history", json!({"channel": channel(&sim, "general")}))
            .await;
    let texts: Vec<&str> = v["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["back", "while away"]);
}

#[tokio::test]
async fn pings_get_pongs() {
    let sim = start_default().await;
    let (mut ws, _) = connect(&sim, "family").await;
    ws.send(Message::Ping(b"are you there".to_vec().into())).await.unwrap();
    match next_frame(&mut ws).await {
        Some(Ok(Message::Pong(p))) => assert_eq!(&p[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    assert!(sim.handle().wait_until(PATIENCE, |h| h.stats().pings_answered == 1).await);
}

#[tokio::test]
async fn silenced_sockets_are_half_open() {
    let sim = start_default().await;
    let (mut ws, _) = connect(&sim, "family").await;
    assert_eq!(sim.handle().silence("family").unwrap(), 1);
    // Two pings reach the simulator; by the time the second is read, the first one's pong
    // has been written, into the void.
    for n in 1..=2 {
        ws.send(Message::Ping(b"hello?".to_vec().into())).await.unwrap();
        assert!(sim.handle().wait_until(PATIENCE, |h| h.stats().pings_ignored == n).await);
    }
    let posted = sim.handle().post_user_message("general", "alice", "into the void", None).unwrap();
    assert!(posted.deliveries.iter().any(|d| d.app == "family" && d.envelope_id.is_some()));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), futures::StreamExt::next(&mut ws)).await.is_err(),
        "nothing arrives"
    );
    // Still connected as far as the simulator knows.
    let conns = sim.handle().connections("family");
    assert_eq!((conns.len(), conns[0].silent), (1, true));
    // A new connection is healthy, and says two connections share the token.
    let (mut fresh, hello) = connect(&sim, "family").await;
    assert_eq!(hello["num_connections"], 2);
    fresh.send(Message::Ping(b"x".to_vec().into())).await.unwrap();
    assert!(matches!(next_frame(&mut fresh).await, Some(Ok(Message::Pong(_)))));
    // The client gives up on the silent one: the simulator notices the close.
    drop(ws);
    assert!(sim.handle().wait_for_connections("family", 1, PATIENCE).await);
}

#[tokio::test]
async fn pongs_can_be_delayed() {
    let sim = start_default().await;
    let (mut ws, _) = connect(&sim, "family").await;
    sim.handle().set_pong_delay("family", Duration::from_millis(300)).unwrap();
    let started = Instant::now();
    ws.send(Message::Ping(b"slow".to_vec().into())).await.unwrap();
    assert!(matches!(next_frame(&mut ws).await, Some(Ok(Message::Pong(_)))));
    assert!(started.elapsed() >= Duration::from_millis(300));
    // New connections inherit the delay; clearing it applies at once.
    let (mut other, _) = connect(&sim, "family").await;
    let started = Instant::now();
    other.send(Message::Ping(b"slow too".to_vec().into())).await.unwrap();
    assert!(matches!(next_frame(&mut other).await, Some(Ok(Message::Pong(_)))));
    assert!(started.elapsed() >= Duration::from_millis(300));
    sim.handle().set_pong_delay("family", Duration::ZERO).unwrap();
    ws.send(Message::Ping(b"fast".to_vec().into())).await.unwrap();
    assert!(matches!(next_frame(&mut ws).await, Some(Ok(Message::Pong(_)))));
}

#[tokio::test]
async fn disconnect_warning_lets_the_client_reconnect_first() {
    let sim = start_default().await;
    let (mut old, _) = connect(&sim, "family").await;
    let n = sim.handle().disconnect("family", DisconnectReason::Warning, Some(Duration::from_secs(3))).unwrap();
    assert_eq!(n, 1);
    let msg = next_json(&mut old).await;
    assert_eq!((msg["type"].as_str(), msg["reason"].as_str()), (Some("disconnect"), Some("warning")));
    assert!(msg["debug_info"]["host"].is_string());
    // The replacement opens before the old one closes.
    let (mut new, hello) = connect(&sim, "family").await;
    assert_eq!(hello["num_connections"], 2);
    // New events go to the new connection while the old one drains.
    for i in 0..2 {
        let p = sim.handle().post_user_message("general", "alice", &format!("during {i}"), None).unwrap();
        let env = next_event(&mut new).await;
        assert_eq!(env["payload"]["event"]["ts"], p.ts.as_str());
        ack(&mut new, &env).await;
    }
    let (saw_close, _) = until_closed(&mut old).await;
    assert!(saw_close, "closed with a close frame");
    assert!(sim.handle().wait_for_connections("family", 1, PATIENCE).await);
    assert_eq!(sim.handle().stats().disconnects_sent["warning"], 1);
}

#[tokio::test]
async fn refresh_requested_is_sent_and_the_socket_closes_after_the_grace() {
    let sim = start_default().await;
    let (mut ws, _) = connect(&sim, "ops").await;
    sim.handle()
        .inject(SlackFault::Disconnect {
            app: "ops".into(),
            reason: DisconnectReason::RefreshRequested,
            grace_ms: Some(100),
        })
        .unwrap();
    let msg = next_json(&mut ws).await;
    assert_eq!(msg["reason"], "refresh_requested");
    assert!(until_closed(&mut ws).await.0);
    // Unlike link_disabled, a new connection works.
    let (_ws, hello) = connect(&sim, "ops").await;
    assert_eq!(hello["num_connections"], 1);
}

#[tokio::test]
async fn link_disabled_closes_and_refuses_new_connections() {
    let sim = start_default().await;
    let (mut ws, _) = connect(&sim, "family").await;
    let spare_url = open_url(&sim, "family").await;
    sim.handle().disconnect("family", DisconnectReason::LinkDisabled, None).unwrap();
    let msg = next_json(&mut ws).await;
    assert_eq!((msg["type"].as_str(), msg["reason"].as_str()), (Some("disconnect"), Some("link_disabled")));
    assert!(until_closed(&mut ws).await.0);
    let v = call(&sim, &app_token(&sim, "family"), "apps.connections.open", json!({})).await;
    assert_eq!(err(&v), "access_denied");
    assert!(tokio_tungstenite::connect_async(&spare_url).await.is_err(), "URLs issued before are dead too");
    assert!(sim.handle().app("family").unwrap().link_disabled);
    // The other app is unaffected; re-enabling restores the link.
    connect(&sim, "ops").await;
    sim.handle().inject(SlackFault::EnableLink { app: "family".into() }).unwrap();
    connect(&sim, "family").await;
}

#[tokio::test]
async fn sockets_can_be_dropped_three_ways() {
    let sim = start_default().await;
    let (mut ws, _) = connect(&sim, "family").await;
    sim.handle().drop_connections("family", DropMode::Close).unwrap();
    assert!(until_closed(&mut ws).await.0, "a close frame first");

    let (mut ws, _) = connect(&sim, "family").await;
    sim.handle().drop_connections("family", DropMode::Eof).unwrap();
    let (saw_close, _) = until_closed(&mut ws).await;
    assert!(!saw_close, "no close frame");

    let (mut ws, _) = connect(&sim, "family").await;
    sim.handle().drop_connections("family", DropMode::Reset).unwrap();
    let (saw_close, error) = until_closed(&mut ws).await;
    assert!(!saw_close);
    let reset = matches!(&error, Some(tokio_tungstenite::tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset);
    assert!(reset, "connection reset, got {error:?}");
    assert!(sim.handle().wait_for_connections("family", 0, PATIENCE).await);
    assert_eq!(sim.handle().stats().connections_closed, 3);
}

#[tokio::test]
async fn too_many_connections_get_too_many_websockets() {
    let sim = start(SlackSimConfig { max_connections_per_app: 1, ..SlackSimConfig::with_apps(["family"]) }).await;
    let (_first, _) = connect(&sim, "family").await;
    let mut second = connect_url(&open_url(&sim, "family").await).await;
    let msg = next_json(&mut second).await;
    assert_eq!((msg["type"].as_str(), msg["reason"].as_str()), (Some("disconnect"), Some("too_many_websockets")));
    until_closed(&mut second).await;
    assert_eq!(sim.handle().connection_count("family"), 1);
}

#[tokio::test]
async fn slash_commands_and_interactive_envelopes() {
    let sim = start_default().await;
    let (mut ws, _) = connect(&sim, "family").await;
    let id = sim.handle().send_slash_command("family", "general", "bob", "/ask", "what time is it").unwrap().unwrap();
    let env = next_json(&mut ws).await;
    assert_eq!((env["type"].as_str(), env["envelope_id"].as_str()), (Some("slash_commands"), Some(id.as_str())));
    assert_eq!(env["accepts_response_payload"], true);
    assert!(env.get("retry_attempt").is_none());
    let p = &env["payload"];
    assert_eq!(
        (p["command"].as_str(), p["text"].as_str(), p["channel_name"].as_str()),
        (Some("/ask"), Some("what time is it"), Some("general"))
    );
    assert_eq!(p["user_id"], sim.handle().user_id("bob").unwrap());
    assert!(p["response_url"].as_str().unwrap().starts_with("https://hooks.slack.com/commands/"));
    assert_eq!(sim.handle().envelope_ack(&id), None);
    let answer = json!({"text": "noon"});
    ws.send(Message::text(json!({"envelope_id": id, "payload": answer}).to_string())).await.unwrap();
    assert!(sim.handle().wait_until(PATIENCE, |h| h.envelope_ack(&id).is_some()).await);
    assert_eq!(sim.handle().envelope_ack(&id), Some(Some(answer)));

    let payload = json!({"type": "block_actions", "actions": [{"action_id": "yes"}]});
    let id = sim.handle().send_envelope("family", EnvelopeKind::Interactive, payload.clone()).unwrap().unwrap();
    let env = next_json(&mut ws).await;
    assert_eq!(
        (env["type"].as_str(), env["envelope_id"].as_str(), &env["payload"]),
        (Some("interactive"), Some(id.as_str()), &payload)
    );
    // Over admin HTTP too; an app without connections gets nothing.
    let v: Value = client()
        .post(format!("{}/_sim/slash_commands", sim.url()))
        .json(&json!({"app": "ops", "channel": "general", "user": "bob", "command": "/x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["envelope_id"], Value::Null);
}

#[tokio::test]
async fn shutdown_closes_sockets() {
    let sim = start_default().await;
    let (mut ws, _) = connect(&sim, "family").await;
    let handle = sim.handle().clone();
    sim.shutdown().await.unwrap();
    assert!(until_closed(&mut ws).await.0);
    assert_eq!(handle.connection_count("family"), 0);
}
