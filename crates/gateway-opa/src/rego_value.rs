//! Conversions between the contract's JSON documents and regorus [`Value`]s, without JSON text
//! in between (`serde_json::to_string` and regorus's own JSON parser together cost more than
//! evaluating a small policy on the VM):
//!
//! - [`to_rego_value`] serialises any `Serialize` input straight into a regorus value: the value
//!   regorus would have parsed from the JSON encoding of the same input, with an upper bound of
//!   that encoding's length (for the input size limit);
//! - [`to_json_value`] turns a decision back into a `serde_json::Value`: the value
//!   `serde_json::to_value` gives through regorus's `Serialize`.
//!
//! The contract is defined in JSON terms; the tests check both against those references.

use crate::contract::{Document, parse_decision, parse_document};
use gateway_core::policy::{Decision, PolicyError};
use regorus::Value;
use serde::ser::{self, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;

/// Converts `value` into a regorus value, as if it had been encoded as JSON and parsed back,
/// and returns with it an upper bound of the length of that JSON encoding (every string byte
/// counted as a six-byte escape, every number as [`MAX_NUMBER_LEN`] bytes).
pub(crate) fn to_rego_value<T: Serialize + ?Sized>(value: &T) -> Result<(Value, usize), Error> {
    let bound = Cell::new(0);
    let converted = value.serialize(ValueSerializer { bound: &bound })?;
    Ok((converted, bound.get()))
}

/// No JSON number serde_json writes is longer (an `i128` has at most 40 characters, an `f64`
/// at most 24).
const MAX_NUMBER_LEN: usize = 48;

/// The longest JSON encoding of a string of `len` bytes: quotes and a `\u00XX` escape per byte.
fn max_string_len(len: usize) -> usize {
    len.saturating_mul(6).saturating_add(2)
}

/// Converts a regorus value (a decision document) into JSON, as `serde_json::to_value` would,
/// refusing documents nested deeper than [`MAX_DECISION_DEPTH`] (so a runaway policy cannot
/// exhaust the stack here).
pub(crate) fn to_json_value(value: &Value) -> Result<serde_json::Value, PolicyError> {
    json_at_depth(value, 0).map_err(|e| {
        PolicyError::internal_msg(format!("decision cannot be converted to JSON: {e}"))
    })
}

/// Deeper decision documents are refused; real ones nest three levels.
pub(crate) const MAX_DECISION_DEPTH: usize = 64;

fn json_at_depth(value: &Value, depth: usize) -> Result<serde_json::Value, serde_json::Error> {
    if depth > MAX_DECISION_DEPTH {
        return Err(ser::Error::custom(format!(
            "the decision nests deeper than {MAX_DECISION_DEPTH} levels"
        )));
    }
    let nested = |item: &Value| json_at_depth(item, depth + 1);
    Ok(match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.as_ref().to_owned()),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => serde_json::Value::from(u),
            (None, Some(i)) => serde_json::Value::from(i),
            // Fractions and big numbers keep regorus's own decimal rendering.
            _ => serde_json::to_value(value)?,
        },
        Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(nested).collect::<Result<_, _>>()?)
        }
        // Sets serialise as arrays, in their (sorted) order.
        Value::Set(items) => {
            serde_json::Value::Array(items.iter().map(nested).collect::<Result<_, _>>()?)
        }
        Value::Object(fields) => {
            let mut map = serde_json::Map::new();
            for (key, field) in fields.iter_sorted() {
                let Value::String(key) = key else {
                    // Non-string keys are rare; regorus stringifies them its own way.
                    return serde_json::to_value(value);
                };
                map.insert(key.as_ref().to_owned(), nested(field)?);
            }
            serde_json::Value::Object(map)
        }
        Value::Undefined => serde_json::to_value(value)?,
    })
}

/// Parses a decision straight from the engine's value: the same result as
/// `parse_decision(&to_json_value(value)?)`, without building the JSON. Documents whose JSON
/// form differs from their shape here (sets, non-string keys, undefined, numbers that are not
/// 64-bit integers, deep nesting) take that path instead.
pub(crate) fn parse_rego_decision(value: &Value) -> Result<Decision, PolicyError> {
    if json_shaped(value, 0) {
        return parse_document(value);
    }
    parse_decision(&to_json_value(value)?)
}

