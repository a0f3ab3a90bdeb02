use std::fmt::Write as _;

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn load(v: Value) -> Result<Manifest, ManifestError> {
    Manifest::load(&v.to_string(), None)
}

fn load_err(v: Value) -> ManifestError {
    load(v).expect_err("manifest should be rejected")
}

/// A complete manifest in the shape of iFun's flavor example (game and pvp servers).
const FULL_EXAMPLE: &str = r#"{
  "AppInfo": { "app_id": "PvpTutorial" },
  "SessionService": {
    "tcp_json_port": 8012,
    "udp_json_port": 0,
    "http_json_port": 0
  },
  "Object": {
    "cache_expiration_in_ms": 3000,
    "enable_database": true,
    "db_mysql_server_address": "tcp://10.10.10.10:3306"
  },
  "ApiService": { "api_service_port": 0, "api_service_logging_level": 2 },
  "Redis": {
    "enable_redis": true,
    "redis_mode": "redis",
    "redis_servers": {
      "cross_server_storage": { "address": "10.10.10.10:6379", "auth_pass": "" }
    },
    "redis_async_threads_size": 4
  },
  "RpcService": {
    "rpc_enabled": true,
    "rpc_threads_size": 4,
    "rpc_port": 8015,
    "rpc_tags": ["game"],
    "rpc_message_logging_level": 1
  },
  "ZookeeperClient": {
    "zookeeper_nodes": "10.10.10.11:2181,10.10.10.12:2181,10.10.10.13:2181",
    "zookeeper_session_timeout_in_second": 30
  },
  "CrossServerStorage": {
    "enable_cross_server_storage": true,
    "redis_tag_for_cross_server_storage": "cross_server_storage"
  },
  "AccountManager": { "redirection_secret": "change me" },
  "flavors": {
    "game": {},
    "pvp": {
      "SessionService": { "tcp_json_port": 9012 },
      "RpcService": { "rpc_port": 9015, "rpc_tags": ["pvp", "level:1-5"] }
    }
  }
}"#;

#[test]
fn defaults_applied() {
    let m = load(json!({"AppInfo": {"app_id": "g"}})).unwrap();
    assert_eq!(m.app_info.app_id, "g");
    assert_eq!(m.rpc, RpcService::default());
    assert_eq!(m.zookeeper, ZookeeperClient::default());
    assert_eq!(m.flavor, None);
    assert!(m.extra.is_empty());

    // The iFun defaults, spelled out once.
    let r = &m.rpc;
    assert!(!r.rpc_enabled && r.rpc_port == 8015 && r.rpc_tags.is_empty() && r.rpc_threads_size == 4);
    assert!(r.rpc_nic_name.is_empty() && !r.rpc_use_public_address && r.rpc_message_logging_level == 0);
    assert!(r.rpc_disable_tcp_nagle && r.rpc_backend_zookeeper && r.enable_rpc_reply_checker);
    let z = &m.zookeeper;
    assert_eq!(z.connect_string(), "localhost:2181");
    assert_eq!(
        (z.zookeeper_client_count, z.zookeeper_session_timeout_in_second, z.zookeeper_log_level),
        (4, 60, 1)
    );
}

#[test]
fn empty_sections_take_defaults() {
    let m = load(json!({"AppInfo": {"app_id": "g"}, "RpcService": {}, "ZookeeperClient": {}})).unwrap();
    assert_eq!(m.rpc, RpcService::default());
    assert_eq!(m.zookeeper, ZookeeperClient::default());
}

#[test]
fn every_typed_key_is_read() {
    let m = load(json!({
        "AppInfo": {"app_id": "g"},
        "RpcService": {
            "rpc_enabled": true, "rpc_port": 0, "rpc_tags": ["a", "b"], "rpc_threads_size": 1024,
            "rpc_nic_name": "eth1", "rpc_use_public_address": true, "rpc_message_logging_level": 2,
            "rpc_disable_tcp_nagle": false, "rpc_backend_zookeeper": true, "enable_rpc_reply_checker": false
        },
        "ZookeeperClient": {
            "zookeeper_nodes": "zk:1", "zookeeper_client_count": 1,
            "zookeeper_session_timeout_in_second": 5, "zookeeper_log_level": 0
        }
    }))
    .unwrap();
    assert_eq!(
        m.rpc,
        RpcService {
            rpc_enabled: true,
            rpc_port: 0,
            rpc_tags: vec!["a".into(), "b".into()],
            rpc_threads_size: 1024,
            rpc_nic_name: "eth1".into(),
            rpc_use_public_address: true,
            rpc_message_logging_level: 2,
            rpc_disable_tcp_nagle: false,
            rpc_backend_zookeeper: true,
            enable_rpc_reply_checker: false,
        }
    );
    assert_eq!(
        m.zookeeper,
        ZookeeperClient {
            zookeeper_nodes: vec![ZookeeperNode { host: "zk".into(), port: 1 }],
            zookeeper_client_count: 1,
            zookeeper_session_timeout_in_second: 5,
            zookeeper_log_level: 0,
        }
    );
    assert_eq!(m.zookeeper.session_timeout(), std::time::Duration::from_secs(5));
}

