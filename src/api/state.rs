//! What the server knows, as plain data: the secrets it serves (with their
//! cached values and TTLs), revocations and tokens. Pure: time comes in as a
//! [`Now`]. Values are [`SecretBytes`]; dropping one (expiry, revocation,
//! reload) wipes it.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::revocations::RevocationList;
use super::tokens::TokenStore;
use super::{vendor_of, ServedSecret};
use crate::audit::rfc3339;
use crate::config::{Approval, Environment};
use crate::duration::Seconds;
use crate::secret::{SecretBytes, SecretRef};

/// The time, on both clocks: monotonic for TTLs, wall for what is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// For expiry.
    pub mono: Instant,
    /// For `expires_at`, `resolved_at` and Slack timestamps.
    pub wall: SystemTime,
}

impl Now {
    /// The current time.
    pub fn system() -> Self {
        Now {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// `d` later.
    pub fn plus(self, d: Duration) -> Self {
        Now {
            mono: self.mono + d,
            wall: self.wall + d,
        }
    }

    /// Wall-clock time of the monotonic instant `at`.
    pub fn wall_of(&self, at: Instant) -> SystemTime {
        match at.checked_duration_since(self.mono) {
            Some(ahead) => self.wall + ahead,
            None => self.wall - self.mono.duration_since(at),
        }
    }

    /// Seconds since the epoch (wall).
    pub fn unix(&self) -> i64 {
        self.wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// Settings that do not change while serving.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The environment.
    pub env: Environment,
    /// The policy's TTL ceiling for the env.
    pub max_ttl_seconds: Option<u64>,
    /// The registry id of the Slack signing secret.
    pub slack_secret_id: Option<String>,
}

/// The served secrets, in one list sorted by id; an id is found by a
/// binary search.
///
/// A map built from 50,000 secrets held four copies of them at once while
/// it was made (the entries, the sorted pairs, a stable sort's scratch,
/// the tree), about 30 MB, and that was the run's peak whenever it met the
/// matcher's build. The list
/// is made where the served secrets were (see [`Secrets::from_entries`]).
#[derive(Debug, Default)]
pub struct Secrets {
    by_id: Vec<Entry>,
}

impl Secrets {
    /// The entries sorted by id; of equal ids, the last given is kept (and
    /// the others dropped, their values wiped). Sorts 4-byte indices
    /// rather than the entries: a stable sort of the entries would take a
    /// scratch copy of up to 8 MB.
    fn from_entries(mut entries: Vec<Entry>) -> Secrets {
        let mut order: Vec<u32> =
            (0..u32::try_from(entries.len()).expect("fewer than 2^32 secrets")).collect();
        order.sort_by(|&a, &b| entries[a as usize].id.cmp(&entries[b as usize].id));
        permute(&mut entries, order);
        entries.dedup_by(|later, kept| {
            let same = later.id == kept.id;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
        entries.shrink_to_fit();
        Secrets { by_id: entries }
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.by_id.binary_search_by(|e| (*e.id).cmp(id)).ok()
    }

    /// The entry of `id`.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.position(id).map(|i| &self.by_id[i])
    }

    /// The entry of `id`, to change.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        self.position(id).map(|i| &mut self.by_id[i])
    }

    /// Whether `id` is served.
    pub fn contains_key(&self, id: &str) -> bool {
        self.position(id).is_some()
    }

    /// How many secrets.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The entries, by id.
    pub fn values(&self) -> std::slice::Iter<'_, Entry> {
        self.by_id.iter()
    }

    /// The entries, by id, to change.
    pub fn values_mut(&mut self) -> std::slice::IterMut<'_, Entry> {
        self.by_id.iter_mut()
    }

    /// The ids, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.by_id.iter().map(|e| &*e.id)
    }
}

impl std::ops::Index<&str> for Secrets {
    type Output = Entry;

