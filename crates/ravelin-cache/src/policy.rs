//! The caching rules of RFC 9111 (and RFC 5861, RFC 9213) as pure functions of headers and times:
//! storability (§3), freshness lifetime (§4.2.1, §4.2.2), age (§4.2.3) and when a stored response
//! may be reused, served stale or must be validated (§4, §4.2.4, §5.2).

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderName};
use http::{HeaderMap, StatusCode};

use crate::config::SetCookie;
use crate::directives::{
    CacheControl, FieldScope, parse_surrogate_control, parse_targeted, pragma_no_cache,
};
use crate::headers::{SURROGATE_CONTROL, Vary, age_value, date_field};

/// The response directives this cache obeys: the first targeted field present and valid, in the
/// configured order (RFC 9213 `CDN-Cache-Control`, then W3C `Surrogate-Control` by default), else
/// `Cache-Control`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Effective {
    pub(crate) cc: CacheControl,
    /// The directives came from a targeted field, so `Expires` is ignored too (RFC 9213 §2.2).
    pub(crate) targeted: bool,
}

/// The directives for a response: `targeted` lists the targeted fields, most specific first;
/// `Surrogate-Control` among them is read with its own grammar for the device token `device`
/// (this cache's name).
pub(crate) fn effective(headers: &HeaderMap, targeted: &[HeaderName], device: &str) -> Effective {
    for name in targeted {
        if !headers.contains_key(name) {
            continue;
        }
        let cc = if *name == SURROGATE_CONTROL {
            parse_surrogate_control(headers.get_all(name), device)
        } else {
            parse_targeted(headers.get_all(name))
        };
        if let Some(cc) = cc {
            return Effective { cc, targeted: true };
        }
    }
    Effective {
        cc: CacheControl::parse(headers.get_all(header::CACHE_CONTROL)),
        targeted: false,
    }
}

/// Status codes that are heuristically cacheable (RFC 9110 §15.1), minus 206: this cache stores
/// only complete responses.
pub(crate) fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Status codes whose caching semantics this cache implements, for `must-understand`
/// (RFC 9111 §5.2.2.3): the final codes of RFC 9110 except 206 and 304, which it never stores.
pub(crate) fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=205 | 300..=303 | 305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// Why a response was not stored; the text goes into `Cache-Status: detail=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStored {
    Status,
    NoStore,
    RequestNoStore,
    Private,
    Authorization,
    MustUnderstand,
    NotCacheable,
    VaryStar,
    NotReusable,
    TooLarge,
    ErrorOverStored,
    /// `Set-Cookie` without an explicit shared-cache opt-in ([`SetCookie`]).
    SetCookie,
    /// The body ended at connection close, so a truncated copy could not be told apart.
    CloseDelimited,
}

impl NotStored {
    /// Whether the reason is the response's own (`no-store`, `private`, `Vary: *`, `Set-Cookie`,
    /// …), so the URL's next responses are likely the same — the reasons that leave a
    /// hit-for-pass mark — as opposed to one of this request (`Authorization`, request
    /// `no-store`) or this moment (a status such as a 5xx or 206, an error over a stored copy),
    /// given by its [`as_str`](Self::as_str) name.
    pub(crate) fn is_intrinsic_name(name: &str) -> bool {
        [
            NotStored::NoStore,
            NotStored::Private,
            NotStored::MustUnderstand,
            NotStored::NotCacheable,
            NotStored::VaryStar,
            NotStored::NotReusable,
            NotStored::TooLarge,
            NotStored::SetCookie,
            NotStored::CloseDelimited,
        ]
        .iter()
        .any(|reason| reason.as_str() == name)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::RequestNoStore => "request-no-store",
            NotStored::Private => "private",
            NotStored::Authorization => "authorization",
            NotStored::MustUnderstand => "must-understand",
            NotStored::NotCacheable => "not-cacheable",
            NotStored::VaryStar => "vary-star",
            NotStored::NotReusable => "zero-ttl",
            NotStored::TooLarge => "too-large",
            NotStored::ErrorOverStored => "error-not-stored",
            NotStored::SetCookie => "set-cookie",
            NotStored::CloseDelimited => "close-delimited",
        }
    }
}

