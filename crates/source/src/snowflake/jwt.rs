//! Snowflake's key-pair authentication: a JWT signed with the user's RSA private key (RS256),
//! whose issuer names the public key by its SHA-256 fingerprint.
//!
//! The key is read once (PKCS#8 PEM, encrypted with a passphrase or not; PKCS#1 is accepted
//! too) and a fresh token is signed for every request, so a run longer than a token's hour
//! never presents an expired one. Signing uses ring, which rustls already builds; decrypting
//! an encrypted key uses RustCrypto's `pkcs8` (PBES2: PBKDF2 or scrypt with AES-CBC, what
//! `openssl pkcs8 -topk8` writes).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{KeyPair as _, RsaKeyPair, RSA_PKCS1_SHA256};
use sha2::{Digest as _, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a token is valid. Snowflake accepts at most one hour; a minute less leaves room
/// for a clock that runs a little fast.
pub(crate) const TOKEN_LIFETIME: Duration = Duration::from_secs(59 * 60);

/// A private key ready to sign, and the names Snowflake expects in the token.
pub(crate) struct KeyPairSigner {
    key_pair: RsaKeyPair,
    /// `ACCOUNT.USER`, upper-cased.
    subject: String,
    /// `ACCOUNT.USER.SHA256:<base64 fingerprint of the public key>`.
    issuer: String,
}

/// Why a private key cannot be used. The messages never include the key or the passphrase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyError {
    #[error(
        "the private key is not a PEM file (expected `-----BEGIN PRIVATE KEY-----` or \
         `-----BEGIN ENCRYPTED PRIVATE KEY-----`): {0}"
    )]
    NotPem(String),
    #[error(
        "the private key is encrypted but no passphrase is set; add the key's passphrase to \
         the connection"
    )]
    PassphraseMissing,
    #[error(
        "the private key could not be decrypted with the passphrase given; check the \
         passphrase (or, if the key was encrypted with an old OpenSSL default such as \
         PBE-SHA1-3DES, re-encrypt it: `openssl pkcs8 -topk8 -v2 aes-256-cbc -in old.p8 -out \
         rsa_key.p8`)"
    )]
    WrongPassphrase,
    #[error("the private key is not an RSA key of 2048 bits or more that ferry can use: {0}")]
    NotUsableRsa(String),
    #[error("signing the key-pair token failed")]
    SigningFailed,
}

impl KeyPairSigner {
    /// Reads `pem` (decrypting it with `passphrase` when it is encrypted) for `account`/`user`.
    pub(crate) fn new(
        pem: &str,
        passphrase: Option<&str>,
        account: &str,
        user: &str,
    ) -> Result<KeyPairSigner, KeyError> {
        let key_pair = read_private_key(pem, passphrase)?;
        let subject = format!("{}.{}", jwt_account_name(account), user.to_uppercase());
        let issuer = format!(
            "{subject}.SHA256:{}",
            public_key_fingerprint(key_pair.public_key().as_ref())
        );
        Ok(KeyPairSigner {
            key_pair,
            subject,
            issuer,
        })
    }

    /// A token valid from `now` for [`TOKEN_LIFETIME`].
    pub(crate) fn token_at(&self, now: SystemTime) -> Result<String, KeyError> {
        let issued_at = now
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_secs())
            .unwrap_or(0);
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        let claims = serde_json::json!({
            "iss": self.issuer,
            "sub": self.subject,
            "iat": issued_at,
            "exp": issued_at + TOKEN_LIFETIME.as_secs(),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key_pair.public().modulus_len()];
        self.key_pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| KeyError::SigningFailed)?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    /// `SHA256:<fingerprint>`, what `DESC USER` shows as `RSA_PUBLIC_KEY_FP`: a message can
    /// name the key without showing it.
    pub(crate) fn fingerprint(&self) -> &str {
        self.issuer
            .rsplit_once(".SHA256:")
            .map(|(_, fingerprint)| fingerprint)
            .unwrap_or_default()
    }
}

/// The account as the token names it: the part before the first dot (a locator's region is
/// not part of it), upper-cased. `myorg-myaccount` stays whole.
pub(crate) fn jwt_account_name(account: &str) -> String {
    account.split('.').next().unwrap_or(account).to_uppercase()
}

fn read_private_key(pem: &str, passphrase: Option<&str>) -> Result<RsaKeyPair, KeyError> {
    let (label, der) = pkcs8::der::pem::decode_vec(pem.trim().as_bytes())
        .map_err(|error| KeyError::NotPem(error.to_string()))?;
    let usable = |error: ring::error::KeyRejected| KeyError::NotUsableRsa(error.to_string());
    match label {
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der).map_err(usable),
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der).map_err(usable),
        "ENCRYPTED PRIVATE KEY" => {
            let passphrase = passphrase.ok_or(KeyError::PassphraseMissing)?;
            let encrypted = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
                .map_err(|error| KeyError::NotPem(error.to_string()))?;
            let decrypted = encrypted
                .decrypt(passphrase)
                .map_err(|_| KeyError::WrongPassphrase)?;
            RsaKeyPair::from_pkcs8(decrypted.as_bytes()).map_err(usable)
        }
        other => Err(KeyError::NotPem(format!("found `{other}`"))),
    }
}

