//! Views by country, continent and AS number from a MaxMind DB file the tests write
//! themselves (`primwatch_tests::mmdb`): real queries from several source addresses and
//! client subnets get their country's view on both paths — XDP (BPF_PROG_TEST_RUN and
//! the lab) and PowerDNS (the lab, TCP) — hand-written sources win over the database,
//! `ctl explain` and `ctl status` say where a view came from, `mmdblookup` reads the
//! same file, and bad codes or databases are refused with the line.

use std::{collections::BTreeSet, net::IpAddr, path::Path, time::Duration};

use hickory_proto::rr::RecordType;
use primwatch_tests::{
    dns::{self, EdnsQuery},
    harness::{Harness, XDP_TX},
    mmdb::{self, Writer},
    packet::{udp_frame, verify_checksums, Flow},
    world::{set, world_with, WEB1, WEB2, WEB3},
    TempDir,
};

/// Japan, China, two European countries, one network nobody's view takes, IPv4 and
/// IPv6; 198.51.100.0/24 (JP) has a hand-written /25 of another view inside it, and
/// 5.0.0.0/8 is hand-written over DE's 5.1.0.0/16.
fn country_database(path: &Path) {
    let mut w = Writer::new("GeoLite2-Country", 1_764_460_800);
    let v4 = |s: &str| -> IpAddr { s.parse().unwrap() };
    w.insert(v4("1.0.16.0"), 20, mmdb::country("JP", "AS"))
        .insert(v4("1.0.0.0"), 24, mmdb::country("CN", "AS"))
        .insert(v4("2.16.0.0"), 13, mmdb::country("FR", "EU"))
        .insert(v4("5.1.0.0"), 16, mmdb::country("DE", "EU"))
        .insert(v4("198.51.100.0"), 24, mmdb::country("JP", "AS"))
        .insert(v4("203.0.113.0"), 24, mmdb::country("US", "NA"))
        .insert(v4("2001:db8:1::"), 48, mmdb::country("JP", "AS"))
        .insert(v4("2001:db8:2::"), 48, mmdb::country("CN", "AS"));
    w.write(path).unwrap();
}

fn config(database: &Path) -> String {
    format!(
        r#"
[geoip]
database = "{}"

[targets.jp]
address = "10.0.0.1"
[targets.cn]
address = "10.0.0.2"
[targets.eu]
address = "10.0.0.3"
[targets.office]
address = "10.0.0.4"
[targets.world]
address = "10.0.0.9"
[groups.jp]
members = ["jp"]
[groups.cn]
members = ["cn"]
[groups.eu]
members = ["eu"]
[groups.office]
members = ["office"]
[groups.world]
members = ["world"]

[names."www.example.test"]
groups = ["world"]

[views.japan]
countries = ["JP"]
[views.japan.names."www.example.test"]
groups = ["jp"]
[views.china]
countries = ["cn"]
[views.china.names."www.example.test"]
groups = ["cn"]
[views.europe]
continents = ["EU"]
[views.europe.names."www.example.test"]
groups = ["eu"]
[views.office]
sources = ["198.51.100.128/25", "5.0.0.0/8"]
[views.office.names."www.example.test"]
groups = ["office"]
"#,
        database.display()
    )
}

/// XDP's A answer for a query from `src`, with an ECS option if `subnet` is given;
/// and the ECS scope the reply claims.
fn ask(h: &Harness, src: &str, subnet: Option<(u16, u8, &[u8])>) -> (String, Option<u8>) {
    let mut flow = Flow::client_to_server(src.contains(':'));
    flow.src = src.parse().unwrap();
    let edns = subnet.map(|(family, len, address)| {
        let mut body = family.to_be_bytes().to_vec();
        body.extend_from_slice(&[len, 0]);
        body.extend_from_slice(address);
        EdnsQuery { options: vec![(8, body)], ..EdnsQuery::default() }
    });
    let query = dns::query(3, "www.example.test", RecordType::A, edns).unwrap();
    let out = h.run(&udp_frame(&flow, 64, &query)).unwrap();
    assert_eq!(out.verdict, XDP_TX, "{src}");
    let reply = dns::parse(&verify_checksums(&out.frame).unwrap()).unwrap();
    let answers = dns::addresses(&reply);
    assert_eq!(answers.len(), 1, "{src}: {answers:?}");
    (answers[0].to_string(), dns::ecs_scope(&reply))
}

