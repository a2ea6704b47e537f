use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use uuid::Uuid;

use super::*;

struct Fixture {
    encoding: EncodingKey,
    jwk: Jwk,
    keys: KeySet,
    validator: TokenValidator,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn fixture() -> Fixture {
    let encoding = private_key(Algorithm::RS256);
    let jwk = jwk_for(&encoding, Algorithm::RS256, "key-1");
    let keys = KeySet::from_jwks(&JwkSet {
        keys: vec![jwk.clone()],
    })
    .unwrap();
    let validator = TokenValidator::new(ValidatorSettings {
        issuer: "https://auth.example".into(),
        audience: "example-api".into(),
        leeway: Duration::from_secs(30),
        max_lifetime: Duration::from_secs(900),
    });
    Fixture {
        encoding,
        jwk,
        keys,
        validator,
    }
}

fn claims() -> Value {
    let now = now();
    json!({
        "iss": "https://auth.example", "aud": "example-api",
        "sub": Uuid::new_v4(), "sid": Uuid::new_v4(), "jti": Uuid::new_v4(),
        "iat": now, "nbf": now, "exp": now + 900,
        "email": "a@example.com", "email_verified": true, "roles": ["user"],
    })
}

fn header() -> Value {
    json!({ "alg": "RS256", "typ": "at+jwt", "kid": "key-1" })
}

/// Signs arbitrary header and claims JSON with the fixture key (RS256), bypassing every check.
fn sign_raw(f: &Fixture, header: &Value, claims: &str) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &f.encoding, Algorithm::RS256).unwrap();
    format!("{message}.{signature}")
}

fn sign(f: &Fixture, header: &Value, claims: &Value) -> String {
    sign_raw(f, header, &claims.to_string())
}

fn check(f: &Fixture, token: &str) -> Result<VerifiedToken, TokenError> {
    f.validator.validate(token, &f.keys)
}

#[test]
fn a_well_formed_token_is_accepted_with_its_claims() {
    let f = fixture();
    let claims = claims();
    let verified = check(&f, &sign(&f, &header(), &claims)).unwrap();
    assert_eq!(verified.kid, "key-1");
    assert_eq!(verified.claims.email, "a@example.com");
    assert_eq!(verified.claims.sub.to_string(), claims["sub"].as_str().unwrap());
}

#[test]
fn tokens_signed_by_jsonwebtoken_with_our_header_are_accepted() {
    let f = fixture();
    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some("key-1".into());
    let token = jsonwebtoken::encode(&header, &claims(), &f.encoding).unwrap();
    assert!(check(&f, &token).is_ok());
}

#[test]
fn alg_none_in_any_case_is_refused() {
    let f = fixture();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({ "alg": alg, "typ": "at+jwt", "kid": "key-1" });
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims().to_string())
        );
        assert_eq!(
            check(&f, &unsigned),
            Err(TokenError::Malformed),
            "{alg} without signature"
        );
        let signed = sign(&f, &header, &claims());
        assert_eq!(
            check(&f, &signed),
            Err(TokenError::AlgorithmMismatch),
            "{alg} with signature"
        );
    }
}

#[test]
fn hmac_signed_with_the_public_key_is_refused() {
    let f = fixture();
    let Some(n) = (match &f.jwk.algorithm {
        jsonwebtoken::jwk::AlgorithmParameters::RSA(rsa) => Some(rsa.n.clone()),
        _ => None,
    }) else {
        panic!("an RSA key")
    };
    let header = json!({ "alg": "HS256", "typ": "at+jwt", "kid": "key-1" });
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    let secret = EncodingKey::from_secret(n.as_bytes());
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &secret, Algorithm::HS256).unwrap();
    assert_eq!(
        check(&f, &format!("{message}.{signature}")),
        Err(TokenError::AlgorithmMismatch)
    );
}

#[test]
fn forbidden_headers_are_refused_even_when_null() {
    let f = fixture();
    for (name, value) in [
        ("crit", json!(["exp"])),
        ("jwk", json!({ "kty": "RSA" })),
        ("jku", json!("https://evil.example/jwks")),
        ("x5u", json!("https://evil.example/cert")),
        ("x5c", json!(["MIIB"])),
        ("crit", Value::Null),
    ] {
        let mut header = header();
        header[name] = value;
        assert_eq!(
            check(&f, &sign(&f, &header, &claims())),
            Err(TokenError::ForbiddenHeader),
            "{name}"
        );
    }
}

