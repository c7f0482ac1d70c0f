//! Parsers of single values: pure functions from one raw TOML value (or
//! string) to a typed value or a reason a user can act on. Also the inverse
//! formatting used in range messages (`64KiB`, `30ms`), and the typo
//! suggestion for unknown keys.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use super::model::{is_valid_topic, mask_u128, mask_u32, Cidr, GroupRef, TopicPattern};
use super::raw::Value;

pub(crate) const KIB: u64 = 1 << 10;
pub(crate) const MIB: u64 = 1 << 20;
pub(crate) const GIB: u64 = 1 << 30;
pub(crate) const TIB: u64 = 1 << 40;
pub(crate) const PIB: u64 = 1 << 50;

pub(crate) const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
pub(crate) const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
pub(crate) const DAY: u64 = 86_400;

pub(crate) fn type_error(expected: &str, got: &Value) -> String {
    match got {
        Value::String(s) => format!("expected {expected}, got a string \"{s}\""),
        Value::Integer(n) => format!("expected {expected}, got an integer {n}"),
        other => format!("expected {expected}, got {}", other.type_name()),
    }
}

pub(crate) fn string(v: &Value) -> Result<&str, String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(type_error("a string", other)),
    }
}

pub(crate) fn path_value(v: &Value) -> Result<PathBuf, String> {
    let s = string(v)?;
    if s.is_empty() {
        Err("expected a path, got an empty string".into())
    } else {
        Ok(PathBuf::from(s))
    }
}

/// A group by name (the portable `useradd` form: 1..=32 of `A-Z a-z 0-9 .
/// _ -`, not starting with `-`) or by numeric id (an integer, or a string
/// of digits). 4294967295 is `(gid_t)-1`, "no change" to `chown`, so it is
/// refused.
pub(crate) fn group_ref(v: &Value) -> Result<GroupRef, String> {
    const ALLOWED: &str =
        "a group name (1..=32 of A-Z a-z 0-9 . _ -, not starting with -) or a gid 0..=4294967294";
    let gid = |n: i64| {
        u32::try_from(n)
            .ok()
            .filter(|g| *g != u32::MAX)
            .ok_or_else(|| format!("expected {ALLOWED}, got {n}"))
    };
    match v {
        Value::Integer(n) => gid(*n).map(GroupRef::Gid),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
            .parse::<i64>()
            .map_err(|_| format!("expected {ALLOWED}, got \"{s}\""))
            .and_then(gid)
            .map(GroupRef::Gid),
        Value::String(s) => {
            let ok = (1..=32).contains(&s.len())
                && !s.starts_with('-')
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if ok {
                Ok(GroupRef::Name(s.clone()))
            } else {
                Err(format!("expected {ALLOWED}, got \"{s}\""))
            }
        }
        other => Err(type_error(ALLOWED, other)),
    }
}

pub(crate) fn boolean(v: &Value) -> Result<bool, String> {
    match v {
        Value::Boolean(b) => Ok(*b),
        other => Err(type_error("true or false", other)),
    }
}

pub(crate) fn int_in(range: RangeInclusive<i64>) -> impl Fn(&Value) -> Result<i64, String> {
    move |v| match v {
        Value::Integer(n) if range.contains(n) => Ok(*n),
        Value::Integer(n) => Err(format!(
            "must be {}..={}, got {n}",
            range.start(),
            range.end()
        )),
        other => Err(type_error(
            &format!("an integer {}..={}", range.start(), range.end()),
            other,
        )),
    }
}

pub(crate) fn one_of<T: Copy>(v: &Value, choices: &[(&str, T)]) -> Result<T, String> {
    let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    let expected = format!("one of {}", names.join(", "));
    let s = string(v).map_err(|_| type_error(&expected, v))?;
    choices
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, t)| *t)
        .ok_or_else(|| format!("must be {expected}, got \"{s}\""))
}

pub(crate) fn socket_addr(v: &Value) -> Result<SocketAddr, String> {
    let s = string(v)?;
    s.parse().map_err(|_| {
        format!("expected IP:PORT such as \"10.1.0.1:7500\" (IPv6: \"[::1]:7500\"), got \"{s}\"")
    })
}

/// A group's IPv4 address with a non-zero port.
pub(crate) fn group_addr(v: &Value) -> Result<SocketAddrV4, String> {
    let s = string(v)?;
    let a: SocketAddrV4 = s
        .parse()
        .map_err(|_| format!("expected IPV4:PORT such as \"239.255.1.1:7400\", got \"{s}\""))?;
    if a.port() == 0 {
        return Err(format!("the port must be 1..=65535, got 0 in \"{s}\""));
    }
    Ok(a)
}

