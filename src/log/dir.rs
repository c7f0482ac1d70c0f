//! `LogDir`: the data directory holding one `TopicLog` per (topic, source
//! node), opened lazily and closed least-recently-used to bound file
//! descriptors.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::wire::NodeId;

use super::error::{Error, Result};
use super::retention::{apply_closed, RetentionReport};
use super::{LogConfig, Stats, TopicLog};

/// Longest escaped topic directory name (file systems allow 255 bytes).
const MAX_ESCAPED_TOPIC: usize = 240;

/// A data directory of topic logs: `path/topics/<escaped topic>/<node hex>/`.
///
/// Configuration: `open` takes the default `LogConfig`; `set_config_for`
/// overrides it per topic (the daemon calls it with the netconf rule that
/// matches each topic). `max_open_logs` is read from the default only.
#[derive(Debug)]
pub struct LogDir {
    root: PathBuf,
    default_config: LogConfig,
    per_topic: HashMap<String, LogConfig>,
    known: BTreeSet<(String, NodeId)>,
    /// Open logs by source, then topic (so lookups by `&str` do not allocate).
    open: HashMap<NodeId, HashMap<String, OpenLog>>,
    open_count: usize,
    tick: u64,
    /// Counters of logs already closed, plus directory-level ones.
    closed_stats: Stats,
}

#[derive(Debug)]
struct OpenLog {
    last_used: u64,
    log: TopicLog,
}

