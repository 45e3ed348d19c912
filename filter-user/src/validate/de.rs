//! Deserializes model types from a [`Node`] while tracking the JSON path,
//! so every structural mistake is reported where it is.
//!
//! Unknown and repeated keys are *recorded* (in `found`) and skipped rather
//! than failing: the derived `deny_unknown_fields` never sees them, the rest
//! of the element still deserializes, and a typo does not hide the other
//! mistakes. A value of the wrong type or a missing required field does
//! fail the element; the error carries the path where it happened.
use std::{cell::RefCell, collections::HashSet, fmt};

use serde::de::{
    self, value::BorrowedStrDeserializer, DeserializeSeed, Expected, MapAccess, SeqAccess,
    Unexpected, Visitor,
};

use super::{
    errors::{JsonPath, ValidationError},
    hints,
    node::Node,
};

/// Errors found on the way that do not stop deserialization.
pub(crate) type Found = RefCell<Vec<ValidationError>>;

/// A hard error: the value at `path` cannot become the type asked for.
#[derive(Debug)]
pub(crate) struct DeError {
    located: Option<ValidationError>,
    message: String,
    /// Set by `missing_field`: the error belongs at the field's path.
    missing: Option<&'static str>,
}

impl DeError {
    fn new(message: String) -> Self {
        DeError {
            located: None,
            message,
            missing: None,
        }
    }

    /// Attaches the path and value of the innermost node the error came out
    /// of; errors already located pass through unchanged.
    fn locate(self, path: &JsonPath, node: &Node) -> Self {
        if self.located.is_some() {
            return self;
        }
        let located = match self.missing {
            Some(field) => ValidationError::new(path.field(field), "", self.message.clone()),
            None => ValidationError::new(path, node.render(), self.message.clone()),
        };
        DeError {
            located: Some(located),
            ..self
        }
    }

    pub(crate) fn into_error(self) -> ValidationError {
        self.located
            .unwrap_or_else(|| ValidationError::new("", "", self.message))
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.located {
            Some(e) => e.fmt(f),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(msg.to_string())
    }

    fn invalid_type(_: Unexpected<'_>, exp: &dyn Expected) -> Self {
        DeError::new(format!("is not {}", plain_expected(exp)))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        match unexp {
            Unexpected::Unsigned(_) | Unexpected::Signed(_) => {
                DeError::new("is too large".to_owned())
            }
            _ => DeError::new(format!("is not {}", plain_expected(exp))),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            missing: Some(field),
            ..DeError::new("is missing (a required field)".to_owned())
        }
    }
}

/// serde names types the Rust way (`i64`, `a sequence`, `struct Vpc`); a
/// user of the document thinks in JSON.
fn plain_expected(exp: &dyn Expected) -> String {
    let rust = exp.to_string();
    match rust.as_str() {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" | "isize" => {
            "an integer".to_owned()
        }
        "a sequence" => "an array".to_owned(),
        "a boolean" | "a string" => rust,
        _ if rust.starts_with("struct ") => "an object".to_owned(),
        _ => rust,
    }
}

/// Deserializes the value at `path`.
pub(crate) struct NodeDe<'p, 'de> {
    node: &'de Node,
    path: JsonPath<'p>,
    found: &'de Found,
}

impl<'p, 'de> NodeDe<'p, 'de> {
    pub(crate) fn new(node: &'de Node, path: JsonPath<'p>, found: &'de Found) -> Self {
        NodeDe { node, path, found }
    }
}

impl<'de> de::Deserializer<'de> for NodeDe<'_, 'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let NodeDe { node, path, found } = self;
        let result = match node {
            Node::Null => visitor.visit_unit(),
            Node::Bool(b) => visitor.visit_bool(*b),
            Node::Int(i) => visitor.visit_i64(*i),
            Node::UInt(u) => visitor.visit_u64(*u),
            Node::Float(f) => visitor.visit_f64(*f),
            Node::Str(s) => visitor.visit_borrowed_str(s),
            Node::Array(items) => visitor.visit_seq(Items {
                items: items.iter().enumerate(),
                path: &path,
                found,
            }),
            Node::Object(entries) => {
                let entries = entries
                    .iter()
                    .map(|(k, v)| (k.as_str(), v))
                    .collect::<Vec<_>>();
                visitor.visit_map(Entries {
                    entries: entries.into_iter(),
                    pending: None,
                    path: &path,
                    found,
                })
            }
        };
        result.map_err(|e| e.locate(&path, node))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node {
            Node::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let NodeDe { node, path, found } = self;
        // serde would also take an array for a struct (fields by position);
        // in a document that is always a mistake.
        let Node::Object(entries) = node else {
            return Err(DeError::new("is not an object".to_owned()).locate(&path, node));
        };
        let known = known_entries(entries, fields, &path, found);
        visitor
            .visit_map(Entries {
                entries: known.into_iter(),
                pending: None,
                path: &path,
                found,
            })
            .map_err(|e| e.locate(&path, node))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map enum identifier
    }
}

/// The entries of an object whose keys the struct knows, first occurrence
/// of each; every other key is recorded as an error.
fn known_entries<'a>(
    entries: &'a [(String, Node)],
    fields: &'static [&'static str],
    path: &JsonPath,
    found: &Found,
) -> Vec<(&'a str, &'a Node)> {
    let mut seen = HashSet::new();
    let mut known = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        if !fields.contains(&key.as_str()) {
            let hint = match hints::closest(key, fields.iter().copied()) {
                Some(close) => hints::did_you_mean(close),
                None => format!("known fields: {}", fields.join(", ")),
            };
            found
                .borrow_mut()
                .push(ValidationError::new(path.field(key), "", "unknown field").with_hint(hint));
        } else if !seen.insert(key.as_str()) {
            found.borrow_mut().push(ValidationError::new(
                path.field(key),
                value.render(),
                "repeats a key already given in this object",
            ));
        } else {
            known.push((key.as_str(), value));
        }
    }
    known
}

struct Items<'p, 'de, I> {
    items: I,
    path: &'p JsonPath<'p>,
    found: &'de Found,
}

impl<'de, I: Iterator<Item = (usize, &'de Node)>> SeqAccess<'de> for Items<'_, 'de, I> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some((i, node)) => {
                let path = self.path;
                seed.deserialize(NodeDe::new(node, path.index(i), self.found))
                    .map(Some)
            }
            None => Ok(None),
        }
    }
}

struct Entries<'p, 'de, I> {
    entries: I,
    pending: Option<(&'de str, &'de Node)>,
    path: &'p JsonPath<'p>,
    found: &'de Found,
}

impl<'de, I: Iterator<Item = (&'de str, &'de Node)>> MapAccess<'de> for Entries<'_, 'de, I> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.pending = Some((key, value));
        seed.deserialize(BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, node)) = self.pending.take() else {
            return Err(DeError::new(
                "internal error: a value was asked for before its key".to_owned(),
            ));
        };
        let path = self.path;
        seed.deserialize(NodeDe::new(node, path.field(key), self.found))
    }
}
