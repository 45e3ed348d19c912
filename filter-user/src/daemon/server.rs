//! The socket server (SPEC §5), in the mini-redis shape: [`serve`] takes a
//! bound listener and a shutdown future, so tests run it on a socket in a
//! temporary directory and stop it when they like.
//!
//! - One task per connection; [`Slots`] bounds how many. When every slot
//!   is taken, the connection that has waited longest for a request gives
//!   its slot to the new one; when none waits, the new one gets a `busy`
//!   error and is closed.
//! - Requests on one connection are answered in order. Every write has a
//!   timeout and every read an idle timeout, so a slow or stuck client only
//!   ever holds its own task.
//! - A bad line (not JSON, over the size limit, an unknown method, bad
//!   parameters) gets an error response and the connection goes on.
//! - Shutdown is broadcast: idle connections close at once, a request in
//!   progress is finished and answered first, and `serve` returns when
//!   every connection is gone.
//! - `flows` with `follow` turns the connection into a stream (one
//!   `flows` result per line: the history asked for, then each capture
//!   window's records) until the client closes it; so does `monitor`
//!   (an empty first line, then events as they happen). A client that stops
//!   reading blocks only its own stream: the flow log drops what does not
//!   fit its queue and tells it with `SKIPDATA` records
//!   (`crate::flowlog::fanout`); one that does not read a line for
//!   [`ServerConfig::idle_timeout`] is dropped.
use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, BufReader},
    net::{
        unix::{OwnedReadHalf, OwnedWriteHalf},
        UnixListener, UnixStream,
    },
    sync::{broadcast, mpsc},
    time::timeout,
};

use super::{
    auth::{authorize, changes_state, Access, PeerIdentity},
    slots::{Slot, Slots},
    Daemon, Enforcer,
};
use crate::api::{
    call::{decode_params, parse_request},
    frame::{read_frame, write_frame, Frame},
    ApiError, Call, ErrorCode, FlowsParams, FlowsResult, Method, MonitorParams, MonitorResult,
    Request, Response, DEFAULT_MAX_REQUEST_BYTES, PROTOCOL_VERSION,
};
use crate::{
    audit::Audit,
    flowlog::{MonitorSubscription, Subscription},
};

/// Limits of the server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The longest request line read (SPEC §5).
    pub max_request_bytes: usize,
    /// How many connections are served at once.
    pub max_clients: usize,
    /// When every slot is taken, a connection that has waited this long for
    /// a request gives its slot to a new one ([`Slots`]). Shorter waits
    /// are a client between two requests, not one that has gone quiet.
    pub evict_after: Duration,
    /// How long one response may take to write before the connection is
    /// dropped.
    pub write_timeout: Duration,
    /// How long a connection may sit without sending a full request.
    pub idle_timeout: Duration,
    /// Who may call mutating methods.
    pub access: Access,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_clients: DEFAULT_MAX_CLIENTS,
            evict_after: Duration::from_secs(1),
            write_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            access: Access::new(None),
        }
    }
}

/// [`ServerConfig::max_clients`] by default: every local client a host has
/// (CLIs, agents tailing flows) with room to spare; each costs a file
/// descriptor and a few kilobytes.
pub const DEFAULT_MAX_CLIENTS: usize = 1024;

/// How long a new connection waits for the slot an idle one gives up (it
/// closes at once; this only bounds a daemon too loaded to schedule it).
const EVICT_WAIT: Duration = Duration::from_secs(1);

/// A connection's request buffer above this size is freed after the
/// request, so an idle client does not keep the memory of its largest
/// request (up to `max_request_bytes`).
const KEEP_REQUEST_BUFFER: usize = 64 * 1024;

/// Serves `listener` until `shutdown` completes, then waits for the
/// connections to finish what they are doing.
pub async fn serve<E: Enforcer>(
    listener: UnixListener,
    daemon: Arc<Daemon<E>>,
    config: ServerConfig,
    shutdown: impl Future,
) {
    let (notify_shutdown, _) = broadcast::channel::<()>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let server = Server {
        daemon,
        slots: Slots::new(config.max_clients),
        config: Arc::new(config),
        notify_shutdown,
        done_tx,
    };
    tokio::select! {
        () = server.accept_loop(&listener) => {}
        _ = shutdown => tracing::info!("shutting down: no new connections"),
    }
    let Server {
        notify_shutdown,
        done_tx,
        ..
    } = server;
    drop(notify_shutdown);
    drop(done_tx);
    // Every connection task holds a sender: this returns when all are gone.
    let _ = done_rx.recv().await;
}