#[test]
fn countries_and_continents_pick_views_in_xdp() {
    let dir = TempDir::new("geoip").unwrap();
    let database = dir.0.join("country.mmdb");
    country_database(&database);
    let h = Harness::new(53, &config(&database)).unwrap();
    for (src, want) in [
        ("1.0.16.5", "10.0.0.1"),           // JP
        ("1.0.31.255", "10.0.0.1"),         // JP, the /20's last address
        ("1.0.32.1", "10.0.0.9"),           // just outside it: no view
        ("1.0.0.7", "10.0.0.2"),            // CN (the view says "cn": codes are case-folded)
        ("2.16.1.1", "10.0.0.3"),           // FR, by continent EU
        ("203.0.113.5", "10.0.0.9"),        // US: no view asks for it
        ("198.51.100.10", "10.0.0.1"),      // JP's /24 ...
        ("198.51.100.200", "10.0.0.4"),     // ... but the office's hand-written /25 inside it
        ("5.1.2.3", "10.0.0.4"),            // DE's /16 inside the office's hand-written /8
        ("2001:db8:1::5", "10.0.0.1"),      // JP over IPv6
        ("2001:db8:2:ffff::1", "10.0.0.2"), // CN over IPv6
    ] {
        assert_eq!(ask(&h, src, None).0, want, "from {src}");
    }
    // The client subnet decides (the packet comes from a US address); the scope is the
    // database network's length, or longer where another view's prefix is nested.
    assert_eq!(ask(&h, "203.0.113.5", Some((1, 24, &[1, 0, 16]))), ("10.0.0.1".into(), Some(20)));
    assert_eq!(ask(&h, "203.0.113.5", Some((1, 24, &[1, 0, 0]))), ("10.0.0.2".into(), Some(24)));
    assert_eq!(ask(&h, "203.0.113.5", Some((1, 24, &[198, 51, 100]))), ("10.0.0.1".into(), Some(25)));
    assert_eq!(ask(&h, "1.0.16.5", Some((2, 48, &[0x20, 0x01, 0x0d, 0xb8, 0, 2]))), ("10.0.0.2".into(), Some(48)));
}

#[test]
fn an_asn_database_picks_views_by_as_number() {
    let dir = TempDir::new("geoip-asn").unwrap();
    let database = dir.0.join("asn.mmdb");
    let mut w = Writer::new("GeoLite2-ASN", 1_764_460_800);
    w.insert("1.0.16.0".parse().unwrap(), 20, mmdb::asn(2497, "Internet Initiative Japan Inc."))
        .insert("1.0.0.0".parse().unwrap(), 24, mmdb::asn(13335, "Cloudflare"))
        .insert("2001:db8:1::".parse().unwrap(), 48, mmdb::asn(2497, "Internet Initiative Japan Inc."));
    w.write(&database).unwrap();
    let text = format!(
        "[geoip]\ndatabase = \"{}\"\n[names.\"www.example.test\"]\na = [\"10.0.0.9\"]\n\
         [views.iij]\nasns = [2497]\n[views.iij.names.\"www.example.test\"]\ngroups = [\"iij\"]\n\
         [targets.iij]\naddress = \"10.0.0.1\"\n[groups.iij]\nmembers = [\"iij\"]\n",
        database.display()
    );
    let h = Harness::new(53, &text).unwrap();
    assert_eq!(ask(&h, "1.0.20.1", None).0, "10.0.0.1");
    assert_eq!(ask(&h, "2001:db8:1:2::3", None).0, "10.0.0.1");
    assert_eq!(ask(&h, "1.0.0.1", None).0, "10.0.0.9");
    // Countries from an ASN database: refused, the database line named.
    let wrong = text.replace("asns = [2497]", "countries = [\"JP\"]");
    let err =
        primwatch::config::Config::parse(Path::new("t.toml"), &format!("[server]\ninterfaces = [\"lo\"]\n{wrong}"))
            .unwrap_err();
    assert_eq!(err.line, 4, "{err}");
    assert!(err.reason.contains("has no country data"), "{err}");
}

