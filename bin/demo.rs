//! `castlog demo`: the whole product in one command, on one host. Two
//! daemons on the embedded default netconf (loopback multicast), run as
//! threads of this process, stand in for two hosts: a publisher on `demo-a`,
//! a live subscriber and a late replay on `demo-b`. They talk to each other
//! over real UDP multicast and to the demo over their Unix sockets, exactly
//! as separate castlogd processes would.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use castlog::client::{Client, ConsumeMode, Message, StartFrom};
use castlog::daemon::{Daemon, Overrides};
use castlog::netconf::NetConf;

const TOPIC: &str = "demo.prices";
const RECORDS: u64 = 10;

/// A castlogd running in a thread of this process: the same `Daemon` the
/// castlogd binary runs, so the demo needs nothing but this binary.
struct DemoDaemon {
    name: &'static str,
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for DemoDaemon {
    fn drop(&mut self) {
        // As on SIGTERM: the daemon flushes its log and says goodbye.
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start(dir: &Path, name: &'static str) -> Result<DemoDaemon, String> {
    let socket = dir.join(format!("{name}.sock"));
    let overrides = Overrides {
        name: Some(name.to_owned()),
        data_dir: Some(dir.join(name)),
        socket: Some(socket.clone()),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("castlogd-{name}"))
        .spawn(move || {
            let mut daemon = match Daemon::new(NetConf::embedded_default(), overrides) {
                Ok(d) => {
                    let _ = tx.send(Ok(()));
                    d
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            if let Err(e) = daemon.run(flag) {
                eprintln!("castlogd {name}: {e}");
            }
        })
        .map_err(|e| format!("cannot start a daemon thread: {e}"))?;
    let d = DemoDaemon {
        name,
        socket,
        stop,
        thread: Some(thread),
    };
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("castlogd {name} did not start: {e}")),
        Err(_) => return Err(format!("castlogd {name} did not start within 10s")),
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if Client::connect(&d.socket).is_ok() {
            println!("  started castlogd {name} (socket {})", d.socket.display());
            return Ok(d);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "castlogd {name} did not open its socket {}",
        d.socket.display()
    ))
}

fn print_message(prefix: &str, m: &Message) {
    match m {
        Message::Record(d) => println!(
            "  {prefix} {} offset={} from={} key={} value={}",
            d.topic,
            d.offset,
            d.source_name
                .as_deref()
                .map_or_else(|| d.source.to_string(), str::to_string),
            String::from_utf8_lossy(&d.key),
            String::from_utf8_lossy(&d.value)
        ),
        Message::Gap(g) => println!(
            "  {prefix} GAP {} offsets {}..{} from {} ({:?})",
            g.topic, g.from, g.to, g.source, g.reason
        ),
    }
}

fn collect(client: &mut Client, prefix: &str, want: u64) -> Result<u64, String> {
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while got < want && Instant::now() < deadline {
        match client
            .next_message(Duration::from_millis(200))
            .map_err(|e| e.to_string())?
        {
            Some(m) => {
                print_message(prefix, &m);
                if matches!(m, Message::Record(_)) {
                    got += 1;
                }
            }
            None => continue,
        }
    }
    Ok(got)
}

pub fn run() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("castlog-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let result = run_in(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(dir: &Path) -> Result<(), String> {
    println!("castlog demo: two daemons on loopback multicast (the embedded default netconf)");
    let a = start(dir, "demo-a")?;
    let b = start(dir, "demo-b")?;

    let mut live = Client::connect(&b.socket).map_err(|e| e.to_string())?;
    live.subscribe("demo.*", StartFrom::Latest, None, ConsumeMode::Broadcast)
        .map_err(|e| e.to_string())?;
    // Give demo-b a moment to hear demo-a's session start.
    std::thread::sleep(Duration::from_millis(300));

    println!("\n1. publish {RECORDS} records on {} (sync: each returns once in the log and acknowledged)", a.name);
    let mut publisher = Client::connect(&a.socket).map_err(|e| e.to_string())?;
    for i in 0..RECORDS {
        let value = format!("AAPL {}.{:02}", 190 + i, (i * 7) % 100);
        let offset = publisher
            .publish_sync(
                TOPIC,
                Some(b"AAPL"),
                value.as_bytes(),
                Duration::from_secs(5),
            )
            .map_err(|e| format!("publish failed: {e}"))?;
        println!("  published offset={offset} value={value}");
    }

    println!(
        "\n2. a live subscriber on {} receives them over multicast",
        b.name
    );
    let got = collect(&mut live, "live  ", RECORDS)?;
    if got != RECORDS {
        return Err(format!(
            "the live subscriber got {got} of {RECORDS} records"
        ));
    }

    println!(
        "\n3. a late subscriber on {} replays from offset 5 of {}'s log",
        b.name, a.name
    );
    let mut late = Client::connect(&b.socket).map_err(|e| e.to_string())?;
    late.subscribe(
        TOPIC,
        StartFrom::Offset(castlog::client::Offset(5)),
        None,
        ConsumeMode::Broadcast,
    )
    .map_err(|e| e.to_string())?;
    let got = collect(&mut late, "replay", RECORDS - 5)?;
    if got != RECORDS - 5 {
        return Err(format!("the replay got {got} of {} records", RECORDS - 5));
    }

    println!("\n4. counters of {} (castlog stats):", b.name);
    let stats = late.stats_json().map_err(|e| e.to_string())?;
    let doc: serde_json::Value = serde_json::from_str(&stats).map_err(|e| e.to_string())?;
    for (section, key) in [
        ("proto", "data_frames_received"),
        ("proto", "records_delivered"),
        ("proto", "naks_sent"),
        ("daemon", "records_stored"),
        ("log", "records_appended"),
        ("ipc", "frames_sent"),
    ] {
        println!("  {section}.{key} = {}", doc[section][key]);
    }
    println!("  (everything: castlog stats --json)");
    println!(
        "\ndemo complete: published {RECORDS}, delivered live {RECORDS}, replayed {}",
        RECORDS - 5
    );
    drop(b);
    drop(a);
    Ok(())
}
