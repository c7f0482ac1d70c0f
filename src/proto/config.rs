//! Protocol settings for one group. The daemon builds these from netconf;
//! protocol tests build them directly, so no test here needs a TOML file.

use std::time::Duration;

/// How a group's datagrams reach the other nodes; it decides where repairs
/// and NAK confirmations go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    /// One send reaches every member; repairs and NCFs go to the group.
    Multicast,
    /// Subnet broadcast: like multicast for the protocol.
    Broadcast,
    /// One copy per peer; repairs go only to the peer that asked.
    Unicast,
}

impl GroupKind {
    /// Whether one send reaches every receiver (so one repair serves all).
    pub fn is_shared_medium(self) -> bool {
        !matches!(self, GroupKind::Unicast)
    }
}

/// Settings for one group. Every field has a default fit for a LAN.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub kind: GroupKind,
    /// Largest datagram, header included. Default: 1400. Range: 256..=65000.
    pub mtu: usize,
    /// Heartbeat interval right after data (tail loss shows up fast).
    /// Default: 2ms.
    pub heartbeat_interval_min: Duration,
    /// Heartbeat interval when idle (the interval doubles up to this).
    /// Default: 500ms.
    pub heartbeat_interval_max: Duration,
    /// Upper bound of the randomized delay before a receiver NAKs a gap; the
    /// spread is what lets one NAK (and the source's NCF) suppress the others.
    /// Default: 10ms.
    pub nak_delay_max: Duration,
    /// First wait after a NAK (or a suppression) before asking again; doubles
    /// per retry. Default: 20ms.
    pub nak_retry_interval: Duration,
    /// Retries after which a receiver gives up on a range and reports a gap.
    /// Default: 8.
    pub nak_max_retries: u32,
    /// A seq repaired less than this long ago is not repaired again for a
    /// duplicate NAK (Aeron's linger); it covers the spread of receivers'
    /// NAK delays. Default: 10ms.
    pub repair_linger: Duration,
    /// Repair bandwidth cap in bytes per second, 0 = unlimited. Default: 0.
    pub repair_rate_bytes_per_sec: u64,
    /// Pacing of new data in bytes per second (a token bucket with about
    /// 10ms of burst), 0 = unlimited. Default: 0.
    pub rate_limit_bytes_per_sec: u64,
    /// Bytes of sent datagrams kept for repair. Default: 64 MiB.
    pub retransmit_window_bytes: usize,
    /// Bytes a source may have outstanding beyond the slowest live
    /// receiver's acknowledgement. Default: 8 MiB.
    pub flow_window_bytes: usize,
    /// Bytes a receiver buffers out of order. Default: 16 MiB.
    pub receive_window_bytes: usize,
    /// How often a receiver reports progress while data flows. Default: 2ms.
    pub status_interval: Duration,
    /// Receiver keepalive STATUS when nothing flows. Default: 250ms.
    pub status_keepalive: Duration,
    /// Silence after which a source or receiver is declared gone.
    /// Default: 3s.
    pub liveness_timeout: Duration,
    /// A receiver first hearing a session at seq <= this starts at the
    /// session's start (it was there, the first datagrams were lost);
    /// beyond it, it starts live and the log layer fills the past.
    /// Default: 1024.
    pub join_backfill_seqs: u64,
    /// Largest record value accepted for publishing. Default: 64 MiB.
    pub max_record_bytes: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            kind: GroupKind::Multicast,
            mtu: 1400,
            heartbeat_interval_min: Duration::from_millis(2),
            heartbeat_interval_max: Duration::from_millis(500),
            nak_delay_max: Duration::from_millis(10),
            nak_retry_interval: Duration::from_millis(20),
            nak_max_retries: 8,
            repair_linger: Duration::from_millis(10),
            repair_rate_bytes_per_sec: 0,
            rate_limit_bytes_per_sec: 0,
            retransmit_window_bytes: 64 << 20,
            flow_window_bytes: 8 << 20,
            receive_window_bytes: 16 << 20,
            status_interval: Duration::from_millis(2),
            status_keepalive: Duration::from_millis(250),
            liveness_timeout: Duration::from_secs(3),
            join_backfill_seqs: 1024,
            max_record_bytes: 64 << 20,
        }
    }
}
