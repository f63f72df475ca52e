//! `X-Twilio-Signature`: base64(HMAC-SHA1(auth token, URL + each POST parameter's name and
//! value, sorted by name)). Twilio signs every request it sends us, the status callbacks and
//! the TwiML fetches alike.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

type HmacSha1 = Hmac<Sha1>;

/// The signature Twilio sends for a POST to `url` (the full URL, query included) carrying
/// the form `params`.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    // HMAC takes keys of any length, so this never fails; an empty result is refused by
    // `verify`, so even the impossible case cannot authenticate anything.
    let Ok(mut mac) = HmacSha1::new_from_slice(auth_token.as_bytes()) else {
        return String::new();
    };
    mac.update(url.as_bytes());
    // Byte order is Twilio's "Unix-style case-sensitive" sort; repeated names sort by value.
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `header_value` is Twilio's signature of this request, compared in constant time.
///
/// Twilio may have signed the URL with or without the scheme's default port (`:443`), as its
/// own helper libraries allow, so both spellings are tried.
pub fn verify(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    header_value: &str,
) -> bool {
    if auth_token.is_empty() || header_value.is_empty() {
        return false;
    }
    let given = header_value.trim().as_bytes();
    let mut ok = false;
    for candidate in std::iter::once(url.to_owned()).chain(default_port_variant(url)) {
        let expected = signature(auth_token, &candidate, params);
        // Not short-circuited, so the time taken does not say which spelling matched.
        ok |= !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given));
    }
    ok
}

/// The same URL with the scheme's default port added if absent, or removed if present.
fn default_port_variant(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let port = match scheme.to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // The host part after any userinfo; an IPv6 literal keeps its colons inside brackets.
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let host = &authority[host_start..];
    let port_sep = host.rfind(':').filter(|&i| !host[i..].contains(']'));
    let new_authority = match port_sep {
        Some(i) if &host[i + 1..] == port => authority[..host_start + i].to_owned(),
        Some(_) => return None,
        None => format!("{authority}:{port}"),
    };
    Some(format!("{scheme}://{new_authority}{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn twilio_example() -> Vec<(String, String)> {
        // Deliberately unsorted: the function must sort.
        form(&[
            ("To", "+18005551212"),
            ("CallSid", "CA1234567890ABCDE"),
            ("From", "+12349013030"),
            ("Digits", "1234"),
            ("Caller", "+12349013030"),
        ])
    }

    const EXAMPLE_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    #[test]
    fn twilio_documented_example() {
        assert_eq!(
            signature("12345", EXAMPLE_URL, &twilio_example()),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        assert!(verify(
            "12345",
            EXAMPLE_URL,
            &twilio_example(),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
    }

    #[test]
    fn every_signed_input_matters() {
        let good = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
        let params = twilio_example();
        assert!(!verify("12346", EXAMPLE_URL, &params, good), "token");
        assert!(!verify(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &params,
            good
        ));
        assert!(
            !verify("12345", "https://mycompany.com/myapp.php", &params, good),
            "query"
        );
        let mut tampered = params.clone();
        tampered[0].1 = "+18005551213".into();
        assert!(
            !verify("12345", EXAMPLE_URL, &tampered, good),
            "param value"
        );
        let mut extra = params.clone();
        extra.push(("CallStatus".into(), "completed".into()));
        assert!(!verify("12345", EXAMPLE_URL, &extra, good), "added param");
        assert!(!verify("12345", EXAMPLE_URL, &params, ""), "empty header");
        assert!(!verify(
            "",
            EXAMPLE_URL,
            &params,
            &signature("", EXAMPLE_URL, &params)
        ));
    }

    #[test]
    fn sort_is_case_sensitive_byte_order() {
        // 'Z' (0x5A) sorts before 'a' (0x61): a case-insensitive sort would differ.
        let a = form(&[("a", "1"), ("Z", "2")]);
        let manual = {
            let mut mac = HmacSha1::new_from_slice(b"t").unwrap();
            mac.update(b"https://x.test/Z2a1");
            STANDARD.encode(mac.finalize().into_bytes())
        };
        assert_eq!(signature("t", "https://x.test/", &a), manual);
    }

    #[test]
    fn default_port_spellings_both_verify() {
        let params = twilio_example();
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        let sig = signature("12345", with_port, &params);
        assert!(verify("12345", EXAMPLE_URL, &params, &sig));
        assert!(verify(
            "12345",
            with_port,
            &params,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        let other_port = signature(
            "12345",
            "https://mycompany.com:8443/myapp.php?foo=1&bar=2",
            &params,
        );
        assert!(!verify("12345", EXAMPLE_URL, &params, &other_port));
    }

    #[test]
    fn port_variants() {
        let v = |u: &str| default_port_variant(u);
        assert_eq!(
            v("https://a.test/x?p=1").as_deref(),
            Some("https://a.test:443/x?p=1")
        );
        assert_eq!(
            v("https://a.test:443?p=1").as_deref(),
            Some("https://a.test?p=1")
        );
        assert_eq!(
            v("http://127.0.0.1:80/s").as_deref(),
            Some("http://127.0.0.1/s")
        );
        assert_eq!(v("http://[::1]/s").as_deref(), Some("http://[::1]:80/s"));
        assert_eq!(v("http://127.0.0.1:8080/s"), None);
        assert_eq!(v("ftp://a.test/"), None);
        assert_eq!(v("not a url"), None);
    }
}
