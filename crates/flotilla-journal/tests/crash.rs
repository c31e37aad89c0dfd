//! Crash safety: a child process (this test executable, re-run in child mode) records inbound
//! messages and completes turns in a loop and is SIGKILLed at random points. After every kill the
//! file must pass `PRAGMA integrity_check`, hold every message the child acked (it prints the id
//! only after `record_inbound` returned), hold each message once, and show every completed turn
//! with its outbox entry and history together.

#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns should panic on setup failures")]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use flotilla_journal::{InboundMessage, Journal, JournalOptions, OutboundReply, Recorded, Source};

const CHILD_DB: &str = "FLOTILLA_JOURNAL_CRASH_CHILD_DB";
const CHILD_START: &str = "FLOTILLA_JOURNAL_CRASH_CHILD_START";
const ROUNDS: usize = 8;

fn message(i: u64, event_id: Option<String>, source: Source) -> InboundMessage {
    InboundMessage {
        app: "crash-app".into(),
        agent: "crash-agent".into(),
        conversation: "C1".into(),
        ts: format!("1712000000.{i:06}"),
        thread_ts: None,
        user: "U1".into(),
        text: format!("message {i} {}", "padding ".repeat(usize::try_from(i % 50).unwrap())),
        event_id,
        source,
        raw: None,
    }
}

/// The child: only does something when the parent test started it with `CHILD_DB` set (run on
/// its own it returns at once).
#[test]
fn crash_child() {
    let Ok(db) = std::env::var(CHILD_DB) else { return };
    let start: u64 = std::env::var(CHILD_START).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async move {
        let j = Journal::open(JournalOptions::new(db)).await.unwrap();
        // What Slack and catch-up do after a restart: deliver recent messages again, by retry
        // (same event id), as the other event type (new event id) and from history (none).
        for i in start.saturating_sub(20)..start {
            let (event_id, source) = match i % 3 {
                0 => (Some(format!("Ev{i}")), Source::Socket),
                1 => (Some(format!("Mention{i}")), Source::Socket),
                _ => (None, Source::CatchUp),
            };
            if let Recorded::New { .. } = j.record_inbound(message(i, event_id, source)).await.unwrap() {
                println!("DOUBLE {i}");
            }
        }
        println!("READY");
        for i in start.. {
            // New or Duplicate are both fine here: a message committed just before the last kill
            // was never acked, so the parent sends its index again.
            let recorded = j.record_inbound(message(i, Some(format!("Ev{i}")), Source::Socket)).await.unwrap();
            println!("ACK {i}");
            if i % 3 == 0 && recorded.is_new() {
                let turn = recorded.turn_id();
                j.begin_turn(turn).await.unwrap();
                let reply = OutboundReply {
                    app: "crash-app".into(),
                    conversation: "C1".into(),
                    thread_ts: Some(format!("1712000000.{i:06}")),
                    text: format!("reply {i}"),
                    idempotency_key: format!("k{i}"),
                };
                j.complete_turn(turn, reply).await.unwrap();
                println!("DONE {i}");
            }
        }
    });
}

enum Line {
    Ready,
    Ack(u64),
    Done(u64),
    Double(u64),
}

fn parse(line: &str) -> Option<Line> {
    let (word, n) = line.split_once(' ').unwrap_or((line, ""));
    match word {
        "READY" => Some(Line::Ready),
        "ACK" => n.parse().ok().map(Line::Ack),
        "DONE" => n.parse().ok().map(Line::Done),
        "DOUBLE" => n.parse().ok().map(Line::Double),
        _ => None,
    }
}