#[test]
fn bad_codes_and_databases_are_refused_with_the_line() {
    let dir = TempDir::new("geoip-bad").unwrap();
    let database = dir.0.join("country.mmdb");
    country_database(&database);
    let good = format!("[server]\ninterfaces = [\"lo\"]\n{}", config(&database));
    let parse = |text: &str| primwatch::config::Config::parse(Path::new("t.toml"), text);
    let loaded = parse(&good).unwrap();
    let mapping = loaded.geoip.as_ref().unwrap();
    assert_eq!((mapping.database_type.as_str(), mapping.networks), ("GeoLite2-Country", 8));
    let line_of = |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    for (from, to, says) in [
        ("countries = [\"JP\"]", "countries = [\"JX\"]", "'JX' is not an ISO 3166-1 alpha-2 country code"),
        ("countries = [\"JP\"]", "countries = [\"Japan\"]", "'Japan' is not an ISO 3166-1"),
        ("continents = [\"EU\"]", "continents = [\"EUR\"]", "'EUR' is not a continent code"),
        ("countries = [\"cn\"]", "countries = [\"JP\"]", "country JP is in views 'china' and 'japan'"),
    ] {
        let text = good.replace(from, to);
        let err = parse(&text).unwrap_err();
        assert!(err.reason.contains(says), "{to}: {err}");
        assert_eq!(err.line, line_of(&text, to), "{to}: {err}");
    }
    // Countries without a database.
    let text = good.replace(&format!("[geoip]\ndatabase = \"{}\"\n", database.display()), "");
    let err = parse(&text).unwrap_err();
    assert!(err.reason.contains("needs a database: set [geoip] database"), "{err}");
    // A missing, truncated, or garbage database: the database line, the reason.
    let bytes = std::fs::read(&database).unwrap();
    let broken = dir.0.join("broken.mmdb");
    for (content, says) in [
        (None, "cannot read"),
        (Some(bytes[..bytes.len() / 2].to_vec()), "cannot read"),
        (Some(b"not a database at all".to_vec()), "cannot read"),
    ] {
        let _ = std::fs::remove_file(&broken);
        if let Some(content) = content {
            std::fs::write(&broken, content).unwrap();
        }
        let text = good.replace(database.to_str().unwrap(), broken.to_str().unwrap());
        let err = parse(&text).unwrap_err();
        assert!(err.reason.starts_with("geoip.database: ") && err.reason.contains(says), "{err}");
        assert_eq!(err.line, line_of(&text, "database = "), "{err}");
    }
}

#[test]
fn mmdblookup_reads_the_test_database() {
    let dir = TempDir::new("geoip-lookup").unwrap();
    let database = dir.0.join("country.mmdb");
    country_database(&database);
    let lookup = |address: &str, path: &[&str]| -> String {
        let out = std::process::Command::new("mmdblookup")
            .arg("--file")
            .arg(&database)
            .args(["--ip", address])
            .args(path)
            .output()
            .expect("mmdblookup (Debian mmdb-bin, installed by cargo xtask setup)");
        assert!(out.status.success(), "{address}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(lookup("1.0.16.5", &["country", "iso_code"]).contains("\"JP\""));
    assert!(lookup("2.16.200.1", &["continent", "code"]).contains("\"EU\""));
    assert!(lookup("2001:db8:2::1", &["country", "iso_code"]).contains("\"CN\""));
    let out = std::process::Command::new("mmdblookup")
        .arg("--file")
        .arg(&database)
        .args(["--ip", "192.0.2.1"])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Could not find an entry"),
        "{out:?}"
    );
}