/// RFC 9111 §3: may a shared cache store this response to a GET? Plus the edge's rule for
/// `Set-Cookie` ([`SetCookie`]).
pub(crate) fn storable(
    status: StatusCode,
    eff: &Effective,
    headers: &HeaderMap,
    vary: &Vary,
    authorization: bool,
    set_cookie: SetCookie,
) -> Result<(), NotStored> {
    if status.is_informational()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Err(NotStored::Status);
    }
    let cc = &eff.cc;
    if cc.must_understand {
        // §5.2.2.3: with must-understand, a cache that understands the status ignores no-store.
        if !understood(status) {
            return Err(NotStored::MustUnderstand);
        }
    } else if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private == Some(FieldScope::All) {
        return Err(NotStored::Private);
    }
    // §3.5: responses to authenticated requests only with explicit permission.
    if authorization && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate) {
        return Err(NotStored::Authorization);
    }
    if headers.contains_key(header::SET_COOKIE) && !set_cookie_allowed(eff, set_cookie) {
        return Err(NotStored::SetCookie);
    }
    let explicit = cc.public
        || cc.max_age.is_some()
        || cc.s_maxage.is_some()
        || (!eff.targeted && headers.contains_key(header::EXPIRES));
    if !explicit && !heuristically_cacheable(status) {
        return Err(NotStored::NotCacheable);
    }
    if *vary == Vary::Star {
        return Err(NotStored::VaryStar);
    }
    Ok(())
}

/// Whether a response with `Set-Cookie` may be stored under `mode`: with [`SetCookie::Explicit`],
/// only when the origin addressed it to shared caches — `public`, `s-maxage`, freshness in a
/// targeted field (RFC 9213: meant for this cache alone), or `private="set-cookie"` (store all
/// but the cookie, §5.2.2.7). `max-age` alone is not enough: browsers read it too, so an origin
/// that sets it says nothing about sharing.
pub(crate) fn set_cookie_allowed(eff: &Effective, mode: SetCookie) -> bool {
    let cc = &eff.cc;
    match mode {
        SetCookie::Replay => true,
        SetCookie::Never => false,
        SetCookie::Explicit => {
            cc.public
                || cc.s_maxage.is_some()
                || (eff.targeted && cc.max_age.is_some())
                || matches!(&cc.private, Some(FieldScope::Fields(f)) if f.contains(&header::SET_COOKIE))
        }
    }
}

/// Heuristic-freshness settings (RFC 9111 §4.2.2).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heuristics {
    pub(crate) enabled: bool,
    pub(crate) fraction: f64,
    pub(crate) max: Duration,
}

