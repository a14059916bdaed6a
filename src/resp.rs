//! RESP, Redis's wire protocol, as plain data: commands encoded, replies decoded.
//!
//! Higress's host forwards one encoded command per `proxy_redis_call` and hands back the raw reply bytes,
//! so the plugin speaks RESP itself. Only what a request/response client needs is here: commands are
//! arrays of bulk strings; replies are the RESP2 types plus RESP3's null, which some proxies send.
//! Decoding never trusts a length: sizes and nesting are bounded before anything is allocated.

use std::fmt;

/// The deepest nesting of arrays a reply may have; ours are flat, so this only stops hostile input.
const MAX_DEPTH: usize = 8;
/// The most elements an array reply may declare.
const MAX_ELEMENTS: usize = 1 << 16;
/// Redis's own limit on a bulk string (512 MiB); nothing is allocated before the bytes are there.
const MAX_BULK: usize = 512 << 20;

/// A decoded reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`: the command was refused.
    Error(String),
    /// `:1`
    Integer(i64),
    /// `$n` bytes, or `None` for the null bulk string (`$-1`, or RESP3's `_`).
    Bulk(Option<Vec<u8>>),
    /// `*n` replies, or `None` for the null array (`*-1`).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// Whether this is an error reply starting with `prefix` (`NOAUTH`, `ERR`, `WRONGPASS`...).
    pub fn is_error(&self, prefix: &str) -> bool {
        matches!(self, Reply::Error(e) if e.starts_with(prefix))
    }

    /// What the reply is, for messages: never its content, which may be anyone's data and of any size.
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::Simple(_) => "a status",
            Reply::Error(_) => "an error",
            Reply::Integer(_) => "an integer",
            Reply::Bulk(None) | Reply::Array(None) => "a nil",
            Reply::Bulk(Some(_)) => "a string",
            Reply::Array(Some(_)) => "an array",
        }
    }
}

/// Why bytes are not a reply.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    /// The bytes end before the reply does.
    Incomplete,
    /// The bytes are not RESP (or exceed the limits above).
    Invalid(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Incomplete => write!(f, "truncated Redis reply"),
            DecodeError::Invalid(why) => write!(f, "malformed Redis reply: {why}"),
        }
    }
}

