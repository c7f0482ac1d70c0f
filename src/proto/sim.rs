//! An in-memory network for [`Node`]s with a virtual clock and seeded loss,
//! duplication, reordering and delay, settable per link (smoltcp's netsim
//! idea). Everything is deterministic from the seed, so any failure replays.
//!
//! All nodes share one group, `GroupId(0)`; `Dest::Group` reaches every other
//! node (one copy each, each copy meeting its own link's faults), after an
//! optional per-source *upstream* loss that drops a datagram before the
//! fan-out (every receiver misses it: the NAK-implosion case).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Dest, Event, GroupConfig, GroupId, Node, Rng};
use crate::wire::{Flags, Frame, FrameType, NodeId};

/// The one group every simulated node is in.
pub const GROUP: GroupId = GroupId(0);

/// Faults on the path from one node to another.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub delay: Duration,
    pub jitter: Duration,
    /// Extra delay of a reordered datagram.
    pub reorder_delay: Duration,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            delay: Duration::from_micros(100),
            jitter: Duration::from_micros(20),
            reorder_delay: Duration::from_micros(500),
        }
    }
}

/// Network-level counts, to judge protocol economy.
#[derive(Debug, Clone, Default)]
pub struct NetStats {
    pub datagrams_sent: u64,
    pub datagrams_dropped: u64,
    pub data_original_sent: u64,
    /// Original DATA datagrams that at least one receiver lost.
    pub data_original_lost_unique: u64,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    order: u64,
    to: usize,
    from: usize,
    via_group: bool,
    bytes: Bytes,
}

pub struct Sim {
    now: Instant,
    rng: Rng,
    nodes: Vec<Node>,
    addrs: Vec<SocketAddr>,
    events: Vec<Vec<(Instant, Event)>>,
    links: BTreeMap<(usize, usize), Link>,
    default_link: Link,
    upstream_loss: BTreeMap<usize, f64>,
    queue: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    buf: Vec<u8>,
    pub net: NetStats,
}

