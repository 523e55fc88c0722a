//! The fan-out's writers: a few tasks, each owning many subscribers' sockets, write every event
//! to all of their subscribers in one pass, and read what a subscriber sends when its socket
//! says it has something.
//!
//! Why not a task per subscriber: each event then woke every subscriber's task, and each one
//! took the event from the broadcast channel, polled its timers and channels, and registered
//! its waker again. With 10 000 subscribers that was 10 000 task wake-ups an event, beside the
//! 10 000 `sendto`s that do the delivery. A writer wakes once for a burst of events.
//!
//! Each socket is polled with a waker of its own ([`SocketWaker`]): when it fires (input
//! arrived, or a full socket drained), it puts the subscriber's id on its writer's list and
//! wakes the writer, which polls only the sockets on that list.
//!
//! A socket that takes no more (its client reads slowly) never holds the others up: its
//! messages wait in its own queue until the socket drains. A queue that reaches
//! [`CLIENT_BUFFER`] events drops them for a `resync` with a fresh snapshot, as a subscriber
//! the broadcast left behind gets one.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use futures_util::{Sink, Stream};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsIoError, Message};

use super::{Client, Hub, Published, BURST, CLIENT_BUFFER};

/// A subscriber's socket: messages in and out.
pub(super) trait Duplex:
    Stream<Item = Result<Message, WsIoError>> + Sink<Message, Error = WsIoError> + Send
{
}

impl<T> Duplex for T where
    T: Stream<Item = Result<Message, WsIoError>> + Sink<Message, Error = WsIoError> + Send
{
}

/// A subscriber's socket, as its writer holds it.
pub(super) type Socket = Pin<Box<dyn Duplex>>;

/// Writer tasks per hub: twice the cores, so a writer busy with one client's snapshot leaves
/// others to run on every core.
pub(super) fn writers() -> usize {
    2 * std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Pings every subscriber this often (keeps idle connections open through proxies).
const PING_EVERY: Duration = Duration::from_secs(20);

/// How long a stopping writer tries to deliver its subscribers' close frames.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Messages read from one client before its writer turns to others: a client that sends
/// without pause gets a fair share of its writer, not all of it.
const READS_PER_TURN: usize = 8;

/// A new subscriber for a writer.
pub(super) struct Attach {
    /// Its id (unique in the hub).
    pub id: u64,
    /// Its socket.
    pub socket: Socket,
    /// Dropped when the writer lets the subscriber go (it left, its socket failed, or the
    /// server is stopping).
    pub released: oneshot::Sender<()>,
}

/// The subscribers of one writer whose sockets woke it.
#[derive(Default)]
struct Woken {
    ids: Mutex<Vec<u64>>,
    writer: AtomicWaker,
}

/// The waker a subscriber's socket is polled with.
struct SocketWaker {
    id: u64,
    /// On [`Woken::ids`] already (so a socket that wakes twice is polled once).
    listed: AtomicBool,
    woken: Arc<Woken>,
}

impl Wake for SocketWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.listed.swap(true, Ordering::AcqRel) {
            if let Ok(mut ids) = self.woken.ids.lock() {
                ids.push(self.id);
            }
            self.woken.writer.wake();
        }
    }
}

/// One subscriber, as its writer holds it.
struct Subscriber {
    socket: Socket,
    waker: Arc<SocketWaker>,
    client: Client,
    /// Messages not yet handed to the socket.
    queue: VecDeque<Queued>,
    /// Events in `queue`.
    events: usize,
    /// Dropped with the subscriber: the task that attached it then ends, and frees its place.
    _released: oneshot::Sender<()>,
}

/// A message waiting for a subscriber's socket.
struct Queued {
    message: Message,
    /// An event (which a resync may replace), not a reply (which it may not).
    event: bool,
}

/// Why a subscriber is let go.
#[derive(Debug, thiserror::Error)]
enum Gone {
    /// The client closed its socket (or its end of the connection).
    #[error("the client closed the socket")]
    Closed,
    /// Reading or writing the socket failed.
    #[error("the socket failed: {0}")]
    Failed(WsIoError),
    /// The server is stopping.
    #[error("the server is stopping")]
    Stopping,
}

