//! JSON objects built from values already held, without `serde_json::json!`: `json!` passes every
//! interpolated expression through serde (`to_value(&x).unwrap()`), a deep copy of a `Value` and a panic
//! site each time, in code and in time.

use serde_json::{Map, Value};

/// An object of these members, in this order; the values are moved in, not serialised again.
pub fn object(members: Vec<(&str, Value)>) -> Value {
    let mut m = Map::new();
    for (k, v) in members {
        m.insert(k.to_string(), v);
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_keep_their_order_and_values() {
        let v = object(vec![("b", json!(1)), ("a", json!({"x": [true, null]})), ("c", Value::from("s"))]);
        assert_eq!(v, json!({"b": 1, "a": {"x": [true, null]}, "c": "s"}));
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"b":1,"a":{"x":[true,null]},"c":"s"}"#);
        assert_eq!(object(vec![]), json!({}));
    }
}