impl LogDir {
    /// Opens (creating if needed) a data directory. Lazy: lists the topic and
    /// node directories but opens no segment, so 10,000 logs open quickly.
    pub fn open(path: &Path, config: LogConfig) -> Result<LogDir> {
        let topics = path.join("topics");
        std::fs::create_dir_all(&topics).map_err(|e| Error::io(&topics, "create directory", e))?;
        let mut known = BTreeSet::new();
        let entries = std::fs::read_dir(&topics).map_err(|e| Error::io(&topics, "list", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&topics, "list", e))?;
            let name = entry.file_name();
            let Some(topic) = name.to_str().and_then(unescape_topic) else {
                log::warn!(
                    "ignoring unknown entry in topics directory path={}",
                    entry.path().display()
                );
                continue;
            };
            let topic_dir = entry.path();
            let nodes =
                std::fs::read_dir(&topic_dir).map_err(|e| Error::io(&topic_dir, "list", e))?;
            for node in nodes {
                let node = node.map_err(|e| Error::io(&topic_dir, "list", e))?;
                let parsed = node.file_name().to_str().and_then(parse_node_dir);
                match parsed {
                    Some(id) => {
                        known.insert((topic.clone(), id));
                    }
                    None => log::warn!(
                        "ignoring unknown entry in topic directory path={}",
                        node.path().display()
                    ),
                }
            }
        }
        log::info!(
            "opened log directory path={} logs={}",
            path.display(),
            known.len()
        );
        Ok(LogDir {
            root: path.to_path_buf(),
            default_config: config,
            per_topic: HashMap::new(),
            known,
            open: HashMap::new(),
            open_count: 0,
            tick: 0,
            closed_stats: Stats::default(),
        })
    }

    /// Every (topic, source) log on disk or created since `open`.
    pub fn logs(&self) -> Vec<(String, NodeId)> {
        self.known.iter().cloned().collect()
    }

    /// The logs open now (for reporting; opens nothing).
    pub fn open_log_iter(&self) -> impl Iterator<Item = &TopicLog> {
        self.open.values().flat_map(|m| m.values().map(|o| &o.log))
    }

    /// Whether a log exists for (topic, source), without opening it.
    pub fn contains(&self, topic: &str, source: NodeId) -> bool {
        self.known.contains(&(topic.to_string(), source))
    }

    /// The directory of one log.
    pub fn log_path(&self, topic: &str, source: NodeId) -> Result<PathBuf> {
        Ok(self
            .root
            .join("topics")
            .join(escape_topic(topic)?)
            .join(format!("{:016x}", source.0)))
    }

    /// The log of (topic, source): already open, or opened now (recovering
    /// its last segment), or created empty. May close the least recently used
    /// open log to stay within `max_open_logs`.
    pub fn log(&mut self, topic: &str, source: NodeId) -> Result<&mut TopicLog> {
        self.tick += 1;
        let tick = self.tick;
        let is_open = self
            .open
            .get(&source)
            .is_some_and(|m| m.contains_key(topic));
        if !is_open {
            let dir = self.log_path(topic, source)?;
            let max_open = self.default_config.max_open_logs.max(1);
            while self.open_count >= max_open {
                self.close_least_recently_used();
            }
            let log = TopicLog::open(dir, topic.to_string(), source, self.config_for(topic))?;
            self.known.insert((topic.to_string(), source));
            self.open.entry(source).or_default().insert(
                topic.to_string(),
                OpenLog {
                    last_used: tick,
                    log,
                },
            );
            self.open_count += 1;
        }
        let entry = self
            .open
            .get_mut(&source)
            .and_then(|m| m.get_mut(topic))
            .ok_or_else(|| Error::InvalidTopic {
                topic: topic.to_string(),
                reason: "log vanished from the open table",
            })?;
        entry.last_used = tick;
        Ok(&mut entry.log)
    }

    /// Sets the config of every log of `topic` (open now or opened later).
    /// `max_open_logs` in it is ignored.
    pub fn set_config_for(&mut self, topic: &str, config: LogConfig) {
        for logs in self.open.values_mut() {
            if let Some(open) = logs.get_mut(topic) {
                open.log.set_config(config.clone());
            }
        }
        self.per_topic.insert(topic.to_string(), config);
    }

    /// The config a log of `topic` gets.
    pub fn config_for(&self, topic: &str) -> LogConfig {
        self.per_topic
            .get(topic)
            .cloned()
            .unwrap_or_else(|| self.default_config.clone())
    }

    /// Deletes expired segments in every log, open or not (closed logs are
    /// handled from their directory without opening them). A failing log is
    /// logged and skipped; the first error is returned after the pass.
    pub fn apply_retention(&mut self, now_ms: u64) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        let mut first_err = None;
        let known: Vec<(String, NodeId)> = self.known.iter().cloned().collect();
        for (topic, source) in known {
            let config = self.config_for(&topic);
            if config.retention_ms.is_none() && config.retention_bytes.is_none() {
                continue;
            }
            let result = match self.open.get_mut(&source).and_then(|m| m.get_mut(&topic)) {
                Some(open) => open.log.apply_retention(now_ms),
                None => match self.log_path(&topic, source) {
                    Ok(dir) => apply_closed(
                        &dir,
                        &topic,
                        source,
                        &config,
                        now_ms,
                        &mut self.closed_stats,
                    ),
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(r) => report.merge(r),
                Err(e) => {
                    log::warn!(
                        "retention failed topic={} source={} error={}",
                        topic,
                        source,
                        e
                    );
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Interval fsync tick: every open log whose interval has passed is
    /// fsynced. Returns the first error after trying all.
    pub fn flush(&mut self, now_ms: u64) -> Result<()> {
        let mut first_err = None;
        for logs in self.open.values_mut() {
            for open in logs.values_mut() {
                if let Err(e) = open.log.flush(now_ms) {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Counters of all logs, open and closed.
    pub fn stats(&self) -> Stats {
        let mut s = self.closed_stats.clone();
        for logs in self.open.values() {
            for open in logs.values() {
                s.add(open.log.stats());
            }
        }
        s
    }

    /// Number of logs currently open (each holds one or two descriptors).
    pub fn open_logs(&self) -> usize {
        self.open_count
    }

    fn close_least_recently_used(&mut self) {
        let oldest = self
            .open
            .iter()
            .flat_map(|(node, m)| m.iter().map(move |(t, o)| (o.last_used, *node, t)))
            .min_by_key(|&(used, _, _)| used)
            .map(|(_, node, topic)| (node, topic.clone()));
        let Some((node, topic)) = oldest else {
            self.open_count = 0;
            return;
        };
        if let Some(m) = self.open.get_mut(&node) {
            if let Some(open) = m.remove(&topic) {
                self.closed_stats.add(open.log.stats());
                self.closed_stats.logs_closed += 1;
            }
            if m.is_empty() {
                self.open.remove(&node);
            }
        }
        self.open_count = self.open_count.saturating_sub(1);
    }
}

/// Directory name for a topic: bytes outside `[A-Za-z0-9._-]` and a leading
/// `.` become `%XX` (upper-case hex), so no name is `.`, `..` or contains `/`.
pub fn escape_topic(topic: &str) -> Result<String> {
    if topic.is_empty() {
        return Err(Error::InvalidTopic {
            topic: topic.to_string(),
            reason: "empty",
        });
    }
    let mut out = String::with_capacity(topic.len());
    for (i, b) in topic.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0x0f));
        }
    }
    if out.len() > MAX_ESCAPED_TOPIC {
        return Err(Error::InvalidTopic {
            topic: topic.to_string(),
            reason: "longer than 240 bytes once escaped",
        });
    }
    Ok(out)
}

/// The topic of an escaped directory name; `None` for names `escape_topic`
/// would not produce.
pub fn unescape_topic(name: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(name.len());
    let mut it = name.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hi = from_hex(it.next()?)?;
            let lo = from_hex(it.next()?)?;
            bytes.push(hi << 4 | lo);
        } else {
            bytes.push(b);
        }
    }
    let topic = String::from_utf8(bytes).ok()?;
    (escape_topic(&topic).ok()? == name).then_some(topic)
}

fn hex_digit(v: u8) -> char {
    char::from(b"0123456789ABCDEF"[usize::from(v & 0x0f)])
}

fn from_hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn parse_node_dir(name: &str) -> Option<NodeId> {
    if name.len() != 16 {
        return None;
    }
    u64::from_str_radix(name, 16).ok().map(NodeId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_escape_to_safe_directory_names_and_back() {
        for topic in [
            "md.prices.AAPL",
            "..",
            ".",
            "a/../b",
            "ünï cödé",
            "%41",
            "a b",
            "-x_y.z",
        ] {
            let esc = escape_topic(topic).unwrap();
            assert!(
                esc != "." && esc != ".." && !esc.contains('/'),
                "{topic} -> {esc}"
            );
            assert!(esc
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-%".contains(&b)));
            assert_eq!(unescape_topic(&esc).as_deref(), Some(topic));
        }
        assert_eq!(escape_topic("md.prices.AAPL").unwrap(), "md.prices.AAPL");
        assert_eq!(escape_topic("..").unwrap(), "%2E.");
    }

    #[test]
    fn empty_and_overlong_topics_are_refused() {
        assert!(matches!(escape_topic(""), Err(Error::InvalidTopic { .. })));
        assert!(escape_topic(&"a".repeat(240)).is_ok());
        assert!(matches!(
            escape_topic(&"/".repeat(81)),
            Err(Error::InvalidTopic { .. })
        ));
    }

    #[test]
    fn foreign_directory_names_are_not_topics() {
        assert_eq!(
            unescape_topic("%2e."),
            None,
            "lower-case hex is not canonical"
        );
        assert_eq!(unescape_topic("a%2"), None);
        assert_eq!(unescape_topic(".hidden"), None);
        assert_eq!(unescape_topic("%FF"), None, "not utf-8");
    }
}