/// Whether `value` reads the same here as in its JSON form.
fn json_shaped(value: &Value, depth: usize) -> bool {
    if depth > MAX_DECISION_DEPTH {
        return false;
    }
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => true,
        Value::Number(n) => n.as_u64().is_some() || n.as_i64().is_some(),
        Value::Array(items) => items.iter().all(|item| json_shaped(item, depth + 1)),
        Value::Object(fields) => fields
            .iter()
            .all(|(k, v)| matches!(k, Value::String(_)) && json_shaped(v, depth + 1)),
        Value::Set(_) | Value::Undefined => false,
    }
}

/// Valid for [`json_shaped`] values only (see [`parse_rego_decision`]).
impl Document for Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) | Value::Undefined => "string",
            Value::Array(_) | Value::Set(_) => "array",
            Value::Object(_) => "object",
        }
    }
    fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    fn is_object(&self) -> bool {
        matches!(self, Value::Object(_))
    }
    fn field(&self, key: &str) -> Option<&Self> {
        self.fields().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
    fn fields(&self) -> impl Iterator<Item = (&str, &Self)> {
        let fields = match self {
            Value::Object(fields) => Some(fields.iter_sorted()),
            _ => None,
        };
        fields.into_iter().flatten().filter_map(|(k, v)| match k {
            Value::String(k) => Some((k.as_ref(), v)),
            _ => None,
        })
    }
    fn items(&self) -> Option<impl Iterator<Item = &Self>> {
        match self {
            Value::Array(items) => Some(items.iter()),
            _ => None,
        }
    }
    fn number(&self) -> Option<(Option<u64>, Option<f64>, String)> {
        let Value::Number(n) = self else {
            return None;
        };
        match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Some((Some(u), Some(u as f64), u.to_string())),
            (None, Some(i)) => Some((None, Some(i as f64), i.to_string())),
            _ => None,
        }
    }
}

/// A value that JSON cannot represent (a map key that is not a string or an integer).
#[derive(Debug)]
pub(crate) struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

/// Builds the value; `bound` accumulates the JSON length bound of everything serialised.
#[derive(Clone, Copy)]
struct ValueSerializer<'a> {
    bound: &'a Cell<usize>,
}

impl ValueSerializer<'_> {
    fn add(&self, len: usize) {
        self.bound.set(self.bound.get().saturating_add(len));
    }

    fn number(&self, value: Value) -> Result<Value, Error> {
        self.add(MAX_NUMBER_LEN);
        Ok(value)
    }

    fn string(&self, value: &str) -> Value {
        self.add(max_string_len(value.len()));
        Value::from(value)
    }

    fn null(&self) -> Result<Value, Error> {
        self.add(4);
        Ok(Value::Null)
    }

    /// `{"variant": ` and `}` around an externally tagged enum's content.
    fn variant_key(&self, variant: &str) -> Value {
        self.add(3);
        self.string(variant)
    }
}

impl<'a> ser::Serializer for ValueSerializer<'a> {
    type Ok = Value;
    type Error = Error;
    type SerializeSeq = SeqBuilder<'a>;
    type SerializeTuple = SeqBuilder<'a>;
    type SerializeTupleStruct = SeqBuilder<'a>;
    type SerializeTupleVariant = VariantBuilder<SeqBuilder<'a>>;
    type SerializeMap = MapBuilder<'a>;
    type SerializeStruct = MapBuilder<'a>;
    type SerializeStructVariant = VariantBuilder<MapBuilder<'a>>;

