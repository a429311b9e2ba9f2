//! `/store/customers*` and `/store/auth/token`: shoppers' accounts, sign-in and their own data;
//! `/admin/customers*` and `/admin/customer-groups*`: the customers as staff see them.
//!
//! A customer's own routes take [`Customer`]: without a live customer token they are `401
//! unauthenticated`. Another customer's address is `404 not_found`, exactly like one that
//! does not exist.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use backroom_customers::{
    AdminCustomer, Credentials, CustomerAddress, CustomerAddressPatch, CustomerDetail, CustomerExport, CustomerGroup,
    Erasure, GroupMembers, LoginError, NewCustomerAddress, NewGroup, Profile, ProfilePatch, Registered, Registration,
    Session,
};
use backroom_kernel::{Code, Page, PageRequest};
use backroom_orders::Order;
use serde::Deserialize;

use crate::AppState;
use crate::client::ClientAddr;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Customer, Staff};
use crate::routes::Routes;
use crate::routes::admin::{Items, PageQuery};
use crate::views::Touched;

/// Customers' own routes (public, behind their token) and the staff views.
pub fn routes(r: &mut Routes) {
    store(r);
    admin(r);
}

/// Registration, sign-in and sign-out, the customer's profile and address book.
fn store(r: &mut Routes) {
    use utoipa_axum::routes;
    r.public(routes!(register));
    r.public(routes!(sign_in));
    r.customer(routes!(sign_out));
    r.customer(routes!(get_me, update_me));
    r.customer(routes!(list_addresses, add_address));
    r.customer(routes!(update_address, delete_address));
    r.customer(routes!(list_my_orders));
    r.customer(routes!(get_my_order));
}

/// Customers and groups for staff.
fn admin(r: &mut Routes) {
    use crate::access::Content::Scanned;
    use backroom_auth::Permission::{CustomersExport, CustomersRead, CustomersWrite};
    use utoipa_axum::routes;
    r.admin(CustomersRead, Scanned, routes!(list_customers));
    r.admin(CustomersRead, Scanned, routes!(get_customer));
    r.admin(CustomersExport, Scanned, routes!(export_customer));
    r.admin(CustomersWrite, Scanned, routes!(erase_customer));
    r.admin(CustomersRead, Scanned, routes!(list_groups));
    r.admin(CustomersWrite, Scanned, routes!(create_group));
    r.admin(CustomersWrite, Scanned, routes!(add_to_group)).action("customer_group.add_customers");
}

// ---- store: accounts and sessions -------------------------------------------------------------

/// Register a customer
///
/// Creates a customer account. The e-mail must be no live customer's (compared trimmed and
/// case-insensitively); the password is 10–256 characters and only its argon2id hash is kept.
/// Every personal field is stored encrypted under the customer's own key. Sign in next with
/// `POST /store/auth/token`.
#[utoipa::path(post, path = "/store/customers", operation_id = "register_customer", tag = "customers",
    request_body(content = Registration, description = "The new customer", example = json!({"email": "ana@example.com", "password": "correct horse battery", "first_name": "Ana", "last_name": "Silva"})),
    responses((status = 201, description = "Registered: the customer (never the password)", body = Registered),
        (status = 409, description = "`email_taken`: a customer with this e-mail exists", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`overloaded`: too many sign-ins and registrations at once; retry after `Retry-After`", body = Problem, content_type = "application/problem+json")))]
pub async fn register(
    State(s): State<AppState>,
    ApiJson(body): ApiJson<Registration>,
) -> ApiResult<(StatusCode, Json<Registered>)> {
    Ok((StatusCode::CREATED, Json(s.customers.register(&body).await?)))
}

/// Sign in
///
/// Answers a customer token for the e-mail and password: send it as `Authorization: Bearer
/// <token>` on the customer's own routes, and on carts and checkout to shop as the customer.
/// It works until `expires_at` or until signed out. A wrong password and an unknown e-mail
/// get the same `401 invalid_credentials`. From the 11th failed sign-in for one e-mail, or
/// from one client address, within 15 minutes: `429 rate_limited` with `Retry-After`.
#[utoipa::path(post, path = "/store/auth/token", operation_id = "sign_in", tag = "customers",
    request_body(content = Credentials, description = "The customer's e-mail and password", example = json!({"email": "ana@example.com", "password": "correct horse battery"})),
    responses((status = 200, description = "Signed in: the token, shown only here", body = Session),
        (status = 401, description = "`invalid_credentials`: a wrong password or an unknown e-mail", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: too many failed sign-ins for this e-mail or from this address; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until a sign-in is accepted again"))),
        (status = 503, description = "`overloaded`: too many sign-ins at once; retry after `Retry-After`", body = Problem, content_type = "application/problem+json")))]
pub async fn sign_in(
    State(s): State<AppState>,
    ClientAddr(ip): ClientAddr,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Json<Session>, Response> {
    match s.customers.login(&body, Some(ip)).await {
        Ok(session) => Ok(Json(session)),
        Err(LoginError::InvalidCredentials) => Err(ApiError::custom(
            Code::InvalidCredentials,
            "the e-mail or the password is wrong",
            serde_json::Value::Null,
        )
        .into_response()),
        Err(LoginError::RateLimited { retry_after }) => Err(crate::ratelimit::rate_limited(retry_after)),
        Err(LoginError::Other(e)) => Err(ApiError::from(e).into_response()),
    }
}

/// Sign out
///
/// Revokes the customer token the request is sent with; it stops working at once (`401`
/// afterwards). Other sessions of the customer stay signed in.
#[utoipa::path(delete, path = "/store/auth/token", operation_id = "sign_out", tag = "customers",
    responses((status = 204, description = "Signed out"),
        (status = 401, description = "`unauthenticated`: no live customer token", body = Problem, content_type = "application/problem+json")))]
