//! Local users cannot change what DNS answers: the PowerDNS and control sockets admit
//! only root and the PowerDNS group, a flood of connections is refused beyond a cap
//! while checks and `ctl` carry on, and a daemon out of descriptors records local
//! errors instead of marking healthy targets down.

use std::{
    collections::BTreeMap,
    os::unix::{fs::MetadataExt as _, net::UnixStream},
    path::Path,
    process::Command,
    time::Duration,
};

use hickory_proto::rr::RecordType;
use primwatch_tests::{
    controller::binary,
    dns,
    world::{set, world_custom, World, SITE_GROUPS, WEB1, WEB2},
};

const NAMES: &str = "[names.\"www.example.test\"]\ngroups = [\"tokyo\", \"osaka\"]\n";
const SOON: Duration = Duration::from_secs(3);
const NOBODY: u32 = 65534;

/// Runs perl as `uid`/`gid` with supplementary `groups` (none if empty): connects to
/// the Unix socket, sends a PowerDNS-style request and prints what happened.
fn connect_as(uid: u32, gid: u32, groups: &str, socket: &Path) -> String {
    let script = r#"
        use IO::Socket::UNIX;
        $SIG{PIPE} = 'IGNORE'; # the server may close before we write
        my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or do { print "connect failed: $!\n"; exit 0 };
        print $s "{\"method\":\"initialize\",\"parameters\":{}}\n";
        my $line = <$s>;
        print defined $line ? "reply: $line" : "closed without a reply\n";
    "#;
    let mut command = Command::new("setpriv");
    command.arg(format!("--reuid={uid}")).arg(format!("--regid={gid}"));
    if groups.is_empty() {
        command.arg("--clear-groups");
    } else {
        command.arg(format!("--groups={groups}"));
    }
    let out = command.args(["perl", "-e", script]).arg(socket).output().expect("setpriv perl");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn group_id(name: &str) -> u32 {
    let out = Command::new("getent").args(["group", name]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split(':').nth(2).unwrap().trim().parse().unwrap()
}

fn socket_counters(w: &World, socket: &str) -> serde_json::Value {
    let stats = w.controller.ctl(&["stats"]).unwrap();
    stats["stats"]["sockets"][socket].clone()
}

/// Each target's (state, since) from `ctl status`.
fn target_states(w: &World) -> BTreeMap<String, (String, String)> {
    let status = w.controller.ctl(&["status"]).unwrap();
    status["status"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                (t["state"].to_string(), t["since"].as_str().unwrap().to_string()),
            )
        })
        .collect()
}

fn tcp_answers(w: &World) -> std::collections::BTreeSet<String> {
    let server = std::net::SocketAddr::new(w.lab.server_addr(false), 53);
    let query = dns::query(9, "www.example.test", RecordType::A, None).unwrap();
    let reply = dns::exchange_tcp(&w.lab.client_ns, server, &query).unwrap();
    dns::addresses(&dns::parse(&reply).unwrap()).iter().map(|a| a.to_string()).collect()
}

