//! Behaviour of the journal through its public API: dedupe, turn states, outbox, history,
//! catch-up cursors, compaction, restarts, a full database and a second opener.

#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns should panic on setup failures")]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_journal::{
    Clock, HistoryEntry, InboundMessage, Journal, JournalError, JournalOptions, ManualClock, OutboundReply, Recorded,
    Retention, Role, Source, TurnState,
};

const APP: &str = "helper-app";
const AGENT: &str = "helper";
const CHAN: &str = "C0001";

fn start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_712_000_000)
}

fn msg(ts: &str, event_id: Option<&str>, source: Source) -> InboundMessage {
    InboundMessage {
        app: APP.into(),
        agent: AGENT.into(),
        conversation: CHAN.into(),
        ts: ts.into(),
        thread_ts: None,
        user: "U1".into(),
        text: format!("hello at {ts}"),
        event_id: event_id.map(Into::into),
        source,
        raw: Some("{}".into()),
    }
}

fn in_thread(ts: &str, thread_ts: &str) -> InboundMessage {
    InboundMessage { thread_ts: Some(thread_ts.into()), ..msg(ts, None, Source::Socket) }
}

fn reply(thread_ts: Option<&str>, text: &str, key: &str) -> OutboundReply {
    OutboundReply {
        app: APP.into(),
        conversation: CHAN.into(),
        thread_ts: thread_ts.map(Into::into),
        text: text.into(),
        idempotency_key: key.into(),
    }
}

fn options(path: &Path, clock: &ManualClock) -> JournalOptions {
    JournalOptions { clock: Arc::new(clock.clone()), ..JournalOptions::new(path) }
}

async fn open(path: &Path, clock: &ManualClock) -> Journal {
    Journal::open(options(path, clock)).await.unwrap()
}

fn new_id(r: Recorded) -> i64 {
    match r {
        Recorded::New { turn_id } => turn_id,
        Recorded::Duplicate { turn_id } => panic!("expected a new turn, got a duplicate of {turn_id}"),
    }
}

#[tokio::test]
async fn dedupe_across_the_four_arrival_paths() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let j = open(&dir.path().join("j.db"), &clock).await;

    // 1. The `message` event over the socket.
    let turn = new_id(j.record_inbound(msg("1712000000.000100", Some("Ev1"), Source::Socket)).await.unwrap());
    // 2. Slack retries the same envelope (same event_id).
    assert_eq!(
        j.record_inbound(msg("1712000000.000100", Some("Ev1"), Source::Socket)).await.unwrap(),
        Recorded::Duplicate { turn_id: turn }
    );
    // 3. The `app_mention` event for the same message: another event_id, same ts.
    assert_eq!(
        j.record_inbound(msg("1712000000.000100", Some("Ev2"), Source::Socket)).await.unwrap(),
        Recorded::Duplicate { turn_id: turn }
    );
    // 4. Catch-up finds it in conversations.history: no event_id.
    assert_eq!(
        j.record_inbound(msg("1712000000.000100", None, Source::CatchUp)).await.unwrap(),
        Recorded::Duplicate { turn_id: turn }
    );
    // The second event id was remembered, so a retry of it is recognised even when the message
    // it carries cannot be matched (here: a different ts, as if the identity were unknown).
    assert_eq!(j.event_seen(APP, "Ev2").await.unwrap(), Some(turn));
    assert_eq!(
        j.record_inbound(msg("1712000099.000000", Some("Ev2"), Source::Socket)).await.unwrap(),
        Recorded::Duplicate { turn_id: turn }
    );

    // Different identities are different turns.
    let other_ts = new_id(j.record_inbound(msg("1712000000.000200", None, Source::Socket)).await.unwrap());
    let mut other_chan = msg("1712000000.000100", None, Source::Socket);
    other_chan.conversation = "C0002".into();
    let other_chan = new_id(j.record_inbound(other_chan).await.unwrap());
    let mut other_app = msg("1712000000.000100", Some("Ev1"), Source::Socket);
    other_app.app = "other-app".into();
    let other_app = new_id(j.record_inbound(other_app).await.unwrap());
    assert_eq!([turn, other_ts, other_chan, other_app].iter().collect::<std::collections::HashSet<_>>().len(), 4);

    let stats = j.stats().await.unwrap();
    assert_eq!(stats.inbound_total, 4);
    assert_eq!(stats.unfinished_turns, 4);
    let t = j.turn(turn).await.unwrap().unwrap();
    assert_eq!(t.state, TurnState::Received);
    assert_eq!(t.message.event_id.as_deref(), Some("Ev1"));
    assert_eq!(t.message.source, Source::Socket);
}

