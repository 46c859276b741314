//! The fuzz targets' checks (`fuzz/fuzz_targets/checks.rs`) on deterministic pseudo-random
//! input, so the stable toolchain and `cargo test` exercise them on every run. Hostile
//! alphabets (CR, LF, NUL, NEL, quotes, commas, angle brackets, invalid UTF-8, dot lines) are
//! weighted in, since uniform random bytes rarely form a parsable row or reply.

use crate::checks;

/// xorshift64*: small, deterministic, good enough to generate test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a [u8]]) -> &'a [u8] {
        items[self.below(items.len())]
    }
}

#[test]
fn smtp_reply_parser_on_generated_replies() {
    let mut rng = Rng(0x5eed_0001);
    let pieces: &[&[u8]] = &[
        b"250",
        b"250-",
        b"250 ",
        b"220 ",
        b"451 ",
        b"550-",
        b"550 ",
        b"199 ",
        b"600 ",
        b"25",
        b"2.0.0 ",
        b"4.7.1 ",
        b"5.1.10 ",
        b"9.9.9 ",
        b"5.1.1000 ",
        b"ok",
        b" ",
        b"\r\n",
        b"\n",
        b"\r",
        b"\xff\xfe",
        b"\xc3\xa9",
        b"-",
        b"mx.example.com",
        b"PIPELINING",
        b"",
    ];
    let mut complete = 0;
    for _ in 0..30_000 {
        let mut buf = Vec::new();
        if rng.below(10) == 0 {
            for _ in 0..rng.below(40) {
                buf.push(rng.next() as u8);
            }
        } else {
            for _ in 0..rng.below(12) {
                buf.extend_from_slice(rng.pick(pieces));
            }
        }
        checks::smtp_reply(&buf);
        complete += usize::from(matches!(mailmerge::smtp::parse_reply(&buf), Ok(Some(_))));
    }
    assert!(
        complete > 1000,
        "only {complete} complete replies generated"
    );
}

#[test]
fn csv_to_message_on_generated_hostile_rows() {
    let mut rng = Rng(0x5eed_0002);
    let hostile: &[&[u8]] = &[
        b"a",
        b"Ann",
        b"Lee",
        b" ",
        b"\t",
        b",",
        b"\"",
        b"\"\"",
        b"\r\n",
        b"\n",
        b"\r",
        b"\0",
        b"\xc2\x85",
        b"\xe2\x80\xa8",
        b"\xff",
        b"<",
        b">",
        b"@",
        b".",
        b"..",
        b":",
        b";",
        b"Bcc: victim@evil.test",
        b"Content-Type: multipart/mixed; boundary=x",
        b"=?utf-8?b?",
        b"\r\n.\r\n",
        b"\n.\n",
        b"{{name}}",
        b"\xc3\xbc",
        b"\\",
        b"(",
        b")",
    ];
    let locals: &[&[u8]] = &[b"ann", b"b.c", b"\"q u\"", b"x+y", b"j\xc3\xbcrgen", b"A"];
    let domains: &[&[u8]] = &[
        b"d.test",
        b"b\xc3\xbccher.example",
        b"EXAMPLE.com",
        b"x.test",
    ];
    let mut built = 0;
    for _ in 0..3_000 {
        let mut data = vec![(rng.below(4) as u8) & !1];
        if rng.below(8) == 0 {
            data[0] |= 1; // whole file, own header
        }
        for _ in 0..1 + rng.below(4) {
            // email
            if rng.below(4) == 0 {
                for _ in 0..rng.below(4) {
                    data.extend_from_slice(rng.pick(hostile));
                }
            } else {
                if rng.below(3) == 0 {
                    data.push(b' ');
                }
                data.extend_from_slice(rng.pick(locals));
                data.push(b'@');
                data.extend_from_slice(rng.pick(domains));
            }
            for _ in 0..2 {
                data.push(b',');
                let quoted = rng.below(2) == 0;
                if quoted {
                    data.push(b'"');
                }
                for _ in 0..1 + rng.below(5) {
                    let p = rng.pick(hostile);
                    if quoted && p.contains(&b'"') {
                        data.extend_from_slice(b"\"\"");
                    } else {
                        data.extend_from_slice(p);
                    }
                }
                if quoted {
                    data.push(b'"');
                }
            }
            data.push(b'\n');
        }
        built += checks::csv_message(&data);
    }
    assert!(built > 300, "only {built} messages built");
}

