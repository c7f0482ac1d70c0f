//! `castlog bench`: the end-to-end benchmark, through real daemons and the
//! client library, or (`--raw`) through plain UDP sockets over the same path
//! with the best kernel method available, so every castlog figure can be
//! given as a ratio of the raw limit measured in the same run.
//!
//! Record values carry an 8-byte sequence number and an 8-byte send time
//! (ns since the epoch), so the subscriber checks completeness (every record,
//! in order, once) and the ping role measures round trips.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use castlog::client::{Client, ConsumeMode, Message, StartFrom};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Publisher,
    Subscriber,
    Ping,
    Pong,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What this process does
    #[arg(long, value_enum)]
    role: Role,
    /// Value size in bytes (at least 16: sequence number and send time)
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Records to send (publisher, ping) or to expect (subscriber)
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Stop after this many seconds instead (publisher, ping)
    #[arg(long)]
    duration: Option<f64>,
    /// Target records per second (0 = as fast as possible)
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Topic name (with --topics N > 1: TOPIC.0 .. TOPIC.N-1)
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Number of topics to spread records over
    #[arg(long, default_value_t = 1)]
    topics: u32,
    /// Subscriber: stop after this many seconds without a record
    #[arg(long, default_value_t = 5.0)]
    idle_timeout: f64,
    /// Subscriber: this many client connections, each expecting every
    /// record (the report sums their records; complete only if all are)
    #[arg(long, default_value_t = 1)]
    subscribers: u32,
    /// Plain UDP instead of castlog, over the same path
    #[arg(long)]
    raw: bool,
    /// Raw: where to send (a unicast, multicast or broadcast address)
    #[arg(long)]
    peer: Option<SocketAddr>,
    /// Raw: the local address to bind (subscriber, pong: the port to receive on)
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Raw: the multicast group to join (subscriber) and interface address
    #[arg(long)]
    group: Option<Ipv4Addr>,
    #[arg(long, default_value = "0.0.0.0")]
    interface: Ipv4Addr,
    /// Raw: do not use UDP GSO even when the kernel has it
    #[arg(long)]
    no_gso: bool,
    /// Ping, pong: wait for the answer by polling the socket without
    /// sleeping (sched_yield between polls, so a shared core still serves
    /// the others), as Aeron's and other low-latency clients do; trades a
    /// core for the wakeup latency of a blocking read
    #[arg(long)]
    busy_poll: bool,
    /// Print one JSON object instead of a line of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub role: String,
    pub raw: bool,
    pub size: usize,
    pub records: u64,
    pub seconds: f64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_of_order: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p90_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p999_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

