//! The server manifest: `engine::manifest::Manifest::load(text, flavor)` for the base (`None`)
//! and the flavors `game`, `pvp` and `lobby` (often unknown: `UnknownFlavor`), then, for a
//! manifest that loads, every section parser a server runs on it at startup (as
//! `real::server::config` does): sessions, accounts, gate, cross-server storage, Redis, admin
//! API, sharding and the object store.
//!
//! The input is taken as lossy UTF-8 (`from_path` reads files with `read_to_string`, so a real
//! manifest is always UTF-8; lossy keeps every input useful). Properties: never panics; a
//! loaded manifest carries the flavor asked for; its Display of any error is non-empty.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use engine::account::AccountConfig;
use engine::gate::GateConfig;
use engine::manifest::redis::RedisSection;
use engine::manifest::Manifest;
use engine::metrics::ApiConfig;
use engine::orm::OrmConfig;
use engine::session::config::session_configs;
use engine::shard::ShardConfig;
use engine::storage::StorageConfig;
use libfuzzer_sys::fuzz_target;
use sandtable_fuzz::FLAVORS;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for flavor in FLAVORS {
        match Manifest::load(&text, flavor) {
            Ok(m) => {
                assert_eq!(m.flavor.as_deref(), flavor);
                sections(&m);
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});

fn sections(m: &Manifest) {
    let _ = m.zookeeper.connect_string();
    let _ = m.zookeeper.session_timeout();
    let _ = session_configs(m, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let _ = AccountConfig::from_manifest(m);
    if let Ok(gate) = GateConfig::from_manifest(m) {
        let _ = gate.session_keys();
    }
    let storage = StorageConfig::from_manifest(m);
    if let (Ok(Some(redis)), Ok(storage)) = (RedisSection::from_manifest(m), &storage) {
        if let Some(server) = redis.server_for_tag(&storage.redis_tag) {
            let _ = server.url();
        }
    }
    let _ = ApiConfig::from_manifest(m);
    let _ = ShardConfig::from_manifest(m);
    let _ = OrmConfig::from_manifest(m);
}
