//! The kinds of server of the reference game. A manifest names the flavor as a string
//! (`--flavor`, `MANIFEST.<flavor>.json`, a topology's server spec); it is parsed once, at
//! the edge, into [`Flavor`].

use std::fmt;
use std::str::FromStr;

/// Which handlers a server registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flavor {
    /// Logins, pvp auth keys, redirection, send and broadcast: sessions + cluster + RPC +
    /// account manager.
    Game,
    /// Transfers with an auth key; publishes its `room_count`. No account manager.
    Pvp,
    /// Issues session keys (`cs_login`) and names the gates to show them to, least loaded
    /// first (seed 004's LoginServer): sessions + cluster + RPC, a `Gate` secret. No account
    /// manager: the gate logs the player in.
    Login,
    /// A gateway (seeds 003/004's GameGate): holds client sessions, checks session keys on
    /// `cs_gate_login`, logs players in cluster-wide and forwards their messages to the
    /// `game` backends (`engine::gate::Gateway`): sessions + cluster + RPC + account manager,
    /// a `Gate` secret. No game handlers.
    Gate,
}

/// A flavor name that is not one of [`Flavor::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("flavor {0:?} is not one of game, pvp, login, gate")]
pub struct UnknownFlavor(pub String);

impl Flavor {
    /// Every flavor, in the order the manifest documentation lists them.
    pub const ALL: [Flavor; 4] = [Flavor::Game, Flavor::Pvp, Flavor::Login, Flavor::Gate];

    /// The manifest's (and the cluster's) name of the flavor.
    pub const fn as_str(self) -> &'static str {
        match self {
            Flavor::Game => "game",
            Flavor::Pvp => "pvp",
            Flavor::Login => "login",
            Flavor::Gate => "gate",
        }
    }
}

impl FromStr for Flavor {
    type Err = UnknownFlavor;

    fn from_str(s: &str) -> Result<Flavor, UnknownFlavor> {
        Flavor::ALL.into_iter().find(|f| f.as_str() == s).ok_or_else(|| UnknownFlavor(s.to_owned()))
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flavor_parses_back_from_its_name() {
        for f in Flavor::ALL {
            assert_eq!(f.as_str().parse::<Flavor>(), Ok(f));
            assert_eq!(f.to_string(), f.as_str());
        }
    }

    #[test]
    fn other_names_are_a_typed_error_naming_the_input() {
        for bad in ["lobby", "", "Game", " pvp", "gateway"] {
            let e = bad.parse::<Flavor>().unwrap_err();
            assert_eq!(e, UnknownFlavor(bad.to_owned()));
            assert_eq!(e.to_string(), format!("flavor {bad:?} is not one of game, pvp, login, gate"));
        }
    }
}
