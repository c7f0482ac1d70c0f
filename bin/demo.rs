//! `castlog demo`: the whole product in one command, on one host. Two
//! daemons on the embedded default netconf (loopback multicast) stand in for
//! two hosts: a publisher on `demo-a`, a live subscriber and a late replay on
//! `demo-b`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use castlog::client::{Client, ConsumeMode, Message, StartFrom};

const TOPIC: &str = "demo.prices";
const RECORDS: u64 = 10;

struct Daemon {
    name: &'static str,
    child: Child,
    socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM: the daemon flushes its log and says goodbye to its group.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn castlogd_path() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own path: {e}"))?;
    let path = exe.with_file_name("castlogd");
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "castlogd not found next to castlog at {} (build both: cargo build --release)",
            path.display()
        ))
    }
}

fn start(castlogd: &Path, dir: &Path, name: &'static str) -> Result<Daemon, String> {
    let data = dir.join(name);
    let socket = dir.join(format!("{name}.sock"));
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
    let child = Command::new(castlogd)
        .args(["--name", name, "--data-dir"])
        .arg(&data)
        .arg("--socket")
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start castlogd: {e}"))?;
    let d = Daemon {
        name,
        child,
        socket,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if Client::connect(&d.socket).is_ok() {
            println!("  started castlogd {name} (socket {})", d.socket.display());
            return Ok(d);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "castlogd {name} did not open its socket; see {}",
        dir.join(format!("{name}.log")).display()
    ))
}

fn print_message(prefix: &str, m: &Message) {
    match m {
        Message::Record(d) => println!(
            "  {prefix} {} offset={} from={} key={} value={}",
            d.topic,
            d.offset,
            d.source_name
                .clone()
                .unwrap_or_else(|| d.source.to_string()),
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
    let castlogd = castlogd_path()?;
    let dir = std::env::temp_dir().join(format!("castlog-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let result = run_in(&castlogd, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(castlogd: &Path, dir: &Path) -> Result<(), String> {
    println!("castlog demo: two daemons on loopback multicast (the embedded default netconf)");
    let a = start(castlogd, dir, "demo-a")?;
    let b = start(castlogd, dir, "demo-b")?;

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
    println!("  {}", stats.chars().take(400).collect::<String>());
    println!(
        "\ndemo complete: published {RECORDS}, delivered live {RECORDS}, replayed {}",
        RECORDS - 5
    );
    drop(b);
    drop(a);
    Ok(())
}
