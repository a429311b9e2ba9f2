//! Extractors that refuse bad input with problem+json instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::{StatusCode, header, request::Parts};
use backroom_auth::Principal;
use backroom_kernel::id::CustomerId;
use backroom_kernel::{Error, FieldError};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::access::ProductData;
use crate::error::ApiError;

/// A JSON body: `application/json` (or `+json`), at most 1 MiB, every field known.
/// Malformed JSON is `400 malformed_json`; well-formed JSON of the wrong shape (unknown
/// field, wrong type, missing field) is `422 validation_failed` with the field's path.
///
/// A body that holds a card number is `422 card_data_refused` before it is parsed
/// ([`crate::pci`]), on every route but the admin catalog and stock routes that the access
/// table marks as product data ([`crate::access::Content::ProductData`]): a store route, and
/// any route added later, is scanned without asking.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let product_data = req.extensions().get::<ProductData>().is_some();
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::MalformedJson("the body could not be read".into())
            }
        })?;
        if !product_data && crate::pci::json_contains_card_number(&bytes) {
            return Err(crate::pci::refused());
        }
        let value = parse_json(&bytes)?;
        refuse_nul(&bytes)?;
        Ok(ApiJson(value))
    }
}

/// What a field holding U+0000 is told. PostgreSQL cannot store that character in text (and
/// no id, handle or name holds one), so it is refused on both databases alike.
const NUL_MESSAGE: &str = "must not contain the NUL character (U+0000)";

/// Refuses a JSON body with U+0000 in any string or key, naming the first such field.
fn refuse_nul(bytes: &[u8]) -> Result<(), ApiError> {
    // In JSON text U+0000 can only be written `\u0000`; a body without that is clean.
    if !bytes.windows(6).any(|w| w == br"\u0000") {
        return Ok(());
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    match find_nul(&value, "") {
        Some(field) => {
            Err(ApiError::Domain(Error::field(if field.is_empty() { "body".into() } else { field }, NUL_MESSAGE)))
        }
        None => Ok(()),
    }
}

/// The path (`variants[0].sku`) of the first string or key holding U+0000.
fn find_nul(value: &serde_json::Value, path: &str) -> Option<String> {
    match value {
        serde_json::Value::String(s) => s.contains('\0').then(|| path.to_owned()),
        serde_json::Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, v)| find_nul(v, &format!("{path}[{i}]")))
        }
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            let key = k.replace('\0', "\u{fffd}");
            let at = if path.is_empty() { key } else { format!("{path}.{key}") };
            if k.contains('\0') { Some(at) } else { find_nul(v, &at) }
        }),
        _ => None,
    }
}

/// Parses a JSON body, telling syntax errors (400) from shape errors (422).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Syntax first, so a truncated body is a 400 even when its start has the wrong shape.
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        return Err(ApiError::MalformedJson(format!("the body is not valid JSON: {e}")));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data => {
                    let msg = inner.to_string();
                    // A missing field is reported at its own path, not its parent's.
                    let missing = msg.strip_prefix("missing field `").and_then(|m| m.split('`').next());
                    let field = match (path.as_str(), missing) {
                        (".", Some(name)) => name.to_owned(),
                        (parent, Some(name)) => format!("{parent}.{name}"),
                        (".", None) => "body".to_owned(),
                        (_, None) => path,
                    };
                    // serde appends " at line 1 column 42"; the path already says where.
                    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
                    Err(ApiError::Domain(Error::Validation(vec![FieldError::new(field, msg)])))
                }
                _ => Err(ApiError::MalformedJson(format!("the body is not valid JSON: {inner}"))),
            }
        }
    }
}

