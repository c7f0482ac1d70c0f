//! The TOML document as a tree of values that each keep their byte span.
//!
//! Why not a `#[derive(Deserialize)]` mirror with `deny_unknown_fields`?
//! Serde's derive errors do not say *where in the tree* they happened (the
//! field path, e.g. `group.md.ttl`), and which keys are allowed in a group
//! depends on its `kind`, which serde cannot express without an untagged
//! enum whose errors are famously useless ("data did not match any variant").
//! So the only thing serde does here is build this spanned tree; `validate`
//! walks it by hand and writes every error itself, with the exact path, the
//! exact position and the allowed values. TOML syntax errors still come from
//! the `toml` crate, with its span.

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// One TOML value with the spans of everything inside it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    /// TOML datetimes are not used by netconf; kept only to report them.
    Datetime,
    Array(Vec<Item>),
    /// Entries in document order (the order of `[group.*]` tables matters).
    Table(Vec<(Key, Item)>),
}

/// A table key with the byte span of the key text.
pub(crate) type Key = Spanned<String>;

/// A value with the byte span of its text. Tables defined by a header span
/// their header; implicit parent tables (`group` in `[group.md]`) have no
/// text of their own and take the span of their key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    pub(crate) span: Range<usize>,
    pub(crate) value: Value,
}

/// Parses TOML text into the spanned tree; the root is always a table.
pub(crate) fn parse(text: &str) -> Result<Vec<(Key, Item)>, toml::de::Error> {
    let root: Value = toml::from_str(text)?;
    match root {
        Value::Table(entries) => Ok(entries),
        // The TOML grammar makes the root a table; anything else would be a
        // toml bug, reported as an empty document rather than a panic.
        _ => Ok(Vec::new()),
    }
}

impl Value {
    /// The TOML type name, for "expected X, got Y" messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime => "a datetime",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

/// Marker that toml uses to pass a datetime through serde as a one-entry map.
const TOML_DATETIME_FIELD: &str = "$__toml_private_datetime";

// The names serde_spanned (re-exported by toml as `toml::Spanned`) uses to
// recognise a spanned request; toml answers them with a map of start, end
// and value when it knows the span, and with the plain value when it does
// not (implicit tables). Asking for them directly, rather than through
// `Spanned<T>`, lets us accept both answers.
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_START, SPANNED_END, SPANNED_VALUE];

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, ItemVisitor)
    }
}

/// Scalars and arrays: the same for values and items.
macro_rules! scalar_visits {
    ($wrap:expr) => {
        fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
            Ok($wrap(Value::Boolean(v)))
        }

        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok($wrap(Value::Integer(v)))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(|v| $wrap(Value::Integer(v)))
                .map_err(|_| E::custom("integer is too large"))
        }

        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok($wrap(Value::Float(v)))
        }

        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok($wrap(Value::String(v.to_owned())))
        }

        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok($wrap(Value::String(v)))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<Item>()? {
                items.push(item);
            }
            Ok($wrap(Value::Array(items)))
        }
    };
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOML value")
    }

    scalar_visits!(|v| v);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        match map.next_key::<AnyKey>()? {
            None => Ok(Value::Table(Vec::new())),
            Some(first) => table_from(first, map),
        }
    }
}

struct ItemVisitor;

fn unspanned(value: Value) -> Item {
    Item { span: 0..0, value }
}

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOML value")
    }

    scalar_visits!(unspanned);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
        let first = match map.next_key::<AnyKey>()? {
            None => return Ok(unspanned(Value::Table(Vec::new()))),
            Some(first) => first,
        };
        let is_span_field = |k: &AnyKey| matches!(k, AnyKey::Plain(name) if SPANNED_FIELDS.contains(&name.as_str()));
        if !is_span_field(&first) {
            return table_from(first, map).map(unspanned);
        }
        // toml knows the span: a map of start, end and value, in any order.
        let (mut start, mut end, mut value) = (None::<usize>, None::<usize>, None::<Value>);
        let mut key = Some(first);
        while let Some(k) = key {
            match k {
                AnyKey::Plain(name) if name == SPANNED_START => start = Some(map.next_value()?),
                AnyKey::Plain(name) if name == SPANNED_END => end = Some(map.next_value()?),
                AnyKey::Plain(name) if name == SPANNED_VALUE => value = Some(map.next_value()?),
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
            key = map.next_key::<AnyKey>()?;
        }
        match (start, end, value) {
            (Some(s), Some(e), Some(value)) => Ok(Item { span: s..e, value }),
            (_, _, Some(value)) => Ok(unspanned(value)),
            _ => Err(de::Error::custom("spanned value without a value")),
        }
    }
}