#[test]
fn only_root_and_the_powerdns_group_may_use_the_sockets() {
    let w = world_custom(&format!("{SITE_GROUPS}{NAMES}"), true, "", None);
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    let socket = w.powerdns_socket.clone().unwrap();
    let pdns_gid = group_id("pdns");

    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660, "PowerDNS socket mode");
    assert_eq!((meta.uid(), meta.gid()), (0, pdns_gid), "owned by root, group pdns");

    // Root (PowerDNS here runs as root) is served.
    let root = connect_as(0, 0, "", &socket);
    assert!(root.contains("\"result\":true}"), "{root}");
    // Debian's nobody: the file mode stops it.
    let nobody = connect_as(NOBODY, NOBODY, "", &socket);
    assert!(nobody.contains("connect failed: Permission denied"), "{nobody}");
    // A member of group pdns whose process runs under the pdns gid: allowed.
    let pdns_member = connect_as(NOBODY, pdns_gid, "", &socket);
    assert!(pdns_member.contains("\"result\":true}"), "{pdns_member}");
    // The file mode lets a supplementary member of pdns connect, but its process's
    // credentials (SO_PEERCRED: primary gid) are not the PowerDNS group's: refused.
    let before = socket_counters(&w, "powerdns")["refused_peer"].as_u64().unwrap();
    let sneaky = connect_as(NOBODY, NOBODY, &pdns_gid.to_string(), &socket);
    assert!(sneaky.contains("closed without a reply"), "{sneaky}");
    assert_eq!(socket_counters(&w, "powerdns")["refused_peer"].as_u64().unwrap(), before + 1);

    // The control socket: root only.
    let out = Command::new("setpriv")
        .args([&format!("--reuid={NOBODY}"), &format!("--regid={NOBODY}"), "--clear-groups"])
        .arg(binary())
        .args(["ctl", "--socket"])
        .arg(&w.controller.control_socket)
        .args(["target", "web1", "down"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Permission denied"), "{text}");
    // And nothing changed.
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
}

#[test]
fn a_connection_flood_is_refused_beyond_the_cap_and_checks_carry_on() {
    const CAP: usize = 8;
    let mut w = world_custom(
        &format!("{SITE_GROUPS}{NAMES}"),
        true,
        &format!("max_connections = {CAP}\nidle_timeout = \"1h\""),
        None,
    );
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    // PowerDNS opens its connections with its first lookups.
    assert_eq!(tcp_answers(&w), set(&[WEB1, WEB2]));
    let socket = w.powerdns_socket.clone().unwrap();
    let before = socket_counters(&w, "powerdns");

    // Hold many more connections than the cap, as a runaway or hostile local root
    // process in the PowerDNS group would.
    let held: Vec<UnixStream> = (0..CAP + 40).filter_map(|_| UnixStream::connect(&socket).ok()).collect();
    assert_eq!(held.len(), CAP + 40, "the kernel queues every connect; the controller decides");
    std::thread::sleep(Duration::from_millis(500));
    let after = socket_counters(&w, "powerdns");
    let refused = after["refused_busy"].as_u64().unwrap() - before["refused_busy"].as_u64().unwrap();
    let accepted = after["accepted"].as_u64().unwrap() - before["accepted"].as_u64().unwrap();
    assert!(refused >= 40, "at least the excess is refused and counted: {after}");
    assert!(accepted <= CAP as u64, "no more than the cap is served: {after}");

    // Checks carry on: a backend going down and coming back is seen, `ctl` answers.
    w.backends[1].stop();
    w.expect("www.example.test", &[WEB1], SOON);
    w.backends[1].resume().unwrap();
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    let states = target_states(&w);
    assert!(states.values().all(|(state, _)| state == "\"up\""), "{states:?}");
    drop(held);
}

#[test]
fn out_of_descriptors_is_a_local_error_and_no_target_goes_down() {
    // A low limit and a socket cap above it, so held connections exhaust the daemon.
    const LIMIT: u64 = 128;
    let mut w = world_custom(
        &format!("{SITE_GROUPS}{NAMES}"),
        true,
        "max_connections = 1000\nidle_timeout = \"1h\"",
        Some(LIMIT),
    );
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    let before = target_states(&w);
    let pid = w.controller.pid().unwrap();
    let open_fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as u64;
    let socket = w.powerdns_socket.clone().unwrap();

    let mut held = Vec::new();
    while open_fds() < LIMIT && held.len() < LIMIT as usize {
        held.push(UnixStream::connect(&socket).unwrap());
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(open_fds() >= LIMIT - 1, "the daemon is out of descriptors ({} open)", open_fds());
    // These wait in the listen backlog: accepting them fails (EMFILE).
    held.extend((0..4).map(|_| UnixStream::connect(&socket).unwrap()));
    // Checks run every 200 ms with fall = 1: a second of failed checks would have taken
    // every target down.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(w.answers("www.example.test"), set(&[WEB1, WEB2]));
    drop(held);

    // Once descriptors are free again, `ctl` answers: nothing moved, and the local errors
    // were counted and named.
    let status = primwatch_tests::wait_for(Duration::from_secs(5), || w.controller.ctl(&["status"]).ok()).unwrap();
    let after = target_states(&w);
    assert_eq!(before, after, "no target changed state");
    let local_errors: u64 = status["status"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["checks"].as_array().unwrap().iter())
        .map(|c| c["local_errors"].as_u64().unwrap())
        .sum();
    assert!(local_errors > 0, "local errors counted: {status}");
    let log = w.controller.log();
    assert!(log.contains("check could not run on this host"), "{log}");
    assert!(!log.contains("target down"), "{log}");
    let counters = socket_counters(&w, "powerdns");
    assert!(counters["accept_errors"].as_u64().unwrap() > 0, "{counters}");
    // And checks judge again: a real failure is still seen.
    w.backends[0].stop();
    w.expect("www.example.test", &[WEB2], SOON);
}

#[test]
fn hooks_run_in_order_per_target_as_the_exec_user_with_a_clean_environment() {
    let dir = primwatch_tests::TempDir::new("hookorder").unwrap();
    let file = dir.0.join("changes");
    std::fs::write(&file, "").unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    // "down" is slow and "up" fast: run side by side, an up would be written first.
    let mut w = primwatch_tests::world::world(&format!(
        r#"
[hooks]
on_change = ["sh", "-c", "[ $PRIMWATCH_NEW_STATE = down ] && sleep 0.8; echo \"$PRIMWATCH_SEQ $PRIMWATCH_KIND $PRIMWATCH_NAME $PRIMWATCH_NEW_STATE $(id -un) ${{RUST_LOG:-clean}}\" >> {}"]
timeout = "3s"
{SITE_GROUPS}{NAMES}"#,
        file.display()
    ));
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    for _ in 0..2 {
        w.backends[0].stop();
        w.expect("www.example.test", &[WEB2], SOON);
        w.backends[0].resume().unwrap();
        w.expect("www.example.test", &[WEB1, WEB2], SOON);
    }
    let text = primwatch_tests::wait_for(Duration::from_secs(6), || {
        let text = std::fs::read_to_string(&file).unwrap();
        (text.lines().filter(|l| l.contains(" target web1 ")).count() >= 4).then_some(text)
    })
    .unwrap_or_else(|| std::fs::read_to_string(&file).unwrap());
    let web1: Vec<Vec<&str>> =
        text.lines().filter(|l| l.contains(" target web1 ")).map(|l| l.split(' ').collect()).collect();
    let states: Vec<&str> = web1.iter().map(|f| f[3]).collect();
    assert_eq!(states, ["down", "up", "down", "up"], "delivered in order:\n{text}");
    let seqs: Vec<u64> = web1.iter().map(|f| f[0].parse().unwrap()).collect();
    assert!(seqs.windows(2).all(|p| p[0] < p[1]), "PRIMWATCH_SEQ rises: {seqs:?}");
    assert!(
        web1.iter().all(|f| f[4] == "primwatch" && f[5] == "clean"),
        "as the exec user, environment cleared:\n{text}"
    );
}

#[test]
fn check_config_refuses_commands_others_could_change() {
    let dir = primwatch_tests::TempDir::new("cmdperm").unwrap();
    let script = dir.0.join("check.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let config = dir.0.join("primwatch.toml");
    let text = format!(
        "[server]\ninterfaces = [\"lo\"]\n\n[checks.script]\ntype = \"exec\"\ncommand = [\"{}\"]\n",
        script.display()
    );
    std::fs::write(&config, &text).unwrap();
    let out = Command::new(binary()).arg("check-config").arg(&config).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":6:") && err.contains("writable by group or others (mode 0777)"), "{err}");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new(binary()).arg("check-config").arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // And a hook the same way.
    std::fs::write(&config, "[server]\ninterfaces = [\"lo\"]\n[hooks]\non_change = [\"/tmp\"]\n").unwrap();
    let out = Command::new(binary()).arg("check-config").arg(&config).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hooks.on_change") && err.contains("/tmp"), "{err}");
}

/// ICMP Echo Replies from `from` to `to`, one per identifier 0..=65535, all with
/// sequence 0 and a zero payload (what the echo used to send), through a raw socket.
fn spray_echo_replies(socket: &std::os::fd::OwnedFd, to: std::net::Ipv4Addr) {
    use std::os::fd::AsRawFd as _;
    let dest = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(to).to_be() },
        sin_zero: [0; 8],
    };
    for id in 0..=u16::MAX {
        let mut packet = [0u8; 24]; // type 0 (echo reply), code 0, checksum, id, seq 0, 16 zero bytes
        packet[4..6].copy_from_slice(&id.to_be_bytes());
        let sum: u32 = packet.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]) as u32).sum();
        let sum = (sum & 0xffff) + (sum >> 16);
        packet[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        // SAFETY: sends the buffer to the address, both live for the call.
        unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&dest as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
    }
}

