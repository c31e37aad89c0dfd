//! The Web API: every method's shape, credentials, errors, pagination, rate limits and
//! post faults.

use std::time::{Duration, Instant};

use flotilla_sim::slack::{AppSpec, SlackFault, SlackSimConfig};
use serde_json::{Value, json};

use super::support::*;

fn is_ts(s: &str) -> bool {
    let (secs, frac) = s.split_once('.').unwrap_or(("", ""));
    secs.len() == 10 && frac.len() == 6 && secs.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
}

#[tokio::test]
async fn auth_test_and_credential_errors() {
    let sim = start_default().await;
    let app = sim.handle().app("family").unwrap();
    let v = call(&sim, &app.bot_token, "auth.test", json!({})).await;
    ok(&v);
    assert_eq!(v["user_id"], app.bot_user_id);
    assert_eq!(v["bot_id"], app.bot_id);
    assert_eq!(v["user"], "family");
    assert_eq!(v["team_id"], sim.handle().workspace().team_id);
    assert_eq!(v["url"], "https://flotilla-sim.slack.com/");

    // Every API error is HTTP 200 with ok=false.
    let (status, _, v) = call_full(&sim, None, "auth.test", json!({})).await;
    assert_eq!((status.as_u16(), err(&v)), (200, "not_authed"));
    let (status, _, v) = call_full(&sim, Some("xoxb-nope"), "auth.test", json!({})).await;
    assert_eq!((status.as_u16(), err(&v)), (200, "invalid_auth"));
    assert_eq!(err(&call(&sim, &app.app_token, "auth.test", json!({})).await), "not_allowed_token_type");
    assert_eq!(err(&call(&sim, &app.bot_token, "apps.connections.open", json!({})).await), "not_allowed_token_type");
    let v = call(&sim, &app.bot_token, "nope.nothing", json!({})).await;
    assert_eq!((err(&v), v["req_method"].as_str()), ("unknown_method", Some("nope.nothing")));

    // The app-level token must come in the header for apps.connections.open.
    let resp = client()
        .post(format!("{}/apps.connections.open", sim.api_url()))
        .form(&[("token", app.app_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(err(&resp.json::<Value>().await.unwrap()), "invalid_auth");
    let v = call(&sim, &app.app_token, "apps.connections.open", json!({})).await;
    let url = ok(&v)["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("ws://{}/link/?ticket=", sim.addr())), "{url}");
    assert!(url.contains(&format!("&app_id={}", app.app_id)), "{url}");

    // A token made invalid at run time, and restored.
    sim.handle()
        .inject(SlackFault::InvalidToken { token: app.bot_token.clone(), error: "invalid_auth".into() })
        .unwrap();
    assert_eq!(err(&call(&sim, &app.bot_token, "auth.test", json!({})).await), "invalid_auth");
    sim.handle().inject(SlackFault::RestoreToken { token: app.bot_token.clone() }).unwrap();
    ok(&call(&sim, &app.bot_token, "auth.test", json!({})).await);
    let stats = sim.handle().stats();
    assert_eq!(stats.api_errors["invalid_auth"], 3);
    assert_eq!(stats.api_calls["auth.test"], 6);
}

#[tokio::test]
async fn forms_queries_and_json_bodies_are_all_accepted() {
    let sim = start_default().await;
    let token = bot_token(&sim, "family");
    let general = channel(&sim, "general");
    // Form body with the token as a field.
    let resp = client()
        .post(format!("{}/chat.postMessage", sim.api_url()))
        .form(&[("token", token.as_str()), ("channel", general.as_str()), ("text", "from a form")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json; charset=utf-8");
    let form_ts = ok(&resp.json::<Value>().await.unwrap())["ts"].as_str().unwrap().to_owned();
    // JSON body with a bearer token; metadata as an object.
    let md = json!({"event_type": "flotilla_reply", "event_payload": {"in_reply_to": "1.000001"}});
    let json_ts = bot_post(&sim, "family", &general, "from json", None, Some(md.clone())).await;
    // Form body with metadata as a JSON string.
    let resp = client()
        .post(format!("{}/chat.postMessage", sim.api_url()))
        .bearer_auth(&token)
        .form(&[("channel", general.as_str()), ("text", "form metadata"), ("metadata", &md.to_string())])
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(ok(&v)["message"]["metadata"], md);
    // GET with query parameters.
    let resp = client()
        .get(format!("{}/conversations.history?channel={general}&limit=10&include_all_metadata=true", sim.api_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    let texts: Vec<&str> = ok(&v)["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["form metadata", "from json", "from a form"]);
    assert!(form_ts < json_ts);
    // A JSON body that is not an object, and a body without a content type.
    let resp = client()
        .post(format!("{}/auth.test", sim.api_url()))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("[1, 2")
        .send()
        .await
        .unwrap();
    assert_eq!(err(&resp.json::<Value>().await.unwrap()), "invalid_json");
    let resp =
        client().post(format!("{}/auth.test", sim.api_url())).bearer_auth(&token).body("x=1").send().await.unwrap();
    assert_eq!(err(&resp.json::<Value>().await.unwrap()), "missing_post_type");
}

#[tokio::test]
async fn chat_post_message_shapes_and_errors() {
    let sim = start(SlackSimConfig::with_apps(["family"]).app(AppSpec::new("mute").scopes(["channels:read"]))).await;
    let app = sim.handle().app("family").unwrap();
    let general = channel(&sim, "general");
    let user_msg = sim.handle().post_user_message("general", "alice", "hi bot", None).unwrap();

    let v = call(&sim, &app.bot_token, "chat.postMessage", json!({"channel": general, "text": "top"})).await;
    ok(&v);
    assert_eq!(v["channel"], general);
    let ts = v["ts"].as_str().unwrap();
    assert!(is_ts(ts), "{ts}");
    let m = &v["message"];
    assert_eq!(m["type"], "message");
    assert_eq!(m["ts"], ts);
    assert_eq!(m["text"], "top");
    assert_eq!(m["user"], app.bot_user_id);
    assert_eq!(m["bot_id"], app.bot_id);
    assert_eq!(m["app_id"], app.app_id);
    assert!(m.get("thread_ts").is_none() && m.get("client_msg_id").is_none() && m.get("metadata").is_none());
    assert!(ts > user_msg.ts.as_str());

    // A reply: thread_ts and parent_user_id; a reply's ts means its parent's thread.
    let r1 = call(
        &sim,
        &app.bot_token,
        "chat.postMessage",
        json!({"channel": general, "text": "r1", "thread_ts": user_msg.ts}),
    )
    .await;
    assert_eq!(r1["message"]["thread_ts"], user_msg.ts.as_str());
    assert_eq!(r1["message"]["parent_user_id"], sim.handle().user_id("alice").unwrap());
    let r2 = call(
        &sim,
        &app.bot_token,
        "chat.postMessage",
        json!({"channel": general, "text": "r2", "thread_ts": r1["ts"]}),
    )
    .await;
    assert_eq!(r2["message"]["thread_ts"], user_msg.ts.as_str());
    assert!(r2["ts"].as_str().unwrap() > r1["ts"].as_str().unwrap());

    // Posting to a user id goes to the DM with that user; by channel name works too.
    let alice = sim.handle().user_id("alice").unwrap();
    let v = call(&sim, &app.bot_token, "chat.postMessage", json!({"channel": alice, "text": "dm"})).await;
    assert_eq!(ok(&v)["channel"], dm(&sim, "alice", "family"));
    let v = call(&sim, &app.bot_token, "chat.postMessage", json!({"channel": "#random", "text": "named"})).await;
    assert_eq!(ok(&v)["channel"], channel(&sim, "random"));

    let lonely = sim.handle().create_channel("lonely", &[]).unwrap();
    let cases = [
        (json!({"text": "x"}), "channel_not_found"),
        (json!({"channel": "C999", "text": "x"}), "channel_not_found"),
        (json!({"channel": lonely, "text": "x"}), "not_in_channel"),
        (json!({"channel": general}), "no_text"),
        (json!({"channel": general, "text": ""}), "no_text"),
        (json!({"channel": general, "text": "x".repeat(40_001)}), "msg_too_long"),
        (json!({"channel": general, "text": "x", "thread_ts": "1.000001"}), "thread_not_found"),
        (json!({"channel": general, "text": "x", "metadata": {"event_type": "t"}}), "invalid_metadata_format"),
        (json!({"channel": general, "text": "x", "metadata": "{not json"}), "invalid_metadata_format"),
    ];
    for (body, code) in cases {
        assert_eq!(err(&call(&sim, &app.bot_token, "chat.postMessage", body.clone()).await), code, "{body}");
    }
    // Blocks without text are fine.
    ok(&call(&sim, &app.bot_token, "chat.postMessage", json!({"channel": general, "blocks": [{"type": "divider"}]}))
        .await);
    // The DM of another bot is not visible.
    let other = sim.handle().dm_channel("alice", "mute").unwrap();
    assert_eq!(
        err(&call(&sim, &app.bot_token, "chat.postMessage", json!({"channel": other, "text": "x"})).await),
        "channel_not_found"
    );
    // A token without chat:write.
    let v = call(&sim, &bot_token(&sim, "mute"), "chat.postMessage", json!({"channel": general, "text": "x"})).await;
    assert_eq!(
        (err(&v), v["needed"].as_str(), v["provided"].as_str()),
        ("missing_scope", Some("chat:write"), Some("channels:read"))
    );
    let stats = sim.handle().stats();
    assert_eq!(stats.bot_messages, 6);
    assert_eq!(stats.api_errors["missing_scope"], 1);
}

#[tokio::test]
async fn history_pages_newest_first_with_thread_parents() {
    let sim = start_default().await;
    let token = bot_token(&sim, "family");
    let general = channel(&sim, "general");
    let h = sim.handle();
    let mut tops = Vec::new();
    for i in 0..7 {
        tops.push(h.post_user_message("general", "bob", &format!("m{i}"), None).unwrap().ts);
    }
    let r1 = h.post_user_message("general", "carol", "reply a", Some(&tops[2])).unwrap();
    let md = json!({"event_type": "flotilla_reply", "event_payload": {"in_reply_to": tops[2]}});
    let r2 = bot_post(&sim, "family", &general, "reply b", Some(&tops[2]), Some(md.clone())).await;

    // Pages of 3: all 7 top-level messages, newest first, each once; no replies.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut body = json!({"channel": general, "limit": 3});
        if let Some(c) = &cursor {
            body["cursor"] = json!(c);
        }
        let v = call(&sim, &token, "conversations.history", body).await;
        ok(&v);
        pages += 1;
        for m in v["messages"].as_array().unwrap() {
            seen.push(m["ts"].as_str().unwrap().to_owned());
        }
        let next = v["response_metadata"]["next_cursor"].as_str().map(str::to_owned);
        assert_eq!(v["has_more"].as_bool().unwrap(), next.is_some(), "{v}");
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut expected = tops.clone();
    expected.reverse();
    assert_eq!((seen, pages), (expected, 3));

    // The parent carries the thread summary.
    let v =
        call(&sim, &token, "conversations.history", json!({"channel": general, "latest": tops[3], "oldest": tops[1]}))
            .await;
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1, "oldest and latest are exclusive: {v}");
    let parent = &msgs[0];
    assert_eq!(parent["ts"], tops[2].as_str());
    assert_eq!(parent["thread_ts"], tops[2].as_str());
    assert_eq!(parent["reply_count"], 2);
    assert_eq!(parent["reply_users_count"], 2);
    assert_eq!(parent["latest_reply"], r2.as_str());
    assert_eq!(parent["user"], h.user_id("bob").unwrap());
    assert!(parent["client_msg_id"].is_string());
    assert_eq!(r1.thread_ts.as_deref(), Some(tops[2].as_str()));
    let v = call(
        &sim,
        &token,
        "conversations.history",
        json!({"channel": general, "latest": tops[3], "oldest": tops[1], "inclusive": true}),
    )
    .await;
    assert_eq!(v["messages"].as_array().unwrap().len(), 3);
    let v = call(&sim, &token, "conversations.history", json!({"channel": general, "oldest": tops[5]})).await;
    assert_eq!((v["messages"].as_array().unwrap().len(), &v["has_more"]), (1, &json!(false)));

    assert_eq!(
        err(&call(&sim, &token, "conversations.history", json!({"channel": general, "cursor": "garbage"})).await),
        "invalid_cursor"
    );
    assert_eq!(
        err(&call(&sim, &token, "conversations.history", json!({"channel": "C0NOPE"})).await),
        "channel_not_found"
    );
    let lonely = h.create_channel("lonely", &[]).unwrap();
    assert_eq!(err(&call(&sim, &token, "conversations.history", json!({"channel": lonely})).await), "not_in_channel");
}

#[tokio::test]
async fn replies_return_the_parent_then_the_thread_in_order() {
    let sim = start_default().await;
    let token = bot_token(&sim, "family");
    let h = sim.handle();
    let d = dm(&sim, "alice", "family");
    let parent = h.post_user_message(&d, "alice", "question", None).unwrap().ts;
    let mut replies = Vec::new();
    for i in 0..5 {
        if i % 2 == 0 {
            replies.push(h.post_user_message(&d, "alice", &format!("more {i}"), Some(&parent)).unwrap().ts);
        } else {
            let md = json!({"event_type": "flotilla_reply", "event_payload": {"in_reply_to": replies[i - 1]}});
            replies.push(bot_post(&sim, "family", &d, &format!("answer {i}"), Some(&parent), Some(md)).await);
        }
    }

    let v = call(&sim, &token, "conversations.replies", json!({"channel": d, "ts": parent})).await;
    let ts: Vec<&str> = ok(&v)["messages"].as_array().unwrap().iter().map(|m| m["ts"].as_str().unwrap()).collect();
    let mut expected = vec![parent.as_str()];
    expected.extend(replies.iter().map(String::as_str));
    assert_eq!(ts, expected);
    assert_eq!(v["has_more"], false);
    assert_eq!(v["messages"][0]["reply_count"], 5);
    assert_eq!(v["messages"][1]["parent_user_id"], h.user_id("alice").unwrap());
    // Metadata only on request, as in Slack.
    assert!(v["messages"][2].get("metadata").is_none());
    let v =
        call(&sim, &token, "conversations.replies", json!({"channel": d, "ts": parent, "include_all_metadata": true}))
            .await;
    assert_eq!(v["messages"][2]["metadata"]["event_payload"]["in_reply_to"], replies[0].as_str());

    // A reply's ts names the same thread; oldest filters replies, never the parent.
    let v = call(&sim, &token, "conversations.replies", json!({"channel": d, "ts": replies[3], "oldest": replies[2]}))
        .await;
    let ts: Vec<&str> = v["messages"].as_array().unwrap().iter().map(|m| m["ts"].as_str().unwrap()).collect();
    assert_eq!(ts, [parent.as_str(), replies[3].as_str(), replies[4].as_str()]);

    // Pages of 2 replies, the parent heading each page.
    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut body = json!({"channel": d, "ts": parent, "limit": 2});
        if let Some(c) = &cursor {
            body["cursor"] = json!(c);
        }
        let v = call(&sim, &token, "conversations.replies", body).await;
        let msgs = v["messages"].as_array().unwrap();
        assert_eq!(msgs[0]["ts"], parent.as_str());
        got.extend(msgs[1..].iter().map(|m| m["ts"].as_str().unwrap().to_owned()));
        match v["response_metadata"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(got, replies);

    assert_eq!(
        err(&call(&sim, &token, "conversations.replies", json!({"channel": d, "ts": "1.000001"})).await),
        "thread_not_found"
    );
    assert_eq!(err(&call(&sim, &token, "conversations.replies", json!({"channel": d})).await), "thread_not_found");
    let other = dm(&sim, "alice", "ops");
    assert_eq!(
        err(&call(&sim, &token, "conversations.replies", json!({"channel": other, "ts": parent})).await),
        "channel_not_found"
    );
}

#[tokio::test]
async fn conversations_listing_info_and_open() {
    let sim = start_default().await;
    let token = bot_token(&sim, "family");
    let h = sim.handle();
    h.create_channel("family-only", &["family"]).unwrap();
    h.create_channel("ops-only", &["ops"]).unwrap();

    let names = |v: &Value| -> Vec<String> {
        v["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap_or(c["id"].as_str().unwrap()).to_owned())
            .collect()
    };
    let v = call(&sim, &token, "users.conversations", json!({})).await;
    assert_eq!(names(ok(&v)), ["general", "random", "family-only"]);
    assert_eq!(v["response_metadata"]["next_cursor"], "");
    let v = call(&sim, &token, "users.conversations", json!({"types": "public_channel,private_channel,im,mpim"})).await;
    let ims: Vec<&Value> = v["channels"].as_array().unwrap().iter().filter(|c| c["is_im"] == true).collect();
    assert_eq!(ims.len(), 3);
    assert!(ims.iter().all(|c| c["user"].as_str().is_some_and(|u| u.starts_with('U'))));
    assert_eq!(err(&call(&sim, &token, "users.conversations", json!({"types": "nonsense"})).await), "invalid_types");

    // Pages of one.
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let v = call(&sim, &token, "users.conversations", json!({"limit": 1, "cursor": cursor})).await;
        all.extend(names(&v));
        cursor = v["response_metadata"]["next_cursor"].as_str().unwrap().to_owned();
        if cursor.is_empty() {
            break;
        }
    }
    assert_eq!(all, ["general", "random", "family-only"]);

    let general = channel(&sim, "general");
    let v = call(&sim, &token, "conversations.info", json!({"channel": general, "include_num_members": true})).await;
    let c = &ok(&v)["channel"];
    assert_eq!(
        (c["id"].as_str(), c["name"].as_str(), &c["is_channel"], &c["is_member"]),
        (Some(general.as_str()), Some("general"), &json!(true), &json!(true))
    );
    assert_eq!(c["num_members"], 5);
    assert_eq!(c["is_general"], true);
    let v = call(&sim, &token, "conversations.info", json!({"channel": channel(&sim, "ops-only")})).await;
    assert_eq!(v["channel"]["is_member"], false);
    let d = dm(&sim, "bob", "family");
    let v = call(&sim, &token, "conversations.info", json!({"channel": d})).await;
    assert_eq!((&v["channel"]["is_im"], v["channel"]["user"].as_str()), (&json!(true), h.user_id("bob").as_deref()));
    assert_eq!(
        err(&call(&sim, &token, "conversations.info", json!({"channel": dm(&sim, "bob", "ops")})).await),
        "channel_not_found"
    );

    let v = call(&sim, &token, "conversations.open", json!({"users": h.user_id("bob").unwrap()})).await;
    assert_eq!((ok(&v)["channel"]["id"].as_str(), &v["already_open"]), (Some(d.as_str()), &json!(true)));
    assert_eq!(err(&call(&sim, &token, "conversations.open", json!({"users": "U0NOBODY"})).await), "user_not_found");
}

#[tokio::test]
async fn rate_limit_storms_answer_429_with_retry_after() {
    let sim = start_default().await;
    let token = bot_token(&sim, "family");
    let general = channel(&sim, "general");
    sim.handle()
        .inject(SlackFault::RateLimit { method: "chat.postMessage".into(), duration_ms: 60_000, retry_after_secs: 7 })
        .unwrap();
    for _ in 0..3 {
        let (status, headers, v) =
            call_full(&sim, Some(&token), "chat.postMessage", json!({"channel": general, "text": "x"})).await;
        assert_eq!(status, 429);
        assert_eq!(headers["retry-after"], "7");
        assert_eq!(v, json!({"ok": false, "error": "ratelimited"}));
    }
    // Other methods are unaffected; nothing was posted.
    let v = call(&sim, &token, "conversations.history", json!({"channel": general})).await;
    assert_eq!(ok(&v)["messages"].as_array().unwrap().len(), 0);
    // A storm on every method, over the admin API, then cleared.
    let resp = client()
        .post(format!("{}/_sim/faults", sim.url()))
        .json(&json!({"kind": "rate_limit", "method": "*", "duration_ms": 60_000, "retry_after_secs": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (status, headers, _) = call_full(&sim, Some(&token), "auth.test", json!({})).await;
    assert_eq!((status.as_u16(), headers["retry-after"].to_str().unwrap()), (429, "2"));
    let (status, headers, _) =
        call_full(&sim, Some(&token), "chat.postMessage", json!({"channel": general, "text": "x"})).await;
    assert_eq!((status.as_u16(), headers["retry-after"].to_str().unwrap()), (429, "7"), "the longer retry-after wins");
    client().delete(format!("{}/_sim/faults", sim.url())).send().await.unwrap();
    ok(&call(&sim, &token, "chat.postMessage", json!({"channel": general, "text": "x"})).await);
    assert_eq!(sim.handle().stats().api_errors["ratelimited"], 5);

    // A storm ends by itself.
    sim.handle()
        .inject(SlackFault::RateLimit { method: "auth.test".into(), duration_ms: 1, retry_after_secs: 1 })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    ok(&call(&sim, &token, "auth.test", json!({})).await);
}

#[tokio::test]
async fn failing_and_hanging_posts() {
    let sim = start_default().await;
    let token = bot_token(&sim, "family");
    let general = channel(&sim, "general");
    let h = sim.handle();

    h.inject(SlackFault::FailPosts { count: 2, error: "fatal_error".into(), status: 500 }).unwrap();
    for _ in 0..2 {
        let (status, _, v) =
            call_full(&sim, Some(&token), "chat.postMessage", json!({"channel": general, "text": "x"})).await;
        assert_eq!((status.as_u16(), err(&v)), (500, "fatal_error"));
    }
    ok(&call(&sim, &token, "chat.postMessage", json!({"channel": general, "text": "third"})).await);
    assert_eq!(h.messages().len(), 1);

    // Committed, answer withheld: the client times out, yet the message is in history.
    h.inject(SlackFault::HangPosts { duration_ms: 60_000, commit: true }).unwrap();
    let res = client()
        .post(format!("{}/chat.postMessage", sim.api_url()))
        .bearer_auth(&token)
        .timeout(Duration::from_millis(300))
        .json(&json!({"channel": general, "text": "lost answer"}))
        .send()
        .await;
    assert!(res.is_err_and(|e| e.is_timeout()));
    assert!(h.messages().iter().any(|m| m.text == "lost answer"));

    // Not committed: nothing happens until the hang ends, then the post goes through.
    h.inject(SlackFault::HangPosts { duration_ms: 300, commit: false }).unwrap();
    let started = Instant::now();
    let before = h.messages().len();
    let task = tokio::spawn({
        let url = format!("{}/chat.postMessage", sim.api_url());
        let token = token.clone();
        let general = general.clone();
        async move { client().post(url).bearer_auth(token).json(&json!({"channel": general, "text": "late"})).send().await }
    });
    let v: Value = task.await.unwrap().unwrap().json().await.unwrap();
    ok(&v);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(h.messages().len(), before + 1);

    // Not committed and the client gives up: nothing is ever posted.
    h.inject(SlackFault::HangPosts { duration_ms: 300, commit: false }).unwrap();
    let res = client()
        .post(format!("{}/chat.postMessage", sim.api_url()))
        .bearer_auth(&token)
        .timeout(Duration::from_millis(100))
        .json(&json!({"channel": general, "text": "given up"}))
        .send()
        .await;
    assert!(res.is_err_and(|e| e.is_timeout()));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!h.messages().iter().any(|m| m.text == "given up"));

    h.clear_faults();
    ok(&call(&sim, &token, "chat.postMessage", json!({"channel": general, "text": "normal"})).await);
}