    fn serialize_bool(self, v: bool) -> Result<Value, Error> {
        self.add(5);
        Ok(Value::from(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, Error> {
        self.number(Value::from(i64::from(v)))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, Error> {
        self.number(Value::from(i64::from(v)))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, Error> {
        self.number(Value::from(i64::from(v)))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, Error> {
        self.number(Value::from(v))
    }
    fn serialize_i128(self, v: i128) -> Result<Value, Error> {
        self.number(Value::from(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, Error> {
        self.number(Value::from(u64::from(v)))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, Error> {
        self.number(Value::from(u64::from(v)))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, Error> {
        self.number(Value::from(u64::from(v)))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, Error> {
        self.number(Value::from(v))
    }
    fn serialize_u128(self, v: u128) -> Result<Value, Error> {
        self.number(Value::from(v))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, Error> {
        self.serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, Error> {
        // serde_json writes non-finite floats as null.
        self.number(if v.is_finite() {
            Value::from(v)
        } else {
            Value::Null
        })
    }
    fn serialize_char(self, v: char) -> Result<Value, Error> {
        Ok(self.string(v.encode_utf8(&mut [0; 4])))
    }
    fn serialize_str(self, v: &str) -> Result<Value, Error> {
        Ok(self.string(v))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, Error> {
        // As serde_json: an array of numbers, at most "255," per byte.
        self.add(v.len().saturating_mul(4).saturating_add(2));
        let items: Vec<Value> = v.iter().map(|b| Value::from(u64::from(*b))).collect();
        Ok(Value::from(items))
    }
    fn serialize_none(self) -> Result<Value, Error> {
        self.null()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, Error> {
        self.null()
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, Error> {
        self.null()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, Error> {
        Ok(self.string(variant))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value, Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, Error> {
        let key = self.variant_key(variant);
        Ok(tagged(key, value.serialize(self)?))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder<'a>, Error> {
        self.add(2);
        Ok(SeqBuilder {
            items: Vec::with_capacity(len.unwrap_or(0)),
            serializer: self,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqBuilder<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantBuilder<SeqBuilder<'a>>, Error> {
        Ok(VariantBuilder {
            variant: self.variant_key(variant),
            inner: self.serialize_seq(Some(len))?,
        })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapBuilder<'a>, Error> {
        self.add(2);
        Ok(MapBuilder {
            entries: Vec::with_capacity(len.unwrap_or(0)),
            next_key: None,
            serializer: self,
        })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<MapBuilder<'a>, Error> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantBuilder<MapBuilder<'a>>, Error> {
        Ok(VariantBuilder {
            variant: self.variant_key(variant),
            inner: self.serialize_map(Some(len))?,
        })
    }
}

/// `{"variant": content}`, serde_json's externally tagged enum form.
fn tagged(variant: Value, content: Value) -> Value {
    let mut map = BTreeMap::new();
    map.insert(variant, content);
    Value::from(map)
}

pub(crate) struct SeqBuilder<'a> {
    items: Vec<Value>,
    serializer: ValueSerializer<'a>,
}

impl ser::SerializeSeq for SeqBuilder<'_> {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.serializer.add(1);
        self.items.push(value.serialize(self.serializer)?);
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        Ok(Value::from(self.items))
    }
}

impl ser::SerializeTuple for SeqBuilder<'_> {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Value, Error> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for SeqBuilder<'_> {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Value, Error> {
        ser::SerializeSeq::end(self)
    }
}

/// Collects an object's entries; they are sorted once at the end (`BTreeMap`'s bulk build),
/// which is cheaper than inserting them one by one.
pub(crate) struct MapBuilder<'a> {
    entries: Vec<(Value, Value)>,
    next_key: Option<Value>,
    serializer: ValueSerializer<'a>,
}

impl MapBuilder<'_> {
    fn finish(self) -> Value {
        // Later duplicates win, as when regorus parses JSON with a repeated key.
        Value::from(self.entries.into_iter().collect::<BTreeMap<_, _>>())
    }
}

/// A struct field name as a regorus string. Field names are few and `'static`, so each
/// thread keeps them instead of allocating one per field per input. They are found by address
/// (a short linear scan beats hashing the name); a name that appears at several addresses is
/// merely kept once per address.
fn field_name(name: &'static str) -> Value {
    thread_local! {
        static NAMES: RefCell<Vec<(&'static str, Value)>> = const { RefCell::new(Vec::new()) };
    }
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if let Some((_, value)) = names.iter().find(|(known, _)| std::ptr::eq(*known, name)) {
            return value.clone();
        }
        let value = Value::from(name);
        names.push((name, value.clone()));
        value
    })
}

impl ser::SerializeMap for MapBuilder<'_> {
    type Ok = Value;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        // Colon and comma; the key's own length is added as it is serialised (an integer key
        // gains two quotes, within the number bound).
        self.serializer.add(2);
        let key = key.serialize(self.serializer)?;
        // JSON object keys are strings; serde_json also writes integer keys as strings.
        let key = match key {
            Value::String(_) => key,
            Value::Number(_) => Value::from(key.to_string()),
            _ => return Err(Error("a map key must be a string or an integer".into())),
        };
        self.next_key = Some(key);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .next_key
            .take()
            .ok_or_else(|| Error("a map value came without its key".into()))?;
        self.entries.push((key, value.serialize(self.serializer)?));
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        Ok(self.finish())
    }
}

impl ser::SerializeStruct for MapBuilder<'_> {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.serializer
            .add(max_string_len(key.len()).saturating_add(2));
        self.entries
            .push((field_name(key), value.serialize(self.serializer)?));
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        Ok(self.finish())
    }
}

/// An externally tagged enum variant's content, wrapped at the end.
pub(crate) struct VariantBuilder<B> {
    variant: Value,
    inner: B,
}

impl ser::SerializeTupleVariant for VariantBuilder<SeqBuilder<'_>> {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(&mut self.inner, value)
    }
    fn end(self) -> Result<Value, Error> {
        Ok(tagged(self.variant, ser::SerializeSeq::end(self.inner)?))
    }
}

impl ser::SerializeStructVariant for VariantBuilder<MapBuilder<'_>> {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        ser::SerializeStruct::serialize_field(&mut self.inner, key, value)
    }
    fn end(self) -> Result<Value, Error> {
        Ok(tagged(self.variant, ser::SerializeStruct::end(self.inner)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use serde_json::json;

    /// The conversion equals regorus parsing the JSON encoding, and its length bound holds.
    fn assert_converts<T: Serialize>(value: &T) {
        let json = serde_json::to_string(value).unwrap();
        let (converted, bound) = to_rego_value(value).unwrap();
        assert_eq!(converted, Value::from_json_str(&json).unwrap());
        assert!(
            bound >= json.len(),
            "bound {bound} < {} for {json}",
            json.len()
        );
    }

    #[test]
    fn matches_regorus_parsing_the_json_encoding() {
        #[derive(Serialize)]
        enum Kind {
            Unit,
            Newtype(u8),
            Tuple(u8, String),
            Struct { a: i32 },
        }
        #[derive(Serialize)]
        struct Sample {
            small: u8,
            negative: i64,
            big: u64,
            float: f64,
            not_finite: f64,
            text: &'static str,
            escaped: &'static str,
            none: Option<u8>,
            some: Option<&'static str>,
            kinds: Vec<Kind>,
            tuple: (u8, bool),
            int_keys: BTreeMap<u32, &'static str>,
            free: serde_json::Value,
        }
        let sample = Sample {
            small: 7,
            negative: -42,
            big: u64::MAX,
            float: 2.5,
            not_finite: f64::NAN,
            text: "héllo",
            escaped: "quote \" backslash \\ newline \n",
            none: None,
            some: Some("x"),
            kinds: vec![
                Kind::Unit,
                Kind::Newtype(1),
                Kind::Tuple(2, "t".into()),
                Kind::Struct { a: -3 },
            ],
            tuple: (9, true),
            int_keys: [(1, "one"), (20, "twenty")].into_iter().collect(),
            free: json!({"nested": [1, 2.25, -3, null, {"deep": [true, "s"]}], "": {}}),
        };
        assert_converts(&sample);
    }

    #[test]
    fn policy_inputs_convert_exactly() {
        let input: gateway_core::PolicyInput = serde_json::from_value(json!({
            "contract_version": 1,
            "agent": {
                "id": "agent:deployer",
                "owner": "team-platform",
                "attributes": {"namespaces": ["team-a", "prod"], "level": 3.5},
                "auth": {"method": "static_key", "key_id": "key-1"}
            },
            "action": "k8s.scale",
            "resource": "k8s:team-a/deployments/web",
            "params": {"replicas": 3, "note": null},
            "intent": "test",
            "requested_ttl_seconds": 120,
            "request_time": "2025-01-06T10:30:00.123456789Z",
            "correlation_id": "0193f5d2-6a1b-7c3d-8e4f-001122334455",
            "context": {"source_ip": "10.0.0.1"}
        }))
        .unwrap();
        assert_converts(&input);
    }

    #[test]
    fn decisions_convert_back_like_serde_json() {
        let values = [
            r#"{"allow": true, "reasons": [], "max_ttl_seconds": 300, "scopes": ["a", "b"],
                "require_approval": false, "runner": {"network": {"mode": "none"}}}"#,
            r#"{"n": [0, -1, 18446744073709551615, -9223372036854775808, 2.5, 300.0, 1e300,
                123456789012345678901234567890, 0.1], "s": "é\"\n", "z": null}"#,
            r#"[true, false, {}, [], ""]"#,
        ];
        for text in values {
            let value = Value::from_json_str(text).unwrap();
            assert_eq!(
                to_json_value(&value).unwrap(),
                serde_json::to_value(&value).unwrap(),
                "{text}"
            );
        }
        // Sets, non-string keys and undefined, which only Rego produces.
        let mut set = std::collections::BTreeSet::new();
        set.insert(Value::from("b"));
        set.insert(Value::from("a"));
        let mut odd = BTreeMap::new();
        odd.insert(Value::from(1u64), Value::from(set.clone()));
        for value in [Value::from(set), Value::from(odd), Value::Undefined] {
            assert_eq!(
                to_json_value(&value).unwrap(),
                serde_json::to_value(&value).unwrap()
            );
        }
    }

    #[test]
    fn decisions_parse_like_their_json_form() {
        let documents = [
            r#"{"allow": true, "reasons": [], "max_ttl_seconds": 300, "scopes": ["a", "b"],
                "require_approval": false, "runner": {"network": {"mode": "none"}}}"#,
            r#"{"allow": false, "extra": {"deep": [1, 2.5, null]}}"#,
            r#"{"allow": true, "max_ttl_seconds": 60.0}"#,
            r#"{"allow": true, "max_ttl_seconds": -1}"#,
            r#"{"allow": true, "max_ttl_seconds": 18446744073709551615}"#,
            r#"{"allow": true, "runner": {"pids": 4294967296}}"#,
            r#"{"allow": true, "runner": {"cpu_millis": 5, "memory_bytes": 7, "timeout_seconds": 9,
                "network": {"mode": "allowlist", "destinations": ["10.0.0.1:5432"]}}}"#,
            r#"{"allow": true, "runner": {"network": {"mode": "allowlist"}}}"#,
            r#"{"allow": true, "runner": {"network": {"mode": "none", "destinations": []}}}"#,
            r#"{"allow": true, "runner": {"network": {"mode": 3}}}"#,
            r#"{"allow": true, "runner": {"network": {"mode": "open"}}}"#,
            r#"{"allow": true, "runner": {"network": {"port": 1}}}"#,
            r#"{"allow": true, "runner": {"gpu": 1}}"#,
            r#"{"allow": true, "runner": []}"#,
            r#"{"allow": true, "scopes": ["a", 1]}"#,
            r#"{"allow": true, "reasons": "no"}"#,
            r#"{"allow": "yes"}"#,
            r#"{"allow": null}"#,
            r#"{"reasons": []}"#,
            r#"{"allow": true, "require_approval": 1}"#,
            r#"[1]"#,
            r#""allow""#,
        ];
        for text in documents {
            let value = Value::from_json_str(text).unwrap();
            let json: serde_json::Value = serde_json::from_str(text).unwrap();
            let direct = parse_rego_decision(&value);
            let via_json = parse_decision(&json);
            assert_eq!(format!("{direct:?}"), format!("{via_json:?}"), "{text}");
        }
        // Shapes only Rego produces go through the JSON form.
        let mut set = std::collections::BTreeSet::new();
        set.insert(Value::from("s"));
        let mut doc = BTreeMap::new();
        doc.insert(Value::from("allow"), Value::from(true));
        doc.insert(Value::from("scopes"), Value::from(set));
        let value = Value::from(doc);
        assert!(!json_shaped(&value, 0));
        assert_eq!(
            parse_rego_decision(&value).unwrap().obligations.scopes,
            vec!["s"]
        );
        // Nesting beyond the limit is refused (the conversion recurses; regorus values too).
        let mut deep = Value::from(true);
        for _ in 0..=MAX_DECISION_DEPTH {
            let mut wrapper = BTreeMap::new();
            wrapper.insert(Value::from("a"), deep);
            deep = Value::from(wrapper);
        }
        let mut doc = BTreeMap::new();
        doc.insert(Value::from("allow"), Value::from(true));
        doc.insert(Value::from("debug"), deep);
        assert!(parse_rego_decision(&Value::from(doc)).is_err());
    }

    #[test]
    fn non_string_map_keys_are_refused() {
        let map: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into_iter().collect();
        assert!(to_rego_value(&map).is_err());
        assert!(serde_json::to_string(&map).is_err());
    }
}
