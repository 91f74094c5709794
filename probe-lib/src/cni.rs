//! How CNI plugins name a pod's host-side interface.

use std::str::FromStr;

/// The CNI plugin of the node: decides the expected host interface of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cni {
    /// Calico: `cali` + sha1(namespace.pod)[:11].
    Calico,
    /// AWS VPC CNI: `eni` + the same hash.
    AwsVpcCni,
    /// Anything else: no naming rule; pods are checked by IP (their route and probes).
    Generic,
}

impl Cni {
    /// The host interface prefix, if the CNI has one.
    pub fn interface_prefix(&self) -> Option<&'static str> {
        match self {
            Cni::Calico => Some("cali"),
            Cni::AwsVpcCni => Some("eni"),
            Cni::Generic => None,
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
        let prefix = match self {
            Cni::Generic => return None,
            _ => prefix.or(self.interface_prefix())?,
        };
        Some(veth_name(prefix, namespace, pod))
    }
}

impl FromStr for Cni {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "calico" => Ok(Cni::Calico),
            "aws-vpc-cni" => Ok(Cni::AwsVpcCni),
            "generic" => Ok(Cni::Generic),
            _ => Err(format!(
                "unknown CNI '{s}' (calico, aws-vpc-cni or generic)"
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
        assert!("flannel".parse::<Cni>().is_err());
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