/// In the lab, with a database whose networks are the lab's client addresses: UDP
/// (XDP) and TCP (PowerDNS, through its remote backend) agree on the view, by source
/// address and by client subnet, and `ctl explain` and `ctl status` say why.
#[test]
fn both_paths_answer_by_country_in_the_lab() {
    let dir = TempDir::new("geoip-lab").unwrap();
    let database = dir.0.join("lab.mmdb");
    let mut db = Writer::new("GeoLite2-Country", 1_764_460_800);
    db.insert("10.77.0.3".parse().unwrap(), 32, mmdb::country("JP", "AS")).insert(
        "198.51.100.0".parse().unwrap(),
        24,
        mmdb::country("CN", "AS"),
    );
    db.write(&database).unwrap();
    let w = world_with(
        &format!(
            r#"
[geoip]
database = "{}"
[groups.tokyo]
members = ["web1"]
[groups.beijing]
members = ["web3"]
[groups.everyone]
members = ["web2"]
[names."www.example.test"]
groups = ["everyone"]
[views.japan]
countries = ["JP"]
[views.japan.names."www.example.test"]
groups = ["tokyo"]
[views.china]
countries = ["CN"]
[views.china.names."www.example.test"]
groups = ["beijing"]
"#,
            database.display()
        ),
        true,
    );
    let ns = w.lab.client_ns.clone();
    primwatch_tests::netns::ip(&["-n", &ns, "addr", "add", "10.77.0.3/24", "dev", "pwc0"]).unwrap();
    w.expect("www.example.test", &[WEB2], Duration::from_secs(5));
    let japan: IpAddr = "10.77.0.3".parse().unwrap();
    assert_eq!(w.answers_from("www.example.test", japan), set(&[WEB1]));
    let server = std::net::SocketAddr::new(w.lab.server_addr(false), 53);
    let ecs = |prefix: [u8; 3]| EdnsQuery {
        options: vec![(8, [&[0, 1, 24, 0][..], &prefix[..]].concat())],
        ..EdnsQuery::default()
    };
    let query = dns::query(5, "www.example.test", RecordType::A, Some(ecs([198, 51, 100]))).unwrap();
    let sock = dns::udp_socket_from(&ns, w.lab.client_addr(false)).unwrap();
    let udp = dns::parse(&dns::exchange_udp(&sock, server, &query).unwrap()).unwrap();
    let tcp = dns::parse(&dns::exchange_tcp(&ns, server, &query).unwrap()).unwrap();
    let answers = |m: &hickory_proto::op::Message| -> BTreeSet<String> {
        dns::addresses(m).iter().map(|a| a.to_string()).collect()
    };
    assert_eq!(answers(&udp), set(&[WEB3]), "XDP: CN by the client subnet");
    assert_eq!(answers(&tcp), set(&[WEB3]), "PowerDNS: CN by the client subnet");
    assert_eq!((dns::ecs_scope(&udp), dns::ecs_scope(&tcp)), (Some(24), Some(24)));
    // The DO bit sends UDP to PowerDNS too (no zones declared): by source address.
    let do_query =
        dns::query(6, "www.example.test", RecordType::A, Some(EdnsQuery { dnssec_ok: true, ..EdnsQuery::default() }))
            .unwrap();
    let from_japan = dns::udp_socket_from(&ns, japan).unwrap();
    let before = w.pdns.stat("udp-queries").unwrap_or(0);
    let reply = dns::parse(&dns::exchange_udp(&from_japan, server, &do_query).unwrap()).unwrap();
    assert_eq!(answers(&reply), set(&[WEB1]), "PowerDNS: JP by source address");
    assert!(w.pdns.stat("udp-queries").unwrap() > before, "PowerDNS answered the DO=1 query");

    let explain = w.controller.ctl(&["explain", "www.example.test", "--from", "10.77.0.3"]).unwrap();
    let view = explain["explain"]["view"].as_str().unwrap().to_string();
    assert!(view.contains("country JP (GeoLite2-Country, network 10.77.0.3/32)"), "{view}");
    let status = w.controller.ctl(&["status"]).unwrap();
    let geoip = &status["status"]["geoip"];
    assert_eq!(geoip["database_type"], "GeoLite2-Country");
    assert_eq!(geoip["prefixes"]["china"], 1);
    assert_eq!(geoip["prefixes"]["japan"], 1);

    // The database replaced by rename, as geoipupdate does: 10.77.0.3 is now Chinese.
    let mut next = Writer::new("GeoLite2-Country", 1_764_547_200);
    next.insert("10.77.0.3".parse().unwrap(), 32, mmdb::country("CN", "AS"));
    let replace = |bytes: &[u8]| {
        let staged = dir.0.join("lab.mmdb.new");
        std::fs::write(&staged, bytes).unwrap();
        std::fs::rename(&staged, &database).unwrap();
    };
    replace(&next.to_bytes());
    primwatch_tests::wait_for(Duration::from_secs(5), || {
        (w.answers_from("www.example.test", japan) == set(&[WEB3])).then_some(())
    })
    .expect("the new database applied within 5 s");
    let status = w.controller.ctl(&["status"]).unwrap();
    assert_eq!(status["status"]["geoip"]["prefixes"]["japan"], 0);
    // A truncated file: refused, the mapping in force keeps serving.
    let bytes = next.to_bytes();
    replace(&bytes[..bytes.len() - 40]);
    primwatch_tests::wait_for(Duration::from_secs(5), || {
        w.controller.log().contains("geoip database not applied").then_some(())
    })
    .expect("the truncated database is refused");
    assert_eq!(w.answers_from("www.example.test", japan), set(&[WEB3]));
    assert_eq!(w.answers_from("www.example.test", w.lab.client_addr(false)), set(&[WEB2]));
}
