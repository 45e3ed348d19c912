//! The digest of a rule-set document (SPEC §8, §11): SHA-256 of its
//! canonical JSON, so the same document written with other whitespace or
//! key order has the same digest. The audit log and `status` show it.
use sha2::{Digest, Sha256};

/// SHA-256 (64 hex digits, as `sha256sum` prints) of `document`'s canonical JSON: parsed, then
/// written compactly with every object's keys sorted (serde_json's map is
/// ordered by key). `None` when the text is not JSON.
pub fn document_digest(document: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(document).ok()?;
    Some(value_digest(&value))
}

/// [`document_digest`] of a parsed document.
pub fn value_digest(value: &serde_json::Value) -> String {
    let hash = Sha256::digest(value.to_string().as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
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
        // SHA-256 of `{}`.
        assert_eq!(
            document_digest(" { } ").as_deref(),
            Some("44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")
        );
    }
}