pub async fn sign_out(State(s): State<AppState>, _customer: Customer, parts: TokenOf) -> ApiResult<StatusCode> {
    if !s.customers.logout(&parts.0).await? {
        return Err(ApiError::CustomerUnauthenticated);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The customer token of the request (after [`Customer`] checked it).
pub struct TokenOf(String);

impl<S: Send + Sync> FromRequestParts<S> for TokenOf {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        crate::extract::customer_token(parts).map(|t| TokenOf(t.to_owned())).ok_or(ApiError::CustomerUnauthenticated)
    }
}

// ---- store: the customer's own data -----------------------------------------------------------

/// Get my account
///
/// The signed-in customer's profile.
#[utoipa::path(get, path = "/store/customers/me", operation_id = "get_me", tag = "customers",
    responses((status = 200, description = "The customer", body = Profile),
        (status = 401, description = "`unauthenticated`: no live customer token", body = Problem, content_type = "application/problem+json")))]
pub async fn get_me(State(s): State<AppState>, customer: Customer) -> ApiResult<Json<Profile>> {
    Ok(Json(s.customers.profile(&customer).await?))
}

/// Change my account
///
/// Changes the signed-in customer's `first_name`, `last_name` or `phone` (`null` removes the
/// phone). The e-mail and the password cannot be changed here yet.
#[utoipa::path(patch, path = "/store/customers/me", operation_id = "update_me", tag = "customers",
    request_body(content = ProfilePatch, description = "The fields to change", example = json!({"phone": "+351 912 345 678"})),
    responses((status = 200, description = "The customer", body = Profile),
        (status = 401, description = "`unauthenticated`: no live customer token", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn update_me(
    State(s): State<AppState>,
    customer: Customer,
    ApiJson(body): ApiJson<ProfilePatch>,
) -> ApiResult<Json<Profile>> {
    Ok(Json(s.customers.update_profile(&customer, &body).await?))
}

/// List my addresses
///
/// The signed-in customer's address book, oldest first.
#[utoipa::path(get, path = "/store/customers/me/addresses", operation_id = "list_my_addresses", tag = "customers",
    responses((status = 200, description = "The addresses", body = Items<CustomerAddress>),
        (status = 401, description = "`unauthenticated`: no live customer token", body = Problem, content_type = "application/problem+json")))]
pub async fn list_addresses(State(s): State<AppState>, customer: Customer) -> ApiResult<Json<Items<CustomerAddress>>> {
    Ok(Json(Items { items: s.customers.addresses(&customer).await? }))
}

