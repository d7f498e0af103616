//! A random-subdomain flood against a zone with negative answers: spoofed queries for
//! random names from random /24s (our sender, sendmmsg on the client veth), XDP
//! denying them from the zone PowerDNS transferred; in the same run, a flood of the
//! managed name alone, and one that mixes both half and half (does the machine keep
//! answering its own names while it denies?). Replies per second from XDP's counters,
//! machine CPU per reply, and how many queries reached PowerDNS.

use std::time::Duration;

use anyhow::{bail, Result};
use hickory_proto::rr::RecordType;
use primwatch_tests::{
    controller::Controller,
    dns,
    flood::{send_for, spoofed_frames},
    lab::{Lab, CLIENT_IF, SERVER_IF},
    netns,
    pdns::{self, PowerDns},
    raw::PacketSocket,
    wait_for,
};

use crate::{cpu_seconds, Row};

pub fn run(seconds: u64) -> Result<()> {
    let lab = Lab::new()?;
    let server = lab.server_addr(false);
    let zone = pdns::zone("example.test", server, &["mail 300 IN MX 10 mx.elsewhere.test."]);
    let pdns = PowerDns::start_with(
        &lab.server_ns,
        &[server],
        "example.test",
        &zone,
        &format!("allow-axfr-ips={server}/32\n"),
    )?;
    let start = |negative: bool| -> Result<Controller> {
        let zone = if negative {
            format!("negative_answers = true\ntransfer_from = \"{server}:53\"")
        } else {
            "negative_answers = false".to_string()
        };
        let config = format!(
            "[server]\ninterfaces = [\"{SERVER_IF}\"]\nxdp_mode = \"skb\"\npin_dir = \"{{pin_dir}}\"\n\
             [zones.\"example.test\"]\n{zone}\n[names.\"www.example.test\"]\na = [\"192.0.2.10\"]\n"
        );
        let controller = Controller::start(&lab.server_ns, &config)?;
        let published = wait_for(Duration::from_secs(15), || {
            let stats = controller.ctl(&["stats"]).ok()?;
            (stats["stats"]["zones"][0]["names"].as_u64()? > 0).then_some(())
        });
        if negative && published.is_none() {
            bail!("the zone was never published:\n{}", controller.log());
        }
        Ok(controller)
    };
    let template = lab.udp_flow(&lab.client_ns)?;
    let mut rng = primwatch_tests::XorShift(0x2545_f491_4f6c_dd1d);
    let hit = dns::query(0x1234, "www.example.test", RecordType::A, None)?;
    let random_name = |rng: &mut primwatch_tests::XorShift| {
        let name = format!("{:012x}.example.test", rng.next_u64() & 0xffff_ffff_ffff);
        dns::query(0x1234, &name, RecordType::A, None).unwrap()
    };
    let hits = spoofed_frames(&template, 65_536, false, &mut rng, |_| hit.clone());
    let random = spoofed_frames(&template, 65_536, false, &mut rng, random_name);
    let mut flip = false;
    let mixed = spoofed_frames(&template, 65_536, false, &mut rng, |rng| {
        flip = !flip;
        if flip {
            hit.clone()
        } else {
            random_name(rng)
        }
    });
    // Replies are not needed on the client side.
    netns::ip(&["-n", &lab.client_ns, "link", "set", "dev", CLIENT_IF, "xdp", "off"]).ok();
    let mut rows = Vec::new();
    let mut reached: Vec<u64> = Vec::new();
    let denying = start(true)?;
    let passing = |c| -> Result<Controller> {
        drop(c);
        start(false)
    };
    let mut controller = denying;
    for (label, frames, negative) in [
        ("www only (hits)", &hits, true),
        ("random names (NXDOMAIN)", &random, true),
        ("half www, half random names", &mixed, true),
        ("the same, negative_answers = false", &mixed, false),
    ] {
        if !negative {
            // Random names go to the slow-path guard (defaults): PowerDNS answers what
            // it lets through, the rest is held.
            controller = passing(controller)?;
        }
        let sock = PacketSocket::open(&lab.client_ns, CLIENT_IF)?;
        let before = controller.counters()?;
        let pdns_before = pdns.stat("udp-queries")?;
        let ((sent, elapsed), cpu) = cpu_seconds(|| send_for(&sock, frames, Duration::from_secs(seconds)))?;
        let after = controller.counters()?;
        let answered = (after.answered - before.answered) as f64 / elapsed;
        let denied = (after.negative_nxdomain - before.negative_nxdomain) as f64 / elapsed;
        let slipped = (after.slow_path_slipped - before.slow_path_slipped) as f64 / elapsed;
        let replies = answered + denied + slipped;
        rows.push((
            Row {
                label: label.into(),
                sent: sent as f64 / elapsed,
                answered: replies,
                cpu_us_per_answer: if replies > 0.0 { cpu * 1e6 / (replies * elapsed) } else { f64::NAN },
            },
            answered,
            denied,
        ));
        reached.push(pdns.stat("udp-queries")? - pdns_before);
    }
    println!("\n== A random-subdomain flood with negative answers, netns lab, sendmmsg, {seconds} s per row ==");
    println!(
        "{:<36} {:>12} {:>12} {:>12} {:>12} {:>16} {:>10}",
        "flood", "sent/s", "replies/s", "answers/s", "NXDOMAIN/s", "CPU µs / reply", "to pdns"
    );
    for ((r, answered, denied), reached) in rows.iter().zip(reached) {
        println!(
            "{:<36} {:>12.0} {:>12.0} {:>12.0} {:>12.0} {:>16.2} {:>10}",
            r.label, r.sent, r.answered, answered, denied, r.cpu_us_per_answer, reached
        );
    }
    Ok(())
}