struct Server<E: Enforcer> {
    daemon: Arc<Daemon<E>>,
    config: Arc<ServerConfig>,
    slots: Arc<Slots>,
    notify_shutdown: broadcast::Sender<()>,
    done_tx: mpsc::Sender<()>,
}

impl<E: Enforcer> Server<E> {
    async fn accept_loop(&self, listener: &UnixListener) {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off, the
                    // daemon stays up.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let connection = Connection {
                daemon: Arc::clone(&self.daemon),
                config: Arc::clone(&self.config),
                shutdown: self.notify_shutdown.subscribe(),
                _done: self.done_tx.clone(),
            };
            if let Some(slot) = self.slots.try_take() {
                tokio::spawn(connection.run(stream, slot));
            } else if let Some(heir) = self.slots.evict_one(self.config.evict_after) {
                tokio::spawn(async move {
                    match heir.slot(EVICT_WAIT).await {
                        Some(slot) => connection.run(stream, slot).await,
                        None => refuse_busy(stream, connection.config).await,
                    }
                });
            } else {
                tokio::spawn(refuse_busy(stream, connection.config));
            }
        }
    }
}

async fn refuse_busy(mut stream: UnixStream, config: Arc<ServerConfig>) {
    let error = ApiError::new(
        ErrorCode::Busy,
        format!(
            "filterd is serving {} clients, as many as it serves at once; try again",
            config.max_clients
        ),
    );
    let _ = timeout(
        config.write_timeout,
        write_frame(&mut stream, &Response::failure(Value::Null, error)),
    )
    .await;
}

struct Connection<E: Enforcer> {
    daemon: Arc<Daemon<E>>,
    config: Arc<ServerConfig>,
    shutdown: broadcast::Receiver<()>,
    _done: mpsc::Sender<()>,
}

impl<E: Enforcer> Connection<E> {
    async fn run(mut self, stream: UnixStream, slot: Slot) {
        let peer = PeerIdentity::of(&stream).map_err(|e| e.to_string());
        let (reader, mut writer) = stream.into_split();
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        loop {
            if line.capacity() > KEEP_REQUEST_BUFFER {
                line = Vec::new();
            }
            slot.waiting();
            let frame = tokio::select! {
                frame = timeout(self.config.idle_timeout, read_frame(&mut reader, self.config.max_request_bytes, &mut line)) => frame,
                _ = self.shutdown.recv() => return,
                () = slot.evicted() => {
                    tracing::debug!("closing a connection that waited longest, to make room");
                    return;
                }
            };
            slot.working();
            let response = match frame {
                Err(_) => {
                    tracing::debug!("closing an idle connection");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!("reading a request: {e}");
                    return;
                }
                Ok(Ok(Frame::Eof)) => return,
                Ok(Ok(Frame::TooLarge { len })) => Response::failure(
                    Value::Null,
                    ApiError::new(
                        ErrorCode::RequestTooLarge,
                        format!(
                            "the request is {len} bytes, over filterd's limit of {} bytes \
                             (--max-request-size, or max_request_size in its configuration)",
                            self.config.max_request_bytes
                        ),
                    ),
                ),
                Ok(Ok(Frame::Line)) if line.iter().all(u8::is_ascii_whitespace) => continue,
                Ok(Ok(Frame::Line)) => {
                    if let Some(request) = stream_request(&line) {
                        if self.start_stream(request, &mut reader, &mut writer).await {
                            continue;
                        }
                        return;
                    }
                    let request = parse_request(&line);
                    // An apply's line is the whole document, which the
                    // request now holds: give the copy back before the
                    // apply runs (issue 18: memory per rule).
                    line = Vec::new();
                    match request {
                        Ok(request) => {
                            dispatch(&self.daemon, &self.config.access, peer.as_ref(), request)
                                .await
                        }
                        Err((id, error)) => Response::failure(id, error),
                    }
                }
            };
            match timeout(
                self.config.write_timeout,
                write_frame(&mut writer, &response),
            )
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!("writing a response: {e}");
                    return;
                }
                Err(_) => {
                    tracing::warn!(
                        "a client did not read its response within {:?}; dropping it",
                        self.config.write_timeout
                    );
                    return;
                }
            }
        }
    }
}