/// Add an address
///
/// Adds an address to the signed-in customer's book (at most 50): the shape of a checkout's
/// shipping address, with an optional `phone`.
#[utoipa::path(post, path = "/store/customers/me/addresses", operation_id = "add_my_address", tag = "customers",
    request_body(content = NewCustomerAddress, description = "The address", example = json!({"name": "Ana Silva", "line1": "Rua Augusta 1", "city": "Lisboa", "postal_code": "1100-048", "country": "PT"})),
    responses((status = 201, description = "Added: the address", body = CustomerAddress, links(
            ("update_my_address" = (operation_id = "update_my_address", parameters(("id" = "$response.body#/id")))),
            ("delete_my_address" = (operation_id = "delete_my_address", parameters(("id" = "$response.body#/id")))))),
        (status = 401, description = "`unauthenticated`: no live customer token", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn add_address(
    State(s): State<AppState>,
    customer: Customer,
    ApiJson(body): ApiJson<NewCustomerAddress>,
) -> ApiResult<(StatusCode, Json<CustomerAddress>)> {
    Ok((StatusCode::CREATED, Json(s.customers.add_address(&customer, &body).await?)))
}

/// Change an address
///
/// Changes fields of one of the signed-in customer's addresses; `null` removes `line2`,
/// `region` or `phone`.
#[utoipa::path(patch, path = "/store/customers/me/addresses/{id}", operation_id = "update_my_address", tag = "customers", params(("id" = String, Path)),
    request_body(content = CustomerAddressPatch, description = "The fields to change", example = json!({"line2": "3º Esq."})),
    responses((status = 200, description = "The address", body = CustomerAddress),
        (status = 401, description = "`unauthenticated`: no live customer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: the customer has no such address", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn update_address(
    State(s): State<AppState>,
    customer: Customer,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CustomerAddressPatch>,
) -> ApiResult<Json<CustomerAddress>> {
    Ok(Json(s.customers.update_address(&customer, &id, &body).await?))
}

/// Delete an address
///
/// Deletes one of the signed-in customer's addresses.
#[utoipa::path(delete, path = "/store/customers/me/addresses/{id}", operation_id = "delete_my_address", tag = "customers", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"),
        (status = 401, description = "`unauthenticated`: no live customer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: the customer has no such address", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_address(
    State(s): State<AppState>,
    customer: Customer,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.customers.delete_address(&customer, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List my orders
///
/// The orders the signed-in customer placed while signed in, newest first, a page at a time.
#[utoipa::path(get, path = "/store/customers/me/orders", operation_id = "list_my_orders", tag = "customers", params(PageQuery),
    responses((status = 200, description = "A page of orders", body = Page<Order>),
        (status = 401, description = "`unauthenticated`: no live customer token", body = Problem, content_type = "application/problem+json")))]
pub async fn list_my_orders(
    State(s): State<AppState>,
    customer: Customer,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Order>>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    Ok(Json(s.orders.list_for_customer(customer.as_str(), &page).await?))
}

/// Get one of my orders
///
/// One order the signed-in customer placed while signed in. Another customer's order, or a
/// guest's, is `404`, exactly like one that does not exist.
#[utoipa::path(get, path = "/store/orders/{id}", operation_id = "get_my_order", tag = "customers", params(("id" = String, Path)),
    responses((status = 200, description = "The order", body = Order),
        (status = 401, description = "`unauthenticated`: no live customer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: the customer has no such order", body = Problem, content_type = "application/problem+json")))]
pub async fn get_my_order(
    State(s): State<AppState>,
    customer: Customer,
    Path(id): Path<String>,
) -> ApiResult<Json<Order>> {
    Ok(Json(s.orders.get_for_customer(customer.as_str(), &id).await?))
}

// ---- admin ------------------------------------------------------------------------------------

/// Filters of `GET /admin/customers`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CustomersQuery {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    /// Only the live customer with this e-mail (exact, trimmed, case-insensitive).
    #[param(max_length = 254)]
    pub email: Option<String>,
}

/// List customers
///
/// Customers, newest first, a page at a time; `email` finds the live customer with that
/// e-mail. Erased customers are listed with `"erased": true` and every personal field `null`.
#[utoipa::path(get, path = "/admin/customers", tag = "customers", params(CustomersQuery),
    responses((status = 200, description = "A page of customers", body = Page<AdminCustomer>)),
    security(("api_key" = [])))]
pub async fn list_customers(
    State(s): State<AppState>,
    _staff: Staff,
    ApiQuery(q): ApiQuery<CustomersQuery>,
) -> ApiResult<Json<Page<AdminCustomer>>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let email = q.email.as_deref().map(str::trim).filter(|e| !e.is_empty());
    if email.is_some_and(|e| e.chars().count() > backroom_customers::validate::EMAIL_MAX) {
        return Err(backroom_kernel::Error::field("email", "must be at most 254 characters").into());
    }
    Ok(Json(s.customers.list(email, &page).await?))
}