/// Hostile rows through a Markdown template with a value in every Markdown context: the
/// HTML part never holds a tag, link or attribute that the template did not write.
#[test]
fn markdown_values_never_become_markup() {
    let mut rng = Rng(0x5eed_0004);
    let hostile: &[&[u8]] = &[
        b"<script>alert(1)</script>",
        b"[x](javascript:alert(1))",
        b"![i](https://evil.example/t.png)",
        b"<img src=x onerror=alert(1)>",
        b"**",
        b"_",
        b"`",
        b"``",
        b"# ",
        b"- ",
        b"1. ",
        b"> ",
        b"    ",
        b"\t",
        b"|",
        b"---",
        b"===",
        b"\\",
        b"&amp;",
        b"&#60;",
        b"\"",
        b"\"\"",
        b"'",
        b"=",
        b"<",
        b">",
        b"</div>",
        b"<!--",
        b"-->",
        b"]]>",
        b"https://evil.example/x",
        b"www.evil.example",
        b"a@evil.example",
        b"<https://evil.example>",
        b"\r\n",
        b"\n\n",
        b"\xee\x80\x80", // U+E000, the mark mailmerge uses for values
        b"\xee\x80\x81",
        b"ok",
        b" ",
    ];
    let mut built = 0;
    for _ in 0..1_000 {
        let mut data = vec![0];
        for _ in 0..1 + rng.below(3) {
            data.extend_from_slice(b"a@example.com");
            for _ in 0..2 {
                data.extend_from_slice(b",\"");
                for _ in 0..1 + rng.below(6) {
                    let p = rng.pick(hostile);
                    if p.contains(&b'"') {
                        data.extend_from_slice(
                            &p.iter()
                                .flat_map(|&b| if b == b'"' { vec![b'"', b'"'] } else { vec![b] })
                                .collect::<Vec<u8>>(),
                        );
                    } else {
                        data.extend_from_slice(p);
                    }
                }
                data.push(b'"');
            }
            data.push(b'\n');
        }
        built += checks::markdown_message(&data);
    }
    assert!(built > 1_000, "only {built} messages built");
}

/// The SMTP client against thousands of scripted servers that answer at random (right,
/// wrong, refused, out of step, twice, with garbage, endlessly, or not at all), over an
/// in-memory pipe under paused time. Invariants: no panic; every session ends in bounded
/// (virtual) time; a message is `Accepted` only when the server answered the end of *that*
/// message 2yz; and no 500–504 reply or out-of-step reply is ever judged a bounce.
#[tokio::test(start_paused = true)]
async fn smtp_client_against_random_servers() {
    let mut rng = Rng(0x5eed_0003);
    let (mut accepted, mut out_of_step) = (0, 0);
    let only: Option<u64> = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok());
    for _ in 0..3_000 {
        let seed = rng.next();
        if only.is_some_and(|o| o != seed) {
            continue;
        }
        let (a, o) = one_session(seed).await;
        accepted += a;
        out_of_step += o;
    }
    assert!(accepted > 500, "only {accepted} messages accepted");
    assert!(
        out_of_step > 100,
        "only {out_of_step} replies out of step met"
    );
}