/// `10.1.0.0/24`, `fd00::/8`, or a bare address (a /32 or /128).
pub(crate) fn cidr(s: &str) -> Result<Cidr, String> {
    let bad = || format!("expected a network such as \"10.1.0.0/24\", got \"{s}\"");
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix_len = match len {
        None => max,
        Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => {
            match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("prefix length must be 0..={max}, got \"{s}\"")),
            }
        }
        Some(_) => return Err(bad()),
    };
    let network = match addr {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask_u32(prefix_len)).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask_u128(prefix_len)).into()),
    };
    if network != addr {
        return Err(format!(
            "host bits are set in \"{s}\"; did you mean \"{network}/{prefix_len}\"?"
        ));
    }
    Ok(Cidr {
        addr: network,
        prefix_len,
    })
}

/// `md.prices.AAPL` (exact), `md.*` (prefix) or `*`.
pub(crate) fn pattern(s: &str) -> Result<TopicPattern, String> {
    if s == "*" {
        return Ok(TopicPattern::Any);
    }
    if let Some(prefix) = s.strip_suffix(".*") {
        if is_valid_topic(prefix) {
            return Ok(TopicPattern::Prefix(prefix.to_owned()));
        }
    } else if is_valid_topic(s) {
        return Ok(TopicPattern::Exact(s.to_owned()));
    }
    Err(format!(
        "expected an exact topic (A-Z a-z 0-9 . _ -, dot-separated), PREFIX.* or *; `*` may only stand alone or as the last part after a dot, got \"{s}\""
    ))
}

const DURATION_UNITS: &[(&str, u64)] = &[
    ("us", 1),
    ("µs", 1),
    ("ms", 1_000),
    ("s", 1_000_000),
    ("m", 60_000_000),
    ("h", 3_600_000_000),
    ("d", 86_400_000_000),
];

/// `250us`, `30ms`, `1s`, `5m`, `1h`, `2d`: an integer and a unit.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let help = "a duration is an integer and a unit: us, ms, s, m, h or d (e.g. \"30ms\")";
    let (digits, unit) = split_number(s);
    if digits.is_empty() {
        return Err(format!("{help}, got \"{s}\""));
    }
    let unit = unit.trim_start_matches(' ');
    if unit.is_empty() {
        return Err(format!("missing unit in \"{s}\"; {help}"));
    }
    let Some((_, micros)) = DURATION_UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(format!("unknown unit \"{unit}\" in \"{s}\"; {help}"));
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(*micros))
        .map(Duration::from_micros)
        .ok_or_else(|| format!("\"{s}\" is too large"))
}

const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("B", 1),
    ("KiB", KIB),
    ("MiB", MIB),
    ("GiB", GIB),
    ("TiB", TIB),
    ("kB", 1_000),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

/// `1400`, `64KiB`, `128MiB`, `10GiB`, `1MB` (powers of 1000).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let help = "a size is an integer of bytes with an optional unit: B, KiB, MiB, GiB, TiB, kB, MB, GB, TB (e.g. \"128MiB\")";
    let (digits, unit) = split_number(s);
    if digits.is_empty() {
        return Err(format!("{help}, got \"{s}\""));
    }
    let unit = unit.trim_start_matches(' ');
    let Some((_, mult)) = SIZE_UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(format!("unknown unit \"{unit}\" in \"{s}\"; {help}"));
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(*mult))
        .ok_or_else(|| format!("\"{s}\" is too large"))
}

/// Splits leading ASCII digits from the rest.
pub(crate) fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    s.split_at(end)
}

pub(crate) fn duration_in(
    range: RangeInclusive<Duration>,
) -> impl Fn(&Value) -> Result<Duration, String> {
    move |v| {
        let d = match v {
            Value::String(s) => parse_duration(s)?,
            other => return Err(type_error("a duration string such as \"30ms\"", other)),
        };
        if range.contains(&d) {
            Ok(d)
        } else {
            Err(format!(
                "must be {}..={}, got {}",
                fmt_duration(*range.start()),
                fmt_duration(*range.end()),
                fmt_duration(d)
            ))
        }
    }
}

pub(crate) fn size_in(range: RangeInclusive<u64>) -> impl Fn(&Value) -> Result<u64, String> {
    move |v| {
        let n = match v {
            Value::String(s) => parse_size(s)?,
            Value::Integer(n) => {
                u64::try_from(*n).map_err(|_| format!("must not be negative, got {n}"))?
            }
            other => return Err(type_error("a size such as \"128MiB\" or 1400", other)),
        };
        if range.contains(&n) {
            Ok(n)
        } else {
            Err(format!(
                "must be {}..={}, got {}",
                fmt_size(*range.start()),
                fmt_size(*range.end()),
                fmt_size(n)
            ))
        }
    }
}