/// InEchoReps of the namespace `ns` (/proc/net/snmp as its threads see it).
fn echo_replies_received(ns: &str) -> u64 {
    primwatch_tests::netns::run_in(ns, || {
        let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
        let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp: "));
        let (names, values) = (icmp.next().unwrap(), icmp.next().unwrap());
        let at = names.split_whitespace().position(|n| n == "InEchoReps").unwrap();
        values.split_whitespace().nth(at).unwrap().parse().unwrap()
    })
    .unwrap()
}

/// The world plus target `pinged` (10.99.1.13), checked by ICMP every 200 ms.
fn pinged_world() -> World {
    pinged_world_at("10.99.1.13")
}

/// As `pinged_world`, with the target at `address`.
fn pinged_world_at(address: &str) -> World {
    primwatch_tests::world::world(&format!(
        r#"
[checks.ping]
type = "icmp"
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 1
[targets.pinged]
address = "{address}"
checks = ["ping"]
[groups.pinged]
members = ["pinged"]
[names."ping.example.test"]
groups = ["pinged"]
"#
    ))
}

fn wait_pinged(w: &World, want: &str) {
    primwatch_tests::wait_for(SOON, || (target_states(w)["pinged"].0 == format!("\"{want}\"")).then_some(()))
        .unwrap_or_else(|| panic!("pinged never {want}: {:?}", target_states(w)["pinged"]))
}