#[tokio::test]
async fn dedupe_and_turn_state_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/j.db");
    let clock = ManualClock::new(start());
    let j = open(&path, &clock).await;
    let turn = new_id(j.record_inbound(msg("1712000000.000100", Some("Ev1"), Source::Socket)).await.unwrap());
    j.begin_turn(turn).await.unwrap();
    j.close().await.unwrap();
    assert!(matches!(j.stats().await, Err(JournalError::Closed)));
    j.close().await.unwrap();

    let j = open(&path, &clock).await;
    for m in [
        msg("1712000000.000100", Some("Ev1"), Source::Socket),
        msg("1712000000.000100", Some("Ev9"), Source::Socket),
        msg("1712000000.000100", None, Source::CatchUp),
    ] {
        assert_eq!(j.record_inbound(m).await.unwrap(), Recorded::Duplicate { turn_id: turn });
    }
    let t = j.turn(turn).await.unwrap().unwrap();
    assert_eq!((t.state, t.attempts), (TurnState::Thinking, 1));
    assert_eq!(j.last_seen(APP, CHAN).await.unwrap().as_deref(), Some("1712000000.000100"));
    assert!(j.integrity_check().await.unwrap().is_empty());
}

#[tokio::test]
async fn turn_state_machine_allows_only_legal_transitions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let j = open(&dir.path().join("j.db"), &clock).await;
    let a = new_id(j.record_inbound(msg("1712000000.000001", None, Source::Socket)).await.unwrap());

    // Received cannot be replied to before thinking.
    let err = j.complete_turn(a, reply(None, "r", "k0")).await.unwrap_err();
    assert!(
        matches!(err, JournalError::IllegalTransition { turn_id, from: "received", to: "replied" } if turn_id == a),
        "{err}"
    );
    assert_eq!(j.begin_turn(a).await.unwrap(), 1);
    // Resuming a turn that was thinking when the process died counts a second attempt.
    assert_eq!(j.begin_turn(a).await.unwrap(), 2);
    j.complete_turn(a, reply(None, "r", "k1")).await.unwrap();
    for (what, err) in [
        ("begin", j.begin_turn(a).await.unwrap_err()),
        ("fail", j.fail_turn(a, "x").await.unwrap_err()),
        ("skip", j.skip_turn(a).await.unwrap_err()),
        ("complete", j.complete_turn(a, reply(None, "r", "k2")).await.unwrap_err()),
    ] {
        assert!(matches!(err, JournalError::IllegalTransition { from: "replied", .. }), "{what}: {err}");
        assert_eq!(err.http_status(), 409);
        assert!(!err.may_have_written());
    }
    assert_eq!(j.turn(a).await.unwrap().unwrap().state, TurnState::Replied);

    let b = new_id(j.record_inbound(msg("1712000000.000002", None, Source::Socket)).await.unwrap());
    j.begin_turn(b).await.unwrap();
    j.fail_turn(b, "provider outage").await.unwrap();
    assert_eq!(j.turn(b).await.unwrap().unwrap().state, TurnState::Failed { reason: "provider outage".into() });
    assert!(matches!(j.begin_turn(b).await, Err(JournalError::IllegalTransition { from: "failed", .. })));

    let c = new_id(j.record_inbound(msg("1712000000.000003", None, Source::Socket)).await.unwrap());
    j.skip_turn(c).await.unwrap();
    assert_eq!(j.turn(c).await.unwrap().unwrap().state, TurnState::Skipped);
    assert!(matches!(j.begin_turn(c).await, Err(JournalError::IllegalTransition { from: "skipped", .. })));

    assert!(matches!(j.begin_turn(9999).await, Err(JournalError::TurnNotFound(9999))));
    assert!(matches!(j.fail_turn(9999, "x").await, Err(JournalError::TurnNotFound(9999))));
    assert_eq!(j.turn(9999).await.unwrap(), None);
}