/// The largest unit that writes `d` exactly: `1h`, `30ms`, `250us`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let micros = d.as_micros();
    if micros == 0 {
        return "0s".into();
    }
    let (unit, n) = DURATION_UNITS
        .iter()
        .rev()
        .filter(|(u, _)| *u != "µs")
        .find(|(_, m)| micros.is_multiple_of(u128::from(*m)))
        .map(|(u, m)| (*u, micros / u128::from(*m)))
        .unwrap_or(("us", micros));
    format!("{n}{unit}")
}

/// The largest binary unit that writes `n` exactly: `64KiB`, `1400`.
pub(crate) fn fmt_size(n: u64) -> String {
    for (unit, m) in [
        ("PiB", PIB),
        ("TiB", TIB),
        ("GiB", GIB),
        ("MiB", MIB),
        ("KiB", KIB),
    ] {
        if n >= m && n.is_multiple_of(m) {
            return format!("{}{unit}", n / m);
        }
    }
    n.to_string()
}

/// The allowed name closest to `key` by edit distance, if close enough to
/// be a typo.
pub(crate) fn closest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (edit_distance(key, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row.first().copied().unwrap_or(0);
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let (Some(&up), Some(&left)) = (row.get(j + 1), row.get(j)) else {
                continue;
            };
            let next = (prev + cost).min(up + 1).min(left + 1);
            prev = up;
            if let Some(cell) = row.get_mut(j + 1) {
                *cell = next;
            }
        }
    }
    row.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netconf::validate::{GROUP_KEYS, MULTICAST_KEYS};

    #[test]
    fn durations_take_an_integer_and_a_unit() {
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("30ms"), Ok(ms(30)));
        assert_eq!(parse_duration("1s"), Ok(secs(1)));
        assert_eq!(parse_duration("5m"), Ok(secs(300)));
        assert_eq!(parse_duration("2d"), Ok(secs(2 * DAY)));
        assert_eq!(parse_duration("10 ms"), Ok(ms(10)));
        assert!(parse_duration("30").unwrap_err().contains("missing unit"));
        assert!(parse_duration("1.5s").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999999d")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn sizes_take_bytes_or_a_binary_or_decimal_unit() {
        assert_eq!(parse_size("1400"), Ok(1400));
        assert_eq!(parse_size("128MiB"), Ok(128 * MIB));
        assert_eq!(parse_size("10GiB"), Ok(10 * GIB));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("64 KiB"), Ok(64 * KIB));
        assert!(parse_size("10gib").unwrap_err().contains("unknown unit"));
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999TiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn formatting_uses_the_largest_exact_unit() {
        assert_eq!(fmt_duration(ms(1500)), "1500ms");
        assert_eq!(fmt_duration(secs(3600)), "1h");
        assert_eq!(fmt_duration(Duration::from_micros(100)), "100us");
        assert_eq!(fmt_duration(Duration::ZERO), "0s");
        assert_eq!(fmt_size(64 * KIB), "64KiB");
        assert_eq!(fmt_size(1400), "1400");
        assert_eq!(fmt_size(1536), "1536");
    }

    #[test]
    fn cidrs_must_have_zero_host_bits() {
        assert_eq!(
            cidr("10.1.0.0/24"),
            Ok(Cidr {
                addr: "10.1.0.0".parse().unwrap(),
                prefix_len: 24
            })
        );
        assert_eq!(cidr("10.1.0.7").map(|c| c.prefix_len), Ok(32));
        assert_eq!(cidr("fd00::/8").map(|c| c.prefix_len), Ok(8));
        assert!(cidr("10.1.0.1/24")
            .unwrap_err()
            .contains("did you mean \"10.1.0.0/24\""));
        assert!(cidr("10.1.0.0/33").unwrap_err().contains("0..=32"));
        assert!(cidr("10.1.0.0/").is_err());
        assert!(cidr("10.1.0.0/+8").is_err());
        assert!(cidr("banana").is_err());
    }

    #[test]
    fn patterns_are_exact_prefix_or_any() {
        assert_eq!(pattern("*"), Ok(TopicPattern::Any));
        assert_eq!(pattern("md.*"), Ok(TopicPattern::Prefix("md".into())));
        assert_eq!(
            pattern("md.prices"),
            Ok(TopicPattern::Exact("md.prices".into()))
        );
        for bad in ["md*x", "md*", "*.md", ".*", "md.*.x", "", "md..x", "md x"] {
            assert!(pattern(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(closest("tll", MULTICAST_KEYS), Some("ttl"));
        assert_eq!(closest("nak-dealy-max", GROUP_KEYS), Some("nak-delay-max"));
        assert_eq!(closest("zzzzzz", GROUP_KEYS), None);
    }
}