    /// The entry of `id`; panics when there is none.
    fn index(&self, id: &str) -> &Entry {
        self.get(id).expect("a served id")
    }
}

/// Puts `items[order[k]]` at `k`, for every `k`, by swaps along the
/// permutation's cycles (no second list). `order` is a permutation of
/// `0..items.len()`.
fn permute<T>(items: &mut [T], mut order: Vec<u32>) {
    const DONE: u32 = u32::MAX;
    for start in 0..order.len() {
        let mut k = start;
        // Position `k` holds the item that was at `start`, until the cycle
        // closes where it belongs.
        while order[k] != DONE {
            let from = order[k] as usize;
            order[k] = DONE;
            if from == start {
                break;
            }
            items.swap(k, from);
            k = from;
        }
    }
}

/// One served secret.
///
/// There is one per secret (50,000 in the largest registries measured), so
/// the fields are kept small: boxed slices and strings, and the TTL, the
/// lease and the dates in whole seconds (see [`Seconds`], [`Dates`]).
#[derive(Debug)]
pub struct Entry {
    /// Id (shared with the run's plan).
    pub id: std::sync::Arc<str>,
    /// Ref.
    pub reference: SecretRef,
    /// Scope labels.
    pub scope: Box<[String]>,
    /// Injected as.
    pub env_var: Option<Box<str>>,
    value: Option<SecretBytes>,
    resolved: Option<Instant>,
    /// The reason, when revoked (a thin box: 8 bytes, and most entries are
    /// never revoked).
    pub revoked: Option<Box<String>>,
    /// The JSON of the reply's `scope` and `expires_at` for the cached
    /// value's expiry, made once per value rather than per call (boxed:
    /// most entries are never read, and an entry is 32 bytes smaller).
    fragments: Option<Box<Fragment>>,
    /// Creation and rotation dates.
    dates: Dates,
    /// TTL of a cached value.
    ttl: Seconds,
    /// The lease of the cached value, from its backend.
    lease: Seconds,
    /// Approval.
    pub approval: Approval,
    /// Served only through the credential proxy.
    pub proxied: bool,
}

/// [`super::SecretDates`] in 24 bytes instead of 48: `i64::MIN` stands
/// for an unknown date (no file or store gives it), and
/// `rotate_every_days` is positive (the registry takes nothing else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dates {
    created: i64,
    rotated: i64,
    rotate_every_days: Option<std::num::NonZeroU64>,
}

impl From<super::SecretDates> for Dates {
    fn from(d: super::SecretDates) -> Dates {
        Dates {
            created: d.created.unwrap_or(i64::MIN),
            rotated: d.rotated.unwrap_or(i64::MIN),
            rotate_every_days: d.rotate_every_days.and_then(std::num::NonZeroU64::new),
        }
    }
}

impl From<Dates> for super::SecretDates {
    fn from(d: Dates) -> super::SecretDates {
        let known = |t: i64| (t != i64::MIN).then_some(t);
        super::SecretDates {
            created: known(d.created),
            rotated: known(d.rotated),
            rotate_every_days: d.rotate_every_days.map(std::num::NonZeroU64::get),
        }
    }
}

/// A reply's JSON for one expiry of the cached value.
type Fragment = (Option<Instant>, std::sync::Arc<str>);