#[tokio::test]
async fn complete_turn_writes_state_outbox_and_history_together_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let j = open(&dir.path().join("j.db"), &clock).await;
    let parent = "1712000000.000001";
    let first = new_id(j.record_inbound(msg(parent, None, Source::Socket)).await.unwrap());
    j.begin_turn(first).await.unwrap();
    let outbox_id = j.complete_turn(first, reply(Some(parent), "hi there", "key-1")).await.unwrap();

    assert_eq!(j.turn(first).await.unwrap().unwrap().state, TurnState::Replied);
    assert_eq!(j.outbox_depth(APP).await.unwrap(), 1);
    let due = j.due_replies(APP, clock.now(), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].id, due[0].turn_id, due[0].reply.text.as_str()), (outbox_id, first, "hi there"));
    let history = j.thread_history(AGENT, CHAN, parent, 10).await.unwrap();
    assert_eq!(
        history,
        vec![
            HistoryEntry {
                role: Role::User,
                text: format!("hello at {parent}"),
                ts: Some(parent.into()),
                user: "U1".into()
            },
            HistoryEntry { role: Role::Assistant, text: "hi there".into(), ts: None, user: AGENT.into() },
        ]
    );

    // A second turn in the thread whose reply reuses the key: the whole transaction fails and
    // nothing of it is visible.
    let second = new_id(j.record_inbound(in_thread("1712000000.000002", parent)).await.unwrap());
    j.begin_turn(second).await.unwrap();
    let err = j.complete_turn(second, reply(Some(parent), "again", "key-1")).await.unwrap_err();
    assert!(matches!(err, JournalError::DuplicateIdempotencyKey(ref k) if k == "key-1"), "{err}");
    assert!(!err.may_have_written());
    assert_eq!(j.turn(second).await.unwrap().unwrap().state, TurnState::Thinking);
    assert_eq!(j.outbox_depth(APP).await.unwrap(), 1);
    assert_eq!(j.thread_history(AGENT, CHAN, parent, 10).await.unwrap(), history);

    // With a fresh key it goes through, and history grows in order.
    j.complete_turn(second, reply(Some(parent), "again", "key-2")).await.unwrap();
    let texts: Vec<_> =
        j.thread_history(AGENT, CHAN, parent, 10).await.unwrap().into_iter().map(|h| (h.role, h.text)).collect();
    assert_eq!(
        texts,
        vec![
            (Role::User, format!("hello at {parent}")),
            (Role::Assistant, "hi there".into()),
            (Role::User, "hello at 1712000000.000002".into()),
            (Role::Assistant, "again".into()),
        ]
    );
    // `limit` keeps the newest entries, still oldest first.
    let last_two: Vec<_> =
        j.thread_history(AGENT, CHAN, parent, 2).await.unwrap().into_iter().map(|h| h.text).collect();
    assert_eq!(last_two, vec!["hello at 1712000000.000002".to_owned(), "again".to_owned()]);
}