/// Runs one child from `start` until it acked `kill_after` messages (`None`: kill during open),
/// SIGKILLs it and returns every line it printed.
fn run_child(db: &Path, start: u64, kill_after: Option<usize>) -> Vec<Line> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DB, db)
        .env(CHILD_START, start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        // A line cut by the kill has no newline; `lines` would still yield it, so read raw
        // and keep only complete lines.
        let mut reader = BufReader::new(stdout);
        let mut buf = String::new();
        while reader.read_line(&mut buf).unwrap_or(0) > 0 {
            if buf.ends_with('\n')
                && let Some(line) = parse(buf.trim_end())
            {
                let _ = tx.send(line);
            }
            buf.clear();
        }
    });
    let mut lines = Vec::new();
    let mut acks = 0;
    let mut killed = false;
    if kill_after.is_none() {
        child.kill().unwrap();
        killed = true;
    }
    while !killed {
        let Ok(line) = rx.recv() else { break };
        if let Line::Ack(_) = line {
            acks += 1;
        }
        lines.push(line);
        if kill_after.is_some_and(|k| acks >= k) {
            child.kill().unwrap();
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    if !killed {
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        panic!("child exited by itself ({status}) before it was killed:\n{stderr}");
    }
    lines
}

/// Checks the file with a plain SQLite connection, independent of the journal's code.
fn check_file(db: &Path, acked: &HashSet<u64>, done: &HashSet<u64>) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
    let mut stmt = conn.prepare("SELECT ts, state FROM turn").unwrap();
    let rows: Vec<(String, String)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap();
    let present: HashSet<u64> = rows.iter().map(|(ts, _)| ts.rsplit('.').next().unwrap().parse().unwrap()).collect();
    assert_eq!(present.len(), rows.len(), "a message was recorded twice");
    let missing: Vec<_> = acked.difference(&present).collect();
    assert!(missing.is_empty(), "acked but lost: {missing:?}");
    for (ts, state) in &rows {
        let i: u64 = ts.rsplit('.').next().unwrap().parse().unwrap();
        if done.contains(&i) {
            assert_eq!(state, "replied", "turn {i} was completed");
        }
    }
    // complete_turn is atomic even when killed mid-commit: replied turns, outbox rows and
    // history pairs always match one to one.
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    let replied = count("SELECT COUNT(*) FROM turn WHERE state = 'replied'");
    assert_eq!(count("SELECT COUNT(*) FROM outbox"), replied);
    assert_eq!(count("SELECT COUNT(*) FROM history"), 2 * replied);
    assert_eq!(
        count("SELECT COUNT(*) FROM outbox o JOIN turn t ON t.id = o.turn_id WHERE t.state = 'replied'"),
        replied
    );
}

#[test]
fn sigkill_at_random_points_loses_no_acked_message() {
    // Set FLOTILLA_JOURNAL_CRASH_SEED to replay a failing run.
    let seed =
        std::env::var("FLOTILLA_JOURNAL_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(fastrand::u64(..));
    eprintln!("crash test seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    let mut acked = HashSet::new();
    let mut done = HashSet::new();
    for round in 0..ROUNDS {
        let start = acked.iter().max().map_or(0, |m| m + 1);
        // One round in four dies while opening (recovery, migration); the others after a random
        // number of acks, which lands the kill at a random point of a write.
        let kill_after = if round > 0 && rng.usize(0..4) == 0 { None } else { Some(rng.usize(1..60)) };
        for line in run_child(&db, start, kill_after) {
            match line {
                Line::Ack(i) => {
                    acked.insert(i);
                }
                Line::Done(i) => {
                    done.insert(i);
                }
                Line::Double(i) => panic!("round {round}: message {i} was acked before the kill but recorded again"),
                Line::Ready => {}
            }
        }
        check_file(&db, &acked, &done);
    }
    eprintln!("{ROUNDS} kills: {} messages acked, {} turns completed", acked.len(), done.len());
    assert!(acked.len() >= ROUNDS, "the children acked only {} messages", acked.len());

    // The journal itself opens the survivor cleanly and agrees.
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let j = Journal::open(JournalOptions::new(&db)).await.unwrap();
        assert!(j.integrity_check().await.unwrap().is_empty());
        let stats = j.stats().await.unwrap();
        assert!(stats.inbound_total >= u64::try_from(acked.len()).unwrap());
        for i in &acked {
            let again = j.record_inbound(message(*i, None, Source::CatchUp)).await.unwrap();
            assert!(!again.is_new(), "acked message {i} not deduplicated after the crashes");
        }
    });
}
