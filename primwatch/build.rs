//! Builds the XDP program (primwatch-ebpf) for bpfel-unknown-none with nightly and
//! bpf-linker, so the controller can embed the object. `cargo xtask setup` installs both.
fn main() -> anyhow::Result<()> {
    let ebpf_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../primwatch-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package { name: "primwatch-ebpf", root_dir: ebpf_dir, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
