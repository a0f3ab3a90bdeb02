//! `examples/deploy/` is the layout `real cluster run --net --zk-ensemble` starts: the same
//! hosts by name, numbered the same way on their /24, the same ZooKeeper members with the same
//! `server.N` lines and ports, Redis on its port, and manifests that point every server at
//! exactly those services. Reads the files only; no service runs.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use real::server::config::{plan_from_args, ServerArgs};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/deploy")
}

#[derive(Debug, Clone)]
struct Host {
    name: String,
    ip: Ipv4Addr,
    runs: String,
    manifest: Option<String>,
    myid: Option<u64>,
}

fn hosts() -> Vec<Host> {
    let text = std::fs::read_to_string(deploy().join("hosts.json")).expect("examples/deploy/hosts.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("hosts.json is JSON");
    assert_eq!(v["subnet"], "10.20.0.0/24");
    v["hosts"]
        .as_array()
        .expect("a hosts array")
        .iter()
        .map(|h| Host {
            name: h["name"].as_str().expect("name").to_string(),
            ip: h["ip"].as_str().expect("ip").parse().expect("an IPv4 address"),
            runs: h["runs"].as_str().expect("runs").to_string(),
            manifest: h["manifest"].as_str().map(String::from),
            myid: h["myid"].as_u64(),
        })
        .collect()
}

fn running(hosts: &[Host], what: &str) -> Vec<Host> {
    hosts.iter().filter(|h| h.runs == what).cloned().collect()
}

#[test]
fn the_harness_starts_the_documented_hosts_numbered_as_documented() {
    let hosts = hosts();
    for h in &hosts {
        assert_eq!(&h.ip.octets()[..3], &[10, 20, 0], "{h:?} is on the layout's /24");
    }
    // pvp_transfer's topology is the game and PvP tier of the layout.
    let harness = real::cluster::net_layout("pvp_transfer", true, false).expect("a live scenario");
    let names: Vec<&str> = harness.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["game-0", "game-1", "pvp-2", "pvp-3", "zk-1", "zk-2", "zk-3", "redis"]);
    for (name, last) in &harness {
        let h =
            hosts.iter().find(|h| &h.name == name).unwrap_or_else(|| panic!("{name} is not in hosts.json"));
        assert_eq!(h.ip.octets()[3], *last, "{name}");
    }
    // A topology with SQL instances run with --mariadb adds the SQL host where hosts.json has it.
    // Each service host has its documented address whichever others the topology has
    // (`shard_move` has no Redis).
    let documented = hosts.iter().find(|h| h.runs == "mariadb").expect("a SQL host");
    for scenario in ["object_lending", "shard_move"] {
        let sql = real::cluster::net_layout(scenario, true, true).expect("a live scenario");
        let (name, last) = sql.last().expect("hosts");
        assert_eq!((name.as_str(), *last), (documented.name.as_str(), documented.ip.octets()[3]), "{sql:?}");
        for (name, last) in &sql {
            if let Some(h) = hosts.iter().find(|h| &h.name == name && h.runs != "sandtable-server") {
                assert_eq!(h.ip.octets()[3], *last, "{scenario}: {name}");
            }
        }
    }
    // gate_route's topology adds the login server and gates the same way.
    for (name, _) in real::cluster::net_layout("gate_route", true, true).expect("a live scenario") {
        let tier = name.split('-').next().expect("a name");
        assert!(hosts.iter().any(|h| h.name.starts_with(tier)), "no {tier} host in hosts.json for {name}");
    }
}

#[test]
fn the_documented_zookeeper_ensemble_is_the_one_the_harness_configures() {
    let hosts = hosts();
    let zk = running(&hosts, "zookeeper");
    assert_eq!(zk.len(), real::cluster::ENSEMBLE_MEMBERS);
    for (i, h) in zk.iter().enumerate() {
        assert_eq!(h.name, format!("zk-{}", i + 1));
        assert_eq!(h.myid, Some(i as u64 + 1), "{h:?}");
    }
    let cfg = std::fs::read_to_string(deploy().join("zookeeper/zoo.cfg")).expect("zoo.cfg");
    let lines: String = cfg.lines().filter(|l| l.starts_with("server.")).map(|l| format!("{l}\n")).collect();
    let ips: Vec<Ipv4Addr> = zk.iter().map(|h| h.ip).collect();
    assert_eq!(lines, real::services::server_lines(&ips));
    assert!(cfg.lines().any(|l| l == format!("clientPort={}", real::services::ZK_CLIENT_PORT)), "{cfg}");
    let unit = std::fs::read_to_string(deploy().join("systemd/sandtable-zookeeper.service")).expect("unit");
    assert!(unit.contains("QuorumPeerMain /etc/sandtable/zoo.cfg") && unit.contains("myid"), "{unit}");
}

#[test]
fn every_manifest_points_at_the_documented_services_and_plans() {
    let hosts = hosts();
    let zk: Vec<String> = running(&hosts, "zookeeper")
        .iter()
        .map(|h| format!("{}:{}", h.ip, real::services::ZK_CLIENT_PORT))
        .collect();
    let redis = running(&hosts, "redis");
    let sql = running(&hosts, "mariadb");
    assert_eq!((redis.len(), sql.len()), (1, 1));
    let redis_addr = format!("{}:{}", redis[0].ip, real::cluster::REDIS_PORT);
    let redis_conf = std::fs::read_to_string(deploy().join("redis/sandtable.conf")).expect("redis conf");
    assert!(redis_conf.contains(&format!("bind {}\nport {}\n", redis[0].ip, real::cluster::REDIS_PORT)));
    assert!(redis_conf.contains("appendfsync always"), "acknowledged writes survive a restart");
    let servers = running(&hosts, "sandtable-server");
    assert_eq!(servers.len(), 6);
    let unit = std::fs::read_to_string(deploy().join("systemd/sandtable-server@.service")).expect("unit");
    for h in &servers {
        let manifest = deploy().join(h.manifest.as_deref().expect("a server host names its manifest"));
        let text = std::fs::read_to_string(&manifest).expect("the manifest exists");
        let m: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(m["ZookeeperClient"]["zookeeper_nodes"], zk.join(","), "{}", manifest.display());
        for (tag, server) in m["Redis"]["redis_servers"].as_object().expect("redis servers") {
            assert_eq!(server["address"], redis_addr.as_str(), "{tag} in {}", manifest.display());
        }
        if let Some(addr) = m["Object"]["db_mysql_server_address"].as_str() {
            assert_eq!(addr, format!("tcp://{}:{}", sql[0].ip, real::cluster::SQL_PORT));
        }
        // The unit starts the flavor named by the file (`sandtable-server@game`).
        let flavor =
            manifest.file_name().and_then(|f| f.to_str()).and_then(|f| f.split('.').nth(1)).expect("flavor");
        assert!(
            unit.contains("/etc/sandtable/MANIFEST.%i.json") && unit.contains(&format!("@{flavor}")),
            "{flavor}"
        );
        let plan = plan_from_args(&ServerArgs {
            manifest: manifest.clone(),
            flavor: None,
            name: Some(h.name.clone()),
            advertise_ip: Some(h.ip.into()),
            bind_ip: None,
            data_dir: std::env::temp_dir(),
        })
        .unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
        assert_eq!(plan.env.zookeeper, zk.join(","));
        assert_eq!(plan.flavor.to_string(), flavor);
    }
}
