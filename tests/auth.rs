//! Authenticated groups (`wire::auth`) and key files (`daemon::keyfile`):
//! golden tag, tampering, rotation, unknown keys, truncation, permissions.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use castlog::daemon::keyfile::{load_key, KeyFileError};
use castlog::wire::auth::{seal, split, verify, AuthError, GroupKeys, Key, TRAILER_LEN};
use castlog::wire::{
    Body, DataPayload, DataRepr, Flags, FrameRepr, HeartbeatRepr, NodeId, Offset, RecordRepr, Seq,
    SessionId, TopicId,
};

/// HEARTBEAT {next_seq 5, lowest 1, 100 ms} from node 1, session 2, sealed
/// with the key 00 01 .. 1f. Computed independently in Python: zlib.crc32
/// for the CRC, key id = sha256(b"castlog key id v1" + key)[0] = 0xc3, tag =
/// hmac.new(key, frame + b"\xc3", sha256).digest()[:16].
#[rustfmt::skip]
const GOLDEN_SEALED: [u8; 69] = [
    0xca, 0x57, 0x01, 0x02, 0x00, 0x04, 0x00, 0x1c, // magic, v1, HEARTBEAT, flags AUTH, header_len
    0x00, 0x00, 0x00, 0x34, // frame_len 52: the trailer is not counted
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // node
    0x00, 0x00, 0x00, 0x02, // session
    0x9b, 0xb0, 0xab, 0xda, // crc32 over the frame with AUTH set
    0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x64, 0, 0, 0, 0, // body
    0xc3, // key id
    0x6e, 0x97, 0x9b, 0xd5, 0xee, 0xfe, 0xb5, 0xdc, 0x0f, 0x32, 0xb9, 0x7b, 0x2a, 0x4a, 0x8f, 0xfe,
];

fn key_a() -> Key {
    Key::new(&(0u8..32).collect::<Vec<_>>()).unwrap()
}

fn key_b() -> Key {
    Key::new(&(0u8..32).map(|i| 0xff - i).collect::<Vec<_>>()).unwrap()
}

fn heartbeat() -> Vec<u8> {
    FrameRepr::new(
        NodeId(1),
        SessionId(2),
        Flags::default(),
        Body::Heartbeat(HeartbeatRepr {
            next_seq: Seq(5),
            lowest_repairable: Seq(1),
            interval_ms: 100,
            topics: vec![],
        }),
    )
    .to_vec()
    .unwrap()
}

fn data_frame() -> Vec<u8> {
    let mut recs = Vec::new();
    RecordRepr {
        topic: TopicId(3),
        offset: Offset(9),
        timestamp_ms: 1,
        key: b"k",
        value: b"value",
    }
    .emit_to_vec(&mut recs)
    .unwrap();
    FrameRepr::new(
        NodeId(7),
        SessionId(8),
        Flags::default(),
        Body::Data(DataRepr {
            seq: Seq(42),
            payload: DataPayload::Records {
                count: 1,
                bytes: &recs,
            },
        }),
    )
    .to_vec()
    .unwrap()
}

#[test]
fn seal_writes_the_golden_key_id_and_tag() {
    let keys = GroupKeys::new(key_a(), None);
    assert_eq!(key_a().id(), 0xc3);
    let mut d = heartbeat();
    seal(&mut d, &keys).unwrap();
    assert_eq!(d, GOLDEN_SEALED);
}

#[test]
fn golden_datagram_verifies_to_a_parseable_frame() {
    let keys = GroupKeys::new(key_a(), None);
    let frame = verify(&GOLDEN_SEALED, &keys).unwrap();
    assert_eq!(frame.len(), GOLDEN_SEALED.len() - TRAILER_LEN);
    let repr = FrameRepr::parse(frame).unwrap();
    assert!(repr.header.flags.contains(Flags::AUTH));
    assert!(matches!(repr.body, Body::Heartbeat(h) if h.next_seq == Seq(5)));
}

#[test]
fn changing_any_byte_of_a_sealed_datagram_is_rejected() {
    let keys = GroupKeys::new(key_a(), None);
    let mut d = data_frame();
    seal(&mut d, &keys).unwrap();
    for i in 0..d.len() {
        for bit in [0x01u8, 0x80] {
            let mut t = d.clone();
            t[i] ^= bit;
            assert!(verify(&t, &keys).is_err(), "byte {i} bit {bit:#x} accepted");
        }
    }
}

#[test]
fn frame_sealed_with_the_previous_key_is_accepted_during_rotation() {
    let old = GroupKeys::new(key_a(), None);
    let rotated = GroupKeys::new(key_b(), Some(key_a()));
    let mut d = data_frame();
    seal(&mut d, &old).unwrap();
    assert!(verify(&d, &rotated).is_ok());
    // And the rotated node's own frames reach a node that rotated too.
    let mut e = data_frame();
    seal(&mut e, &rotated).unwrap();
    assert!(verify(&e, &GroupKeys::new(key_b(), None)).is_ok());
}

