//! Generating private keys (for `auth-server keygen` and ephemeral development keys).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use jsonwebtoken::Algorithm;

use super::KeyError;

/// A new private key for `algorithm`, as PKCS#8 PEM.
pub fn generate_pem(algorithm: Algorithm) -> Result<String, KeyError> {
    let failed = |_| KeyError(format!("cannot generate a {algorithm:?} key"));
    let der = match algorithm {
        Algorithm::RS256 => aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .and_then(|pair| pair.as_der())
            .map(|der| der.as_ref().to_vec())
            .map_err(failed)?,
        Algorithm::ES256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .and_then(|pair| pair.to_pkcs8v1())
            .map(|doc| doc.as_ref().to_vec())
            .map_err(failed)?,
        Algorithm::EdDSA => Ed25519KeyPair::generate()
            .and_then(|pair| pair.to_pkcs8v1())
            .map(|doc| doc.as_ref().to_vec())
            .map_err(failed)?,
        other => return Err(KeyError(format!("cannot generate {other:?} keys"))),
    };
    Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", der)))
}