/// Subscribers to let go, and why.
type Released = Vec<(u64, Gone)>;

impl Subscriber {
    /// Queues an event; a queue full of events is replaced by a `resync`, whose snapshot
    /// covers this event too (the hub keeps a value before it broadcasts it).
    fn push_event(&mut self, message: Message, hub: &Hub) {
        if self.events >= CLIENT_BUFFER {
            self.queue.retain(|q| !q.event);
            let missed = std::mem::take(&mut self.events) as u64 + 1;
            hub.resyncs.fetch_add(1, Ordering::Relaxed);
            let resync = self.client.resync(hub, missed);
            self.push_reply(Message::text(resync));
            return;
        }
        self.queue.push_back(Queued {
            message,
            event: true,
        });
        self.events += 1;
    }

    fn push_reply(&mut self, message: Message) {
        self.queue.push_back(Queued {
            message,
            event: false,
        });
    }

    /// Writes what is queued; then, if the socket took it all, reads what the client sent (a
    /// few messages a turn), answers it and writes again.
    fn serve(&mut self, hub: &Hub) -> Result<(), Gone> {
        let waker = Waker::from(Arc::clone(&self.waker));
        let mut cx = Context::from_waker(&waker);
        self.write_with(&mut cx)?;
        if !self.queue.is_empty() {
            // The client is not reading what it is sent: nothing more is read from it until it
            // does, so a client that sends without reading the answers is held back by TCP and
            // its answers cannot pile up here.
            return Ok(());
        }
        for read in 0.. {
            if read == READS_PER_TURN {
                // More may be waiting: come back to this socket after the others.
                waker.wake_by_ref();
                break;
            }
            match self.socket.as_mut().poll_next(&mut cx) {
                Poll::Pending => break,
                Poll::Ready(Some(Ok(Message::Text(text)))) => {
                    let reply = self.client.handle(hub, text.as_str());
                    self.push_reply(Message::text(reply));
                }
                // Pongs and binary frames need no answer (tungstenite answers pings itself).
                Poll::Ready(Some(Ok(Message::Close(_)))) | Poll::Ready(None) => {
                    return Err(Gone::Closed);
                }
                Poll::Ready(Some(Err(e))) => return Err(Gone::Failed(e)),
                Poll::Ready(Some(Ok(_))) => {}
            }
        }
        self.write_with(&mut cx)
    }

    /// Writes what is queued, with the socket's own waker.
    fn write(&mut self) -> Result<(), Gone> {
        let waker = Waker::from(Arc::clone(&self.waker));
        self.write_with(&mut Context::from_waker(&waker))
    }

    /// Hands the queue to the socket and flushes it; a full socket wakes its waker when it
    /// drains, and the rest waits in the queue until then.
    fn write_with(&mut self, cx: &mut Context<'_>) -> Result<(), Gone> {
        while !self.queue.is_empty() {
            match self.socket.as_mut().poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Err(Gone::Failed(e)),
                Poll::Pending => return Ok(()),
            }
            if let Some(q) = self.queue.pop_front() {
                self.events -= usize::from(q.event);
                self.socket
                    .as_mut()
                    .start_send(q.message)
                    .map_err(Gone::Failed)?;
            }
        }
        match self.socket.as_mut().poll_flush(cx) {
            Poll::Ready(Err(e)) => Err(Gone::Failed(e)),
            _ => Ok(()),
        }
    }
}

/// One writer's subscribers.
struct Writer {
    subscribers: HashMap<u64, Subscriber>,
    woken: Arc<Woken>,
}