#[test]
fn frame_sealed_with_an_unlisted_key_is_rejected_as_unknown() {
    let mut d = data_frame();
    seal(&mut d, &GroupKeys::new(key_b(), None)).unwrap();
    assert_eq!(
        verify(&d, &GroupKeys::new(key_a(), None)),
        Err(AuthError::UnknownKey { key_id: 0xc0 })
    );
}

#[test]
fn forged_tag_under_a_known_key_id_is_rejected_as_bad_tag() {
    let keys = GroupKeys::new(key_a(), None);
    let mut d = GOLDEN_SEALED.to_vec();
    let last = d.len() - 1;
    d[last] ^= 0xff;
    assert_eq!(verify(&d, &keys), Err(AuthError::BadTag { key_id: 0xc3 }));
}

#[test]
fn unsealed_frame_is_rejected_on_an_authenticated_group() {
    let keys = GroupKeys::new(key_a(), None);
    let mut d = data_frame();
    d.extend_from_slice(&[0u8; TRAILER_LEN]);
    assert_eq!(verify(&d, &keys), Err(AuthError::NotSealed));
}

#[test]
fn stripping_the_trailer_and_auth_flag_does_not_pass_verify() {
    let keys = GroupKeys::new(key_a(), None);
    let plain = heartbeat();
    assert!(verify(&plain, &keys).is_err());
}

#[test]
fn sealed_datagram_truncated_at_every_length_is_an_error() {
    let keys = GroupKeys::new(key_a(), None);
    for len in 0..GOLDEN_SEALED.len() {
        assert!(verify(&GOLDEN_SEALED[..len], &keys).is_err(), "len {len}");
        assert!(split(&GOLDEN_SEALED[..len]).is_err(), "len {len}");
    }
}

#[test]
fn sealing_a_corrupt_frame_is_refused() {
    let keys = GroupKeys::new(key_a(), None);
    let mut d = heartbeat();
    let last = d.len() - 1;
    d[last] ^= 1;
    assert!(matches!(seal(&mut d, &keys), Err(AuthError::Frame(_))));
    assert!(matches!(
        seal(&mut vec![1, 2, 3], &keys),
        Err(AuthError::Frame(_))
    ));
}

#[test]
fn repair_flag_is_set_before_sealing_not_after() {
    // rewrite_flags on a sealed datagram fails, so a daemon cannot mark a
    // repair on an already sealed copy and send a frame with a stale tag.
    let keys = GroupKeys::new(key_a(), None);
    let mut d = data_frame();
    seal(&mut d, &keys).unwrap();
    assert!(castlog::wire::rewrite_flags(&mut d, Flags::REPAIR).is_err());
}

fn key_file(dir: &tempfile::TempDir, name: &str, bytes: &[u8], mode: u32) -> std::path::PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, bytes).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn hex_and_raw_key_files_load_to_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let hex: String = (0u8..32).map(|b| format!("{b:02x}")).collect();
    let h = key_file(&dir, "h.key", format!("{hex}\n").as_bytes(), 0o600);
    let raw: Vec<u8> = (0u8..32).collect();
    let r = key_file(&dir, "r.key", &raw, 0o640);
    assert_eq!(load_key(&h).unwrap().id(), 0xc3);
    assert_eq!(load_key(&r).unwrap().id(), 0xc3);
    let keys = GroupKeys::load(&h, Some(&r)).unwrap();
    assert_eq!(verify(&GOLDEN_SEALED, &keys).map(<[u8]>::len), Ok(52));
}

#[test]
fn key_file_readable_by_other_users_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = key_file(&dir, "k", &[7u8; 32], 0o644);
    let err = load_key(&p).unwrap_err();
    assert!(matches!(
        err,
        KeyFileError::OtherUsersCanAccess { mode: 0o644, .. }
    ));
    assert!(err.to_string().contains("chmod o-rwx"), "{err}");
}

#[test]
fn key_file_shorter_than_32_bytes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = key_file(&dir, "k", &[7u8; 31], 0o600);
    assert!(matches!(
        load_key(&p),
        Err(KeyFileError::TooShort { len: 31, .. })
    ));
    let h = key_file(&dir, "h", b"00ff\n", 0o600);
    assert!(matches!(
        load_key(&h),
        Err(KeyFileError::TooShort { len: 2, .. })
    ));
}

#[test]
fn missing_key_file_names_the_path() {
    let err = load_key(std::path::Path::new("/nonexistent/castlog.key")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/castlog.key"),
        "{err}"
    );
}
