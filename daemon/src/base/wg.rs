//! The WireGuard interface, read with wireguard-control (kernel netlink
//! first, then wireguard-go's userspace socket). Used to report the tunnel in
//! `getPeerStatus` and `d doctor`, to admit worker links only from WireGuard
//! peers, and to explain a failed connection ("the tunnel is down" versus
//! "the tunnel is up; is d-daemon running there?").
//!
//! The library's calls block: callers use [`read`], which runs them on the
//! blocking pool.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use d_proto::types::{WgPeer, WgStatus};
use wireguard_control::{Backend, Device, InterfaceName};

/// WireGuard drops a session this old (REJECT_AFTER_TIME): past it, no
/// handshake means no tunnel.
pub const STALE_HANDSHAKE: Duration = Duration::from_secs(180);

/// Read the interface, or say why not.
pub async fn read(iface: &str) -> Result<Device, String> {
    let name = iface.to_string();
    tokio::task::spawn_blocking(move || read_blocking(&name))
        .await
        .map_err(|e| format!("cannot read {iface}: {e}"))?
}

/// The last read of the interface, shared: a leader admitting thousands of
/// links a second after a restart reads the device once, not once per link
/// (each read is a blocking-pool thread and a netlink or UAPI dump).
#[derive(Default)]
pub struct DeviceCache {
    slot: tokio::sync::Mutex<Option<(Instant, DeviceRead)>>,
}

type DeviceRead = Result<Arc<Device>, String>;

impl DeviceCache {
    /// The device as read at most `max_age` ago (concurrent callers wait for
    /// one read). A failure is remembered as long as a success.
    pub async fn get(&self, iface: &str, max_age: Duration) -> DeviceRead {
        let mut slot = self.slot.lock().await;
        if let Some((at, r)) = &*slot {
            if at.elapsed() < max_age {
                return r.clone();
            }
        }
        let r = read(iface).await.map(Arc::new);
        *slot = Some((Instant::now(), r.clone()));
        r
    }
}

fn read_blocking(iface: &str) -> Result<Device, String> {
    let name: InterfaceName = iface
        .parse()
        .map_err(|e| format!("{iface:?} is not an interface name: {e:?}"))?;
    let kernel = Device::get(&name, Backend::Kernel);
    match kernel {
        Ok(d) => Ok(d),
        Err(ke) => Device::get(&name, Backend::Userspace).map_err(|ue| {
            format!(
                "no WireGuard interface {iface} (kernel: {ke}; wireguard-go: {ue}); is the tunnel up (`wg show`)?"
            )
        }),
    }
}

