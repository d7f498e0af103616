//! `primwatch ctl`'s words: the status, stats and fleet reports as the ctl client
//! prints them for a terminal (`--json` prints the same structures as JSON).

use crate::ops::control::{self, Status};

/// Prints `ctl status` for a terminal: dataplane, resolved hosts, targets and their checks, groups,
/// answer sets, names, fleet, zones, geoip and views.
pub fn print_status(status: &Status) {
    if !status.dataplane.is_empty() {
        println!("DATAPLANE  {}", status.dataplane);
    }
    if !status.resolved.is_empty() {
        println!("RESOLVED (targets given by host)");
        for r in &status.resolved {
            let addresses: Vec<String> = r.addresses.iter().map(|a| a.to_string()).collect();
            let when = if r.resolved_at.is_empty() {
                "never resolved".to_string()
            } else {
                format!("resolved {}", r.resolved_at)
            };
            println!("  {:<16} {} -> [{}]  {when}", r.target, r.host, addresses.join(", "));
            if !r.error.is_empty() {
                println!("      failing since {}: {}", r.failing_since, r.error);
            }
            if !r.left_out.is_empty() {
                println!("      left out: {}", r.left_out);
            }
        }
    }
    println!("TARGETS");
    println!("  {:<16} {:<22} {:<12} {:<8} {:<22} REASON", "NAME", "ADDRESS", "STATE", "ANSWERS", "SINCE");
    for t in &status.targets {
        println!(
            "  {:<16} {:<22} {:<12} {:<8} {:<22} {}",
            t.name,
            match t.check_address {
                Some(probed) => format!("{} (checks {probed})", t.address),
                None => t.address.to_string(),
            },
            t.state,
            if t.in_answers { "yes" } else { "no" },
            t.since,
            t.reason
        );
        for c in &t.checks {
            let latency = c.latency_ms.map_or("-".into(), |ms| format!("{ms:.1}ms"));
            let tcp = match (c.tcp_connect_ms, c.tcp_retransmits) {
                (Some(ms), Some(r)) => format!(" connect {ms:.2}ms retrans {r}"),
                _ => String::new(),
            };
            println!(
                "      check {:<12} {:<4} {:>9} runs {} failures {}{tcp}  {}",
                c.name,
                if c.up { "up" } else { "down" },
                latency,
                c.runs,
                c.failures,
                c.last
            );
            if let Some(local) = &c.local_error {
                println!("            NOT RUNNING ({} local errors): {local}", c.local_errors);
            } else if c.local_errors > 0 {
                println!("            {} local errors so far (none now)", c.local_errors);
            }
        }
    }
    println!("GROUPS");
    println!("  {:<16} {:<9} {:<12} {:<12} {:<10} PREEMPT", "NAME", "PRIORITY", "POLICY", "STATE", "ELIGIBLE");
    for g in &status.groups {
        let priority = if g.priority == g.configured_priority {
            g.priority.to_string()
        } else {
            format!("{} ({})", g.priority, g.configured_priority)
        };
        println!(
            "  {:<16} {:<9} {:<12} {:<12} {:<10} {}",
            g.name,
            priority,
            g.policy,
            g.state,
            format!("{}/{} (min {})", g.eligible, g.members, g.min_healthy),
            if g.preempt { "on" } else { "off" }
        );
    }
    let listed = status.names.len() + status.views.iter().map(|v| v.names.len()).sum::<usize>();
    if listed < status.name_entries {
        println!("ANSWER SETS ({} name entries; `--names` lists them all, `--name PATTERN` some)", status.name_entries);
        for s in &status.answer_sets {
            println!("  {} (ttl {}): {} names", s.source, s.ttl, s.names);
            println!("      A    [{}] from {}", s.a.join(", "), s.a_from);
            println!("      AAAA [{}] from {}", s.aaaa.join(", "), s.aaaa_from);
        }
    }
    println!("NAMES");
    for n in &status.names {
        print_name(n);
    }
    if let Some(f) = &status.fleet {
        let state = if f.connected { "connected".to_string() } else { format!("NOT CONNECTED ({})", f.error) };
        let since =
            crate::ops::control::format_time(std::time::UNIX_EPOCH + std::time::Duration::from_secs(f.since_unix));
        println!("FLEET    node {} under {} — etcd {} since {since}", f.node, f.prefix, state);
        if f.pending > 0 {
            println!("  {} overrides made here wait to be written", f.pending);
        }
        for o in &f.overrides {
            let when =
                crate::ops::control::format_time(std::time::UNIX_EPOCH + std::time::Duration::from_millis(o.at_ms));
            println!("  {:?} {}: {:?} (by {} at {when})", o.kind, o.name, o.action, o.node);
        }
        for key in &f.invalid {
            println!("  ignored (does not parse, too large or without a lease): {key}");
        }
        if f.invalid_more > 0 {
            println!("  ignored: {} more keys", f.invalid_more);
        }
        if f.sharded > 0 {
            println!(
                "  sharded targets: {} checked here of {} ({})",
                f.checked_here.len(),
                f.sharded,
                f.checked_here.join(", ")
            );
        }
        let mut nodes = vec![(format!("{} (this node)", f.node), &f.config)];
        nodes.extend(f.nodes.iter().map(|(n, r)| (n.clone(), r)));
        for (node, report) in nodes {
            println!("  config on {node}: {}", describe_report(report));
        }
    }
    print_feeds(&status.feeds);
    if !status.zones.is_empty() {
        println!("ZONES");
        for z in &status.zones {
            match &z.signing {
                None => println!("  {} dnssec {}", z.apex, z.dnssec),
                Some(s) => println!(
                    "  {} dnssec sign: key {} (tag {}, algorithm {}), {} signatures in XDP, valid {} s, next renewal {}",
                    z.apex, s.key_file, s.key_tag, s.algorithm, s.signatures, s.validity_seconds, s.next_renewal
                ),
            }
        }
    }
    if let Some(g) = &status.geoip {
        println!("GEOIP    {} ({}, built {}, {} networks)", g.path, g.database_type, g.built, g.networks);
        for (view, n) in &g.prefixes {
            println!("  view {view}: {n} networks");
        }
    }
    if !status.views.is_empty() {
        println!("VIEWS");
        for v in &status.views {
            println!("  {} (id {}, {} prefixes)", v.name, v.id, v.prefixes);
            for n in &v.names {
                print_name(n);
            }
        }
    }
}