mod scripted {
    //! A server that follows SMTP's state machine but picks each reply from a hostile menu,
    //! recording which messages' ends it answered 2yz.

    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};

    /// Recipients whose message end (the dot, or BDAT LAST) this server answered 2yz.
    pub type Accepted = Arc<Mutex<Vec<String>>>;

    pub struct Script(pub super::Rng);

    /// The reply meaning "never answer again".
    const STALL: &str = "stall";

    /// Reads until the client gives up.
    async fn stall<R: tokio::io::AsyncRead + Unpin>(r: &mut R) {
        let mut sink = [0u8; 1024];
        while matches!(r.read(&mut sink).await, Ok(n) if n > 0) {}
    }

    impl Script {
        /// The reply to a command whose right answer is `right`.
        fn reply(&mut self, right: &str) -> Option<String> {
            let r = &mut self.0;
            Some(match r.below(40) {
                0 => return None, // close the connection
                1 => "354 go ahead\r\n".into(),
                2 => "503 5.5.1 Bad sequence of commands\r\n".into(),
                3 => "500 5.5.2 what?\r\n".into(),
                4 => "550 5.1.1 no such user\r\n".into(),
                5 => "451 4.3.0 later\r\n".into(),
                6 => format!("{right}{right}"),
                7 => "250 2.0.0 ok\r\n".into(),
                8 => "HTTP/1.1 400 Bad Request\r\n".into(),
                9 => "250-x\r\n".repeat(150),
                10 => "x".repeat(70_000),
                // Stop answering (the client times out). Skipping one reply and going on is
                // not in the menu: with pipelining no client can tell it at once.
                11 => STALL.into(),
                12 => "421 4.3.2 closing\r\n".into(),
                _ => right.into(),
            })
        }
    }

    pub async fn serve(stream: DuplexStream, mut script: Script, accepted: Accepted) {
        let (r, mut w) = tokio::io::split(stream);
        let mut r = BufReader::new(r);
        let mut greeting = String::from("220 mx ESMTP\r\n");
        if script.0.below(30) == 0 {
            greeting.push_str("250 unsolicited\r\n");
        }
        let ehlo = match script.0.below(3) {
            0 => "250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n",
            1 => "250-mx\r\n250 PIPELINING\r\n",
            _ => "250 mx\r\n",
        };
        if w.write_all(greeting.as_bytes()).await.is_err() {
            return;
        }
        let (mut rcpt, mut line) = (String::new(), String::new());
        loop {
            line.clear();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let upper = line.trim_end().to_ascii_uppercase();
            let (right, end) = if upper.starts_with("EHLO") {
                (ehlo.to_string(), false)
            } else if upper.starts_with("RCPT") {
                rcpt = line.split(['<', '>']).nth(1).unwrap_or("").to_string();
                ("250 2.1.5 ok\r\n".into(), false)
            } else if upper == "DATA" {
                ("354 go ahead\r\n".into(), false)
            } else if let Some(size) = upper.strip_prefix("BDAT ") {
                let n: usize = size
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let mut chunk = vec![0; n.min(1 << 20)];
                if r.read_exact(&mut chunk).await.is_err() {
                    return;
                }
                ("250 2.0.0 queued\r\n".into(), true)
            } else if upper == "QUIT" {
                let _ = w.write_all(b"221 bye\r\n").await;
                return;
            } else {
                ("250 2.0.0 ok\r\n".into(), false)
            };
            let Some(reply) = script.reply(&right) else {
                return;
            };
            if std::env::var_os("FUZZ_TRACE").is_some() {
                eprintln!(
                    "C: {} S: {:?}",
                    line.trim_end(),
                    &reply[..reply.len().min(60)]
                );
            }
            if reply == STALL {
                return stall(&mut r).await;
            }
            if end && reply.starts_with('2') {
                accepted.lock().unwrap().push(rcpt.clone());
            }
            if w.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
            if reply.starts_with("354")
                && !message(&mut r, &mut w, &mut script, &rcpt, &accepted).await
            {
                return;
            }
        }
    }

    /// Reads a message up to its dot and answers it; false when the session is over.
    async fn message<R, W>(
        r: &mut R,
        w: &mut W,
        script: &mut Script,
        rcpt: &str,
        accepted: &Accepted,
    ) -> bool
    where
        R: tokio::io::AsyncBufRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return false;
            }
            if line == ".\r\n" {
                break;
            }
        }
        let Some(reply) = script.reply("250 2.0.0 queued\r\n") else {
            return false;
        };
        if reply == STALL {
            stall(r).await;
            return false;
        }
        if reply.starts_with('2') {
            accepted.lock().unwrap().push(rcpt.to_string());
        }
        w.write_all(reply.as_bytes()).await.is_ok()
    }
}

