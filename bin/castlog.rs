//! `castlog`: the command line client of the local `castlogd`. Thin: parse
//! arguments, call `castlog::client`, print, map errors to exit codes.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine as _;
use castlog::client::{
    self, Client, ConsumeMode, Delivery, Gap, Message, NodeId, Offset, StartFrom,
};
use castlog::netconf::{self, NetConf};
use clap::{Args, Parser, Subcommand, ValueEnum};

mod stats_table;

mod bench;
mod demo;
mod groups;

/// Exit codes, documented in `castlog --help`.
mod exit {
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const DAEMON_NOT_RUNNING: u8 = 3;
    pub const TIMEOUT: u8 = 4;
}

const ABOUT_LONG: &str = "\
castlog talks to the local castlogd over its Unix socket: publish records to a
topic, subscribe to topics from any offset, read the daemon's counters.

The socket is --socket PATH, else $CASTLOG_SOCKET, else the default node's
socket: $XDG_RUNTIME_DIR/castlog-<hostname>.sock (or /tmp/castlog-<hostname>.sock
when XDG_RUNTIME_DIR is not set).

Exit status:
  0  success (every record accepted; every sync record acknowledged)
  1  a record was refused, or another runtime error
  2  bad command line, or (check) an invalid netconf file
  3  castlogd is not running at the socket
  4  timed out waiting for the daemon or for acknowledgements";

const PUB_LONG: &str = "\
Publish records to TOPIC. Each VALUE is one record; with no VALUE, each line
of standard input is one record (without its newline), read in large buffered
chunks and sent in batches, so piping millions of lines is fast.

