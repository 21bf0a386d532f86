//! The workspace's master key and the encryption of connection secrets with it.
//!
//! Secrets are sealed with ChaCha20-Poly1305: a random 12-byte nonce per value, stored as
//! base64(nonce ‖ ciphertext), with the connection's name as associated data so a blob copied
//! onto another connection does not decrypt. The key itself lives in `FERRY_MASTER_KEY` or in
//! the workspace's `master.key` file, never in the database.

use crate::error::StateError;
use crate::records::EncryptedSecret;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ferry_core::Secret;
use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

const KEY_LENGTH: usize = 32;
const NONCE_LENGTH: usize = 12;

/// The 32-byte key that seals this workspace's secrets. `Debug` never shows it.
#[derive(Clone)]
pub struct MasterKey {
    bytes: [u8; KEY_LENGTH],
    /// The workspace's key file, named in "wrong key" messages whichever source the key had.
    key_file: PathBuf,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(…, key file {})", self.key_file.display())
    }
}

impl MasterKey {
    /// Parses a key given as base64 of 32 bytes. `origin` names where it came from for the
    /// error message (the text itself is never repeated).
    pub fn from_base64(
        text: &str,
        origin: &str,
        key_file: PathBuf,
    ) -> Result<MasterKey, StateError> {
        let invalid = || StateError::InvalidMasterKey {
            origin: origin.to_string(),
        };
        let decoded = BASE64.decode(text.trim()).map_err(|_| invalid())?;
        let bytes: [u8; KEY_LENGTH] = decoded.try_into().map_err(|_| invalid())?;
        Ok(MasterKey { bytes, key_file })
    }

    /// Reads the key file, or (when `create_if_missing`) writes a new random key to it with
    /// mode 0600 first.
    pub fn from_key_file(
        key_file: &Path,
        create_if_missing: bool,
    ) -> Result<MasterKey, StateError> {
        match std::fs::read_to_string(key_file) {
            Ok(text) => {
                let origin = format!("the key file {}", key_file.display());
                MasterKey::from_base64(&text, &origin, key_file.to_path_buf())
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && create_if_missing => {
                let bytes: [u8; KEY_LENGTH] = rand::random();
                write_new_key_file(key_file, &bytes)?;
                Ok(MasterKey {
                    bytes,
                    key_file: key_file.to_path_buf(),
                })
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(StateError::MissingMasterKey {
                    path: key_file.to_path_buf(),
                })
            }
            Err(error) => Err(StateError::io("read the master key file", key_file, error)),
        }
    }

    pub fn encrypt(&self, connection: &str, secret: &Secret) -> EncryptedSecret {
        let nonce_bytes: [u8; NONCE_LENGTH] = rand::random();
        let ciphertext = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce_bytes),
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad: connection.as_bytes(),
                },
            )
            // Encryption only fails for messages near 256 GiB.
            .expect("ChaCha20-Poly1305 encrypts any secret of reasonable size");
        let mut sealed = nonce_bytes.to_vec();
        sealed.extend_from_slice(&ciphertext);
        EncryptedSecret {
            connection: connection.to_string(),
            blob: BASE64.encode(sealed),
            hint: secret.hint(),
        }
    }

    pub fn decrypt(&self, encrypted: &EncryptedSecret) -> Result<Secret, StateError> {
        let damaged = || StateError::DamagedSecret {
            connection: encrypted.connection.clone(),
        };
        let sealed = BASE64.decode(&encrypted.blob).map_err(|_| damaged())?;
        if sealed.len() < NONCE_LENGTH {
            return Err(damaged());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LENGTH);
        // A failed authentication means a different key or different associated data; the
        // latter only happens if someone moved blobs by hand, so the message names the key.
        let clear = self
            .cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: encrypted.connection.as_bytes(),
                },
            )
            .map_err(|_| StateError::WrongMasterKey {
                connection: encrypted.connection.clone(),
                key_file: self.key_file.clone(),
            })?;
        String::from_utf8(clear)
            .map(Secret::new)
            .map_err(|_| damaged())
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(&self.bytes))
    }
}

fn write_new_key_file(key_file: &Path, bytes: &[u8; KEY_LENGTH]) -> Result<(), StateError> {
    // create_new: two processes initialising at once must not overwrite each other's key.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key_file)
        .map_err(|error| StateError::io("create the master key file", key_file, error))?;
    let text = format!("{}\n", BASE64.encode(bytes));
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| StateError::io("write the master key file", key_file, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey {
            bytes: [byte; KEY_LENGTH],
            key_file: PathBuf::from("/ws/master.key"),
        }
    }

    #[test]
    fn secrets_round_trip_and_never_repeat_a_nonce() {
        let secret = Secret::new("sk_test_51Habcdefghijklmnop4242");
        let first = key(1).encrypt("stripe", &secret);
        let second = key(1).encrypt("stripe", &secret);
        assert_ne!(first.blob, second.blob);
        assert_eq!(key(1).decrypt(&first).unwrap(), secret);
        assert_eq!(first.hint(), "sk_test_…4242");
        assert!(!format!("{first:?}").contains(&first.blob));
    }

    #[test]
    fn a_different_key_or_connection_cannot_decrypt() {
        let sealed = key(1).encrypt("stripe", &Secret::new("sk_test_51Habcdefghijklmnop4242"));
        assert_eq!(
            key(2).decrypt(&sealed).unwrap_err().to_string(),
            "cannot decrypt the secret of connection 'stripe': the master key differs from the \
             one it was saved with (FERRY_MASTER_KEY or /ws/master.key)"
        );
        let moved = EncryptedSecret {
            connection: "other".to_string(),
            ..sealed
        };
        assert!(matches!(
            key(1).decrypt(&moved),
            Err(StateError::WrongMasterKey { .. })
        ));
    }

    #[test]
    fn malformed_keys_are_refused_without_echoing_them() {
        let error = MasterKey::from_base64("c2hvcnQ=", "FERRY_MASTER_KEY", PathBuf::new())
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "FERRY_MASTER_KEY is not a valid master key: it must be the base64 of 32 random bytes \
             (make one with `openssl rand -base64 32`)"
        );
        assert!(MasterKey::from_base64("not base64!", "x", PathBuf::new()).is_err());
        let good = BASE64.encode([7u8; 32]);
        assert!(MasterKey::from_base64(&format!("{good}\n"), "x", PathBuf::new()).is_ok());
    }
}