/// Makes the backend namespace ignore (or answer again) echo requests.
fn ignore_pings(w: &World, ignore: bool) {
    let setting = format!("net.ipv4.icmp_echo_ignore_all={}", ignore as u8);
    primwatch_tests::netns::sh("nsenter", &[&format!("--net=/run/netns/{}", w.net.ns), "sysctl", "-qw", &setting])
        .unwrap()
}

#[test]
fn spoofed_echo_replies_do_not_keep_a_dead_target_up() {
    let w = pinged_world();
    let state = |w: &World| target_states(w)["pinged"].0.clone();
    wait_pinged(&w, "up");
    // The target stops answering pings.
    ignore_pings(&w, true);
    wait_pinged(&w, "down");

    // Someone on the target's link sprays Echo Replies in its name for every identifier.
    let socket = primwatch_tests::netns::run_in(&w.net.ns, || {
        use std::os::fd::FromRawFd as _;
        // SAFETY: a new raw ICMP socket, owned from here on.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let from = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from(std::net::Ipv4Addr::new(10, 99, 1, 13)).to_be() },
            sin_zero: [0; 8],
        };
        // SAFETY: binds the socket we own to the target's address.
        let bound = unsafe {
            libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as u32)
        };
        assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
        unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
    })
    .unwrap();
    let server_side: std::net::Ipv4Addr = primwatch_tests::backend::SERVER_SIDE_ADDR.parse().unwrap();
    let before = echo_replies_received(&w.lab.server_ns);
    let started = std::time::Instant::now();
    let mut sweeps = 0;
    while started.elapsed() < Duration::from_secs(3) {
        spray_echo_replies(&socket, server_side);
        sweeps += 1;
        assert_eq!(state(&w), "\"down\"", "a spoofed reply brought the target back (sweep {sweeps})");
    }
    let received = echo_replies_received(&w.lab.server_ns) - before;
    assert!(received >= 65536, "the spoofed replies reached the server ({received} in {sweeps} sweeps)");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(state(&w), "\"down\"");

    // Real replies still count.
    ignore_pings(&w, false);
    wait_pinged(&w, "up");
}

