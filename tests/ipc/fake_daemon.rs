//! A fake daemon: `IpcServer` on a mio loop in a thread. It gives offsets
//! per topic, refuses topic "nope" (unknown rule) and sync publishes on
//! "slow" (timeout naming h2 and h3), never answers publishes on "silent",
//! forwards every publish to matching subscriptions, and opens a "gappy"
//! subscription with a gap notice.

use super::*;

pub(crate) struct FakeDaemon {
    pub(crate) path: PathBuf,
    _dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<FakeReport>>,
}

#[derive(Debug, Default)]
pub(crate) struct FakeReport {
    pub(crate) stats: IpcStats,
    pub(crate) disconnects: usize,
    pub(crate) commits: Vec<Commit>,
    /// Largest output backlog seen on any connection.
    pub(crate) max_backlog: usize,
    /// Backlog of every connection at the end.
    pub(crate) final_backlog: usize,
    /// Every PUBLISH frame received, in order.
    pub(crate) publish_frames: Vec<PublishFrame>,
}

/// The shared fields and entry count of one PUBLISH frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublishFrame {
    pub(crate) topic: String,
    pub(crate) mode: PublishMode,
    pub(crate) timeout_ms: u32,
    pub(crate) first_request_id: u64,
    pub(crate) count: usize,
}

impl FakeDaemon {
    pub(crate) fn start() -> FakeDaemon {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = {
            let path = path.clone();
            let stop = stop.clone();
            std::thread::spawn(move || run_fake(&path, &stop, ready_tx))
        };
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        FakeDaemon {
            path,
            _dir: dir,
            stop,
            handle: Some(handle),
        }
    }

    pub(crate) fn client(&self) -> Client {
        Client::connect(&self.path).unwrap()
    }

    pub(crate) fn stop(mut self) -> FakeReport {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn matches(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => topic.starts_with(prefix),
        None => pattern == topic,
    }
}

fn run_fake(path: &Path, stop: &AtomicBool, ready: std::sync::mpsc::Sender<()>) -> FakeReport {
    let mut poll = mio::Poll::new().unwrap();
    let mut server = IpcServer::bind(path, poll.registry(), mio::Token(100)).unwrap();
    ready.send(()).unwrap();
    let mut events = mio::Events::with_capacity(256);
    let mut requests: Vec<(ConnId, Request)> = Vec::new();
    let mut next_offset: HashMap<String, u64> = HashMap::new();
    let mut subs: Vec<(ConnId, u32, String)> = Vec::new();
    let mut report = FakeReport::default();
    while !stop.load(Ordering::SeqCst) {
        poll.poll(&mut events, Some(Duration::from_millis(5)))
            .unwrap();
        for event in events.iter() {
            assert!(server.owns(event.token()));
            server.handle_event(poll.registry(), event, &mut requests);
        }
        for (conn, request) in requests.drain(..) {
            match request {
                Request::Publish(batch) => {
                    report.publish_frames.push(PublishFrame {
                        topic: batch.topic.to_string(),
                        mode: batch.mode,
                        timeout_ms: batch.timeout_ms,
                        first_request_id: batch.first_request_id,
                        count: batch.len(),
                    });
                    for p in batch.entries() {
                        publish_one(&mut server, &mut next_offset, &subs, conn, &batch, &p);
                    }
                }
                Request::Subscribe(s) => {
                    if s.pattern.contains('[') {
                        server.send(
                            conn,
                            &Response::SubscribeFailed {
                                sub_id: s.sub_id,
                                failure: Failure {
                                    kind: FailureKind::InvalidRequest,
                                    message: "bad pattern".into(),
                                },
                            },
                        );
                        continue;
                    }
                    server.send(conn, &Response::Subscribed { sub_id: s.sub_id });
                    if s.pattern == "gappy" {
                        server.send(
                            conn,
                            &Response::Gap(GapNotice {
                                sub_id: s.sub_id,
                                topic: "gappy".into(),
                                source: NodeId(0xab),
                                from: Offset(0),
                                to: Offset(5),
                                reason: GapReason::Retention,
                            }),
                        );
                    }
                    subs.push((conn, s.sub_id, s.pattern));
                }
                Request::Unsubscribe { sub_id } => {
                    subs.retain(|(c, id, _)| !(*c == conn && *id == sub_id));
                }
                Request::Commit(c) => report.commits.push(c),
                Request::Stats => {
                    let json = serde_json::to_string(server.stats()).unwrap();
                    server.send(conn, &Response::Stats { json });
                }
                Request::Ping { nonce } => server.send(conn, &Response::Pong { nonce }),
                Request::Disconnected => {
                    report.disconnects += 1;
                    subs.retain(|(c, _, _)| *c != conn);
                }
            }
        }
        server.flush(poll.registry());
        for (conn, _, _) in &subs {
            report.max_backlog = report.max_backlog.max(server.backlog(*conn));
        }
    }
    report.final_backlog = subs.iter().map(|(c, _, _)| server.backlog(*c)).sum();
    report.stats = server.stats().clone();
    report
}

/// Answers one record of a PUBLISH frame (see the module doc) and forwards
/// it to the matching subscriptions.
fn publish_one(
    server: &mut IpcServer,
    next_offset: &mut HashMap<String, u64>,
    subs: &[(ConnId, u32, String)],
    conn: ConnId,
    batch: &PublishBatch,
    p: &PublishEntry<'_>,
) {
    let topic = &*batch.topic;
    if topic == "silent" {
        return;
    }
    let refuse = if topic == "nope" {
        Some(FailureKind::UnknownTopicRule)
    } else if topic == "slow" && batch.mode == PublishMode::Sync {
        Some(FailureKind::Timeout {
            waiting_for: vec!["h2".into(), "h3".into()],
        })
    } else {
        None
    };
    if let Some(kind) = refuse {
        if batch.mode != PublishMode::OneWay {
            let failure = Failure {
                kind,
                message: format!("refused {topic}"),
            };
            server.send(
                conn,
                &Response::PublishFailed {
                    request_id: p.request_id,
                    failure,
                },
            );
        }
        return;
    }
    let next = next_offset.entry(topic.to_string()).or_insert(0);
    let offset = Offset(*next);
    *next += 1;
    if batch.mode != PublishMode::OneWay {
        server.send(
            conn,
            &Response::Published {
                request_id: p.request_id,
                offset,
            },
        );
    }
    for (sub_conn, sub_id, pattern) in subs {
        if matches(pattern, topic) {
            server.send_record(
                *sub_conn,
                &DeliveryRef {
                    sub_id: *sub_id,
                    topic,
                    source: NodeId(0xab),
                    source_name: Some("h1"),
                    offset,
                    timestamp_ms: 1_700_000_000_000,
                    key: p.key,
                    value: p.value,
                },
            );
        }
    }
}
