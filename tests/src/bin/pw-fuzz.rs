//! `cargo xtask fuzz -- [--frames N] [--seed S]`: the XDP fuzz harness for as long as
//! you like (see `primwatch_tests::fuzz`). Needs root.

use anyhow::{Context as _, Result};
use primwatch_tests::fuzz;

fn main() -> Result<()> {
    let mut frames = 1_000_000u64;
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().with_context(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--frames" => frames = value.parse()?,
            "--seed" => seed = value.parse()?,
            other => anyhow::bail!("unknown argument {other} (use --frames N, --seed S)"),
        }
    }
    let key_dir = std::env::temp_dir().join(format!("pw-fuzz-keys-{}", std::process::id()));
    std::fs::create_dir_all(&key_dir)?;
    let harness = fuzz::harness(&key_dir, fuzz::SLOW_PATH_OFF);
    let _ = std::fs::remove_dir_all(&key_dir);
    let harness = harness?;
    println!("fuzzing {frames} frames from seed {seed}");
    let started = std::time::Instant::now();
    let tally = fuzz::run(&harness, seed, frames)?;
    println!(
        "ok: {} frames ({} answered, {} denied, {} passed intact) in {:.1} s",
        tally.frames,
        tally.answered,
        tally.denied,
        tally.passed,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
