//! The digest of a rule-set document (SPEC §8, §11): SHA-256 of its
//! canonical JSON, so the same document written with other whitespace or
//! key order has the same digest. The audit log and `status` show it.
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use sha2::{Digest, Sha256};

/// SHA-256 (64 hex digits, as `sha256sum` prints) of `document`'s canonical JSON: parsed, then
/// written compactly with every object's keys sorted (the text
/// `serde_json::Value` writes, whose map is ordered by key). `None` when
/// the text is not JSON.
///
/// The canonical text is written as the document is read, without a
/// `Value` tree: at 100k rules the tree took five times the document's
/// size and a third of a second, once for the audit log and once for
/// `status`, at the peak of an apply.
pub fn document_digest(document: &str) -> Option<String> {
    let mut de = serde_json::Deserializer::from_str(document);
    let canonical = Canonical.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(hex_digest(&canonical))
}

/// [`document_digest`] of a parsed document.
pub fn value_digest(value: &serde_json::Value) -> String {
    hex_digest(value.to_string().as_bytes())
}

fn hex_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads one JSON value as its canonical text: what `serde_json::Value`
/// would write of it, byte for byte.
struct Canonical;

impl<'de> DeserializeSeed<'de> for Canonical {
    type Value = Vec<u8>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// A scalar as serde_json writes it.
fn scalar<T: serde::Serialize + ?Sized, E: de::Error>(value: &T) -> Result<Vec<u8>, E> {
    serde_json::to_vec(value).map_err(E::custom)
}

impl<'de> Visitor<'de> for Canonical {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Vec<u8>, E> {
        scalar(&v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<u8>, E> {
        scalar(&v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vec<u8>, E> {
        scalar(&v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Vec<u8>, E> {
        // `Value` keeps a float as a `Number`, written as serde_json
        // writes an f64.
        scalar(&serde_json::Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        scalar(v)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Vec<u8>, E> {
        Ok(b"null".to_vec())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = vec![b'['];
        while let Some(item) = seq.next_element_seed(Canonical)? {
            if out.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(&item);
        }
        out.push(b']');
        Ok(out)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<u8>, A::Error> {
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Canonical)?;
            entries.push((key, value));
        }
        // Sorted by key as `Value`'s map is; of a repeated key the last
        // value stays, as `Value` keeps it (the sort is stable).
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = vec![b'{'];
        let mut entries = entries.into_iter().peekable();
        while let Some((key, value)) = entries.next() {
            if entries.peek().is_some_and(|(next, _)| *next == key) {
                continue;
            }
            if out.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(&scalar::<_, A::Error>(key.as_str())?);
            out.push(b':');
            out.extend_from_slice(&value);
        }
        out.push(b'}');
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical() {
        let a = document_digest(r#"{"vpcs": [], "enis": [{"id": "e", "ips": ["10.0.0.1"]}]}"#);
        let b =
            document_digest("{\"enis\":[{\"ips\":[\"10.0.0.1\"],\"id\":\"e\"}],\n \"vpcs\":[]}");
        assert_eq!(a, b);
        // Order inside arrays is meaning, not layout.
        assert_ne!(
            document_digest(r#"{"a":[1,2]}"#),
            document_digest(r#"{"a":[2,1]}"#)
        );
        assert_eq!(document_digest("{"), None);
        assert_eq!(document_digest("{} x"), None);
        // SHA-256 of `{}`.
        assert_eq!(
            document_digest(" { } ").as_deref(),
            Some("44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")
        );
    }

    #[test]
    fn the_same_text_as_a_value_tree() {
        let doc = r#"{"z": [1, -2, 3.5, 1e300, true, null, "a\"\u00e9\n"],
            "a": {"k": {}, "b": [], "a": 0.1}, "dup": 1, "dup": {"x": 2},
            "é": "\ud83d\ude00", "n": -0.0, "big": 18446744073709551615}"#;
        let value: serde_json::Value = serde_json::from_str(doc).unwrap_or_default();
        assert_eq!(document_digest(doc), Some(value_digest(&value)));
        let generated = crate::compile::synthetic::Generator::Diverse
            .document(300, "eth0")
            .to_string();
        let value: serde_json::Value = serde_json::from_str(&generated).unwrap_or_default();
        assert_eq!(document_digest(&generated), Some(value_digest(&value)));
    }
}
