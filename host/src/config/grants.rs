//! A connector's grants as typed values: HTTP origins, directories with the
//! path the plugin sees and whether it may write, and secret names. Parsed
//! once here; the capability layer enforces them as they are.

use std::path::PathBuf;

/// A granted origin: `scheme://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Parse `https://erp.example.org` or `http://10.0.0.5:8080`.
    pub fn parse(text: &str) -> Result<Origin, String> {
        let uri: http::Uri = text.parse().map_err(|e| format!("not a URL: {e}"))?;
        let scheme = uri.scheme_str().ok_or("no scheme")?.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!("scheme {scheme:?} is not http or https"));
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err("an origin has no path".into());
        }
        let host = uri
            .host()
            .ok_or("no host")?
            .trim_matches(['[', ']'])
            .to_ascii_lowercase();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        Ok(Origin { scheme, host, port })
    }

    /// An origin from its parts (`scheme` and `host` lower-case).
    pub fn new(scheme: String, host: String, port: u16) -> Origin {
        Origin { scheme, host, port }
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The host name or address, without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, explicit or the scheme's default.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// A granted directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileGrant {
    /// The directory on the host (relative ones resolved against the config file).
    pub host: PathBuf,
    /// The path the plugin sees it at: as written in the grant.
    pub guest: String,
    /// `:rw` rather than `:ro`.
    pub writable: bool,
}

impl std::fmt::Display for FileGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}",
            self.guest,
            if self.writable { "rw" } else { "ro" }
        )
    }
}

/// Capabilities granted to a connector (least privilege: empty by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Outbound HTTP origins.
    pub http: Vec<Origin>,
    /// Directories.
    pub files: Vec<FileGrant>,
    /// Secret names.
    pub secrets: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            Origin::parse("https://ERP.example.org"),
            Ok(Origin::new("https".into(), "erp.example.org".into(), 443))
        );
        assert_eq!(
            Origin::parse("http://[::1]:8080").map(|o| o.to_string()),
            Ok("http://[::1]:8080".to_owned())
        );
        assert!(Origin::parse("ftp://x").is_err());
        assert!(Origin::parse("https://x/path").is_err());
    }
}