impl Sim {
    pub fn new(seed: u64, start: Instant) -> Sim {
        Sim {
            now: start,
            rng: Rng::from_seed(seed ^ 0x5151_5151),
            nodes: Vec::new(),
            addrs: Vec::new(),
            events: Vec::new(),
            links: BTreeMap::new(),
            default_link: Link::default(),
            upstream_loss: BTreeMap::new(),
            queue: BinaryHeap::new(),
            order: 0,
            buf: vec![0u8; 70_000],
            net: NetStats::default(),
        }
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    /// Adds a node in the group; returns its index.
    pub fn add_node(&mut self, cfg: GroupConfig) -> usize {
        let i = self.nodes.len();
        let seed = self.rng.next_u64();
        let mut node = Node::new(NodeId(1000 + i as u64), &format!("n{i}"), seed);
        node.add_group(self.now, GROUP, cfg);
        self.nodes.push(node);
        self.addrs.push(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(10, 0, 0, i as u8 + 1),
            7500,
        )));
        self.events.push(Vec::new());
        self.pump(i);
        i
    }

    pub fn node(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn set_default_link(&mut self, link: Link) {
        self.default_link = link;
    }

    pub fn set_link(&mut self, from: usize, to: usize, link: Link) {
        self.links.insert((from, to), link);
    }

    /// Sets the faults of every link into `to`.
    pub fn set_inbound(&mut self, to: usize, link: Link) {
        for from in 0..self.nodes.len() {
            if from != to {
                self.links.insert((from, to), link);
            }
        }
    }

    pub fn set_upstream_loss(&mut self, from: usize, loss: f64) {
        self.upstream_loss.insert(from, loss);
    }

    /// Events a node produced since the last call, with the time of each.
    pub fn take_events(&mut self, i: usize) -> Vec<(Instant, Event)> {
        std::mem::take(&mut self.events[i])
    }

    /// Drains a node's transmits and events (call after driving it).
    pub fn pump(&mut self, i: usize) {
        let now = self.now;
        while let Some((dest, bytes)) = self.nodes[i].poll_transmit() {
            self.net.datagrams_sent += 1;
            match dest {
                Dest::Group(_) => self.fan_out(i, bytes),
                Dest::Peer(addr) => {
                    if let Some(to) = self.addrs.iter().position(|a| *a == addr) {
                        self.send_one(i, to, false, bytes);
                    }
                }
            }
        }
        while let Some(e) = self.nodes[i].poll_event() {
            self.events[i].push((now, e));
        }
    }

    fn fan_out(&mut self, from: usize, bytes: Bytes) {
        let original_data = Frame::new_checked(&bytes[..])
            .map(|f| f.frame_type() == FrameType::Data && !f.flags().contains(Flags::REPAIR))
            .unwrap_or(false);
        if original_data {
            self.net.data_original_sent += 1;
        }
        let upstream = self.upstream_loss.get(&from).copied().unwrap_or(0.0);
        if self.rng.chance(upstream) {
            self.net.datagrams_dropped += 1;
            if original_data {
                self.net.data_original_lost_unique += 1;
            }
            return;
        }
        let mut lost_by_any = false;
        for to in 0..self.nodes.len() {
            if to != from && !self.send_one(from, to, true, bytes.clone()) {
                lost_by_any = true;
            }
        }
        if original_data && lost_by_any {
            self.net.data_original_lost_unique += 1;
        }
    }

    /// Returns false when the link dropped it.
    fn send_one(&mut self, from: usize, to: usize, via_group: bool, bytes: Bytes) -> bool {
        let link = self
            .links
            .get(&(from, to))
            .copied()
            .unwrap_or(self.default_link);
        if self.rng.chance(link.loss) {
            self.net.datagrams_dropped += 1;
            return false;
        }
        let copies = if self.rng.chance(link.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = link.delay
                + Duration::from_nanos(self.rng.below(link.jitter.as_nanos() as u64 + 1));
            if self.rng.chance(link.reorder) {
                delay += link.reorder_delay;
            }
            self.order += 1;
            self.queue.push(Reverse(InFlight {
                at: self.now + delay,
                order: self.order,
                to,
                from,
                via_group,
                bytes: bytes.clone(),
            }));
        }
        true
    }

    /// Runs the network and the nodes' timers up to `until`.
    pub fn run_until(&mut self, until: Instant) {
        loop {
            let next_arrival = self.queue.peek().map(|Reverse(f)| f.at);
            let next_timer = self.nodes.iter().filter_map(|n| n.poll_timeout()).min();
            let next = match (next_arrival, next_timer) {
                (Some(a), Some(t)) => a.min(t),
                (Some(a), None) => a,
                (None, Some(t)) => t,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            let now = self.now;
            while self.queue.peek().is_some_and(|Reverse(f)| f.at <= now) {
                let Some(Reverse(f)) = self.queue.pop() else {
                    break;
                };
                let from_addr = self.addrs[f.from];
                let group = if f.via_group { Some(GROUP) } else { None };
                self.nodes[f.to].handle_datagram(now, from_addr, group, &f.bytes);
                self.pump(f.to);
            }
            for i in 0..self.nodes.len() {
                if self.nodes[i].poll_timeout().is_some_and(|t| t <= now) {
                    self.nodes[i].handle_timeout(now);
                    self.pump(i);
                }
            }
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Feeds garbage to a node, as a hostile or broken peer would.
    pub fn inject(&mut self, to: usize, bytes: &[u8]) {
        let now = self.now;
        let from = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 9, 9, 9), 9));
        self.nodes[to].handle_datagram(now, from, Some(GROUP), bytes);
        self.buf.clear();
        self.pump(to);
    }
}

impl Sim {
    /// Replaces node `i` by a fresh one with the same id and address (a
    /// restarted daemon: new session id, state forgotten).
    pub fn restart_node(&mut self, i: usize, cfg: GroupConfig) {
        let seed = self.rng.next_u64();
        let id = self.nodes[i].id();
        let mut node = Node::new(id, &format!("n{i}"), seed);
        node.add_group(self.now, GROUP, cfg);
        self.nodes[i] = node;
        self.pump(i);
    }
}
