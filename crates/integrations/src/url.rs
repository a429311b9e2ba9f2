//! Where a webhook may be sent (SSRF): the URL as set, and the addresses at every delivery.
//!
//! At creation (and on a changed URL) the host is resolved, and every address it resolves to
//! must be allowed ([`backroom_kernel::net::is_allowed`]): public, or any but the cloud
//! metadata addresses when `BACKROOM_WEBHOOKS_ALLOW_PRIVATE` is on. At each delivery the HTTP
//! client resolves the name again through [`CheckedResolver`] and connects only to the
//! addresses it checked, so a name that answers differently between two look-ups (DNS
//! rebinding) cannot slip through; an address written out in the URL is checked before the
//! request is made (the resolver sees names only).

use std::net::SocketAddr;

use backroom_kernel::{Code, Error, net};
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

const FORBIDDEN: &str = "resolves to a loopback, private, link-local or otherwise non-public address (allowed only with BACKROOM_WEBHOOKS_ALLOW_PRIVATE, and metadata addresses never)";

/// Checks a webhook URL as it is set: an absolute `http` or `https` URL of at most
/// [`MAX_URL_LEN`] characters without credentials, whose host resolves, only to allowed
/// addresses. Answers the URL as it will be called (normalised). A malformed URL or a host
/// that does not resolve is `validation_failed` on `url`; a forbidden address is
/// `webhook_url_forbidden`.
pub async fn check(raw: &str, allow_private: bool) -> Result<Url, Error> {
    let bad = |m: &str| Error::field("url", m);
    let raw = raw.trim();
    if raw.is_empty() || raw.chars().count() > MAX_URL_LEN {
        return Err(bad("must be an absolute http or https URL of at most 2048 characters"));
    }
    let url = Url::parse(raw).map_err(|_| bad("must be an absolute http or https URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be an absolute http or https URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry a user name or password"));
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()).map(str::to_owned) else {
        return Err(bad("must be an absolute http or https URL"));
    };
    let forbidden = || Error::refused(Code::WebhookUrlForbidden, format!("url: {host} {FORBIDDEN}"));
    if let Some(ip) = net::literal_ip(&host) {
        return if net::is_allowed(ip, allow_private) { Ok(url) } else { Err(forbidden()) };
    }
    // A `localhost` name is loopback whatever the resolver says.
    if net::is_localhost_name(&host) && !allow_private {
        return Err(forbidden());
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::lookup_host((host.as_str(), port)))
            .await
        {
            Ok(Ok(a)) => a.collect(),
            _ => Vec::new(),
        };
    if addrs.is_empty() {
        return Err(bad("the host does not resolve"));
    }
    if addrs.iter().any(|a| !net::is_allowed(a.ip(), allow_private)) {
        return Err(forbidden());
    }
    if url.as_str().chars().count() > MAX_URL_LEN {
        return Err(bad("must be an absolute http or https URL of at most 2048 characters"));
    }
    Ok(url)
}

/// Whether a delivery to `url` may be attempted before any look-up: its host is a name, or an
/// address written out that is allowed.
pub fn literal_allowed(url: &Url, allow_private: bool) -> bool {
    match url.host_str() {
        None | Some("") => false,
        Some(host) => net::literal_ip(host).is_none_or(|ip| net::is_allowed(ip, allow_private)),
    }
}

/// Resolves webhook host names for the HTTP client, refusing a name with any address that
/// is not allowed; the client connects to exactly the addresses answered here.
pub struct CheckedResolver {
    pub allow_private: bool,
}

/// A webhook's host name resolved to an address it may not be sent to.
#[derive(Debug)]
pub struct RefusedAddress(pub String);

impl std::fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {FORBIDDEN}", self.0)
    }
}

impl std::error::Error for RefusedAddress {}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let localhost = net::is_localhost_name(&host) && !allow_private;
            if localhost || addrs.iter().any(|a| !net::is_allowed(a.ip(), allow_private)) {
                return Err(Box::new(RefusedAddress(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_are_checked_as_set() {
        for forbidden in [
            "http://127.0.0.1/h",
            "http://localhost:8080/h",
            "http://LOCALHOST./h",
            "http://[::1]/h",
            "http://0.0.0.0/h",
            "http://169.254.169.254/latest",
            "http://10.0.0.1/h",
            "http://2130706433/h",
            "http://0x7f.1/h",
            "http://[::ffff:7f00:1]/h",
            "http://[fd00:ec2::254]/h",
        ] {
            let e = check(forbidden, false).await.unwrap_err();
            assert_eq!(e.code(), Code::WebhookUrlForbidden, "{forbidden}: {e}");
        }
        for metadata in ["http://169.254.169.254/latest", "http://[fd00:ec2::254]/", "http://[::ffff:a9fe:a9fe]/"] {
            let e = check(metadata, true).await.unwrap_err();
            assert_eq!(e.code(), Code::WebhookUrlForbidden, "{metadata}: {e}");
        }
        for ok in ["http://127.0.0.1:9/h", "http://localhost/h", "http://2130706433/h"] {
            check(ok, true).await.unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", "hooks.example/h", "/h", "ftp://hooks.example/h", "http://", "http://u:p@127.0.0.1/"] {
            let e = check(bad, true).await.unwrap_err();
            assert_eq!(e.code(), Code::ValidationFailed, "{bad:?}: {e}");
        }
        let e = check("http://no-such-host.invalid/h", true).await.unwrap_err();
        assert_eq!(e.code(), Code::ValidationFailed, "{e}");
    }
}