impl Entry {
    /// TTL of a cached value: min(entry, policy for the env).
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl.get()
    }

    /// Creation and rotation dates.
    pub fn dates(&self) -> super::SecretDates {
        self.dates.into()
    }

    /// `"scope":[..],"expires_at":..` of a reply serving the cached value
    /// (the same for every call until the value expires).
    pub fn reply_fragment(&mut self, now: Now) -> std::sync::Arc<str> {
        let expiry = self.expiry();
        match self.fragments.as_deref() {
            Some((at, text)) if *at == expiry => text.clone(),
            _ => {
                let text: std::sync::Arc<str> = format!(
                    "\"scope\":{},\"expires_at\":{}",
                    super::json::fragment(&self.scope),
                    super::json::fragment(&self.expires_at(now))
                )
                .into();
                self.fragments = Some(Box::new((expiry, text.clone())));
                text
            }
        }
    }

    /// When the cached value expires (monotonic); `None`: never, also when
    /// the TTL reaches past what the clock can count.
    fn expiry(&self) -> Option<Instant> {
        self.resolved?.checked_add(self.effective_ttl()?)
    }

    /// The TTL of the cached value: the smaller of the TTL and its lease.
    pub fn effective_ttl(&self) -> Option<Duration> {
        match (self.ttl.get(), self.lease.get()) {
            (Some(t), Some(l)) => Some(t.min(l)),
            (t, l) => t.or(l),
        }
    }

    /// Whether a value is cached and still within its TTL.
    pub fn is_fresh(&self, now: Now) -> bool {
        self.value.is_some() && self.expiry().is_none_or(|e| e > now.mono)
    }

    /// The cached value if fresh; an expired one is wiped first.
    pub fn fresh_value(&mut self, now: Now) -> Option<&SecretBytes> {
        if !self.is_fresh(now) {
            self.value = None;
            return None;
        }
        self.value.as_ref()
    }

    /// The cached value if fresh (an expired one is left for the sweep).
    pub fn fresh_value_ref(&self, now: Now) -> Option<&SecretBytes> {
        self.value.as_ref().filter(|_| self.is_fresh(now))
    }

    /// When the served value expires, as RFC 3339 (`None`: never).
    pub fn expires_at(&self, now: Now) -> Option<String> {
        self.expiry().map(|e| rfc3339(now.wall_of(e)))
    }

    /// Whether a value is cached (for the inventory).
    pub fn is_cached(&self) -> bool {
        self.value.is_some()
    }
}

/// The inventory row of one secret (SL8 metadata; never a value).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InventoryItem {
    /// Id.
    pub id: String,
    /// Ref.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The id's prefix before `_`.
    pub vendor: String,
    /// Scope labels.
    pub scope: Vec<String>,
    /// The environment.
    pub env: String,
    /// TTL of a served value.
    pub ttl_seconds: Option<u64>,
    /// When the cached value was resolved.
    pub resolved_at: Option<String>,
    /// When it expires.
    pub expires_at: Option<String>,
    /// `none` or `required`.
    pub approval: &'static str,
    /// The variable it is injected as.
    pub env_var: Option<String>,
    /// Whether a value is in memory.
    pub cached: bool,
    /// Revocation reason, when revoked.
    pub revoked: Option<String>,
    /// When it was first stored (RFC 3339), where the backend knows
    /// (`null` otherwise).
    pub created: Option<String>,
    /// When its value last changed (RFC 3339), where the backend knows
    /// (`null` otherwise).
    pub rotated: Option<String>,
    /// The policy that applies to it.
    pub policy: InventoryPolicy,
}

/// The rules a secret is served under (inventory).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InventoryPolicy {
    /// `none` or `required`.
    pub approval: &'static str,
    /// TTL of a served value: min(entry, policy for the env); `null`: none.
    pub max_ttl_seconds: Option<u64>,
    /// How often it should be rotated (registry `rotate_every_days`).
    pub rotate_every_days: Option<u64>,
    /// When the next rotation is due (RFC 3339), when the last rotation
    /// date and the period are known.
    pub rotation_due: Option<String>,
    /// Whether that date has passed.
    pub rotation_overdue: bool,
}

/// Everything the routes read and change.
#[derive(Debug)]
pub struct State {
    /// Secrets by id.
    pub secrets: Secrets,
    /// Live tokens.
    pub tokens: TokenStore,
    /// Fixed settings.
    pub settings: Settings,
    /// Human-in-the-loop challenges; `None` until a key is set, and then
    /// approval-required secrets are refused.
    pub approvals: Option<super::approvals::Approvals>,
    /// Ids proxied when the run started: their routes serve until
    /// keywarden restarts, so the socket refuses them whatever a reload
    /// says, even after a reload that left them out.
    started_proxied: std::collections::BTreeSet<String>,
}

