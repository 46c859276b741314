//! The fuzz targets' checks (`fuzz/fuzz_targets/checks.rs`) on deterministic pseudo-random
//! input, so the stable toolchain and `cargo test` exercise them on every run. Hostile
//! alphabets (CR, LF, NUL, NEL, quotes, commas, angle brackets, invalid UTF-8, dot lines) are
//! weighted in, since uniform random bytes rarely form a parsable row or reply.

#[path = "../fuzz/fuzz_targets/checks.rs"]
mod checks;

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
