//! Base64 (RFC 4648), standard and URL-safe alphabets, padded or not: what the gateway encodes and decodes
//! (session ids, input states, list cursors, file arguments, `b64enc`/`b64dec`, basic credentials).
//!
//! Written here instead of taken from the `base64` crate, whose general-purpose engine (unrolled decoding,
//! four 256-byte tables, its `Engine` trait's generic copies) took about 6 KB of the module. It decodes as
//! that crate's engines with their default configuration do, errors and their messages included (a unit
//! test holds the two equal): padding canonical when the alphabet pads (`STANDARD`, `URL_SAFE`) and absent
//! when it does not (`*_NO_PAD`), the last symbol's unused bits zero, no whitespace.

use std::fmt;

/// An alphabet and whether encoding pads (and decoding requires padding, canonical, or refuses it).
#[derive(Clone, Copy, Debug)]
pub struct Engine {
    url: bool,
    pad: bool,
}

/// `+` and `/`, padded.
pub const STANDARD: Engine = Engine { url: false, pad: true };
/// `+` and `/`, without padding.
pub const STANDARD_NO_PAD: Engine = Engine { url: false, pad: false };
/// `-` and `_`, padded.
pub const URL_SAFE: Engine = Engine { url: true, pad: true };
/// `-` and `_`, without padding.
pub const URL_SAFE_NO_PAD: Engine = Engine { url: true, pad: false };

const PAD: u8 = b'=';

/// Why a text is not base64 of an engine; shown as the `base64` crate words it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A symbol outside the alphabet (or a misplaced `=`), at its offset.
    InvalidByte(usize, u8),
    /// A length no encoding has (one symbol too many), as the offset where a symbol was missing.
    InvalidLength(usize),
    /// The last symbol has bits set that no byte of the decoded data holds.
    InvalidLastSymbol(usize, u8),
    /// Padding missing, incomplete, or present where the engine takes none.
    InvalidPadding,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::InvalidByte(index, byte) => write!(f, "Invalid symbol {byte}, offset {index}."),
            Self::InvalidLength(len) => write!(f, "Invalid input length: {len}"),
            Self::InvalidLastSymbol(index, byte) => write!(f, "Invalid last symbol {byte}, offset {index}."),
            Self::InvalidPadding => f.write_str("Invalid padding"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl Engine {
    /// `bytes` as base64 text.
    #[inline]
    pub fn encode<T: AsRef<[u8]>>(&self, bytes: T) -> String {
        encode(bytes.as_ref(), self.url, self.pad)
    }

    /// The bytes `text` encodes.
    #[inline]
    pub fn decode<T: AsRef<[u8]>>(&self, text: T) -> Result<Vec<u8>, DecodeError> {
        decode(text.as_ref(), self.url, self.pad)
    }
}

fn symbol(index: u8, url: bool) -> u8 {
    match index {
        0..=25 => b'A' + index,
        26..=51 => b'a' + (index - 26),
        52..=61 => b'0' + (index - 52),
        62 => {
            if url {
                b'-'
            } else {
                b'+'
            }
        }
        _ => {
            if url {
                b'_'
            } else {
                b'/'
            }
        }
    }
}

/// The 6-bit value of symbol `b`, or `None` outside the alphabet (`=` included).
fn value(b: u8, url: bool) -> Option<u32> {
    let v = match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'+' if !url => 62,
        b'/' if !url => 63,
        b'-' if url => 62,
        b'_' if url => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

fn encode(bytes: &[u8], url: bool, pad: bool) -> String {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let mut n = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            n |= u32::from(b) << (16 - 8 * i);
        }
        let symbols = chunk.len() + 1;
        for i in 0..4 {
            if i < symbols {
                out.push(symbol(((n >> (18 - 6 * i)) & 63) as u8, url));
            } else if pad {
                out.push(PAD);
            }
        }
    }
    // Only ASCII was pushed.
    String::from_utf8(out).unwrap_or_default()
}