pub fn run(socket: &Path, args: &BenchArgs) -> Result<(), String> {
    if args.size < 16 {
        return Err("--size must be at least 16 (sequence number and send time)".into());
    }
    let report = if args.raw {
        match args.role {
            Role::Publisher => raw_publisher(args)?,
            Role::Subscriber => raw_subscriber(args)?,
            Role::Ping => raw_ping(args)?,
            Role::Pong => raw_pong(args)?,
        }
    } else {
        match args.role {
            Role::Publisher => publisher(socket, args)?,
            Role::Subscriber => subscribers(socket, args)?,
            Role::Ping => ping(socket, args)?,
            Role::Pong => pong(socket, args)?,
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        let mut line = format!(
            "{}{} size={}B records={} seconds={:.3} records/s={:.0} MB/s={:.1}",
            report.role,
            if report.raw { " (raw)" } else { "" },
            report.size,
            report.records,
            report.seconds,
            report.records_per_sec,
            report.mb_per_sec
        );
        if let Some(c) = report.complete {
            line += &format!(
                " complete={c} missing={} duplicates={}",
                report.missing.unwrap_or(0),
                report.duplicates.unwrap_or(0)
            );
        }
        if let Some(p50) = report.p50_us {
            line += &format!(
                " rtt_us p50={p50:.1} p90={:.1} p99={:.1} p99.9={:.1} max={:.1}",
                report.p90_us.unwrap_or(0.0),
                report.p99_us.unwrap_or(0.0),
                report.p999_us.unwrap_or(0.0),
                report.max_us.unwrap_or(0.0)
            );
        }
        if let Some(m) = &report.method {
            line += &format!(" method={m}");
        }
        println!("{line}");
    }
    Ok(())
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn fill(value: &mut [u8], seq: u64) {
    value[..8].copy_from_slice(&seq.to_be_bytes());
    value[8..16].copy_from_slice(&now_ns().to_be_bytes());
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_be_bytes(a))
}

fn report(role: &str, raw: bool, size: usize, records: u64, seconds: f64) -> Report {
    let seconds = seconds.max(1e-9);
    Report {
        role: role.into(),
        raw,
        size,
        records,
        seconds,
        records_per_sec: records as f64 / seconds,
        mb_per_sec: records as f64 * size as f64 / seconds / 1e6,
        ..Report::default()
    }
}

/// Paces a sender at `rate` records/s (0 = unpaced).
struct Pacer {
    rate: u64,
    start: Instant,
}

impl Pacer {
    fn wait(&self, sent: u64) {
        if self.rate == 0 {
            return;
        }
        let due = self.start + Duration::from_secs_f64(sent as f64 / self.rate as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

fn progress(total: u64, visible: bool) -> indicatif::ProgressBar {
    if visible && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    }
}

fn topic_name(args: &BenchArgs, i: u64) -> String {
    if args.topics <= 1 {
        args.topic.clone()
    } else {
        format!("{}.{}", args.topic, i % u64::from(args.topics))
    }
}

fn publisher(socket: &Path, args: &BenchArgs) -> Result<Report, String> {
    let mut c = Client::connect(socket).map_err(|e| e.to_string())?;
    let topics: Vec<String> = (0..u64::from(args.topics.max(1)))
        .map(|i| topic_name(args, i))
        .collect();
    let mut value = vec![0u8; args.size];
    let start = Instant::now();
    let pacer = Pacer {
        rate: args.rate,
        start,
    };
    let end = args.duration.map(|d| start + Duration::from_secs_f64(d));
    let bar = progress(args.count, !args.json);
    let mut sent = 0u64;
    while sent < args.count && end.is_none_or(|e| Instant::now() < e) {
        fill(&mut value, sent);
        let topic = &topics[(sent % topics.len() as u64) as usize];
        c.publish_oneway(topic, None, &value)
            .map_err(|e| e.to_string())?;
        sent += 1;
        if sent % 1024 == 0 {
            bar.set_position(sent);
            pacer.wait(sent);
        }
    }
    c.flush().map_err(|e| e.to_string())?;
    // A ping round trip: every record before it has reached the daemon.
    c.ping().map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    Ok(report(
        "publisher",
        false,
        args.size,
        sent,
        start.elapsed().as_secs_f64(),
    ))
}

#[derive(Default)]
struct Completeness {
    /// Next offset expected, per topic then source (looked up by `&str`,
    /// so a record costs no allocation).
    next: BTreeMap<String, BTreeMap<u64, u64>>,
    missing: u64,
    duplicates: u64,
    out_of_order: u64,
}

impl Completeness {
    fn see(&mut self, topic: &str, source: u64, offset: u64) {
        if !self.next.contains_key(topic) {
            self.next.insert(topic.to_owned(), BTreeMap::new());
        }
        let Some(sources) = self.next.get_mut(topic) else {
            return;
        };
        match sources.get_mut(&source) {
            None => {
                sources.insert(source, offset + 1);
            }
            Some(n) if offset == *n => *n += 1,
            Some(n) if offset < *n => self.duplicates += 1,
            Some(n) => {
                self.missing += offset - *n;
                self.out_of_order += 1;
                *n = offset + 1;
            }
        }
    }
}

/// `--subscribers N`: N subscribers in threads, one connection each. The
/// report gives the records all of them received and the rate at which the
/// slowest received its share (`records_per_sec` is per subscriber).
fn subscribers(socket: &Path, args: &BenchArgs) -> Result<Report, String> {
    if args.subscribers <= 1 {
        return subscriber(socket, args);
    }
    let reports: Vec<Result<Report, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.subscribers)
            .map(|_| s.spawn(|| subscriber(socket, args)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("subscriber thread panicked".into()))
            })
            .collect()
    });
    let reports = reports.into_iter().collect::<Result<Vec<_>, _>>()?;
    let slowest = reports
        .iter()
        .min_by(|a, b| a.records_per_sec.total_cmp(&b.records_per_sec))
        .cloned()
        .ok_or("no subscriber ran")?;
    let sum = |f: fn(&Report) -> Option<u64>| reports.iter().filter_map(f).sum::<u64>();
    Ok(Report {
        records: reports.iter().map(|r| r.records).sum(),
        complete: Some(reports.iter().all(|r| r.complete == Some(true))),
        missing: Some(sum(|r| r.missing)),
        duplicates: Some(sum(|r| r.duplicates)),
        out_of_order: Some(sum(|r| r.out_of_order)),
        ..slowest
    })
}

