//! Secrets granted to the connector in `grants.secrets`. The host resolves
//! them; never log them or put them in errors.

use crate::wit::host::plexus::connector::secrets as host;

pub use host::SecretError;

/// The value of the secret `name`.
pub fn get(name: &str) -> Result<String, SecretError> {
    host::get(name)
}