#[test]
fn only_access_token_types_are_accepted() {
    let f = fixture();
    for typ in [json!("JWT"), json!("id_token"), Value::Null] {
        let mut header = header();
        header["typ"] = typ.clone();
        assert_eq!(
            check(&f, &sign(&f, &header, &claims())),
            Err(TokenError::WrongType),
            "{typ}"
        );
    }
    let mut header = header();
    header["typ"] = json!("application/at+jwt");
    assert!(check(&f, &sign(&f, &header, &claims())).is_ok());
}

#[test]
fn time_claims_are_enforced_with_leeway() {
    let f = fixture();
    let mut expired = claims();
    expired["exp"] = json!(now() - 31);
    assert_eq!(
        check(&f, &sign(&f, &header(), &expired)),
        Err(TokenError::Expired)
    );
    let mut within_leeway = claims();
    within_leeway["exp"] = json!(now() - 20);
    assert!(check(&f, &sign(&f, &header(), &within_leeway)).is_ok());
    let mut future = claims();
    future["nbf"] = json!(now() + 120);
    assert_eq!(
        check(&f, &sign(&f, &header(), &future)),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn a_token_may_claim_no_more_than_the_issuers_lifetime() {
    let f = fixture();
    let mut decade = claims();
    decade["exp"] = json!(now() + 10 * 365 * 86_400);
    assert_eq!(
        check(&f, &sign(&f, &header(), &decade)),
        Err(TokenError::LifetimeTooLong)
    );
    let mut within_leeway = claims();
    within_leeway["exp"] = json!(now() + 900 + 30);
    assert!(check(&f, &sign(&f, &header(), &within_leeway)).is_ok());
    let mut issued_later = claims();
    issued_later["iat"] = json!(now() + 120);
    issued_later["exp"] = json!(now() + 300);
    assert_eq!(
        check(&f, &sign(&f, &header(), &issued_later)),
        Err(TokenError::IssuedInFuture)
    );
}

#[test]
fn every_claim_is_required() {
    let f = fixture();
    for claim in [
        "exp", "nbf", "iat", "iss", "aud", "sub", "sid", "jti", "email", "roles",
    ] {
        let mut claims = claims();
        claims.as_object_mut().unwrap().remove(claim);
        assert!(
            check(&f, &sign(&f, &header(), &claims)).is_err(),
            "{claim} missing was accepted"
        );
    }
    let mut text_exp = claims();
    text_exp["exp"] = json!("tomorrow");
    assert!(check(&f, &sign(&f, &header(), &text_exp)).is_err());
}

#[test]
fn issuer_and_audience_must_match() {
    let f = fixture();
    let mut claims = claims();
    claims["iss"] = json!("https://evil.example");
    assert_eq!(
        check(&f, &sign(&f, &header(), &claims)),
        Err(TokenError::WrongIssuer)
    );
    let mut claims = self::claims();
    claims["aud"] = json!("other-api");
    assert_eq!(
        check(&f, &sign(&f, &header(), &claims)),
        Err(TokenError::WrongAudience)
    );
}

#[test]
fn duplicate_claims_or_header_fields_are_refused() {
    let f = fixture();
    let body = claims().to_string();
    let duplicated = body.replacen('{', "{\"sub\":\"00000000-0000-0000-0000-000000000000\",", 1);
    assert!(check(&f, &sign_raw(&f, &header(), &duplicated)).is_err());

    let header = r#"{"alg":"RS256","typ":"at+jwt","kid":"key-1","alg":"RS256"}"#;
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(&body)
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &f.encoding, Algorithm::RS256).unwrap();
    assert_eq!(
        check(&f, &format!("{message}.{signature}")),
        Err(TokenError::Malformed)
    );
}

#[test]
fn only_canonical_base64url_is_accepted() {
    let f = fixture();
    let token = sign(&f, &header(), &claims());
    let segments: Vec<&str> = token.split('.').collect();
    // A signature that is not canonical base64url does not decode, so it cannot verify.

    let padded = format!("{}==", segments[2]);
    assert_eq!(
        check(&f, &format!("{}.{}.{padded}", segments[0], segments[1])),
        Err(TokenError::BadSignature)
    );

    let standard_alphabet = STANDARD.encode(URL_SAFE_NO_PAD.decode(segments[2]).unwrap());
    if standard_alphabet.contains(['+', '/']) {
        let token = format!(
            "{}.{}.{}",
            segments[0],
            segments[1],
            standard_alphabet.trim_end_matches('=')
        );
        assert_eq!(check(&f, &token), Err(TokenError::BadSignature));
    }

    // 256 signature bytes encode to 342 characters, the last of which carries 4 unused bits.
    let mut altered = segments[2].to_owned();
    let last = altered.pop().unwrap();
    let sextet = URL_SAFE_NO_PAD.decode(format!("AAA{last}")).unwrap()[2] & 0x3f;
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    altered.push(alphabet.as_bytes()[usize::from(sextet | 1)] as char);
    assert_eq!(
        check(&f, &format!("{}.{}.{altered}", segments[0], segments[1])),
        Err(TokenError::BadSignature)
    );

    let padded_payload = format!("{}.{}=.{}", segments[0], segments[1], segments[2]);
    assert!(check(&f, &padded_payload).is_err());
    let header_bytes = URL_SAFE_NO_PAD.decode(segments[0]).unwrap();
    let standard_header = STANDARD.encode(&header_bytes);
    let header_token = format!("{standard_header}.{}.{}", segments[1], segments[2]);
    assert!(check(&f, &header_token).is_err());
}

#[test]
fn structure_and_size_are_checked_first() {
    let f = fixture();
    assert_eq!(check(&f, ""), Err(TokenError::Malformed));
    assert_eq!(check(&f, "garbage"), Err(TokenError::Malformed));
    assert_eq!(check(&f, "a.b.c.d"), Err(TokenError::Malformed));
    let token = sign(&f, &header(), &claims());
    assert_eq!(
        check(&f, &token[..token.len() - 10]),
        Err(TokenError::BadSignature)
    );
    let mut claims = claims();
    claims["pad"] = json!("x".repeat(MAX_TOKEN_BYTES));
    assert_eq!(
        check(&f, &sign(&f, &header(), &claims)),
        Err(TokenError::TooLarge)
    );
}

#[test]
fn unknown_or_hostile_key_ids_are_refused() {
    let f = fixture();
    for kid in ["key-2", "../../etc/passwd", "key-1'--"] {
        let mut header = header();
        header["kid"] = json!(kid);
        assert_eq!(
            check(&f, &sign(&f, &header, &claims())),
            Err(TokenError::UnknownKey),
            "{kid}"
        );
    }
    // Ids no key of ours can have are refused as malformed, so they never cause a key refetch.
    for kid in ["k".repeat(200), "' OR 1=1 --".into(), String::new()] {
        let mut header = header();
        header["kid"] = json!(kid);
        assert_eq!(
            check(&f, &sign(&f, &header, &claims())),
            Err(TokenError::Malformed),
            "{kid}"
        );
    }
}

#[test]
fn a_token_signed_by_another_key_is_refused() {
    let f = fixture();
    let other = fixture();
    assert_eq!(
        check(&f, &sign(&other, &header(), &claims())),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn canonical_base64url_rules() {
    assert!(is_canonical_base64url(b"AA"));
    assert!(!is_canonical_base64url(b"AB"));
    assert!(is_canonical_base64url(b"AAA"));
    assert!(!is_canonical_base64url(b"AAB"));
    assert!(!is_canonical_base64url(b"A"));
    assert!(!is_canonical_base64url(b""));
    assert!(!is_canonical_base64url(b"AA=="));
    assert!(!is_canonical_base64url(b"a+b/"));
}

#[test]
fn a_jwks_without_algorithms_or_with_symmetric_keys_yields_no_keys() {
    let f = fixture();
    let mut without_alg = f.jwk.clone();
    without_alg.common.key_algorithm = None;
    assert!(
        KeySet::from_jwks(&JwkSet {
            keys: vec![without_alg]
        })
        .is_err()
    );
    let hmac: Jwk =
        serde_json::from_value(json!({"kty":"oct","k":"c2VjcmV0","alg":"HS256","kid":"h"})).unwrap();
    assert_eq!(
        KeySet::from_jwks(&JwkSet { keys: vec![hmac] }).err(),
        Some(KeySetError::Empty)
    );
}

/// A private key of the family `algorithm` belongs to.
fn private_key(algorithm: Algorithm) -> EncodingKey {
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    };
    let pem = |der: &[u8]| pem::encode(&pem::Pem::new("PRIVATE KEY", der.to_vec()));
    match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => {
            let curve = if algorithm == Algorithm::ES256 {
                &ECDSA_P256_SHA256_FIXED_SIGNING
            } else {
                &ECDSA_P384_SHA384_FIXED_SIGNING
            };
            let pair = EcdsaKeyPair::generate(curve).unwrap();
            EncodingKey::from_ec_pem(pem(pair.to_pkcs8v1().unwrap().as_ref()).as_bytes()).unwrap()
        }
        Algorithm::EdDSA => {
            let pair = Ed25519KeyPair::generate().unwrap();
            EncodingKey::from_ed_pem(pem(pair.to_pkcs8v1().unwrap().as_ref()).as_bytes()).unwrap()
        }
        _ => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
            EncodingKey::from_rsa_pem(pem(pair.as_der().unwrap().as_ref()).as_bytes()).unwrap()
        }
    }
}

