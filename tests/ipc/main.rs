//! The client <-> daemon IPC: golden bytes and round trips for every frame,
//! framing split at every byte, malformed input (`frames`), record batching
//! into RECORDS frames (`batch`) and publish batching into PUBLISH frames
//! (`publish_batch`), and a real
//! `IpcServer` on a mio loop (`fake_daemon`, a small daemon in a thread) with
//! real `Client`s (`server_client`) and the `castlog` CLI (`cli`) against it.

mod batch;
mod cli;
mod fake_daemon;
mod frames;
mod pause;
mod publish_batch;
mod server_client;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use castlog::client::{self, Client, ConsumeMode, Message, StartFrom};
use castlog::daemon::ipc::{ConnId, IpcServer, IpcStats};
use castlog::wire::ipc::{
    frame_len, take_frame, BatchRecord, Commit, DeliveryRef, Failure, FailureKind, GapNotice,
    GapReason, OpenPublish, OpenRecords, PublishBatch, PublishEntry, PublishMode, PublishRef,
    RecordBatch, Request, Response, Subscribe, MAX_FRAME_BODY_LEN, MAX_VALUE_LEN,
};
use castlog::wire::{NodeId, Offset};

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}
