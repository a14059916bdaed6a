//! A sans-IO reader of `text/event-stream` bodies that arrive in chunks split anywhere: it hands back each
//! complete event as the bytes it came in, so the relay can pass events on unchanged or rewrite one.

/// Buffers the bytes of the event in progress.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
}

impl Parser {
    /// Takes a chunk; returns the events it completed, each with its terminating blank line.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0; // where the current event starts
        let mut line = 0; // where the current line starts
        let mut i = 0;
        while i < self.buf.len() {
            let end = match self.buf[i] {
                b'\n' => i + 1,
                // A CR may be the first half of CRLF: decide once the next byte is in.
                b'\r' if i + 1 == self.buf.len() => break,
                b'\r' if self.buf[i + 1] == b'\n' => i + 2,
                b'\r' => i + 1,
                _ => {
                    i += 1;
                    continue;
                }
            };
            if i == line {
                // A blank line ends the event.
                events.push(self.buf[start..end].to_vec());
                start = end;
            }
            line = end;
            i = end;
        }
        self.buf.drain(..start);
        events
    }

    /// What is left when the stream ends (an event without its blank line).
    pub fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// The lines of an event, without their terminators.
fn lines(event: &[u8]) -> impl Iterator<Item = &[u8]> {
    event.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).flat_map(|l| l.split(|b| *b == b'\r'))
}

/// The event's type (its `event:` field), if it names one.
pub fn event_type(event: &[u8]) -> Option<String> {
    lines(event).find_map(|l| {
        let v = l.strip_prefix(b"event:")?;
        Some(String::from_utf8_lossy(v.strip_prefix(b" ").unwrap_or(v)).into_owned())
    })
}

/// The event's data (its `data:` lines joined by newlines), if it has any.
pub fn data(event: &[u8]) -> Option<String> {
    let mut out: Option<String> = None;
    for l in lines(event) {
        let value = match l.strip_prefix(b"data") {
            Some([]) => &b""[..],
            Some([b':', rest @ ..]) => rest.strip_prefix(b" ").unwrap_or(rest),
            _ => continue,
        };
        let text = String::from_utf8_lossy(value);
        match &mut out {
            Some(d) => {
                d.push('\n');
                d.push_str(&text);
            }
            None => out = Some(text.into_owned()),
        }
    }
    out
}

/// The event with its data replaced by `data` (one line: serialized JSON has no raw newlines); other
/// fields (`event`, `id`, `retry`, comments) keep their place before it.
pub fn with_data(event: &[u8], data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(event.len());
    for l in lines(event).filter(|l| !l.is_empty() && !l.starts_with(b"data")) {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"event: message\r\nid: 1\r\ndata: {\"a\":1}\r\n\r\n: keep-alive\n\ndata: x\rdata: y\r\r\n";

    #[test]
    fn every_split_gives_the_same_events() {
        let whole = Parser::default().feed(STREAM);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole.concat(), STREAM);
        for a in 0..STREAM.len() {
            for b in a..STREAM.len() {
                let mut p = Parser::default();
                let mut got = p.feed(&STREAM[..a]);
                got.extend(p.feed(&STREAM[a..b]));
                got.extend(p.feed(&STREAM[b..]));
                assert_eq!(got, whole, "split at {a} and {b}");
                assert!(p.rest().is_empty());
            }
        }
    }

    #[test]
    fn a_cr_at_a_chunk_end_waits_for_the_next_byte() {
        let mut p = Parser::default();
        assert!(p.feed(b"data: 1\r\n\r").is_empty());
        assert_eq!(p.feed(b"\n"), vec![b"data: 1\r\n\r\n".to_vec()]);
    }

    #[test]
    fn data_and_rewriting() {
        let events = Parser::default().feed(STREAM);
        assert_eq!(data(&events[0]).as_deref(), Some("{\"a\":1}"));
        assert_eq!(data(&events[1]), None);
        assert_eq!(event_type(&events[0]).as_deref(), Some("message"));
        assert_eq!(event_type(&events[2]), None);
        assert_eq!(data(&events[2]).as_deref(), Some("x\ny"));
        assert_eq!(with_data(&events[0], "{}"), b"event: message\nid: 1\ndata: {}\n\n");
    }

    #[test]
    fn an_unfinished_event_is_left_over() {
        let mut p = Parser::default();
        assert!(p.feed(b"data: partial\n").is_empty());
        assert_eq!(p.rest(), b"data: partial\n");
    }
}
