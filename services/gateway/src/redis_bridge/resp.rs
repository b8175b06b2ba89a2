//! The few RESP2 frames the bridge speaks, sans-IO: commands out (`PUBLISH`, `PSUBSCRIBE`,
//! `AUTH`), and in, the replies to them and the `pmessage` pushes of a pattern subscription.
//!
//! Hand-written rather than the redis crate's codec because the bridge's cost per event is its
//! throughput: a push is parsed in place (slices into the read buffer, nothing allocated), and a
//! batch of `PUBLISH` commands is encoded straight into one write buffer.

/// What [`parse`] refuses: the connection is not speaking RESP2 as the bridge expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    /// A frame starts with a byte that is not a RESP2 type marker.
    #[error("unexpected RESP type byte {0:#04x}")]
    Type(u8),
    /// A length or integer is not a decimal number ending in CRLF.
    #[error("malformed RESP number")]
    Number,
    /// A bulk string is not followed by CRLF.
    #[error("bulk string without its CRLF")]
    BulkEnd,
    /// An array nests arrays or holds more elements than any frame the bridge reads.
    #[error("RESP array of {0} elements, or nested: not a frame the bridge reads")]
    Array(i64),
    /// A bulk string announces more bytes than [`MAX_BULK`]: refused before it is buffered.
    #[error("RESP bulk string of {0} bytes, over the bridge's limit of {MAX_BULK}")]
    TooLong(i64),
    /// More than [`MAX_LINE`] bytes without a line end: refused before more is buffered.
    #[error("RESP line longer than {MAX_LINE} bytes")]
    LineTooLong,
}

/// The largest bulk string the bridge buffers: far above any bus event (the HTTP body, the
/// WebSocket message and the gRPC message limits are all smaller), far below what would let a
/// broken or hostile server grow a read buffer without end.
pub const MAX_BULK: i64 = 64 * 1024 * 1024;

/// The longest line (type byte to CRLF) the bridge buffers: numbers, `+OK`, `-ERR ...`.
pub const MAX_LINE: usize = 64 * 1024;

/// One element of an array frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// A bulk string (`$`), or a simple string (`+`).
    Bytes(&'a [u8]),
    /// An integer (`:`).
    Integer(i64),
    /// A null bulk string or array.
    Nil,
}

/// The most elements an array the bridge reads has (`pmessage`, pattern, channel, payload).
const MAX_ITEMS: usize = 4;

