//! Reads the claims Envoy's `jwt_authn` filter verified, as a wasm filter gets them.
//!
//! `jwt_authn` with `payload_in_metadata: <key>` puts the token's payload in the request's dynamic metadata
//! under `envoy.filters.http.jwt_authn`, as a `google.protobuf.Struct`. A wasm filter reads the property
//! `metadata.filter_metadata["envoy.filters.http.jwt_authn"]`; Envoy's `getProperty` answers a map-valued
//! property with the protobuf-serialized `Struct` (newer Envoy), so that is decoded here, in a few lines
//! rather than with a protobuf crate. The whole `metadata` property (an `envoy.config.core.v3.Metadata`
//! message, which every Envoy serializes the same way) is the fallback.

use serde_json::{Map, Number, Value};

/// A cursor over protobuf wire format.
struct Wire<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Wire<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.bytes.get(self.at)?;
            self.at += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(out);
            }
        }
        None
    }

    /// The next field: its number, and its payload (a length-delimited slice, or a scalar).
    fn field(&mut self) -> Option<(u64, Field<'a>)> {
        let key = self.varint()?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                let b = self.bytes.get(self.at..self.at + 8)?;
                self.at += 8;
                Field::Fixed64(u64::from_le_bytes(b.try_into().ok()?))
            }
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                let b = self.bytes.get(self.at..self.at.checked_add(len)?)?;
                self.at += len;
                Field::Bytes(b)
            }
            5 => {
                self.bytes.get(self.at..self.at + 4)?;
                self.at += 4;
                Field::Varint(0)
            }
            _ => return None,
        };
        Some((key >> 3, field))
    }

    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }
}

enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
}

/// Depth limit: claims nest little, and a hostile payload must not recurse the VM's stack away.
const MAX_DEPTH: usize = 32;

/// Decodes a serialized `google.protobuf.Struct`; `None` when the bytes are not one.
pub fn decode_struct(bytes: &[u8]) -> Option<Map<String, Value>> {
    struct_at(bytes, 0)
}

fn struct_at(bytes: &[u8], depth: usize) -> Option<Map<String, Value>> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut out = Map::new();
    let mut w = Wire { bytes, at: 0 };
    while !w.done() {
        // Struct { map<string, Value> fields = 1; }: each entry { string key = 1; Value value = 2; }.
        let (1, Field::Bytes(entry)) = w.field()? else { return None };
        let (mut key, mut value) = (String::new(), Value::Null);
        let mut e = Wire { bytes: entry, at: 0 };
        while !e.done() {
            match e.field()? {
                (1, Field::Bytes(k)) => key = String::from_utf8(k.to_vec()).ok()?,
                (2, Field::Bytes(v)) => value = value_at(v, depth + 1)?,
                _ => return None,
            }
        }
        out.insert(key, value);
    }
    Some(out)
}

fn value_at(bytes: &[u8], depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut w = Wire { bytes, at: 0 };
    let mut out = Value::Null;
    while !w.done() {
        out = match w.field()? {
            (1, Field::Varint(_)) => Value::Null,
            (2, Field::Fixed64(bits)) => {
                let f = f64::from_bits(bits);
                // Whole numbers (iat, exp) read as integers, as they were in the token.
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    Value::Number(Number::from(f as i64))
                } else {
                    Number::from_f64(f).map_or(Value::Null, Value::Number)
                }
            }
            (3, Field::Bytes(s)) => Value::String(String::from_utf8(s.to_vec()).ok()?),
            (4, Field::Varint(b)) => Value::Bool(b != 0),
            (5, Field::Bytes(s)) => Value::Object(struct_at(s, depth + 1)?),
            (6, Field::Bytes(l)) => {
                // ListValue { repeated Value values = 1; }
                let mut items = Vec::new();
                let mut lw = Wire { bytes: l, at: 0 };
                while !lw.done() {
                    let (1, Field::Bytes(v)) = lw.field()? else { return None };
                    items.push(value_at(v, depth + 1)?);
                }
                Value::Array(items)
            }
            _ => return None,
        };
    }
    Some(out)
}

/// The namespace `jwt_authn` writes under.
pub const NAMESPACE: &str = "envoy.filters.http.jwt_authn";

