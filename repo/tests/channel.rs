#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use cairn_repo::{
    sign_channel, verify_channel, ChannelError, Delta, Payload, PrivateKey, Release, Signed,
    Target, DEFAULT_MAX_CHANNEL_SIZE, FORMAT_VERSION,
};

const NOW: u64 = 1_800_000_000;
const MAX: usize = DEFAULT_MAX_CHANNEL_SIZE;

fn key(n: u8) -> PrivateKey {
    PrivateKey::from_seed(&[n; 32])
}

fn release(v: &str) -> Release {
    Release {
        deltas: vec![Delta {
            from_version: "0.9".into(),
            path: format!("payloads/{v}/bbbb.from-0.9.delta.cpay"),
            sha256: "b".repeat(64),
            size: 10,
        }],
        full: Payload {
            path: format!("payloads/{v}/aaaa.full.cpay"),
            sha256: "a".repeat(64),
            size: 100,
        },
        target: Target {
            sha256: "c".repeat(64),
            size: 1 << 30,
        },
        version: v.into(),
    }
}

fn signed(seq: u64) -> Signed {
    Signed {
        channel: "stable".into(),
        created: NOW - 10,
        expires: NOW + 1000,
        format: FORMAT_VERSION,
        releases: vec![release("1.0"), release("1.1")],
        sequence: seq,
    }
}

#[test]
fn sign_and_verify() {
    let k = key(1);
    let doc = sign_channel(&signed(5), &[k]).unwrap();
    let k = key(1);
    let ch = verify_channel(&doc, &[k.public_key()], NOW, 0, MAX).unwrap();
    assert_eq!(ch.signed, signed(5));
    assert_eq!(ch.verified_by, vec![k.id().to_string()]);
    assert_eq!(ch.latest().unwrap().version, "1.1");
    // Equal sequence is fine, as is a lower last-seen.
    verify_channel(&doc, &[k.public_key()], NOW, 5, MAX).unwrap();

    // Canonical form: keys sorted, no whitespace.
    let text = String::from_utf8(doc.clone()).unwrap();
    assert!(text.starts_with("{\"signatures\":[{\"keyid\":"));
    assert!(text.contains("\"signed\":{\"channel\":\"stable\",\"created\":"));
    assert!(!text.trim_end().contains('\n') && !text.contains(": "));

    // Pretty-printing the file does not invalidate it.
    let v: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    let pretty = serde_json::to_vec_pretty(&v).unwrap();
    verify_channel(&pretty, &[k.public_key()], NOW, 0, MAX).unwrap();
}

#[test]
fn multiple_keys_one_trusted() {
    let doc = sign_channel(&signed(1), &[key(1), key(2)]).unwrap();
    let ch = verify_channel(&doc, &[key(2).public_key()], NOW, 0, MAX).unwrap();
    assert_eq!(ch.verified_by, vec![key(2).id().to_string()]);
}

#[test]
fn tampered_rejected() {
    let doc = sign_channel(&signed(1), &[key(1)]).unwrap();
    let text = String::from_utf8(doc).unwrap();
    let pk = [key(1).public_key()];
    for (from, to) in [
        ("\"sequence\":1", "\"sequence\":2"),
        ("\"size\":100", "\"size\":101"),
        ("\"version\":\"1.1\"", "\"version\":\"1.2\""),
    ] {
        assert!(text.contains(from));
        let t = text.replacen(from, to, 1);
        let e = verify_channel(t.as_bytes(), &pk, NOW, 0, MAX).unwrap_err();
        assert!(matches!(e, ChannelError::NotSigned { .. }), "{e}");
    }
    // Added unknown field.
    let t = text.replacen("\"format\":1", "\"format\":1,\"x\":1", 1);
    assert!(matches!(
        verify_channel(t.as_bytes(), &pk, NOW, 0, MAX),
        Err(ChannelError::Json(_))
    ));
    // Bad JSON.
    assert!(matches!(
        verify_channel(b"{not json", &pk, NOW, 0, MAX),
        Err(ChannelError::Json(_))
    ));
    // Too large.
    assert!(matches!(
        verify_channel(text.as_bytes(), &pk, NOW, 0, 100),
        Err(ChannelError::TooLarge { .. })
    ));
    // Signature removed.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["signatures"] = serde_json::json!([]);
    let t = serde_json::to_vec(&v).unwrap();
    assert!(matches!(
        verify_channel(&t, &pk, NOW, 0, MAX),
        Err(ChannelError::NotSigned { .. })
    ));
}