#[tokio::test]
async fn unfinished_turns_are_resumable_after_reopen_in_ts_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let clock = ManualClock::new(start());
    let j = open(&path, &clock).await;
    // Recorded out of ts order (catch-up fills a gap after newer socket messages).
    let late = new_id(j.record_inbound(in_thread("1712000000.000030", "1712000000.000010")).await.unwrap());
    let early = new_id(j.record_inbound(in_thread("1712000000.000020", "1712000000.000010")).await.unwrap());
    let top = new_id(j.record_inbound(msg("1712000000.000025", None, Source::CatchUp)).await.unwrap());
    let done = new_id(j.record_inbound(msg("1712000000.000005", None, Source::Socket)).await.unwrap());
    let skipped = new_id(j.record_inbound(msg("1712000000.000006", None, Source::Socket)).await.unwrap());
    let mut other_agent = msg("1712000000.000001", None, Source::Socket);
    other_agent.agent = "someone-else".into();
    other_agent.app = "other-app".into();
    j.record_inbound(other_agent).await.unwrap();
    j.begin_turn(done).await.unwrap();
    j.complete_turn(done, reply(None, "r", "k")).await.unwrap();
    j.skip_turn(skipped).await.unwrap();
    j.begin_turn(early).await.unwrap();
    j.close().await.unwrap();

    let j = open(&path, &clock).await;
    let unfinished = j.unfinished_turns(AGENT).await.unwrap();
    let ids: Vec<_> = unfinished.iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![early, top, late]);
    assert_eq!((unfinished[0].state.clone(), unfinished[0].attempts), (TurnState::Thinking, 1));
    assert_eq!(unfinished[2].state, TurnState::Received);
    assert_eq!(unfinished[2].message.thread_key(), "1712000000.000010");
    assert_eq!(unfinished[1].message.source, Source::CatchUp);
    assert_eq!(j.stats().await.unwrap().unfinished_turns, 4, "three for this agent, one for the other");
}

#[tokio::test]
async fn outbox_orders_due_replies_and_keeps_threads_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let j = open(&dir.path().join("j.db"), &clock).await;
    let t0 = clock.now();

    let mut outbox = Vec::new();
    // Thread A gets two replies, thread B one.
    for (ts, thread, key) in [
        ("1712000000.000001", "1712000000.000001", "a1"),
        ("1712000000.000002", "1712000000.000002", "b1"),
        ("1712000000.000003", "1712000000.000001", "a2"),
    ] {
        let m = if ts == thread { msg(ts, None, Source::Socket) } else { in_thread(ts, thread) };
        let turn = new_id(j.record_inbound(m).await.unwrap());
        j.begin_turn(turn).await.unwrap();
        outbox.push(j.complete_turn(turn, reply(Some(thread), key, key)).await.unwrap());
        clock.advance(Duration::from_secs(1));
    }
    let [a1, b1, a2] = outbox[..] else { panic!("three entries") };
    let keys = |entries: Vec<flotilla_journal::OutboxEntry>| {
        entries.into_iter().map(|e| e.reply.idempotency_key).collect::<Vec<_>>()
    };

    // Nothing is due before it was queued; a2 waits behind a1 (same thread).
    assert!(j.due_replies(APP, t0 - Duration::from_secs(1), 10).await.unwrap().is_empty());
    let now = clock.now();
    assert_eq!(keys(j.due_replies(APP, now, 10).await.unwrap()), vec!["a1", "b1"]);
    assert_eq!(keys(j.due_replies(APP, now, 1).await.unwrap()), vec!["a1"]);
    assert!(j.due_replies("other-app", now, 10).await.unwrap().is_empty());

    // a1 hits a 429: retry in 30 s. b1 is due now; a2 must not overtake a1.
    j.reschedule(a1, now + Duration::from_secs(30), "ratelimited").await.unwrap();
    assert_eq!(keys(j.due_replies(APP, now, 10).await.unwrap()), vec!["b1"]);
    let later = now + Duration::from_secs(30);
    let due = j.due_replies(APP, later, 10).await.unwrap();
    assert_eq!(keys(due.clone()), vec!["b1", "a1"], "ordered by not_before");
    assert_eq!((due[1].attempts, due[1].last_error.as_deref()), (1, Some("ratelimited")));
    assert_eq!(due[1].not_before, later);

    j.mark_delivered(a1, "1712000100.000001").await.unwrap();
    // Idempotent: a retried mark after an ambiguous error succeeds and changes nothing.
    j.mark_delivered(a1, "1712000100.000001").await.unwrap();
    assert_eq!(keys(j.due_replies(APP, later, 10).await.unwrap()), vec!["b1", "a2"]);
    assert_eq!(j.outbox_depth(APP).await.unwrap(), 2);

    let delivered = j.find_delivered_by_key("a1").await.unwrap().unwrap();
    assert_eq!((delivered.outbox_id, delivered.posted_ts.as_str()), (a1, "1712000100.000001"));
    assert_eq!(j.find_delivered_by_key("b1").await.unwrap(), None, "b1 is not delivered");
    let a1_turn = due[1].turn_id;
    assert_eq!(j.turn(a1_turn).await.unwrap().unwrap().state, TurnState::Delivered);
    let history = j.thread_history(AGENT, CHAN, "1712000000.000001", 10).await.unwrap();
    assert_eq!(history[1].ts.as_deref(), Some("1712000100.000001"), "reply ts filled in on delivery");
    assert_eq!(history[3].ts, None, "a2 not delivered yet");

    let err = j.reschedule(a1, later, "x").await.unwrap_err();
    assert!(matches!(err, JournalError::OutboxClosed { state: "delivered", .. }), "{err}");

    // b1 can never be posted: abandoned, its turn fails, the outbox shrinks.
    j.abandon_reply(b1, "channel_not_found").await.unwrap();
    let b1_turn = due[0].turn_id;
    assert_eq!(j.turn(b1_turn).await.unwrap().unwrap().state, TurnState::Failed { reason: "channel_not_found".into() });
    assert!(matches!(j.mark_delivered(b1, "1712000100.000002").await, Err(JournalError::OutboxClosed { .. })));
    let ids: Vec<_> = j.due_replies(APP, later, 10).await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![a2]);
    assert_eq!(j.outbox_depth(APP).await.unwrap(), 1);
    assert!(matches!(j.mark_delivered(4242, "1.0").await, Err(JournalError::OutboxNotFound(4242))));
}