/// Query parameters; a parameter of the wrong type is `422 validation_failed`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // U+0000 can only arrive as `%00`; see `NUL_MESSAGE`.
        if parts.uri.query().is_some_and(|q| q.contains("%00")) {
            let pairs = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri).map(|q| q.0).unwrap_or_default();
            let field = pairs
                .iter()
                .find(|(k, v)| k.contains('\0') || v.contains('\0'))
                .map_or_else(|| "query".to_owned(), |(k, _)| k.replace('\0', "\u{fffd}"));
            return Err(ApiError::Domain(Error::field(field, NUL_MESSAGE)));
        }
        Query::<T>::from_request_parts(parts, state).await.map(|q| ApiQuery(q.0)).map_err(|r| {
            let text = r.body_text();
            let msg = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text).to_owned();
            ApiError::Domain(Error::Validation(vec![FieldError::new("query", msg)]))
        })
    }
}

/// The staff member that [`crate::access::guard`] authenticated and authorised for this
/// route by the access table. A handler that takes it cannot run on a route the table does
/// not guard: there it is `403 forbidden` (and logged as the bug it is).
pub struct Staff(pub Principal);

impl std::ops::Deref for Staff {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Staff {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Principal>() {
            Some(p) => Ok(Staff(p.clone())),
            None => {
                tracing::error!(
                    path = parts.uri.path(),
                    "a handler takes Staff on a route the access table does not guard"
                );
                Err(ApiError::Forbidden)
            }
        }
    }
}

/// The bearer token of a request: `Ok(None)` without an `Authorization` header, `Err` for
/// one that is not `Bearer <token>`.
fn bearer_token(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let value = value.to_str().map_err(|_| ApiError::CustomerUnauthenticated)?;
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::CustomerUnauthenticated)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::CustomerUnauthenticated);
    }
    Ok(Some(token))
}

/// The customer a request was authenticated as, kept in its extensions so that a second
/// extractor of the same request does not look the token up again.
#[derive(Debug, Clone)]
struct Authenticated(Option<CustomerId>);

/// Who is shopping, on the store routes that serve anonymous shoppers and customers alike
/// (carts, checkout): `None` without an `Authorization` header; the customer of a live
/// customer token (`Authorization: Bearer <token>` from `POST /store/auth/token`). A header
/// that is not such a token (malformed, unknown, signed out, expired, or of an erased
/// customer) is `401 unauthenticated` with `WWW-Authenticate: Bearer`: a shopper who meant to
/// be signed in is never served as anonymous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shopper(pub Option<CustomerId>);

impl Shopper {
    /// The signed-in customer's id, if any.
    pub fn id(&self) -> Option<&str> {
        self.0.as_ref().map(|c| c.as_str())
    }
}

impl FromRequestParts<AppState> for Shopper {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(Authenticated(id)) = parts.extensions.get::<Authenticated>() {
            return Ok(Shopper(id.clone()));
        }
        let id = match bearer_token(parts)? {
            None => None,
            Some(token) => Some(state.customers.authenticate(token).await?.ok_or(ApiError::CustomerUnauthenticated)?),
        };
        parts.extensions.insert(Authenticated(id.clone()));
        Ok(Shopper(id))
    }
}

/// The signed-in customer, on the routes of a customer's own resources: without a live
/// customer token `401 unauthenticated` (see [`Shopper`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer(pub CustomerId);

impl std::ops::Deref for Customer {
    type Target = CustomerId;
    fn deref(&self) -> &CustomerId {
        &self.0
    }
}

impl FromRequestParts<AppState> for Customer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Shopper::from_request_parts(parts, state).await? {
            Shopper(Some(id)) => Ok(Customer(id)),
            Shopper(None) => Err(ApiError::CustomerUnauthenticated),
        }
    }
}

