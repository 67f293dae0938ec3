//! Bytes carried as base64 in JSON ([`B64`]): job output in control events,
//! signatures and nonces in the peer protocol.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Bytes carried as base64 in JSON, so binary output survives byte for byte.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct B64(pub Vec<u8>);

impl std::fmt::Debug for B64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "B64({} bytes)", self.0.len())
    }
}

impl Serialize for B64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(B64)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64_roundtrip_binary() {
        let b = B64((0..=255u8).collect());
        let j = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<B64>(&j).unwrap(), b);
    }
}
