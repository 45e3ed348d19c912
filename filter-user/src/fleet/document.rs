//! This host's document from what etcd holds (SPEC §10): `shared`, with
//! this host's ENIs as `enis`, and fleet-wide membership written into each
//! group's `member_ips`.
//!
//! Membership: every address of every ENI on another host that lists a
//! group is added to that group's `member_ips` (after the ones `shared`
//! gives, sorted, each once). Local ENIs count already (SPEC §2.1). The
//! built document is canonical JSON, so a change elsewhere that adds or
//! removes no member of this host's groups builds the same text and the
//! same digest, and makes no new generation.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::keys::{Key, Keys};
use crate::digest::value_digest;

/// The keys this host reads, as etcd holds them (text, unparsed: a bad
/// value is reported when it is used, not when it arrives).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub shared: Option<String>,
    /// Host id → its `enis` value.
    pub hosts: BTreeMap<String, String>,
}

impl Snapshot {
    /// A put of `key` (status keys are not part of any document).
    pub fn put(&mut self, key: Key, value: &[u8]) {
        let text = String::from_utf8_lossy(value).into_owned();
        match key {
            Key::Shared => self.shared = Some(text),
            Key::HostEnis(host) => {
                self.hosts.insert(host, text);
            }
            Key::Status(_) => {}
        }
    }

    pub fn delete(&mut self, key: Key) {
        match key {
            Key::Shared => self.shared = None,
            Key::HostEnis(host) => {
                self.hosts.remove(&host);
            }
            Key::Status(_) => {}
        }
    }
}

/// A document built for one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    /// Canonical JSON (keys sorted, no whitespace).
    pub document: String,
    /// [`crate::digest`] of it.
    pub digest: String,
    /// Other hosts' ENI lists that could not be read: their ENIs are in no
    /// group here (fewer members: fail closed). Their own host reports them.
    pub ignored: Vec<String>,
}

/// The fields of another host's ENI that membership needs; the rest is that
/// host's business.
#[derive(Deserialize)]
struct RemoteEni {
    #[serde(default)]
    ips: Vec<String>,
    #[serde(default)]
    security_group_ids: Vec<String>,
}

/// Builds `host`'s document, or says why there is none (each error names
/// the key it is about). Validation of the result is the validator's.
pub fn build(snapshot: &Snapshot, host: &str, keys: &Keys) -> Result<Built, Vec<String>> {
    let shared_key = keys.shared();
    let shared = snapshot.shared.as_deref().ok_or_else(|| {
        vec![format!(
            "{shared_key} does not exist: nothing to enforce yet"
        )]
    })?;
    let mut document: Map<String, Value> = serde_json::from_str(shared)
        .map_err(|e| vec![format!("{shared_key}: not a JSON object: {e}")])?;
    if document.contains_key("enis") {
        return Err(vec![format!(
            "{shared_key}: `enis` belongs under {}, not in the shared document",
            keys.host_enis("<host-id>")
        )]);
    }
    let enis = match snapshot.hosts.get(host) {
        // A host without a key guards nothing (SPEC §10: its ENIs are what
        // the key lists).
        None => Value::Array(Vec::new()),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(array @ Value::Array(_)) => array,
            Ok(_) => return Err(vec![format!("{}: not a JSON array", keys.host_enis(host))]),
            Err(e) => return Err(vec![format!("{}: {e}", keys.host_enis(host))]),
        },
    };
    let (members, ignored) = remote_members(snapshot, host, keys);
    if let Some(Value::Array(groups)) = document.get_mut("security_groups") {
        for group in groups.iter_mut().filter_map(Value::as_object_mut) {
            let Some(extra) = group
                .get("id")
                .and_then(Value::as_str)
                .and_then(|id| members.get(id))
            else {
                continue;
            };
            add_members(group, extra);
        }
    }
    document.insert("enis".to_owned(), enis);
    let value = Value::Object(document);
    Ok(Built {
        document: value.to_string(),
        digest: value_digest(&value),
        ignored,
    })
}

/// Group id → the addresses of the other hosts' ENIs that list it; and the
/// lists that could not be read.
fn remote_members(
    snapshot: &Snapshot,
    host: &str,
    keys: &Keys,
) -> (BTreeMap<String, BTreeSet<IpAddr>>, Vec<String>) {
    let mut members: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
    let mut ignored = Vec::new();
    for (other, text) in snapshot.hosts.iter().filter(|(h, _)| *h != host) {
        let enis: Vec<RemoteEni> = match serde_json::from_str(text) {
            Ok(enis) => enis,
            Err(e) => {
                ignored.push(format!("{}: {e}", keys.host_enis(other)));
                continue;
            }
        };
        for eni in enis {
            // An address that does not parse is that host's error; here it
            // is no member.
            let ips: Vec<IpAddr> = eni.ips.iter().filter_map(|ip| ip.parse().ok()).collect();
            for group in eni.security_group_ids {
                members.entry(group).or_default().extend(&ips);
            }
        }
    }
    (members, ignored)
}