#[test]
fn full_example_base_and_flavors() {
    let base = Manifest::load(FULL_EXAMPLE, None).unwrap();
    insta::assert_debug_snapshot!("full_example_base", base);
    let game = Manifest::load(FULL_EXAMPLE, Some("game")).unwrap();
    assert_eq!(game, Manifest { flavor: Some("game".into()), ..base.clone() });
    let pvp = Manifest::load(FULL_EXAMPLE, Some("pvp")).unwrap();
    assert_eq!(pvp.flavor.as_deref(), Some("pvp"));
    assert_eq!(pvp.rpc.rpc_port, 9015);
    assert_eq!(pvp.rpc.rpc_tags, ["pvp", "level:1-5"]);
    // Untouched keys of a merged section stay.
    assert!(pvp.rpc.rpc_enabled);
    assert_eq!(pvp.rpc.rpc_message_logging_level, 1);
    assert_eq!(
        pvp.section("SessionService").unwrap(),
        &json!({"tcp_json_port": 9012, "udp_json_port": 0, "http_json_port": 0})
    );
    assert_eq!(pvp.zookeeper, base.zookeeper);
    assert_eq!(
        pvp.extra.keys().collect::<Vec<_>>(),
        ["AccountManager", "ApiService", "CrossServerStorage", "Object", "Redis", "SessionService"]
    );
}

#[test]
fn flavor_overrides_nested_key_and_adds_tags() {
    let text = json!({
        "AppInfo": {"app_id": "g"},
        "Redis": {"redis_servers": {"main": {"address": "a:1", "auth_pass": "x"}}},
        "flavors": {
            "battle": {
                "RpcService": {"rpc_tags": ["battle", "level:1-5"]},
                "Redis": {"redis_servers": {"main": {"address": "b:2"}}}
            }
        }
    })
    .to_string();
    let m = Manifest::load(&text, Some("battle")).unwrap();
    assert_eq!(m.rpc.rpc_tags, ["battle", "level:1-5"]);
    assert_eq!(m.rpc.rpc_port, 8015);
    assert_eq!(
        m.section("Redis").unwrap(),
        &json!({"redis_servers": {"main": {"address": "b:2", "auth_pass": "x"}}})
    );
    // The base alone is also loadable.
    assert!(Manifest::load(&text, None).unwrap().rpc.rpc_tags.is_empty());
}

#[test]
fn flavor_may_supply_required_section() {
    let text = json!({"flavors": {"a": {"AppInfo": {"app_id": "from-flavor"}}}}).to_string();
    assert_eq!(Manifest::load(&text, Some("a")).unwrap().app_info.app_id, "from-flavor");
    assert_eq!(Manifest::load(&text, None).unwrap_err(), ManifestError::Missing { path: "AppInfo".into() });
}