impl State {
    /// The state for `secrets`, as of `now`.
    pub fn new(settings: Settings, secrets: Vec<ServedSecret>, now: Now) -> Self {
        let started_proxied = secrets
            .iter()
            .filter(|s| s.proxied)
            .map(|s| s.id.to_string())
            .collect();
        let mut state = State {
            secrets: Secrets::default(),
            tokens: TokenStore::new(),
            settings,
            approvals: None,
            started_proxied,
        };
        state.replace(secrets, now);
        state
    }

    /// Whether `label` is a scope label of this run: of a secret, or of a
    /// live token.
    pub fn knows_label(&self, label: &str) -> bool {
        self.secrets
            .values()
            .any(|e| e.scope.iter().any(|s| s == label))
            || self.tokens.knows_scope(label)
    }

    /// Whether a value held now will expire: then the sweep that wipes it
    /// must run even when nobody asks for it.
    pub fn holds_expiring_values(&self) -> bool {
        self.secrets
            .values()
            .any(|e| e.value.is_some() && e.effective_ttl().is_some())
    }

    fn entry_of(&self, s: ServedSecret, now: Now) -> Entry {
        let ttl = match (s.ttl_seconds, self.settings.max_ttl_seconds) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let resolved = s.value.as_ref().map(|_| {
            let age = now.wall.duration_since(s.resolved_at).unwrap_or_default();
            now.mono.checked_sub(age).unwrap_or(now.mono)
        });
        Entry {
            id: s.id,
            reference: s.reference,
            scope: s.scope,
            ttl: Seconds::of_secs(ttl),
            lease: Seconds::of(s.lease.filter(|_| s.value.is_some())),
            approval: s.approval,
            env_var: s.env_var,
            value: s.value,
            resolved,
            revoked: None,
            dates: s.dates.into(),
            fragments: None,
            proxied: s.proxied,
        }
    }

    /// Serve `secrets` from now on (a reload). A revocation made in this
    /// run carries over while the id keeps its ref; a secret the run
    /// started proxied stays refused (its route serves on until keywarden
    /// restarts, and the child was never meant to hold the value).
    pub fn replace(&mut self, secrets: Vec<ServedSecret>, now: Now) {
        // Collected in the served secrets' own allocation.
        let entries: Vec<Entry> = secrets
            .into_iter()
            .map(|s| {
                let mut e = self.entry_of(s, now);
                if let Some(old) = self.secrets.get(&e.id) {
                    if old.reference == e.reference && old.revoked.is_some() {
                        e.revoked = old.revoked.clone();
                        e.value = None;
                    }
                }
                e.proxied |= self.started_proxied.contains(&*e.id);
                e
            })
            .collect();
        // A later secret of an id replaces an earlier one (and wipes its
        // value).
        self.secrets = Secrets::from_entries(entries);
        // A reload ends every challenge and approval.
        if let Some(a) = self.approvals.as_mut() {
            a.clear();
        }
    }

    /// Mark every secret whose (id, ref) is on `list` as revoked.
    pub fn apply_revocations(&mut self, list: &RevocationList) {
        for e in self.secrets.values_mut() {
            if let Some(r) = list.find(&e.id, e.reference.as_str()) {
                e.revoked = Some(Box::new(r.reason.as_deref().unwrap_or("revoked").into()));
                e.value = None;
            }
        }
    }

    /// Revoke `id`: wipe its value, refuse it from now on. Returns the entry.
    pub fn revoke(&mut self, id: &str, reason: &str) -> Option<&Entry> {
        if let Some(a) = self.approvals.as_mut() {
            a.forget_secret(id);
        }
        let e = self.secrets.get_mut(id)?;
        e.value = None;
        e.resolved = None;
        e.revoked = Some(Box::new(reason.into()));
        Some(e)
    }

