//! A client IPC byte stream: `take_frame` splits it, `Request::parse` and
//! `Response::parse` read each frame; no panic, and whatever parses emits
//! back to a frame that parses to the same value.
#![no_main]

use bytes::{Bytes, BytesMut};
use castlog::wire::ipc::{take_frame, Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = take_frame(&mut buf) {
        if let Ok(req) = Request::parse(&frame) {
            let mut out = Vec::new();
            req.emit_to_vec(&mut out).expect("a parsed request emits");
            assert_eq!(Request::parse(&Bytes::from(out)).as_ref(), Ok(&req));
        }
        if let Ok(resp) = Response::parse(&frame) {
            let mut out = Vec::new();
            resp.emit_to_vec(&mut out).expect("a parsed response emits");
            assert_eq!(Response::parse(&Bytes::from(out)).as_ref(), Ok(&resp));
        }
    }
});
