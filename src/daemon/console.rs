//! The web console (netconf `[node] console = "127.0.0.1:7480"`; off unless
//! set): an HTML page that refreshes itself, `/api/stats` (the same JSON
//! document as `castlog stats --json`), `/api/history` (rates over the last
//! ten minutes, for the page's chart) and `/metrics` (Prometheus text
//! format).
//!
//! The HTTP side is `tiny_http` on its own thread, so a slow browser never
//! stalls the event loop. The two threads share one thing: a [`Snapshot`]
//! (the stats JSON and its wall-clock time) behind a mutex, which the event
//! loop replaces about once a second ([`Console::publish`]) and the HTTP
//! thread only reads. The HTTP thread never touches daemon state, and keeps
//! the rate history itself.
//!
//! ```text
//!  event loop ──stats_json() every 1s──▶ Arc<Mutex<Snapshot>> ◀── HTTP thread ─▶ /, /api/*, /metrics
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Error;

/// How often the event loop hands the HTTP thread a fresh snapshot.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// How much rate history the HTTP thread keeps (at one sample a second).
const HISTORY_SPAN_MS: u64 = 10 * 60 * 1000;
/// How long the HTTP thread waits for a request before it looks for a new
/// snapshot (and for the stop flag).
const RECV_WAIT: Duration = Duration::from_millis(250);
/// The page: inline HTML, CSS, JS and SVG (the console may run on a closed
/// network, so nothing is fetched from elsewhere).
const PAGE: &str = include_str!("console_page.html");
/// Where the page's server-side initial data goes, so that it shows figures
/// before its first fetch (and to a browser without JS).
const PAGE_INITIAL_MARK: &str = "/*INITIAL*/null";

/// The series the chart draws: (name shown, counter as `section.name`).
/// Rates of these are kept for [`HISTORY_SPAN_MS`].
const CHART_SERIES: &[(&str, &str)] = &[
    ("records published/s", "daemon.records_published"),
    ("records received/s", "proto.records_delivered"),
    ("log records appended/s", "log.records_appended"),
    ("bytes received/s", "proto.bytes_delivered"),
    ("log bytes appended/s", "log.bytes_appended"),
    ("datagrams sent/s", "daemon.datagrams_sent"),
    ("datagrams received/s", "daemon.datagrams_received"),
];

/// The stats document at one moment, as the event loop last published it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The same text `castlog stats --json` prints.
    pub json: Arc<str>,
    /// Milliseconds since the Unix epoch when it was taken.
    pub wall_ms: u64,
    /// Bumped on every publish, so the HTTP side sees each one once.
    pub generation: u64,
}

