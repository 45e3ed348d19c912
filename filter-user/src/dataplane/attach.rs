//! Attaching the programs to interfaces: XDP or tcx on the interface's
//! ingress ([`IngressHook`]), tcx on its egress (`docs/ARCHITECTURE.md`,
//! "Direction").
use std::{io, path::PathBuf};

use aya::{
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        tc::{self, SchedClassifierLink},
        SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    util::KernelVersion,
};
use filter_common::names;

use super::{
    error::{DataplaneError, Result},
    pins::{self, link_pin_path, Hook},
    sys, Dataplane,
};

/// The program on an interface's ingress (SPEC §2.4 `hook`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngressHook {
    Xdp,
    /// tcx ingress: the same pipeline as a classifier.
    Tc,
}

/// The programs on one interface, as [`Dataplane::attach`] left them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub ifname: String,
    pub ifindex: u32,
    pub ingress: IngressHook,
    /// With XDP: `Default` (the kernel picked native XDP where the driver
    /// has it) or `Skb` (generic XDP, after the default mode was refused).
    pub xdp_mode: XdpMode,
    /// The links were pinned by an earlier process and now run this
    /// process's programs (swapped in atomically, no gap).
    pub adopted: bool,
    /// Pin paths of the ingress and egress links (pinned mode only).
    pub pins: Option<(PathBuf, PathBuf)>,
}

/// A link this process holds for one hook.
#[derive(Debug)]
pub(crate) enum HeldLink {
    /// Not pinned: dropping it detaches the program.
    Xdp(aya::programs::xdp::XdpLink),
    Tc(SchedClassifierLink),
    /// Pinned: dropping it only closes our fd, the pin keeps it attached.
    Pinned {
        _link: FdLink,
        path: PathBuf,
    },
}