/// One session against a server scripted by `seed`: (messages accepted, out-of-step errors).
async fn one_session(seed: u64) -> (usize, usize) {
    use std::time::Duration;

    use mailmerge::delivery::{Action, Attempt, SessionFacts, decide};
    use mailmerge::smtp::Transaction;
    use mailmerge::smtp::{ClientError, Connection, DataPayload, Dialect, Envelope, Timeouts};

    let mut rng = Rng(seed | 1);
    let (client, server) = tokio::io::duplex(8 * 1024);
    let accepted = scripted::Accepted::default();
    let script = scripted::Script(Rng(rng.next() | 1));
    let srv = tokio::spawn(scripted::serve(server, script, accepted.clone()));
    let limits = Timeouts::uniform(Duration::from_secs(30));
    let started = tokio::time::Instant::now();
    let Ok((mut conn, _)) = Connection::greet(client, limits).await else {
        return (0, 0);
    };
    let dialect = [Dialect::Full, Dialect::NoAnnounce, Dialect::Lockstep][rng.below(3)];
    conn.set_dialect(dialect);
    if !matches!(conn.hello("me.test").await, Ok(r) if r.is_positive()) {
        return (0, 0);
    }
    let payload = DataPayload::from_message(b"Subject: x\r\n\r\n.dot\r\nbody\r\n");
    let envs: Vec<Envelope> = (0..6)
        .map(|i| Envelope {
            from: "a@s.test".into(),
            to: format!("r{i}@d.test"),
        })
        .collect();
    let (mut ok, mut oos) = (0, 0);
    for (i, env) in envs.iter().enumerate() {
        let next = envs
            .get(i + 1)
            .filter(|_| rng.below(2) == 0)
            .map(|e| (e, &payload));
        let result = conn.send_then(env, &payload, next).await;
        let facts = SessionFacts {
            dialect,
            transactions: i + 1,
            health: conn.health(),
        };
        let action = decide(Attempt::from(&result), facts);
        match &result {
            Ok(Transaction::Accepted(_)) => {
                assert!(
                    accepted.lock().unwrap().contains(&env.to),
                    "seed {seed:#x}: {} accepted but the server never answered its end 2yz",
                    env.to
                );
                ok += 1;
            }
            Ok(Transaction::Rejected { reply, .. }) if (500..=504).contains(&reply.code) => {
                assert!(
                    !matches!(action, Action::Bounce(_)),
                    "seed {seed:#x}: {reply}"
                );
            }
            Err(e) => {
                assert!(!matches!(action, Action::Bounce(_)), "seed {seed:#x}: {e}");
                oos += usize::from(matches!(e, ClientError::OutOfStep { .. }));
            }
            Ok(_) => {}
        }
        if !action.effects().keep_session {
            break;
        }
    }
    drop(conn);
    let _ = srv.await;
    // Every phase has a timeout: a session never lasts longer than a few of them.
    assert!(
        started.elapsed() <= Duration::from_secs(30 * 40),
        "seed {seed:#x}"
    );
    (ok, oos)
}

/// The cargo-fuzz target `smtp_session` on generated scripts: well-formed sessions mutated
/// piece by piece (a piece swapped, doubled, cut, dropped or replaced by noise).
#[test]
fn smtp_session_target_on_mutated_scripts() {
    let mut rng = Rng(0x5eed_0004);
    let good: &[&[u8]] = &[
        b"250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n",
        b"250 2.1.0 ok\r\n",
        b"250 2.1.5 ok\r\n",
        b"354 go ahead\r\n",
        b"250 2.0.0 queued\r\n",
        b"250 2.0.0 ok\r\n",
    ];
    let noise: &[&[u8]] = &[
        b"503 5.5.1 Bad sequence of commands\r\n",
        b"500 5.5.2 what\r\n",
        b"550 5.5.0 Requested action not taken: mailbox unavailable\r\n",
        b"452 4.5.3 Too many messages sent\r\n",
        b"421 4.3.2 bye\r\n",
        b"354 early\r\n",
        b"250 ok\r\n250 twice\r\n",
        b"250-",
        b"\r\n",
        b"garbage\r\n",
    ];
    for _ in 0..3_000 {
        let mut data = vec![rng.next() as u8];
        let mut pieces: Vec<&[u8]> = vec![good[0]];
        for _ in 0..4 {
            pieces.extend_from_slice(&good[1..]);
        }
        for piece in pieces {
            let piece: Vec<u8> = match rng.below(12) {
                0 => rng.pick(noise).to_vec(),
                1 => [piece, piece].concat(),
                // At least one byte: a server that skips a reply altogether cannot be told
                // from one that answers the next command, by any pipelining client.
                2 => piece[..1 + rng.below(piece.len())].to_vec(),
                3 => continue,
                _ => piece.to_vec(),
            };
            data.extend_from_slice(&piece);
            data.push(0xff);
        }
        let caught = std::panic::catch_unwind(|| checks::smtp_session(&data));
        assert!(
            caught.is_ok(),
            "script {:?}",
            data.escape_ascii().to_string()
        );
    }
}