/// Encodes a command as an array of bulk strings, the form every Redis server accepts.
pub fn command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>());
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        let a = a.as_ref();
        out.push(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Decodes exactly one reply that fills `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Reply, DecodeError> {
    let (reply, used) = decode_prefix(bytes)?;
    if used != bytes.len() {
        return Err(DecodeError::Invalid("bytes after the reply"));
    }
    Ok(reply)
}

/// Decodes the reply at the start of `bytes`; returns it and how many bytes it took.
pub fn decode_prefix(bytes: &[u8]) -> Result<(Reply, usize), DecodeError> {
    let mut pos = 0;
    let reply = value(bytes, &mut pos, 0)?;
    Ok((reply, pos))
}

fn line<'a>(bytes: &'a [u8], pos: &mut usize) -> Result<&'a [u8], DecodeError> {
    let rest = &bytes[*pos..];
    let end = rest.windows(2).position(|w| w == b"\r\n").ok_or_else(|| {
        // A lone '\n' or '\r' inside a line is not RESP; a missing terminator may still arrive.
        if rest.contains(&b'\n') {
            DecodeError::Invalid("line not terminated by CRLF")
        } else {
            DecodeError::Incomplete
        }
    })?;
    let text = &rest[..end];
    if text.contains(&b'\n') || text.contains(&b'\r') {
        return Err(DecodeError::Invalid("line not terminated by CRLF"));
    }
    *pos += end + 2;
    Ok(text)
}

fn integer(text: &[u8]) -> Result<i64, DecodeError> {
    let s = std::str::from_utf8(text).map_err(|_| DecodeError::Invalid("integer is not ASCII"))?;
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecodeError::Invalid("not an integer"));
    }
    s.parse().map_err(|_| DecodeError::Invalid("integer out of range"))
}

/// A length field: -1 means null, anything else must be within `max`.
fn length(text: &[u8], max: usize) -> Result<Option<usize>, DecodeError> {
    match integer(text)? {
        -1 => Ok(None),
        n if n >= 0 && (n as u64) <= max as u64 => Ok(Some(n as usize)),
        _ => Err(DecodeError::Invalid("length out of range")),
    }
}

fn value(bytes: &[u8], pos: &mut usize, depth: usize) -> Result<Reply, DecodeError> {
    let Some(&kind) = bytes.get(*pos) else {
        return Err(DecodeError::Incomplete);
    };
    *pos += 1;
    let text = line(bytes, pos)?;
    let utf8 = |t: &[u8]| String::from_utf8_lossy(t).into_owned();
    match kind {
        b'+' => Ok(Reply::Simple(utf8(text))),
        b'-' => Ok(Reply::Error(utf8(text))),
        b':' => Ok(Reply::Integer(integer(text)?)),
        b'_' if text.is_empty() => Ok(Reply::Bulk(None)),
        b'$' => {
            let Some(n) = length(text, MAX_BULK)? else {
                return Ok(Reply::Bulk(None));
            };
            let end = pos.checked_add(n).ok_or(DecodeError::Invalid("length out of range"))?;
            if bytes.len() < end + 2 {
                return Err(DecodeError::Incomplete);
            }
            if &bytes[end..end + 2] != b"\r\n" {
                return Err(DecodeError::Invalid("bulk string not terminated by CRLF"));
            }
            let data = bytes[*pos..end].to_vec();
            *pos = end + 2;
            Ok(Reply::Bulk(Some(data)))
        }
        b'*' => {
            if depth >= MAX_DEPTH {
                return Err(DecodeError::Invalid("arrays nested too deeply"));
            }
            let Some(n) = length(text, MAX_ELEMENTS)? else {
                return Ok(Reply::Array(None));
            };
            // Every element takes at least 3 bytes, so a count the input cannot hold is refused unallocated.
            if n > (bytes.len() - *pos) / 3 + 1 {
                return Err(DecodeError::Incomplete);
            }
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(value(bytes, pos, depth + 1)?);
            }
            Ok(Reply::Array(Some(items)))
        }
        _ => Err(DecodeError::Invalid("unknown reply type")),
    }
}

/// Encodes a reply: what a Redis server would send. Used by tests and by native test hosts.
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    fn put(r: &Reply, out: &mut Vec<u8>) {
        let mut line = |kind: u8, text: &[u8]| {
            out.push(kind);
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        };
        match r {
            Reply::Simple(s) => line(b'+', s.as_bytes()),
            Reply::Error(s) => line(b'-', s.as_bytes()),
            Reply::Integer(i) => line(b':', i.to_string().as_bytes()),
            Reply::Bulk(None) => line(b'$', b"-1"),
            Reply::Bulk(Some(b)) => {
                line(b'$', b.len().to_string().as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Array(None) => line(b'*', b"-1"),
            Reply::Array(Some(items)) => {
                line(b'*', items.len().to_string().as_bytes());
                for i in items {
                    put(i, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    put(reply, &mut out);
    out
}

/// Decodes a command (an array of bulk strings) into its arguments: the server side, for test hosts.
pub fn decode_command(bytes: &[u8]) -> Result<Vec<Vec<u8>>, DecodeError> {
    match decode(bytes)? {
        Reply::Array(Some(items)) => items
            .into_iter()
            .map(|i| match i {
                Reply::Bulk(Some(b)) => Ok(b),
                _ => Err(DecodeError::Invalid("command arguments must be bulk strings")),
            })
            .collect(),
        _ => Err(DecodeError::Invalid("a command is an array")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_commands_as_bulk_arrays() {
        assert_eq!(command(&["GET", "k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert_eq!(command(&[b"SET".as_slice(), b"a\r\nb", b""]), b"*3\r\n$3\r\nSET\r\n$4\r\na\r\nb\r\n$0\r\n\r\n");
    }

    #[test]
    fn decodes_what_redis_sends() {
        assert_eq!(decode(b"+OK\r\n"), Ok(Reply::Simple("OK".into())));
        assert!(decode(b"-NOAUTH Authentication required.\r\n").unwrap().is_error("NOAUTH"));
        assert_eq!(decode(b":-12\r\n"), Ok(Reply::Integer(-12)));
        assert_eq!(decode(b"$-1\r\n"), Ok(Reply::Bulk(None)));
        assert_eq!(decode(b"_\r\n"), Ok(Reply::Bulk(None)));
        assert_eq!(decode(b"$5\r\na\r\nbc\r\n"), Ok(Reply::Bulk(Some(b"a\r\nbc".to_vec()))));
        assert_eq!(
            decode(b"*2\r\n$1\r\nx\r\n*-1\r\n"),
            Ok(Reply::Array(Some(vec![Reply::Bulk(Some(b"x".to_vec())), Reply::Array(None)])))
        );
    }

    #[test]
    fn refuses_what_is_not_resp() {
        for bad in [&b"?x\r\n"[..], b":12a\r\n", b":\r\n", b"$-2\r\n", b"$1\r\nab\r\n", b"+a\nb\r\n", b"+OK\r\n+OK\r\n"]
        {
            assert!(matches!(decode(bad), Err(DecodeError::Invalid(_))), "{:?}", String::from_utf8_lossy(bad));
        }
        for short in [&b""[..], b"+OK", b"$3\r\nab", b"*2\r\n:1\r\n", b"*999\r\n"] {
            assert_eq!(decode(short), Err(DecodeError::Incomplete), "{:?}", String::from_utf8_lossy(short));
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
        assert!(matches!(decode(deep.as_bytes()), Err(DecodeError::Invalid(_))));
        assert!(matches!(decode(b"*9999999999\r\n"), Err(DecodeError::Invalid(_))));
    }

    fn reply() -> impl Strategy<Value = Reply> {
        let line = "[^\r\n]{0,20}";
        let leaf = prop_oneof![
            line.prop_map(Reply::Simple),
            line.prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Integer),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..40)).prop_map(Reply::Bulk),
            Just(Reply::Array(None)),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| prop::collection::vec(inner, 0..6).prop_map(|v| Reply::Array(Some(v))))
    }

    proptest! {
        #![proptest_config(crate::strategies::cases(500))]

        /// Whatever a server encodes, the client decodes back, and every strict prefix is incomplete.
        #[test]
        fn replies_round_trip(r in reply()) {
            let bytes = encode_reply(&r);
            prop_assert_eq!(decode(&bytes), Ok(r));
            for cut in 0..bytes.len() {
                prop_assert_eq!(decode(&bytes[..cut]), Err(DecodeError::Incomplete), "cut at {}", cut);
            }
        }

        /// Commands decode back to their arguments, whatever bytes the arguments hold.
        #[test]
        fn commands_round_trip(args in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..30), 1..6)) {
            prop_assert_eq!(decode_command(&command(&args)), Ok(args));
        }

        /// Arbitrary bytes decode or fail, never panic, never allocate what they cannot hold.
        #[test]
        fn any_bytes_are_safe(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }

        /// Arbitrary bytes behind a valid type marker exercise the length paths.
        #[test]
        fn any_framed_bytes_are_safe(kind in prop::sample::select(b"+-:$*_".to_vec()), rest in "[-0-9\r\n$*:+a]{0,30}") {
            let mut bytes = vec![kind];
            bytes.extend_from_slice(rest.as_bytes());
            let _ = decode(&bytes);
        }
    }
}
