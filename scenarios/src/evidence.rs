//! Server-side evidence: what a game server reports for the checkers while it runs (the
//! instants it acted for an account, its wall-clock reads), as plain data.
//!
//! In the simulator every server runs in the runner's process and reports straight into the
//! run's state ([`crate::acting::ActLog`], the redirect scenario's wall log). The
//! live-cluster runner runs servers as separate processes that can be killed with SIGKILL
//! at any instant; they also send each report through an [`EvidenceTap`], which appends it
//! to a file before the server goes on, and the runner feeds the files back to
//! [`crate::ScenarioRun::absorb`] before it checks. Times are true times (ns since the
//! start of the run) on a clock every process of the run shares.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use engine::cluster::PeerId;
use engine::commands::Outcome;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalogue::rpc::{CallOp, CallResult};
use crate::checker::{DbOp, DbRes};
use crate::history::{self, ProcessId};

/// One report of a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evidence {
    /// Server incarnation `server` logged `account` in on `link` (`tick: false`), or sent it
    /// a tick there (`tick: true`), at `t_ns`.
    Act { account: String, server: ProcessId, link: String, t_ns: u64, tick: bool },
    /// A server read the wall clock: `wall_ms` (ms since the Unix epoch) at true time `t_ns`.
    WallRead { wall_ms: i64, t_ns: u64 },
    /// Server incarnation `server` acted as the owner of `object` under `fence` at `t_ns`
    /// (`engine::orm::OrmObserver::acted`).
    ObjectAct { object: String, server: ProcessId, fence: u64, t_ns: u64 },
    /// Server incarnation `server` started executing `user`'s pack `pack_id` at `t_ns`
    /// (`engine::commands::CommandsObserver::executing`).
    PackExecuting { user: String, pack_id: u64, server: ProcessId, t_ns: u64 },
    /// ... and finished it at `t_ns`; `committed`: its outcome and epoch if its commit
    /// succeeded (`CommandsObserver::executed`).
    PackExecuted {
        user: String,
        pack_id: u64,
        server: ProcessId,
        t_ns: u64,
        committed: Option<(Outcome, u64)>,
    },
    /// Server incarnation `server` was about to handle a gated frame of `player` under
    /// `binding` (`gate/epoch`) at `t_ns` (`engine::gate::HostObserver::handling`).
    GateHandling { player: String, binding: String, server: ProcessId, t_ns: u64 },
    /// `membership`: server incarnation `server`, named `name`, is about to register as
    /// `peer` (recorded before the join, which may register and still fail) at `t_ns`.
    PeerRegistered { peer: PeerId, name: String, server: ProcessId, t_ns: u64 },
    /// `membership`: `peer` is about to publish `tags` and `status`.
    PeerPublished { peer: PeerId, tags: BTreeSet<String>, status: Value },
    /// `membership`: one look at `observer`'s peer view at `t_ns` (`stale`: the view was not
    /// live), with the least-loaded `game` server it would pick.
    PeerView {
        observer: PeerId,
        t_ns: u64,
        stale: bool,
        view: BTreeMap<PeerId, (BTreeSet<String>, Value)>,
        least_loaded_game: Option<PeerId>,
    },
    /// `rpc`: server incarnation `caller` is about to send its call number `call` (numbered
    /// per incarnation, so its completion names it), `op`, invoked at `t_ns`.
    RpcInvoked { caller: ProcessId, call: u64, op: CallOp, t_ns: u64 },
    /// `rpc`: ... and call number `call` of `caller` came back with `outcome` at `t_ns`
    /// (`Info`: it timed out and may have run). A call never reported completed stays open.
    RpcCompleted { caller: ProcessId, call: u64, outcome: history::Outcome<CallResult>, t_ns: u64 },
    /// `rpc`: `receiver` ran the handler of call `xid` from `sender` (`key`, `seq`: its order
    /// key and sequence number if it is an ordered call); a server reports these in the order
    /// it ran them.
    RpcHandled { receiver: PeerId, sender: PeerId, xid: u64, key: Option<String>, seq: u64 },
    /// `rpc`: heartbeats of server incarnation `server` at `t_ns` (ascending), several to a
    /// line: a gap between two of them is a time the server was frozen.
    RpcBeats { server: ProcessId, t_ns: Vec<u64> },
    /// `sql_register`: client task `process` (task `t` of server incarnation `s` is
    /// `s * TASKS_PER_SERVER + t`) is about to send its call number `call` (numbered per
    /// task, so its completion names it), `op`, invoked at `t_ns`.
    SqlInvoked { process: ProcessId, call: u64, op: DbOp, t_ns: u64 },
    /// `sql_register`: ... and call number `call` of `process` came back with `outcome` at
    /// `t_ns` (`Info`: maybe applied). A call never reported completed stays open.
    SqlCompleted { process: ProcessId, call: u64, outcome: history::Outcome<DbRes>, t_ns: u64 },
}

