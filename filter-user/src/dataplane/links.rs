//! Interfaces that come and go (SPEC §2.4): the kernel's link events,
//! through rtnetlink's `RTMGRP_LINK` multicast group, as a stream of
//! [`LinkEvent`]s. Netlink may drop events when its socket buffer fills;
//! whoever follows the stream also reconciles now and then (the daemon's
//! `links.rs`), so a lost event delays a guard, never loses it.
use std::io;

use futures::{channel::mpsc::UnboundedReceiver, StreamExt as _};
use rtnetlink::sys::AsyncSocket as _;
use rtnetlink::{
    constants::RTMGRP_LINK,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        link::{LinkAttribute, LinkMessage},
        RouteNetlinkMessage,
    },
    sys::SocketAddr,
};

/// One change of an interface of this network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// An interface was created, renamed, moved into this namespace or
    /// changed state: `name` is its name now.
    Present { name: String, ifindex: u32 },
    /// An interface was deleted or moved out of this namespace.
    Gone { name: String, ifindex: u32 },
}

type Messages = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// The link events of the calling thread's network namespace, from the
/// moment [`LinkEvents::subscribe`] returns.
pub struct LinkEvents {
    messages: Messages,
}

impl LinkEvents {
    /// Subscribes to link events; spawns the netlink connection on the
    /// current tokio runtime.
    pub fn subscribe() -> io::Result<Self> {
        let (mut connection, _handle, messages) = rtnetlink::new_connection()?;
        connection
            .socket_mut()
            .socket_mut()
            .bind(&SocketAddr::new(0, RTMGRP_LINK))?;
        tokio::spawn(connection);
        Ok(Self { messages })
    }

    /// The next event; `None` when the netlink connection ended.
    pub async fn next(&mut self) -> Option<LinkEvent> {
        loop {
            let (message, _) = self.messages.next().await?;
            if let Some(event) = event(message) {
                return Some(event);
            }
        }
    }
}

fn event(message: NetlinkMessage<RouteNetlinkMessage>) -> Option<LinkEvent> {
    let NetlinkPayload::InnerMessage(inner) = message.payload else {
        return None;
    };
    match inner {
        RouteNetlinkMessage::NewLink(link) => {
            let (name, ifindex) = name_and_index(&link)?;
            Some(LinkEvent::Present { name, ifindex })
        }
        RouteNetlinkMessage::DelLink(link) => {
            let (name, ifindex) = name_and_index(&link)?;
            Some(LinkEvent::Gone { name, ifindex })
        }
        _ => None,
    }
}

fn name_and_index(link: &LinkMessage) -> Option<(String, u32)> {
    let name = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })?;
    Some((name, link.header.index))
}