impl<E: Enforcer> Connection<E> {
    /// Starts the stream a `flows` request with `follow` or a `monitor`
    /// request asks for, and runs it until the client goes, the flow log
    /// stops or the daemon shuts down. True when the stream never started
    /// (the request was answered with an error) and the connection goes
    /// on.
    async fn start_stream(
        &mut self,
        request: StreamRequest,
        reader: &mut BufReader<OwnedReadHalf>,
        writer: &mut OwnedWriteHalf,
    ) -> bool {
        let (id, error) = match request {
            StreamRequest::Follow(id, params) => match self.daemon.follow_flows(params).await {
                Ok((history, subscription)) => {
                    return self
                        .stream(id, Some(history), subscription, reader, writer)
                        .await
                }
                Err(e) => (id, e),
            },
            StreamRequest::Monitor(id, params) => match self.daemon.monitor(&params) {
                // The first line, empty, tells the client it is subscribed.
                Ok(subscription) => {
                    let first = Some(MonitorResult::default());
                    return self.stream(id, first, subscription, reader, writer).await;
                }
                Err(e) => (id, e),
            },
        };
        let response = Response::failure(id, ApiError::from(error));
        matches!(
            timeout(self.config.write_timeout, write_frame(writer, &response)).await,
            Ok(Ok(()))
        )
    }

    /// Writes `first`, then each item of `feed`, one result per line. A
    /// client that stops reading holds only this task: its feed drops what
    /// does not fit meanwhile and tells it so.
    async fn stream<F: Feed>(
        &mut self,
        id: Value,
        first: Option<F::Item>,
        mut feed: F,
        reader: &mut BufReader<OwnedReadHalf>,
        writer: &mut OwnedWriteHalf,
    ) -> bool {
        let mut next = first;
        let mut scratch = [0u8; 512];
        loop {
            let result = match next.take() {
                Some(result) => result,
                None => tokio::select! {
                    item = feed.next() => match item {
                        Some(item) => item,
                        None => return false,
                    },
                    // Anything the client sends is ignored; end of stream
                    // (or an error) means it is gone.
                    read = reader.read(&mut scratch) => match read {
                        Ok(n) if n > 0 => continue,
                        _ => return false,
                    },
                    _ = self.shutdown.recv() => return false,
                },
            };
            let response = match serde_json::to_value(&result) {
                Ok(value) => Response::success(id.clone(), value),
                Err(e) => Response::failure(
                    id.clone(),
                    ApiError::new(ErrorCode::Internal, format!("encoding a result: {e}")),
                ),
            };
            tokio::select! {
                written = timeout(self.config.idle_timeout, write_frame(writer, &response)) => {
                    match written {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::debug!("writing a stream: {e}");
                            return false;
                        }
                        Err(_) => {
                            tracing::warn!(
                                "a streaming client read nothing for {:?}; dropping it",
                                self.config.idle_timeout
                            );
                            return false;
                        }
                    }
                }
                _ = self.shutdown.recv() => return false,
            }
        }
    }
}

/// What a streaming connection writes, item by item.
trait Feed {
    type Item: Serialize;
    /// The next item; `None` once the source has stopped.
    async fn next(&mut self) -> Option<Self::Item>;
}

impl Feed for Subscription {
    type Item = FlowsResult;
    async fn next(&mut self) -> Option<FlowsResult> {
        Subscription::next(self)
            .await
            .map(|records| FlowsResult { records })
    }
}

impl Feed for MonitorSubscription {
    type Item = MonitorResult;
    async fn next(&mut self) -> Option<MonitorResult> {
        MonitorSubscription::next(self).await
    }
}

/// A request that turns its connection into a stream.
enum StreamRequest {
    Follow(Value, FlowsParams),
    Monitor(Value, MonitorParams),
}