/// RFC 9111 §4.2.1 for a shared cache: `s-maxage`, else `max-age`, else `Expires` − `Date`, else
/// a heuristic. Returns the lifetime and whether it was heuristic.
pub(crate) fn freshness_lifetime(
    eff: &Effective,
    headers: &HeaderMap,
    status: StatusCode,
    date: SystemTime,
    h: Heuristics,
) -> (Duration, bool) {
    let cc = &eff.cc;
    if let Some(s) = cc.s_maxage {
        return (Duration::from_secs(s), false);
    }
    if let Some(m) = cc.max_age {
        return (Duration::from_secs(m), false);
    }
    if !eff.targeted && headers.contains_key(header::EXPIRES) {
        // §5.3: an invalid Expires (e.g. "0") means already expired.
        let lifetime = date_field(headers, &header::EXPIRES)
            .and_then(|exp| exp.duration_since(date).ok())
            .unwrap_or(Duration::ZERO);
        return (lifetime, false);
    }
    if h.enabled
        && (heuristically_cacheable(status) || cc.public)
        && let Some(lm) = date_field(headers, &header::LAST_MODIFIED)
    {
        let since = date.duration_since(lm).unwrap_or(Duration::ZERO);
        let fraction = if h.fraction.is_finite() {
            h.fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let lifetime = Duration::try_from_secs_f64(since.as_secs_f64() * fraction)
            .unwrap_or(Duration::ZERO)
            .min(h.max);
        // Whole seconds: HTTP ages have one-second resolution.
        return (Duration::from_secs(lifetime.as_secs()), true);
    }
    (Duration::ZERO, false)
}

/// RFC 9111 §4.2.3: `corrected_initial_age`, from which the current age grows with resident time.
pub(crate) fn corrected_initial_age(
    date_value: SystemTime,
    age_value: Duration,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let apparent_age = response_time
        .duration_since(date_value)
        .unwrap_or(Duration::ZERO);
    let response_delay = response_time
        .duration_since(request_time)
        .unwrap_or(Duration::ZERO);
    let corrected_age_value = age_value.saturating_add(response_delay);
    apparent_age.max(corrected_age_value)
}

/// RFC 9111 §4.2.3: `current_age = corrected_initial_age + resident_time`.
pub(crate) fn current_age(
    corrected_initial_age: Duration,
    response_time: SystemTime,
    now: SystemTime,
) -> Duration {
    let resident_time = now.duration_since(response_time).unwrap_or(Duration::ZERO);
    corrected_initial_age.saturating_add(resident_time)
}

/// The facts about one stored response that reuse decisions need, computed once when it is
/// stored (and again when a 304 refreshes it).
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) response_time: SystemTime,
    pub(crate) corrected_initial_age: Duration,
    pub(crate) lifetime: Duration,
    /// `no-cache` without field names: every reuse needs validation (§5.2.2.4).
    pub(crate) no_cache: bool,
    /// `no-cache="…"` field names: dropped when reused without validation.
    pub(crate) no_cache_fields: Vec<HeaderName>,
    /// Serving stale is forbidden (must-revalidate, proxy-revalidate, no-cache; §4.2.4).
    pub(crate) stale_forbidden: bool,
    /// `s-maxage` implies proxy-revalidate (§5.2.2.10): only explicit stale-* directives and
    /// nothing else may then allow stale.
    pub(crate) stale_implied_forbidden: bool,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
}

/// Defaults for origins that send no RFC 5861 directives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StaleDefaults {
    pub(crate) while_revalidate: Duration,
    pub(crate) if_error: Duration,
}

impl Policy {
    pub(crate) fn new(
        status: StatusCode,
        headers: &HeaderMap,
        eff: &Effective,
        request_time: SystemTime,
        response_time: SystemTime,
        heuristics: Heuristics,
        defaults: StaleDefaults,
    ) -> Policy {
        // RFC 9110 §6.6.1: a missing or invalid Date is replaced by the time of receipt.
        let date = date_field(headers, &header::DATE).unwrap_or(response_time);
        let age = Duration::from_secs(age_value(headers).unwrap_or(0));
        let (lifetime, _heuristic) = freshness_lifetime(eff, headers, status, date, heuristics);
        let cc = &eff.cc;
        let (no_cache, no_cache_fields) = match &cc.no_cache {
            Some(FieldScope::All) => (true, Vec::new()),
            Some(FieldScope::Fields(f)) => (false, f.clone()),
            None => (false, Vec::new()),
        };
        let stale_forbidden = cc.must_revalidate || cc.proxy_revalidate || no_cache;
        let stale_implied_forbidden = cc.s_maxage.is_some();
        let window = |explicit: Option<u64>, default: Duration| {
            if stale_forbidden {
                Duration::ZERO
            } else {
                match explicit {
                    Some(s) => Duration::from_secs(s),
                    None if stale_implied_forbidden => Duration::ZERO,
                    None => default,
                }
            }
        };
        Policy {
            response_time,
            corrected_initial_age: corrected_initial_age(date, age, request_time, response_time),
            lifetime,
            no_cache,
            no_cache_fields,
            stale_forbidden,
            stale_implied_forbidden,
            stale_while_revalidate: window(cc.stale_while_revalidate, defaults.while_revalidate),
            stale_if_error: window(cc.stale_if_error, defaults.if_error),
        }
    }

    pub(crate) fn current_age(&self, now: SystemTime) -> Duration {
        current_age(self.corrected_initial_age, self.response_time, now)
    }

    /// Remaining freshness in whole seconds, negative when stale (`Cache-Status: ttl`): the
    /// lifetime minus the age, both at the one-second resolution of HTTP.
    pub(crate) fn ttl(&self, now: SystemTime) -> i64 {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        secs(self.lifetime).saturating_sub(secs(self.current_age(now)))
    }

