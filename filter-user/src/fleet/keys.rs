//! The key layout under the prefix (SPEC §10; docs/FLEET.md):
//!
//! ```text
//! PREFIX/v1/shared              a document without `enis`
//! PREFIX/v1/hosts/<host>/enis   the JSON array of that host's ENIs
//! PREFIX/v1/status/<host>       that host's HostStatus, under its lease
//! ```
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("host id {0:?}: it must be non-empty, without `/` or whitespace")]
    HostId(String),
    #[error("etcd prefix {0:?}: it must start with `/`")]
    Prefix(String),
}

/// What one key under `PREFIX/v1/` is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Shared,
    HostEnis(String),
    Status(String),
}

/// The keys of one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    /// `PREFIX/v1/`, with exactly one slash between the parts.
    root: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Result<Keys, KeyError> {
        if !prefix.starts_with('/') {
            return Err(KeyError::Prefix(prefix.to_owned()));
        }
        Ok(Keys {
            root: format!("{}/v1/", prefix.trim_end_matches('/')),
        })
    }

    /// `PREFIX/v1/`.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// What a host lists and watches, `[start, end)`: `hosts/…` and
    /// `shared`, which sort next to each other, and not `status/…`, so
    /// one host's reports are not sent to every other host.
    pub fn watched(&self) -> (String, String) {
        (
            format!("{}hosts/", self.root),
            format!("{}shared\0", self.root),
        )
    }

    pub fn shared(&self) -> String {
        format!("{}shared", self.root)
    }

    pub fn host_enis(&self, host: &str) -> String {
        format!("{}hosts/{host}/enis", self.root)
    }

    pub fn status_prefix(&self) -> String {
        format!("{}status/", self.root)
    }

    pub fn status(&self, host: &str) -> String {
        format!("{}status/{host}", self.root)
    }

    /// What `key` is, or `None` for anything else under the prefix (keys of
    /// a later layout, stray writes): those are ignored.
    pub fn parse(&self, key: &[u8]) -> Option<Key> {
        let rest = std::str::from_utf8(key).ok()?.strip_prefix(&self.root)?;
        if rest == "shared" {
            return Some(Key::Shared);
        }
        if let Some(host) = rest.strip_prefix("status/") {
            return valid_host_id(host)
                .ok()
                .map(|()| Key::Status(host.to_owned()));
        }
        let host = rest.strip_prefix("hosts/")?.strip_suffix("/enis")?;
        valid_host_id(host)
            .ok()
            .map(|()| Key::HostEnis(host.to_owned()))
    }
}

/// A host id is one path segment of a key.
pub fn valid_host_id(host: &str) -> Result<(), KeyError> {
    if host.is_empty() || host.contains('/') || host.chars().any(char::is_whitespace) {
        return Err(KeyError::HostId(host.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips() -> Result<(), KeyError> {
        for prefix in ["/filter", "/filter/"] {
            let keys = Keys::new(prefix)?;
            assert_eq!(keys.shared(), "/filter/v1/shared");
            assert_eq!(keys.host_enis("h1"), "/filter/v1/hosts/h1/enis");
            assert_eq!(keys.status("h1"), "/filter/v1/status/h1");
            assert_eq!(keys.parse(keys.shared().as_bytes()), Some(Key::Shared));
            assert_eq!(
                keys.parse(keys.host_enis("h1").as_bytes()),
                Some(Key::HostEnis("h1".into()))
            );
            assert_eq!(
                keys.parse(keys.status("h-2").as_bytes()),
                Some(Key::Status("h-2".into()))
            );
        }
        let keys = Keys::new("/filter")?;
        for other in [
            "/filter/v1/hosts/a/b/enis",
            "/filter/v1/hosts//enis",
            "/filter/v2/shared",
            "/filterx/v1/shared",
            "/filter/v1/hosts/h1/other",
        ] {
            assert_eq!(keys.parse(other.as_bytes()), None, "{other}");
        }
        let (start, end) = keys.watched();
        let inside = |k: &str| start.as_str() <= k && k < end.as_str();
        assert!(inside(&keys.shared()) && inside(&keys.host_enis("zz")));
        assert!(!inside(&keys.status("h1")) && !inside("/filter/v1/sharedx"));
        assert!(Keys::new("filter").is_err());
        assert!(valid_host_id("a b").is_err());
        Ok(())
    }
}