impl HeldLink {
    /// Detaches the program: removes the pin (and detaches the link at
    /// once), or drops the only reference.
    pub(crate) fn detach(self) -> Result<()> {
        match self {
            Self::Pinned { _link, path } => pins::remove_pinned_link(&path).map(drop),
            // Our fd is the only reference: closing it detaches.
            Self::Xdp(link) => {
                drop(link);
                Ok(())
            }
            Self::Tc(link) => {
                drop(link);
                Ok(())
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct IfaceLinks {
    pub(crate) info: Attachment,
    pub(crate) ingress: HeldLink,
    pub(crate) egress: HeldLink,
}

impl IfaceLinks {
    fn detach(self) -> Result<()> {
        let egress = self.egress.detach();
        let ingress = self.ingress.detach();
        egress.and(ingress)
    }
}

/// Linux interface names: 1 to 15 bytes, no `/`, no whitespace, not `.` or
/// `..` (they also name pin files).
fn check_ifname(ifname: &str) -> Result<()> {
    let ok = !ifname.is_empty()
        && ifname.len() < libc::IF_NAMESIZE
        && ifname != "."
        && ifname != ".."
        && !ifname
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(DataplaneError::InvalidInterfaceName(ifname.to_owned()))
    }
}

fn ifindex(ifname: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(ifname)
        .map_err(|_| DataplaneError::UnknownInterface(ifname.to_owned()))
}

/// Removes the link pinned at `path` when it is not attached to `ifindex`:
/// its interface was deleted (the link is defunct) or renamed (the name now
/// means another interface; the configuration is by name).
fn drop_pin_if_elsewhere(path: &std::path::Path, ifindex: u32) -> Result<()> {
    let fd = match sys::obj_get(path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(DataplaneError::io("opening pinned link", path, e)),
    };
    match sys::link_ifindex(std::os::fd::AsFd::as_fd(&fd)) {
        Ok(found) if found != ifindex => {
            tracing::info!(
                "pinned link {} is on ifindex {found}, not {ifindex}; replacing it",
                path.display()
            );
            drop(fd);
            pins::remove_pinned_link(path).map(drop)
        }
        Ok(_) => Ok(()),
        // Cannot tell: let the adoption try (it replaces a link it cannot
        // update), rather than detach a link that may be working.
        Err(e) => {
            tracing::debug!("reading link info of {}: {e}", path.display());
            Ok(())
        }
    }
}

/// Opens the link pinned at `path`, if there is one.
fn open_pinned(path: &std::path::Path) -> Result<Option<FdLink>> {
    match PinnedLink::from_pin(path) {
        Ok(link) => Ok(Some(link.into())),
        Err(LinkError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DataplaneError::Link {
            path: path.to_owned(),
            op: "opening the pinned link",
            source,
        }),
    }
}

impl Dataplane {
    /// [`Self::attach_with`] XDP on the ingress.
    pub fn attach(&mut self, ifname: &str) -> Result<Attachment> {
        self.attach_with(ifname, IngressHook::Xdp)
    }

    /// Attaches the data plane to `ifname`: `ingress` on its ingress (XDP in
    /// the default mode, falling back to generic XDP; or tcx ingress) and
    /// tcx on its egress.
    ///
    /// With a pin directory ([`Dataplane::load`] with `Some`) both links are
    /// pinned under `<pin>/links/` and stay attached after this process
    /// exits (fail closed); links an earlier process pinned there are
    /// adopted by swapping this process's programs in atomically. Without
    /// one, dropping the `Dataplane` detaches.
    ///
    /// Both hooks or neither: when the egress fails, a freshly attached
    /// ingress link is removed again. Attaching an interface twice is a
    /// no-op; attaching it with the other ingress hook moves it, the new
    /// hook on before the old one comes off.
    pub fn attach_with(&mut self, ifname: &str, ingress: IngressHook) -> Result<Attachment> {
        check_ifname(ifname)?;
        let ifindex = ifindex(ifname)?;
        if let Some(held) = self.hold_back(ifname, ifindex, ingress) {
            return Ok(held);
        }
        if let Some(held) = self.links.remove(ifname) {
            match (held.info.ifindex == ifindex, held.info.ingress == ingress) {
                (true, true) => {
                    let info = held.info.clone();
                    self.links.insert(ifname.to_owned(), held);
                    return Ok(info);
                }
                // The other ingress hook: the new link goes on before the
                // old one comes off (below); closing our fds leaves the
                // pinned links in place meanwhile.
                (true, false) => drop(held),
                // The interface was deleted and made again: the old links
                // died with it.
                (false, _) => held.detach()?,
            }
        }
        let (in_link, xdp_mode, in_adopted) = match ingress {
            IngressHook::Xdp => self.attach_xdp(ifname, ifindex)?,
            IngressHook::Tc => {
                let (link, adopted) = self.attach_tcx(ifname, ifindex, Hook::TcIngress)?;
                (link, XdpMode::Default, adopted)
            }
        };
        let (egress, egress_adopted) = match self.attach_tcx(ifname, ifindex, Hook::Tc) {
            Ok(egress) => egress,
            Err(e) => {
                if !in_adopted {
                    if let Err(undo) = in_link.detach() {
                        tracing::warn!(
                            "removing the ingress link of {ifname} after the egress failed: {undo}"
                        );
                    }
                }
                return Err(e);
            }
        };
        let in_hook = ingress_pin_hook(ingress);
        // The other ingress hook's link, if an earlier apply chose it.
        if let Some(p) = &self.pins {
            let other = match ingress {
                IngressHook::Xdp => Hook::TcIngress,
                IngressHook::Tc => Hook::Xdp,
            };
            pins::remove_pinned_link(&link_pin_path(p.root(), ifname, other))?;
        }
        let pins = self.pins.as_ref().map(|p| {
            (
                link_pin_path(p.root(), ifname, in_hook),
                link_pin_path(p.root(), ifname, Hook::Tc),
            )
        });
        let info = Attachment {
            ifname: ifname.to_owned(),
            ifindex,
            ingress,
            xdp_mode,
            adopted: in_adopted && egress_adopted,
            pins,
        };
        self.links.insert(
            ifname.to_owned(),
            IfaceLinks {
                info: info.clone(),
                ingress: in_link,
                egress,
            },
        );
        Ok(info)
    }

    /// During an upgrade ([`Dataplane::load_object`]), an interface whose
    /// pinned links run the old build's programs keeps them until the new
    /// maps hold a generation: moving it now would leave it unguarded.
    fn hold_back(&mut self, ifname: &str, ifindex: u32, wanted: IngressHook) -> Option<Attachment> {
        let root = self.pins.as_ref()?.root().to_owned();
        let upgrade = self.upgrade.as_mut()?;
        let ingress = if link_pin_path(&root, ifname, Hook::TcIngress).exists() {
            IngressHook::Tc
        } else {
            IngressHook::Xdp
        };
        let pins = (
            link_pin_path(&root, ifname, ingress_pin_hook(ingress)),
            link_pin_path(&root, ifname, Hook::Tc),
        );
        if !pins.0.exists() && !pins.1.exists() {
            return None;
        }
        upgrade.held_back.retain(|(i, _)| i != ifname);
        upgrade.held_back.push((ifname.to_owned(), wanted));
        Some(Attachment {
            ifname: ifname.to_owned(),
            ifindex,
            ingress,
            xdp_mode: XdpMode::Default,
            adopted: true,
            pins: Some(pins),
        })
    }

    /// Removes the data plane from `ifname` (both hooks, their pins).
    /// Also removes links an earlier process pinned for it. Returns whether
    /// anything was attached.
    pub fn detach(&mut self, ifname: &str) -> Result<bool> {
        check_ifname(ifname)?;
        let mut found = false;
        // Not to be moved after a growth any more (its pins go below).
        self.unmoved.retain(|(name, _)| name != ifname);
        if let Some(held) = self.links.remove(ifname) {
            held.detach()?;
            found = true;
        }
        if let Some(p) = &self.pins {
            for hook in Hook::ALL {
                found |= pins::remove_pinned_link(&link_pin_path(p.root(), ifname, hook))?;
            }
        }
        Ok(found)
    }

    /// The interfaces this process attached.
    pub fn attachments(&self) -> Vec<Attachment> {
        self.links.values().map(|l| l.info.clone()).collect()
    }

    /// Detaches every interface this process attached, and (pinned mode)
    /// every link pinned in the pin directory.
    pub fn detach_all(&mut self) -> Result<()> {
        let mut result = Ok(());
        for (_, held) in std::mem::take(&mut self.links) {
            result = result.and(held.detach());
        }
        if let Some(p) = &self.pins {
            let dir = p.root().join(pins::LINKS_DIR);
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return result,
                Err(e) => return Err(DataplaneError::io("listing", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| DataplaneError::io("listing", &dir, e))?;
                result = result.and(pins::remove_pinned_link(&entry.path()).map(drop));
            }
        }
        result
    }

    fn attach_xdp(&mut self, ifname: &str, ifindex: u32) -> Result<(HeldLink, XdpMode, bool)> {
        const PROG: &str = names::PROG_XDP;
        let pin_path = self
            .pins
            .as_ref()
            .map(|p| link_pin_path(p.root(), ifname, Hook::Xdp));
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROG)
            .ok_or(DataplaneError::MissingProgram(PROG))?
            .try_into()
            .map_err(|e| DataplaneError::program(PROG, "expecting an XDP program", e))?;

        if let Some(path) = &pin_path {
            drop_pin_if_elsewhere(path, ifindex)?;
            if let Some(old) = open_pinned(path)? {
                match aya::programs::xdp::XdpLink::try_from(old) {
                    Ok(old) => match prog.attach_to_link(old) {
                        Ok(id) => {
                            let link = prog
                                .take_link(id)
                                .map_err(|e| DataplaneError::program(PROG, "taking the link", e))?;
                            let link = FdLink::try_from(link).map_err(|_| {
                                DataplaneError::NotPinnable {
                                    ifname: ifname.to_owned(),
                                    hook: "XDP",
                                }
                            })?;
                            // The mode is the one the earlier process chose.
                            let held = HeldLink::Pinned {
                                _link: link,
                                path: path.clone(),
                            };
                            return Ok((held, XdpMode::Default, true));
                        }
                        Err(e) => tracing::info!(
                            "pinned XDP link {} is stale ({e}); attaching anew",
                            path.display()
                        ),
                    },
                    Err(e) => tracing::info!(
                        "{} is not an XDP link ({e}); attaching anew",
                        path.display()
                    ),
                }
                pins::remove_pinned_link(path)?;
            }
        }

        let (id, mode) = match prog.attach(ifname, XdpMode::default()) {
            Ok(id) => (id, XdpMode::Default),
            Err(first) => match prog.attach(ifname, XdpMode::Skb) {
                Ok(id) => {
                    tracing::info!("native XDP on {ifname} refused ({first}); using generic XDP");
                    (id, XdpMode::Skb)
                }
                Err(_) => return Err(DataplaneError::program(PROG, "attaching", first)),
            },
        };
        let link = prog
            .take_link(id)
            .map_err(|e| DataplaneError::program(PROG, "taking the link", e))?;
        let Some(path) = pin_path else {
            return Ok((HeldLink::Xdp(link), mode, false));
        };
        let link = FdLink::try_from(link).map_err(|_| DataplaneError::NotPinnable {
            ifname: ifname.to_owned(),
            hook: "XDP",
        })?;
        let pinned = link.pin(&path).map_err(|source| DataplaneError::Pin {
            path: path.clone(),
            source,
        })?;
        Ok((
            HeldLink::Pinned {
                _link: pinned.into(),
                path,
            },
            mode,
            false,
        ))
    }

    /// tcx on the egress (`Hook::Tc`) or the ingress (`Hook::TcIngress`).
    fn attach_tcx(&mut self, ifname: &str, ifindex: u32, hook: Hook) -> Result<(HeldLink, bool)> {
        let (prog_name, attach_type) = match hook {
            Hook::TcIngress => (names::PROG_TC_INGRESS, TcAttachType::Ingress),
            _ => (names::PROG_TC, TcAttachType::Egress),
        };
        let pin_path = self
            .pins
            .as_ref()
            .map(|p| link_pin_path(p.root(), ifname, hook));
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(prog_name)
            .ok_or(DataplaneError::MissingProgram(prog_name))?
            .try_into()
            .map_err(|e| DataplaneError::program(prog_name, "expecting a TC classifier", e))?;

        if let Some(path) = &pin_path {
            drop_pin_if_elsewhere(path, ifindex)?;
            if let Some(old) = open_pinned(path)? {
                match SchedClassifierLink::try_from(old) {
                    Ok(old) => match prog.attach_to_link(old) {
                        Ok(id) => {
                            let link = prog.take_link(id).map_err(|e| {
                                DataplaneError::program(prog_name, "taking the link", e)
                            })?;
                            let link = FdLink::try_from(link).map_err(|_| {
                                DataplaneError::NotPinnable {
                                    ifname: ifname.to_owned(),
                                    hook: "TC",
                                }
                            })?;
                            return Ok((
                                HeldLink::Pinned {
                                    _link: link,
                                    path: path.clone(),
                                },
                                true,
                            ));
                        }
                        Err(e) => tracing::info!(
                            "pinned TC link {} is stale ({e}); attaching anew",
                            path.display()
                        ),
                    },
                    Err(e) => {
                        tracing::info!("{} is not a tcx link ({e}); attaching anew", path.display())
                    }
                }
                pins::remove_pinned_link(path)?;
            }
        }

        // aya attaches through tcx (a BPF link) from Linux 6.6 on; older
        // kernels need the clsact qdisc for a netlink filter.
        let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
        if tcx {
            refuse_another_filterd(prog, ifname, attach_type)?;
        }
        if !tcx {
            match tc::qdisc_add_clsact(ifname) {
                Ok(()) => {}
                Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(source) => {
                    return Err(DataplaneError::Clsact {
                        ifname: ifname.to_owned(),
                        source,
                    })
                }
            }
        }
        let id = prog
            .attach(ifname, attach_type)
            .map_err(|e| DataplaneError::program(prog_name, "attaching", e))?;
        let link = prog
            .take_link(id)
            .map_err(|e| DataplaneError::program(prog_name, "taking the link", e))?;
        let Some(path) = pin_path else {
            return Ok((HeldLink::Tc(link), false));
        };
        let link = FdLink::try_from(link).map_err(|_| DataplaneError::NotPinnable {
            ifname: ifname.to_owned(),
            hook: "TC",
        })?;
        let pinned = link.pin(&path).map_err(|source| DataplaneError::Pin {
            path: path.clone(),
            source,
        })?;
        Ok((
            HeldLink::Pinned {
                _link: pinned.into(),
                path,
            },
            false,
        ))
    }
}

/// tcx runs several programs on one hook; XDP refuses a second one. Two
/// daemons must not guard one interface (their rule sets would both
/// decide), so a `filter_*` program of another load on the hook refuses
/// this attach, as XDP would.
fn refuse_another_filterd(
    prog: &SchedClassifier,
    ifname: &str,
    attach_type: TcAttachType,
) -> Result<()> {
    let ours = prog.info().ok().map(|i| i.id());
    let Ok((_, progs)) = SchedClassifier::query_tcx(ifname, attach_type) else {
        return Ok(());
    };
    let theirs = progs.iter().find(|p| {
        Some(p.id()) != ours && p.name_as_str().is_some_and(|n| n.starts_with("filter_"))
    });
    match theirs {
        Some(p) => Err(DataplaneError::HookTaken {
            ifname: ifname.to_owned(),
            hook: match attach_type {
                TcAttachType::Ingress => "tcx ingress",
                _ => "tcx egress",
            },
            program: p.name_as_str().unwrap_or("filter_*").to_owned(),
        }),
        None => Ok(()),
    }
}

/// Where the link of an ingress hook is pinned.
fn ingress_pin_hook(ingress: IngressHook) -> Hook {
    match ingress {
        IngressHook::Xdp => Hook::Xdp,
        IngressHook::Tc => Hook::TcIngress,
    }
}

#[cfg(test)]
mod tests {
    use super::check_ifname;

    #[test]
    fn interface_names() {
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("tap-web1").is_ok());
        assert!(check_ifname("abcdefghijklmno").is_ok());
        assert!(check_ifname("abcdefghijklmnop").is_err());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("..").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("a b").is_err());
    }
}
