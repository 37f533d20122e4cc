//! The service's side of the tunnel to connectors (APP-3..APP-6, CON-5).
//!
//! A connector dials the control endpoint and upgrades one HTTP/1.1 request to
//! `postern_proto::tunnel::TUNNEL_UPGRADE`; the control plane hands the upgraded
//! connection to [`TunnelRegistry::attach`], which runs an HTTP/2 *client* on it.
//! The front door then sends each user request with [`TunnelRegistry::send`] on
//! one of the live tunnels of the app's connector group: the least busy one, and
//! another one when a tunnel turns out to be closed before the request left. Every
//! TCP connection stays one the connector opened.
//!
//! With several service instances, a request that lands on an instance without
//! a tunnel of the group goes to a peer instance that has one
//! ([`PeerRoute`], set with [`TunnelRegistry::set_peers`]): the peer sends it
//! on one of its own tunnels ([`TunnelRegistry::send_local`]) and streams the
//! answer back, so connectors keep dialling one address behind the load
//! balancer. [`TunnelRegistry::held_groups`] and [`TunnelRegistry::changes`]
//! tell the peers which groups this instance serves.
//!
//! Bounded everywhere: HTTP/2 flow-control windows cap what a stream buffers, the
//! connector's `SETTINGS_MAX_CONCURRENT_STREAMS` caps streams per tunnel, a group
//! holds at most [`TunnelOptions::max_tunnels_per_group`] tunnels, and pings find
//! a tunnel whose connector vanished without closing it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use postern_netio::BatchedWrites;
use postern_proto::tunnel::{
    DEFAULT_CONNECTION_WINDOW, DEFAULT_MAX_FRAME_SIZE, DEFAULT_STREAM_WINDOW, MAX_FRAME_SIZE, MIN_FRAME_SIZE,
};
use tokio::sync::watch;
use tokio::task::AbortHandle;

mod client;
pub mod streams;

use client::{Client, Failure, Settings};
use streams::RecvBody;

/// Error type of bodies sent through a tunnel.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body sent through a tunnel.
pub type TunnelBody = UnsyncBoxBody<Bytes, BoxError>;

/// Largest response head a connector may send (HPACK-decoded size).
const MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;

/// A boxed future of a [`PeerRoute`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Carries a request to another service instance holding a tunnel of the
/// group (proxy peering): used when this instance holds none.
pub trait PeerRoute: Send + Sync {
    /// Sends `request` through a peer that holds a tunnel of the group;
    /// [`SendError::NoConnector`] when no peer holds one.
    fn forward(
        &self,
        tenant_id: &str,
        group_id: &str,
        request: Request<TunnelBody>,
    ) -> BoxFuture<'_, Result<Response<TunnelResponseBody>, SendError>>;
}

/// A group this instance holds tunnels of.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HeldGroup {
    /// The tenant.
    pub tenant_id: String,
    /// The connector group.
    pub group_id: String,
    /// Open tunnels.
    pub tunnels: usize,
}

/// Why [`TunnelRegistry::send_here`] did not send.
enum NotSent {
    /// No tunnel here took it: the request is still whole.
    Unsent(Box<Request<TunnelBody>>),
    /// It left and failed.
    Failed(SendError),
}

/// Knobs of the tunnels.
#[derive(Clone, Debug)]
pub struct TunnelOptions {
    /// How often an idle or busy tunnel is pinged.
    pub keep_alive_interval: Duration,
    /// How long a ping may go unanswered before the tunnel is closed.
    pub keep_alive_timeout: Duration,
    /// Deadline of the HTTP/2 handshake on a new tunnel.
    pub handshake_timeout: Duration,
    /// Most tunnels one connector group may hold (all its connectors together).
    pub max_tunnels_per_group: usize,
    /// HTTP/2 stream window: what one response may have in flight unread.
    /// Default 4 MiB (1 GiB down on loopback 1.09× the rate of 1 MiB, and
    /// less CPU per byte: fewer window updates).
    pub stream_window: u32,
    /// HTTP/2 connection window: what one tunnel may have in flight unread,
    /// all its responses together. Default 8 MiB.
    pub connection_window: u32,
    /// Largest HTTP/2 frame a connector may send (a response body's bytes come
    /// in frames of up to this size); a value outside HTTP/2's range (16 KiB to
    /// 16 MiB) is taken as the nearest bound. Default 256 KiB: a large
    /// download crosses the tunnel in a sixteenth of the frames of HTTP/2's
    /// default 16 KiB (1 GiB down on loopback 1.11× the rate of 64 KiB frames),
    /// while a frame of another stream waits behind one at most about a
    /// quarter of a millisecond at 1 GB/s.
    pub max_frame_size: u32,
    /// For this long after the registry is made (the service just started), a
    /// request for a group with no tunnel here, and no peer instances, may wait
    /// for one to attach ([`TunnelRegistry::attached_soon`]) instead of failing
    /// at once: after a restart the connectors are back within a second or so.
    pub attach_wait: Duration,
}