/// Appends to the group's `member_ips` the addresses of `extra` it lacks.
/// A `member_ips` that is not an array is left for the validator to report.
fn add_members(group: &mut Map<String, Value>, extra: &BTreeSet<IpAddr>) {
    let list = group
        .entry("member_ips")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Value::Array(list) = list else {
        return;
    };
    let present: BTreeSet<IpAddr> = list
        .iter()
        .filter_map(|v| v.as_str()?.parse().ok())
        .collect();
    list.extend(
        extra
            .difference(&present)
            .map(|ip| Value::String(ip.to_string())),
    );
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "test code")]
mod tests {
    use serde_json::json;

    use super::*;

    fn keys() -> Keys {
        Keys::new("/filter").unwrap()
    }

    fn snapshot(hosts: &[(&str, Value)]) -> Snapshot {
        Snapshot {
            shared: Some(
                json!({"security_groups": [
                    {"id": "sg-db", "member_ips": ["192.0.2.200"]},
                    {"id": "sg-app"}]})
                .to_string(),
            ),
            hosts: hosts
                .iter()
                .map(|(h, v)| ((*h).to_owned(), v.to_string()))
                .collect(),
        }
    }

    fn eni(id: &str, ip: &str, groups: &[&str]) -> Value {
        json!({"id": id, "interface": format!("tap-{id}"), "ips": [ip],
               "security_group_ids": groups})
    }

    fn members(built: &Built, group: &str) -> Value {
        let doc: Value = serde_json::from_str(&built.document).unwrap();
        let groups = doc["security_groups"].as_array().unwrap();
        groups.iter().find(|g| g["id"] == group).unwrap()["member_ips"].clone()
    }

    #[test]
    fn other_hosts_enis_join_their_groups() {
        let snap = snapshot(&[
            ("h1", json!([eni("a", "192.0.2.10", &["sg-db"])])),
            ("h2", json!([eni("b", "192.0.2.20", &["sg-app", "sg-db"])])),
            ("h3", json!([eni("c", "192.0.2.30", &["sg-app"])])),
        ]);
        let built = build(&snap, "h1", &keys()).unwrap();
        // Local ENIs are members already; shared's own members come first.
        assert_eq!(
            members(&built, "sg-db"),
            json!(["192.0.2.200", "192.0.2.20"])
        );
        assert_eq!(
            members(&built, "sg-app"),
            json!(["192.0.2.20", "192.0.2.30"])
        );
        let doc: Value = serde_json::from_str(&built.document).unwrap();
        assert_eq!(doc["enis"], json!([eni("a", "192.0.2.10", &["sg-db"])]));
        assert!(built.ignored.is_empty());
    }

    #[test]
    fn moving_an_eni_between_other_hosts_changes_nothing_here() {
        let before = snapshot(&[
            ("h1", json!([])),
            ("h2", json!([eni("b", "192.0.2.20", &["sg-db"])])),
            ("h3", json!([])),
        ]);
        let after = snapshot(&[
            ("h1", json!([])),
            ("h2", json!([])),
            ("h3", json!([eni("b", "192.0.2.20", &["sg-db"])])),
        ]);
        let (b, a) = (
            build(&before, "h1", &keys()).unwrap(),
            build(&after, "h1", &keys()).unwrap(),
        );
        assert_eq!(b, a);
        // On the host it moved to, it is a local ENI, no longer a member_ip.
        let h3 = build(&after, "h3", &keys()).unwrap();
        assert_eq!(members(&h3, "sg-db"), json!(["192.0.2.200"]));
        assert_ne!(h3.digest, build(&before, "h3", &keys()).unwrap().digest);
    }

    #[test]
    fn bad_values_are_errors_or_ignored() {
        let k = keys();
        let mut snap = snapshot(&[("h1", json!({"not": "an array"}))]);
        let err = build(&snap, "h1", &k).unwrap_err();
        assert!(err[0].contains("/filter/v1/hosts/h1/enis"), "{err:?}");
        // Another host's unreadable list: ignored, said so, fewer members.
        snap.hosts.insert("h1".into(), "[]".into());
        snap.hosts.insert("h2".into(), "{".into());
        let built = build(&snap, "h1", &k).unwrap();
        assert_eq!(built.ignored.len(), 1);
        assert_eq!(members(&built, "sg-db"), json!(["192.0.2.200"]));
        // No own key: no ENIs.
        let built = build(&snap, "h9", &k).unwrap();
        assert!(built.document.contains("\"enis\":[]"));
        snap.shared = Some(json!({"enis": []}).to_string());
        assert!(build(&snap, "h1", &k).unwrap_err()[0].contains("belongs under"));
        snap.shared = None;
        assert!(build(&snap, "h1", &k).unwrap_err()[0].contains("does not exist"));
    }

    #[test]
    fn snapshot_follows_puts_and_deletes() {
        let k = keys();
        let mut snap = Snapshot::default();
        snap.put(k.parse(b"/filter/v1/shared").unwrap(), b"{}");
        snap.put(k.parse(b"/filter/v1/hosts/h1/enis").unwrap(), b"[]");
        snap.put(k.parse(b"/filter/v1/status/h1").unwrap(), b"{}");
        assert_eq!(snap.shared.as_deref(), Some("{}"));
        assert_eq!(snap.hosts.len(), 1);
        snap.delete(k.parse(b"/filter/v1/hosts/h1/enis").unwrap());
        assert!(snap.hosts.is_empty());
    }
}