#[test]
fn state_and_pin_directories_others_could_write_are_refused_by_check_config_and_run() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = primwatch_tests::TempDir::new("opendirs").unwrap();
    let open = dir.0.join("open");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = dir.0.join("primwatch.toml");
    let write = |state_dir: &Path, pin_dir: &str| {
        std::fs::write(
            &config,
            format!(
                "[server]\ninterfaces = [\"lo\"]\nstate_file = \"{}/state.json\"\npin_dir = \"{pin_dir}\"\ncontrol_socket = \"{}/ctl.sock\"\n",
                state_dir.display(),
                dir.0.display()
            ),
        )
        .unwrap();
    };
    let check = || Command::new(binary()).arg("check-config").arg(&config).output().unwrap();

    write(&open, "/sys/fs/bpf/pw-hardening-unused");
    let out = check();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.state_file") && err.contains("writable by group or others (mode 0777)"), "{err}");
    // run refuses the same, before it loads or attaches anything.
    let out = Command::new(binary()).args(["run", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.state_file") && err.contains("mode 0777"), "{err}");
    assert!(!Path::new("/sys/fs/bpf/pw-hardening-unused").exists(), "a refused run creates nothing");

    write(&dir.0, open.to_str().unwrap());
    let err = String::from_utf8_lossy(&check().stderr).to_string();
    assert!(err.contains("server.pin_dir") && err.contains("mode 0777"), "{err}");

    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o700)).unwrap();
    write(&open, "/sys/fs/bpf/pw-hardening-unused");
    let out = check();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_running_daemon_keeps_only_the_capabilities_it_uses_and_still_works() {
    let dir = primwatch_tests::TempDir::new("capsflag").unwrap();
    let flag = dir.0.join("down");
    let body = format!(
        r#"
[checks.ping]
type = "icmp"
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 1
[checks.script]
type = "exec"
command = ["sh", "-c", "test ! -e {}"]
interval = "200ms"
timeout = "200ms"
rise = 1
fall = 1
[targets.pinged]
address = "10.99.1.13"
checks = ["ping", "script"]
{SITE_GROUPS}{NAMES}
[groups.pinged]
members = ["pinged"]
[names."ping.example.test"]
groups = ["pinged"]
"#,
        flag.display()
    );
    let mut w = primwatch_tests::world::world(&body);
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    // Every thread of the process (capabilities are per thread; the runtime's and the
    // PowerDNS backend's threads exist before the drop).
    let pid = w.controller.pid().unwrap();
    let threads: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(threads.len() > 2, "a runtime with worker threads: {threads:?}");
    // CAP_KILL (5), CAP_SETGID (6), CAP_SETUID (7), CAP_NET_RAW (13).
    let kept = format!("{:016x}", (1u64 << 5) | (1 << 6) | (1 << 7) | (1 << 13));
    for thread in threads {
        let status = std::fs::read_to_string(thread.join("status")).unwrap();
        let field = |name: &str| {
            status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
        };
        for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
            assert_eq!(field(set), kept, "{set} of {}\n{status}", thread.display());
        }
        assert_eq!(field("CapInh:"), "0000000000000000");
        assert_eq!(field("NoNewPrivs:"), "1");
    }

    // Everything after start still works: checks (HTTP, ICMP, exec as the exec user),
    // map updates, a reload, the state file.
    wait_pinged(&w, "up");
    std::fs::write(&flag, "").unwrap();
    wait_pinged(&w, "down");
    std::fs::remove_file(&flag).unwrap();
    wait_pinged(&w, "up");
    w.backends[1].stop();
    w.expect("www.example.test", &[WEB1], SOON);
    assert_eq!(w.controller.ctl(&["reload"]).unwrap()["ok"], true);
    w.backends[1].resume().unwrap();
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    assert_eq!(w.controller.ctl(&["target", "web2", "down"]).unwrap()["ok"], true);
    w.expect("www.example.test", &[WEB1], SOON);
    w.controller.restart().unwrap();
    w.expect("www.example.test", &[WEB1], SOON); // the override survived in the state file
}