/// Get a customer
///
/// One customer with their address book, groups and the number of orders placed while signed
/// in. An erased customer shows `"erased": true` and every personal field `null`.
#[utoipa::path(get, path = "/admin/customers/{id}", tag = "customers", params(("id" = String, Path)),
    responses((status = 200, description = "The customer", body = CustomerDetail),
        (status = 404, description = "`not_found`: no such customer", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn get_customer(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<CustomerDetail>> {
    Ok(Json(s.customers.detail(&id).await?))
}

/// Export a customer's data
///
/// Every personal field the store holds of the customer (profile, address book, groups, and
/// the orders of their account with their e-mail and address), as JSON, for a data-subject
/// access request.
#[utoipa::path(get, path = "/admin/customers/{id}/export", tag = "customers", params(("id" = String, Path)),
    responses((status = 200, description = "The customer's data", body = CustomerExport),
        (status = 404, description = "`not_found`: no such customer", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn export_customer(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<CustomerExport>> {
    Ok(Json(s.customers.export(&id).await?))
}

/// Erase a customer
///
/// Erases the customer's personal data for good: their data key is destroyed, so every copy
/// of their encrypted fields (backups included) can no longer be read; their e-mail, names,
/// phone, addresses and password are cleared, every session is revoked, and
/// `customer.erased` is sent. The orders of their account keep their lines, prices and totals;
/// their personal fields read `null` (their keys are destroyed too). They can no longer sign
/// in, and the e-mail is free to register again. The account stays, with `"erased": true`. Erasing an erased customer answers the
/// first erasure again.
#[utoipa::path(post, path = "/admin/customers/{id}/erase", tag = "customers", params(("id" = String, Path)),
    responses((status = 200, description = "Erased (now or before)", body = Erasure),
        (status = 404, description = "`not_found`: no such customer", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn erase_customer(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<(Extension<Touched>, Json<Erasure>)> {
    Ok((Extension(Touched::nothing()), Json(s.customers.erase(&id).await?)))
}

/// List customer groups
///
/// Groups, newest first, a page at a time, each with its number of customers.
#[utoipa::path(get, path = "/admin/customer-groups", tag = "customers", params(PageQuery),
    responses((status = 200, description = "A page of groups", body = Page<CustomerGroup>)),
    security(("api_key" = [])))]
pub async fn list_groups(
    State(s): State<AppState>,
    _staff: Staff,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<CustomerGroup>>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    Ok(Json(s.customers.list_groups(&page).await?))
}

/// Create a customer group
///
/// Creates a named group of customers (price lists can target groups). Names are unique.
#[utoipa::path(post, path = "/admin/customer-groups", tag = "customers",
    request_body(content = NewGroup, description = "The group's name", example = json!({"name": "Wholesale"})),
    responses((status = 201, description = "Created: the group", body = CustomerGroup, links(
            ("add_to_group" = (operation_id = "add_to_group", parameters(("id" = "$response.body#/id")))))),
        (status = 409, description = "`conflict`: a group has this name", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn create_group(
    State(s): State<AppState>,
    _staff: Staff,
    ApiJson(body): ApiJson<NewGroup>,
) -> ApiResult<(StatusCode, Extension<Touched>, Json<CustomerGroup>)> {
    Ok((StatusCode::CREATED, Extension(Touched::nothing()), Json(s.customers.create_group(&body).await?)))
}

/// Add customers to a group
///
/// Adds 1–1000 customers to a group; those already in it stay. Ids that are no live
/// customer's are `422`, each named in `errors` (`customer_ids[2]`), and nothing is added.
#[utoipa::path(post, path = "/admin/customer-groups/{id}/customers", tag = "customers", params(("id" = String, Path)),
    request_body(content = GroupMembers, description = "The customers to add", example = json!({"customer_ids": ["cus_01jd8x6v3y0m4c4b9ks2t5f7qe"]})),
    responses((status = 200, description = "The group", body = CustomerGroup),
        (status = 404, description = "`not_found`: no such group", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn add_to_group(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<GroupMembers>,
) -> ApiResult<(Extension<Touched>, Json<CustomerGroup>)> {
    let group = s.customers.add_to_group(&id, &body).await?;
    // The members' price lists change: this process reads their groups again.
    s.prices.groups_changed();
    Ok((Extension(Touched::nothing()), Json(group)))
}
