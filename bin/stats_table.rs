//! The terminal form of the daemon's stats document, for `castlog stats` and
//! `castlog top`: the node on one line, then the lists (groups, peers,
//! topics, consumer groups) as tables, then each room's counters in columns,
//! with a rate per second beside each when a previous document is given.

use std::fmt::Write as _;
use std::io::{self, Write as _};

use castlog::client::{self, Client};
use serde_json::{Map, Value};

use super::{seconds, Failure, TopArgs};

/// Sections shown first, in this order; any other follows by name.
const ORDER: &[&str] = &[
    "node",
    "net_groups",
    "peers",
    "topics",
    "groups",
    "group_stats",
    "daemon",
    "proto",
    "log",
    "ipc",
];

/// Columns of list tables shown first, in this order; others follow by name.
const COLUMN_ORDER: &[&str] = &[
    "name",
    "member",
    "group",
    "topic",
    "source_name",
    "source",
    "node",
    "kind",
    "address",
    "addr",
];

/// Renders `doc` for a terminal `width` columns wide. With `previous` (the
/// document `seconds` earlier), each counter gets its rate per second.
pub fn render(doc: &Value, previous: Option<(&Value, f64)>, width: usize) -> String {
    let mut out = String::new();
    let Value::Object(sections) = doc else {
        return out;
    };
    let mut names: Vec<&String> = sections.keys().collect();
    names.sort_by_key(|n| {
        (
            ORDER.iter().position(|o| o == n).unwrap_or(ORDER.len()),
            n.to_string(),
        )
    });
    for name in names {
        let Some(value) = sections.get(name) else {
            continue;
        };
        let before = previous.and_then(|(p, s)| Some((p.get(name)?, s)));
        match value {
            Value::Object(fields) if name == "node" => node_line(&mut out, fields),
            Value::Object(fields) => counters(&mut out, name, fields, before, width),
            Value::Array(rows) => list(&mut out, name, rows),
            other => {
                let _ = writeln!(out, "{name}  {}\n", scalar(other));
            }
        }
    }
    out
}

fn node_line(out: &mut String, fields: &Map<String, Value>) {
    let mut parts = Vec::new();
    for key in ["name", "id", "listen"] {
        if let Some(v) = fields.get(key) {
            parts.push(format!("{key} {}", scalar(v)));
        }
    }
    for (k, v) in fields {
        if !["name", "id", "listen"].contains(&k.as_str()) {
            parts.push(format!("{k} {}", scalar(v)));
        }
    }
    let _ = writeln!(out, "NODE  {}\n", parts.join("   "));
}

