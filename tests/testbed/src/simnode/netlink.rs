//! The netlink calls the simulated node is built with, one `ip` command each (links,
//! addresses, neighbours, routes), and the route messages it installs.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use anyhow::{Result, anyhow};
use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::AddressHeaderFlags;
use rtnetlink::packet_route::route::{RouteMessage, RouteProtocol, RouteScope, RouteType};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use super::*;

/// `ip link show NAME` → ifindex.
pub async fn index_of(h: &Handle, name: &str) -> Result<u32> {
    let msg = h
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await?
        .ok_or_else(|| anyhow!("no link {name}"))?;
    Ok(msg.header.index)
}

pub(super) async fn link_up(h: &Handle, name: &str) -> Result<()> {
    set_link(h, index_of(h, name).await?, true).await
}

/// `ip link set dev INDEX up|down`.
pub async fn set_link(h: &Handle, index: u32, up: bool) -> Result<()> {
    let b = LinkUnspec::new_with_index(index);
    let msg = if up { b.up() } else { b.down() }.build();
    h.link().set(msg).execute().await?;
    Ok(())
}

/// `ip link set dev INDEX netns NS`.
pub(super) async fn move_link(h: &Handle, index: u32, netns: &std::path::Path) -> Result<()> {
    let f = File::open(netns)?;
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .setns_by_fd(f.as_raw_fd())
                .build(),
        )
        .execute()
        .await?;
    Ok(())
}

/// `ip addr add IP/LEN dev INDEX nodad`.
pub(super) async fn add_address(h: &Handle, index: u32, ip: IpAddr, len: u8) -> Result<()> {
    let mut req = h.address().add(index, ip, len);
    if ip.is_ipv6() {
        req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
    }
    req.execute().await?;
    Ok(())
}

/// A pod's eth0 MAC: locally administered, unique per pod index.
pub(super) fn pod_mac(index: usize) -> [u8; 6] {
    [
        0x02,
        0x42,
        0x0a,
        (index >> 16) as u8,
        (index >> 8) as u8,
        index as u8,
    ]
}

/// `ip route add 169.254.1.1 dev INDEX scope link` (inside a pod).
pub(super) fn gateway_route(eth0: u32) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(POD_GATEWAY_IPV4, 32)
        .output_interface(eth0)
        .scope(RouteScope::Link)
        .build()
}

/// `ip route add default via GW dev INDEX`.
pub(super) fn default_via(gw: IpAddr, oif: u32) -> RouteMessage {
    let b = RouteMessageBuilder::<IpAddr>::new();
    let b = match gw {
        IpAddr::V4(_) => b.destination_prefix(Ipv4Addr::UNSPECIFIED.into(), 0),
        IpAddr::V6(_) => b.destination_prefix(Ipv6Addr::UNSPECIFIED.into(), 0),
    };
    // Both calls only fail on a family mismatch, impossible here.
    let b = b.and_then(|b| b.gateway(gw)).unwrap_or_default();
    b.output_interface(oif).build()
}

/// `ip route add 10.244.0.0/16 via 192.0.2.10` and `fd00::/8 via 2001:db8::10` (outside).
pub(super) fn outside_return_routes(oif: u32) -> Result<Vec<RouteMessage>> {
    [
        ("10.244.0.0/16", IpAddr::from(NODE_IPV4)),
        ("fd00::/8", IpAddr::from(NODE_IPV6)),
    ]
    .into_iter()
    .map(|(cidr, via)| {
        let net: IpNet = cidr.parse()?;
        Ok(RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(net.addr(), net.prefix_len())?
            .gateway(via)?
            .output_interface(oif)
            .build())
    })
    .collect()
}

/// Calico's host route: `ip route add IP/32 dev caliX scope link proto boot` (`/128` for IPv6).
pub fn pod_route(ip: IpAddr, oif: u32) -> Result<RouteMessage> {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    let scope = if ip.is_ipv4() {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    Ok(RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(ip, len)?
        .output_interface(oif)
        .scope(scope)
        .protocol(RouteProtocol::Boot)
        .build())
}

/// Felix's IPAM block route: `ip route add blackhole BLOCK proto 80`.
pub(crate) fn blackhole(net: IpNet) -> Result<RouteMessage> {
    Ok(RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(net.addr(), net.prefix_len())?
        .kind(RouteType::BlackHole)
        .protocol(RouteProtocol::Other(PROTO_FELIX))
        .build())
}