    /// Whether the stored response is worth keeping at all: it can be reused fresh, validated, or
    /// served stale under some window.
    pub(crate) fn reusable(&self, has_validator: bool) -> bool {
        !self.lifetime.is_zero()
            || has_validator
            || !self.stale_while_revalidate.is_zero()
            || !self.stale_if_error.is_zero()
    }
}

/// The request directives that bear on reuse (RFC 9111 §5.2.1, RFC 5861).
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestDirectives {
    pub(crate) no_cache: bool,
    pub(crate) no_store: bool,
    pub(crate) only_if_cached: bool,
    pub(crate) max_age: Option<u64>,
    pub(crate) min_fresh: Option<u64>,
    pub(crate) max_stale: Option<Option<u64>>,
    pub(crate) stale_if_error: Option<u64>,
}

impl RequestDirectives {
    pub(crate) fn from_headers(headers: &HeaderMap, honour: bool, pragma: bool) -> Self {
        if !honour {
            return Self::default();
        }
        let has_cc = headers.contains_key(header::CACHE_CONTROL);
        let cc = CacheControl::parse(headers.get_all(header::CACHE_CONTROL));
        // §5.4: Pragma only speaks when Cache-Control is absent.
        let pragma_nc = pragma && !has_cc && pragma_no_cache(headers.get_all(header::PRAGMA));
        Self {
            no_cache: cc.no_cache.is_some() || pragma_nc,
            no_store: cc.no_store,
            only_if_cached: cc.only_if_cached,
            max_age: cc.max_age,
            min_fresh: cc.min_fresh,
            max_stale: cc.max_stale,
            stale_if_error: cc.stale_if_error,
        }
    }
}

/// Why a stored response cannot be reused without going forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Validate {
    /// It is stale and nothing allows serving it stale.
    Stale,
    /// It carries `no-cache`.
    ResponseNoCache,
    /// The request's directives (`no-cache`, `max-age`, `min-fresh`) rule it out.
    Request,
}

/// The verdict on one stored response for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Assessment {
    Fresh,
    /// Stale, but the request's `max-stale` accepts it.
    StaleAllowed,
    /// Stale within `stale-while-revalidate`: serve it and refresh in the background.
    StaleWhileRevalidate,
    MustValidate(Validate),
}

/// RFC 9111 §4 and §4.2.4: may this stored response answer this request now?
pub(crate) fn assess(p: &Policy, req: &RequestDirectives, now: SystemTime) -> Assessment {
    if p.no_cache {
        return Assessment::MustValidate(Validate::ResponseNoCache);
    }
    if req.no_cache {
        return Assessment::MustValidate(Validate::Request);
    }
    let age = p.current_age(now);
    // Request limits compare whole seconds, the resolution of `Age`: `max-age=0` accepts a
    // response received this second (such as one fetched for a concurrent request).
    if let Some(max_age) = req.max_age
        && age.as_secs() > max_age
    {
        return Assessment::MustValidate(Validate::Request);
    }
    if p.lifetime > age {
        if let Some(min_fresh) = req.min_fresh
            && (p.lifetime - age).as_secs() < min_fresh
        {
            return Assessment::MustValidate(Validate::Request);
        }
        return Assessment::Fresh;
    }
    if req.min_fresh.is_some() {
        return Assessment::MustValidate(Validate::Request);
    }
    let staleness = age - p.lifetime;
    if !p.stale_forbidden
        && !p.stale_implied_forbidden
        && let Some(max_stale) = req.max_stale
        && max_stale.is_none_or(|s| staleness <= Duration::from_secs(s))
    {
        return Assessment::StaleAllowed;
    }
    if !p.stale_while_revalidate.is_zero() && staleness <= p.stale_while_revalidate {
        return Assessment::StaleWhileRevalidate;
    }
    Assessment::MustValidate(Validate::Stale)
}

