//! Which peer protocol this daemon speaks: this build's newest
//! ([`d_proto::PROTOCOL_VERSION`]) unless `d-daemon --protocol-max N` caps
//! it, so one build can stand for an older daemon in a mixed mesh (the
//! compatibility tests: a peer-to-peer copy through an older peer).

/// The newest protocol this daemon speaks: [`d_proto::PROTOCOL_VERSION`]
/// unless capped with [`cap_protocol`].
static PROTOCOL_CAP: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Speak at most protocol `max` from now on (`d-daemon --protocol-max`), as
/// an older daemon would: hellos offer it, sessions negotiate below it, and
/// status shows it. Set once at start; `Err` when `max` is outside
/// [`d_proto::PROTOCOL_MIN`]..=[`d_proto::PROTOCOL_VERSION`] or already set.
pub fn cap_protocol(max: u32) -> Result<(), String> {
    if !(d_proto::PROTOCOL_MIN..=d_proto::PROTOCOL_VERSION).contains(&max) {
        return Err(format!(
            "--protocol-max {max}: this build speaks protocols {} to {}",
            d_proto::PROTOCOL_MIN,
            d_proto::PROTOCOL_VERSION
        ));
    }
    PROTOCOL_CAP
        .set(max)
        .map_err(|_| "the protocol is capped once, at start".to_string())
}

/// The newest peer protocol this daemon speaks (see [`cap_protocol`]).
pub fn ours() -> u32 {
    PROTOCOL_CAP
        .get()
        .copied()
        .unwrap_or(d_proto::PROTOCOL_VERSION)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cap_outside_what_this_build_speaks_is_refused() {
        for bad in [0, 1, d_proto::PROTOCOL_VERSION + 1] {
            let e = super::cap_protocol(bad).unwrap_err();
            assert!(e.contains(&format!("--protocol-max {bad}")), "{e}");
        }
        assert_eq!(super::ours(), d_proto::PROTOCOL_VERSION);
    }
}
