//! Bytes carried as base64 in JSON ([`B64`]): job output in control events,
//! signatures and nonces in the peer protocol.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Bytes carried as base64 in JSON, so binary output survives byte for byte.
///
/// `T` holds the bytes: a `Vec<u8>` (the default), or [`bytes::Bytes`] for a
/// job's output (`PeerMsg::Output` in `peer.rs`), which the daemon passes on
/// as shared chunks: a target writes its own chunk to the socket without
/// copying it into a frame.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct B64<T = Vec<u8>>(pub T);

impl<T: AsRef<[u8]>> std::fmt::Debug for B64<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "B64({} bytes)", self.0.as_ref().len())
    }
}

impl<T: AsRef<[u8]>> Serialize for B64<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(self.0.as_ref()))
    }
}

impl<'de, T: From<Vec<u8>>> Deserialize<'de> for B64<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(|v| B64(T::from(v)))
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
        // The same text whatever holds the bytes.
        let shared = B64(bytes::Bytes::from(b.0.clone()));
        assert_eq!(serde_json::to_string(&shared).unwrap(), j);
        assert_eq!(
            serde_json::from_str::<B64<bytes::Bytes>>(&j).unwrap(),
            shared
        );
    }
}
