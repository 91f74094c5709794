//! The double hosted inside a network namespace (as the agent's Kubernetes tests use it):
//! reachable there, not from the host. Needs root.

use std::net::SocketAddr;

use podnet_kube_double::{KubeApiServer, PodBuilder, http_get};
use podnet_testbed::netns::{self, NetnsThread};

#[test]
fn runs_inside_a_network_namespace() {
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = netns::delete(&self.0);
        }
    }
    netns::require_root().unwrap();
    netns::cleanup_leftovers().unwrap();
    let name = format!("{}{}x0-kubeapi", netns::NAME_PREFIX, std::process::id());
    let ns = NetnsThread::create(&name).unwrap();
    let _remove = Remove(name.clone());
    ns.run(|h| async move {
        let lo = rtnetlink::LinkUnspec::new_with_index(1).up().build();
        h.link().set(lo).execute().await?;
        Ok(())
    })
    .unwrap();
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let s = KubeApiServer::start(Some(&name), local).unwrap();
    s.apply(PodBuilder::new("ns", "a").node("n1").build())
        .unwrap();
    let addr = s.addr();
    let (code, body) = ns
        .run_blocking(move || http_get(addr, "/api/v1/pods"))
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"name\":\"a\""));
    assert!(
        http_get(addr, "/api/v1/pods").is_err(),
        "not reachable from the host namespace"
    );
}