fn subscriber(socket: &Path, args: &BenchArgs) -> Result<Report, String> {
    let mut c = Client::connect(socket).map_err(|e| e.to_string())?;
    let pattern = if args.topics > 1 {
        format!("{}.*", args.topic)
    } else {
        args.topic.clone()
    };
    c.subscribe(&pattern, StartFrom::Latest, None, ConsumeMode::Broadcast)
        .map_err(|e| e.to_string())?;
    eprintln!("subscriber ready pattern={pattern}");
    let idle = Duration::from_secs_f64(args.idle_timeout);
    let bar = progress(args.count, !args.json && args.subscribers <= 1);
    let mut check = Completeness::default();
    let mut got = 0u64;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    while got < args.count {
        match c.next_message(idle).map_err(|e| e.to_string())? {
            Some(Message::Record(d)) => {
                // The clock every 64 records (and at the first and last):
                // reading it per record cost more than the rest of the loop.
                if first.is_none() || got % 64 == 63 || got + 1 == args.count {
                    let now = Instant::now();
                    first.get_or_insert(now);
                    last = now;
                }
                check.see(&d.topic, d.source.0, d.offset.0);
                got += 1;
                if got % 4096 == 0 {
                    bar.set_position(got);
                }
            }
            Some(Message::Gap(g)) => {
                check.missing += g.to.0.saturating_sub(g.from.0);
            }
            None => break,
        }
    }
    bar.finish_and_clear();
    let seconds = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    let mut r = report("subscriber", false, args.size, got, seconds);
    let missing = check.missing + args.count.saturating_sub(got + check.missing);
    r.complete = Some(got == args.count && check.missing == 0 && check.duplicates == 0);
    r.missing = Some(missing);
    r.duplicates = Some(check.duplicates);
    r.out_of_order = Some(check.out_of_order);
    Ok(r)
}

fn latency_report(role: &str, raw: bool, size: usize, h: &Histogram<u64>, seconds: f64) -> Report {
    let mut r = report(role, raw, size, h.len(), seconds);
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    r.p50_us = Some(us(0.5));
    r.p90_us = Some(us(0.9));
    r.p99_us = Some(us(0.99));
    r.p999_us = Some(us(0.999));
    r.max_us = Some(h.max() as f64 / 1000.0);
    r
}

fn new_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())
}

fn ping(socket: &Path, args: &BenchArgs) -> Result<Report, String> {
    let mut c = Client::connect(socket).map_err(|e| e.to_string())?;
    let ping_topic = format!("{}.ping", args.topic);
    let pong_topic = format!("{}.pong", args.topic);
    c.subscribe(&pong_topic, StartFrom::Latest, None, ConsumeMode::Broadcast)
        .map_err(|e| e.to_string())?;
    let mut h = new_histogram()?;
    let mut value = vec![0u8; args.size];
    let start = Instant::now();
    let end = args.duration.map(|d| start + Duration::from_secs_f64(d));
    let warmup = (args.count / 10).min(1000);
    let mut seq = 0u64;
    while seq < args.count + warmup && end.is_none_or(|e| Instant::now() < e) {
        fill(&mut value, seq);
        let sent = Instant::now();
        c.publish_oneway(&ping_topic, None, &value)
            .map_err(|e| e.to_string())?;
        c.flush().map_err(|e| e.to_string())?;
        loop {
            match next_message(&mut c, Duration::from_secs(2), args.busy_poll)? {
                Some(Message::Record(d)) if read_u64(&d.value, 0) == Some(seq) => break,
                Some(_) => continue,
                None => {
                    return Err(format!(
                        "no pong for ping {seq} within 2s (is a pong running?)"
                    ))
                }
            }
        }
        if seq >= warmup {
            let _ = h.record(sent.elapsed().as_nanos() as u64);
        }
        seq += 1;
    }
    Ok(latency_report(
        "ping",
        false,
        args.size,
        &h,
        start.elapsed().as_secs_f64(),
    ))
}

/// The next message within `timeout`, by a blocking wait or by polling.
fn next_message(c: &mut Client, timeout: Duration, busy: bool) -> Result<Option<Message>, String> {
    if !busy {
        return c.next_message(timeout).map_err(|e| e.to_string());
    }
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(m) = c.next_message(Duration::ZERO).map_err(|e| e.to_string())? {
            return Ok(Some(m));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::yield_now();
    }
}