/// Reads the rest of a table whose first key was already taken.
fn table_from<'de, A: MapAccess<'de>>(first: AnyKey, mut map: A) -> Result<Value, A::Error> {
    let mut entries: Vec<(Key, Item)> = Vec::new();
    let mut key = Some(first);
    while let Some(k) = key {
        let k = match k {
            AnyKey::Plain(name) if name == TOML_DATETIME_FIELD => {
                map.next_value::<de::IgnoredAny>()?;
                return Ok(Value::Datetime);
            }
            AnyKey::Plain(name) => Spanned::new(0..0, name),
            AnyKey::Spanned(k) => k,
        };
        let mut item = map.next_value::<Item>()?;
        if item.span.is_empty() {
            item.span = k.span();
        }
        entries.push((k, item));
        key = map.next_key::<AnyKey>()?;
    }
    Ok(Value::Table(entries))
}

/// A map key: a spanned table key, or a plain string (toml's datetime
/// marker, or the field names of a spanned value).
enum AnyKey {
    Spanned(Key),
    Plain(String),
}

impl<'de> Deserialize<'de> for AnyKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = AnyKey;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<AnyKey, E> {
        Ok(AnyKey::Plain(v.to_owned()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyKey, A::Error> {
        let (mut start, mut end, mut value) = (None::<usize>, None::<usize>, None::<String>);
        while let Some(field) = map.next_key::<String>()? {
            match field.as_str() {
                SPANNED_START => start = Some(map.next_value()?),
                SPANNED_END => end = Some(map.next_value()?),
                SPANNED_VALUE => value = Some(map.next_value()?),
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        match (start, end, value) {
            (Some(s), Some(e), Some(v)) => Ok(AnyKey::Spanned(Spanned::new(s..e, v))),
            (_, _, Some(v)) => Ok(AnyKey::Plain(v)),
            _ => Err(de::Error::custom("table key without a name")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(entries: &[(Key, Item)]) -> Vec<&str> {
        entries.iter().map(|(k, _)| k.get_ref().as_str()).collect()
    }

    #[test]
    fn tables_keep_document_order_and_spans() {
        let text = "[node]\nname = \"h1\"\n\n[group.zz]\nkind = \"x\"\n[group.aa]\nkind = \"y\"\n";
        let root = parse(text).unwrap();
        assert_eq!(keys(&root), ["node", "group"]);
        let Value::Table(groups) = &root[1].1.value else {
            panic!("group is not a table")
        };
        assert_eq!(keys(groups), ["zz", "aa"]);
        let Value::Table(zz) = &groups[0].1.value else {
            panic!("zz is not a table")
        };
        let (k, v) = &zz[0];
        assert_eq!(&text[k.span()], "kind");
        assert_eq!(&text[v.span.clone()], "\"x\"");
        assert_eq!(&text[root[1].1.span.clone()], "group");
    }

    #[test]
    fn array_elements_keep_their_spans() {
        let text = "peers = [\n  \"a\",\n  \"bb\",\n]\n";
        let root = parse(text).unwrap();
        let Value::Array(items) = &root[0].1.value else {
            panic!("peers is not an array")
        };
        assert_eq!(&text[items[1].span.clone()], "\"bb\"");
    }

    #[test]
    fn datetimes_become_a_reportable_value() {
        let root = parse("when = 1979-05-27T07:32:00Z\n").unwrap();
        assert_eq!(root[0].1.value, Value::Datetime);
    }

    #[test]
    fn array_of_tables_keeps_each_table() {
        let text = "[[topic]]\npattern = \"a\"\n[[topic]]\npattern = \"b\"\n";
        let root = parse(text).unwrap();
        let Value::Array(items) = &root[0].1.value else {
            panic!("topic is not an array")
        };
        assert_eq!(items.len(), 2);
    }
}