/// One room's counters, laid out in as many columns as fit.
fn counters(
    out: &mut String,
    section: &str,
    fields: &Map<String, Value>,
    previous: Option<(&Value, f64)>,
    width: usize,
) {
    let cells: Vec<(String, String, String)> = fields
        .iter()
        .map(|(k, v)| {
            let rate = previous
                .and_then(|(p, secs)| {
                    let (a, b) = (p.get(k)?.as_f64()?, v.as_f64()?);
                    (secs > 0.0 && b >= a).then(|| format!("{}/s", rate(b - a, secs)))
                })
                .unwrap_or_default();
            (k.clone(), scalar(v), rate)
        })
        .collect();
    let name_w = cells.iter().map(|c| c.0.len()).max().unwrap_or(0);
    let value_w = cells.iter().map(|c| c.1.len()).max().unwrap_or(0);
    let rate_w = cells.iter().map(|c| c.2.len()).max().unwrap_or(0);
    let cell_w = name_w + 2 + value_w + if rate_w > 0 { 1 + rate_w } else { 0 } + 4;
    let columns = (width / cell_w.max(1)).max(1);
    let rows = cells.len().div_ceil(columns);
    let _ = writeln!(out, "{}", section.to_uppercase());
    for r in 0..rows {
        let mut line = String::from("  ");
        for c in 0..columns {
            // Column-major, so names read down each column in order.
            let Some((name, value, rate)) = cells.get(c * rows + r) else {
                continue;
            };
            let _ = write!(line, "{name:<name_w$}  {value:>value_w$}");
            if rate_w > 0 {
                let _ = write!(line, " {rate:>rate_w$}");
            }
            line.push_str("    ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out.push('\n');
}

/// A list of objects (groups, peers, topics) as a table with a header.
fn list(out: &mut String, section: &str, rows: &[Value]) {
    let _ = writeln!(out, "{}", section.to_uppercase());
    let objects: Vec<&Map<String, Value>> = rows.iter().filter_map(Value::as_object).collect();
    if objects.is_empty() {
        let _ = writeln!(out, "  (none)\n");
        return;
    }
    let mut columns: Vec<&String> = Vec::new();
    let mut nested: Vec<&String> = Vec::new();
    for o in &objects {
        for (k, v) in o.iter() {
            let is_list = matches!(v, Value::Array(a) if a.iter().any(Value::is_object));
            if is_list && !nested.contains(&k) {
                nested.push(k);
            } else if !is_list && !columns.contains(&k) {
                columns.push(k);
            }
        }
    }
    columns.retain(|c| !nested.contains(c));
    columns.sort_by_key(|c| {
        (
            COLUMN_ORDER
                .iter()
                .position(|o| o == c)
                .unwrap_or(COLUMN_ORDER.len()),
            c.to_string(),
        )
    });
    let cells: Vec<Vec<String>> = objects
        .iter()
        .map(|o| {
            columns
                .iter()
                .map(|c| o.get(*c).map(scalar).unwrap_or_default())
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .filter_map(|r| r.get(i).map(String::len))
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let numeric: Vec<bool> = (0..columns.len())
        .map(|i| {
            objects
                .iter()
                .all(|o| o.get(columns[i].as_str()).is_none_or(Value::is_number))
        })
        .collect();
    let mut line = String::from("  ");
    for (i, c) in columns.iter().enumerate() {
        let w = widths[i];
        if numeric[i] {
            let _ = write!(line, "{c:>w$}  ");
        } else {
            let _ = write!(line, "{c:<w$}  ");
        }
    }
    let _ = writeln!(out, "{}", line.trim_end());
    for row in &cells {
        let mut line = String::from("  ");
        for (i, v) in row.iter().enumerate() {
            let w = widths[i];
            if numeric[i] {
                let _ = write!(line, "{v:>w$}  ");
            } else {
                let _ = write!(line, "{v:<w$}  ");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out.push('\n');
    // Lists inside the rows (a consumer group's members and partitions):
    // one table each, every row led by its parent's string fields.
    for key in nested {
        let rows: Vec<Value> = objects
            .iter()
            .flat_map(|o| {
                let parent: Map<String, Value> = o
                    .iter()
                    .filter(|(_, v)| v.is_string())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                o.get(key.as_str())
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object)
                    .map(move |child| {
                        let mut row = parent.clone();
                        row.extend(child.clone());
                        Value::Object(row)
                    })
            })
            .collect();
        list(out, &format!("{section} {key}"), &rows);
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        Value::Bool(b) => (if *b { "yes" } else { "no" }).to_string(),
        Value::Array(_) | Value::Object(_) => v.to_string(),
        Value::Number(n) => n.to_string(),
    }
}

fn rate(delta: f64, secs: f64) -> String {
    let r = delta / secs;
    if r >= 1e6 {
        format!("{:.1}M", r / 1e6)
    } else if r >= 1e4 {
        format!("{:.1}k", r / 1e3)
    } else if r >= 10.0 || r == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// The terminal's width in columns (`$COLUMNS`, else the tty's, else 100).
pub fn terminal_width() -> usize {
    if let Some(w) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
    {
        return w.max(40);
    }
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we own.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if rc == 0 && ws.ws_col > 0 {
        usize::from(ws.ws_col).max(40)
    } else {
        100
    }
}

pub fn parse_stats(json: &str) -> Result<serde_json::Value, Failure> {
    serde_json::from_str(json).map_err(|e| {
        client::Error::Rejected {
            message: format!("daemon sent stats that are not JSON: {e}"),
        }
        .into()
    })
}

/// `castlog top`: the stats table redrawn every interval, with rates.
pub fn run_top(socket: &std::path::Path, args: &TopArgs) -> Result<(), Failure> {
    let mut client = Client::connect(socket)?;
    let interval = seconds(args.interval.max(0.1));
    let mut previous: Option<(serde_json::Value, std::time::Instant)> = None;
    let mut screens = 0u64;
    loop {
        let value = parse_stats(&client.stats_json()?)?;
        let now = castlog::daemon::clock::now();
        let before = previous
            .as_ref()
            .map(|(v, t)| (v, now.duration_since(*t).as_secs_f64()));
        let table = render(&value, before, terminal_width());
        let mut out = io::stdout().lock();
        // Home the cursor and clear the screen, then draw.
        write!(
            out,
            "\x1b[H\x1b[2Jcastlog top  every {:.1}s  (Ctrl-C exits)\n\n{table}",
            interval.as_secs_f64()
        )?;
        out.flush()?;
        previous = Some((value, now));
        screens += 1;
        if args.count.is_some_and(|n| screens >= n) {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(published: u64) -> Value {
        serde_json::json!({
            "node": {"name": "h1", "id": "00ff", "listen": "127.0.0.1:1"},
            "daemon": {"records_published": published, "gaps_seen": 0},
            "topics": [{"topic": "t.a", "source": "00ff", "next_offset": published}],
        })
    }

    #[test]
    fn sections_come_in_a_fixed_order_with_node_first() {
        let text = render(&doc(3), None, 100);
        let node = text.find("NODE  name h1   id 00ff").unwrap();
        let topics = text.find("TOPICS").unwrap();
        let daemon = text.find("DAEMON").unwrap();
        assert!(node < topics && topics < daemon, "{text}");
    }

    #[test]
    fn lists_are_tables_with_a_header_and_right_aligned_numbers() {
        let text = render(&doc(12), None, 100);
        assert!(
            text.contains("  topic  source  next_offset\n  t.a    00ff             12\n"),
            "{text}"
        );
    }

    #[test]
    fn lists_inside_rows_get_their_own_table_led_by_the_parent() {
        let doc = serde_json::json!({"groups": [{"group": "workers", "epoch": 2,
            "partitions": [{"topic": "jobs", "partition": 0, "lag": 5}]}]});
        let text = render(&doc, None, 100);
        assert!(
            text.contains("GROUPS\n  group    epoch\n  workers      2\n"),
            "{text}"
        );
        assert!(text.contains("GROUPS PARTITIONS\n  group    topic  lag  partition\n  workers  jobs     5          0\n"), "{text}");
    }

    #[test]
    fn counters_get_a_rate_from_the_previous_document() {
        let text = render(&doc(30), Some((&doc(10), 2.0)), 100);
        assert!(text.contains("records_published  30 10/s"), "{text}");
    }
}