impl Writer {
    /// Serves every subscriber whose socket woke the writer. `Ready` with those that are gone,
    /// if any; `Pending` otherwise (the writer is woken when another socket wakes).
    fn serve_woken(&mut self, cx: &mut Context<'_>, hub: &Hub) -> Poll<Released> {
        self.woken.writer.register(cx.waker());
        let ids = match self.woken.ids.lock() {
            Ok(mut ids) => std::mem::take(&mut *ids),
            Err(_) => Vec::new(),
        };
        let mut gone = Vec::new();
        for id in ids {
            if let Some(s) = self.subscribers.get_mut(&id) {
                s.waker.listed.store(false, Ordering::Release);
                if let Err(why) = s.serve(hub) {
                    gone.push((id, why));
                }
            }
        }
        if gone.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(gone)
        }
    }

    /// Queues what `queue` gives each subscriber and writes to those that got something;
    /// returns those whose socket failed.
    fn queue_to_each(&mut self, mut queue: impl FnMut(&mut Subscriber)) -> Released {
        let mut gone = Vec::new();
        for (id, s) in &mut self.subscribers {
            let before = s.queue.len();
            queue(s);
            if s.queue.len() != before {
                if let Err(why) = s.write() {
                    gone.push((*id, why));
                }
            }
        }
        gone
    }

    /// Sends each event of `batch` to the subscribers that want it.
    fn deliver(&mut self, batch: &[Arc<Published>], hub: &Hub) -> Released {
        self.queue_to_each(|s| {
            for p in batch {
                if s.client.wants(p) {
                    s.push_event(p.message.clone(), hub);
                }
            }
        })
    }

    /// Every subscriber missed `missed` events (this writer fell behind the broadcast): each
    /// gets a `resync`.
    fn resync_all(&mut self, missed: u64, hub: &Hub) -> Released {
        self.queue_to_each(|s| {
            hub.resyncs.fetch_add(1, Ordering::Relaxed);
            let resync = s.client.resync(hub, missed);
            s.push_reply(Message::text(resync));
        })
    }

    /// Sends `message` to every subscriber.
    fn tell_all(&mut self, message: &Message) -> Released {
        self.queue_to_each(|s| s.push_reply(message.clone()))
    }

    /// Whether every queue has gone to its socket.
    fn all_written(&self) -> bool {
        self.subscribers.values().all(|s| s.queue.is_empty())
    }

    fn attach(&mut self, a: Attach, hub: &Hub) {
        hub.clients.fetch_add(1, Ordering::Relaxed);
        let waker = Arc::new(SocketWaker {
            id: a.id,
            listed: AtomicBool::new(false),
            woken: Arc::clone(&self.woken),
        });
        // Served once now, so its socket's waker is registered for what the client sends.
        waker.wake_by_ref();
        self.subscribers.insert(
            a.id,
            Subscriber {
                socket: a.socket,
                waker,
                client: Client::default(),
                queue: VecDeque::new(),
                events: 0,
                _released: a.released,
            },
        );
    }

    /// Lets subscribers go: their patterns no longer count, and their tasks end.
    fn release(&mut self, gone: Released, hub: &Hub) {
        for (id, why) in gone {
            if let Some(s) = self.subscribers.remove(&id) {
                tracing::debug!(subscriber = id, reason = %why, "WebSocket subscriber let go");
                hub.interest_in(&s.client.patterns, false);
                hub.clients.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// Starts a writer of `hub`'s events; returns where its subscribers are sent.
pub(super) fn spawn(hub: &Arc<Hub>) -> mpsc::Sender<Attach> {
    let (tx, attach) = mpsc::channel(256);
    let events = hub.tx.subscribe();
    let shutdown = hub.shutdown.subscribe();
    // Unconstrained by tokio's budget of 128 I/O operations a poll: past it, every socket
    // answers `Pending` and defers its waker to the next park, so a writer with thousands of
    // sockets wrote 128 of them a turn and spent the rest re-polling the others (twice the
    // server's time of a task per subscriber). A writer yields after each burst instead.
    tokio::spawn(tokio::task::unconstrained(run(
        Arc::downgrade(hub),
        attach,
        events,
        shutdown,
    )));
    tx
}

/// Takes this event and every one already waiting (up to [`BURST`]): they go out together,
/// one pass over the subscribers and one write each. Returns the events, and how many were
/// missed if the writer fell behind, and whether the channel closed.
fn burst(
    first: Result<Arc<Published>, broadcast::error::RecvError>,
    events: &mut broadcast::Receiver<Arc<Published>>,
    batch: &mut Vec<Arc<Published>>,
) -> (Option<u64>, bool) {
    use broadcast::error::{RecvError, TryRecvError};
    let mut next = Some(first);
    while let Some(ev) = next.take() {
        match ev {
            Ok(p) => batch.push(p),
            Err(RecvError::Lagged(missed)) => return (Some(missed), false),
            Err(RecvError::Closed) => return (None, true),
        }
        if batch.len() < BURST {
            next = match events.try_recv() {
                Ok(p) => Some(Ok(p)),
                Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
                Err(TryRecvError::Empty) => None,
            };
        }
    }
    (None, false)
}

/// A writer's loop, until its hub is gone or the server stops.
async fn run(
    hub: Weak<Hub>,
    mut attach: mpsc::Receiver<Attach>,
    mut events: broadcast::Receiver<Arc<Published>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut w = Writer {
        subscribers: HashMap::new(),
        woken: Arc::default(),
    };
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut batch: Vec<Arc<Published>> = Vec::with_capacity(BURST);
    // The hub is held only while a branch is handled: a writer ends when its hub is dropped.
    loop {
        tokio::select! {
            // Sockets that woke come first: what they sent is answered before more goes out.
            biased;
            gone = poll_fn(|cx| match hub.upgrade() {
                Some(h) => w.serve_woken(cx, &h).map(Some),
                None => Poll::Ready(None),
            }) => match (gone, hub.upgrade()) {
                (Some(gone), Some(h)) => w.release(gone, &h),
                _ => break,
            },
            a = attach.recv() => match (a, hub.upgrade()) {
                (Some(a), Some(h)) => w.attach(a, &h),
                _ => break,
            },
            ev = events.recv() => {
                let Some(h) = hub.upgrade() else { break };
                let (missed, closed) = burst(ev, &mut events, &mut batch);
                let gone = w.deliver(&batch, &h);
                batch.clear();
                w.release(gone, &h);
                if let Some(missed) = missed {
                    let gone = w.resync_all(missed, &h);
                    w.release(gone, &h);
                }
                if closed {
                    break;
                }
            }
            _ = ping.tick() => {
                let gone = w.tell_all(&Message::Ping(Default::default()));
                if let Some(h) = hub.upgrade() {
                    w.release(gone, &h);
                }
            }
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                let away = CloseFrame { code: CloseCode::Away, reason: "server stopping".into() };
                let _ = w.tell_all(&Message::Close(Some(away)));
                let _ = tokio::time::timeout(CLOSE_GRACE, poll_fn(|cx| {
                    if let Some(h) = hub.upgrade() {
                        let _ = w.serve_woken(cx, &h);
                    }
                    if w.all_written() { Poll::Ready(()) } else { Poll::Pending }
                }))
                .await;
                break;
            }
        }
    }
    if let Some(h) = hub.upgrade() {
        let all = w
            .subscribers
            .keys()
            .map(|&id| (id, Gone::Stopping))
            .collect();
        w.release(all, &h);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::state;
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use serde_json::Value;
    use tokio::net::{TcpSocket, TcpStream};
    use tokio_tungstenite::WebSocketStream;

    /// Serves `hub`'s WebSocket on a loopback port. Each accepted socket holds at most
    /// `send_buffer` bytes for its client, so one that stops reading fills it soon.
    async fn serve(hub: Arc<Hub>, send_buffer: u32) -> std::net::SocketAddr {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(send_buffer).unwrap();
        socket.set_recv_buffer_size(send_buffer).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1024).unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let hub = Arc::clone(&hub);
                tokio::spawn(async move {
                    if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                        crate::ws::serve_client(ws, hub).await;
                    }
                });
            }
        });
        addr
    }

    /// A client subscribed to node `a`'s states, which reads at most `recv_buffer` bytes ahead.
    async fn subscriber(
        addr: std::net::SocketAddr,
        recv_buffer: u32,
    ) -> WebSocketStream<TcpStream> {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(recv_buffer).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/v1/ws"), tcp)
            .await
            .unwrap();
        let sub = r#"{"type":"subscribe","streams":["oscillator.state.a"]}"#;
        ws.send(Message::text(sub)).await.unwrap();
        assert_eq!(next(&mut ws).await["type"], "ack");
        ws
    }

    /// The next text message, as JSON (within 30 s).
    async fn next(ws: &mut WebSocketStream<TcpStream>) -> Value {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
                .await
                .expect("a message within 30 s");
            match m {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
                Some(Ok(_)) => continue,
                other => panic!("the socket ended: {other:?}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_stops_reading_is_resynced_and_holds_no_one_up() {
        let hub = Arc::new(Hub::default());
        let addr = serve(Arc::clone(&hub), 4096).await;
        // One client that stops reading on every writer (ids go round the writers), then one
        // that reads, whose writer has a stalled client too.
        let mut stalled = Vec::new();
        for _ in 0..writers() {
            stalled.push(subscriber(addr, 4096).await);
        }
        let mut reader = subscriber(addr, 1 << 20).await;
        // Far more than a stalled socket and its queue hold, in bursts the reader keeps up with.
        let total = 3 * CLIENT_BUFFER as u64;
        let mut seq = 0;
        while seq < total {
            let burst = (seq + 256).min(total);
            for k in seq + 1..=burst {
                hub.publish(&state("a", k as i64));
            }
            for k in seq + 1..=burst {
                let event = next(&mut reader).await;
                assert_eq!(event["type"], "event", "{event}");
                assert_eq!(event["seq"], k);
            }
            seq = burst;
        }
        assert!(hub.resyncs.load(Ordering::Relaxed) >= writers() as u64);
        // Each stalled client gets what fitted in its socket, a resync in place of the events
        // it could not take, and the newest state, in order.
        for ws in &mut stalled {
            let (mut newest, mut resyncs) = (0, 0);
            while newest < total {
                let m = next(ws).await;
                let seq = match m["type"].as_str() {
                    Some("event") => m["seq"].as_u64().unwrap(),
                    Some("resync") => {
                        resyncs += 1;
                        assert!(m["missed"].as_u64().unwrap() > 0, "{m}");
                        m["snapshot"][0]["seq"].as_u64().unwrap()
                    }
                    _ => panic!("unexpected {m}"),
                };
                assert!(seq > newest, "{seq} after {newest}");
                newest = seq;
            }
            assert!(resyncs >= 1);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_sends_without_reading_is_held_back() {
        let hub = Arc::new(Hub::default());
        let addr = serve(Arc::clone(&hub), 4096).await;
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.set_send_buffer_size(4096).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/v1/ws"), tcp)
            .await
            .unwrap();
        // Each ping is answered with a pong the client never reads: once the server's socket
        // is full, the server stops reading, and the client's sends stall.
        let mut sent = 0;
        let stalled = loop {
            let ping = ws.send(Message::text(r#"{"action":"ping"}"#));
            match tokio::time::timeout(Duration::from_secs(2), ping).await {
                Err(_) => break true,
                Ok(r) => r.unwrap(),
            }
            sent += 1;
            if sent == 200_000 {
                break false;
            }
        };
        assert!(
            stalled,
            "{sent} pings were read without their pongs being read"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_are_answered_and_stopping_closes_every_socket() {
        let hub = Arc::new(Hub::default());
        let addr = serve(Arc::clone(&hub), 1 << 16).await;
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(subscriber(addr, 1 << 16).await);
        }
        for ws in &mut clients {
            ws.send(Message::text(r#"{"action":"ping"}"#))
                .await
                .unwrap();
            assert_eq!(next(ws).await["type"], "pong");
        }
        assert_eq!(hub.clients.load(Ordering::Relaxed), 3);
        hub.close_all();
        for ws in &mut clients {
            let close = loop {
                match ws.next().await {
                    Some(Ok(Message::Close(frame))) => break frame,
                    Some(Ok(_)) => continue,
                    other => panic!("expected a close frame, got {other:?}"),
                }
            };
            assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
        }
        // Every subscriber was let go, and its patterns no longer count.
        tokio::time::timeout(Duration::from_secs(10), async {
            while hub.clients.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("every client released");
        assert!(!hub.fleet_interest());
    }
}