#[test]
fn an_exec_check_that_hangs_leaves_no_process_behind() {
    // The command starts a child that would outlive its shell; the timeout must end both.
    let w = primwatch_tests::world::world(
        r#"
[checks.hangs]
type = "exec"
command = ["sh", "-c", "sleep 20.25; exit 0"]
interval = "500ms"
timeout = "300ms"
rise = 1
fall = 1
[targets.hanging]
address = "10.99.1.13"
checks = ["hangs"]
[groups.hanging]
members = ["hanging"]
[names."hang.example.test"]
groups = ["hanging"]
"#,
    );
    let count = || {
        let out = Command::new("pgrep").args(["-cfx", "sleep 20.25"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().unwrap_or(0)
    };
    std::thread::sleep(Duration::from_secs(3)); // several runs, each timed out
    let state = target_states(&w)["hanging"].clone();
    assert_eq!(state.0, "\"down\"", "a command that hangs past the timeout fails");
    // At most the run in progress; none left from the timed-out runs.
    assert!(count() <= 1, "{} sleeps left behind", count());
    drop(w);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count(), 0, "nothing outlives primwatch");
}

/// Answers every ICMP echo request to `target` with an ICMP error (`icmp_type`,
/// `code`) quoting it, from the target's address — what a REJECTing firewall does.
fn reject_pings(
    ns: &str,
    target: std::net::Ipv4Addr,
    icmp_type: u8,
    code: u8,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    let socket = primwatch_tests::netns::run_in(ns, move || {
        // SAFETY: a new raw ICMP socket, owned from here on; bound to the target.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
            assert!(fd >= 0);
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: 0,
                sin_addr: libc::in_addr { s_addr: u32::from(target).to_be() },
                sin_zero: [0; 8],
            };
            assert_eq!(libc::bind(fd, (&addr as *const libc::sockaddr_in).cast(), 16), 0);
            let timeout = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&timeout as *const libc::timeval).cast(), 16);
            std::os::fd::OwnedFd::from_raw_fd(fd)
        }
    })
    .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            // SAFETY: reads into our buffer.
            let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 28 {
                continue;
            }
            let hlen = 4 * (buf[0] & 0x0f) as usize;
            if buf[hlen] != 8 || buf[16..20] != target.octets() {
                continue; // not an echo request to the target
            }
            let mut reply = vec![icmp_type, code, 0, 0, 0, 0, 0, 0];
            reply.extend_from_slice(&buf[..hlen + 8]); // the request's header and first 8 bytes
            let sum: u32 = reply.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum();
            let sum = (sum & 0xffff) + (sum >> 16);
            reply[2..4].copy_from_slice(&(!((sum & 0xffff) + (sum >> 16)) as u16).to_be_bytes());
            let to = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: 0,
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes([buf[12], buf[13], buf[14], buf[15]]) },
                sin_zero: [0; 8],
            };
            // SAFETY: sends our buffer to the requester.
            unsafe {
                libc::sendto(
                    socket.as_raw_fd(),
                    reply.as_ptr().cast(),
                    reply.len(),
                    0,
                    (&to as *const libc::sockaddr_in).cast(),
                    16,
                )
            };
        }
    });
}