    /// Whether `id` is servable but has no fresh value.
    pub fn needs_value(&self, id: &str, now: Now) -> bool {
        self.secrets
            .get(id)
            .is_some_and(|e| e.revoked.is_none() && !e.is_fresh(now))
    }

    /// Cache a value just resolved for `id` (ignored if revoked meanwhile).
    pub fn install(&mut self, id: &str, value: SecretBytes, now: Now) {
        self.install_leased(id, value, None, now);
    }

    /// Cache a value with the lease its backend gave it.
    pub fn install_leased(
        &mut self,
        id: &str,
        value: SecretBytes,
        lease: Option<Duration>,
        now: Now,
    ) {
        if let Some(e) = self.secrets.get_mut(id) {
            if e.revoked.is_none() {
                e.value = Some(value);
                e.resolved = Some(now.mono);
                e.lease = Seconds::of(lease);
            }
        }
    }

    /// Wipe expired values and forget expired tokens; returns the ids wiped.
    pub fn sweep(&mut self, now: Now) -> Vec<String> {
        self.tokens.prune(now.mono);
        let mut wiped = Vec::new();
        for e in self.secrets.values_mut() {
            if e.value.is_some() && !e.is_fresh(now) {
                e.value = None;
                wiped.push(e.id.to_string());
            }
        }
        wiped
    }