/// `recv_from` on a non-blocking socket, polled until `timeout`.
fn recv_polling(
    sock: &UdpSocket,
    buf: &mut [u8],
    timeout: Duration,
) -> io::Result<(usize, SocketAddr)> {
    let deadline = Instant::now() + timeout;
    loop {
        match sock.recv_from(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(e);
                }
                std::thread::yield_now();
            }
            other => return other,
        }
    }
}

fn pong(socket: &Path, args: &BenchArgs) -> Result<Report, String> {
    let mut c = Client::connect(socket).map_err(|e| e.to_string())?;
    let ping_topic = format!("{}.ping", args.topic);
    let pong_topic = format!("{}.pong", args.topic);
    c.subscribe(&ping_topic, StartFrom::Latest, None, ConsumeMode::Broadcast)
        .map_err(|e| e.to_string())?;
    eprintln!("pong ready");
    let start = Instant::now();
    let mut n = 0u64;
    let idle = Duration::from_secs_f64(args.idle_timeout);
    while let Some(m) = next_message(&mut c, idle, args.busy_poll)? {
        if let Message::Record(d) = m {
            c.publish_oneway(&pong_topic, None, &d.value)
                .map_err(|e| e.to_string())?;
            c.flush().map_err(|e| e.to_string())?;
            n += 1;
        }
    }
    Ok(report(
        "pong",
        false,
        args.size,
        n,
        start.elapsed().as_secs_f64(),
    ))
}

// ---- raw UDP, the kernel's limit on the same path ----

const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