#[test]
fn unknown_flavor_lists_known_ones() {
    let e = Manifest::load(FULL_EXAMPLE, Some("lobby")).unwrap_err();
    assert_eq!(
        e,
        ManifestError::UnknownFlavor { name: "lobby".into(), known: vec!["game".into(), "pvp".into()] }
    );
    assert_eq!(e.to_string(), r#"unknown flavor "lobby"; known flavors: game, pvp"#);
    let e = Manifest::load(r#"{"AppInfo": {"app_id": "g"}}"#, Some("game")).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"unknown flavor "game"; known flavors: none (the manifest has no "flavors" section)"#
    );
}

#[test]
fn errors_in_any_flavor_name_the_flavor() {
    let mut v: Value = serde_json::from_str(FULL_EXAMPLE).unwrap();
    v["flavors"]["pvp"]["RpcService"]["rpc_prot"] = json!(1);
    let e = Manifest::load(&v.to_string(), Some("game")).unwrap_err();
    assert_eq!(
        e,
        ManifestError::UnknownKey {
            path: "flavors.pvp.RpcService.rpc_prot".into(),
            suggestion: Some("rpc_port".into())
        }
    );
}

#[test]
fn error_variants() {
    let ok_app = json!({"app_id": "g"});
    assert_eq!(
        load_err(json!({"AppInfo": ok_app, "RpcService": {"rpc_prot": 80}})),
        ManifestError::UnknownKey { path: "RpcService.rpc_prot".into(), suggestion: Some("rpc_port".into()) }
    );
    assert_eq!(
        load_err(json!({"AppInfo": ok_app, "RpcService": {"rpc_port": "80"}})),
        ManifestError::WrongType {
            path: "RpcService.rpc_port".into(),
            expected: "an integer 0..=65535".into(),
            found: "string \"80\"".into()
        }
    );
    assert_eq!(
        load_err(json!({"AppInfo": ok_app, "RpcService": {"rpc_port": 65536}})),
        ManifestError::OutOfRange {
            path: "RpcService.rpc_port".into(),
            expected: "an integer 0..=65535".into(),
            found: "integer 65536".into()
        }
    );
    assert_eq!(load_err(json!({"AppInfo": {}})), ManifestError::Missing { path: "AppInfo.app_id".into() });
    assert_eq!(
        Manifest::load("{\n  \"AppInfo\": {,\n}", None).unwrap_err(),
        ManifestError::Json { line: 2, column: 15, message: "key must be a string".into() }
    );
    let e = Manifest::from_path("/nonexistent/MANIFEST.json", None).unwrap_err();
    assert!(matches!(e, ManifestError::Io { kind: std::io::ErrorKind::NotFound, .. }), "{e:?}");
}

/// One line per rejected manifest: the input and the exact message a user sees.
#[test]
fn error_messages() {
    let app = r#""AppInfo": {"app_id": "g"}"#;
    let cases: Vec<(String, Option<&str>)> = [
        // JSON syntax.
        "".to_owned(),
        "{".to_owned(),
        "{\"AppInfo\": {\"app_id\": \"g\"}} trailing".to_owned(),
        "[1, 2]".to_owned(),
        "null".to_owned(),
        // Top level.
        "{}".to_owned(),
        format!("{{{app}, \"RpcServce\": {{}}}}"),
        format!("{{{app}, \"Whatever\": {{}}}}"),
        format!("{{{app}, \"Redis\": \"localhost\"}}"),
        format!("{{{app}, \"flavors\": []}}"),
        format!("{{{app}, \"flavors\": {{\"a\": 1}}}}"),
        format!("{{{app}, \"flavors\": {{\"a\": {{\"flavors\": {{}}}}}}}}"),
        format!("{{{app}, \"flavors\": {{\"a\": {{\"Loging\": {{}}}}}}}}"),
        // AppInfo.
        r#"{"AppInfo": {}}"#.to_owned(),
        r#"{"AppInfo": {"app_id": ""}}"#.to_owned(),
        r#"{"AppInfo": {"app_id": 7}}"#.to_owned(),
        r#"{"AppInfo": {"app_id": "a/b"}}"#.to_owned(),
        r#"{"AppInfo": {"app_id": "g", "app_name": "x"}}"#.to_owned(),
        // RpcService.
        format!(r#"{{{app}, "RpcService": {{"rpc_prot": 80}}}}"#),
        format!(r#"{{{app}, "RpcService": {{"rpc_port": "80"}}}}"#),
        format!(r#"{{{app}, "RpcService": {{"rpc_port": 70000}}}}"#),
        format!(r#"{{{app}, "RpcService": {{"rpc_port": -1}}}}"#),
        format!(r#"{{{app}, "RpcService": {{"rpc_port": 8015.0}}}}"#),
        format!(r#"{{{app}, "RpcService": {{"rpc_port": 1e30}}}}"#),
        format!(r#"{{{app}, "RpcService": {{"rpc_enabled": "yes"}}}}"#),
        format!(r#"{{{app}, "RpcService": {{"rpc_enabled": null}}}}"#),
        format!(r#"{{{app}, "RpcService": {{"rpc_tags": "game"}}}}"#),
        format!(r#"{{{app}, "RpcService": {{"rpc_tags": ["game", 3]}}}}"#),
        format!(r#"{{{app}, "RpcService": {{"rpc_tags": ["game", ""]}}}}"#),
        format!(r#"{{{app}, "RpcService": {{"rpc_threads_size": 0}}}}"#),
        format!(r#"{{{app}, "RpcService": {{"rpc_message_logging_level": 3}}}}"#),
        format!(r#"{{{app}, "RpcService": {{"rpc_nic_name": ["eth0"]}}}}"#),
        format!(r#"{{{app}, "RpcService": {{"rpc_backend_zookeeper": false}}}}"#),
        format!(r#"{{{app}, "RpcService": {{"rpc_threads": 4}}}}"#),
        format!(r#"{{{app}, "RpcService": {{"port": 4}}}}"#),
        // ZookeeperClient.
        format!(r#"{{{app}, "ZookeeperClient": {{"zookeeper_nodes": "zk1:2181,zk2"}}}}"#),
        format!(r#"{{{app}, "ZookeeperClient": {{"zookeeper_nodes": ["zk1:2181"]}}}}"#),
        format!(r#"{{{app}, "ZookeeperClient": {{"zookeeper_client_count": 0}}}}"#),
        format!(r#"{{{app}, "ZookeeperClient": {{"zookeeper_session_timeout_in_seconds": 10}}}}"#),
        format!(r#"{{{app}, "ZookeeperClient": {{"zookeeper_log_level": 9}}}}"#),
    ]
    .into_iter()
    .map(|t| (t, None))
    .chain([
        (format!("{{{app}, \"flavors\": {{\"a\": {{}}, \"b\": {{}}}}}}"), Some("c")),
        (format!("{{{app}, \"flavors\": {{\"a\": {{\"RpcService\": {{\"rpc_port\": true}}}}}}}}"), Some("a")),
    ])
    .collect();
    let mut out = String::new();
    for (text, flavor) in &cases {
        let e = Manifest::load(text, *flavor).expect_err(text);
        let flavor = flavor.map(|f| format!(" [flavor {f}]")).unwrap_or_default();
        writeln!(out, "{text}{flavor}\n  => {e}").unwrap();
    }
    insta::assert_snapshot!("error_messages", out);
}

#[test]
fn bom_is_ignored() {
    assert!(Manifest::load("\u{feff}{\"AppInfo\": {\"app_id\": \"g\"}}", None).is_ok());
}

#[test]
fn from_path_reads_the_file() {
    let path = std::env::temp_dir().join(format!("sandtable-manifest-test-{}.json", std::process::id()));
    std::fs::write(&path, FULL_EXAMPLE).unwrap();
    let m = Manifest::from_path(&path, Some("pvp"));
    std::fs::remove_file(&path).unwrap();
    assert_eq!(m.unwrap().rpc.rpc_port, 9015);
}

/// JSON values biased towards the manifest's own names, so the fuzz reaches deep into the
/// section parsers instead of stopping at the first unknown key.
fn arb_json() -> impl Strategy<Value = Value> {
    let names = prop::sample::select(
        TYPED_SECTIONS
            .iter()
            .chain(RAW_SECTIONS)
            .chain(RpcService::KEYS)
            .chain(ZookeeperClient::KEYS)
            .chain(AppInfo::KEYS)
            .chain(&[FLAVORS_KEY, "game", "pvp"])
            .copied()
            .collect::<Vec<_>>(),
    );
    let key = prop_oneof![4 => names.prop_map(str::to_owned), 1 => ".{0,12}"];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (0u64..70_000).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
        "[a-z0-9:,\\[\\] ]{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn load_never_panics_on_arbitrary_text(text in any::<String>(), flavor in prop::option::of("game|pvp|x")) {
        let _ = Manifest::load(&text, flavor.as_deref());
    }

    #[test]
    fn load_never_panics_on_arbitrary_json(v in arb_json(), flavor in prop::option::of("game|pvp|x")) {
        let text = v.to_string();
        if let Ok(m) = Manifest::load(&text, flavor.as_deref()) {
            // Whatever is accepted is complete and consistent.
            prop_assert!(!m.app_info.app_id.is_empty());
            prop_assert!(!m.zookeeper.zookeeper_nodes.is_empty());
            prop_assert_eq!(m.flavor.as_deref(), flavor.as_deref());
        }
    }

    #[test]
    fn load_never_panics_on_mutated_example(cut in 0usize..2000, insert in ".{0,3}") {
        let mut text = FULL_EXAMPLE.to_owned();
        let mut at = cut.min(text.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.insert_str(at, &insert);
        let _ = Manifest::load(&text, Some("pvp"));
    }
}
