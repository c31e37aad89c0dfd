//! The exactly-once report: which user messages are addressed to which bot, and how bot
//! replies are matched to them.

use flotilla_sim::slack::ExactlyOnceReport;
use serde_json::{Value, json};

use super::support::*;

fn reply_md(ts: &str) -> Option<Value> {
    Some(json!({"event_type": "flotilla_reply", "event_payload": {"in_reply_to": ts}}))
}

#[tokio::test]
async fn report_counts_answers_per_addressed_message() {
    let sim = start_default().await;
    let h = sim.handle();
    let d = dm(&sim, "alice", "family");
    let general = channel(&sim, "general");
    let family = bot_user(&sim, "family");
    let ops = bot_user(&sim, "ops");

    // DM: answered once (metadata), twice (no metadata), never.
    let m1 = h.post_user_message(&d, "alice", "q1", None).unwrap().ts;
    bot_post(&sim, "family", &d, "a1", Some(&m1), reply_md(&m1)).await;
    let m2 = h.post_user_message(&d, "alice", "q2", None).unwrap().ts;
    bot_post(&sim, "family", &d, "a2", Some(&m2), None).await;
    bot_post(&sim, "family", &d, "a2 again", Some(&m2), None).await;
    let m3 = h.post_user_message(&d, "alice", "q3", None).unwrap().ts;

    // Channel: no mention = addressed to nobody; a mention; a follow-up in the thread the bot
    // answered in; a mention of the other bot answered at top level.
    h.post_user_message("general", "bob", "hello all", None).unwrap();
    let m5 = h.post_user_message("general", "bob", &format!("<@{family}> help"), None).unwrap().ts;
    bot_post(&sim, "family", &general, "helping", Some(&m5), None).await;
    let m6 = h.post_user_message("general", "bob", "thanks, one more thing", Some(&m5)).unwrap().ts;
    bot_post(&sim, "family", &general, "sure", Some(&m5), reply_md(&m6)).await;
    let m7 = h.post_user_message("general", "carol", &format!("<@{ops}|ops> status?"), None).unwrap().ts;
    bot_post(&sim, "ops", &general, "all green", None, None).await;

    // Two questions before the answers: the thread reply answers the first, the top-level
    // one the second.
    let m8 = h.post_user_message(&d, "alice", "q8", None).unwrap().ts;
    let m9 = h.post_user_message(&d, "alice", "q9", None).unwrap().ts;
    bot_post(&sim, "family", &d, "a8", Some(&m8), None).await;
    bot_post(&sim, "family", &d, "a9", None, None).await;
    // In reply to nothing known.
    bot_post(&sim, "family", &d, "stray", Some(&m1), reply_md("1.000001")).await;

    let r = h.report("family").unwrap();
    let counts: Vec<(&str, u32)> = r.messages.iter().map(|m| (m.ts.as_str(), m.replies)).collect();
    assert_eq!(
        counts,
        [
            (m1.as_str(), 1),
            (m2.as_str(), 2),
            (m3.as_str(), 0),
            (m5.as_str(), 1),
            (m6.as_str(), 1),
            (m8.as_str(), 1),
            (m9.as_str(), 1)
        ]
    );
    assert_eq!(r.unattributed_replies, 1);
    assert_eq!(r.messages[4].thread_ts.as_deref(), Some(m5.as_str()));
    assert_eq!(r.messages[0].user, h.user_id("alice").unwrap());
    let r = h.report("ops").unwrap();
    let counts: Vec<(&str, u32)> = r.messages.iter().map(|m| (m.ts.as_str(), m.replies)).collect();
    assert_eq!(counts, [(m7.as_str(), 1)]);

    let all = h.exactly_once_report();
    assert_eq!((all.sent, all.answered_once), (8, 6));
    assert_eq!(all.unanswered.iter().map(|m| m.ts.as_str()).collect::<Vec<_>>(), [m3.as_str()]);
    assert_eq!(all.doubled.iter().map(|m| (m.ts.as_str(), m.replies)).collect::<Vec<_>>(), [(m2.as_str(), 2)]);
    assert!(!all.is_exactly_once());
    assert_eq!(all.to_string(), "sent 8, answered once 6, unanswered 1, doubled 1");

    // The same over admin HTTP.
    let over_http: ExactlyOnceReport =
        client().get(format!("{}/_sim/report", sim.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(over_http, all);
    let resp = client().get(format!("{}/_sim/report/nope", sim.url())).send().await.unwrap();
    assert_eq!(resp.status(), 404);

    // Every message and reply is recorded, in order.
    let recorded = h.messages();
    assert_eq!(recorded.len(), 18);
    assert!(recorded.windows(2).all(|w| w[0].ts < w[1].ts));
    assert_eq!(recorded.iter().filter(|m| m.app.as_deref() == Some("family")).count(), 8);
}

#[tokio::test]
async fn an_empty_workspace_is_trivially_exactly_once() {
    let sim = start_default().await;
    let r = sim.handle().exactly_once_report();
    assert_eq!((r.sent, r.is_exactly_once()), (0, true));
    // Channel chatter that mentions no bot is addressed to nobody.
    sim.handle().post_user_message("random", "bob", "lunch?", None).unwrap();
    assert_eq!(sim.handle().exactly_once_report().sent, 0);
}