/// The daemon's handle on the console: where to publish, and the thread to
/// stop when the daemon is dropped.
pub struct Console {
    addr: SocketAddr,
    shared: Arc<Mutex<Snapshot>>,
    next_publish: Option<Instant>,
    stop: Arc<AtomicBool>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Console {
    /// Binds `addr` and starts the HTTP thread. Pages show "no data yet"
    /// until the first [`publish`](Console::publish).
    pub fn start(addr: SocketAddr) -> Result<Console, Error> {
        let server = tiny_http::Server::http(addr).map_err(|e| Error::Console {
            addr,
            reason: e.to_string(),
        })?;
        let addr = server.server_addr().to_ip().unwrap_or(addr);
        let server = Arc::new(server);
        let shared = Arc::new(Mutex::new(Snapshot::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, shared, stop) = (server.clone(), shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("castlogd-console".into())
                .spawn(move || serve(&server, &shared, &stop))
                .map_err(|e| Error::Console {
                    addr,
                    reason: e.to_string(),
                })?
        };
        ::log::info!("console serving url=http://{addr}/");
        Ok(Console {
            addr,
            shared,
            next_publish: None,
            stop,
            server,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether a new snapshot is due (the first one is due at once).
    pub fn is_due(&self, now: Instant) -> bool {
        self.next_publish.is_none_or(|t| t <= now)
    }

    /// Replaces the snapshot the HTTP thread serves.
    pub fn publish(&mut self, now: Instant, wall_ms: u64, json: String) {
        self.next_publish = Some(now + PUBLISH_EVERY);
        // A poisoned lock means the HTTP thread panicked mid-read; the
        // snapshot itself is always whole, so keep serving it.
        let mut snap = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        snap.json = json.into();
        snap.wall_ms = wall_ms;
        snap.generation += 1;
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The HTTP thread: answer requests, and between them take each new snapshot
/// into the history.
fn serve(server: &tiny_http::Server, shared: &Mutex<Snapshot>, stop: &AtomicBool) {
    let mut history = History::default();
    // The snapshot before the current one, so the page's first render
    // already has rates.
    let mut previous = Snapshot::default();
    let mut current = Snapshot::default();
    while !stop.load(Ordering::Relaxed) {
        let request = match server.recv_timeout(RECV_WAIT) {
            Ok(r) => r,
            Err(e) => {
                ::log::warn!("console receive failed error={e}");
                std::thread::sleep(RECV_WAIT);
                None
            }
        };
        let snap = shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
        history.take(&snap);
        if snap.generation != current.generation {
            previous = std::mem::replace(&mut current, snap.clone());
        }
        if let Some(request) = request {
            let (status, content_type, body) = route(request.url(), &snap, &previous, &history);
            let mut response = tiny_http::Response::from_string(body).with_status_code(status);
            let taken_ms = snap.wall_ms.to_string();
            for (name, value) in [
                ("Content-Type", content_type),
                ("Cache-Control", "no-store"),
                // When the snapshot was taken, so the page computes rates
                // over the snapshots' interval, not its own fetches'.
                ("X-Castlog-Snapshot-Ms", taken_ms.as_str()),
            ] {
                // ASCII names and values, which `from_bytes` accepts.
                if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                    response.add_header(h);
                }
            }
            if let Err(e) = request.respond(response) {
                ::log::debug!("console response failed error={e}");
            }
        }
    }
}

/// Answers one request: (status, content type, body).
fn route(
    url: &str,
    snap: &Snapshot,
    previous: &Snapshot,
    history: &History,
) -> (u16, &'static str, String) {
    let path = url.split('?').next().unwrap_or(url);
    let json = if snap.json.is_empty() {
        "{}"
    } else {
        &snap.json
    };
    match path {
        "/" | "/index.html" => (200, "text/html; charset=utf-8", page(snap, previous)),
        "/api/stats" => (200, "application/json", json.to_string()),
        "/api/history" => (200, "application/json", history.to_json().to_string()),
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics_text(json),
        ),
        _ => (404, "text/plain; charset=utf-8", "not found\n".to_string()),
    }
}

/// The page with the current snapshot (and the one before, for rates)
/// embedded, so its first render needs no fetch.
fn page(snap: &Snapshot, previous: &Snapshot) -> String {
    // `</` inside a <script> would end it early.
    let embed = |s: &Snapshot| {
        format!(
            "{{\"wall_ms\":{},\"stats\":{}}}",
            s.wall_ms,
            s.json.replace("</", "<\\/")
        )
    };
    let initial = match (snap.json.is_empty(), previous.json.is_empty()) {
        (true, _) => "null".to_string(),
        (false, true) => embed(snap),
        (false, false) => {
            let mut e = embed(snap);
            e.pop();
            format!("{e},\"prev\":{}}}", embed(previous))
        }
    };
    PAGE.replacen(PAGE_INITIAL_MARK, &initial, 1)
}

/// Rates of the chart's series, one sample per snapshot, over the last
/// [`HISTORY_SPAN_MS`].
#[derive(Debug, Default)]
struct History {
    generation: u64,
    /// The previous snapshot's time and chart counters.
    last: Option<(u64, Vec<Option<f64>>)>,
    /// (time, rate per series); a series missing from the JSON is `None`.
    rates: VecDeque<(u64, Vec<Option<f64>>)>,
}

impl History {
    /// Takes a snapshot into the history, once per generation.
    fn take(&mut self, snap: &Snapshot) {
        if snap.generation == self.generation || snap.json.is_empty() {
            return;
        }
        self.generation = snap.generation;
        let Ok(value) = serde_json::from_str::<Value>(&snap.json) else {
            return;
        };
        let counters: Vec<Option<f64>> = CHART_SERIES
            .iter()
            .map(|(_, path)| lookup(&value, path))
            .collect();
        self.push(snap.wall_ms, counters);
    }

    fn push(&mut self, wall_ms: u64, counters: Vec<Option<f64>>) {
        if let Some((t0, c0)) = &self.last {
            if wall_ms > *t0 {
                let dt = (wall_ms - t0) as f64 / 1000.0;
                let rates = c0
                    .iter()
                    .zip(&counters)
                    .map(|(a, b)| match (a, b) {
                        // A counter that went down was reset (restart): no rate.
                        (Some(a), Some(b)) if b >= a => Some((b - a) / dt),
                        _ => None,
                    })
                    .collect();
                self.rates.push_back((wall_ms, rates));
            }
        }
        self.last = Some((wall_ms, counters));
        while self
            .rates
            .front()
            .is_some_and(|(t, _)| t.saturating_add(HISTORY_SPAN_MS) < wall_ms)
        {
            self.rates.pop_front();
        }
    }

    /// `{"span_ms":..,"series":[{"name":..,"counter":..,"points":[[t_ms,rate],..]},..]}`
    fn to_json(&self) -> Value {
        let series: Vec<Value> = CHART_SERIES
            .iter()
            .enumerate()
            .map(|(k, (name, counter))| {
                let points: Vec<Value> = self
                    .rates
                    .iter()
                    .filter_map(|(t, r)| Some(serde_json::json!([t, (*r.get(k)?)?])))
                    .collect();
                serde_json::json!({"name": name, "counter": counter, "points": points})
            })
            .collect();
        serde_json::json!({"span_ms": HISTORY_SPAN_MS, "series": series})
    }
}

/// The number at `section.name` in the stats document.
fn lookup(value: &Value, path: &str) -> Option<f64> {
    let mut v = value;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    v.as_f64()
}

/// Every number (and boolean) of the stats document in the Prometheus text
/// format: `castlog_<section>_<name> value`. Arrays of objects (topics,
/// groups, peers) become one series per element, labelled by the element's
/// string fields: `castlog_topics_next_offset{topic="a",source="..."} 12`.
pub fn metrics_text(json: &str) -> String {
    let mut out = String::new();
    let Ok(value) = serde_json::from_str::<Value>(json) else {
        return out;
    };
    let mut lines = BTreeMap::new();
    flatten_metrics("castlog", &value, "", &mut lines);
    for (name, value) in lines {
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

fn flatten_metrics(prefix: &str, value: &Value, labels: &str, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                flatten_metrics(&format!("{prefix}_{}", metric_name(k)), v, labels, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                let Value::Object(fields) = item else {
                    continue;
                };
                let mut l: Vec<String> = fields
                    .iter()
                    .filter_map(|(k, v)| {
                        Some(format!(
                            "{}=\"{}\"",
                            metric_name(k),
                            escape_label(v.as_str()?)
                        ))
                    })
                    .collect();
                if !labels.is_empty() {
                    l.insert(0, labels.to_string());
                }
                flatten_metrics(prefix, item, &l.join(","), out);
            }
        }
        Value::Number(n) => {
            let name = if labels.is_empty() {
                prefix.to_string()
            } else {
                format!("{prefix}{{{labels}}}")
            };
            out.insert(name, n.to_string());
        }
        Value::Bool(b) => {
            let name = if labels.is_empty() {
                prefix.to_string()
            } else {
                format!("{prefix}{{{labels}}}")
            };
            out.insert(name, u8::from(*b).to_string());
        }
        Value::String(_) | Value::Null => {}
    }
}

/// Prometheus names are `[a-zA-Z_][a-zA-Z0-9_]*`.
fn metric_name(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::super::clock;
    use super::*;

    const DOC: &str = r#"{"node":{"name":"h1","id":"00ff","gso":true},
        "daemon":{"records_published":7},
        "topics":[{"topic":"a\"b","source":"00ff","next_offset":3}]}"#;

    #[test]
    fn metrics_flatten_every_number_with_its_section_in_the_name() {
        let text = metrics_text(DOC);
        assert!(
            text.contains("castlog_daemon_records_published 7\n"),
            "{text}"
        );
        assert!(text.contains("castlog_node_gso 1\n"), "{text}");
        assert!(!text.contains("castlog_node_name"), "{text}");
    }

    #[test]
    fn metrics_label_array_elements_by_their_string_fields() {
        let text = metrics_text(DOC);
        assert!(
            text.contains("castlog_topics_next_offset{source=\"00ff\",topic=\"a\\\"b\"} 3\n"),
            "{text}"
        );
    }

    #[test]
    fn history_rates_are_deltas_over_time_and_skip_resets() {
        let mut h = History::default();
        h.push(1_000, vec![Some(10.0)]);
        h.push(3_000, vec![Some(30.0)]);
        h.push(4_000, vec![Some(5.0)]);
        let rates: Vec<Option<f64>> = h.rates.iter().map(|(_, r)| r[0]).collect();
        assert_eq!(rates, vec![Some(10.0), None]);
    }

    #[test]
    fn history_keeps_only_the_last_ten_minutes() {
        let mut h = History::default();
        for s in 0..700u64 {
            h.push(s * 1000, vec![Some(s as f64)]);
        }
        let first = h.rates.front().map(|(t, _)| *t).unwrap_or(0);
        assert_eq!(first, 699_000 - HISTORY_SPAN_MS);
    }

    #[test]
    fn the_page_embeds_the_snapshot_so_it_renders_before_any_fetch() {
        let snap = Snapshot {
            json: r#"{"node":{"name":"</script>"}}"#.into(),
            wall_ms: 5,
            generation: 1,
        };
        let html = page(&snap, &Snapshot::default());
        assert!(html.contains(r#"{"wall_ms":5,"stats":{"node":{"name":"<\/script>"}}}"#));
        assert!(!html.contains(PAGE_INITIAL_MARK));
    }

    #[test]
    fn the_console_serves_the_snapshot_it_was_given() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut console = Console::start(addr).unwrap();
        console.publish(clock::now(), 1, DOC.to_string());
        assert!(!console.is_due(clock::now()));
        let body = http_get(console.addr(), "/api/stats");
        assert!(body.ends_with(DOC), "{body}");
        let body = http_get(console.addr(), "/metrics");
        assert!(
            body.contains("castlog_daemon_records_published 7"),
            "{body}"
        );
        let body = http_get(console.addr(), "/nope");
        assert!(body.starts_with("HTTP/1.1 404"), "{body}");
    }

    #[test]
    fn a_console_port_in_use_is_an_error_naming_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = Console::start(addr).err().map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(
            err.contains(&format!("cannot serve the web console on {addr}")),
            "{err}"
        );
    }

    fn http_get(addr: SocketAddr, path: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}
