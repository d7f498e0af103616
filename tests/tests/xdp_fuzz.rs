//! The XDP program under mutated frames (BPF_PROG_TEST_RUN): every frame is passed
//! unmodified or answered correctly, as judged by the independent oracle in
//! `primwatch_tests::fuzz`. A fixed seed for regressions, a fresh one for discovery;
//! `cargo xtask fuzz -- --frames N` runs more.

use primwatch_tests::fuzz;

#[test]
fn mutated_frames_are_passed_intact_or_answered_correctly() {
    let key_dir = std::env::temp_dir().join(format!("pw-fuzz-keys-{}", std::process::id()));
    std::fs::create_dir_all(&key_dir).unwrap();
    let h = fuzz::harness(&key_dir, fuzz::SLOW_PATH_OFF)
        .expect("load the XDP program (root and `cargo xtask setup` needed)");
    let fixed = fuzz::run(&h, 0x5eed_2026, 200_000).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("fixed seed: {fixed:?}");
    // The fuzzer is only worth its frames if it reaches both outcomes often.
    assert!(
        fixed.answered > 5_000 && fixed.denied > 2_000 && fixed.passed > 100_000 && fixed.dropped == 0,
        "{fixed:?}"
    );

    // A fresh seed, with the slow-path guard at its defaults: most passes become drops,
    // and the oracle checks each dropped frame is a query for the DNS server.
    let guarded = fuzz::harness(&key_dir, "").expect("load the XDP program");
    let _ = std::fs::remove_dir_all(&key_dir);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("random seed: {seed} (rerun: cargo xtask fuzz -- --seed {seed})");
    let random = fuzz::run(&guarded, seed, 50_000).unwrap_or_else(|e| panic!("random seed {seed}: {e:#}"));
    eprintln!("random seed: {random:?}");
    assert!(random.dropped > 1_000 && random.slipped > 1_000 && random.answered > 1_000, "{random:?}");
}

/// The same oracle with the tap recording every packet (a capture and dnstap at once):
/// recording changes no verdict and no byte of a reply, and the records reach the ring.
#[test]
fn recording_every_packet_changes_no_verdict_and_no_reply() {
    let key_dir = std::env::temp_dir().join(format!("pw-fuzz-tap-keys-{}", std::process::id()));
    std::fs::create_dir_all(&key_dir).unwrap();
    let mut h = fuzz::harness(&key_dir, "").expect("load the XDP program");
    let _ = std::fs::remove_dir_all(&key_dir);
    h.record_taps(primwatch_common::TapSettings { capture: 1, dnstap_every: 1 }).unwrap();
    let tally = fuzz::run(&h, 0x7a9_2026, 50_000).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("with the tap on: {tally:?}");
    assert!(tally.answered > 1_000 && tally.dropped > 100, "{tally:?}");
    // Every frame gives a received and an exit record (some may still be in flight).
    let read = primwatch_tests::wait_for(std::time::Duration::from_secs(5), || {
        let read = h.record_taps(primwatch_common::TapSettings { capture: 1, dnstap_every: 1 }).ok()?;
        (read >= 90_000).then_some(read)
    });
    let counters = h.counters().unwrap();
    assert!(read.is_some() || counters.tap_dropped > 0, "records read or counted dropped: {counters:?}");
}
