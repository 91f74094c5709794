//! How CNI plugins name a pod's host-side interface.

use std::str::FromStr;

/// The CNI plugin of the node: decides the expected host interface of a pod and what its
/// wiring must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cni {
    /// Calico: `cali` + sha1(namespace.pod)[:11]; host `/32` via the veth, gateway
    /// 169.254.1.1 answered by proxy ARP on the host veth.
    Calico,
    /// AWS VPC CNI: `eni` + the same hash; host `/32` via the veth (scope link), gateway
    /// 169.254.1.1 resolved by a static (permanent) neighbour inside the pod, no proxy ARP
    /// (amazon-vpc-cni-k8s `cmd/routed-eni-cni-plugin/driver`).
    AwsVpcCni,
    /// The reference `ptp` plugin (kind's kindnet): host `/32` via the veth (scope host), the
    /// host veth holds the gateway address the pod routes through.
    Ptp,
    /// The reference `bridge` plugin (flannel, kubenet): the pod subnet is routed to the
    /// bridge, the pod's veth is a port of it, the bridge holds the gateway address.
    Bridge,
    /// Anything else: no naming rule; only what holds for every CNI is judged (the kernel's
    /// route for the pod IP leaves through the pod's interface or its bridge, the interface is
    /// up) plus probes.
    Generic,
}

impl Cni {
    /// The host interface prefix, if the CNI has one.
    pub fn interface_prefix(&self) -> Option<&'static str> {
        match self {
            Cni::Calico => Some("cali"),
            Cni::AwsVpcCni => Some("eni"),
            Cni::Ptp | Cni::Bridge | Cni::Generic => None,
        }
    }

    /// The host interface a pod must have, if the CNI names it predictably; `prefix` overrides
    /// the CNI's default (Calico's FELIX_INTERFACEPREFIX, AWS_VPC_K8S_CNI_VETHPREFIX).
    pub fn interface_for(
        &self,
        prefix: Option<&str>,
        namespace: &str,
        pod: &str,
    ) -> Option<String> {
        // ptp and bridge name host veths `veth` + random hex: no rule to derive it from.
        let prefix = match self {
            Cni::Calico | Cni::AwsVpcCni => prefix.or(self.interface_prefix())?,
            Cni::Ptp | Cni::Bridge | Cni::Generic => return None,
        };
        Some(veth_name(prefix, namespace, pod))
    }
}

impl Cni {
    /// Stable name, as `--cni` takes it and `/status` shows it.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Cni::Calico => "calico",
            Cni::AwsVpcCni => "aws-vpc-cni",
            Cni::Ptp => "ptp",
            Cni::Bridge => "bridge",
            Cni::Generic => "generic",
        }
    }
}

impl FromStr for Cni {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "calico" => Ok(Cni::Calico),
            "aws-vpc-cni" => Ok(Cni::AwsVpcCni),
            "ptp" | "kindnet" => Ok(Cni::Ptp),
            "bridge" | "flannel" => Ok(Cni::Bridge),
            "generic" => Ok(Cni::Generic),
            _ => Err(format!(
                "unknown CNI '{s}' (calico, aws-vpc-cni, ptp, kindnet, bridge, flannel or generic)"
            )),
        }
    }
}

/// Host interface of a pod as Calico (and AWS VPC CNI, with its own prefix) names it:
/// `prefix` + the first 11 hex digits of SHA-1 of `"<namespace>.<pod>"`
/// (libcalico-go `VethNameForWorkload`). With the default prefix `cali` that is 15
/// characters, the kernel's limit.
pub fn veth_name(prefix: &str, namespace: &str, pod: &str) -> String {
    let digest = sha1_smol::Sha1::from(format!("{namespace}.{pod}")).hexdigest();
    format!("{prefix}{}", &digest[..11])
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values computed independently:
    //   printf '%s' 'kube-system.coredns-7db6d8ff4d-x2x9z' | sha1sum | cut -c1-11
    #[test]
    fn matches_sha1sum() {
        assert_eq!(
            veth_name("cali", "kube-system", "coredns-7db6d8ff4d-x2x9z"),
            "calie78978f7208"
        );
        assert_eq!(veth_name("cali", "default", "web-0"), "cali0d7763386da");
        assert_eq!(veth_name("eni", "default", "web-0"), "eni0d7763386da");
    }

    /// Cross-check against the system's `sha1sum` for names with unusual characters.
    #[test]
    fn matches_sha1sum_at_runtime() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        for (ns, pod) in [
            ("prod", "api-5f9c8d7b6-abcde"),
            ("ns-ü", "pod.with.dots"),
            ("", ""),
        ] {
            let mut child = Command::new("sha1sum")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("sha1sum (coreutils) must be installed");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("{ns}.{pod}").as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            let hex = String::from_utf8(out.stdout).unwrap();
            assert_eq!(veth_name("cali", ns, pod), format!("cali{}", &hex[..11]));
        }
    }

    #[test]
    fn cni_profiles() {
        assert_eq!("calico".parse::<Cni>(), Ok(Cni::Calico));
        assert!("cilium".parse::<Cni>().is_err());
        assert_eq!("kindnet".parse::<Cni>(), Ok(Cni::Ptp));
        assert_eq!("flannel".parse::<Cni>(), Ok(Cni::Bridge));
        for c in [
            Cni::Calico,
            Cni::AwsVpcCni,
            Cni::Ptp,
            Cni::Bridge,
            Cni::Generic,
        ] {
            assert_eq!(c.as_str().parse::<Cni>(), Ok(c));
        }
        assert_eq!(
            Cni::Ptp.interface_for(Some("veth"), "default", "web-0"),
            None
        );
        let calico = Cni::Calico.interface_for(None, "default", "web-0");
        assert_eq!(calico.as_deref(), Some("cali0d7763386da"));
        let aws = Cni::AwsVpcCni.interface_for(None, "default", "web-0");
        assert_eq!(aws.as_deref(), Some("eni0d7763386da"));
        let custom = Cni::Calico.interface_for(Some("tap"), "default", "web-0");
        assert_eq!(custom.as_deref(), Some("tap0d7763386da"));
        assert_eq!(
            Cni::Generic.interface_for(Some("x"), "default", "web-0"),
            None
        );
    }

    #[test]
    fn calico_names_fit_ifnamsiz() {
        assert_eq!(
            veth_name("cali", "a-very-long-namespace", "and-a-long-pod-name").len(),
            15
        );
    }
}
