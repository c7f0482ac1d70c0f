//! The daemon's own counters, and the JSON that `castlog stats` prints:
//! these plus the protocol's, the log's and the IPC server's, one object per
//! room so a counter's name says where it was counted.

use serde::Serialize;

use super::Daemon;

/// Counters of the event loop and the glue (noun then verb, monotonic).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Returns from `poll`.
    pub loop_rounds: u64,
    /// Datagrams read from any UDP socket (each one of a GRO buffer counts).
    pub datagrams_received: u64,
    /// Receive buffers in which the kernel coalesced several datagrams (GRO).
    pub gro_buffers_received: u64,
    /// Datagrams longer than the receive buffer (dropped, never parsed).
    pub datagrams_truncated: u64,
    /// Datagrams from a source outside the group's netconf `allow` list.
    pub datagrams_denied: u64,
    /// Datagrams without a valid tag on an authenticated group (or on the
    /// listen socket when every group is authenticated).
    pub datagrams_unauthenticated: u64,
    /// Datagrams handed to the kernel.
    pub datagrams_sent: u64,
    /// `sendmmsg` calls that sent something: `datagrams_sent / send_calls`
    /// is the batching achieved.
    pub send_calls: u64,
    /// Datagrams the kernel refused (no route, firewall, ICMP error).
    pub datagrams_send_failed: u64,
    /// Times a send would have blocked (the rest waited for WRITABLE).
    pub sends_blocked: u64,
    /// Receive calls that failed with something other than WouldBlock.
    pub recv_errors: u64,
    /// Records clients published here (in the log, offset assigned).
    pub records_published: u64,
    /// Publishes refused (no rule, log error, too large, backpressure).
    pub publishes_failed: u64,
    /// Publishes the flow window held back at least once.
    pub publishes_backpressured: u64,
    /// Time records waited for a shut flow window, in µs (summed over
    /// groups): how long the slowest receiver held publishers back.
    pub flow_window_closed_us: u64,
    /// Waiting records whose bytes were dropped from memory (read back from
    /// the log when sent).
    pub publishes_spilled: u64,
    /// Sync publishes answered after the group acknowledged them.
    pub syncs_acked: u64,
    /// Sync publishes failed by their timeout.
    pub syncs_timed_out: u64,
    /// Records from other nodes written to our log.
    pub records_stored: u64,
    /// Records from other nodes that our log already held.
    pub records_duplicate: u64,
    /// Records written to our log from a replay.
    pub records_replayed: u64,
    /// Replay records that did not parse.
    pub replay_records_malformed: u64,
    /// Replays this node asked for.
    pub replays_started: u64,
    /// Replay chunks this node served from its log.
    pub replay_chunks_served: u64,
    /// Unrecoverable datagram ranges reported by the protocol.
    pub gaps_seen: u64,
    /// Log operations that failed.
    pub log_errors: u64,
    /// Received records our log refused (disk full, I/O error), or that
    /// came for a log while it refused; a refill fetches them again.
    pub records_unstored: u64,
    /// Times a (topic, source) log started refusing records.
    pub logs_stalled: u64,
    /// Fills started to fetch again what a refusing log dropped.
    pub log_refills_started: u64,
    /// New peers not remembered because the peer table was full of peers
    /// heard recently (a flood of announcements from made-up nodes).
    pub peers_refused: u64,
}

impl Daemon {
    /// Every room's counters as one JSON object:
    /// `{"node": {...}, "daemon": {...}, "proto": {...}, "log": {...}, "ipc": {...}}`.
    pub fn stats_json(&self) -> String {
        let log = self.log.stats();
        let ipc = self.ipc.stats();
        let value = serde_json::json!({
            "node": {
                "name": self.name,
                "id": self.node_id.to_string(),
                "listen": self.listen_addr.to_string(),
                "gso": self.offload.gso,
                "gro": self.offload.gro,
            },
            "net_groups": self.net_groups_json(),
            "peers": self.peers_json(),
            "topics": self.topics_json(),
            "daemon": &self.stats,
            "proto": self.node.stats(),
            "log": log_stats_json(&log),
            "groups": self.groups_json(),
            "group_stats": self.node.consumers().stats(),
            "ipc": ipc,
        });
        value.to_string()
    }

    /// The daemon's own counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

fn log_stats_json(s: &crate::log::Stats) -> serde_json::Value {
    serde_json::json!({
        "records_appended": s.records_appended,
        "bytes_appended": s.bytes_appended,
        "batches_appended": s.batches_appended,
        "appends_failed": s.appends_failed,
        "records_duplicate": s.records_duplicate,
        "offsets_skipped": s.offsets_skipped,
        "segments_rolled": s.segments_rolled,
        "segments_deleted": s.segments_deleted,
        "bytes_deleted": s.bytes_deleted,
        "records_read": s.records_read,
        "bytes_read": s.bytes_read,
        "fsyncs": s.fsyncs,
        "logs_opened": s.logs_opened,
        "tails_truncated": s.tails_truncated,
        "bytes_truncated": s.bytes_truncated,
        "corrupt_regions_found": s.corrupt_regions_found,
        "indexes_rebuilt": s.indexes_rebuilt,
    })
}