impl Default for TunnelOptions {
    fn default() -> Self {
        Self {
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_tunnels_per_group: 256,
            stream_window: DEFAULT_STREAM_WINDOW,
            connection_window: DEFAULT_CONNECTION_WINDOW,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            attach_wait: Duration::from_secs(3),
        }
    }
}

/// Why a tunnel could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The HTTP/2 handshake failed or took too long.
    #[error("tunnel handshake failed: {0}")]
    Handshake(String),
    /// The group already has as many tunnels as it may.
    #[error("the connector group already has {0} tunnels")]
    TooMany(usize),
}

/// Why a request could not be sent through a tunnel.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connector of the group is connected.
    #[error("no connector of this app's group is connected")]
    NoConnector,
    /// The request left but no response came back (the tunnel broke).
    #[error("the connector did not answer: {0}")]
    Failed(String),
}

/// A live tunnel, for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelInfo {
    /// Registry-local ID.
    pub id: u64,
    /// The connector that dialled it.
    pub connector_id: String,
    /// Requests whose response has not ended yet.
    pub in_flight: usize,
}

type GroupKey = (String, String);

struct Tunnel {
    id: u64,
    connector_id: String,
    client: Client,
    in_flight: Arc<AtomicUsize>,
    driver: AbortHandle,
}

/// The live tunnels of every connector group.
pub struct TunnelRegistry {
    groups: Mutex<HashMap<GroupKey, Vec<Arc<Tunnel>>>>,
    next_id: AtomicU64,
    options: TunnelOptions,
    /// Other instances, when there are several.
    peers: std::sync::OnceLock<Arc<dyn PeerRoute>>,
    /// Moved whenever a tunnel comes or goes.
    changes: watch::Sender<u64>,
    /// When the registry was made (see [`TunnelOptions::attach_wait`]).
    started: tokio::time::Instant,
    /// Groups that have had a tunnel here since then.
    attached_once: Mutex<std::collections::HashSet<GroupKey>>,
}

impl std::fmt::Debug for TunnelRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelRegistry").finish_non_exhaustive()
    }
}