#[test]
fn other_key_rejected() {
    let doc = sign_channel(&signed(1), &[key(1)]).unwrap();
    let e = verify_channel(&doc, &[key(2).public_key()], NOW, 0, MAX).unwrap_err();
    assert!(matches!(e, ChannelError::NotSigned { .. }));
    assert!(e.to_string().contains(key(2).id()), "{e}");
    // A signature by key 2 relabelled with key 1's id.
    let doc2 = sign_channel(&signed(1), &[key(2)]).unwrap();
    let t = String::from_utf8(doc2)
        .unwrap()
        .replace(key(2).id(), key(1).id());
    assert!(matches!(
        verify_channel(t.as_bytes(), &[key(1).public_key()], NOW, 0, MAX),
        Err(ChannelError::NotSigned { .. })
    ));
}

#[test]
fn expired_rejected() {
    let doc = sign_channel(&signed(1), &[key(1)]).unwrap();
    let pk = [key(1).public_key()];
    verify_channel(&doc, &pk, NOW + 999, 0, MAX).unwrap();
    let e = verify_channel(&doc, &pk, NOW + 1000, 0, MAX).unwrap_err();
    assert!(matches!(e, ChannelError::Expired { .. }), "{e}");
}

#[test]
fn lower_sequence_rejected() {
    let doc = sign_channel(&signed(3), &[key(1)]).unwrap();
    let e = verify_channel(&doc, &[key(1).public_key()], NOW, 4, MAX).unwrap_err();
    assert!(
        matches!(
            e,
            ChannelError::Rollback {
                sequence: 3,
                last_seen: 4
            }
        ),
        "{e}"
    );
}

#[test]
fn unreasonable_releases_rejected() {
    let k = [key(1)];
    type Mutation = Box<dyn Fn(&mut Signed)>;
    let bad: Vec<Mutation> = vec![
        Box::new(|s| s.releases[0].full.path = "/etc/passwd".into()),
        Box::new(|s| s.releases[0].full.path = "payloads/../../x".into()),
        Box::new(|s| s.releases[0].deltas[0].path = "a/./b".into()),
        Box::new(|s| s.releases[0].full.size = 0),
        Box::new(|s| s.releases[0].full.size = u64::MAX),
        Box::new(|s| s.releases[0].full.sha256 = "xyz".into()),
        Box::new(|s| s.releases[1].version = "1.0".into()),
        Box::new(|s| s.releases[0].version = "../1".into()),
        Box::new(|s| {
            let d = s.releases[0].deltas[0].clone();
            s.releases[0].deltas.push(d);
        }),
        Box::new(|s| s.channel = "a/b".into()),
        Box::new(|s| s.expires = s.created),
    ];
    for (i, f) in bad.iter().enumerate() {
        let mut s = signed(1);
        f(&mut s);
        // Refused when signing...
        assert!(sign_channel(&s, &k).is_err(), "case {i} signed");
        // ...and when verifying a document signed anyway.
        let msg = s.canonical_bytes().unwrap();
        let doc = serde_json::json!({
            "signatures": [{"keyid": k[0].id(), "sig": cairn_repo::hex_encode(&k[0].sign(&msg))}],
            "signed": s,
        });
        let bytes = serde_json::to_vec(&doc).unwrap();
        let e = verify_channel(&bytes, &[k[0].public_key()], NOW, 0, MAX).unwrap_err();
        assert!(matches!(e, ChannelError::Invalid(_)), "case {i}: {e}");
    }
    // Wrong format version.
    let mut s = signed(1);
    s.format = 2;
    assert!(matches!(sign_channel(&s, &k), Err(ChannelError::Format(2))));
}