/// The customer token a request carries, as sent (for signing out).
pub(crate) fn customer_token(parts: &Parts) -> Option<&str> {
    bearer_token(parts).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: ApiError) -> String {
        match err {
            ApiError::Domain(Error::Validation(errors)) => errors[0].field.clone(),
            other => panic!("expected validation_failed, got {other:?}"),
        }
    }

    #[test]
    fn nul_in_a_body_is_refused_at_its_field() {
        let cases = [
            (&br#"{"title": "a\u0000b"}"#[..], "title"),
            (br#"{"variants": [{"sku": "ok"}, {"sku": "\u0000"}]}"#, "variants[1].sku"),
            (br#"{"attributes": {"k\u0000": "v"}}"#, "attributes.k\u{fffd}"),
            (br#""\u0000""#, "body"),
        ];
        for (body, field) in cases {
            assert_eq!(field_of(refuse_nul(body).unwrap_err()), field);
        }
    }

    async fn read(body: &str, product_data: bool) -> Result<serde_json::Value, ApiError> {
        let mut req = axum::http::Request::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(body.to_owned()))
            .unwrap();
        if product_data {
            req.extensions_mut().insert(ProductData);
        }
        ApiJson::<serde_json::Value>::from_request(req, &()).await.map(|j| j.0)
    }

    #[tokio::test]
    async fn card_numbers_are_refused_except_in_product_data() {
        let shopper = r#"{"shipping_address": {"line1": "4111 1111 1111 1111"}}"#;
        assert!(matches!(read(shopper, false).await, Err(ApiError::CardDataRefused)));
        // A barcode is a card-shaped number: refused in a shopper's text, kept in product data.
        for body in [
            r#"{"title": "Cola 5449000000996", "variants": [{"sku": "5901234123457"}]}"#,
            r#"{"attributes": {"gtin": "5901234123457"}, "description": "EAN 5901 2341 2345 7"}"#,
            r#"{"title": "5901234123457"}"#,
        ] {
            assert!(matches!(read(body, false).await, Err(ApiError::CardDataRefused)), "{body}");
            assert!(read(body, true).await.is_ok(), "{body}");
        }
        assert!(read(r#"{"title": "Linen shirt"}"#, false).await.is_ok());
    }

    /// The state over a fresh SQLite database in `dir`.
    async fn state(dir: &std::path::Path) -> AppState {
        let db =
            backroom_db::Db::connect(&backroom_db::ConnectOptions::new(backroom_db::sqlite_url_in(dir))).await.unwrap();
        db.migrate().await.unwrap();
        let providers = backroom_payments::Providers::enabled(&db, &[], std::time::Duration::from_secs(1)).unwrap();
        let vault = backroom_vault::Vault::open(&db, backroom_vault::MasterKey::generate()).await.unwrap();
        let checkout = backroom_checkout::Checkout::new(db.clone(), providers, Default::default(), vault);
        AppState::new(db, None, checkout, None)
    }

    async fn shopper(state: &AppState, authorization: Option<&str>) -> Result<Shopper, ApiError> {
        let mut req = axum::http::Request::builder();
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        let (mut parts, _) = req.body(()).unwrap().into_parts();
        Shopper::from_request_parts(&mut parts, state).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shoppers_are_anonymous_or_a_live_customer_never_a_bad_token() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path()).await;
        assert_eq!(shopper(&s, None).await.unwrap(), Shopper(None));
        for bad in ["Bearer cst_nope", "Basic YWJj", "Bearer ", "cst_nope", "Bearer a b"] {
            assert!(matches!(shopper(&s, Some(bad)).await, Err(ApiError::CustomerUnauthenticated)), "{bad}");
        }
        let registration: backroom_customers::Registration = serde_json::from_value(serde_json::json!({
            "email": "ana@example.com", "password": "correct horse battery", "first_name": "Ana", "last_name": "Silva"
        }))
        .unwrap();
        let ana = s.customers.register(&registration).await.unwrap();
        let credentials: backroom_customers::Credentials = serde_json::from_value(
            serde_json::json!({"email": "ana@example.com", "password": "correct horse battery"}),
        )
        .unwrap();
        let session = s.customers.login(&credentials, None).await.unwrap();
        let live = format!("bearer {}", session.token);
        assert_eq!(shopper(&s, Some(&live)).await.unwrap(), Shopper(Some(ana.id.clone())));
        s.customers.logout(&session.token).await.unwrap();
        assert!(matches!(shopper(&s, Some(&live)).await, Err(ApiError::CustomerUnauthenticated)));
    }

    #[test]
    fn an_escaped_backslash_before_u0000_is_not_nul() {
        assert!(refuse_nul(br#"{"title": "a\\u0000b"}"#).is_ok());
        assert!(refuse_nul(br#"{"title": "plain"}"#).is_ok());
    }
}
