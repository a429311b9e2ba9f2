//! The domain error every module returns. Each variant has a stable [`Code`] from the one
//! table ([`crate::code`]), which also gives its status; the HTTP layer (`backroom_api::error`)
//! turns it into a problem document. Modules never know about HTTP.

use std::fmt;

use crate::code::Code;

/// One refused field of a request, `field` as a path such as `variants[0].sku`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// What can go wrong in a module's service function.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input broke a rule; every broken rule is listed.
    #[error("validation failed: {0:?}")]
    Validation(Vec<FieldError>),
    /// The thing named does not exist (or is not visible to the caller).
    #[error("{entity} not found")]
    NotFound { entity: &'static str },
    /// The store refuses the request for a reason with its own code: it clashes with the
    /// current state (a duplicate handle, stock below what is already promised: `409`s), or
    /// is well-formed input the store cannot act on (`no_price`: `422`s). The status is the
    /// table's for `code`. `details`, an object or `null`, is merged into the problem
    /// document (the `items` of `insufficient_stock`).
    #[error("{code}: {message}")]
    Refused { code: Code, message: String, details: serde_json::Value },
    /// Storage is unreachable or overloaded; the caller may retry.
    #[error("storage unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store is at capacity and shed this request before doing any of it (a full write
    /// queue, a write that waited past its deadline); the caller may retry shortly.
    #[error("overloaded: {0}")]
    Overloaded(&'static str),
    /// A bug or an unexpected storage failure: logged with its cause, answered with a bare 500.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn validation(errors: Vec<FieldError>) -> Self {
        Error::Validation(errors)
    }

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation(vec![FieldError::new(field, message)])
    }

    pub fn not_found(entity: &'static str) -> Self {
        Error::NotFound { entity }
    }

    /// A refusal with `code` and `message` (the problem's `detail`). For the codes that have
    /// their own variant (`validation_failed`, `not_found`, `unavailable`, `overloaded`,
    /// `internal`) use that variant instead.
    pub fn refused(code: Code, message: impl Into<String>) -> Self {
        Error::Refused { code, message: message.into(), details: serde_json::Value::Null }
    }

    /// Like [`Error::refused`], with members for the client (a JSON object) merged into the
    /// problem document.
    pub fn refused_with(code: Code, message: impl Into<String>, details: serde_json::Value) -> Self {
        Error::Refused { code, message: message.into(), details }
    }

    /// The stable code this error is answered with.
    pub fn code(&self) -> Code {
        match self {
            Error::Validation(_) => Code::ValidationFailed,
            Error::NotFound { .. } => Code::NotFound,
            Error::Refused { code, .. } => *code,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Overloaded(_) => Code::Overloaded,
            Error::Internal(_) => Code::Internal,
        }
    }

    pub fn internal(message: impl fmt::Display) -> Self {
        Error::Internal(message.to_string().into())
    }
}

/// Collects field errors while a request is checked, so that all of them are reported at once.
#[derive(Debug, Default)]
pub struct Problems(Vec<FieldError>);

impl Problems {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// Records the error of `r`, if any, and gives back its value.
    pub fn check<T>(&mut self, field: impl Into<String>, r: Result<T, impl fmt::Display>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(field, e.to_string());
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn finish(self) -> Result<()> {
        if self.0.is_empty() { Ok(()) } else { Err(Error::Validation(self.0)) }
    }
}
