//! At start, say which checks the agent cannot do with the privileges it was given (one log
//! line each), instead of failing them one pod at a time later.

/// Capability bit numbers (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;

/// What the process may do, as far as the checks care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privileges {
    /// The effective capability set (`CapEff` in /proc/self/status).
    pub effective: u64,
    /// Whether the agent sees the host's processes (hostPID).
    pub host_pid: bool,
}

impl Privileges {
    /// Read them: `grep CapEff /proc/self/status`; the host's PID namespace is recognised by
    /// its PID 2 being the kernel's `kthreadd` (in a container's own namespace there is none).
    pub fn read() -> Option<Self> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let effective = parse_cap_eff(&status)?;
        let host_pid =
            std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd");
        Some(Privileges {
            effective,
            host_pid,
        })
    }

    fn has(&self, cap: u32) -> bool {
        self.effective & (1 << cap) != 0
    }
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// One sentence per check that `p` rules out (`probes`: whether probing is on at all).
pub fn missing_checks(p: Privileges, probes: bool) -> Vec<&'static str> {
    let mut out = Vec::new();
    if !p.has(CAP_NET_ADMIN) {
        out.push(
            "without CAP_NET_ADMIN: pod-side checks (addresses read through IFA_TARGET_NETNSID) \
             fail and the netlink receive buffer stays small (kernel-event overruns more likely)",
        );
    }
    if probes {
        if !p.has(CAP_SYS_ADMIN) {
            out.push(
                "without CAP_SYS_ADMIN: pod network namespaces cannot be entered: no pod is probed",
            );
        }
        if !p.has(CAP_NET_RAW) {
            out.push("without CAP_NET_RAW: ICMP probes cannot be sent: icmp targets fail");
        }
        if !p.has(CAP_SYS_PTRACE) || !p.host_pid {
            out.push(
                "the /proc fallback is off (needs hostPID and CAP_SYS_PTRACE): pods without a \
                 /var/run/netns bind mount are not probed",
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u64 =
        (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW) | (1 << CAP_SYS_PTRACE) | (1 << CAP_SYS_ADMIN);

    #[test]
    fn parses_proc_status() {
        let s = "Name:\tpodnet-agent\nCapInh:\t0000000000000000\nCapEff:\t00000000a82425fb\n";
        assert_eq!(parse_cap_eff(s), Some(0xa824_25fb));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }

    #[test]
    fn says_what_is_missing() {
        let full = Privileges {
            effective: ALL,
            host_pid: true,
        };
        assert!(missing_checks(full, true).is_empty());
        let no_ptrace = Privileges {
            effective: ALL & !(1 << CAP_SYS_PTRACE),
            host_pid: true,
        };
        let m = missing_checks(no_ptrace, true);
        assert_eq!(m.len(), 1);
        assert!(m[0].starts_with("the /proc fallback is off"));
        let no_host_pid = Privileges {
            effective: ALL,
            host_pid: false,
        };
        assert_eq!(missing_checks(no_host_pid, true), m);
        // Without probes only the netlink capability matters.
        assert!(
            missing_checks(
                Privileges {
                    effective: 1 << CAP_NET_ADMIN,
                    host_pid: false
                },
                false
            )
            .is_empty()
        );
        assert_eq!(
            missing_checks(
                Privileges {
                    effective: 0,
                    host_pid: false
                },
                true
            )
            .len(),
            4
        );
    }
}
