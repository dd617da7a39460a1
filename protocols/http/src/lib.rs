//! attache-http: what attache decides about HTTP requests, with no I/O.
//!
//! The app sends plain HTTP to `127.0.0.1:8080`, with no credentials; the
//! runtime (crate `attache`, `src/http/`) owns the sockets and asks this
//! crate, for each request:
//!
//! 1. [`Gate::admit`]: may it be forwarded at all (no `CONNECT`, no
//!    absolute-form targets, only local Host names), and which route does it
//!    take? The answer is [`Admission::Forward`] with the route and the full
//!    upstream URI, or [`Admission::Refuse`] with a [`LocalError`].
//! 2. [`HeaderPolicy::request`]: the headers to send upstream (hop-by-hop
//!    removed, `Host` rewritten, static headers and the token injected).
//! 3. The runtime forwards it (pooled connection, `timeout`).
//! 4. On failure, [`RetryPolicy::decide`] says whether to try again and
//!    after what backoff, and [`RetryBudget::try_withdraw`] whether the
//!    listener can afford it; [`RetryBudget::deposit`] is called once per
//!    request.
//! 5. When attache must answer itself (refused, no route, connect failure,
//!    timeout, no token), [`LocalError::to_response`] is that answer; an
//!    upstream response goes back through [`HeaderPolicy::response`].
//!
//! [`HttpListenerConfig::policy`] builds the gate, header and retry rules
//! of one `[http.NAME]` listener from its config.
//!
//! # Layout
//!
//! - [`config`]: the `[http.NAME]` config types, validation with errors
//!   naming the key, and the [`Policy`] built from them.
//! - [`admit`]: admission, which keeps attache from being an open proxy.
//! - [`route`]: the route table: Host and segment-aware prefix matching,
//!   and how paths with `%2F` and `..` are treated.
//! - [`upstream`]: upstream base URLs: parsing, checks, path joining.
//! - [`headers`]: hop-by-hop stripping, upgrades, `Host`, credential and
//!   static header injection.
//! - [`h1`]: HTTP/1.1 towards the upstream: the request head, the
//!   response head, and how the response body is delimited; [`h1::app`],
//!   towards the app: plain request heads and the response heads.
//! - [`retry`]: idempotency, the retry decision with backoff, and the
//!   retry budget.
//! - [`error`]: the responses attache writes itself (`x-attache-error`).

pub mod admit;
pub mod config;
pub mod error;
pub mod h1;
pub mod headers;
pub mod retry;
pub mod route;
pub mod upstream;

pub use admit::{Admission, Forward, Gate};
pub use config::{HttpListenerConfig, InvalidConfig, Policy};
pub use error::LocalError;
pub use headers::{CredentialHeader, ExtraHeaders, HeaderPolicy, RequestContext};
pub use retry::{RetryBudget, RetryPolicy};
pub use route::{Route, RouteTable};
pub use upstream::Upstream;