fn contains(net: &wireguard_control::AllowedIp, ip: IpAddr) -> bool {
    match (net.address, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let bits = u32::from(net.cidr.min(32));
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let bits = u32::from(net.cidr.min(128));
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// The WireGuard peer whose allowed IPs hold `ip` (the most specific one).
pub fn peer_for(dev: &Device, ip: IpAddr) -> Option<&wireguard_control::PeerInfo> {
    peer_among(&dev.peers, ip)
}

fn peer_among(
    peers: &[wireguard_control::PeerInfo],
    ip: IpAddr,
) -> Option<&wireguard_control::PeerInfo> {
    peers
        .iter()
        .filter_map(|p| {
            p.config
                .allowed_ips
                .iter()
                .filter(|n| contains(n, ip))
                .map(|n| n.cidr)
                .max()
                .map(|c| (c, p))
        })
        .max_by_key(|(c, _)| *c)
        .map(|(_, p)| p)
}

/// The last handshake of the WireGuard peer carrying each address, for
/// answering thousands of registry rows at once: [`peer_for`] scans every
/// WireGuard peer for each address, this looks a host address up in a map.
/// It finds the peer [`peer_for`] finds: the most specific allowed IP, the
/// later peer on a tie.
#[derive(Debug, Default)]
pub struct HandshakeIndex {
    /// Host entries (/32, /128): address → (prefix length, last handshake).
    hosts: HashMap<IpAddr, (u8, Option<SystemTime>)>,
    /// Every other allowed IP, in the device's order.
    nets: Vec<(wireguard_control::AllowedIp, Option<SystemTime>)>,
}

impl HandshakeIndex {
    pub fn new(peers: &[wireguard_control::PeerInfo]) -> Self {
        let mut ix = HandshakeIndex::default();
        for p in peers {
            let t = p.stats.last_handshake_time;
            for net in &p.config.allowed_ips {
                let full = if net.address.is_ipv4() { 32 } else { 128 };
                if net.cidr >= full {
                    match ix.hosts.get(&net.address) {
                        Some((c, _)) if *c > net.cidr => {}
                        _ => {
                            ix.hosts.insert(net.address, (net.cidr, t));
                        }
                    }
                } else {
                    ix.nets.push((net.clone(), t));
                }
            }
        }
        ix
    }

    /// Seconds since the last handshake with the peer carrying `ip`, as
    /// `peer_for(dev, ip).and_then(handshake_age)` says.
    pub fn age(&self, ip: IpAddr) -> Option<Duration> {
        let mut best: Option<(u8, Option<SystemTime>)> = self.hosts.get(&ip).copied();
        for (net, t) in &self.nets {
            let wider = matches!(best, Some((c, _)) if c > net.cidr);
            if !wider && contains(net, ip) {
                best = Some((net.cidr, *t));
            }
        }
        best.and_then(|(_, t)| t)
            .and_then(|t| SystemTime::now().duration_since(t).ok())
    }
}

/// How long one reading of the interface answers for the registry: the pages
/// of one `listPeers` (asked together) share a reading instead of each
/// reading a device of thousands of peers again.
const INDEX_FRESH: Duration = Duration::from_secs(1);

/// The [`HandshakeIndex`] of the reading [`DeviceCache`] holds, built once
/// per reading.
#[derive(Default)]
pub struct IndexCache(std::sync::Mutex<Option<(Arc<Device>, Arc<HandshakeIndex>)>>);

impl IndexCache {
    /// `None`: the interface could not be read.
    pub async fn get(&self, devices: &DeviceCache, iface: &str) -> Option<Arc<HandshakeIndex>> {
        let dev = devices.get(iface, INDEX_FRESH).await.ok()?;
        let mut cur = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((d, ix)) = &*cur {
            if Arc::ptr_eq(d, &dev) {
                return Some(ix.clone());
            }
        }
        let ix = Arc::new(HandshakeIndex::new(&dev.peers));
        *cur = Some((dev, ix.clone()));
        Some(ix)
    }
}

pub fn handshake_age(p: &wireguard_control::PeerInfo) -> Option<Duration> {
    p.stats
        .last_handshake_time
        .and_then(|t| SystemTime::now().duration_since(t).ok())
}

/// The interface for `getPeerStatus`; `name_of` maps an address to a peer id.
pub fn status(
    iface: &str,
    dev: Result<Device, String>,
    name_of: impl Fn(IpAddr) -> Option<String>,
) -> WgStatus {
    match dev {
        Err(e) => WgStatus {
            interface: iface.to_string(),
            error: Some(e),
            public_key: None,
            listen_port: None,
            peers: Vec::new(),
        },
        Ok(d) => WgStatus {
            interface: iface.to_string(),
            error: None,
            public_key: d.public_key.as_ref().map(|k| k.to_base64()),
            listen_port: d.listen_port,
            peers: d
                .peers
                .iter()
                .map(|p| WgPeer {
                    public_key: p.config.public_key.to_base64(),
                    peer_id: p.config.allowed_ips.iter().find_map(|n| {
                        (n.cidr == 32 || n.cidr == 128)
                            .then(|| name_of(n.address))
                            .flatten()
                    }),
                    endpoint: p.config.endpoint.map(|e| e.to_string()),
                    allowed_ips: p
                        .config
                        .allowed_ips
                        .iter()
                        .map(|n| format!("{}/{}", n.address, n.cidr))
                        .collect(),
                    handshake_age_secs: handshake_age(p).map(|d| d.as_secs()),
                    rx_bytes: p.stats.rx_bytes,
                    tx_bytes: p.stats.tx_bytes,
                })
                .collect(),
        },
    }
}

/// Traffic counters and handshake of the WireGuard peer carrying `ip`.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub handshake_age: Option<Duration>,
}

pub async fn snapshot(iface: &str, ip: IpAddr) -> Option<Snapshot> {
    let dev = read(iface).await.ok()?;
    let p = peer_for(&dev, ip)?;
    Some(Snapshot {
        rx_bytes: p.stats.rx_bytes,
        tx_bytes: p.stats.tx_bytes,
        handshake_age: handshake_age(p),
    })
}

/// `3m12s`, `4s`.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// Why a connection to `peer` at `ip` failed, as far as WireGuard can tell.
/// `before` was taken just before the attempt: nothing received since then
/// while packets went out means the tunnel carries nothing back.
pub fn diagnose(peer: &str, before: Option<Snapshot>, after: Option<Snapshot>) -> Option<String> {
    let after = after?;
    let heard = before.map(|b| after.rx_bytes > b.rx_bytes);
    let sent = before.map(|b| after.tx_bytes > b.tx_bytes);
    match after.handshake_age {
        None => Some(format!("no WireGuard handshake with {peer} ever — the tunnel is down")),
        Some(a) if a > STALE_HANDSHAKE => Some(format!(
            "no WireGuard handshake with {peer} for {} — the tunnel is down",
            age(a)
        )),
        Some(a) if heard == Some(false) && sent == Some(true) => Some(format!(
            "nothing came back from {peer} through WireGuard while connecting (last handshake {} ago) — the tunnel is down",
            age(a)
        )),
        Some(a) => Some(format!(
            "handshake {} ago — the tunnel is up; is d-daemon running on {peer}?",
            age(a)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_ip_matching() {
        let net: wireguard_control::AllowedIp = "198.19.0.0/24".parse().unwrap();
        assert!(contains(&net, "198.19.0.7".parse().unwrap()));
        assert!(!contains(&net, "198.18.0.7".parse().unwrap()));
        let all: wireguard_control::AllowedIp = "0.0.0.0/0".parse().unwrap();
        assert!(contains(&all, "127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn handshake_index_finds_what_peer_for_finds() {
        let now = SystemTime::now();
        let peer = |secs: u64, nets: &[&str]| {
            let mut p = wireguard_control::PeerInfo::from_public_key(
                wireguard_control::Key::generate_private().get_public(),
            );
            p.config.allowed_ips = nets.iter().map(|n| n.parse().unwrap()).collect();
            p.stats.last_handshake_time = now.checked_sub(Duration::from_secs(secs));
            p
        };
        let mut never = peer(0, &["198.19.0.9/32", "fd00::9/128"]);
        never.stats.last_handshake_time = None;
        let peers = vec![
            peer(100, &["198.19.0.0/16"]),
            peer(200, &["198.19.0.0/24", "198.19.0.2/32"]),
            peer(300, &["198.19.0.2/32", "10.0.0.0/8"]),
            peer(400, &["198.19.7.0/24", "fd00::/64"]),
            peer(500, &["198.19.7.0/24"]),
            never,
            peer(600, &["0.0.0.0/0"]),
        ];
        let ix = HandshakeIndex::new(&peers);
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs());
        for ip in [
            "198.19.0.2",
            "198.19.0.3",
            "198.19.1.1",
            "198.19.7.7",
            "198.19.0.9",
            "10.1.2.3",
            "192.168.1.1",
            "fd00::9",
            "fd00::1",
            "fe80::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let want = peer_among(&peers, ip).and_then(handshake_age);
            assert_eq!(secs(ix.age(ip)), secs(want), "{ip}");
        }
        assert_eq!(secs(ix.age("198.19.0.2".parse().unwrap())), Some(300));
        assert_eq!(secs(ix.age("198.19.7.1".parse().unwrap())), Some(500));
        assert_eq!(ix.age("198.19.0.9".parse().unwrap()), None);
    }

    #[test]
    fn diagnosis_wording() {
        let snap = |rx, tx, secs: Option<u64>| Snapshot {
            rx_bytes: rx,
            tx_bytes: tx,
            handshake_age: secs.map(Duration::from_secs),
        };
        let d = diagnose("laptop", None, Some(snap(0, 0, Some(192)))).unwrap();
        assert_eq!(
            d,
            "no WireGuard handshake with laptop for 3m12s — the tunnel is down"
        );
        let d = diagnose(
            "laptop",
            Some(snap(5, 5, Some(4))),
            Some(snap(9, 9, Some(4))),
        )
        .unwrap();
        assert_eq!(
            d,
            "handshake 4s ago — the tunnel is up; is d-daemon running on laptop?"
        );
        let d = diagnose(
            "laptop",
            Some(snap(5, 5, Some(20))),
            Some(snap(5, 90, Some(23))),
        )
        .unwrap();
        assert!(d.contains("the tunnel is down"), "{d}");
        assert!(diagnose("x", None, None).is_none());
    }
}