fn decode(input: &[u8], url: bool, pad: bool) -> Result<Vec<u8>, DecodeError> {
    let rem = input.len() % 4;
    // The `base64` crate's order of checks, so that a text with several faults is refused for the same one.
    if rem == 1 {
        if let Some(&last) = input.last() {
            if last != PAD && value(last, url).is_none() {
                return Err(DecodeError::InvalidByte(input.len() - 1, last));
            }
        }
    }
    // The complete groups of four before the last (one to four) symbols.
    let body = input.len().saturating_sub(rem).saturating_sub(usize::from(rem == 0) * 4);
    let mut out = Vec::with_capacity((input.len() / 4 + usize::from(rem > 0)) * 3);
    let mut n = 0u32;
    for (i, &b) in input.iter().enumerate().take(body) {
        let Some(v) = value(b, url) else { return Err(DecodeError::InvalidByte(i, b)) };
        n = (n << 6) | v;
        if i % 4 == 3 {
            out.extend_from_slice(&n.to_be_bytes()[1..]);
            n = 0;
        }
    }
    let mut morsels = 0usize;
    let mut pads = 0usize;
    let mut first_pad = 0usize;
    let mut last = 0u8;
    let mut leftover = 0u32;
    for (i, &b) in input.iter().enumerate().skip(body) {
        let at = i - body;
        if b == PAD {
            if at < 2 {
                return Err(DecodeError::InvalidByte(i, b));
            }
            if pads == 0 {
                first_pad = at;
            }
            pads += 1;
            continue;
        }
        if pads > 0 {
            return Err(DecodeError::InvalidByte(body + first_pad, PAD));
        }
        last = b;
        let Some(v) = value(b, url) else { return Err(DecodeError::InvalidByte(i, b)) };
        leftover |= v << (26 - 6 * morsels);
        morsels += 1;
    }
    if !input.is_empty() && morsels < 2 {
        return Err(DecodeError::InvalidLength(body + morsels));
    }
    if (pad && (pads + morsels) % 4 != 0) || (!pad && pads > 0) {
        return Err(DecodeError::InvalidPadding);
    }
    let bytes = morsels * 6 / 8;
    let mask = u32::MAX >> (bytes * 8);
    if leftover & mask != 0 {
        return Err(DecodeError::InvalidLastSymbol(body + morsels - 1, last));
    }
    out.extend_from_slice(&leftover.to_be_bytes()[..bytes]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use proptest::prelude::*;

    fn theirs(e: Engine) -> base64::engine::GeneralPurpose {
        use base64::engine::general_purpose as g;
        match (e.url, e.pad) {
            (false, true) => g::STANDARD,
            (false, false) => g::STANDARD_NO_PAD,
            (true, true) => g::URL_SAFE,
            (true, false) => g::URL_SAFE_NO_PAD,
        }
    }

    const ENGINES: [Engine; 4] = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD];

    #[test]
    fn known_values() {
        assert_eq!(STANDARD.encode(""), "");
        assert_eq!(STANDARD.encode("f"), "Zg==");
        assert_eq!(STANDARD.encode("fo"), "Zm8=");
        assert_eq!(STANDARD.encode("foobar"), "Zm9vYmFy");
        assert_eq!(URL_SAFE_NO_PAD.encode([0xfb, 0xff]), "-_8");
        assert_eq!(STANDARD.encode([0xfb, 0xff]), "+/8=");
        assert_eq!(STANDARD.decode("Zm9vYg==").unwrap(), b"foob");
        assert_eq!(STANDARD.decode("Zm9vYg").unwrap_err().to_string(), "Invalid padding");
        assert_eq!(STANDARD.decode("Zm9vYh==").unwrap_err().to_string(), "Invalid last symbol 104, offset 5.");
        assert_eq!(STANDARD.decode("Zm9*").unwrap_err().to_string(), "Invalid symbol 42, offset 3.");
        assert_eq!(STANDARD.decode("Zm9vY").unwrap_err().to_string(), "Invalid input length: 5");
        assert_eq!(URL_SAFE_NO_PAD.decode("Zm8=").unwrap_err().to_string(), "Invalid padding");
    }

    /// Texts near base64: symbols of both alphabets, padding anywhere, a few other bytes.
    fn near() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            8 => prop::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".to_vec()),
            2 => prop::sample::select(b"+/-_".to_vec()),
            2 => Just(b'='),
            1 => any::<u8>(),
        ];
        prop::collection::vec(byte, 0..24)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn encodes_as_the_base64_crate(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            for e in ENGINES {
                prop_assert_eq!(e.encode(&bytes), theirs(e).encode(&bytes));
            }
        }

        #[test]
        fn decodes_as_the_base64_crate(text in near()) {
            for e in ENGINES {
                let ours = e.decode(&text).map_err(|e| e.to_string());
                let expected = theirs(e).decode(&text).map_err(|e| e.to_string());
                prop_assert_eq!(ours, expected, "{:?} {:?}", e, String::from_utf8_lossy(&text));
            }
        }

        #[test]
        fn decodes_what_it_encodes(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            for e in ENGINES {
                prop_assert_eq!(e.decode(e.encode(&bytes)).unwrap(), bytes.clone());
            }
        }
    }
}
