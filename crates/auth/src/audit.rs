//! The audit log: one entry for every successful staff write, append-only (the database's
//! own triggers refuse to change or delete an entry, on both dialects). It records who
//! (`actor`), what (`action`, such as `product.update`), on what (`resource_id`), when, and
//! from which client address; never a request's body, which may hold personal data.

use std::net::IpAddr;

use backroom_db::{Db, sql, storage};
use backroom_kernel::{Error, Page, PageRequest, Result, id, now};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Actor;

/// Who made a change, as the audit log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditActor {
    /// `api_key`.
    #[serde(rename = "type")]
    #[schema(example = "api_key")]
    pub kind: String,
    /// The key's id (`bootstrap` for `BACKROOM_ADMIN_TOKEN`).
    #[schema(example = "key_01jd8z5c3k4m7q9r2t6v8w0x1y")]
    pub id: String,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// `aud_…`
    #[schema(example = "aud_01jd8z5c3k4m7q9r2t6v8w0x1y")]
    pub id: String,
    pub at: DateTime<Utc>,
    pub actor: AuditActor,
    /// `<resource>.<verb>`, such as `product.update` or `api_key.revoke`.
    #[schema(example = "product.update")]
    pub action: String,
    /// The id of what was changed or created, when the route names one.
    #[schema(example = "prod_01jd8z5c3k4m7q9r2t6v8w0x1y")]
    pub resource_id: Option<String>,
    /// The client's address (see `BACKROOM_TRUSTED_PROXIES`).
    #[schema(example = "203.0.113.9")]
    pub ip: String,
}

/// Which entries to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this actor's (an API key's id).
    pub actor: Option<String>,
    /// Only those about this resource.
    pub resource_id: Option<String>,
}

impl AuditFilter {
    /// Checks the filters: each at most 100 characters.
    pub fn parse(actor: Option<String>, resource_id: Option<String>) -> Result<Self> {
        for (field, v) in [("actor", &actor), ("resource_id", &resource_id)] {
            if v.as_ref().is_some_and(|v| v.is_empty() || v.chars().count() > 100) {
                return Err(Error::field(field, "must be 1–100 characters"));
            }
        }
        Ok(Self { actor, resource_id })
    }
}

struct EntryRow {
    id: String,
    at: DateTime<Utc>,
    actor_type: String,
    actor_id: String,
    action: String,
    resource_id: Option<String>,
    ip: String,
}

backroom_db::from_row!(EntryRow { id, at, actor_type, actor_id, action, resource_id, ip });

impl From<EntryRow> for AuditEntry {
    fn from(r: EntryRow) -> Self {
        AuditEntry {
            id: r.id,
            at: r.at,
            actor: AuditActor { kind: r.actor_type, id: r.actor_id },
            action: r.action,
            resource_id: r.resource_id,
            ip: r.ip,
        }
    }
}

/// The audit log's storage.
#[derive(Debug, Clone)]
pub struct AuditLog {
    db: Db,
}

impl AuditLog {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Appends an entry, in a write of its own. A follow-up job of the writer: the change it
    /// records is done already, so it is never shed by a full queue.
    #[tracing::instrument(skip(self, actor), fields(actor = actor.id()))]
    pub async fn record(
        &self,
        actor: &Actor,
        action: &str,
        resource_id: Option<&str>,
        ip: IpAddr,
    ) -> Result<AuditEntry> {
        let entry = AuditEntry {
            id: id::new("aud"),
            at: now(),
            actor: AuditActor { kind: actor.kind().to_owned(), id: actor.id().to_owned() },
            action: action.to_owned(),
            resource_id: resource_id.map(str::to_owned),
            ip: ip.to_string(),
        };
        let row = entry.clone();
        self.db
            .write_followup(move |mut conn| {
                Box::pin(async move {
                    sql::query(
                        "INSERT INTO audit_log (id, at, actor_type, actor_id, action, resource_id, ip) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(&row.id)
                    .bind(row.at)
                    .bind(&row.actor.kind)
                    .bind(&row.actor.id)
                    .bind(&row.action)
                    .bind(row.resource_id.as_deref())
                    .bind(&row.ip)
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    Ok(backroom_db::writer::Done::Commit(()))
                })
            })
            .await?;
        Ok(entry)
    }

    /// Entries newest first, a page at a time.
    pub async fn list(&self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<AuditEntry>> {
        let mut sql =
            String::from("SELECT id, at, actor_type, actor_id, action, resource_id, ip FROM audit_log WHERE 1 = 1");
        let mut args: Vec<&str> = Vec::new();
        for (column, value) in [
            ("actor_id", filter.actor.as_deref()),
            ("resource_id", filter.resource_id.as_deref()),
            ("id", page.after.as_ref().map(|c| c.0.as_str())),
        ] {
            if let Some(v) = value {
                args.push(v);
                let op = if column == "id" { "<" } else { "=" };
                sql.push_str(&format!(" AND {column} {op} ${}", args.len()));
            }
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len() + 1));
        let mut r = self.db.read().await?;
        let rows: Vec<EntryRow> = sql::query(sql)
            .bind_all(args)
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&mut r.conn())
            .await
            .map_err(storage)?;
        Ok(page.finish(rows.into_iter().map(AuditEntry::from).collect(), |e| e.id.clone()))
    }
}