/// Finds the `filter_metadata[namespace]` Struct of a serialized `envoy.config.core.v3.Metadata`.
pub fn decode_metadata(bytes: &[u8], namespace: &str) -> Option<Map<String, Value>> {
    let mut w = Wire { bytes, at: 0 };
    while !w.done() {
        let (number, field) = w.field()?;
        // filter_metadata = 1 (map<string, Struct>); typed_filter_metadata = 2 is skipped.
        let (1, Field::Bytes(entry)) = (number, field) else { continue };
        let mut e = Wire { bytes: entry, at: 0 };
        let (mut key, mut value) = (&[][..], &[][..]);
        while !e.done() {
            match e.field()? {
                (1, Field::Bytes(k)) => key = k,
                (2, Field::Bytes(v)) => value = v,
                _ => return None,
            }
        }
        if key == namespace.as_bytes() {
            return decode_struct(value);
        }
    }
    None
}

/// The payload `payload_in_metadata: key` put in the namespace's Struct, if it is there.
pub fn payload(namespace: &Map<String, Value>, key: &str) -> Option<Map<String, Value>> {
    namespace.get(key)?.as_object().cloned()
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use serde_json::json;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn bytes_field(number: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    /// Encodes JSON as a protobuf `Value` (what Envoy does with a token's payload).
    pub fn encode_value(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        match v {
            Value::Null => {
                varint(1 << 3, &mut out);
                varint(0, &mut out);
            }
            Value::Number(n) => {
                varint(2 << 3 | 1, &mut out);
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_le_bytes());
            }
            Value::String(s) => bytes_field(3, s.as_bytes(), &mut out),
            Value::Bool(b) => {
                varint(4 << 3, &mut out);
                varint(u64::from(*b), &mut out);
            }
            Value::Object(m) => bytes_field(5, &encode_struct(m), &mut out),
            Value::Array(items) => {
                let mut list = Vec::new();
                for i in items {
                    bytes_field(1, &encode_value(i), &mut list);
                }
                bytes_field(6, &list, &mut out);
            }
        }
        out
    }

    pub fn encode_struct(m: &Map<String, Value>) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in m {
            let mut entry = Vec::new();
            bytes_field(1, k.as_bytes(), &mut entry);
            bytes_field(2, &encode_value(v), &mut entry);
            bytes_field(1, &entry, &mut out);
        }
        out
    }

    #[test]
    fn decodes_a_struct_as_envoy_serializes_it() {
        let claims = json!({"sub": "alice", "aud": ["a", "b"], "exp": 1700000000, "ratio": 0.5, "admin": true,
                             "nested": {"x": null}, "scope": "read write"});
        let ns = json!({"my_payload": claims});
        let bytes = encode_struct(ns.as_object().unwrap());
        let back = decode_struct(&bytes).unwrap();
        assert_eq!(Value::Object(back.clone()), ns);
        assert_eq!(Value::Object(payload(&back, "my_payload").unwrap()), claims);
        assert!(payload(&back, "other").is_none());
    }

    #[test]
    fn finds_the_namespace_in_the_whole_metadata() {
        let ns = json!({"p": {"sub": "bob"}});
        let mut meta = Vec::new();
        let mut other = Vec::new();
        bytes_field(1, b"envoy.lb", &mut other);
        bytes_field(2, &encode_struct(json!({"a": 1}).as_object().unwrap()), &mut other);
        bytes_field(1, &other, &mut meta);
        let mut entry = Vec::new();
        bytes_field(1, NAMESPACE.as_bytes(), &mut entry);
        bytes_field(2, &encode_struct(ns.as_object().unwrap()), &mut entry);
        bytes_field(1, &entry, &mut meta);
        assert_eq!(Value::Object(decode_metadata(&meta, NAMESPACE).unwrap()), ns);
        assert!(decode_metadata(&meta, "absent").is_none());
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        for bad in [&b"\xff\xff\xff"[..], b"\x0a\x05ab", b"\x12\x00", b"\x0a\x80"] {
            assert!(decode_struct(bad).is_none(), "{bad:?}");
        }
        // Deep nesting stops at the limit.
        let mut v = json!("x");
        for _ in 0..40 {
            v = json!({"a": v});
        }
        assert!(decode_struct(&encode_struct(v.as_object().unwrap())).is_none());
    }
}
