//! A scripted kernel for tests: holds a "true" host state, answers dumps from it and emits
//! events when the test changes it, or changes it silently as the kernel sometimes does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::types::{Address, HostDump, KernelEvent};
use super::{EventReceiver, HostNetwork};
use crate::Error;

#[derive(Debug, Default)]
struct Kernel {
    dump: HostDump,
    peers: HashMap<i32, Vec<Address>>,
    subscribers: Vec<mpsc::Sender<KernelEvent>>,
    /// Events the current subscribers receive right after the next dump was taken.
    backlog: Vec<(mpsc::Sender<KernelEvent>, KernelEvent)>,
    dumps: usize,
    failing_dumps: u32,
}

/// A fake [`HostNetwork`]. Clones share the same kernel.
#[derive(Debug, Clone, Default)]
pub struct FakeHost {
    kernel: Arc<Mutex<Kernel>>,
}

impl FakeHost {
    /// A kernel whose initial state is `dump`.
    pub fn new(dump: HostDump) -> Self {
        let host = FakeHost::default();
        host.lock().dump = dump;
        host
    }

    fn lock(&self) -> MutexGuard<'_, Kernel> {
        // A test that panicked while holding the lock already failed; keep going for others.
        crate::util::lock(&self.kernel)
    }

    /// Change the state and notify subscribers, as the kernel does for most changes.
    pub fn emit(&self, ev: KernelEvent) {
        let mut k = self.lock();
        apply(&mut k.dump, &ev);
        k.subscribers.retain(|s| {
            !matches!(
                s.try_send(ev.clone()),
                Err(mpsc::error::TrySendError::Closed(_))
            )
        });
    }

    /// Change the state without telling anyone (routes flushed with their link, lost events).
    pub fn change_silently(&self, f: impl FnOnce(&mut HostDump)) {
        f(&mut self.lock().dump);
    }

    /// Tell subscribers that events were lost.
    pub fn overrun(&self) {
        self.lock().subscribers.retain(|s| {
            !matches!(
                s.try_send(KernelEvent::Overrun),
                Err(mpsc::error::TrySendError::Closed(_))
            )
        });
    }

    /// Lose events as a real netlink socket does: report the overrun now, and deliver `stale`
    /// (what was queued before the loss; the state does not change) to the same subscribers
    /// only after the next dump — the order in which the kernel hands out a socket's backlog
    /// to a reader that re-dumps at once.
    pub fn overrun_with_backlog(&self, stale: Vec<KernelEvent>) {
        let mut k = self.lock();
        k.subscribers.retain(|s| {
            !matches!(
                s.try_send(KernelEvent::Overrun),
                Err(mpsc::error::TrySendError::Closed(_))
            )
        });
        let backlog: Vec<_> = k
            .subscribers
            .iter()
            .flat_map(|s| stale.iter().map(move |ev| (s.clone(), ev.clone())))
            .collect();
        k.backlog.extend(backlog);
    }

    /// Set the addresses inside a peer namespace.
    pub fn set_peer_addresses(&self, netnsid: i32, addrs: Vec<Address>) {
        self.lock().peers.insert(netnsid, addrs);
    }

    /// Make the next `n` dumps fail.
    pub fn fail_next_dumps(&self, n: u32) {
        self.lock().failing_dumps = n;
    }

    /// End every subscription (as if the netlink socket died).
    pub fn close_subscriptions(&self) {
        self.lock().subscribers.clear();
    }

    /// Number of dumps answered so far.
    pub fn dumps(&self) -> usize {
        self.lock().dumps
    }
}

fn apply(dump: &mut HostDump, ev: &KernelEvent) {
    match ev {
        KernelEvent::LinkChanged(l) => {
            dump.links.retain(|x| x.index != l.index);
            dump.links.push(l.clone());
        }
        KernelEvent::LinkRemoved(i) => {
            dump.links.retain(|x| x.index != *i);
            dump.routes.retain(|r| r.oif != Some(*i));
        }
        KernelEvent::RouteAdded(r) => {
            dump.routes.retain(|x| x.key() != r.key());
            dump.routes.push(r.clone());
        }
        KernelEvent::RouteRemoved(r) => dump.routes.retain(|x| x.key() != r.key()),
        KernelEvent::AddressAdded(a) => dump.addresses.push(*a),
        KernelEvent::AddressRemoved(a) => dump.addresses.retain(|x| x != a),
        KernelEvent::NetconfChanged(nc) => dump.netconf.push(*nc),
        KernelEvent::Overrun | KernelEvent::Malformed => {}
    }
}

impl HostNetwork for FakeHost {
    async fn subscribe(&self) -> Result<EventReceiver, Error> {
        let (tx, rx) = mpsc::channel(super::EVENT_QUEUE);
        self.lock().subscribers.push(tx);
        Ok(rx)
    }

    async fn dump(&self) -> Result<HostDump, Error> {
        let mut k = self.lock();
        if k.failing_dumps > 0 {
            k.failing_dumps -= 1;
            return Err(Error::Timeout("fake dump"));
        }
        k.dumps += 1;
        let dump = k.dump.clone();
        for (s, ev) in std::mem::take(&mut k.backlog) {
            let _ = s.try_send(ev);
        }
        Ok(dump)
    }

    async fn peer_addresses(&self, netnsid: i32) -> Result<Vec<Address>, Error> {
        Ok(self.lock().peers.get(&netnsid).cloned().unwrap_or_default())
    }
}
