//! The `/_sim/` admin endpoints and what the handle records.

use flotilla_sim::{FaultStatus, RecordedRequest, SimConfig, SimStats, key_fingerprint};
use serde_json::{Value, json};

use super::support::*;

#[tokio::test]
async fn faults_can_be_added_listed_and_removed_over_http() {
    let sim = start(SimConfig::anthropic()).await;
    let c = client();
    let base = sim.url();
    let resp = c
        .post(format!("{base}/_sim/faults"))
        .json(&json!({"fault": {"kind": "overloaded"}, "model": "claude-opus-4-6"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.json::<Value>().await.unwrap()["id"].as_u64().unwrap();

    assert_eq!(anthropic_post(&sim, &user_body("claude-opus-4-6", "x")).await.status(), 529);
    assert_eq!(anthropic_post(&sim, &user_body("claude-haiku-4-5", "x")).await.status(), 200);

    let list: Vec<FaultStatus> = c.get(format!("{base}/_sim/faults")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].id, list[0].fired, list[0].active), (id, 1, true));

    let del = c.delete(format!("{base}/_sim/faults/{id}")).send().await.unwrap();
    assert_eq!(del.status(), 200);
    let again = c.delete(format!("{base}/_sim/faults/{id}")).send().await.unwrap();
    assert_eq!(again.status(), 404);
    assert_eq!(anthropic_post(&sim, &user_body("claude-opus-4-6", "x")).await.status(), 200);

    // An outage started and ended at run time.
    for _ in 0..2 {
        c.post(format!("{base}/_sim/faults"))
            .json(&json!({"fault": {"kind": "rate_limited", "retry_after_secs": 2}, "count": 5}))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(anthropic_post(&sim, &user_body("claude-opus-4-6", "x")).await.status(), 429);
    let cleared: Value = c.delete(format!("{base}/_sim/faults")).send().await.unwrap().json().await.unwrap();
    assert_eq!(cleared["removed"], 2);
    assert_eq!(anthropic_post(&sim, &user_body("claude-opus-4-6", "x")).await.status(), 200);
}

#[tokio::test]
async fn bad_fault_rules_are_refused() {
    let sim = start(SimConfig::openai()).await;
    let c = client();
    for bad in [
        json!({"fault": {"kind": "meltdown"}}),
        json!({"fault": {"kind": "overloaded"}, "probabilty": 0.5}),
        json!({"fault": {"kind": "overloaded"}, "probability": 2.0}),
        json!({"fault": {"kind": "cut_mid_stream", "after_events": 1}, "non_stream_only": true}),
    ] {
        let resp = c.post(format!("{}/_sim/faults", sim.url())).json(&bad).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().starts_with("invalid fault rule: "));
    }
    assert!(sim.handle().faults().is_empty());
}

#[tokio::test]
async fn stats_and_requests_over_http() {
    let sim = start(SimConfig::anthropic()).await;
    let c = client();
    let base = sim.url();
    anthropic_post(&sim, &user_body("claude-opus-4-6", "first")).await;
    anthropic_post(&sim, &user_body("claude-sonnet-4-5", "second")).await;
    let stats: SimStats = c.get(format!("{base}/_sim/stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats.requests_total, 2);
    assert_eq!(stats.by_model["claude-opus-4-6"], 1);
    assert_eq!(stats.by_path["/v1/messages"], 2);
    assert_eq!(stats.by_status[&200], 2);
    assert!(stats.output_tokens >= 48);

    let text = c.get(format!("{base}/_sim/requests")).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("sk-ant-test-key-0001"), "the key is never recorded");
    let recs: Vec<RecordedRequest> = serde_json::from_str(&text).unwrap();
    assert_eq!(recs.len(), 2);
    let r = &recs[0];
    assert_eq!((r.seq, r.path.as_str(), r.status), (1, "/v1/messages", 200));
    assert_eq!(r.model.as_deref(), Some("claude-opus-4-6"));
    assert_eq!(r.auth_header.as_deref(), Some("x-api-key"));
    assert_eq!(r.key_fingerprint, Some(key_fingerprint("sk-ant-test-key-0001")));
    assert!(!r.headers.contains_key("x-api-key"));
    assert_eq!(r.headers["anthropic-version"], "2023-06-01");
    assert_eq!(r.body["messages"][0]["content"], "first");

    c.delete(format!("{base}/_sim/requests")).send().await.unwrap();
    c.delete(format!("{base}/_sim/stats")).send().await.unwrap();
    assert!(sim.handle().requests().is_empty());
    assert_eq!(sim.handle().stats(), SimStats::default());

    let health: Value = c.get(format!("{base}/_sim/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health, json!({"ok": true, "kind": "anthropic"}));
}

#[tokio::test]
async fn record_limit_keeps_the_newest() {
    let sim = start(SimConfig { record_limit: 2, ..SimConfig::anthropic() }).await;
    for text in ["a", "b", "c"] {
        anthropic_post(&sim, &user_body("claude-opus-4-6", text)).await;
    }
    let recs = sim.handle().requests();
    let seen: Vec<&str> = recs.iter().map(|r| r.body["messages"][0]["content"].as_str().unwrap()).collect();
    assert_eq!(seen, ["b", "c"]);
    assert_eq!(sim.handle().stats().requests_total, 3);
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let sim = start(SimConfig::anthropic()).await;
    let url = sim.url();
    assert_eq!(anthropic_post(&sim, &user_body("claude-opus-4-6", "x")).await.status(), 200);
    sim.shutdown().await.unwrap();
    let err = client().get(format!("{url}/_sim/health")).send().await;
    assert!(err.is_err(), "nothing listens after shutdown");
}
