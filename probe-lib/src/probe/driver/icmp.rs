//! ICMP probes from inside a pod's namespace: echo requests with a random identifier and
//! sequence, the path MTU probe with Don't Fragment, and the check that a reply is ours.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use surge_ping::{Client, IcmpPacket, PingIdentifier, PingSequence, SurgeError};

use super::*;
use crate::probe::outcome::{IcmpReply, Observation, ProbeResult, classify_io};
use crate::probe::plan::PlannedProbe;
use crate::probe::report::PathMtuObservation;

/// A random DNS query ID.
pub(crate) fn random_u16() -> u16 {
    random_ident_seq().1
}

/// A random ICMP identifier and sequence number (`getrandom`; a counter if that fails, which
/// only loses unpredictability).
fn random_ident_seq() -> (u16, u16) {
    static FALLBACK: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let r = getrandom::u32().unwrap_or_else(|_| FALLBACK.fetch_add(0x9e37_79b9, Ordering::Relaxed));
    ((r >> 16) as u16, r as u16)
}

/// Is this what we sent for: identifier and sequence (of the echo reply, or of our packet
/// quoted in an ICMP error), and the target's address (the reply's source, or the quoted
/// packet's destination)? surge-ping routes replies by these already; checked again here so
/// a change there cannot make a forged reply count. On a datagram socket the kernel owns
/// the identifier, so it is not compared.
pub(in crate::probe) fn reply_matches(
    packet: &IcmpPacket,
    target: IpAddr,
    ident: Option<PingIdentifier>,
    seq: PingSequence,
) -> bool {
    let dest: IpAddr = match packet {
        IcmpPacket::V4(p) => p.get_real_dest().into(),
        IcmpPacket::V6(p) => p.get_real_dest().into(),
    };
    dest == target
        && packet.get_sequence() == seq
        && ident.is_none_or(|i| packet.get_identifier() == i)
}

impl NetnsDriver {
    pub(super) async fn icmp(
        &self,
        client: Option<&Client>,
        p: &PlannedProbe,
        timeout: Duration,
    ) -> Observation {
        self.icmp_sized(client, p, &PAYLOAD, timeout).await
    }

    /// The path-MTU probe of a round: a don't-fragment echo that fills the pod's MTU, to the
    /// family's gateway (`ping -M probe -s MTU-28 -t 1 169.254.1.1` inside the pod).
    pub(super) async fn path_mtu(
        &self,
        sock: Option<&(Client, u32)>,
        gateway: Option<&PlannedProbe>,
        timeout: Duration,
    ) -> Option<PathMtuObservation> {
        let ((client, mtu), p) = (sock?, gateway?);
        let payload = crate::probe::dont_fragment::payload_for(*mtu, p.address.is_ipv6())?;
        let headers = if p.address.is_ipv6() {
            crate::probe::dont_fragment::V6_HEADERS
        } else {
            crate::probe::dont_fragment::V4_HEADERS
        };
        // The probe's bytes repeated: nothing in it a peer could use.
        let body: Vec<u8> = PAYLOAD.iter().copied().cycle().take(payload).collect();
        let observation = self.icmp_sized(Some(client), p, &body, timeout).await;
        Some(PathMtuObservation {
            address: p.address.ip(),
            mtu: *mtu,
            size: payload as u32 + headers,
            observation,
        })
    }

    async fn icmp_sized(
        &self,
        client: Option<&Client>,
        p: &PlannedProbe,
        payload: &[u8],
        timeout: Duration,
    ) -> Observation {
        let Some(client) = client else {
            return Observation::failed(ProbeResult::Error, "no ICMP socket");
        };
        // Random identifier and sequence per probe: a pod (or a peer) that wants to answer for
        // a target it is not cannot predict them, and surge-ping delivers only a reply that
        // matches both (an ICMP error: the packet it quotes) and the target's address.
        let (ident, seq) = random_ident_seq();
        let (ident, seq) = (PingIdentifier(ident), PingSequence(seq));
        let mut pinger = client.pinger(p.address.ip(), ident).await;
        pinger.timeout(timeout);
        if let SocketAddr::V6(sa) = p.address {
            pinger.scope_id(sa.scope_id());
        }
        // Timed here: the library's own RTT starts after send returns (reads 0 on veth).
        let started = Instant::now();
        let res = pinger.ping(seq, payload).await;
        let rtt = started.elapsed();
        match res {
            Ok((packet, _)) => {
                let raw = client.get_socket().get_type() == socket2::Type::RAW;
                if !reply_matches(&packet, p.address.ip(), raw.then_some(ident), seq) {
                    return Observation::failed(
                        ProbeResult::Error,
                        "reply does not match the probe",
                    );
                }
                let reply = match &packet {
                    IcmpPacket::V4(p) => IcmpReply::from_v4(p.get_icmp_type().0),
                    IcmpPacket::V6(p) => IcmpReply::from_v6(p.get_icmpv6_type().0),
                };
                let result = if p.gateway {
                    reply.gateway_result()
                } else {
                    reply.result()
                };
                let mut obs = Observation::answered(result, rtt);
                if reply != IcmpReply::Echo {
                    obs.detail = Some(format!("ICMP {reply:?}"));
                }
                obs
            }
            Err(SurgeError::Timeout { .. }) => {
                Observation::failed(ProbeResult::Timeout, "no reply")
            }
            Err(SurgeError::IOError(e)) => Observation::failed(classify_io(&e), e.to_string()),
            Err(e) => Observation::failed(ProbeResult::Error, e.to_string()),
        }
    }
}
