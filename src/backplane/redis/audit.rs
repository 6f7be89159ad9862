//! The fleet's audit log: one capped Redis stream (`{prefix}:audit`, `XADD MAXLEN ~`) every
//! node appends its entries to, stamped with its node id, and every node's `/admin/audit`
//! reads. Each node keeps its own `audit.jsonl` too (what it changed, if Redis is lost).

use super::Fleet;
use super::flags::Blocking;
use crate::audit::{self, AuditBackend, AuditEntry, AuditError, MEMORY_CAPACITY};

/// The fleet's audit stream.
struct RedisAudit {
    connection: Blocking,
    key: String,
}

impl AuditBackend for RedisAudit {
    fn load(&self) -> Result<Vec<AuditEntry>, AuditError> {
        let items: Vec<(String, Vec<String>)> = self
            .connection
            .call(|c| {
                redis::cmd("XRANGE")
                    .arg(&self.key)
                    .arg("-")
                    .arg("+")
                    .query(c)
            })
            .map_err(|error| AuditError::Shared(error.to_string()))?;
        Ok(items
            .iter()
            .filter_map(|(_, fields)| match fields.as_slice() {
                [name, entry] if name == "entry" => audit::from_json(entry),
                _ => None,
            })
            .collect())
    }

    fn append(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        self.connection
            .call(|c| {
                redis::cmd("XADD")
                    .arg(&self.key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(MEMORY_CAPACITY)
                    .arg("*")
                    .arg("entry")
                    .arg(audit::to_json(entry))
                    .query::<String>(c)
            })
            .map(|_| ())
            .map_err(|error| AuditError::Shared(error.to_string()))
    }
}

impl Fleet {
    /// The fleet's audit log, for this node's.
    pub(crate) fn shared_audit(&self) -> Box<dyn AuditBackend> {
        Box::new(RedisAudit {
            connection: Blocking::new(self.client.clone()),
            key: format!("{}:audit", self.config.key_prefix),
        })
    }
}