#[tokio::test]
async fn catch_up_cursors_and_active_threads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let clock = ManualClock::new(start());
    let j = open(&path, &clock).await;
    assert_eq!(j.last_seen(APP, CHAN).await.unwrap(), None);

    // Numeric, not string, order: the shorter ts is the older one.
    j.record_inbound(msg("1000000000.000001", None, Source::Socket)).await.unwrap();
    j.record_inbound(msg("999999999.999999", None, Source::CatchUp)).await.unwrap();
    assert_eq!(j.last_seen(APP, CHAN).await.unwrap().as_deref(), Some("1000000000.000001"));
    let mut elsewhere = msg("1000000005.000000", None, Source::Socket);
    elsewhere.conversation = "D0009".into();
    j.record_inbound(elsewhere).await.unwrap();
    assert_eq!(
        j.conversations(APP).await.unwrap(),
        vec![
            ("C0001".to_owned(), "1000000000.000001".to_owned()),
            ("D0009".to_owned(), "1000000005.000000".to_owned())
        ]
    );

    // Threads: one noted explicitly, one through a completed turn, one through a delivered
    // top-level reply. Activity in a noted thread moves it forward.
    j.note_thread(APP, CHAN, "1000000001.000000").await.unwrap();
    let t = new_id(j.record_inbound(in_thread("1000000003.000000", "1000000002.000000")).await.unwrap());
    j.begin_turn(t).await.unwrap();
    let top = new_id(j.record_inbound(msg("1000000004.000000", None, Source::Socket)).await.unwrap());
    j.begin_turn(top).await.unwrap();
    let top_reply = j.complete_turn(top, reply(None, "top-level answer", "top")).await.unwrap();
    j.mark_delivered(top_reply, "1000000004.500000").await.unwrap();
    j.complete_turn(t, reply(Some("1000000002.000000"), "threaded answer", "thr")).await.unwrap();
    j.record_inbound(in_thread("1000000006.000000", "1000000001.000000")).await.unwrap();

    j.close().await.unwrap();
    let j = open(&path, &clock).await;
    assert_eq!(
        j.active_threads(APP, CHAN, "0").await.unwrap(),
        vec!["1000000001.000000", "1000000002.000000", "1000000004.000000", "1000000004.500000"]
    );
    // Since 1000000004.2: thread 1 (reply at .6), the top-level reply's own thread (4.5).
    assert_eq!(
        j.active_threads(APP, CHAN, "1000000004.200000").await.unwrap(),
        vec!["1000000001.000000", "1000000004.500000"]
    );
    assert!(j.active_threads(APP, "D0009", "0").await.unwrap().is_empty());
    assert_eq!(j.last_seen(APP, CHAN).await.unwrap().as_deref(), Some("1000000006.000000"));
}

