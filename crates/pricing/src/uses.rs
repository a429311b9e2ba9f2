//! Counting promotion uses exactly: a use is taken in the checkout's own write (the job that
//! reserves the stock and creates the order), by one conditional `UPDATE` that only succeeds
//! while uses are left, so no concurrency can take more than `usage_limit`; it is given back
//! when the order's payment fails or the order is cancelled before it is placed.

use backroom_db::outbox::{self, Event, PromotionExhausted};
use backroom_db::{Conn, storage};
use backroom_kernel::{Result, now};

use crate::model::{self, Promotion};

/// Why a use could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every use is taken.
    Exhausted,
    /// This customer (or this guest e-mail) used it `per_customer_limit` times.
    CustomerLimit,
}

/// Takes one use of `promotion` for `order_id`, inside the caller's write. `Err(Refused)`
/// leaves nothing changed (the caller rolls its job back). Taking the last use writes
/// `promotion.exhausted`.
pub async fn claim(
    conn: &mut Conn<'_>,
    promotion: &Promotion,
    order_id: &str,
    customer_id: Option<&str>,
    email_index: Option<&str>,
) -> Result<std::result::Result<(), Refused>> {
    let ts = now();
    let used: Option<(i64,)> = backroom_db::sql::query(
        "UPDATE promotions SET used = used + 1, updated_at = $2 \
         WHERE id = $1 AND (usage_limit IS NULL OR used < usage_limit) RETURNING used",
    )
    .bind(promotion.id.as_str())
    .bind(ts)
    .fetch_optional(conn)
    .await
    .map_err(storage)?;
    let Some((used,)) = used else { return Ok(Err(Refused::Exhausted)) };
    // Counted after the row above is held: two orders of one customer cannot both pass.
    if let Some(limit) = promotion.per_customer_limit
        && model::uses_by(conn, &promotion.id, customer_id, email_index).await? >= limit
    {
        return Ok(Err(Refused::CustomerLimit));
    }
    backroom_db::sql::query(
        "INSERT INTO promotion_uses (promotion_id, order_id, customer_id, email_index, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(promotion.id.as_str())
    .bind(order_id)
    .bind(customer_id)
    .bind(email_index)
    .bind(ts)
    .execute(conn)
    .await
    .map_err(storage)?;
    if let Some(limit) = promotion.usage_limit
        && used == limit
    {
        let event = Event::PromotionExhausted(PromotionExhausted {
            promotion_id: promotion.id.clone(),
            code: promotion.code.clone(),
            usage_limit: limit,
            order_id: order_id.to_owned(),
        });
        outbox::enqueue(conn, &event).await?;
    }
    Ok(Ok(()))
}

/// Gives back the uses an order took (its payment failed, or it was cancelled), inside the
/// caller's write. Answers how many were given back.
pub async fn release(conn: &mut Conn<'_>, order_id: &str) -> Result<u64> {
    let ids: Vec<(String,)> =
        backroom_db::sql::query("DELETE FROM promotion_uses WHERE order_id = $1 RETURNING promotion_id")
            .bind(order_id)
            .fetch_all(conn)
            .await
            .map_err(storage)?;
    for (id,) in &ids {
        backroom_db::sql::query("UPDATE promotions SET used = used - 1, updated_at = $2 WHERE id = $1 AND used > 0")
            .bind(id.as_str())
            .bind(now())
            .execute(conn)
            .await
            .map_err(storage)?;
    }
    Ok(ids.len() as u64)
}