/// Prints `ctl stats` for a terminal: XDP verdicts, answers per name, check results and latency,
/// target and group states, map syncs, reloads, lost log lines and socket counters.
pub fn print_stats(stats: &crate::ops::metrics::Stats) {
    let ms = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("≤{:.1}ms", s * 1000.0));
    println!("XDP");
    for (verdict, count) in &stats.xdp {
        println!("  {verdict:<24} {count}");
    }
    if stats.names.len() < stats.name_entries {
        println!("ANSWERS (XDP; the {} busiest of {} name entries)", stats.names.len(), stats.name_entries);
    } else {
        println!("ANSWERS (XDP)");
    }
    println!("  {:<32} {:<12} {:>12} {:>12}", "NAME", "VIEW", "A", "AAAA");
    for n in &stats.names {
        println!("  {:<32} {:<12} {:>12} {:>12}", n.name, n.view, n.a_answers, n.aaaa_answers);
    }
    println!("CHECKS");
    println!("  {:<16} {:<12} {:>9} {:>9} {:>10} {:>10}", "TARGET", "CHECK", "OK", "FAILED", "P50", "P99");
    for c in &stats.checks {
        let h = &c.latency_seconds;
        println!(
            "  {:<16} {:<12} {:>9} {:>9} {:>10} {:>10}",
            c.target,
            c.check,
            c.ok,
            c.failed,
            ms(h.quantile(0.5)),
            ms(h.quantile(0.99))
        );
    }
    for (title, list) in [("TARGETS", &stats.targets), ("GROUPS", &stats.groups)] {
        println!("{title}");
        for s in list.iter() {
            let state = match (s.up, s.in_answers) {
                (true, true) => "up",
                (true, false) => "up, out of answers",
                (false, true) => "down, in answers",
                (false, false) => "down",
            };
            println!("  {:<16} {:<20} since {}", s.name, state, control::format_time(s.since));
        }
    }
    let m = &stats.map;
    println!(
        "MAPS     {} syncs, {} entries written, {} deleted, sync p50 {} p99 {}",
        m.syncs,
        m.entries_written,
        m.entries_deleted,
        ms(m.sync_seconds.quantile(0.5)),
        ms(m.sync_seconds.quantile(0.99))
    );
    println!("RELOADS  {} applied, {} rejected", stats.reloads.applied, stats.reloads.rejected);
    println!("LOGS     {} lines lost (stderr closed, full or blocked)", stats.log_lines_lost);
    println!(
        "TAP      {} packets read, dropped: {} capture, {} dnstap, {} ring (XDP)",
        stats.tap.packets,
        stats.tap.capture_dropped,
        stats.tap.dnstap_dropped,
        stats.xdp.get("tap_dropped").copied().unwrap_or(0)
    );
    for (socket, c) in &stats.sockets {
        println!(
            "SOCKET   {socket}: {} accepted, refused {} (peer not allowed) {} (all slots busy), {} idle closed, {} accept errors",
            c.accepted, c.refused_peer, c.refused_busy, c.closed_idle, c.accept_errors
        );
    }
}

/// `ctl status`'s FEEDS section: per feed its source, kinds, last batch and its fate.
fn print_feeds(feeds: &[(String, crate::feeds::FeedStatus)]) {
    if feeds.is_empty() {
        return;
    }
    println!("FEEDS");
    let when = |t: Option<std::time::SystemTime>| t.map_or("never".to_string(), crate::ops::control::format_time);
    for (name, f) in feeds {
        let freshness = match (f.stale, f.restored) {
            (true, _) => "STALE",
            (false, true) => "restored",
            (false, false) => "fresh",
        };
        println!("  {name:<12} {freshness:<8} {} ({})", f.source, f.kinds.join(", "));
        println!(
            "    in use: {} items, {} bytes, applied {}; last batch {}: {}",
            f.items,
            f.bytes,
            when(f.last_good_at),
            when(f.last_batch_at),
            f.result
        );
        println!("    batches: {} applied, {} refused, {} source failures", f.applied, f.refused, f.failed);
    }
}

/// One node's config as `ctl status` and `fleet push` show it.
pub fn describe_report(report: &crate::fleet::NodeReport) -> String {
    let running = match report.revision {
        0 => "its own file".to_string(),
        r => format!("pushed revision {r}"),
    };
    match report.refused {
        0 => running,
        r => format!("{running}; REFUSED revision {r}: {}", report.error),
    }
}

fn print_name(n: &crate::ops::control::NameStatus) {
    println!("  {} (ttl {})", n.name, n.ttl);
    println!("      A    [{}] from {}", n.a.join(", "), n.a_from);
    println!("      AAAA [{}] from {}", n.aaaa.join(", "), n.aaaa_from);
}
