//! What `filterctl fleet` does (SPEC §10): read every host's status, and
//! write `shared` or a host's ENIs after validating them against what the
//! other keys hold, optionally only if the key is still at a revision.
use std::collections::BTreeMap;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};

use super::{
    client::within,
    document::{build, Snapshot},
    keys::{valid_host_id, Key, Keys},
    status::HostStatus,
    FleetError,
};
use crate::validate;

/// The fleet as etcd holds it now.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FleetView {
    /// etcd's revision when read.
    pub revision: i64,
    /// When `shared` last changed (`None`: it does not exist).
    pub shared_revision: Option<i64>,
    /// Every host with an ENI list or a status key, by id.
    pub hosts: BTreeMap<String, HostView>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HostView {
    /// When its ENI list last changed.
    pub enis_revision: Option<i64>,
    /// Its report; `None` when it has none (down, or never started).
    pub status: Option<HostStatus>,
    /// A status key that is not a [`HostStatus`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

impl FleetView {
    /// Hosts whose report shows `revision` or later enforced, no errors.
    pub fn caught_up(&self, revision: i64) -> usize {
        self.hosts
            .values()
            .filter_map(|h| h.status.as_ref())
            .filter(|s| s.errors.is_empty() && s.enforced_revision >= Some(revision))
            .count()
    }
}

pub async fn view(client: &mut Client, keys: &Keys) -> Result<FleetView, FleetError> {
    let (start, end) = keys.watched();
    let listed = within(
        "listing the keys",
        client.get(
            start,
            Some(GetOptions::new().with_range(end).with_keys_only()),
        ),
    )
    .await?;
    let statuses = within(
        "reading the statuses",
        client.get(keys.status_prefix(), Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let mut view = FleetView {
        revision: statuses.header().map(|h| h.revision()).unwrap_or(0),
        ..FleetView::default()
    };
    for kv in listed.kvs() {
        match keys.parse(kv.key()) {
            Some(Key::Shared) => view.shared_revision = Some(kv.mod_revision()),
            Some(Key::HostEnis(host)) => {
                view.hosts.entry(host).or_default().enis_revision = Some(kv.mod_revision());
            }
            _ => {}
        }
    }
    for kv in statuses.kvs() {
        let Some(Key::Status(host)) = keys.parse(kv.key()) else {
            continue;
        };
        let entry = view.hosts.entry(host).or_default();
        match serde_json::from_slice::<HostStatus>(kv.value()) {
            Ok(status) => entry.status = Some(status),
            Err(e) => entry.unreadable = Some(e.to_string()),
        }
    }
    Ok(view)
}

/// Validates `text` as the new `shared`, alone and with every host's ENIs,
/// then writes it. Returns the revision of the write.
pub async fn put_shared(
    client: &mut Client,
    keys: &Keys,
    text: &str,
    if_revision: Option<i64>,
) -> Result<i64, FleetError> {
    let mut snapshot = snapshot(client, keys).await?;
    snapshot.shared = Some(text.to_owned());
    // Alone first (its own errors once, not once per host), then with each
    // host's ENIs (a vSwitch or group they name must stay).
    let alone = Snapshot {
        shared: snapshot.shared.clone(),
        ..Snapshot::default()
    };
    let mut errors = check(&alone, keys, "");
    if errors.is_empty() {
        for host in snapshot.hosts.keys() {
            errors.extend(check(&snapshot, keys, host));
        }
    }
    if !errors.is_empty() {
        return Err(FleetError::Invalid(errors));
    }
    put_checked(client, &keys.shared(), text, if_revision).await
}

/// Validates `text` as `host`'s ENI list with the current `shared`, then
/// writes it. Returns the revision of the write.
pub async fn put_host(
    client: &mut Client,
    keys: &Keys,
    host: &str,
    text: &str,
    if_revision: Option<i64>,
) -> Result<i64, FleetError> {
    valid_host_id(host)?;
    let mut snapshot = snapshot(client, keys).await?;
    snapshot.hosts.insert(host.to_owned(), text.to_owned());
    let errors = check(&snapshot, keys, host);
    if !errors.is_empty() {
        return Err(FleetError::Invalid(errors));
    }
    put_checked(client, &keys.host_enis(host), text, if_revision).await
}

/// What the hosts read now.
async fn snapshot(client: &mut Client, keys: &Keys) -> Result<Snapshot, FleetError> {
    let (start, end) = keys.watched();
    let response = within(
        "reading the keys",
        client.get(start, Some(GetOptions::new().with_range(end))),
    )
    .await?;
    let mut snapshot = Snapshot::default();
    for kv in response.kvs() {
        if let Some(key) = keys.parse(kv.key()) {
            snapshot.put(key, kv.value());
        }
    }
    Ok(snapshot)
}

/// The errors `host`'s document would have, each prefixed with the host
/// (none for ""). Interfaces are not checked: they are on the host.
fn check(snapshot: &Snapshot, keys: &Keys, host: &str) -> Vec<String> {
    let document = match build(snapshot, host, keys) {
        Ok(built) => built.document,
        Err(errors) => return errors,
    };
    match validate::load(&document) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .into_iter()
            .map(|e| match host {
                "" => e.to_string(),
                _ => format!("host {host}: {e}"),
            })
            .collect(),
    }
}

/// Writes `key`; with `if_revision`, only if the key was last changed at
/// that revision (0: only if it does not exist).
async fn put_checked(
    client: &mut Client,
    key: &str,
    value: &str,
    if_revision: Option<i64>,
) -> Result<i64, FleetError> {
    let Some(expected) = if_revision else {
        let put = within("writing", client.put(key, value, None)).await?;
        return Ok(put.header().map(|h| h.revision()).unwrap_or(0));
    };
    let txn = Txn::new()
        .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
        .and_then([TxnOp::put(key, value, None)])
        .or_else([TxnOp::get(key, None)]);
    let response = within("writing", client.txn(txn)).await?;
    if response.succeeded() {
        return Ok(response.header().map(|h| h.revision()).unwrap_or(0));
    }
    let actual = response
        .op_responses()
        .into_iter()
        .find_map(|r| match r {
            TxnOpResponse::Get(get) => Some(get.kvs().first().map_or(0, |kv| kv.mod_revision())),
            _ => None,
        })
        .unwrap_or(0);
    Err(FleetError::Conflict {
        key: key.to_owned(),
        expected,
        actual,
    })
}