#[tokio::test]
async fn invalid_ts_is_rejected_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let j = open(&dir.path().join("j.db"), &clock).await;
    for bad in [msg("not-a-ts", Some("EvBad"), Source::Socket), in_thread("1712000000.000001", "12.x")] {
        let err = j.record_inbound(bad).await.unwrap_err();
        assert!(matches!(err, JournalError::InvalidTs(_)), "{err}");
        assert_eq!(err.http_status(), 400);
    }
    assert_eq!(j.event_seen(APP, "EvBad").await.unwrap(), None);
    assert_eq!(j.stats().await.unwrap().inbound_total, 0);
}

#[tokio::test]
async fn compaction_removes_old_finished_work_but_keeps_unfinished_and_recent_dedupe_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let clock = ManualClock::new(start());
    let j = open(&path, &clock).await;
    let hour = Duration::from_secs(3600);
    let retention = Retention {
        keep_delivered_for: hour,
        keep_history_per_thread: 4,
        keep_dedupe_for: 24 * hour,
        keep_idle_threads_for: 100 * hour,
    };

    // An old conversation: five delivered exchanges in one thread, one turn still received and
    // one replied but not delivered.
    let parent = "1712000000.000000";
    let mut delivered_turns = Vec::new();
    for i in 0..5 {
        let ts = format!("1712000000.00000{i}");
        let m = if i == 0 { msg(&ts, Some("Ev0"), Source::Socket) } else { in_thread(&ts, parent) };
        let turn = new_id(j.record_inbound(m).await.unwrap());
        j.begin_turn(turn).await.unwrap();
        let id = j.complete_turn(turn, reply(Some(parent), &format!("answer {i}"), &format!("k{i}"))).await.unwrap();
        j.mark_delivered(id, &format!("1712000001.00000{i}")).await.unwrap();
        delivered_turns.push(turn);
    }
    let waiting = new_id(j.record_inbound(msg("1712000002.000000", Some("EvW"), Source::Socket)).await.unwrap());
    let replied = new_id(j.record_inbound(msg("1712000003.000000", None, Source::Socket)).await.unwrap());
    j.begin_turn(replied).await.unwrap();
    j.complete_turn(replied, reply(None, "pending answer", "kp")).await.unwrap();
    let before = j.stats().await.unwrap();

    // Two hours later: the delivered turns go, their dedupe keys stay (younger than a day).
    clock.advance(2 * hour);
    let report = j.compact(retention.clone()).await.unwrap();
    assert_eq!(report.turns, 5);
    assert_eq!(report.outbox, 5);
    assert_eq!(report.dedupe_keys, 0);
    assert_eq!(report.history, 6, "10 entries in the thread, 4 kept");
    for t in &delivered_turns {
        assert_eq!(j.turn(*t).await.unwrap(), None);
    }
    assert_eq!(j.turn(waiting).await.unwrap().unwrap().state, TurnState::Received);
    assert_eq!(j.turn(replied).await.unwrap().unwrap().state, TurnState::Replied);
    assert_eq!(j.outbox_depth(APP).await.unwrap(), 1);
    assert_eq!(
        j.record_inbound(msg("1712000000.000000", None, Source::CatchUp)).await.unwrap(),
        Recorded::Duplicate { turn_id: delivered_turns[0] }
    );
    assert_eq!(j.event_seen(APP, "Ev0").await.unwrap(), Some(delivered_turns[0]));
    let history = j.thread_history(AGENT, CHAN, parent, 100).await.unwrap();
    assert_eq!(history.len(), 4);
    assert_eq!(history[3].text, "answer 4", "the newest entries are kept");
    assert_eq!(j.find_delivered_by_key("k0").await.unwrap(), None);
    let stats = j.stats().await.unwrap();
    assert_eq!(stats.inbound_total, before.inbound_total, "the total is not reduced by compaction");
    assert_eq!(stats.unfinished_turns, 1);

    // Two days later: the finished turns' dedupe keys go; the unfinished turns' keys never do.
    clock.advance(48 * hour);
    let report = j.compact(retention.clone()).await.unwrap();
    assert_eq!(report.dedupe_keys, 6, "5 message keys + 1 event id of the delivered turns");
    assert_eq!(j.event_seen(APP, "Ev0").await.unwrap(), None);
    assert_eq!(j.event_seen(APP, "EvW").await.unwrap(), Some(waiting));
    assert_eq!(
        j.record_inbound(msg("1712000002.000000", None, Source::CatchUp)).await.unwrap(),
        Recorded::Duplicate { turn_id: waiting }
    );
    assert_eq!(
        j.record_inbound(msg("1712000003.000000", None, Source::CatchUp)).await.unwrap(),
        Recorded::Duplicate { turn_id: replied }
    );
    assert!(j.record_inbound(msg("1712000000.000001", None, Source::CatchUp)).await.unwrap().is_new());

    // Long idle: the thread and its history are forgotten; unfinished work still stays.
    clock.advance(200 * hour);
    let report = j.compact(retention).await.unwrap();
    assert_eq!(report.history, 4);
    assert_eq!(report.threads, 1, "the thread of the replied turn is kept");
    assert_eq!(j.active_threads(APP, CHAN, "0").await.unwrap(), vec!["1712000003.000000"]);
    assert!(j.thread_history(AGENT, CHAN, parent, 100).await.unwrap().is_empty());
    assert_eq!(j.turn(waiting).await.unwrap().unwrap().state, TurnState::Received);
    assert_eq!(j.outbox_depth(APP).await.unwrap(), 1);
    assert!(j.integrity_check().await.unwrap().is_empty());
    // The catch-up cursor is not compacted away.
    assert_eq!(j.last_seen(APP, CHAN).await.unwrap().as_deref(), Some("1712000003.000000"));
}