#[test]
fn icmp_errors_quoting_our_echo_are_failures() {
    let w = pinged_world();
    let state = |w: &World| target_states(w)["pinged"].clone();
    wait_pinged(&w, "up");
    // Destination unreachable: network, host, port, administratively prohibited; time exceeded.
    for (icmp_type, code) in [(3u8, 10u8), (3, 1), (3, 3), (3, 13), (11, 0)] {
        ignore_pings(&w, true);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        reject_pings(&w.net.ns, "10.99.1.13".parse().unwrap(), icmp_type, code, stop.clone());
        wait_pinged(&w, "down");
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(state(&w).0, "\"down\"", "ICMP {icmp_type}/{code} kept it down");
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        ignore_pings(&w, false);
        wait_pinged(&w, "up");
    }
}

/// nft in `ns`, failing the test if it fails.
fn nft(ns: &str, args: &[&str]) {
    primwatch_tests::netns::sh("ip", &[&["netns", "exec", ns, "nft"], args].concat()).unwrap();
}

#[test]
fn icmpv6_errors_from_a_rejecting_firewall_are_failures() {
    // The pinged target over IPv6, behind a real firewall (nftables in its namespace).
    let w = pinged_world_at("fd99:1::13");
    use primwatch_tests::backend::{BACKEND_IF, SERVER_SIDE_IF};
    primwatch_tests::netns::ip(&[
        "-n",
        &w.lab.server_ns,
        "addr",
        "add",
        "fd99:1::1/64",
        "dev",
        SERVER_SIDE_IF,
        "nodad",
    ])
    .unwrap();
    primwatch_tests::netns::ip(&["-n", &w.net.ns, "addr", "add", "fd99:1::13/64", "dev", BACKEND_IF, "nodad"]).unwrap();
    wait_pinged(&w, "up");
    // Every Destination Unreachable code nftables' reject can send for an echo request.
    for code in ["no-route", "admin-prohibited", "addr-unreachable", "port-unreachable", "policy-fail", "reject-route"]
    {
        nft(&w.net.ns, &["add", "table", "inet", "pw"]);
        nft(&w.net.ns, &["add", "chain", "inet", "pw", "input", "{ type filter hook input priority 0; }"]);
        nft(
            &w.net.ns,
            &[
                "add",
                "rule",
                "inet",
                "pw",
                "input",
                "icmpv6",
                "type",
                "echo-request",
                "counter",
                "reject",
                "with",
                "icmpv6",
                "type",
                code,
            ],
        );
        wait_pinged(&w, "down");
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(target_states(&w)["pinged"].0, "\"down\"", "ICMPv6 {code} kept it down");
        // Not taken for a reply: surge-ping hands an ICMPv6 error quoting our echo to
        // the check (an error type) or not at all (a timeout); either way a failure.
        let status = w.controller.ctl(&["status"]).unwrap();
        let target =
            status["status"]["targets"].as_array().unwrap().iter().find(|t| t["name"] == "pinged").unwrap().clone();
        let last = target["checks"][0]["last"].as_str().unwrap_or_default().to_string();
        let failed = ["ICMP type 1 instead of an echo reply", "timeout", "timed out"].iter().any(|w| last.contains(w));
        assert!(failed, "{code}: {last}");
        // The firewall did reject our echoes (its counter), so errors were sent.
        let rules = std::process::Command::new("ip")
            .args(["netns", "exec", &w.net.ns, "nft", "list", "table", "inet", "pw"])
            .output()
            .unwrap();
        let rules = String::from_utf8_lossy(&rules.stdout);
        assert!(!rules.contains("counter packets 0 "), "{rules}");
        nft(&w.net.ns, &["delete", "table", "inet", "pw"]);
        wait_pinged(&w, "up");
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

#[test]
fn fifteen_hundred_black_holed_targets_leave_the_healthy_ones_checked() {
    // 1,500 targets whose SYNs are dropped (routed into the backend namespace, which
    // owns no such address and does not forward), each checked every second with a
    // 500 ms timeout: about 750 connects pending at any time, under an open-file limit
    // of 1,024 — more than the check budget derived from it ((1024 - 64) * 3/4 = 720).
    const DARK: usize = 1500;
    let mut body = format!("{SITE_GROUPS}{NAMES}");
    body.push_str("[checks.dark]\ntype = \"http\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1\n");
    let mut members = Vec::new();
    for i in 0..DARK {
        let address = format!("10.97.{}.{}", i / 250, 1 + i % 250);
        body.push_str(&format!("[targets.dark{i}]\naddress = \"{address}\"\nchecks = [\"dark\"]\n"));
        members.push(format!("\"dark{i}\""));
    }
    // In groups of 15 (a group holds at most 16 addresses per family), behind one name.
    let groups: Vec<String> = members.chunks(15).map(|c| c.join(", ")).collect();
    for (g, group) in groups.iter().enumerate() {
        body.push_str(&format!("[groups.dark{g}]\nmembers = [{group}]\npriority = {g}\n"));
    }
    let names: Vec<String> = (0..groups.len()).map(|g| format!("\"dark{g}\"")).collect();
    body.push_str(&format!("[names.\"dark.example.test\"]\ngroups = [{}]\nall_down = \"nodata\"\n", names.join(", ")));
    let mut w = world_custom(&body, false, "", Some(1024));
    primwatch_tests::netns::ip(&["-n", &w.lab.server_ns, "route", "add", "10.97.0.0/16", "via", WEB1]).unwrap();
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    // Every dark target is found down (fall = 1, one timed-out check each).
    let down = primwatch_tests::wait_for(Duration::from_secs(15), || {
        let states = target_states(&w);
        let down = states.iter().filter(|(n, (s, _))| n.starts_with("dark") && s == "\"down\"").count();
        (down == DARK).then_some(down)
    });
    assert_eq!(down, Some(DARK), "every black-holed target goes down");

    // Steady state, measured over 11 s (one local-error log window and then some): CPU
    // and log volume stay bounded.
    let pid = w.controller.pid().unwrap();
    let (cpu_before, log_before) = (cpu_seconds(pid), w.controller.log().len());
    std::thread::sleep(Duration::from_secs(11));
    let cpu = (cpu_seconds(pid) - cpu_before) / 11.0;
    let log = w.controller.log();
    let logged = log.len() - log_before;
    let sample: String = log[log_before..].lines().take(10).collect::<Vec<_>>().join("\n");
    eprintln!("steady: {cpu:.2} cores, {logged} log bytes in 11 s:\n{sample}");
    assert!(cpu < 0.5, "controller CPU {cpu:.2} cores");
    assert!(logged < 2048, "log volume in 11 s: {logged} bytes:\n{sample}");

    // The healthy targets are still checked: one going down and back is seen, `ctl`
    // answers meanwhile.
    assert_eq!(w.answers("www.example.test"), set(&[WEB1, WEB2]));
    w.backends[1].stop();
    w.expect("www.example.test", &[WEB1], SOON);
    w.backends[1].resume().unwrap();
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    let states = target_states(&w);
    assert!(["web1", "web2", "web3"].iter().all(|t| states[*t].0 == "\"up\""), "{:?}", &states["web1"]);
}
