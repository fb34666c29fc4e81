//! The README's "Server API" examples, run as written with the real `curl`
//! against a `wshub serve --api-key-file … --auth-secret-file …` process
//! set up as the README says (three token-holding clients in room `ops`:
//! `ana`, and `bob` twice).
//!
//! The scheme: in that section, every ```sh block holding an answer line
//! is a list of commands, each followed by `# STATUS BODY` — the status,
//! and the JSON body (continued on further `#` lines until it parses), or
//! nothing for an empty body. The commands run in README order under
//! `bash` with `$WSHUB` (the base URL), `$KEY` (the API key) and `$ID`
//! (ana's member id) set; `curl` is given `-w` to report the status. The
//! answer must be the README's, JSON compared as values, except a
//! member's `id` and `joined_ms`, which must only be well formed (an
//! `{instance}:{number}` and a time during the test). Without `curl` on
//! PATH the test skips, except under CI.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::api::*;
use common::*;
use serde_json::Value;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;
use wshub::auth::Secret;

const SECRET: &[u8] = b"the readme test's token secret";

/// One command of the README and the answer it shows.
#[derive(Debug)]
struct Example {
    command: String,
    status: u16,
    /// `None`: an empty body.
    body: Option<Value>,
}

/// The README's "## Server API" section.
fn section() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("\n## Server API\n")
        .expect("a \"Server API\" section in the README");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    rest[..end].to_string()
}

/// `# NNN …` starts an answer: the status and the rest of the line.
fn answer_line(line: &str) -> Option<(u16, &str)> {
    let rest = line.strip_prefix("# ")?;
    let status = rest.get(..3)?.parse().ok()?;
    let after = &rest[3..];
    (after.is_empty() || after.starts_with(' ')).then(|| (status, after.trim()))
}