#[tokio::test]
async fn a_full_database_fails_cleanly_and_recovers_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let clock = ManualClock::new(start());
    let j = Journal::open(JournalOptions { max_bytes: Some(256 * 1024), ..options(&path, &clock) }).await.unwrap();
    let thinking = new_id(j.record_inbound(msg("1712000000.000000", None, Source::Socket)).await.unwrap());
    j.begin_turn(thinking).await.unwrap();

    let big = "x".repeat(3000);
    let mut acked = Vec::new();
    let mut full = None;
    for i in 1..10_000 {
        let mut m = msg(&format!("1712000000.{i:06}"), Some(&format!("Ev{i}")), Source::Socket);
        m.text.clone_from(&big);
        match j.record_inbound(m).await {
            Ok(r) => acked.push((i, new_id(r))),
            Err(e) => {
                full = Some((i, e));
                break;
            }
        }
    }
    let (failed_at, err) = full.expect("the size cap was never reached");
    assert!(matches!(err, JournalError::Full(_)), "{err:?}");
    assert!(!err.may_have_written());
    assert!(err.is_retryable());
    assert!(err.to_string().contains("full"), "{err}");
    assert!(acked.len() > 10, "only {} messages fit", acked.len());

    // Nothing of the failed write is there; everything before it is.
    assert_eq!(j.event_seen(APP, &format!("Ev{failed_at}")).await.unwrap(), None);
    for (i, turn) in &acked {
        assert_eq!(j.event_seen(APP, &format!("Ev{i}")).await.unwrap(), Some(*turn));
    }
    assert!(j.integrity_check().await.unwrap().is_empty());

    // A turn completion that needs space fails as a whole: still thinking, no outbox, no history.
    let err = j.complete_turn(thinking, reply(None, &"y".repeat(20_000), "big")).await.unwrap_err();
    assert!(matches!(err, JournalError::Full(_)), "{err:?}");
    assert_eq!(j.turn(thinking).await.unwrap().unwrap().state, TurnState::Thinking);
    assert_eq!(j.outbox_depth(APP).await.unwrap(), 0);
    assert!(j.thread_history(AGENT, CHAN, "1712000000.000000", 10).await.unwrap().is_empty());

    // Space freed: the same writes now succeed.
    j.set_max_bytes(None).await.unwrap();
    let mut retry = msg(&format!("1712000000.{failed_at:06}"), Some(&format!("Ev{failed_at}")), Source::Socket);
    retry.text = big;
    assert!(j.record_inbound(retry).await.unwrap().is_new());
    j.complete_turn(thinking, reply(None, &"y".repeat(20_000), "big")).await.unwrap();
    assert_eq!(j.outbox_depth(APP).await.unwrap(), 1);
    j.close().await.unwrap();

    // And it all survives a reopen intact.
    let j = open(&path, &clock).await;
    assert!(j.integrity_check().await.unwrap().is_empty());
    assert_eq!(j.stats().await.unwrap().inbound_total, u64::try_from(acked.len()).unwrap() + 2);
}