    /// The inventory, by id.
    pub fn inventory(&self, now: Now) -> Vec<InventoryItem> {
        self.secrets
            .values()
            .map(|e| (e, e.dates()))
            .map(|(e, dates)| InventoryItem {
                id: e.id.to_string(),
                reference: e.reference.to_string(),
                vendor: vendor_of(&e.id).to_string(),
                scope: e.scope.to_vec(),
                env: self.settings.env.as_str().to_string(),
                ttl_seconds: e.effective_ttl().map(|t| t.as_secs()),
                resolved_at: e
                    .resolved
                    .filter(|_| e.value.is_some())
                    .map(|r| rfc3339(now.wall_of(r))),
                expires_at: e.expires_at(now).filter(|_| e.value.is_some()),
                approval: match e.approval {
                    Approval::None => "none",
                    Approval::Required => "required",
                },
                env_var: e.env_var.as_deref().map(str::to_string),
                cached: e.is_fresh(now),
                revoked: e.revoked.as_deref().cloned(),
                created: dates.created.map(crate::timefmt::rfc3339_secs),
                rotated: dates.rotated.map(crate::timefmt::rfc3339_secs),
                policy: {
                    let due = dates
                        .rotated
                        .or(dates.created)
                        .zip(dates.rotate_every_days)
                        .map(|(at, days)| at.saturating_add((days as i64).saturating_mul(86_400)));
                    InventoryPolicy {
                        approval: match e.approval {
                            Approval::None => "none",
                            Approval::Required => "required",
                        },
                        max_ttl_seconds: e.ttl().map(|t| t.as_secs()),
                        rotate_every_days: dates.rotate_every_days,
                        rotation_due: due.map(crate::timefmt::rfc3339_secs),
                        rotation_overdue: due.is_some_and(|d| d <= now.unix()),
                    }
                },
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::revocations::Revocation;

    pub(crate) fn served(id: &str, scope: &[&str], ttl: Option<u64>, value: &str) -> ServedSecret {
        ServedSecret {
            id: id.into(),
            reference: SecretRef::parse(&format!("kv://{id}/dev")).expect("ref"),
            scope: scope.iter().map(|s| s.to_string()).collect(),
            ttl_seconds: ttl,
            approval: Approval::None,
            env_var: None,
            value: Some(SecretBytes::copy_from(value.as_bytes())),
            resolved_at: SystemTime::now(),
            dates: Default::default(),
            lease: None,
            proxied: false,
        }
    }

    pub(crate) fn settings(max: Option<u64>) -> Settings {
        Settings {
            env: Environment::Dev,
            max_ttl_seconds: max,
            slack_secret_id: None,
        }
    }

    /// The map is built from the entries sorted by id: every id once, in
    /// order, the later of two secrets of one id served (as inserting them
    /// one by one in the given order did).
    /// Every permutation of up to 5 items, and a few larger ones, put
    /// each item where the order says.
    #[test]
    fn permute_puts_each_item_where_the_order_says() {
        fn check(order: Vec<u32>) {
            let mut items: Vec<u32> = (100..100 + order.len() as u32).collect();
            let want: Vec<u32> = order.iter().map(|&i| items[i as usize]).collect();
            permute(&mut items, order.clone());
            assert_eq!(items, want, "{order:?}");
        }
        fn all(prefix: Vec<u32>, left: Vec<u32>) {
            if left.is_empty() {
                return check(prefix);
            }
            for (k, &x) in left.iter().enumerate() {
                let mut p = prefix.clone();
                p.push(x);
                let mut l = left.clone();
                l.remove(k);
                all(p, l);
            }
        }
        for n in 0..=5 {
            all(Vec::new(), (0..n).collect());
        }
        check((0..1000).rev().collect());
        check((0..1000).map(|i| (i * 7 + 3) % 1000).collect());
    }

    #[test]
    fn replace_serves_each_id_once_the_later_of_duplicates() {
        let now = Now::system();
        let ids = ["s10", "b", "s2", "a", "b", "s1", "a"];
        let secrets: Vec<ServedSecret> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| served(id, &[], None, &format!("value-{i}")))
            .collect();
        let mut st = State::new(settings(None), secrets, now);
        let got: Vec<(&str, &[u8])> = st
            .secrets
            .values()
            .map(|e| {
                let value = e.fresh_value_ref(now).map(SecretBytes::expose);
                (&*e.id, value.unwrap_or_default())
            })
            .collect();
        let want: Vec<(&str, &[u8])> = vec![
            ("a", b"value-6"),
            ("b", b"value-4"),
            ("s1", b"value-5"),
            ("s10", b"value-0"),
            ("s2", b"value-2"),
        ];
        assert_eq!(got, want);
        let many: Vec<ServedSecret> = (0..1000)
            .rev()
            .map(|i| served(&format!("k{i}"), &[], None, "v"))
            .collect();
        st.replace(many, now);
        assert_eq!(st.secrets.len(), 1000);
        assert!(st
            .secrets
            .keys()
            .zip(st.secrets.keys().skip(1))
            .all(|(a, b)| a < b));
    }

    #[test]
    fn expiring_values_are_noticed_for_the_sweep() {
        let now = Now::system();
        let forever = State::new(
            settings(None),
            vec![served("a", &["pool"], None, "va")],
            now,
        );
        assert!(!forever.holds_expiring_values());
        let by_entry = State::new(
            settings(None),
            vec![
                served("a", &["pool"], None, "va"),
                served("b", &["pool"], Some(30), "vb"),
            ],
            now,
        );
        assert!(by_entry.holds_expiring_values());
        let by_policy = State::new(
            settings(Some(60)),
            vec![served("a", &["pool"], None, "va")],
            now,
        );
        assert!(by_policy.holds_expiring_values());
        let mut unresolved = served("a", &["pool"], Some(30), "va");
        unresolved.value = None;
        assert!(!State::new(settings(None), vec![unresolved], now).holds_expiring_values());
    }

    #[test]
    fn ttl_is_the_smaller_of_entry_and_policy_and_expiry_wipes() {
        let now = Now::system();
        let mut st = State::new(
            settings(Some(60)),
            vec![
                served("a", &["pool"], Some(10), "va"),
                served("b", &["pool"], None, "vb"),
                served("c", &["pool"], Some(600), "vc"),
            ],
            now,
        );
        assert_eq!(st.secrets["a"].ttl(), Some(Duration::from_secs(10)));
        assert_eq!(st.secrets["b"].ttl(), Some(Duration::from_secs(60)));
        assert_eq!(st.secrets["c"].ttl(), Some(Duration::from_secs(60)));
        let later = now.plus(Duration::from_secs(10));
        assert!(st.needs_value("a", later));
        assert!(!st.needs_value("b", later));
        assert_eq!(st.sweep(later), vec!["a".to_string()]);
        assert!(!st.secrets["a"].is_cached());
        st.install("a", SecretBytes::copy_from(b"va2"), later);
        assert!(!st.needs_value("a", later));
        let e = st.secrets.get_mut("a").expect("a");
        assert_eq!(e.fresh_value(later).map(|v| v.expose()), Some(&b"va2"[..]));
        assert!(e.fresh_value(later.plus(Duration::from_secs(10))).is_none());
        assert!(!e.is_cached());
    }

    #[test]
    fn values_resolved_earlier_age_from_then() {
        let now = Now::system();
        let mut s = served("a", &["pool"], Some(10), "va");
        s.resolved_at = now.wall - Duration::from_secs(9);
        let st = State::new(settings(None), vec![s], now);
        assert!(!st.needs_value("a", now));
        assert!(st.needs_value("a", now.plus(Duration::from_secs(1))));
    }

    #[test]
    fn revocation_wipes_and_survives_reload_until_the_ref_changes() {
        let now = Now::system();
        let mut st = State::new(
            settings(None),
            vec![served("a", &["pool"], None, "va")],
            now,
        );
        assert!(st.revoke("a", "leaked").is_some());
        assert!(st.revoke("zz", "x").is_none());
        assert!(!st.secrets["a"].is_cached());
        st.install("a", SecretBytes::copy_from(b"va"), now);
        assert!(
            !st.secrets["a"].is_cached(),
            "a revoked secret takes no value"
        );
        st.replace(vec![served("a", &["pool"], None, "va")], now);
        assert_eq!(
            st.secrets["a"].revoked.as_deref().map(String::as_str),
            Some("leaked")
        );
        let mut moved = served("a", &["pool"], None, "vb");
        moved.reference = SecretRef::parse("kv://a/dev-v2").expect("ref");
        st.replace(vec![moved], now);
        assert!(st.secrets["a"].revoked.is_none());

        let list = RevocationList {
            version: 1,
            revoked: vec![Revocation {
                id: "a".into(),
                reference: "kv://a/dev-v2".into(),
                reason: None,
                revoked_at: String::new(),
            }],
        };
        st.apply_revocations(&list);
        assert_eq!(
            st.secrets["a"].revoked.as_deref().map(String::as_str),
            Some("revoked")
        );
    }

    #[test]
    fn a_secret_started_proxied_stays_refused_after_a_reload() {
        let now = Now::system();
        let proxied = ServedSecret {
            proxied: true,
            ..served("p", &["pool"], None, "vp")
        };
        let mut st = State::new(
            settings(None),
            vec![proxied, served("s", &["pool"], None, "vs")],
            now,
        );
        // The registry drops `proxy:` from p and adds it to s.
        let mut now_proxied = served("s", &["pool"], None, "vs");
        now_proxied.proxied = true;
        st.replace(vec![served("p", &["pool"], None, "vp"), now_proxied], now);
        assert!(st.secrets["p"].proxied, "the running proxy still serves p");
        assert!(st.secrets["s"].proxied, "refused from now on");
        // A reload that leaves p out, then one that brings it back plain:
        // its route still serves, so the socket still refuses it.
        st.replace(vec![served("s", &["pool"], None, "vs")], now);
        assert!(!st.secrets.contains_key("p"));
        st.replace(vec![served("p", &["pool"], None, "vp")], now);
        assert!(st.secrets["p"].proxied, "refused after it came back");
    }

    #[test]
    fn inventory_has_metadata_and_no_values() {
        let now = Now::system();
        let value = format!("canary{}", std::process::id());
        let st = State::new(
            settings(Some(30)),
            vec![served("openai_org", &["llm:chat"], None, &value)],
            now,
        );
        let inv = st.inventory(now);
        assert_eq!(inv[0].vendor, "openai");
        assert_eq!(inv[0].ttl_seconds, Some(30));
        assert!(inv[0].cached && inv[0].resolved_at.is_some());
        let text = serde_json::to_string(&inv).expect("json");
        assert!(!text.contains(&value));
        assert_eq!(inv[0].policy.max_ttl_seconds, Some(30));
        assert_eq!(inv[0].policy.rotation_due, None);
    }

    #[test]
    fn inventory_policy_says_when_rotation_is_due() {
        let now = Now::system();
        let mut old = served("old", &["pool"], Some(60), "v-old");
        old.dates = crate::api::SecretDates {
            created: Some(now.unix() - 40 * 86_400),
            rotated: Some(now.unix() - 31 * 86_400),
            rotate_every_days: Some(30),
        };
        let mut fresh = served("fresh", &["pool"], None, "v-fresh");
        fresh.dates.rotated = Some(now.unix() - 86_400);
        fresh.dates.rotate_every_days = Some(30);
        fresh.approval = Approval::Required;
        let st = State::new(settings(None), vec![old, fresh], now);
        let inv = st.inventory(now);
        let (fresh, old) = (&inv[0].policy, &inv[1].policy);
        assert!(old.rotation_overdue);
        assert_eq!(
            old.rotation_due,
            Some(crate::timefmt::rfc3339_secs(now.unix() - 86_400))
        );
        assert_eq!((old.max_ttl_seconds, old.approval), (Some(60), "none"));
        assert!(!fresh.rotation_overdue);
        assert_eq!(fresh.approval, "required");
        let json = serde_json::to_value(&inv[1]).expect("json");
        assert_eq!(json["policy"]["rotate_every_days"], 30);
    }

    /// The sweep, a read and the inventory used to add the TTL to the
    /// clock and panic past what it counts, taking the socket API down.
    #[test]
    fn a_ttl_past_what_the_clock_counts_never_expires() {
        let now = Now::system();
        for (entry, policy) in [
            (Some(i64::MAX as u64), None),
            (None, Some(u64::MAX)),
            (Some(1 << 62), Some(u64::MAX - 1)),
        ] {
            let mut st = State::new(
                settings(policy),
                vec![served("a", &["pool"], entry, "va")],
                now,
            );
            let later = now.plus(Duration::from_secs(86_400));
            assert!(st.sweep(later).is_empty());
            assert!(!st.needs_value("a", later));
            let e = st.secrets.get_mut("a").expect("a");
            assert_eq!(e.fresh_value(later).map(|v| v.expose()), Some(&b"va"[..]));
            let _ = e.reply_fragment(later);
            let inv = st.inventory(later);
            assert!(inv[0].cached);
        }
    }

    #[test]
    fn dates_keep_what_they_are_given() {
        let table = [
            crate::api::SecretDates::default(),
            crate::api::SecretDates {
                created: Some(0),
                rotated: Some(-1),
                rotate_every_days: Some(1),
            },
            crate::api::SecretDates {
                created: Some(i64::MAX),
                rotated: None,
                rotate_every_days: Some(u64::MAX),
            },
        ];
        for d in table {
            assert_eq!(crate::api::SecretDates::from(Dates::from(d)), d);
        }
    }

    /// One entry per secret: 50,000 secrets make every 8 bytes 400 KB.
    #[test]
    fn an_entry_stays_small() {
        assert!(std::mem::size_of::<Entry>() <= 176);
        assert_eq!(std::mem::size_of::<Dates>(), 24);
    }
}
