//! Disk full, provoked with a file-size limit (RLIMIT_FSIZE, `ulimit -f`):
//! appends past the limit fail with `Error::DiskFull`, never silently, and
//! nothing written before is damaged. This file holds one test on purpose:
//! the limit is per process, so no other test may run beside it.

use castlog::log::{Error, FsyncPolicy, LogConfig, LogDir, NewRecord};
use castlog::wire::{NodeId, Offset};

const LIMIT: u64 = 64 * 1024;

fn set_file_size_limit(bytes: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim) }, 0);
    lim.rlim_cur = bytes.min(lim.rlim_max);
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &lim) }, 0);
}

#[test]
fn disk_full_is_a_typed_error_and_damages_nothing_already_written() {
    // Without this, writing past the limit kills the process (SIGXFSZ).
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    for policy in [FsyncPolicy::Never, FsyncPolicy::Always] {
        let topic = format!("{policy:?}");
        let config = LogConfig {
            fsync: policy,
            segment_max_bytes: 1 << 20,
            ..LogConfig::default()
        };
        let mut dir = LogDir::open(tmp.path(), config.clone()).unwrap();
        let log = dir.log(&topic, NodeId(1)).unwrap();
        let seg = log.path().join(format!("{:020}.seg", 0));
        set_file_size_limit(LIMIT);
        let value = [7u8; 1000];
        let err = loop {
            match log.append(0, 0, b"k", &value) {
                Ok(off) => acked.push((topic.clone(), off)),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(&err, Error::DiskFull { path } if *path == seg),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("disk full writing "), "{err}");
        let next = log.next_offset();
        let len = std::fs::metadata(&seg).unwrap().len();
        assert!(len <= LIMIT);
        // It keeps failing, never skipping: no offset is used up.
        for _ in 0..5 {
            assert!(matches!(
                log.append(0, 0, b"k", &value),
                Err(Error::DiskFull { .. })
            ));
        }
        let batch = [NewRecord {
            timestamp_ms: 0,
            key: b"k",
            value: &value,
        }; 3];
        assert!(matches!(
            log.append_batch(0, &batch),
            Err(Error::DiskFull { .. })
        ));
        assert_eq!(log.next_offset(), next);
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len(),
            len,
            "failed appends were cut back"
        );
        assert_eq!(log.stats().appends_failed, 7);
        set_file_size_limit(libc::RLIM_INFINITY);
        // With space again the same log carries on at the same offset.
        assert_eq!(log.append(0, 0, b"k", &value).unwrap(), next);
        acked.push((topic.clone(), next));
    }
    // Everything acknowledged is there after reopening; nothing was torn.
    let mut dir = LogDir::open(tmp.path(), LogConfig::default()).unwrap();
    for (topic, off) in &acked {
        let b = dir.log(topic, NodeId(1)).unwrap().read(*off, 1).unwrap();
        let r = b.records().unwrap().next().unwrap();
        assert_eq!((r.offset, r.value), (*off, &[7u8; 1000][..]));
    }
    assert!(acked.len() > 100);
    assert_eq!(dir.stats().bytes_truncated, 0);
    assert_eq!(
        dir.log("Never", NodeId(1)).unwrap().earliest_offset(),
        Offset(0)
    );
}