/// The base64 SHA-256 of the public key's SubjectPublicKeyInfo DER, as Snowflake computes it
/// (`openssl rsa -pubout -outform DER | openssl dgst -sha256 -binary | base64`).
fn public_key_fingerprint(rsa_public_key_der: &[u8]) -> String {
    STANDARD.encode(Sha256::digest(subject_public_key_info(rsa_public_key_der)))
}

/// Wraps a PKCS#1 RSAPublicKey (what ring gives) in a SubjectPublicKeyInfo:
/// SEQUENCE { SEQUENCE { rsaEncryption, NULL }, BIT STRING { 0 unused bits, key } }.
fn subject_public_key_info(rsa_public_key_der: &[u8]) -> Vec<u8> {
    const RSA_ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0x00];
    bit_string.extend_from_slice(rsa_public_key_der);
    let mut body = RSA_ALGORITHM.to_vec();
    body.extend(der_element(0x03, &bit_string));
    der_element(0x30, &body)
}

fn der_element(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut element = vec![tag];
    let length = content.len();
    if length < 0x80 {
        element.push(length as u8);
    } else {
        let bytes: Vec<u8> = length
            .to_be_bytes()
            .into_iter()
            .skip_while(|byte| *byte == 0)
            .collect();
        element.push(0x80 | bytes.len() as u8);
        element.extend(bytes);
    }
    element.extend_from_slice(content);
    element
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

    const KEY: &str = include_str!("test_keys/rsa_key.p8");
    const ENCRYPTED_KEY: &str = include_str!("test_keys/rsa_key_encrypted.p8");
    const PASSPHRASE: &str = "fixture-passphrase-5e2b";
    /// Computed by openssl from the public key (see the test_keys folder).
    const FINGERPRINT: &str = include_str!("test_keys/rsa_key.pub.fingerprint");
    const PUBLIC_KEY_PEM: &str = include_str!("test_keys/rsa_key.pub");

    fn decode_part(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    /// Checks a token's signature with the public key from openssl and returns its claims.
    fn verified_claims(token: &str) -> serde_json::Value {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "{token}");
        assert_eq!(
            decode_part(parts[0]),
            serde_json::json!({"alg": "RS256", "typ": "JWT"})
        );
        let (_, spki) = pkcs8::der::pem::decode_vec(PUBLIC_KEY_PEM.trim().as_bytes()).unwrap();
        // The SubjectPublicKeyInfo ends with the BIT STRING holding the PKCS#1 key ring wants.
        let rsa_public_key = &spki[spki.len() - 270..];
        assert_eq!(subject_public_key_info(rsa_public_key), spki);
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, rsa_public_key)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("the signature verifies with the public key");
        decode_part(parts[1])
    }

    #[test]
    fn tokens_are_signed_and_name_the_key_by_its_fingerprint() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for (pem, passphrase) in [(KEY, None), (ENCRYPTED_KEY, Some(PASSPHRASE))] {
            let signer = KeyPairSigner::new(pem, passphrase, "myorg-acct_1", "ferry_user").unwrap();
            let claims = verified_claims(&signer.token_at(now).unwrap());
            assert_eq!(
                claims,
                serde_json::json!({
                    "iss": format!("MYORG-ACCT_1.FERRY_USER.SHA256:{}", FINGERPRINT.trim()),
                    "sub": "MYORG-ACCT_1.FERRY_USER",
                    "iat": 1_700_000_000u64,
                    "exp": 1_700_000_000u64 + 59 * 60,
                })
            );
            assert_eq!(signer.fingerprint(), FINGERPRINT.trim());
        }
    }

    #[test]
    fn a_locator_with_a_region_is_named_without_it() {
        let signer = KeyPairSigner::new(KEY, None, "xy12345.us-east-2.aws", "me").unwrap();
        let claims = verified_claims(&signer.token_at(SystemTime::now()).unwrap());
        assert_eq!(claims["sub"], "XY12345.ME");
    }

    #[test]
    fn key_problems_say_what_to_fix_without_the_secret() {
        let error = |pem: &str, passphrase: Option<&str>| {
            KeyPairSigner::new(pem, passphrase, "a", "u")
                .err()
                .expect("refused")
        };
        assert_eq!(
            error(ENCRYPTED_KEY, Some("not-the-passphrase-91c4")),
            KeyError::WrongPassphrase
        );
        assert_eq!(error(ENCRYPTED_KEY, None), KeyError::PassphraseMissing);
        assert!(matches!(error("not a key", None), KeyError::NotPem(_)));
        let message = error(ENCRYPTED_KEY, Some("not-the-passphrase-91c4")).to_string();
        assert!(message.contains("check the passphrase"), "{message}");
        assert!(!message.contains("91c4"), "{message}");
    }
}
