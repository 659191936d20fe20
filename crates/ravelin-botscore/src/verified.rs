//! Verified bots: crawlers an operator chooses to let in, identified by a User-Agent token *and*
//! the IP ranges their operator publishes. A token alone is trivially forged, so an entry without
//! ranges is rejected.

use std::net::IpAddr;

use ipnet::IpNet;
use ravelin_config::{Validate, Violations};
use serde::{Deserialize, Serialize};

use crate::request::canonical_ip;
use crate::ua::contains_ci;

/// Limits on a verified-bot list.
pub const MAX_VERIFIED_BOTS: usize = 256;
/// Limit on the ranges of one entry.
pub const MAX_RANGES_PER_BOT: usize = 4096;

/// One verified bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifiedBot {
    /// A label for logs (e.g. `googlebot`).
    pub name: String,
    /// A token the User-Agent must contain (ASCII case-insensitive), e.g. `Googlebot`.
    pub user_agent_token: String,
    /// The ranges its requests come from, e.g. `66.249.64.0/19`.
    pub ranges: Vec<IpNet>,
}

/// The allow-list of verified bots. A request is a verified bot when its User-Agent contains an
/// entry's token **and** its peer address is in one of that entry's ranges.
///
/// Deserializable (and [`Validate`]) so it can live in a [`ravelin_config::Store`] of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifiedBots {
    /// The entries.
    #[serde(default)]
    pub bots: Vec<VerifiedBot>,
    #[serde(skip)]
    lowered: Vec<Box<[u8]>>,
}

impl VerifiedBots {
    /// An empty list: nothing is verified.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry.
    pub fn bot(
        mut self,
        name: impl Into<String>,
        user_agent_token: impl Into<String>,
        ranges: impl IntoIterator<Item = IpNet>,
    ) -> Self {
        self.bots.push(VerifiedBot {
            name: name.into(),
            user_agent_token: user_agent_token.into(),
            ranges: ranges.into_iter().collect(),
        });
        self.prepare();
        self
    }

    /// The name of the entry matching `user_agent` from `peer`, if any.
    pub fn matches(&self, user_agent: Option<&[u8]>, peer: Option<IpAddr>) -> Option<&str> {
        let (ua, peer) = (user_agent?, canonical_ip(peer?));
        self.bots
            .iter()
            .zip(&self.lowered)
            .find(|(bot, token)| {
                contains_ci(ua.get(..crate::ua::MAX_UA_BYTES).unwrap_or(ua), token)
                    && bot.ranges.iter().any(|net| net.contains(&peer))
            })
            .map(|(bot, _)| bot.name.as_str())
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.bots.is_empty()
    }
}

impl Validate for VerifiedBots {
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        if !v.check_count("bots", "verified bots", self.bots.len(), MAX_VERIFIED_BOTS) {
            return v.into_result();
        }
        for (i, bot) in self.bots.iter().enumerate() {
            let token = &bot.user_agent_token;
            if token.len() < 3
                || token.len() > 64
                || !token.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            {
                v.push(
                    format!("bots[{i}].user_agent_token"),
                    "must be 3..=64 bytes of printable ASCII (a short token would match many UAs)",
                );
            }
            if bot.ranges.is_empty() {
                v.push(
                    format!("bots[{i}].ranges"),
                    "a verified bot needs at least one IP range: a User-Agent token alone is forged trivially",
                );
            }
            v.check_count(
                &format!("bots[{i}].ranges"),
                "ranges",
                bot.ranges.len(),
                MAX_RANGES_PER_BOT,
            );
        }
        v.into_result()
    }

    fn prepare(&mut self) {
        self.lowered = self
            .bots
            .iter()
            .map(|b| {
                b.user_agent_token
                    .to_ascii_lowercase()
                    .into_bytes()
                    .into_boxed_slice()
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> VerifiedBots {
        VerifiedBots::new().bot(
            "examplebot",
            "ExampleBot",
            [
                "192.0.2.0/24".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
        )
    }

    #[test]
    fn token_and_range_both_required() {
        let bots = list();
        let ua = Some(&b"Mozilla/5.0 (compatible; examplebot/2.1)"[..]);
        assert_eq!(
            bots.matches(ua, Some("192.0.2.7".parse().unwrap())),
            Some("examplebot")
        );
        assert_eq!(
            bots.matches(ua, Some("2001:db8::1".parse().unwrap())),
            Some("examplebot")
        );
        assert_eq!(
            bots.matches(ua, Some("::ffff:192.0.2.7".parse().unwrap())),
            Some("examplebot")
        );
        assert_eq!(
            bots.matches(ua, Some("198.51.100.1".parse().unwrap())),
            None,
            "forged UA from elsewhere"
        );
        assert_eq!(bots.matches(ua, None), None);
        assert_eq!(
            bots.matches(Some(b"curl/8"), Some("192.0.2.7".parse().unwrap())),
            None
        );
    }

    #[test]
    fn rejects_token_only_entries() {
        let mut bots = VerifiedBots::new();
        bots.bots.push(VerifiedBot {
            name: "x".into(),
            user_agent_token: "bot".into(),
            ranges: vec![],
        });
        let err = bots.validate().unwrap_err().to_string();
        assert!(err.contains("bots[0].ranges"), "{err}");
    }

    #[test]
    fn deserializes_from_toml_like_config() {
        let bots: VerifiedBots = serde_json::from_str(
            r#"{"bots":[{"name":"g","user_agent_token":"Googlebot","ranges":["66.249.64.0/19"]}]}"#,
        )
        .unwrap();
        assert!(bots.validate().is_ok());
    }
}
