//! Cluster membership (iFun's `Rpc::GetPeers`/`AddTag`/`SetStatus` family).

mod peer;

pub use self::peer::{PeerDirectory, PeerId, PeerInfo};