fn setsockopt_int(
    sock: &UdpSocket,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> bool {
    // SAFETY: `value` outlives the call and the length matches its type.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

fn big_buffers(sock: &UdpSocket) {
    let size: libc::c_int = 32 << 20;
    setsockopt_int(sock, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, size);
    setsockopt_int(sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size);
}

fn raw_publisher(args: &BenchArgs) -> Result<Report, String> {
    let peer = args
        .peer
        .ok_or("--raw --role publisher needs --peer ADDR:PORT")?;
    let bind = args
        .bind
        .unwrap_or_else(|| SocketAddr::from((args.interface, 0)));
    let sock = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    big_buffers(&sock);
    let _ = sock.set_broadcast(true);
    if let SocketAddr::V4(p) = peer {
        if p.ip().is_multicast() {
            let _ = sock.set_multicast_ttl_v4(1);
            let _ = sock.set_multicast_loop_v4(true);
            // SAFETY: plain setsockopt with an in_addr the size it claims.
            unsafe {
                let addr = libc::in_addr {
                    s_addr: u32::from(args.interface).to_be(),
                };
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_MULTICAST_IF,
                    (&addr as *const libc::in_addr).cast(),
                    std::mem::size_of::<libc::in_addr>() as libc::socklen_t,
                );
            }
        }
    }
    let gso = !args.no_gso
        && args.size <= 8192
        && setsockopt_int(&sock, libc::SOL_UDP, UDP_SEGMENT, args.size as libc::c_int);
    let per_send = if gso {
        (65000 / args.size).clamp(1, 64)
    } else {
        1
    };
    let mut buf = vec![0u8; args.size * per_send];
    let start = Instant::now();
    let pacer = Pacer {
        rate: args.rate,
        start,
    };
    let end = args.duration.map(|d| start + Duration::from_secs_f64(d));
    let mut sent = 0u64;
    while sent < args.count && end.is_none_or(|e| Instant::now() < e) {
        let n = per_send.min((args.count - sent) as usize);
        for k in 0..n {
            fill(
                &mut buf[k * args.size..(k + 1) * args.size],
                sent + k as u64,
            );
        }
        match sock.send_to(&buf[..n * args.size], peer) {
            Ok(_) => sent += n as u64,
            Err(e)
                if e.raw_os_error() == Some(libc::ENOBUFS)
                    || e.kind() == std::io::ErrorKind::WouldBlock =>
            {
                std::thread::yield_now();
            }
            Err(e) => return Err(format!("send to {peer}: {e}")),
        }
        pacer.wait(sent);
    }
    let mut r = report(
        "publisher",
        true,
        args.size,
        sent,
        start.elapsed().as_secs_f64(),
    );
    r.method = Some(if gso {
        format!("gso x{per_send}")
    } else {
        "sendto".into()
    });
    Ok(r)
}

fn raw_subscriber(args: &BenchArgs) -> Result<Report, String> {
    let bind = args
        .bind
        .ok_or("--raw --role subscriber needs --bind ADDR:PORT")?;
    let sock = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(|e| e.to_string())?;
    let _ = sock.set_reuse_address(true);
    let _ = sock.set_reuse_port(true);
    sock.bind(&bind.into())
        .map_err(|e| format!("bind {bind}: {e}"))?;
    if let Some(g) = args.group {
        sock.join_multicast_v4(&g, &args.interface)
            .map_err(|e| format!("join {g}: {e}"))?;
    }
    let sock: UdpSocket = sock.into();
    big_buffers(&sock);
    let gro = setsockopt_int(&sock, libc::SOL_UDP, UDP_GRO, 1);
    sock.set_read_timeout(Some(Duration::from_secs_f64(args.idle_timeout)))
        .map_err(|e| e.to_string())?;
    eprintln!("raw subscriber ready bind={bind}");
    let mut buf = vec![0u8; 65536];
    let mut got = 0u64;
    let mut first = None;
    let mut last = Instant::now();
    let mut highest = 0u64;
    while got < args.count {
        match sock.recv(&mut buf) {
            Ok(len) => {
                // One receive may hold many datagrams (GRO): the clock once
                // per receive.
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
                let n = (len / args.size.max(1)).max(1) as u64;
                got += n;
                if let Some(seq) = read_u64(
                    &buf[..len],
                    (len / args.size.max(1)).saturating_sub(1) * args.size,
                ) {
                    highest = highest.max(seq + 1);
                }
            }
            Err(_) => break,
        }
    }
    let seconds = first.map_or(0.0, |f: Instant| last.duration_since(f).as_secs_f64());
    let mut r = report("subscriber", true, args.size, got, seconds);
    r.missing = Some(highest.saturating_sub(got));
    r.method = Some(if gro {
        "recv+gro".into()
    } else {
        "recv".into()
    });
    Ok(r)
}

fn raw_ping(args: &BenchArgs) -> Result<Report, String> {
    let peer = args
        .peer
        .ok_or("--raw --role ping needs --peer ADDR:PORT")?;
    let bind = args
        .bind
        .unwrap_or_else(|| SocketAddr::from((args.interface, 0)));
    let sock = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    sock.set_nonblocking(args.busy_poll)
        .map_err(|e| e.to_string())?;
    let mut h = new_histogram()?;
    let mut buf = vec![0u8; args.size.max(16)];
    let mut rbuf = vec![0u8; 65536];
    let start = Instant::now();
    let warmup = (args.count / 10).min(1000);
    for seq in 0..args.count + warmup {
        fill(&mut buf, seq);
        let sent = Instant::now();
        sock.send_to(&buf, peer).map_err(|e| e.to_string())?;
        loop {
            let (len, _) = if args.busy_poll {
                recv_polling(&sock, &mut rbuf, Duration::from_secs(2))
            } else {
                sock.recv_from(&mut rbuf)
            }
            .map_err(|e| format!("no pong within 2s: {e}"))?;
            if read_u64(&rbuf[..len], 0) == Some(seq) {
                break;
            }
        }
        if seq >= warmup {
            let _ = h.record(sent.elapsed().as_nanos() as u64);
        }
    }
    let mut r = latency_report("ping", true, args.size, &h, start.elapsed().as_secs_f64());
    r.method = Some(
        if args.busy_poll {
            "busy-poll recv"
        } else {
            "blocking recv"
        }
        .into(),
    );
    Ok(r)
}

fn raw_pong(args: &BenchArgs) -> Result<Report, String> {
    let bind = args
        .bind
        .ok_or("--raw --role pong needs --bind ADDR:PORT")?;
    let sock = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    let idle = Duration::from_secs_f64(args.idle_timeout);
    sock.set_read_timeout(Some(idle))
        .map_err(|e| e.to_string())?;
    sock.set_nonblocking(args.busy_poll)
        .map_err(|e| e.to_string())?;
    eprintln!("raw pong ready bind={bind}");
    let mut buf = vec![0u8; 65536];
    let start = Instant::now();
    let mut n = 0u64;
    let recv = |buf: &mut [u8]| {
        if args.busy_poll {
            recv_polling(&sock, buf, idle)
        } else {
            sock.recv_from(buf)
        }
    };
    while let Ok((len, from)) = recv(&mut buf) {
        let _ = sock.send_to(&buf[..len], from);
        n += 1;
    }
    Ok(report(
        "pong",
        true,
        args.size,
        n,
        start.elapsed().as_secs_f64(),
    ))
}
