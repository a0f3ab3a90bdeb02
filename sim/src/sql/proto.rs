//! Wire messages between [`SimDb`](super::SimDb) and a simulated SQL node.
//!
//! Each frame of a connection (4-byte big-endian length + payload, see the `Net` port) carries
//! one bincode-encoded [`Request`] (client -> server) or [`Response`] (server -> client).
//! Requests are pipelined; the server takes a connection's requests one at a time, in order
//! (as one SQL session does), and tags each answer with its request's `id`.

use bincode::Options;
use bytes::Bytes;
use engine::env::{
    validate_get_many, validate_key, validate_name, validate_scan, validate_transact, DbError, Row, RowState,
    TableName, WriteOp, WriteResult, MAX_PEER_FRAME_BYTES,
};
use engine::testing::sql_service::Instance;
use serde::{Deserialize, Serialize};

/// One call of the `Db` port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Get { table: TableName, key: String },
    GetMany { table: TableName, keys: Vec<String> },
    Scan { table: TableName, prefix: String, start_after: Option<String>, limit: usize },
    Export { table: TableName, prefix: String, start_after: Option<String>, limit: usize },
    GetByIndex { table: TableName, index: String, index_key: String },
    Transact { ops: Vec<WriteOp> },
}

impl Command {
    /// The port's name of the call (for logs).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Get { .. } => "get",
            Command::GetMany { .. } => "get_many",
            Command::Scan { .. } => "scan_prefix",
            Command::Export { .. } => "export_prefix",
            Command::GetByIndex { .. } => "get_by_index",
            Command::Transact { .. } => "transact",
        }
    }

    /// True for the calls that change data (held for the commit latency).
    pub fn is_write(&self) -> bool {
        matches!(self, Command::Transact { .. })
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// `get`, `get_by_index`.
    Row(Option<Row>),
    /// `get_many`, in the order asked.
    Rows(Vec<Option<Row>>),
    /// `scan_prefix`.
    Scan(Vec<Row>),
    /// `export_prefix`.
    Export(Vec<RowState>),
    /// `transact`: one result per op.
    Written(Vec<WriteResult>),
}

/// Client -> server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client, unique per connection; echoed in the response.
    pub id: u64,
    pub command: Command,
}

/// Server -> client. The server only answers errors about the data or the call (never
/// `Timeout`, `ConnectionLoss` or `Unavailable`: those are the client's conclusions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    pub result: Result<Reply, DbError>,
}

/// Applies one command to `db`, validated first with the port's own rules, as a server
/// refuses a bad statement (the client validates too; a peer speaking the protocol need not).
pub fn execute(db: &mut Instance, command: &Command) -> Result<Reply, DbError> {
    match command {
        Command::Get { table, key } => {
            validate_key(key)?;
            Ok(Reply::Row(db.get(table, key)))
        }
        Command::GetMany { table, keys } => {
            validate_get_many(keys)?;
            Ok(Reply::Rows(db.get_many(table, keys)))
        }
        Command::Scan { table, prefix, start_after, limit } => {
            validate_scan(prefix, start_after.as_deref(), *limit)?;
            Ok(Reply::Scan(db.scan_prefix(table, prefix, start_after.as_deref(), *limit)))
        }
        Command::Export { table, prefix, start_after, limit } => {
            validate_scan(prefix, start_after.as_deref(), *limit)?;
            Ok(Reply::Export(db.export_prefix(table, prefix, start_after.as_deref(), *limit)))
        }
        Command::GetByIndex { table, index, index_key } => {
            validate_name(index)?;
            validate_key(index_key)?;
            Ok(Reply::Row(db.get_by_index(table, index, index_key)))
        }
        Command::Transact { ops } => {
            validate_transact(ops)?;
            db.transact(ops).map(Reply::Written)
        }
    }
}

fn options() -> impl Options {
    bincode::DefaultOptions::new().with_limit(MAX_PEER_FRAME_BYTES as u64).reject_trailing_bytes()
}

/// Encodes a message as one frame payload.
pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes, bincode::Error> {
    options().serialize(msg).map(Bytes::from)
}

/// Decodes a frame payload; a malformed or oversized payload is an error, never a panic.
pub fn decode<T: for<'de> Deserialize<'de>>(frame: &[u8]) -> Result<T, bincode::Error> {
    options().deserialize(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::env::Expect;

    #[test]
    fn requests_and_responses_round_trip() {
        let users = TableName::new("users").unwrap();
        let op = WriteOp::put(&users, "u1", Bytes::from_static(b"{}"), Expect::Version(3), 9)
            .with_index("by_name", Some("ann".into()));
        let req = Request {
            id: 7,
            command: Command::Transact { ops: vec![op, WriteOp::raise_fence(&users, "u2", 9)] },
        };
        assert_eq!(decode::<Request>(&encode(&req).unwrap()).unwrap(), req);
        let resp = Response { id: 7, result: Err(DbError::Fenced { op_index: 1, row_fence: 10 }) };
        assert_eq!(decode::<Response>(&encode(&resp).unwrap()).unwrap(), resp);
    }

    #[test]
    fn a_bad_table_name_on_the_wire_is_a_decode_error() {
        let users = TableName::new("users").unwrap();
        let req = Request { id: 1, command: Command::Get { table: users, key: "k".into() } };
        let mut bytes = encode(&req).unwrap().to_vec();
        // The table name's first letter: make it uppercase, which no valid name has.
        let at = bytes.windows(5).position(|w| w == b"users").unwrap();
        bytes[at] = b'U';
        assert!(decode::<Request>(&bytes).is_err());
    }

    #[test]
    fn execute_refuses_what_the_port_refuses() {
        let t = |n: &str| TableName::new(n).unwrap();
        let mut db = Instance::new();
        assert!(matches!(
            execute(&mut db, &Command::Transact { ops: vec![] }),
            Err(DbError::InvalidArgument(_))
        ));
        let get = Command::Get { table: t("users"), key: String::new() };
        assert!(matches!(execute(&mut db, &get), Err(DbError::InvalidArgument(_))));
        let scan = Command::Scan { table: t("users"), prefix: String::new(), start_after: None, limit: 0 };
        assert!(matches!(execute(&mut db, &scan), Err(DbError::InvalidArgument(_))));
        let export =
            Command::Export { table: t("users"), prefix: String::new(), start_after: None, limit: 0 };
        assert!(matches!(execute(&mut db, &export), Err(DbError::InvalidArgument(_))));
        let by_index = Command::GetByIndex { table: t("users"), index: "By".into(), index_key: "x".into() };
        assert!(matches!(execute(&mut db, &by_index), Err(DbError::InvalidArgument(_))));
        assert_eq!(db, Instance::new());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<Request>(&[]).is_err());
        assert!(decode::<Request>(&[0xff; 64]).is_err());
        let mut evil = vec![0u8, 4];
        evil.extend_from_slice(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(decode::<Request>(&evil).is_err());
    }
}
