//! Link the unwinder into `d` itself (GCC's `libgcc_eh.a`, as `gcc
//! -static-libgcc` does for C programs) instead of loading `libgcc_s.so.1` at
//! every start. `d` is a new process for every command; mapping libgcc_s and
//! running its load-time CPU probe (CPUID, which traps to the hypervisor on a
//! VM) cost about 0.5 ms median per start here (bench/RESULTS.md, issue 20
//! target 1: a C `main` linked with and without it, 1,500 runs each).
//!
//! Only for glibc targets linked dynamically: musl and `crt-static` builds
//! link an unwinder statically already. `libgcc_eh.a` ships with gcc
//! (Debian: libgcc-12-dev, a dependency of gcc), which `cargo build` needs
//! as its linker anyway. `+whole-archive`: the binary's own native libraries
//! come before std on the link line, so without it no member would be taken;
//! with it the unwinder's symbols are defined before `-lgcc_s`, which
//! `--as-needed` then drops.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    if os == "linux" && env == "gnu" && !features.split(',').any(|f| f == "crt-static") {
        println!("cargo:rustc-link-lib=static:+whole-archive,-bundle=gcc_eh");
    }
}
