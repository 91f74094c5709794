//! TLS for `--secure-metrics`: the given PEM certificate and key, or a self-signed certificate
//! generated at start (Prometheus then scrapes with `insecureSkipVerify`; the bearer token,
//! not the certificate, is what authorizes, as with kube-rbac-proxy's default).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{0}: no certificate in the file")]
    NoCertificate(PathBuf),
    /// Generating the self-signed certificate failed.
    #[error("generating a self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
    /// rustls rejected the certificate or key.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// An acceptor for `cert_and_key`, or for a fresh self-signed certificate naming `names`.
pub fn acceptor(
    cert_and_key: Option<(&Path, &Path)>,
    names: Vec<String>,
) -> Result<TlsAcceptor, TlsError> {
    let (chain, key) = match cert_and_key {
        Some((cert, key)) => load(cert, key)?,
        None => self_signed(names)?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn load(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    fn pem(path: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError + '_ {
        move |source| TlsError::Pem {
            path: path.to_owned(),
            source,
        }
    }
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(pem(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
    Ok((chain, key))
}

fn self_signed(
    names: Vec<String>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let generated = rcgen::generate_simple_self_signed(names)?;
    let key = PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
    Ok((vec![generated.cert.der().clone()], key.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_builds_an_acceptor() {
        assert!(acceptor(None, vec!["localhost".into(), "192.0.2.10".into()]).is_ok());
    }

    #[test]
    fn missing_files_are_errors() {
        let Err(e) = acceptor(
            Some((
                Path::new("/nonexistent/c.pem"),
                Path::new("/nonexistent/k.pem"),
            )),
            vec![],
        ) else {
            panic!("missing files accepted");
        };
        assert!(e.to_string().contains("/nonexistent/c.pem"), "{e}");
    }
}