fn jwk_for(key: &EncodingKey, algorithm: Algorithm, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(key, algorithm).unwrap();
    jwk.common.key_id = Some(kid.into());
    jwk
}

#[test]
fn every_supported_algorithm_verifies_with_its_parsed_key() {
    let f = fixture();
    for algorithm in [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let key = private_key(algorithm);
        let keys = KeySet::from_jwks(&JwkSet {
            keys: vec![jwk_for(&key, algorithm, "k")],
        })
        .unwrap();
        let mut header = Header::new(algorithm);
        header.typ = Some("at+jwt".into());
        header.kid = Some("k".into());
        let token = jsonwebtoken::encode(&header, &claims(), &key).unwrap();
        assert!(f.validator.validate(&token, &keys).is_ok(), "{algorithm:?}");
        let (message, _) = token.rsplit_once('.').unwrap();
        let forged = jsonwebtoken::encode(&header, &claims(), &private_key(algorithm)).unwrap();
        let foreign_signature = forged.rsplit_once('.').unwrap().1;
        assert_eq!(
            f.validator
                .validate(&format!("{message}.{foreign_signature}"), &keys),
            Err(TokenError::BadSignature),
            "{algorithm:?} with another key's signature"
        );
    }
}

#[test]
fn a_key_labelled_with_another_family_or_curve_is_not_trusted() {
    let mislabelled = |key: &EncodingKey, real: Algorithm, claimed: &str| {
        let mut jwk = serde_json::to_value(jwk_for(key, real, "k")).unwrap();
        jwk["alg"] = json!(claimed);
        let jwk: Jwk = serde_json::from_value(jwk).unwrap();
        KeySet::from_jwks(&JwkSet { keys: vec![jwk] }).err()
    };
    let rsa = private_key(Algorithm::RS256);
    let p256 = private_key(Algorithm::ES256);
    let ed = private_key(Algorithm::EdDSA);
    assert_eq!(
        mislabelled(&rsa, Algorithm::RS256, "ES256"),
        Some(KeySetError::Empty)
    );
    assert_eq!(
        mislabelled(&p256, Algorithm::ES256, "ES384"),
        Some(KeySetError::Empty)
    );
    assert_eq!(
        mislabelled(&p256, Algorithm::ES256, "RS256"),
        Some(KeySetError::Empty)
    );
    assert_eq!(
        mislabelled(&ed, Algorithm::EdDSA, "ES256"),
        Some(KeySetError::Empty)
    );
    assert_eq!(
        mislabelled(&rsa, Algorithm::RS256, "PS256"),
        None,
        "RSA keys serve RS* and PS*"
    );
}
