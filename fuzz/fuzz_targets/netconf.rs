//! Any text as a netconf file: `NetConf::from_str` returns a config or a
//! located error, never panics.
#![no_main]

use castlog::netconf::NetConf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = NetConf::from_str(text, "fuzz.toml") {
            let _ = e.to_string();
        }
    }
});