/// The examples of each ```sh block that shows answers, in order.
fn examples(section: &str) -> Vec<Vec<Example>> {
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```sh" {
            continue;
        }
        let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        if !block.iter().any(|l| answer_line(l).is_some()) {
            continue; // set-up, not an example
        }
        let mut examples = Vec::new();
        let mut command = Vec::new();
        let mut i = 0;
        while i < block.len() {
            let line = block[i];
            i += 1;
            if let Some((status, json)) = answer_line(line) {
                assert!(
                    !command.is_empty(),
                    "an answer with no command before it: {line}"
                );
                let mut json = json.to_string();
                while !json.is_empty() && serde_json::from_str::<Value>(&json).is_err() {
                    let more = block
                        .get(i)
                        .and_then(|l| l.strip_prefix('#'))
                        .unwrap_or_else(|| panic!("an unfinished JSON answer: {json}"));
                    json.push_str(more.trim());
                    i += 1;
                }
                examples.push(Example {
                    command: command.join("\n"),
                    status,
                    body: (!json.is_empty()).then(|| serde_json::from_str(&json).unwrap()),
                });
                command.clear();
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                command.push(line);
            }
        }
        assert!(
            command.is_empty(),
            "a command without its answer: {}",
            command.join("\n")
        );
        blocks.push(examples);
    }
    blocks
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Whether `got` is the README's `expected`: equal, but for a member's
/// `id` (any `{instance}:{number}`) and `joined_ms` (a time since `since`).
fn agrees(expected: &Value, got: &Value, since: u64, at: &str) -> Result<(), String> {
    match (expected, got) {
        (Value::Object(e), Value::Object(g)) => {
            let (mut ek, mut gk): (Vec<_>, Vec<_>) = (e.keys().collect(), g.keys().collect());
            ek.sort();
            gk.sort();
            if ek != gk {
                return Err(format!("{at}: keys {gk:?}, the README says {ek:?}"));
            }
            for (k, ev) in e {
                let gv = &g[k];
                let at = format!("{at}.{k}");
                match k.as_str() {
                    "id" => {
                        let id = gv.as_str().ok_or(format!("{at}: {gv} is no string"))?;
                        let well_formed = id
                            .split_once(':')
                            .is_some_and(|(i, n)| !i.is_empty() && n.parse::<u64>().is_ok());
                        if !well_formed {
                            return Err(format!("{at}: {id} is no {{instance}}:{{number}}"));
                        }
                    }
                    "joined_ms" => {
                        let t = gv.as_u64().ok_or(format!("{at}: {gv} is no time"))?;
                        if !(since..=now_ms()).contains(&t) {
                            return Err(format!("{at}: {t} is not during the test"));
                        }
                    }
                    _ => agrees(ev, gv, since, &at)?,
                }
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(g)) if e.len() == g.len() => e
            .iter()
            .zip(g)
            .enumerate()
            .try_for_each(|(i, (e, g))| agrees(e, g, since, &format!("{at}[{i}]"))),
        (e, g) if e == g => Ok(()),
        (e, g) => Err(format!("{at}: {g}, the README says {e}")),
    }
}

fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("api-readme-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

/// The next data or close message.
fn got(ws: &mut Ws) -> Message {
    next(ws)
}

#[test]
fn the_readmes_server_api_examples_answer_as_shown() {
    let section = section();
    let blocks = examples(&section);
    // One block per route at least, each route shown.
    let commands: Vec<&str> = blocks
        .iter()
        .flatten()
        .map(|e| e.command.as_str())
        .collect();
    for route in [
        "-X DELETE -H \"X-API-Key: $KEY\" \"$WSHUB/api/users/",
        "\"$WSHUB/api/rooms/ops/clients/$ID",
        "\"$WSHUB/api/rooms/ops\"",
        "\"$WSHUB/api/rooms\"",
        "\"$WSHUB/api/rooms/ops/messages?limit=",
        "--data-binary",
    ] {
        assert!(
            commands.iter().any(|c| c.contains(route)),
            "no example of {route} in {commands:#?}"
        );
    }
    assert!(blocks.len() >= 5, "{blocks:#?}");
    if !have("curl", "--version", "curl") {
        return;
    }

    let key = temp_file("key", format!("{KEY}\n").as_bytes());
    let secret = temp_file("secret", &[SECRET, b"\n"].concat());
    let served = serve_process(
        &[
            "--api-key-file",
            key.to_str().unwrap(),
            "--auth-secret-file",
            secret.to_str().unwrap(),
        ],
        &[],
    );
    let addr = served.addr;
    let since = now_ms();
    let api = Api::new(addr);
    let token = |sub: &str| {
        wshub::auth::mint_token(&Secret::new(SECRET), sub, None, Duration::from_secs(3600)).unwrap()
    };
    // ana, then bob on a phone and on a laptop, in that order.
    let mut sockets = Vec::new();
    for (name, sub) in [("ana", "ana"), ("bob", "bob"), ("bob", "bob")] {
        sockets.push(ws(
            addr,
            &format!("/ws/ops?name={name}&token={}", token(sub)),
        ));
        let n = sockets.len();
        eventually(&format!("{n} listed"), || api.members("ops").len() == n);
    }
    let ana = api.member_id("ops", "ana");

    for example in blocks.iter().flatten() {
        assert!(example.command.contains("curl "), "{}", example.command);
        let command =
            example
                .command
                .replacen("curl ", "curl --max-time 10 -w '\\n%{http_code}' ", 1);
        let out = Command::new("bash")
            .args(["-c", &command])
            .env("WSHUB", format!("http://{addr}"))
            .env("KEY", KEY)
            .env("ID", &ana)
            .output()
            .expect("bash runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}\n{stdout}\n{}",
            example.command,
            String::from_utf8_lossy(&out.stderr)
        );
        let (body, status) = stdout
            .rsplit_once('\n')
            .unwrap_or_else(|| panic!("{}: no status in {stdout:?}", example.command));
        assert_eq!(
            status.trim().parse::<u16>().ok(),
            Some(example.status),
            "{}\nanswered {stdout}",
            example.command
        );
        match &example.body {
            None => assert!(body.is_empty(), "{}: a body {body:?}", example.command),
            Some(expected) => {
                let got: Value = serde_json::from_str(body)
                    .unwrap_or_else(|e| panic!("{}: {e}: {body}", example.command));
                if let Err(e) = agrees(expected, &got, since, "") {
                    panic!("{}\n{e}\nanswered {got}", example.command);
                }
            }
        }
    }

    // What the clients saw: both messages unchanged, then 1008 — ana with
    // the reason given, bob's two with the default.
    for (i, ws) in sockets.iter_mut().enumerate() {
        assert_eq!(got(ws), Message::text("deploy 42 finished"), "client {i}");
        assert_eq!(got(ws), Message::binary(vec![0u8, 1, 2]), "client {i}");
        let reason = if i == 0 { "spam" } else { "removed" };
        match got(ws) {
            Message::Close(Some(frame)) => {
                assert_eq!(frame.code, CloseCode::Policy, "client {i}");
                assert_eq!(frame.reason.as_str(), reason, "client {i}");
            }
            other => panic!("client {i}: expected a Close, got {other:?}"),
        }
    }
    let _ = std::fs::remove_file(key);
    let _ = std::fs::remove_file(secret);
}