/// One complete frame, borrowing from the buffer it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `+OK` and the like.
    Simple(&'a [u8]),
    /// `-ERR ...`: the server refused a command.
    Error(&'a [u8]),
    /// `:N`, e.g. the reply to `PUBLISH` (how many clients received it).
    Integer(i64),
    /// `$n` (or `$-1`, [`Item::Nil`]).
    Bulk(Item<'a>),
    /// `*n` with up to four elements (pushes and subscription confirmations).
    Array([Item<'a>; MAX_ITEMS], usize),
}

impl<'a> Frame<'a> {
    /// The payload's channel and bytes if this is a `pmessage` push.
    pub fn pmessage(&self) -> Option<(&'a [u8], &'a [u8])> {
        match self {
            Frame::Array(
                [Item::Bytes(b"pmessage"), Item::Bytes(_), Item::Bytes(channel), Item::Bytes(payload)],
                4,
            ) => Some((channel, payload)),
            _ => None,
        }
    }
}

/// Parses one frame from the start of `buf`: `Ok(None)` when it is not complete yet, else the
/// frame and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, RespError> {
    let Some((&kind, _)) = buf.split_first() else {
        return Ok(None);
    };
    if kind != b'*' {
        return Ok(scalar(buf)?.map(|(item, used)| {
            let frame = match (kind, item) {
                (b'+', Item::Bytes(s)) => Frame::Simple(s),
                (b'-', Item::Bytes(s)) => Frame::Error(s),
                (b':', Item::Integer(n)) => Frame::Integer(n),
                (_, item) => Frame::Bulk(item),
            };
            (frame, used)
        }));
    }
    let Some((count, mut at)) = line(buf)? else {
        return Ok(None);
    };
    let count = number(count)?;
    if count < 0 {
        return Ok(Some((Frame::Array([Item::Nil; MAX_ITEMS], 0), at)));
    }
    if count as usize > MAX_ITEMS {
        return Err(RespError::Array(count));
    }
    let mut items = [Item::Nil; MAX_ITEMS];
    for item in items.iter_mut().take(count as usize) {
        if buf.get(at) == Some(&b'*') {
            return Err(RespError::Array(count));
        }
        let Some((parsed, used)) = scalar(&buf[at..])? else {
            return Ok(None);
        };
        *item = parsed;
        at += used;
    }
    Ok(Some((Frame::Array(items, count as usize), at)))
}

/// A non-array frame as an item.
fn scalar(buf: &[u8]) -> Result<Option<(Item<'_>, usize)>, RespError> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    if !matches!(kind, b'+' | b'-' | b':' | b'$') {
        return Err(RespError::Type(kind));
    }
    let Some((text, at)) = line(buf)? else {
        return Ok(None);
    };
    match kind {
        b'+' | b'-' => Ok(Some((Item::Bytes(text), at))),
        b':' => Ok(Some((Item::Integer(number(text)?), at))),
        b'$' => {
            let len = number(text)?;
            if len < 0 {
                return Ok(Some((Item::Nil, at)));
            }
            if len > MAX_BULK {
                return Err(RespError::TooLong(len));
            }
            let end = at + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(RespError::BulkEnd);
            }
            Ok(Some((Item::Bytes(&buf[at..end]), end + 2)))
        }
        other => Err(RespError::Type(other)),
    }
}

/// The text after the type byte up to CRLF, and the offset after the CRLF.
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, RespError> {
    let window = &buf[..buf.len().min(MAX_LINE)];
    match window.iter().position(|&b| b == b'\n') {
        None if buf.len() >= MAX_LINE => Err(RespError::LineTooLong),
        None => Ok(None),
        // The type byte, then the text: a line end before both is no line.
        Some(nl) if nl >= 2 && buf[nl - 1] == b'\r' => Ok(Some((&buf[1..nl - 1], nl + 1))),
        Some(_) => Err(RespError::Number),
    }
}

fn number(text: &[u8]) -> Result<i64, RespError> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 {
        return Err(RespError::Number);
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(RespError::Number);
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Ok(if negative { -n } else { n })
}

/// Appends a command (an array of bulk strings) to `out`.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    header(out, b'*', args.len());
    for arg in args {
        bulk(out, &[arg]);
    }
}

/// Appends `PUBLISH <prefix><channel> <instance>\n<data>` to `out`, writing the channel and the
/// payload from their parts (no intermediate string per event).
pub fn publish(out: &mut Vec<u8>, prefix: &str, channel: &str, instance: &str, data: &[u8]) {
    out.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n");
    bulk(out, &[prefix.as_bytes(), channel.as_bytes()]);
    bulk(out, &[instance.as_bytes(), b"\n", data]);
}

fn bulk(out: &mut Vec<u8>, parts: &[&[u8]]) {
    header(out, b'$', parts.iter().map(|p| p.len()).sum());
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\n");
}

fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUSH: &[u8] =
        b"*4\r\n$8\r\npmessage\r\n$11\r\nsdsim:bus:*\r\n$12\r\nsdsim:bus:c1\r\n$9\r\na\n{\"x\":1}\r\n";

    #[test]
    fn a_pmessage_push_parses_in_place_and_every_prefix_is_incomplete() {
        let (frame, used) = parse(PUSH).unwrap().unwrap();
        assert_eq!(used, PUSH.len());
        assert_eq!(
            frame.pmessage(),
            Some((&b"sdsim:bus:c1"[..], &b"a\n{\"x\":1}"[..]))
        );
        for cut in 0..PUSH.len() {
            assert_eq!(parse(&PUSH[..cut]), Ok(None), "prefix of {cut} bytes");
        }
    }

    #[test]
    fn replies_parse_to_what_the_bridge_checks() {
        assert_eq!(parse(b":2\r\n:0\r\n"), Ok(Some((Frame::Integer(2), 4))));
        assert_eq!(parse(b"+OK\r\n"), Ok(Some((Frame::Simple(b"OK"), 5))));
        assert_eq!(
            parse(b"-NOAUTH Authentication required.\r\n")
                .unwrap()
                .unwrap()
                .0,
            Frame::Error(b"NOAUTH Authentication required.")
        );
        let confirm = b"*3\r\n$10\r\npsubscribe\r\n$11\r\nsdsim:bus:*\r\n:1\r\n";
        let (frame, used) = parse(confirm).unwrap().unwrap();
        assert_eq!(used, confirm.len());
        assert_eq!(frame.pmessage(), None);
        assert!(matches!(
            frame,
            Frame::Array([Item::Bytes(b"psubscribe"), _, Item::Integer(1), _], 3)
        ));
        assert_eq!(parse(b"$-1\r\n"), Ok(Some((Frame::Bulk(Item::Nil), 5))));
    }

    #[test]
    fn what_is_not_resp_is_refused_not_waited_for() {
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\n"), Err(RespError::Type(b'H')));
        assert_eq!(parse(b":12a\r\n"), Err(RespError::Number));
        assert_eq!(parse(b"$2\r\nabcd\r\n"), Err(RespError::BulkEnd));
        assert_eq!(parse(b"*9\r\n"), Err(RespError::Array(9)));
        assert_eq!(parse(b"*2\r\n*1\r\n"), Err(RespError::Array(2)));
        assert_eq!(parse(b":1\n"), Err(RespError::Number));
        // A line end where the type byte should be (found by the fuzzer: it panicked).
        assert_eq!(parse(b"\r\n"), Err(RespError::Type(b'\r')));
        assert_eq!(parse(b"*\n"), Err(RespError::Number));
        assert_eq!(parse(b"*1\r\n\r\n"), Err(RespError::Type(b'\r')));
        let (frame, used) = parse(b"-1\r\n\r\n").unwrap().unwrap();
        assert_eq!((frame, used), (Frame::Error(b"1"), 4));
        assert_eq!(parse(&b"-1\r\n\r\n"[used..]), Err(RespError::Type(b'\r')));
        // Sizes are refused from the header, before the bytes are waited for.
        assert_eq!(
            parse(b"$67108865\r\n"),
            Err(RespError::TooLong(MAX_BULK + 1))
        );
        assert_eq!(
            parse(b"*4\r\n$8\r\npmessage\r\n$999999999999\r\n"),
            Err(RespError::TooLong(999_999_999_999))
        );
        assert_eq!(
            parse(b"$67108864\r\n"),
            Ok(None),
            "at the limit: waited for"
        );
        let endless = [b"+".as_slice(), &[b'x'; MAX_LINE]].concat();
        assert_eq!(parse(&endless), Err(RespError::LineTooLong));
        assert_eq!(parse(&endless[..MAX_LINE - 1]), Ok(None));
        assert_eq!(parse(b"$-1"), Ok(None));
        assert_eq!(parse(b"$\r\n"), Err(RespError::Number));
        assert_eq!(parse(b":9999999999999999999\r\n"), Err(RespError::Number));
    }

    #[test]
    fn a_published_event_is_one_command_the_subscriber_side_reads_back() {
        let mut out = Vec::new();
        publish(&mut out, "sdsim:bus:", "c1", "a", b"{\"x\":1}");
        assert_eq!(
            out,
            b"*3\r\n$7\r\nPUBLISH\r\n$12\r\nsdsim:bus:c1\r\n$9\r\na\n{\"x\":1}\r\n"
        );
        let (frame, used) = parse(&out).unwrap().unwrap();
        assert_eq!(used, out.len());
        // A command is an array of three bulk strings: the same grammar as a push.
        assert!(matches!(
            frame,
            Frame::Array(
                [Item::Bytes(b"PUBLISH"), Item::Bytes(b"sdsim:bus:c1"), _, _],
                3
            )
        ));
        out.clear();
        command(&mut out, &[b"AUTH", b"s3cret"]);
        assert_eq!(out, b"*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n");
    }
}