impl TunnelRegistry {
    /// An empty registry.
    pub fn new(options: TunnelOptions) -> Arc<Self> {
        Arc::new(Self {
            groups: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            options,
            peers: std::sync::OnceLock::new(),
            changes: watch::channel(0).0,
            started: tokio::time::Instant::now(),
            attached_once: Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// Routes requests for groups this instance holds no tunnel of to peers.
    /// Set once, at start.
    pub fn set_peers(&self, peers: Arc<dyn PeerRoute>) {
        let _ = self.peers.set(peers);
    }

    /// Moves whenever a tunnel is attached or ends.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// The groups with at least one open tunnel here.
    pub fn held_groups(&self) -> Vec<HeldGroup> {
        let Ok(groups) = self.groups.lock() else {
            return Vec::new();
        };
        let mut held: Vec<HeldGroup> = groups
            .iter()
            .map(|((tenant_id, group_id), tunnels)| HeldGroup {
                tenant_id: tenant_id.clone(),
                group_id: group_id.clone(),
                tunnels: tunnels.iter().filter(|t| !t.client.is_closed()).count(),
            })
            .filter(|g| g.tunnels > 0)
            .collect();
        held.sort();
        held
    }

    /// Runs the HTTP/2 client side on `io`, a connection `connector_id` of
    /// `group_id` dialled and upgraded, and offers it to requests for the group
    /// until it closes. Returns the tunnel's ID.
    pub async fn attach<I>(
        self: &Arc<Self>,
        tenant_id: &str,
        group_id: &str,
        connector_id: &str,
        io: I,
    ) -> Result<u64, AttachError>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let key = (tenant_id.to_owned(), group_id.to_owned());
        let held = self.group_len(&key);
        if held >= self.options.max_tunnels_per_group {
            return Err(AttachError::TooMany(held));
        }
        let o = &self.options;
        let settings = Settings {
            stream_window: o.stream_window,
            connection_window: o.connection_window,
            max_frame_size: o.max_frame_size.clamp(MIN_FRAME_SIZE, MAX_FRAME_SIZE),
            max_header_list_size: MAX_HEADER_LIST_SIZE,
            keep_alive_interval: o.keep_alive_interval,
            keep_alive_timeout: o.keep_alive_timeout,
        };
        let (client, connection) = tokio::time::timeout(
            o.handshake_timeout,
            Client::handshake(BatchedWrites::new(TokioIo::new(io)), &settings),
        )
        .await
        .map_err(|_| AttachError::Handshake(format!("no HTTP/2 preface within {:?}", o.handshake_timeout)))?
        .map_err(|e| AttachError::Handshake(e.to_string()))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let registry: Weak<Self> = Arc::downgrade(self);
        let driver_key = key.clone();
        let connector = connector_id.to_owned();
        let driver = tokio::spawn(async move {
            match connection.await {
                Ok(()) => tracing::info!(connector = %connector, tunnel = id, "tunnel closed"),
                Err(e) => tracing::info!(connector = %connector, tunnel = id, error = %e, "tunnel ended"),
            }
            if let Some(registry) = registry.upgrade() {
                registry.remove(&driver_key, id);
            }
        });
        let tunnel = Arc::new(Tunnel {
            id,
            connector_id: connector_id.to_owned(),
            client,
            in_flight: Arc::new(AtomicUsize::new(0)),
            driver: driver.abort_handle(),
        });
        if let Ok(mut once) = self.attached_once.lock() {
            once.insert(key.clone());
        }
        if let Ok(mut groups) = self.groups.lock() {
            groups.entry(key).or_default().push(tunnel);
        }
        self.changed();
        tracing::info!(connector = %connector_id, group = %group_id, tunnel = id, "tunnel attached");
        Ok(id)
    }

    /// Sends `request` on the least busy open tunnel of the group, trying the next
    /// one when a tunnel proves closed before the request left; with none here,
    /// through a peer instance that holds one ([`TunnelRegistry::set_peers`]).
    /// The response's body keeps the tunnel counted as busy until it ends, and
    /// names the connector that answered ([`TunnelResponseBody::connector_id`]).
    pub async fn send(
        &self,
        tenant_id: &str,
        group_id: &str,
        request: Request<TunnelBody>,
    ) -> Result<Response<TunnelResponseBody>, SendError> {
        match self.send_here(tenant_id, group_id, request).await {
            Ok(response) => Ok(response),
            Err(NotSent::Failed(e)) => Err(e),
            Err(NotSent::Unsent(request)) => match self.peers.get() {
                Some(peers) => peers.forward(tenant_id, group_id, *request).await,
                None => Err(SendError::NoConnector),
            },
        }
    }

    /// Like [`TunnelRegistry::send`] on this instance's tunnels only (a peer's
    /// forwarded request never travels on).
    pub async fn send_local(
        &self,
        tenant_id: &str,
        group_id: &str,
        request: Request<TunnelBody>,
    ) -> Result<Response<TunnelResponseBody>, SendError> {
        match self.send_here(tenant_id, group_id, request).await {
            Ok(response) => Ok(response),
            Err(NotSent::Failed(e)) => Err(e),
            Err(NotSent::Unsent(_)) => Err(SendError::NoConnector),
        }
    }

    async fn send_here(
        &self,
        tenant_id: &str,
        group_id: &str,
        mut request: Request<TunnelBody>,
    ) -> Result<Response<TunnelResponseBody>, NotSent> {
        let key = (tenant_id.to_owned(), group_id.to_owned());
        let mut tried: Vec<u64> = Vec::new();
        loop {
            let Some(tunnel) = self.pick(&key, &tried) else {
                return Err(NotSent::Unsent(Box::new(request)));
            };
            tried.push(tunnel.id);
            if tunnel.client.is_closed() {
                self.remove(&key, tunnel.id);
                continue;
            }
            let busy = Busy::new(tunnel.in_flight.clone());
            match tunnel.client.send(request).await {
                Ok(response) => {
                    return Ok(response.map(|body| TunnelResponseBody {
                        inner: Inner::Tunnel(body),
                        connector_id: tunnel.connector_id.clone(),
                        _busy: Some(busy),
                    }));
                }
                Err(Failure::Unsent(back)) => {
                    tracing::debug!(tunnel = tunnel.id, "tunnel closed; trying another");
                    request = *back;
                }
                Err(Failure::Failed(e)) => return Err(NotSent::Failed(SendError::Failed(e.to_string()))),
            }
        }
    }

    /// Whether the service just started ([`TunnelOptions::attach_wait`]) and
    /// has not had a tunnel of the group yet, with no peer instance to ask:
    /// its connectors may be re-attaching. (A group whose tunnels came and went
    /// since the start is not waited for.)
    pub fn awaiting_first_tunnel(&self, tenant_id: &str, group_id: &str) -> bool {
        tokio::time::Instant::now() < self.started + self.options.attach_wait
            && self.peers.get().is_none()
            && self
                .attached_once
                .lock()
                .is_ok_and(|once| !once.contains(&(tenant_id.to_owned(), group_id.to_owned())))
    }

    /// Just after the start ([`TunnelOptions::attach_wait`]): waits for a
    /// tunnel of the group to attach (connectors re-attach within a second or
    /// so of a restart); true once one is there. No wait later on. The caller
    /// asks only for groups that have connectors registered, so a group
    /// without any fails at once.
    pub async fn attached_soon(&self, tenant_id: &str, group_id: &str) -> bool {
        let key = &(tenant_id.to_owned(), group_id.to_owned());
        let deadline = self.started + self.options.attach_wait;
        if tokio::time::Instant::now() >= deadline {
            return self.pick(key, &[]).is_some();
        }
        let mut changes = self.changes.subscribe();
        loop {
            if self.pick(key, &[]).is_some() {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    /// The service is going away (shutting down, after its user requests are
    /// done): every tunnel leaves the registry, so no request is sent on it
    /// any more, and its connection closes gracefully (HTTP/2 GOAWAY) once the
    /// streams still open on it have ended. Connectors dial again at once, to
    /// the next process or another instance. Returns how many tunnels there were.
    pub fn go_away(&self) -> usize {
        let mut groups = self.groups.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let gone: usize = groups.values().map(Vec::len).sum();
        // Dropping the senders (not aborting the drivers) is what lets the
        // connections finish their streams and close.
        groups.clear();
        drop(groups);
        if gone > 0 {
            tracing::info!(tunnels = gone, "tunnels closing: the service is going away");
            self.changed();
        }
        gone
    }

    /// The live tunnels of a group.
    pub fn tunnels(&self, tenant_id: &str, group_id: &str) -> Vec<TunnelInfo> {
        let key = (tenant_id.to_owned(), group_id.to_owned());
        let Ok(groups) = self.groups.lock() else {
            return Vec::new();
        };
        groups
            .get(&key)
            .map(|all| {
                all.iter()
                    .filter(|t| !t.client.is_closed())
                    .map(|t| TunnelInfo {
                        id: t.id,
                        connector_id: t.connector_id.clone(),
                        in_flight: t.in_flight.load(Ordering::Relaxed),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Closes every tunnel of `connector_id` (removed or revoked); requests in
    /// flight on them fail. Returns how many were closed.
    pub fn close_connector(&self, connector_id: &str) -> usize {
        self.close_matching(|_, t| t.connector_id == connector_id)
    }

    /// Closes the tunnels `connector_id` holds for one group (it moved to
    /// another group, so it no longer serves this one's apps); its tunnels for
    /// other groups stay. Returns how many were closed.
    pub fn close_connector_in_group(&self, tenant_id: &str, group_id: &str, connector_id: &str) -> usize {
        self.close_matching(|(t, g), tunnel| t == tenant_id && g == group_id && tunnel.connector_id == connector_id)
    }

    /// Closes every tunnel of a connector group (deleted). Returns how many were
    /// closed.
    pub fn close_group(&self, tenant_id: &str, group_id: &str) -> usize {
        self.close_matching(|(t, g), _| t == tenant_id && g == group_id)
    }

    /// Closes every tunnel of a tenant (deleted). Returns how many were closed.
    pub fn close_tenant(&self, tenant_id: &str) -> usize {
        self.close_matching(|(t, _), _| t == tenant_id)
    }

    /// Closes one tunnel.
    pub fn close(&self, tunnel_id: u64) {
        self.close_matching(|_, t| t.id == tunnel_id);
    }

    /// Removes the tunnels `doomed` picks and ends their connections at once:
    /// the connection task is aborted, which drops the socket, so nothing more
    /// is read from or written to the connector on them.
    fn close_matching(&self, doomed: impl Fn(&GroupKey, &Tunnel) -> bool) -> usize {
        let mut groups = self.groups.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut closed = 0;
        for (key, tunnels) in groups.iter_mut() {
            tunnels.retain(|t| {
                if !doomed(key, t) {
                    return true;
                }
                t.driver.abort();
                tracing::info!(connector = %t.connector_id, group = %key.1, tunnel = t.id, "tunnel closed by the service");
                closed += 1;
                false
            });
        }
        groups.retain(|_, tunnels| !tunnels.is_empty());
        drop(groups);
        if closed > 0 {
            self.changed();
        }
        closed
    }

    fn group_len(&self, key: &GroupKey) -> usize {
        self.groups
            .lock()
            .map(|g| g.get(key).map_or(0, Vec::len))
            .unwrap_or(usize::MAX)
    }

    fn pick(&self, key: &GroupKey, tried: &[u64]) -> Option<Arc<Tunnel>> {
        let groups = self.groups.lock().ok()?;
        groups
            .get(key)?
            .iter()
            .filter(|t| !tried.contains(&t.id) && !t.client.is_closed())
            .min_by_key(|t| t.in_flight.load(Ordering::Relaxed))
            .cloned()
    }

    fn remove(&self, key: &GroupKey, id: u64) {
        if let Ok(mut groups) = self.groups.lock()
            && let Some(tunnels) = groups.get_mut(key)
        {
            tunnels.retain(|t| t.id != id);
            if tunnels.is_empty() {
                groups.remove(key);
            }
        }
        self.changed();
    }
}

/// Counts a request as in flight on its tunnel while alive.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body from a tunnel; its tunnel counts it as in flight until it is
/// dropped.
pub struct TunnelResponseBody {
    inner: Inner,
    connector_id: String,
    _busy: Option<Busy>,
}

/// Why a response body from a tunnel stopped short.
#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    /// The tunnel's stream failed (reset, or the tunnel closed).
    #[error(transparent)]
    Tunnel(#[from] h2::Error),
    /// The peer instance's connection failed.
    #[error(transparent)]
    Forwarded(#[from] hyper::Error),
}

/// Where a response body's bytes come from.
enum Inner {
    /// A stream of one of this instance's tunnels.
    Tunnel(RecvBody),
    /// A peer instance's answer.
    Forwarded(Incoming),
}

impl TunnelResponseBody {
    /// A response a peer instance forwarded from its tunnel to `connector_id`.
    pub fn forwarded(inner: Incoming, connector_id: String) -> Self {
        Self {
            inner: Inner::Forwarded(inner),
            connector_id,
            _busy: None,
        }
    }

    /// The connector whose tunnel carried the request and its answer.
    pub fn connector_id(&self) -> &str {
        &self.connector_id
    }
}

impl std::fmt::Debug for TunnelResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelResponseBody").finish_non_exhaustive()
    }
}

impl Body for TunnelResponseBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match &mut self.inner {
            Inner::Tunnel(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Inner::Forwarded(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Tunnel(body) => body.is_end_stream(),
            Inner::Forwarded(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Tunnel(body) => body.size_hint(),
            Inner::Forwarded(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use http_body_util::{BodyExt, Empty, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::sync::oneshot;

    use super::*;

    /// The connector's end of one tunnel: an HTTP/2 server answering `ok` on one
    /// end of an in-memory pipe. Returns the service's end, and a receiver that
    /// fires once the connector's side of the connection has ended.
    fn connector_end() -> (TokioIo<tokio::io::DuplexStream>, oneshot::Receiver<()>) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (ended_tx, ended) = oneshot::channel();
        tokio::spawn(async move {
            answer_ok(theirs).await;
            let _ = ended_tx.send(());
        });
        (TokioIo::new(ours), ended)
    }

    /// Answers every stream on `io` with `ok` until the connection ends.
    async fn answer_ok(io: tokio::io::DuplexStream) {
        let service = hyper::service::service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), service)
            .await;
    }

    fn get() -> Request<TunnelBody> {
        Request::get("http://app/")
            .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
            .unwrap()
    }

    fn connectors(registry: &TunnelRegistry, tenant: &str, group: &str) -> Vec<String> {
        let mut ids: Vec<String> = registry
            .tunnels(tenant, group)
            .into_iter()
            .map(|t| t.connector_id)
            .collect();
        ids.sort();
        ids
    }

    /// Waits (briefly) until the connector's side saw its connection end.
    async fn assert_ended(ended: oneshot::Receiver<()>) {
        tokio::time::timeout(Duration::from_secs(1), ended)
            .await
            .expect("the connector's connection ends at once")
            .unwrap();
    }

    /// A request body of `chunks` chunks of 64 KiB (chunk `i` filled with
    /// byte `i`), then the trailer `x-chunks`.
    struct Chunks {
        next: usize,
        chunks: usize,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            let i = self.next;
            self.next += 1;
            Poll::Ready(if i < self.chunks {
                #[allow(clippy::cast_possible_truncation)]
                Some(Ok(Frame::data(Bytes::from(vec![i as u8; 64 * 1024]))))
            } else if i == self.chunks {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("x-chunks", self.chunks.into());
                Some(Ok(Frame::trailers(trailers)))
            } else {
                None
            })
        }
    }

    /// A request body that never sends anything, nor ends.
    struct NeverEnds;

    impl Body for NeverEnds {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Pending
        }
    }

    /// A connector answering `POST /echo` with what it received (length, a
    /// checksum, the `x-chunks` trailer), `GET /big` with 3 MiB, and leaving
    /// `POST /hang` unanswered while it reads the body: `hung` hears how
    /// reading that body ended.
    fn echoing_connector(hung: tokio::sync::mpsc::Sender<Result<usize, String>>) -> TokioIo<tokio::io::DuplexStream> {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let hung = hung.clone();
                async move {
                    let path = req.uri().path().to_owned();
                    match path.as_str() {
                        "/big" => {
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(vec![7u8; 3 << 20]))))
                        }
                        "/hang" => {
                            let mut body = req.into_body();
                            let mut read = 0;
                            let ended = loop {
                                match body.frame().await {
                                    Some(Ok(f)) => read += f.into_data().map_or(0, |d| d.len()),
                                    Some(Err(e)) => break Err(e.to_string()),
                                    None => break Ok(read),
                                }
                            };
                            let _ = hung.send(ended).await;
                            std::future::pending().await
                        }
                        _ => {
                            let collected = req.into_body().collect().await.unwrap();
                            let chunks = collected
                                .trailers()
                                .and_then(|t| t.get("x-chunks"))
                                .map(|v| v.to_str().unwrap().to_owned())
                                .unwrap_or_default();
                            let data = collected.to_bytes();
                            let sum: u64 = data.iter().map(|&b| u64::from(b)).sum();
                            let answer = format!("{} {sum} {chunks}", data.len());
                            Ok(Response::new(Full::new(Bytes::from(answer))))
                        }
                    }
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(theirs), service)
                .await;
        });
        TokioIo::new(ours)
    }

    /// Bodies both ways larger than every window: the request's arrives whole,
    /// in order, with its trailers; the response's streams back whole with its
    /// length known.
    #[tokio::test]
    async fn bodies_larger_than_the_windows_cross_whole_both_ways() {
        let registry = TunnelRegistry::new(TunnelOptions {
            stream_window: 65_535,
            connection_window: 65_535,
            ..TunnelOptions::default()
        });
        let (hung, _) = tokio::sync::mpsc::channel(1);
        registry
            .attach("t1", "g1", "c1", echoing_connector(hung))
            .await
            .unwrap();

        let chunks = 80; // 5 MiB
        let upload = Request::post("http://app/echo")
            .body(Chunks { next: 0, chunks }.boxed_unsync())
            .unwrap();
        let answer = registry.send("t1", "g1", upload).await.unwrap();
        let answer = answer.into_body().collect().await.unwrap().to_bytes();
        let sum: u64 = (0..chunks as u64).map(|i| (i % 256) * 64 * 1024).sum();
        assert_eq!(
            std::str::from_utf8(&answer).unwrap(),
            format!("{} {sum} {chunks}", chunks * 64 * 1024)
        );

        let big = Request::get("http://app/big")
            .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
            .unwrap();
        let response = registry.send("t1", "g1", big).await.unwrap();
        assert_eq!(
            response.body().size_hint().exact(),
            Some(3 << 20),
            "the length is known"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 3 << 20);
        assert!(body.iter().all(|&b| b == 7));
    }

    /// A registry with one tunnel of t1/g1 to an [`echoing_connector`], and
    /// what that connector hears of `POST /hang` bodies.
    async fn echoing_tunnel() -> (Arc<TunnelRegistry>, tokio::sync::mpsc::Receiver<Result<usize, String>>) {
        let registry = TunnelRegistry::new(TunnelOptions::default());
        let (hung_tx, hung) = tokio::sync::mpsc::channel(1);
        registry
            .attach("t1", "g1", "c1", echoing_connector(hung_tx))
            .await
            .unwrap();
        (registry, hung)
    }

    /// A request still carrying a connection-specific header (which the
    /// front door strips before the tunnel) is refused, never sent: the
    /// connector does not see it, and the tunnel stays usable.
    #[tokio::test]
    async fn a_request_with_a_hop_by_hop_header_never_crosses() {
        let (registry, mut hung) = echoing_tunnel().await;
        let mut request = Request::post("http://app/hang").body(NeverEnds.boxed_unsync()).unwrap();
        request
            .headers_mut()
            .insert(http::header::CONNECTION, http::HeaderValue::from_static("x-hop"));
        let refused = tokio::time::timeout(Duration::from_secs(2), registry.send("t1", "g1", request))
            .await
            .expect("refused at once, not sent");
        assert!(matches!(refused, Err(SendError::Failed(_))));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), hung.recv())
                .await
                .is_err(),
            "the connector never saw the request"
        );
        let ok = registry.send("t1", "g1", get()).await.unwrap();
        assert_eq!(ok.status(), 200);
    }

    /// The service's end of a tunnel that counts its writes to the connector.
    struct CountedWrites {
        inner: tokio::io::DuplexStream,
        writes: Arc<AtomicUsize>,
    }

    impl tokio::io::AsyncRead for CountedWrites {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl tokio::io::AsyncWrite for CountedWrites {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            Pin::new(&mut self.inner).poll_write(cx, data)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// Requests from many tasks at once (users' requests from their own
    /// connections) leave in a few writes, not one each: on the runtime a
    /// request's task wakes the connection's task, which runs next and would
    /// flush that one request's head alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn requests_from_many_tasks_leave_together() {
        let registry = TunnelRegistry::new(TunnelOptions::default());
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        tokio::spawn(answer_ok(theirs));
        let writes = Arc::new(AtomicUsize::new(0));
        let counted = CountedWrites {
            inner: ours,
            writes: writes.clone(),
        };
        registry.attach("t1", "g1", "c1", TokioIo::new(counted)).await.unwrap();
        // Settled: the handshake and the settings' acknowledgement are out.
        registry.send("t1", "g1", get()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;

        let before = writes.load(Ordering::SeqCst);
        let (go_tx, go) = watch::channel(false);
        let requests: Vec<_> = (0..50)
            .map(|_| {
                let registry = registry.clone();
                let mut go = go.clone();
                tokio::spawn(async move {
                    let _ = go.wait_for(|&go| go).await;
                    registry.send("t1", "g1", get()).await.map(|r| r.status())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        go_tx.send_replace(true);
        for request in requests {
            assert_eq!(request.await.unwrap().unwrap(), 200);
        }
        let sent = writes.load(Ordering::SeqCst) - before;
        assert!(sent <= 10, "50 requests took {sent} writes");
    }

    /// A request given up before its answer came (the user went away) resets
    /// its stream: the connector's read of its body fails instead of waiting
    /// on, and the tunnel no longer counts it.
    #[tokio::test]
    async fn a_request_given_up_before_its_answer_resets_its_stream() {
        let (registry, mut hung) = echoing_tunnel().await;
        let request = Request::post("http://app/hang").body(NeverEnds.boxed_unsync()).unwrap();
        let given_up = tokio::time::timeout(Duration::from_millis(200), registry.send("t1", "g1", request)).await;
        assert!(given_up.is_err(), "the connector never answers");
        let ended = tokio::time::timeout(Duration::from_secs(2), hung.recv())
            .await
            .expect("the connector hears of it")
            .unwrap();
        assert!(ended.is_err(), "the body was cut off, not ended: {ended:?}");
        assert_eq!(registry.tunnels("t1", "g1")[0].in_flight, 0);
    }

    /// A connector that stops answering (its end no longer reads, the socket
    /// stays open) loses its tunnel once a ping goes unanswered.
    #[tokio::test]
    async fn a_tunnel_whose_connector_stops_answering_pings_closes() {
        let registry = TunnelRegistry::new(TunnelOptions {
            keep_alive_interval: Duration::from_millis(50),
            keep_alive_timeout: Duration::from_millis(100),
            ..TunnelOptions::default()
        });
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (stop, stopped) = oneshot::channel::<()>();
        let connector = tokio::spawn(async move {
            let mut connection = h2::server::handshake(theirs).await.unwrap();
            // Answers pings while it runs, then stops reading.
            tokio::select! {
                _ = connection.accept() => {}
                _ = stopped => {}
            }
            std::future::pending::<()>().await;
            drop(connection);
        });
        registry.attach("t1", "g1", "c1", TokioIo::new(ours)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            registry.tunnels("t1", "g1").len(),
            1,
            "pings answered: the tunnel stays"
        );
        let _ = stop.send(());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !registry.tunnels("t1", "g1").is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "the silent tunnel is closed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        connector.abort();
    }

    #[tokio::test]
    async fn closing_ends_exactly_the_tunnels_named_and_their_connections() {
        let registry = TunnelRegistry::new(TunnelOptions::default());
        let mut ends: HashMap<&str, oneshot::Receiver<()>> = HashMap::new();
        for (name, tenant, group, connector) in [
            ("t1/g1/c1", "t1", "g1", "c1"),
            ("t1/g1/c2", "t1", "g1", "c2"),
            ("t1/g2/c1", "t1", "g2", "c1"),
            ("t2/g1/c3", "t2", "g1", "c3"),
        ] {
            let (io, ended) = connector_end();
            registry.attach(tenant, group, connector, io).await.unwrap();
            ends.insert(name, ended);
        }
        let ok = registry.send("t2", "g1", get()).await.unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.body().connector_id(), "c3", "the answer names its connector");
        drop(ok);

        // c1 moved out of g1: only its g1 tunnel goes.
        assert_eq!(registry.close_connector_in_group("t1", "g1", "c1"), 1);
        assert_ended(ends.remove("t1/g1/c1").unwrap()).await;
        assert_eq!(connectors(&registry, "t1", "g1"), ["c2"]);
        assert_eq!(connectors(&registry, "t1", "g2"), ["c1"]);

        // c1 deleted: its other tunnel goes too.
        assert_eq!(registry.close_connector("c1"), 1);
        assert_ended(ends.remove("t1/g2/c1").unwrap()).await;
        assert!(connectors(&registry, "t1", "g2").is_empty());

        // A group deleted: nothing of another tenant's group of the same ID.
        assert_eq!(registry.close_group("t1", "g1"), 1);
        assert_ended(ends.remove("t1/g1/c2").unwrap()).await;
        assert_eq!(connectors(&registry, "t2", "g1"), ["c3"]);

        // A tenant deleted.
        assert_eq!(registry.close_tenant("t2"), 1);
        assert_ended(ends.remove("t2/g1/c3").unwrap()).await;
        assert_eq!(registry.close_tenant("t2"), 0, "nothing left to close");
        assert!(matches!(
            registry.send("t2", "g1", get()).await,
            Err(SendError::NoConnector)
        ));
    }

    /// Just after the start a request waits for its group's tunnel to attach
    /// (connectors re-attach after a restart); going away ends every tunnel
    /// once its streams are done, and sends nothing more on it.
    #[tokio::test]
    async fn a_request_waits_for_the_first_tunnel_and_going_away_closes_them_after_their_streams() {
        let registry = TunnelRegistry::new(TunnelOptions::default());
        assert!(registry.awaiting_first_tunnel("t1", "g1"));
        let waiting = tokio::spawn({
            let registry = registry.clone();
            async move {
                assert!(registry.attached_soon("t1", "g1").await);
                registry.send("t1", "g1", get()).await.map(|r| r.status())
            }
        });
        tokio::task::yield_now().await;
        let (io, ended) = connector_end();
        registry.attach("t1", "g1", "c1", io).await.unwrap();
        assert_eq!(waiting.await.unwrap().unwrap(), 200, "the waiting request went out");
        assert!(
            !registry.awaiting_first_tunnel("t1", "g1"),
            "only the first tunnel is waited for"
        );

        // A response still streaming when the service goes away keeps its
        // tunnel until it is read.
        let streaming = registry.send("t1", "g1", get()).await.unwrap();
        assert_eq!(registry.go_away(), 1);
        assert!(registry.tunnels("t1", "g1").is_empty());
        let body = streaming.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        assert_ended(ended).await;
        // Past the start: no wait, no tunnel.
        let late = TunnelRegistry::new(TunnelOptions {
            attach_wait: Duration::ZERO,
            ..TunnelOptions::default()
        });
        assert!(!late.awaiting_first_tunnel("t1", "g1"));
        assert!(!late.attached_soon("t1", "g1").await);
        assert!(matches!(
            late.send("t1", "g1", get()).await,
            Err(SendError::NoConnector)
        ));
    }
}