/// RFC 5861 §4: may this stored response be served because the origin failed?
pub(crate) fn stale_if_error_allowed(p: &Policy, req: &RequestDirectives, now: SystemTime) -> bool {
    if p.no_cache || p.stale_forbidden {
        return false;
    }
    let age = p.current_age(now);
    if p.lifetime > age {
        // Still fresh (validation was asked for by the request): the copy is as good as any.
        return true;
    }
    let staleness = age - p.lifetime;
    let mut window = p.stale_if_error;
    if !p.stale_implied_forbidden
        && let Some(s) = req.stale_if_error
    {
        window = window.max(Duration::from_secs(s));
    }
    !window.is_zero() && staleness <= window
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    const H: Heuristics = Heuristics {
        enabled: true,
        fraction: 0.1,
        max: Duration::from_secs(86_400),
    };
    const NO_DEFAULTS: StaleDefaults = StaleDefaults {
        while_revalidate: Duration::ZERO,
        if_error: Duration::ZERO,
    };

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn headers(pairs: &[(&str, String)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    fn date(secs: u64) -> String {
        crate::date::fmt_http_date(t(secs))
    }

    fn policy(pairs: &[(&str, String)], status: u16, at: u64) -> Policy {
        let h = headers(pairs);
        let eff = effective(
            &h,
            &[HeaderName::from_static("cdn-cache-control")],
            "ravelin",
        );
        Policy::new(
            StatusCode::from_u16(status).unwrap(),
            &h,
            &eff,
            t(at),
            t(at),
            H,
            NO_DEFAULTS,
        )
    }

    fn store_ok(pairs: &[(&str, String)], status: u16, auth: bool) -> Result<(), NotStored> {
        let h = headers(pairs);
        let eff = effective(
            &h,
            &[HeaderName::from_static("cdn-cache-control")],
            "ravelin",
        );
        storable(
            StatusCode::from_u16(status).unwrap(),
            &eff,
            &h,
            &crate::headers::vary(&h),
            auth,
            SetCookie::default(),
        )
    }

    #[test]
    fn rfc9111_4_2_1_s_maxage_beats_max_age_beats_expires() {
        let p = policy(
            &[("cache-control", "max-age=3600, s-maxage=1".into())],
            200,
            0,
        );
        assert_eq!(p.lifetime, Duration::from_secs(1));
        let p = policy(
            &[
                ("cache-control", "max-age=3600".into()),
                ("expires", date(10)),
                ("date", date(0)),
            ],
            200,
            0,
        );
        assert_eq!(p.lifetime, Duration::from_secs(3600));
        let p = policy(&[("expires", date(100)), ("date", date(40))], 200, 40);
        assert_eq!(p.lifetime, Duration::from_secs(60));
    }

    #[test]
    fn rfc9111_5_3_invalid_or_past_expires_is_stale() {
        let p = policy(&[("expires", "0".into()), ("date", date(0))], 200, 0);
        assert_eq!(p.lifetime, Duration::ZERO);
        let p = policy(&[("expires", date(300)), ("date", date(400))], 200, 400);
        assert_eq!(p.lifetime, Duration::ZERO);
        // An invalid Date is replaced by the time of receipt (RFC 9110 §6.6.1).
        let p = policy(&[("expires", date(10)), ("date", "foo".into())], 200, 0);
        assert_eq!(p.lifetime, Duration::from_secs(10));
    }

    #[test]
    fn rfc9111_4_2_2_heuristic_is_a_tenth_of_last_modified_age_capped() {
        let p = policy(
            &[("last-modified", date(0)), ("date", date(10_000))],
            200,
            10_000,
        );
        assert_eq!(p.lifetime, Duration::from_secs(1_000));
        let p = policy(
            &[("last-modified", date(0)), ("date", date(100_000_000))],
            200,
            100_000_000,
        );
        assert_eq!(p.lifetime, Duration::from_secs(86_400));
        // Not for status codes that are not heuristically cacheable, unless public.
        let p = policy(
            &[("last-modified", date(0)), ("date", date(10_000))],
            503,
            10_000,
        );
        assert_eq!(p.lifetime, Duration::ZERO);
        let p = policy(
            &[
                ("last-modified", date(0)),
                ("date", date(10_000)),
                ("cache-control", "public".into()),
            ],
            599,
            10_000,
        );
        assert_eq!(p.lifetime, Duration::from_secs(1_000));
        // Never when there is explicit freshness.
        let p = policy(
            &[
                ("last-modified", date(0)),
                ("date", date(10_000)),
                ("cache-control", "max-age=0".into()),
            ],
            200,
            10_000,
        );
        assert_eq!(p.lifetime, Duration::ZERO);
    }

    #[test]
    fn rfc9111_4_2_3_received_age_counts() {
        let p = policy(
            &[
                ("cache-control", "max-age=10".into()),
                ("age", "15".into()),
                ("date", date(0)),
            ],
            200,
            0,
        );
        assert_eq!(
            assess(&p, &RequestDirectives::default(), t(0)),
            Assessment::MustValidate(Validate::Stale)
        );
        assert_eq!(p.ttl(t(0)), -5);
    }

    #[test]
    fn rfc9111_3_storability() {
        assert_eq!(
            store_ok(&[("cache-control", "no-store".into())], 200, false),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            store_ok(
                &[("cache-control", "private, max-age=60".into())],
                200,
                false
            ),
            Err(NotStored::Private)
        );
        assert_eq!(
            store_ok(
                &[("cache-control", "private=\"x\", max-age=60".into())],
                200,
                false
            ),
            Ok(())
        );
        assert_eq!(store_ok(&[], 201, false), Err(NotStored::NotCacheable));
        assert_eq!(store_ok(&[], 200, false), Ok(()));
        assert_eq!(
            store_ok(&[("cache-control", "max-age=60".into())], 500, false),
            Ok(())
        );
        assert_eq!(
            store_ok(&[("cache-control", "max-age=60".into())], 206, false),
            Err(NotStored::Status)
        );
        assert_eq!(
            store_ok(&[("vary", "*".into())], 200, false),
            Err(NotStored::VaryStar)
        );
    }

    #[test]
    fn rfc9111_3_5_authorization_needs_explicit_permission() {
        assert_eq!(
            store_ok(&[("expires", date(100))], 200, true),
            Err(NotStored::Authorization)
        );
        for ok in [
            "public, max-age=60",
            "s-maxage=60",
            "max-age=60, must-revalidate",
        ] {
            assert_eq!(
                store_ok(&[("cache-control", ok.into())], 200, true),
                Ok(()),
                "{ok}"
            );
        }
    }

    #[test]
    fn rfc9111_5_2_2_3_must_understand_overrides_no_store_for_known_statuses() {
        let cc = (
            "cache-control",
            "must-understand, no-store, max-age=60".to_string(),
        );
        assert_eq!(store_ok(std::slice::from_ref(&cc), 200, false), Ok(()));
        assert_eq!(store_ok(&[cc], 299, false), Err(NotStored::MustUnderstand));
    }

    #[test]
    fn rfc9213_2_2_targeted_field_replaces_cache_control_and_expires() {
        let both = [
            ("cache-control", "no-store".to_string()),
            ("cdn-cache-control", "max-age=10000".to_string()),
        ];
        assert_eq!(store_ok(&both, 200, false), Ok(()));
        let p = policy(&both, 200, 0);
        assert_eq!(p.lifetime, Duration::from_secs(10_000));
        let p = policy(
            &[
                ("cdn-cache-control", "max-age=0".into()),
                ("expires", date(10_000)),
                ("date", date(0)),
            ],
            200,
            0,
        );
        assert_eq!(p.lifetime, Duration::ZERO);
        assert_eq!(
            store_ok(
                &[
                    ("cdn-cache-control", "private".into()),
                    ("cache-control", "max-age=10".into())
                ],
                200,
                false
            ),
            Err(NotStored::Private)
        );
        // An invalid targeted field falls back to Cache-Control.
        assert_eq!(
            store_ok(
                &[
                    ("cdn-cache-control", "max-age=\"1\"".into()),
                    ("cache-control", "no-store".into())
                ],
                200,
                false
            ),
            Err(NotStored::NoStore)
        );
    }

    #[test]
    fn rfc9111_4_2_4_directives_that_forbid_stale() {
        for cc in [
            "max-age=1, must-revalidate",
            "max-age=1, proxy-revalidate",
            "max-age=1, no-cache",
        ] {
            let p = policy(
                &[(
                    "cache-control",
                    format!("{cc}, stale-if-error=60, stale-while-revalidate=60"),
                )],
                200,
                0,
            );
            assert!(
                !stale_if_error_allowed(&p, &RequestDirectives::default(), t(5)),
                "{cc}"
            );
            let any_stale = RequestDirectives {
                max_stale: Some(None),
                ..Default::default()
            };
            assert!(
                matches!(assess(&p, &any_stale, t(5)), Assessment::MustValidate(_)),
                "{cc}"
            );
        }
        // s-maxage implies proxy-revalidate: no stale without explicit permission.
        let p = policy(&[("cache-control", "s-maxage=1".into())], 200, 0);
        let any_stale = RequestDirectives {
            max_stale: Some(None),
            ..Default::default()
        };
        assert_eq!(
            assess(&p, &any_stale, t(5)),
            Assessment::MustValidate(Validate::Stale)
        );
    }

    #[test]
    fn rfc5861_windows() {
        let p = policy(
            &[(
                "cache-control",
                "max-age=10, stale-while-revalidate=20, stale-if-error=100".into(),
            )],
            200,
            0,
        );
        let r = RequestDirectives::default();
        assert_eq!(assess(&p, &r, t(5)), Assessment::Fresh);
        assert_eq!(assess(&p, &r, t(25)), Assessment::StaleWhileRevalidate);
        assert_eq!(
            assess(&p, &r, t(31)),
            Assessment::MustValidate(Validate::Stale)
        );
        assert!(stale_if_error_allowed(&p, &r, t(110)));
        assert!(!stale_if_error_allowed(&p, &r, t(111)));
        let req = RequestDirectives {
            stale_if_error: Some(1000),
            ..Default::default()
        };
        assert!(stale_if_error_allowed(&p, &req, t(1000)));
    }

    #[test]
    fn rfc9111_5_2_1_request_directives() {
        let p = policy(
            &[
                ("cache-control", "max-age=100".into()),
                ("age", "30".into()),
            ],
            200,
            0,
        );
        let d = |f: fn(&mut RequestDirectives)| {
            let mut r = RequestDirectives::default();
            f(&mut r);
            assess(&p, &r, t(0))
        };
        assert_eq!(
            d(|r| r.max_age = Some(0)),
            Assessment::MustValidate(Validate::Request)
        );
        assert_eq!(d(|r| r.max_age = Some(60)), Assessment::Fresh);
        assert_eq!(
            d(|r| r.min_fresh = Some(80)),
            Assessment::MustValidate(Validate::Request)
        );
        assert_eq!(d(|r| r.min_fresh = Some(60)), Assessment::Fresh);
        assert_eq!(
            d(|r| r.no_cache = true),
            Assessment::MustValidate(Validate::Request)
        );
        let stale = policy(&[("cache-control", "max-age=1".into())], 200, 0);
        let ms = |s| RequestDirectives {
            max_stale: Some(s),
            ..Default::default()
        };
        assert_eq!(
            assess(&stale, &ms(Some(1000)), t(100)),
            Assessment::StaleAllowed
        );
        assert_eq!(
            assess(&stale, &ms(Some(10)), t(100)),
            Assessment::MustValidate(Validate::Stale)
        );
        assert_eq!(
            assess(&stale, &ms(None), t(100_000)),
            Assessment::StaleAllowed
        );
    }

    #[test]
    fn rfc9111_5_4_pragma_only_without_cache_control() {
        let h = headers(&[("pragma", "no-cache".into())]);
        assert!(RequestDirectives::from_headers(&h, true, true).no_cache);
        assert!(!RequestDirectives::from_headers(&h, true, false).no_cache);
        let h = headers(&[
            ("pragma", "no-cache".into()),
            ("cache-control", "max-age=5".into()),
        ]);
        assert!(!RequestDirectives::from_headers(&h, true, true).no_cache);
    }

    /// RFC 9111 §4.2.3 written out with signed integer seconds, as in the RFC.
    fn reference_current_age(date: i64, age: i64, req: i64, resp: i64, now: i64) -> i64 {
        let apparent_age = 0.max(resp - date);
        let response_delay = resp - req;
        let corrected_age_value = age + response_delay;
        let corrected_initial_age = apparent_age.max(corrected_age_value);
        let resident_time = now - resp;
        corrected_initial_age + resident_time
    }

    proptest! {
        #[test]
        fn age_matches_rfc_formula(
            date in 0i64..100_000,
            age in 0i64..100_000,
            req in 0i64..100_000,
            delay in 0i64..1_000,
            resident in 0i64..100_000,
        ) {
            let resp = req + delay;
            let now = resp + resident;
            let s = |x: i64| t(x as u64);
            let cia = corrected_initial_age(s(date), Duration::from_secs(age as u64), s(req), s(resp));
            let got = current_age(cia, s(resp), s(now));
            prop_assert_eq!(got.as_secs() as i64, reference_current_age(date, age, req, resp, now));
        }

        #[test]
        fn freshness_matches_rfc_formula(
            max_age in proptest::option::of(0u64..10_000),
            s_maxage in proptest::option::of(0u64..10_000),
            expires in proptest::option::of(0u64..20_000),
            date in 0u64..10_000,
            age in 0u64..5_000,
            elapsed in 0u64..20_000,
        ) {
            let mut pairs = vec![("date", crate::date::fmt_http_date(t(date))), ("age", age.to_string())];
            let mut cc = Vec::new();
            if let Some(m) = max_age { cc.push(format!("max-age={m}")); }
            if let Some(s) = s_maxage { cc.push(format!("s-maxage={s}")); }
            if !cc.is_empty() { pairs.push(("cache-control", cc.join(", "))); }
            if let Some(e) = expires { pairs.push(("expires", crate::date::fmt_http_date(t(e)))); }
            let p = policy(&pairs, 200, date);
            // Reference: lifetime per §4.2.1, age per §4.2.3 (received at `date`, no delay).
            let lifetime = s_maxage.or(max_age).or(expires.map(|e| e.saturating_sub(date))).unwrap_or(0);
            let current = age + elapsed;
            let fresh = lifetime > current;
            let got = assess(&p, &RequestDirectives::default(), t(date + elapsed));
            prop_assert_eq!(got == Assessment::Fresh, fresh);
            prop_assert_eq!(p.ttl(t(date + elapsed)), lifetime as i64 - current as i64);
        }
    }

    #[test]
    fn set_cookie_needs_an_explicit_shared_opt_in() {
        let with = |cc: &str, targeted: Option<&str>| {
            let mut pairs = vec![("set-cookie", "s=1".to_string())];
            if !cc.is_empty() {
                pairs.push(("cache-control", cc.to_string()));
            }
            if let Some(t) = targeted {
                pairs.push(("cdn-cache-control", t.to_string()));
            }
            let h = headers(&pairs);
            let eff = effective(
                &h,
                &[HeaderName::from_static("cdn-cache-control")],
                "ravelin",
            );
            let vary = crate::headers::vary(&h);
            [SetCookie::Explicit, SetCookie::Never, SetCookie::Replay]
                .map(|mode| storable(StatusCode::OK, &eff, &h, &vary, false, mode))
        };
        let refused = Err(NotStored::SetCookie);
        for (cc, targeted) in [
            ("max-age=60", None),
            ("max-age=60, must-revalidate", None),
            ("", None),
            ("max-age=60, no-cache=\"set-cookie\"", None),
        ] {
            assert_eq!(with(cc, targeted), [refused, refused, Ok(())], "{cc}");
        }
        for (cc, targeted) in [
            ("public, max-age=60", None),
            ("s-maxage=60", None),
            ("max-age=60, private=\"set-cookie\"", None),
            ("max-age=60", Some("max-age=60")),
            ("", Some("s-maxage=60")),
        ] {
            assert_eq!(
                with(cc, targeted),
                [Ok(()), refused, Ok(())],
                "{cc} {targeted:?}"
            );
        }
        // The other rules come first: their reason is the one reported.
        assert_eq!(
            with("private, max-age=60", None),
            [Err(NotStored::Private); 3]
        );
        assert_eq!(with("", Some("no-store")), [Err(NotStored::NoStore); 3]);
    }
}