/// A well-formed `flows` request with `follow`, or `monitor` request.
/// Anything else (including a malformed one) goes through [`handle`],
/// which answers it.
fn stream_request(line: &[u8]) -> Option<StreamRequest> {
    let request: Request = serde_json::from_slice(line).ok()?;
    if request.v != PROTOCOL_VERSION {
        return None;
    }
    match Method::parse(&request.method)? {
        Method::Flows => {
            let params: FlowsParams = decode_params(Method::Flows, request.params).ok()?;
            params
                .follow
                .then_some(StreamRequest::Follow(request.id, params))
        }
        Method::Monitor => {
            let params = decode_params(Method::Monitor, request.params).ok()?;
            Some(StreamRequest::Monitor(request.id, params))
        }
        _ => None,
    }
}

/// One request line → one response.
pub async fn handle<E: Enforcer>(
    daemon: &Arc<Daemon<E>>,
    access: &Access,
    peer: Result<&PeerIdentity, &String>,
    line: &[u8],
) -> Response {
    match parse_request(line) {
        Ok(request) => dispatch(daemon, access, peer, request).await,
        Err((id, error)) => Response::failure(id, error),
    }
}

/// Runs a parsed request's method and answers under its id.
async fn dispatch<E: Enforcer>(
    daemon: &Arc<Daemon<E>>,
    access: &Access,
    peer: Result<&PeerIdentity, &String>,
    request: Request,
) -> Response {
    match call(
        daemon,
        access,
        peer,
        request.v,
        &request.method,
        request.params,
    )
    .await
    {
        Ok(result) => Response::success(request.id, result),
        Err(error) => Response::failure(request.id, error),
    }
}

async fn call<E: Enforcer>(
    daemon: &Arc<Daemon<E>>,
    access: &Access,
    peer: Result<&PeerIdentity, &String>,
    v: u32,
    method: &str,
    params: Value,
) -> Result<Value, ApiError> {
    if v != PROTOCOL_VERSION {
        return Err(ApiError::new(
            ErrorCode::UnsupportedVersion,
            format!("protocol version {v} is not supported; this filterd speaks version {PROTOCOL_VERSION}"),
        ));
    }
    let Some(method) = Method::parse(method) else {
        let known: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
        return Err(ApiError::new(
            ErrorCode::UnknownMethod,
            format!("unknown method {method:?}; methods: {}", known.join(", ")),
        ));
    };
    if changes_state(method, &params) {
        match peer {
            Ok(peer) => authorize(method, peer, access)?,
            Err(e) => {
                return Err(ApiError::new(
                    ErrorCode::PermissionDenied,
                    format!("cannot tell who is calling ({e}), so {method} is refused"),
                ))
            }
        }
    }
    match Call::decode(method, params)? {
        // The audit log (SPEC §8) records every apply, rollback and detach.
        Call::Apply(params) => {
            let (dry_run, started) = (params.dry_run, Instant::now());
            let (result, digest) = daemon.apply(params).await;
            let audit = Audit::apply(peer, digest);
            if !dry_run {
                daemon.observe_apply(&result, started);
            }
            to_value(audit.record(result, daemon.running()))
        }
        Call::Rollback(params) => {
            let audit = Audit::rollback(peer);
            let started = Instant::now();
            let result = daemon.rollback(params).await;
            daemon.observe_apply(&result, started);
            to_value(audit.record(result, daemon.running()))
        }
        Call::Get => to_value(daemon.get().await),
        Call::Status => to_value(daemon.status().await),
        Call::Explain(params) => to_value(daemon.explain(params).await),
        Call::Counters(params) => to_value(daemon.counters(params).await),
        Call::Detach => {
            let audit = Audit::detach(peer, daemon.running());
            to_value(audit.record(daemon.detach().await, None))
        }
        Call::Flows(params) => {
            if params.follow {
                // Only a connection can carry a stream (`Connection::follow`).
                return Err(ApiError::invalid_params(
                    "flows with follow streams on a connection of its own",
                ));
            }
            to_value(daemon.flows(params).await)
        }
        Call::Monitor(_) => Err(ApiError::invalid_params(
            "monitor streams on a connection of its own",
        )),
        Call::Version => to_value(Ok::<_, super::DaemonError>(daemon.version())),
    }
}

fn to_value<T: Serialize>(result: Result<T, super::DaemonError>) -> Result<Value, ApiError> {
    let result = result.map_err(ApiError::from)?;
    serde_json::to_value(result)
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("encoding the result: {e}")))
}