Modes (as RocketMQ's send modes):
  oneway  no answer from the daemon at all; castlog only makes sure the daemon
          received every record before it exits
  async   (default) every record gets an answer later; castlog waits for all of
          them before it exits and reports the refused ones
  sync    each record waits until it is in the local log and every live
          receiver of its group acknowledged it; its offset is printed

The exit status is 0 only when every record was accepted (sync: acknowledged).";

const PUB_EXAMPLES: &str = "\
Examples:
  castlog pub md.prices.AAPL 189.20 189.25
  castlog pub orders --key o-17 --mode sync 'buy 10'
  seq 1000000 | castlog pub bench.numbers
  tail -F app.log | castlog pub --mode oneway logs.app";

const SUB_LONG: &str = "\
Subscribe to PATTERN (an exact topic, prefix.* or *) and print each record's
value on its own line, in offset order per (topic, source).

--from chooses where each source's log is read from: earliest, latest, a
number, or committed (the consumer group's committed offset). The default is
committed with --group, latest without. Records the daemons no longer hold
are reported as a gap on standard error (never skipped silently).

With --group NAME the subscriber joins a consumer group: in clustering mode
(the default for a group) the members share the records, in broadcast mode
each member gets all of them. castlog commits the group's progress after each
batch of output it has written.

--json prints one object per line:
  {\"topic\":..,\"source\":..,\"source_name\":..,\"offset\":..,\"timestamp\":..,\"key\":..,\"value\":..}
where source is the node id (16 hex digits), timestamp is milliseconds since
the Unix epoch, key is text or null, and value is the text when it is UTF-8,
otherwise the field is value_base64 (and key_base64 likewise). A gap is
printed as {\"gap\":{\"topic\":..,\"source\":..,\"from\":..,\"to\":..,\"reason\":..}}
(records from..to, end excluded, will never arrive).";

const SUB_EXAMPLES: &str = "\
Examples:
  castlog sub 'md.*'
  castlog sub orders --from earliest --count 10 --json
  castlog sub orders --from 1500 --idle-timeout 2
  castlog sub 'jobs.*' --group workers";

const STATS_LONG: &str = "\
Print the daemon's counters as a table grouped by section: the node on one
line; its groups, the peers heard on them and its topic logs (offsets, log
size, segments) as tables; then the counters of each room (daemon, proto,
log, ipc) in columns. With --json, the daemon's JSON document as it is (the
same document the web console serves at /api/stats).";

const STATS_EXAMPLES: &str = "\
Examples:
  castlog stats
  castlog stats --json | jq .daemon.records_published
  COLUMNS=80 castlog stats";

const TOP_LONG: &str = "\
Show the daemon's counters live, as `castlog stats` lays them out, redrawn
every --interval seconds (the screen is cleared with ANSI escape codes), with
the rate per second of every counter beside it. Ctrl-C exits. --count stops
after that many screens (for scripts). For a browser view, set
`console = \"127.0.0.1:7480\"` in the netconf's [node] table.";

const TOP_EXAMPLES: &str = "\
Examples:
  castlog top
  castlog top --interval 5
  castlog --socket /run/castlog/h1.sock top --count 3";

const CHECK_LONG: &str = "\
Validate netconf files without starting a daemon: every error of every file
is printed as FILE:LINE:COLUMN: KEY: what is wrong and what is allowed.
Exit status 0 when every file is valid, 2 otherwise. The socket is not used.";

const CHECK_EXAMPLES: &str = "\
Examples:
  castlog check /etc/castlog/h1.toml
  castlog check netconf/*.toml";

#[derive(Debug, Parser)]
#[command(name = "castlog", version, about = "Publish and subscribe through the local castlogd", long_about = ABOUT_LONG)]
struct Cli {
    /// The daemon's socket [default: $CASTLOG_SOCKET, else the default node's]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish records to a topic (arguments or standard input)
    #[command(long_about = PUB_LONG, after_long_help = PUB_EXAMPLES)]
    Pub(PubArgs),
    /// Subscribe to topics and print their records
    #[command(long_about = SUB_LONG, after_long_help = SUB_EXAMPLES)]
    Sub(SubArgs),
    /// Print the daemon's counters
    #[command(long_about = STATS_LONG, after_long_help = STATS_EXAMPLES)]
    Stats(StatsArgs),
    /// List consumer groups: members, assignment, committed offsets, lag
    #[command(long_about = groups::GROUPS_LONG, after_long_help = groups::GROUPS_EXAMPLES)]
    Groups(groups::GroupsArgs),
    /// Validate netconf files
    #[command(long_about = CHECK_LONG, after_long_help = CHECK_EXAMPLES)]
    Check(CheckArgs),
    /// Run two daemons on loopback multicast and publish, subscribe, replay
    #[command(long_about = DEMO_LONG)]
    Demo,
    /// Measure throughput, completeness and latency, through castlog or raw UDP
    #[command(long_about = BENCH_LONG, after_long_help = BENCH_EXAMPLES)]
    Bench(bench::BenchArgs),
    /// Show the daemon's counters live, with rates
    #[command(long_about = TOP_LONG, after_long_help = TOP_EXAMPLES)]
    Top(TopArgs),
    /// Show the castlog frames in a packet capture (pcap)
    #[command(long_about = DECODE_LONG, after_long_help = DECODE_EXAMPLES)]
    Decode {
        /// Capture file: pcap (`tcpdump -w`) or pcapng (`tshark -w`)
        file: PathBuf,
        /// Print one JSON object per frame and line
        #[arg(long)]
        json: bool,
    },
}

const BENCH_LONG: &str = "\
The end-to-end benchmark. Through castlog (the local daemon and the client
library) or, with --raw, through plain UDP sockets over the same path with
the best kernel method available (GSO sends, GRO receives), so that castlog's
figures can be given as a ratio of the raw limit measured in the same run.

Roles: publisher (sends --count records of --size bytes, at --rate or as fast
as possible), subscriber (receives and checks completeness: every record, in
order, once), ping and pong (round trips, percentiles from an HdrHistogram).
Start the subscriber (or pong) first. Prints one line, or one JSON object
with --json. A progress bar is shown on a terminal.";

const BENCH_EXAMPLES: &str = "\
Examples:
  castlog bench --role subscriber --count 1000000 --size 64     # on host 2
  castlog bench --role publisher  --count 1000000 --size 64     # on host 1
  castlog bench --role pong                                     # on host 2
  castlog bench --role ping --count 10000 --size 32             # on host 1
  castlog bench --raw --role subscriber --bind 0.0.0.0:7600 --group 239.255.9.9 --size 1024
  castlog bench --raw --role publisher --peer 239.255.9.9:7600 --interface 10.77.0.1 --size 1024";

const DEMO_LONG: &str = "\
Starts two castlogd daemons on this host on the embedded default netconf
(loopback multicast 239.255.77.1:7400 on 127.0.0.1), each with its own data
directory and socket under a temporary directory; publishes records on one
(sync), shows a live subscriber on the other receiving them over multicast,
then a late subscriber replaying from an offset, and the counters. Everything
is removed at the end. castlogd must be next to castlog (cargo build builds
both).

Example:
  cargo run --release --bin castlog -- demo";

#[derive(Debug, Args)]
struct PubArgs {
    /// Topic name, e.g. md.prices.AAPL
    topic: String,
    /// Key of every record (routing and partitioning hint)
    #[arg(long)]
    key: Option<String>,
    /// How the daemon answers each record
    #[arg(long, value_enum, default_value_t = PubMode::Async)]
    mode: PubMode,
    /// Sync: how long each record may wait for acknowledgements; async: how
    /// long to wait for the next answer at the end
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    timeout: f64,
    /// Record values; none: one record per line of standard input
    values: Vec<OsString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PubMode {
    Oneway,
    Async,
    Sync,
}

#[derive(Debug, Args)]
struct SubArgs {
    /// Exact topic, prefix.* or *
    pattern: String,
    /// earliest, latest, committed or an offset [default: committed with --group, else latest]
    #[arg(long, value_parser = parse_from)]
    from: Option<StartFrom>,
    /// Consumer group to join
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// How the group's members share records [default: clustering with --group, else broadcast]
    #[arg(long, value_enum)]
    mode: Option<SubMode>,
    /// Stop after N records
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop after SECONDS without a record
    #[arg(long, value_name = "SECONDS")]
    idle_timeout: Option<f64>,
    /// One JSON object per line
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SubMode {
    Clustering,
    Broadcast,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// netconf files to validate
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct TopArgs {
    /// Seconds between screens
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    interval: f64,
    /// Stop after N screens [default: run until Ctrl-C]
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

#[derive(Debug, Args)]
struct StatsArgs {
    /// Print the daemon's JSON document as it is
    #[arg(long)]
    json: bool,
}

/// Why the command stopped early.
#[derive(Debug)]
enum Failure {
    Client(client::Error),
    /// Standard output went away (e.g. `| head`): not an error.
    OutputClosed,
    Output(io::Error),
    /// Some records were refused; already reported on stderr.
    Refused {
        failed: u64,
        total: u64,
        code: u8,
    },
}

impl From<client::Error> for Failure {
    fn from(e: client::Error) -> Failure {
        Failure::Client(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure::OutputClosed
        } else {
            Failure::Output(e)
        }
    }
}

fn main() -> ExitCode {
    env_logger::init();
    let cli = Cli::parse();
    let socket = || cli.socket.clone().unwrap_or_else(default_socket);
    let result = match cli.command {
        Command::Top(args) => stats_table::run_top(&socket(), &args),
        Command::Pub(args) => run_pub(&socket(), args),
        Command::Sub(args) => run_sub(&socket(), args),
        Command::Stats(args) => run_stats(&socket(), args),
        Command::Groups(args) => run_groups(&socket(), args),
        Command::Check(args) => return run_check(&args),
        Command::Bench(args) => {
            return match bench::run(&socket(), &args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("castlog bench: {e}");
                    ExitCode::from(exit::FAILED)
                }
            }
        }
        Command::Decode { file, json } => return run_decode(&file, json),
        Command::Demo => {
            return match demo::run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("castlog demo: {e}");
                    ExitCode::from(exit::FAILED)
                }
            }
        }
    };
    match result {
        Ok(()) | Err(Failure::OutputClosed) => ExitCode::SUCCESS,
        Err(Failure::Client(e)) => {
            eprintln!("castlog: {e}");
            ExitCode::from(client_exit_code(&e))
        }
        Err(Failure::Output(e)) => {
            eprintln!("castlog: cannot write output: {e}");
            ExitCode::from(exit::FAILED)
        }
        Err(Failure::Refused {
            failed,
            total,
            code,
        }) => {
            eprintln!("castlog: {failed} of {total} records were not accepted");
            ExitCode::from(code)
        }
    }
}

fn client_exit_code(e: &client::Error) -> u8 {
    match e {
        client::Error::DaemonNotRunning { .. } => exit::DAEMON_NOT_RUNNING,
        client::Error::Timeout { .. } => exit::TIMEOUT,
        client::Error::InvalidArgument { .. } => exit::USAGE,
        _ => exit::FAILED,
    }
}

/// The socket when neither --socket nor $CASTLOG_SOCKET is given: the
/// embedded default node's, resolved by netconf as castlogd resolves it.
fn default_socket() -> PathBuf {
    if let Some(p) = std::env::var_os("CASTLOG_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let conf = NetConf::embedded_default();
    let host = hostname();
    let xdg = std::env::var_os("XDG_RUNTIME_DIR");
    conf.node
        .socket_path(conf.node.name_or(&host), xdg.as_deref())
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; gethostname NUL-terminates
    // or truncates within that length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_owned();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn parse_from(s: &str) -> Result<StartFrom, String> {
    match s {
        "earliest" => Ok(StartFrom::Earliest),
        "latest" => Ok(StartFrom::Latest),
        "committed" => Ok(StartFrom::Committed),
        n => n
            .parse::<u64>()
            .map(|o| StartFrom::Offset(Offset(o)))
            .map_err(|_| {
                format!("expected earliest, latest, committed or an offset (a number), got {n:?}")
            }),
    }
}

fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
}

// ---------------------------------------------------------------------------
// pub

/// Counts refused records and reports the first few on stderr.
#[derive(Debug, Default)]
struct Tally {
    total: u64,
    failed: u64,
    worst: u8,
}

impl Tally {
    const REPORTED: u64 = 10;

    fn refuse(&mut self, record: u64, e: &client::Error) {
        self.failed += 1;
        self.worst = self.worst.max(client_exit_code(e));
        if self.failed <= Self::REPORTED {
            eprintln!("castlog: record {record} not accepted: {e}");
        } else if self.failed == Self::REPORTED + 1 {
            eprintln!("castlog: (further refusals not shown)");
        }
    }

    fn finish(self) -> Result<(), Failure> {
        if self.failed == 0 {
            Ok(())
        } else {
            Err(Failure::Refused {
                failed: self.failed,
                total: self.total,
                code: self.worst.max(exit::FAILED),
            })
        }
    }
}

/// Whether an error concerns one record (go on with the next) or the
/// connection (stop).
fn is_per_record(e: &client::Error) -> bool {
    matches!(
        e,
        client::Error::UnknownTopicRule { .. }
            | client::Error::RecordTooLarge { .. }
            | client::Error::KeyTooLarge { .. }
            | client::Error::Timeout { .. }
            | client::Error::Backpressure { .. }
            | client::Error::Log { .. }
            | client::Error::Rejected { .. }
    )
}

fn run_pub(socket: &std::path::Path, args: PubArgs) -> Result<(), Failure> {
    let mut client = Client::connect(socket)?;
    let key = args.key.as_deref().map(str::as_bytes);
    let timeout = seconds(args.timeout);
    let mut publisher = Publisher {
        client: &mut client,
        topic: &args.topic,
        key,
        mode: args.mode,
        timeout,
        tally: Tally::default(),
        first_id: None,
        out: BufWriter::new(io::stdout().lock()),
    };
    if args.values.is_empty() {
        let mut input = BufReader::with_capacity(1 << 20, io::stdin().lock());
        let mut line = Vec::with_capacity(4096);
        loop {
            line.clear();
            if !input.buffer().contains(&b'\n') {
                // The next read may block (a slow pipe, `tail -F`): send what
                // is batched first, so records never wait for later input.
                publisher.client.flush()?;
            }
            if input.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            publisher.publish(&line)?;
        }
    } else {
        for value in &args.values {
            publisher.publish(value.as_bytes())?;
        }
    }
    publisher.finish()
}

struct Publisher<'a, W: Write> {
    client: &'a mut Client,
    topic: &'a str,
    key: Option<&'a [u8]>,
    mode: PubMode,
    timeout: Duration,
    tally: Tally,
    /// Request id of the first async record, to number refused records.
    first_id: Option<u64>,
    out: W,
}

impl<W: Write> Publisher<'_, W> {
    fn publish(&mut self, value: &[u8]) -> Result<(), Failure> {
        let record = self.tally.total;
        self.tally.total += 1;
        let result = match self.mode {
            PubMode::Oneway => self.client.publish_oneway(self.topic, self.key, value),
            PubMode::Async => match self.client.publish_async(self.topic, self.key, value) {
                Ok(id) => {
                    self.first_id.get_or_insert(id);
                    if record % 4096 == 4095 {
                        // Keep memory flat on long inputs.
                        let done = self.client.poll_completions()?;
                        self.count_completions(done);
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            },
            PubMode::Sync => {
                match self
                    .client
                    .publish_sync(self.topic, self.key, value, self.timeout)
                {
                    Ok(offset) => {
                        writeln!(self.out, "{offset}")?;
                        self.out.flush()?;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if is_per_record(&e) => {
                self.tally.refuse(record, &e);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn count_completions(&mut self, done: Vec<client::Completion>) {
        for c in done {
            if let Err(e) = &c.result {
                let record = c.request_id - self.first_id.unwrap_or(c.request_id);
                self.tally.refuse(record, e);
            }
        }
    }

    fn finish(mut self) -> Result<(), Failure> {
        match self.mode {
            PubMode::Oneway => {
                self.client.flush()?;
                // The daemon handled everything sent before the pong.
                self.client.ping()?;
            }
            PubMode::Async => {
                while self.client.pending_completions() > 0 {
                    let done = self.client.wait_completions(self.timeout)?;
                    if done.is_empty() && self.client.pending_completions() > 0 {
                        return Err(client::Error::Timeout {
                            waiting_for: Vec::new(),
                        }
                        .into());
                    }
                    self.count_completions(done);
                }
            }
            PubMode::Sync => {}
        }
        self.out.flush()?;
        self.tally.finish()
    }
}

// ---------------------------------------------------------------------------
// sub

fn run_sub(socket: &std::path::Path, args: SubArgs) -> Result<(), Failure> {
    let mut client = Client::connect(socket)?;
    let from = args.from.unwrap_or(if args.group.is_some() {
        StartFrom::Committed
    } else {
        StartFrom::Latest
    });
    let mode = match (args.mode, &args.group) {
        (Some(SubMode::Clustering), _) | (None, Some(_)) => ConsumeMode::Clustering,
        (Some(SubMode::Broadcast), _) | (None, None) => ConsumeMode::Broadcast,
    };
    client.subscribe(&args.pattern, from, args.group.as_deref(), mode)?;
    let idle = args.idle_timeout.map(seconds);
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    // Next offset to commit per (topic, source), for --group.
    let mut progress: HashMap<(std::sync::Arc<str>, NodeId), Offset> = HashMap::new();
    let mut delivered = 0u64;
    let bar = replay_progress(from, args.count);
    while args.count.is_none_or(|n| delivered < n) {
        let message = match client.try_next_message() {
            Some(m) => Some(m),
            None => {
                // About to block: show what we have, then record progress.
                out.flush()?;
                commit_progress(&mut client, args.group.as_deref(), &mut progress)?;
                client.next_message(idle.unwrap_or(Duration::from_secs(3600)))?
            }
        };
        match message {
            Some(Message::Record(r)) => {
                if args.json {
                    write_record_json(&mut out, &r)?;
                } else {
                    out.write_all(&r.value)?;
                    out.write_all(b"\n")?;
                }
                if args.group.is_some() {
                    progress.insert((r.topic, r.source), r.offset.next());
                }
                delivered += 1;
                if delivered % 1024 == 0 {
                    bar.set_position(delivered);
                }
            }
            Some(Message::Gap(g)) => {
                bar.suspend(|| {
                    eprintln!(
                        "castlog: gap topic={} source={} offsets {}..{} will not arrive ({})",
                        g.topic,
                        g.source,
                        g.from,
                        g.to,
                        g.reason.as_str()
                    );
                });
                if args.json {
                    write_gap_json(&mut out, &g)?;
                }
            }
            None if idle.is_some() => break,
            None => {}
        }
    }
    bar.finish_and_clear();
    out.flush()?;
    commit_progress(&mut client, args.group.as_deref(), &mut progress)?;
    Ok(())
}

/// A progress line on standard error for a subscription that starts in the
/// past (a replay), only when standard error is a terminal: records so far
/// and their rate (or a bar, with --count).
fn replay_progress(from: StartFrom, count: Option<u64>) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if matches!(from, StartFrom::Latest) || !io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let (bar, template) = match count {
        Some(n) => (
            indicatif::ProgressBar::new(n),
            "{bar:40} {pos}/{len} records {per_sec} {eta}",
        ),
        None => (
            indicatif::ProgressBar::new_spinner(),
            "{spinner} {pos} records {per_sec}",
        ),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn commit_progress(
    client: &mut Client,
    group: Option<&str>,
    progress: &mut HashMap<(std::sync::Arc<str>, NodeId), Offset>,
) -> Result<(), client::Error> {
    let Some(group) = group else {
        return Ok(());
    };
    for ((topic, source), offset) in progress.drain() {
        client.commit(group, &topic, source, offset)?;
    }
    Ok(())
}

fn write_json_str(out: &mut impl Write, s: &str) -> io::Result<()> {
    serde_json::to_writer(&mut *out, s).map_err(io::Error::from)
}

/// Writes `"name":"text"` when `bytes` is UTF-8, else `"name_base64":"..."`
/// (for the key, also `"key":null` so the field is always there).
fn write_bytes_field(
    out: &mut impl Write,
    name: &str,
    bytes: &[u8],
    null_key: bool,
) -> io::Result<()> {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            write!(out, ",\"{name}\":")?;
            write_json_str(out, text)
        }
        Err(_) => {
            if null_key {
                write!(out, ",\"{name}\":null")?;
            }
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            write!(out, ",\"{name}_base64\":\"{encoded}\"")
        }
    }
}

fn write_record_json(out: &mut impl Write, r: &Delivery) -> io::Result<()> {
    out.write_all(b"{\"topic\":")?;
    write_json_str(out, &r.topic)?;
    write!(out, ",\"source\":\"{}\"", r.source)?;
    if let Some(name) = &r.source_name {
        out.write_all(b",\"source_name\":")?;
        write_json_str(out, name)?;
    }
    write!(
        out,
        ",\"offset\":{},\"timestamp\":{}",
        r.offset, r.timestamp_ms
    )?;
    if r.key.is_empty() {
        out.write_all(b",\"key\":null")?;
    } else {
        write_bytes_field(out, "key", &r.key, true)?;
    }
    write_bytes_field(out, "value", &r.value, false)?;
    out.write_all(b"}\n")
}

fn write_gap_json(out: &mut impl Write, g: &Gap) -> io::Result<()> {
    out.write_all(b"{\"gap\":{\"topic\":")?;
    write_json_str(out, &g.topic)?;
    writeln!(
        out,
        ",\"source\":\"{}\",\"from\":{},\"to\":{},\"reason\":\"{}\"}}}}",
        g.source,
        g.from,
        g.to,
        g.reason.as_str()
    )
}

// ---------------------------------------------------------------------------
// stats

fn run_stats(socket: &std::path::Path, args: StatsArgs) -> Result<(), Failure> {
    let mut client = Client::connect(socket)?;
    let json = client.stats_json()?;
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(out, "{json}")?;
        return Ok(());
    }
    let value = stats_table::parse_stats(&json)?;
    write!(
        out,
        "{}",
        stats_table::render(&value, None, stats_table::terminal_width())
    )?;
    Ok(())
}

fn run_groups(socket: &std::path::Path, args: groups::GroupsArgs) -> Result<(), Failure> {
    let mut client = Client::connect(socket)?;
    let json = client.stats_json()?;
    let value: serde_json::Value =
        serde_json::from_str(&json).map_err(|e| client::Error::Rejected {
            message: format!("daemon sent stats that are not JSON: {e}"),
        })?;
    let selected = groups::select(&value, args.group.as_deref());
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::Value::Array(selected))?;
    } else {
        groups::print(&mut out, &selected)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// check

fn run_check(args: &CheckArgs) -> ExitCode {
    let errors = netconf::check_files(&args.files);
    for e in &errors {
        eprintln!("{e}");
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::USAGE)
    }
}

// ---- castlog decode (owner: ops; the logic is in castlog::decode) ----------

const DECODE_LONG: &str = "\
Reads a packet capture and prints one line per castlog frame: time, packet
number, source, destination (the group address for multicast and broadcast),
frame type, flags, node, session, then by type: seq, topics with offset spans
and record counts (DATA), ranges (NAK, NCF, UNRECOVERABLE), sizes. Frames that
fail their CRC or are malformed are printed with INVALID and the reason; UDP
that is not castlog is skipped and counted. Frames of authenticated groups
show their key id; the tag is not checked (no key is read).

Reads classic pcap (either byte order, micro- or nanosecond timestamps, as
`tcpdump -w` writes) and pcapng (as `tshark -w` and Wireshark write), with
Ethernet, Linux cooked (`-i any`, SLL and SLL2), loopback or raw IP link
layers. IP fragments are counted, not reassembled.
The counts of what was skipped go to standard error.";

const DECODE_EXAMPLES: &str = "\
Examples:
  tcpdump -i any -w cap.pcap udp port 7400     # capture on a host
  castlog decode cap.pcap
  castlog decode --json cap.pcap | jq 'select(.frame_type == \"nak\")'";

fn run_decode(file: &std::path::Path, json: bool) -> ExitCode {
    let capture = match castlog::decode::decode_file(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("castlog decode: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let mut out = BufWriter::new(io::stdout().lock());
    match castlog::decode::write_frames(&capture.frames, json, &mut out) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("castlog decode: cannot write output: {e}");
            return ExitCode::from(exit::FAILED);
        }
    }
    eprintln!("castlog decode: {}", capture.stats);
    ExitCode::SUCCESS
}
