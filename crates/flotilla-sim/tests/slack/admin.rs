//! The `/_sim/` admin endpoints.

use flotilla_sim::slack::{ConnectionInfo, PostedMessage, RecordedMessage, SlackStats, WorkspaceInfo};
use serde_json::{Value, json};

use super::support::*;

async fn post(sim: &flotilla_sim::slack::SlackSim, path: &str, body: Value) -> (u16, Value) {
    let resp = client().post(format!("{}{path}", sim.url())).json(&body).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn users_post_and_the_workspace_is_visible_over_http() {
    let sim = start_default().await;
    let c = client();
    let health: Value = c.get(format!("{}/_sim/health", sim.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(health, json!({"ok": true, "kind": "slack"}));

    let ws: WorkspaceInfo = c.get(format!("{}/_sim/workspace", sim.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(ws, sim.handle().workspace());
    assert_eq!(ws.apps.len(), 2);
    assert!(ws.apps.iter().all(|a| a.app_token.starts_with("xapp-1-") && a.bot_token.starts_with("xoxb-")));
    assert_eq!(ws.users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["alice", "bob", "carol"]);
    // Two public channels and one DM per (user, app).
    assert_eq!(ws.channels.iter().filter(|c| c.is_im).count(), 6);

    let (mut sock, _) = connect(&sim, "family").await;
    let (status, v) = post(&sim, "/_sim/messages", json!({"channel": "general", "user": "alice", "text": "hi"})).await;
    assert_eq!(status, 200);
    let posted: PostedMessage = serde_json::from_value(v).unwrap();
    let env = next_event(&mut sock).await;
    assert_eq!(env["payload"]["event"]["ts"], posted.ts.as_str());
    ack(&mut sock, &env).await;
    let (status, v) = post(
        &sim,
        "/_sim/messages",
        json!({"channel": "general", "user": "alice", "text": "in thread", "thread_ts": posted.ts}),
    )
    .await;
    assert_eq!((status, v["thread_ts"].as_str()), (200, Some(posted.ts.as_str())));

    let (status, v) = post(&sim, "/_sim/messages", json!({"channel": "general", "user": "mallory", "text": "x"})).await;
    assert_eq!(status, 404, "{v}");
    let (status, _) = post(&sim, "/_sim/messages", json!({"channel": "nowhere", "user": "alice", "text": "x"})).await;
    assert_eq!(status, 404);
    let (status, _) = post(
        &sim,
        "/_sim/messages",
        json!({"channel": "general", "user": "alice", "text": "x", "thread_ts": "1.000001"}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(&sim, "/_sim/messages", json!({"channel": "general"})).await;
    assert_eq!(status, 400);
    // Alice is not in bob's DM.
    let (status, _) =
        post(&sim, "/_sim/messages", json!({"channel": dm(&sim, "bob", "family"), "user": "alice", "text": "x"})).await;
    assert_eq!(status, 400);

    let msgs: Vec<RecordedMessage> =
        c.get(format!("{}/_sim/messages", sim.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(msgs.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["hi", "in thread"]);

    let conns: Vec<ConnectionInfo> =
        c.get(format!("{}/_sim/apps/family/connections", sim.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].envelopes, 2);
    let resp = c.get(format!("{}/_sim/apps/nope/connections", sim.url())).send().await.unwrap();
    assert_eq!(resp.status(), 404);

    let stats: SlackStats = c.get(format!("{}/_sim/stats", sim.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!((stats.user_messages, stats.connections_opened), (2, 1));
    c.delete(format!("{}/_sim/stats", sim.url())).send().await.unwrap();
    assert_eq!(sim.handle().stats(), SlackStats::default());
}

#[tokio::test]
async fn faults_channels_and_envelopes_over_http() {
    let sim = start_default().await;
    let (mut sock, _) = connect(&sim, "family").await;
    let (status, v) =
        post(&sim, "/_sim/faults", json!({"kind": "disconnect", "app": "family", "reason": "warning", "grace_ms": 50}))
            .await;
    assert_eq!((status, &v["affected"]), (200, &json!(1)));
    assert_eq!(next_json(&mut sock).await["reason"], "warning");
    until_closed(&mut sock).await;

    let (status, v) = post(&sim, "/_sim/faults", json!({"kind": "drop_connections", "app": "nope"})).await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = post(&sim, "/_sim/faults", json!({"kind": "no_such_fault"})).await;
    assert_eq!(status, 400, "{v}");
    let (status, _) = post(&sim, "/_sim/faults", json!({"kind": "fail_posts", "count": 1, "status": 42})).await;
    assert_eq!(status, 400);
    let (status, _) = post(&sim, "/_sim/faults", json!({"kind": "fail_posts", "count": 1})).await;
    assert_eq!(status, 200);
    let v = call(
        &sim,
        &bot_token(&sim, "family"),
        "chat.postMessage",
        json!({"channel": channel(&sim, "general"), "text": "x"}),
    )
    .await;
    assert_eq!(err(&v), "internal_error");

    let (status, v) = post(&sim, "/_sim/channels", json!({"name": "ops-room", "apps": ["ops"]})).await;
    assert_eq!(status, 200);
    let id = v["id"].as_str().unwrap().to_owned();
    let (status, _) = post(&sim, "/_sim/channels", json!({"name": "ops-room"})).await;
    assert_eq!(status, 409);
    let token = bot_token(&sim, "family");
    assert_eq!(err(&call(&sim, &token, "conversations.history", json!({"channel": id})).await), "not_in_channel");
    let (status, _) = post(&sim, &format!("/_sim/channels/{id}/bots"), json!({"app": "family"})).await;
    assert_eq!(status, 200);
    ok(&call(&sim, &token, "conversations.history", json!({"channel": id})).await);

    let (mut sock, _) = connect(&sim, "family").await;
    let (status, v) =
        post(&sim, "/_sim/envelopes", json!({"app": "family", "type": "interactive", "payload": {"type": "shortcut"}}))
            .await;
    assert_eq!(status, 200);
    let env = next_json(&mut sock).await;
    assert_eq!((&env["envelope_id"], &env["payload"]["type"]), (&v["envelope_id"], &json!("shortcut")));
    ack(&mut sock, &env).await;
    let id = v["envelope_id"].as_str().unwrap().to_owned();
    assert!(sim.handle().wait_until(PATIENCE, |h| h.envelope_ack(&id).is_some()).await);
    let v: Value =
        client().get(format!("{}/_sim/envelopes/{id}/ack", sim.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(v, json!({"acked": true, "payload": null}));
}