#[tokio::test]
async fn a_second_opener_is_refused_while_the_journal_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let clock = ManualClock::new(start());
    let j = open(&path, &clock).await;
    j.record_inbound(msg("1712000000.000001", None, Source::Socket)).await.unwrap();
    let second = Journal::open(JournalOptions { lock_timeout: Duration::ZERO, ..options(&path, &clock) }).await;
    let err = second.unwrap_err();
    assert!(matches!(err, JournalError::Busy(_)), "{err:?}");
    assert!(err.is_storage());
    j.close().await.unwrap();
    // Released on close: the next process opens at once.
    let j = Journal::open(JournalOptions { lock_timeout: Duration::ZERO, ..options(&path, &clock) }).await.unwrap();
    assert_eq!(j.stats().await.unwrap().inbound_total, 1);
}

#[tokio::test]
async fn schema_version_is_migrated_and_newer_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let clock = ManualClock::new(start());
    open(&path, &clock).await.close().await.unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, 2);
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = Journal::open(options(&path, &clock)).await.unwrap_err();
    assert!(matches!(err, JournalError::SchemaTooNew { found: 99, supported: 2 }), "{err:?}");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    std::fs::write(&path, vec![0x5a_u8; 8192]).unwrap();
    let clock = ManualClock::new(start());
    let err = Journal::open(options(&path, &clock)).await.unwrap_err();
    assert!(matches!(err, JournalError::Corrupt(_)), "{err:?}");
}

#[tokio::test]
async fn compaction_gives_space_back_to_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let j = open(&dir.path().join("j.db"), &clock).await;
    for i in 0..400 {
        let mut m = msg(&format!("1712000000.{i:06}"), Some(&format!("Ev{i}")), Source::Socket);
        m.text = "z".repeat(2000);
        let turn = new_id(j.record_inbound(m).await.unwrap());
        j.skip_turn(turn).await.unwrap();
    }
    let grown = j.stats().await.unwrap().file_bytes;
    clock.advance(Duration::from_secs(30 * 24 * 3600));
    let report = j.compact(Retention::default()).await.unwrap();
    assert_eq!((report.turns, report.dedupe_keys), (400, 800));
    let shrunk = j.stats().await.unwrap().file_bytes;
    assert!(shrunk * 4 < grown, "file went from {grown} to only {shrunk} bytes");
    assert_eq!(j.stats().await.unwrap().inbound_total, 400);
}
