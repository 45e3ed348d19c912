//! Reaching etcd: endpoints, prefix and TLS from the settings, and a
//! connected [`etcd_client::Client`] with HTTP/2 keep-alives, so a dead
//! link is noticed in seconds even while nothing changes.
use std::{
    future::Future,
    path::{Path, PathBuf},
    time::Duration,
};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use super::{
    keys::{valid_host_id, Keys},
    FleetError,
};
use crate::config::Settings;

/// How long connecting, and any one request, may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings on an idle connection, and how long one may go unanswered.
const KEEP_ALIVE: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(3));

/// PEM files for TLS: the CA that signed etcd's certificate, and this
/// client's certificate and key (when etcd asks for one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Where etcd is and which part of it is ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub keys: Keys,
    /// `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
}

impl EtcdConfig {
    /// The etcd settings of `filterd` (flags and config keys); `None` when
    /// no endpoint is set (the local socket is the source).
    pub fn from_settings(settings: &Settings) -> Result<Option<EtcdConfig>, FleetError> {
        if settings.etcd_endpoints.is_empty() {
            return Ok(None);
        }
        let files = TlsFiles {
            cacert: settings.etcd_cacert.clone(),
            cert: settings.etcd_cert.clone(),
            key: settings.etcd_key.clone(),
        };
        let tls = (files != TlsFiles::default()).then_some(files);
        Ok(Some(EtcdConfig {
            endpoints: settings.etcd_endpoints.clone(),
            keys: Keys::new(&settings.etcd_prefix)?,
            tls,
        }))
    }

    /// For messages: `https://a:2379,https://b:2379 (prefix /filter/v1/)`.
    pub fn describe(&self) -> String {
        format!(
            "{} (keys under {})",
            self.endpoints.join(","),
            self.keys.root()
        )
    }
}

/// `--host-id`, else the host name (the UTS name, which network
/// namespaces share).
pub fn host_id(settings: &Settings) -> Result<String, FleetError> {
    let host = match &settings.host_id {
        Some(host) => host.clone(),
        None => {
            let path = Path::new("/proc/sys/kernel/hostname");
            std::fs::read_to_string(path)
                .map_err(|source| FleetError::File {
                    path: path.to_owned(),
                    source,
                })?
                .trim()
                .to_owned()
        }
    };
    valid_host_id(&host)?;
    Ok(host)
}

/// A client for `config`. The channel connects lazily: an unreachable etcd
/// shows in the first request.
pub async fn connect(config: &EtcdConfig) -> Result<Client, FleetError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(KEEP_ALIVE.0, KEEP_ALIVE.1)
        .with_keep_alive_while_idle(true);
    let mut endpoints = config.endpoints.clone();
    if let Some(files) = &config.tls {
        options = options.with_tls(tls_options(files)?);
        // A bare host:port is https with TLS (etcd-client's own rule), a
        // URL keeps its scheme: http:// with TLS settings is an error.
        for endpoint in &mut endpoints {
            if endpoint.starts_with("http://") {
                return Err(FleetError::Config(format!(
                    "{endpoint}: TLS files are set, so the endpoint must be https://"
                )));
            }
            if !endpoint.contains("://") {
                *endpoint = format!("https://{endpoint}");
            }
        }
    }
    within("connecting", Client::connect(endpoints, Some(options))).await
}

fn tls_options(files: &TlsFiles) -> Result<TlsOptions, FleetError> {
    let mut tls = TlsOptions::new();
    if let Some(ca) = &files.cacert {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        (None, None) => {}
        _ => {
            return Err(FleetError::Config(
                "--etcd-cert and --etcd-key go together".to_owned(),
            ))
        }
    }
    Ok(tls)
}

fn read(path: &Path) -> Result<Vec<u8>, FleetError> {
    std::fs::read(path).map_err(|source| FleetError::File {
        path: path.to_owned(),
        source,
    })
}

/// `request` within [`REQUEST_TIMEOUT`].
pub async fn within<T>(
    what: &'static str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, FleetError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(FleetError::Timeout { what }),
    }
}
