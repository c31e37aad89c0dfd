//! `flotilla demo --quick` end to end: the real binary, its exit code and its report.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "test setup failures should panic with context")]

use std::process::Command;

#[test]
fn quick_demo_loses_nothing_and_the_primary_comes_back() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_flotilla")).args(["demo", "--quick", "--json"]).output().expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let r: serde_json::Value = serde_json::from_str(&stdout).expect("json report");
    assert!(r["sent"].as_u64().is_some_and(|n| n > 100), "{r}");
    assert_eq!(r["sent"], r["answered"]);
    assert_eq!(r["failed"], 0);
    assert_eq!(r["lost"], 0);
    assert_eq!(r["passed"], true);
    // During the outage nothing was answered by Anthropic; before it, nothing by OpenAI.
    let during = r["phases"]["outage"]["by_model"].as_object().expect("outage phase");
    assert!(during.keys().all(|m| m.starts_with("openai/")), "{during:?}");
    let before = r["phases"]["before"]["by_model"].as_object().expect("before phase");
    assert!(before.keys().all(|m| m.starts_with("anthropic/")), "{before:?}");
    assert!(r["phases"]["after"]["by_model"]["anthropic/claude-opus-4-6"].as_u64().is_some_and(|n| n > 0));
    // Slack users talked to both agents through socket faults: nothing lost or doubled.
    assert!(r["slack"]["messages_sent"].as_u64().is_some_and(|n| n > 10), "{r}");
    assert_eq!(r["slack"]["messages_sent"], r["slack"]["answered"]);
    assert_eq!(r["slack"]["lost"], 0);
    assert_eq!(r["slack"]["doubled"], 0);
    assert!(r["slack"]["socket_faults"].as_u64().is_some_and(|n| n >= 2), "{r}");
    // The live summary went to stderr.
    assert!(stderr.contains("[during outage]"), "{stderr}");
}

#[test]
fn fleet_demo_applies_the_fix_everywhere_and_moves_a_dead_nodes_agents() {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["demo", "--nodes", "3", "--quick", "--json"])
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fleet demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let r: serde_json::Value = serde_json::from_str(&stdout).expect("json report");
    assert_eq!(r["nodes"], 3);
    assert!(r["store"].as_str().is_some_and(|s| s.starts_with("sqlite:")), "{r}");
    // Without a fallback the overload left messages waiting; the fix was applied to every node.
    assert!(r["waiting_before_fix"].as_u64().is_some_and(|n| n > 0), "{r}");
    assert_eq!(r["fix_version"], 2);
    // A node was killed and its agents moved; every message answered exactly once.
    assert!(r["moved"].as_array().is_some_and(|m| !m.is_empty()), "{r}");
    assert!(r["takeover_ms"].as_u64().is_some_and(|ms| ms > 0), "{r}");
    assert!(r["messages_sent"].as_u64().is_some_and(|n| n > 20), "{r}");
    assert_eq!(r["messages_sent"], r["answered"]);
    assert_eq!((r["lost"].as_u64(), r["doubled"].as_u64()), (Some(0), Some(0)));
    assert_eq!(r["passed"], true);
}