/// Where a server's evidence also goes, synchronously, at the instant of the report.
pub type EvidenceTap = Arc<dyn Fn(&Evidence) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{DbCall, Refusal, RowSeen, RowWrite, WriteSeen};

    #[test]
    fn evidence_round_trips_as_one_json_line() {
        let evs = [
            Evidence::Act { account: "a".into(), server: 3, link: "l-1".into(), t_ns: 42, tick: true },
            Evidence::WallRead { wall_ms: 1_700_000_000_000, t_ns: 7 },
            Evidence::ObjectAct { object: "inventory/7".into(), server: 2, fence: 99, t_ns: 8 },
            Evidence::PackExecuting { user: "3".into(), pack_id: 4, server: 1, t_ns: 9 },
            Evidence::PackExecuted {
                user: "3".into(),
                pack_id: 4,
                server: 1,
                t_ns: 10,
                committed: Some((Outcome::Skipped, 6)),
            },
            Evidence::PackExecuted { user: "3".into(), pack_id: 5, server: 1, t_ns: 11, committed: None },
            Evidence::GateHandling { player: "p1".into(), binding: "g/2".into(), server: 4, t_ns: 12 },
            Evidence::PeerRegistered {
                peer: PeerId(uuid::Uuid::from_bytes([1; 16])),
                name: "game-0".into(),
                server: 5,
                t_ns: 13,
            },
            Evidence::PeerPublished {
                peer: PeerId(uuid::Uuid::from_bytes([1; 16])),
                tags: ["game".to_string()].into(),
                status: serde_json::json!({ "room_count": 3 }),
            },
            Evidence::PeerView {
                observer: PeerId(uuid::Uuid::from_bytes([2; 16])),
                t_ns: 14,
                stale: true,
                view: [(
                    PeerId(uuid::Uuid::from_bytes([1; 16])),
                    (["game".to_string()].into(), serde_json::Value::Null),
                )]
                .into(),
                least_loaded_game: Some(PeerId(uuid::Uuid::from_bytes([1; 16]))),
            },
            Evidence::RpcInvoked {
                caller: 6,
                call: 0,
                op: CallOp::Ordered {
                    to: PeerId(uuid::Uuid::from_bytes([3; 16])),
                    key: "player-1".into(),
                    seq: 2,
                },
                t_ns: 15,
            },
            Evidence::RpcCompleted {
                caller: 6,
                call: 0,
                outcome: history::Outcome::Ok(CallResult::Ordered(2)),
                t_ns: 16,
            },
            Evidence::RpcCompleted { caller: 6, call: 1, outcome: history::Outcome::Info, t_ns: 17 },
            Evidence::RpcHandled {
                receiver: PeerId(uuid::Uuid::from_bytes([3; 16])),
                sender: PeerId(uuid::Uuid::from_bytes([4; 16])),
                xid: 9,
                key: None,
                seq: 0,
            },
            Evidence::RpcBeats { server: 6, t_ns: vec![18, 50_000_018] },
            Evidence::SqlInvoked {
                process: 9,
                call: 3,
                op: DbOp {
                    instance: "db-1".into(),
                    call: DbCall::Transact(vec![
                        RowWrite::Put {
                            key: "row-1".into(),
                            value: "p9-4".into(),
                            expect: engine::env::Expect::Version(2),
                            fence: 21_474_836_480_009,
                        },
                        RowWrite::Guard { key: "row-5".into(), fence: 7 },
                    ]),
                },
                t_ns: 19,
            },
            Evidence::SqlInvoked {
                process: 9,
                call: 4,
                op: DbOp { instance: "db-2".into(), call: DbCall::Get { key: "row-2".into() } },
                t_ns: 20,
            },
            Evidence::SqlCompleted {
                process: 9,
                call: 3,
                outcome: history::Outcome::Ok(DbRes::Written(vec![
                    WriteSeen::Put { version: 3 },
                    WriteSeen::Guard { version: 1 },
                ])),
                t_ns: 21,
            },
            Evidence::SqlCompleted {
                process: 9,
                call: 4,
                outcome: history::Outcome::Ok(DbRes::Row(Some(RowSeen {
                    value: "p3-1".into(),
                    version: 4,
                    fence: u64::MAX,
                }))),
                t_ns: 22,
            },
            Evidence::SqlCompleted {
                process: 9,
                call: 5,
                outcome: history::Outcome::Ok(DbRes::Refused(Refusal::Fenced { op_index: 1, row_fence: 8 })),
                t_ns: 23,
            },
            Evidence::SqlCompleted { process: 9, call: 6, outcome: history::Outcome::Info, t_ns: 24 },
            Evidence::SqlCompleted { process: 9, call: 7, outcome: history::Outcome::Fail, t_ns: 25 },
        ];
        for ev in evs {
            let line = serde_json::to_string(&ev).expect("serializes");
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<Evidence>(&line).expect("parses"), ev);
        }
        assert!(serde_json::from_str::<Evidence>(r#"{"kind":"act"}"#).is_err());
    }
}
