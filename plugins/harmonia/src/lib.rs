//! Harmonia's per-merchant matching rules (matching-rules.md §6–§7) as one
//! configurable matcher.
//!
//! The host has already done candidate selection (§5, C1–C5: same provider,
//! MID membership, pending, lookback window, amount), so every candidate in a
//! [`Group`] is a plausible partner of its payment. This plugin only narrows
//! them: the merchant's **primary filter** for the payment's provider, then —
//! when more than one candidate is left and the rule's **fallback condition**
//! holds — the ordered **fallbacks**, stopping as soon as exactly one remains.
//! It answers with that candidate's index, or none, and a reason naming the
//! rule path, e.g. `visa: auth-code → 2 candidates; time-window(180s) → 2
//! candidates; user-first-six-last-four → 1 candidate`.
//!
//! ```
//! use accord_plugin_harmonia::Harmonia;
//! use accord_plugin_sdk::prelude::*;
//! use accord_plugin_sdk::testing::run_matcher;
//!
//! let at = Timestamp::new(1_710_009_730, 0, 0); // 2024-03-09T18:42:10Z
//! let mut payment = Transaction::new("p", Side::Payment, Kind::Settlement, Money::new(2450, "GBP"), at);
//! payment.provider = Some("visa".into());
//! payment.auth_code = Some("731904".into());
//! let mut candidate = Transaction::new("s1", Side::Merchant, Kind::Sale, Money::new(2450, "GBP"), at);
//! candidate.auth_code = Some("731904".into());
//! let group = Group { payment, cardholder: None, candidates: vec![candidate] };
//!
//! let decisions = run_matcher::<Harmonia>(r#"{"merchant": "wasabi-club"}"#, &[group]).unwrap();
//! assert_eq!(decisions[0].chosen, Some(0));
//! assert_eq!(decisions[0].reason, "visa: auth-code → 1 candidate");
//! assert_eq!(decisions[0].confidence, 100);
//! ```
//!
//! The six Harmonia merchants are built in (their table is [`builtin`]); any
//! other merchant is a config with a `rules` map, and a built-in merchant's
//! rule can be replaced per provider the same way. The plugin is a pure
//! function of its config and the group: it never sees the database, the
//! clock or the card registry beyond the group's `cardholder`.
//!
//! Decisions the reference leaves open, taken here:
//! - Empty (or blank) strings and absent values are the same thing.
//! - The auth-code path's "calendar day" is the UTC day of the payment's
//!   instant (Harmonia evaluated it in the database session zone, effectively
//!   UTC), closed at 23:59:59.999999 as in the reference.
//! - A date-only payment (`time_known = false`) keeps candidates from its own
//!   date's midnight through the next midnight inclusive, the date taken in
//!   the offset the payment was recorded in (the date its source gave).
//! - The time-window fallback `T(t)` uses the same comparison as `W(t)`,
//!   including its date-only branch: a tolerance around an unknown time of
//!   day means nothing (Harmonia never reached that case).
//! - A user-card fallback with no cardholder, or a cardholder lacking the
//!   digits it compares, is *not applicable*: it is skipped (noted in the
//!   reason) and refinement goes on; still more than one after the last
//!   fallback → no match. Matching "unknown = unknown" would pair purchases
//!   on the absence of evidence.
//! - Confidence: [`CONFIDENCE_PRIMARY`] when the primary filter alone left one
//!   candidate, [`CONFIDENCE_TIME_WINDOW`] or [`CONFIDENCE_USER_CARD`] when
//!   the fallback that left one was the time window or a user-card filter;
//!   [`CONFIDENCE_PENALTY_INEXACT_AMOUNT`] less when the chosen candidate's
//!   amount differs from the payment's (merchants with an amount tolerance).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use accord_plugin_sdk::prelude::*;
use serde::Deserialize;

/// The primary filter alone left exactly one candidate: Harmonia's own
/// unambiguous case.
pub const CONFIDENCE_PRIMARY: u8 = 100;
/// The time-window fallback settled it: the candidates shared the identifying
/// fields and only proximity in time decided.
pub const CONFIDENCE_TIME_WINDOW: u8 = 90;
/// A user-card fallback settled it: the decision rests on card digits from
/// the card registry rather than on the payment message itself.
pub const CONFIDENCE_USER_CARD: u8 = 80;

/// Taken off the confidence when the chosen candidate's amount is not the
/// payment's (a merchant with an amount tolerance): 100 → 70, below the
/// default auto-confirm threshold (80), so such matches go to review.
pub const CONFIDENCE_PENALTY_INEXACT_AMOUNT: u8 = 30;

/// The merchants whose rules are built in (matching-rules.md §7).
pub const MERCHANTS: [&str; 6] = [
    "iceland-bonus-card",
    "wasabi-club",
    "costa",
    "itsu",
    "stonegate",
    "tgi-fridays",
];

const NANOS_PER_SECOND: i128 = 1_000_000_000;
const SECONDS_PER_DAY: i64 = 86_400;
const DAY_NANOS: i128 = SECONDS_PER_DAY as i128 * NANOS_PER_SECOND;
/// The auth-code day is `[00:00:00, 23:59:59.999999]`: the reference's bound
/// is in microseconds (PostgreSQL's precision), kept exactly.
const AUTH_CODE_DAY_LAST_NANOS: i128 = DAY_NANOS - 1_000;

/// The merchant's matcher config (JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Merchant slug: one of [`MERCHANTS`] for the built-in table, or any
    /// slug together with `rules`.
    pub merchant: String,
    /// `t` of the time windows, in seconds; defaults to the merchant's
    /// built-in value. Required for other merchants when a rule uses a time
    /// window.
    #[serde(default)]
    pub time_window_seconds: Option<u32>,
    /// Provider (`visa`, `mastercard`, `amex`, ...) → rule. Replaces the
    /// built-in rule of that provider; other providers keep theirs.
    #[serde(default)]
    pub rules: BTreeMap<String, Rule>,
}

/// How one merchant matches one provider's payments.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub primary: Primary,
    /// Applied in order while more than one candidate remains.
    #[serde(default)]
    pub fallbacks: Vec<Fallback>,
    #[serde(default)]
    pub fallback_condition: FallbackCondition,
}

/// The primary filter (§6 primitives, as combined in §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Primary {
    /// `AC`: same auth code within the payment's UTC day; no auth code →
    /// `W(t)`.
    #[serde(rename = "auth-code")]
    AuthCode,
    /// `AC0`: as `AC`, but no auth code → no time condition at all.
    #[serde(rename = "auth-code-or-nothing")]
    AuthCodeOrNothing,
    /// `W(t)`.
    #[serde(rename = "time-window")]
    TimeWindow,
    /// `W(t)` and `F6L4(p)`.
    #[serde(rename = "time-window+first-six-last-four")]
    TimeWindowFirstSixLastFour,
    /// Iceland's Amex rule: `F6L4(p)` only when the payment has both first
    /// six and last four, then `W(t)`.
    #[serde(rename = "first-six-last-four-then-time-window")]
    FirstSixLastFourThenTimeWindow,
    /// `W(t)` and `L4(p)`.
    #[serde(rename = "time-window+last-four")]
    TimeWindowLastFour,
    /// The merchant does not match this provider's payments.
    #[serde(rename = "unsupported")]
    Unsupported,
}

/// A fallback filter (§6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Fallback {
    /// `T(t)`.
    #[serde(rename = "time-window")]
    TimeWindow,
    /// `UF6L4`: the cardholder's first six and last four.
    #[serde(rename = "user-first-six-last-four")]
    UserFirstSixLastFour,
    /// `UL4`: the cardholder's last four.
    #[serde(rename = "user-last-four")]
    UserLastFour,
}

/// When the fallbacks may run at all (§7, last column).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum FallbackCondition {
    #[default]
    #[serde(rename = "always")]
    Always,
    #[serde(rename = "payment-first-six-empty")]
    PaymentFirstSixEmpty,
    #[serde(rename = "payment-last-four-empty")]
    PaymentLastFourEmpty,
}

impl Rule {
    fn new(
        primary: Primary,
        fallbacks: &[Fallback],
        fallback_condition: FallbackCondition,
    ) -> Self {
        Rule {
            primary,
            fallbacks: fallbacks.to_vec(),
            fallback_condition,
        }
    }

    fn uses_time_window(&self) -> bool {
        !matches!(
            self.primary,
            Primary::AuthCodeOrNothing | Primary::Unsupported
        ) || self.fallbacks.contains(&Fallback::TimeWindow)
    }
}

/// The built-in table (matching-rules.md §7): the merchant's window `t` in
/// seconds and its rule per provider.
pub fn builtin(merchant: &str) -> Option<(u32, [(&'static str, Rule); 3])> {
    use Fallback::{TimeWindow as T, UserFirstSixLastFour as UF6L4, UserLastFour as UL4};
    use FallbackCondition::{Always, PaymentFirstSixEmpty, PaymentLastFourEmpty};
    use Primary::*;

    let table = match merchant {
        "iceland-bonus-card" => (
            60,
            [
                (
                    "visa",
                    Rule::new(AuthCode, &[T, UF6L4], PaymentFirstSixEmpty),
                ),
                (
                    "mastercard",
                    Rule::new(AuthCode, &[T, UF6L4], PaymentFirstSixEmpty),
                ),
                (
                    "amex",
                    Rule::new(
                        FirstSixLastFourThenTimeWindow,
                        &[T, UF6L4],
                        PaymentFirstSixEmpty,
                    ),
                ),
            ],
        ),
        "wasabi-club" | "costa" => (
            if merchant == "costa" { 60 } else { 180 },
            [
                ("visa", Rule::new(AuthCode, &[T, UF6L4], Always)),
                ("mastercard", Rule::new(AuthCode, &[T, UF6L4], Always)),
                (
                    "amex",
                    Rule::new(TimeWindowFirstSixLastFour, &[UF6L4], PaymentFirstSixEmpty),
                ),
            ],
        ),
        "itsu" => (
            180,
            [
                ("visa", Rule::new(AuthCodeOrNothing, &[UL4], Always)),
                ("mastercard", Rule::new(AuthCode, &[T, UL4], Always)),
                ("amex", Rule::new(Unsupported, &[], Always)),
            ],
        ),
        "stonegate" => (
            180,
            [
                ("visa", Rule::new(AuthCodeOrNothing, &[UL4], Always)),
                ("mastercard", Rule::new(AuthCode, &[T, UL4], Always)),
                (
                    "amex",
                    Rule::new(TimeWindowLastFour, &[UL4], PaymentLastFourEmpty),
                ),
            ],
        ),
        "tgi-fridays" => (
            180,
            [
                ("visa", Rule::new(AuthCodeOrNothing, &[UL4], Always)),
                ("mastercard", Rule::new(AuthCode, &[T, UL4], Always)),
                (
                    "amex",
                    Rule::new(TimeWindowFirstSixLastFour, &[UL4], PaymentFirstSixEmpty),
                ),
            ],
        ),
        _ => return None,
    };
    Some(table)
}

/// The matcher: one merchant's rules, resolved at open.
#[derive(Debug)]
pub struct Harmonia {
    merchant: String,
    window_seconds: u32,
    rules: BTreeMap<String, Rule>,
}

impl Matcher for Harmonia {
    type Config = Config;

    fn open(config: Config) -> Result<Self, PluginError> {
        let merchant = config.merchant.trim().to_ascii_lowercase();
        if merchant.is_empty() {
            return Err(PluginError::invalid_config("`merchant` is empty"));
        }
        let builtin = builtin(&merchant);
        if builtin.is_none() && config.rules.is_empty() {
            return Err(PluginError::invalid_config(format!(
                "unknown merchant `{merchant}`: expected one of {}, or give `rules` per provider",
                MERCHANTS.join(", ")
            )));
        }

        let mut window = config.time_window_seconds;
        let mut rules = BTreeMap::new();
        if let Some((t, table)) = builtin {
            window = window.or(Some(t));
            rules.extend(table.into_iter().map(|(p, r)| (p.to_string(), r)));
        }
        for (provider, rule) in config.rules {
            let provider = provider.trim().to_ascii_lowercase();
            if provider.is_empty() {
                return Err(PluginError::invalid_config(
                    "`rules` has an empty provider name",
                ));
            }
            rules.insert(provider, rule);
        }

        let window_seconds = match window {
            Some(t) => t,
            None if rules.values().any(Rule::uses_time_window) => {
                return Err(PluginError::invalid_config(format!(
                    "`time_window_seconds` is required: merchant `{merchant}` has no built-in \
                     window and its rules use a time window"
                )));
            }
            None => 0,
        };
        Ok(Harmonia {
            merchant,
            window_seconds,
            rules,
        })
    }

    fn decide(&mut self, group: &Group) -> Decision {
        let mut d = self.decide_by_rules(group);
        // Only a merchant with an amount tolerance gets candidates whose
        // amount differs (the host selects exact amounts otherwise): the
        // rules still pick one, but an inexact amount is weaker evidence.
        if let Some(i) = d.chosen
            && let Some(c) = group.candidates.get(i as usize)
        {
            let (p, s) = (&group.payment.amount, &c.amount);
            if p.minor_units != s.minor_units {
                let diff = (i128::from(s.minor_units) - i128::from(p.minor_units)).abs();
                let _ = write!(
                    d.reason,
                    "; amount differs by {diff} minor units (within tolerance)"
                );
                d.confidence = d
                    .confidence
                    .saturating_sub(CONFIDENCE_PENALTY_INEXACT_AMOUNT);
            }
        }
        d
    }
}

impl Harmonia {
    fn decide_by_rules(&self, group: &Group) -> Decision {
        let p = &group.payment;
        let Some(provider) = present(&p.provider).map(str::to_ascii_lowercase) else {
            return Decision::none("payment has no provider");
        };
        let Some(rule) = self.rules.get(&provider) else {
            return Decision::none(format!(
                "{provider}: no rule for this provider at {}",
                self.merchant
            ));
        };
        if rule.primary == Primary::Unsupported {
            return Decision::none(format!("{provider} not supported for {}", self.merchant));
        }

        let mut kept: Vec<usize> = (0..group.candidates.len())
            .filter(|&i| self.primary_keeps(rule.primary, p, &group.candidates[i]))
            .collect();
        let mut reason = format!(
            "{provider}: {} → {}",
            self.primary_label(rule.primary, p),
            count(kept.len())
        );
        match kept.len() {
            0 => return Decision::none(reason),
            1 => return Decision::chosen(kept[0], reason, CONFIDENCE_PRIMARY),
            _ => {}
        }

        if let Some(why) = rule.fallback_condition.blocked_by(p) {
            let _ = write!(reason, "; ambiguous, fallbacks not applied ({why})");
            return Decision::none(reason);
        }

        // refine(): stop at exactly one (match) or none (no match).
        let mut applied = Vec::with_capacity(rule.fallbacks.len());
        for &fallback in &rule.fallbacks {
            let label = self.fallback_label(fallback, p);
            match self.fallback_keeps(fallback, group, &kept) {
                Err(why) => {
                    let _ = write!(reason, "; {label} → n/a ({why})");
                }
                Ok(next) => {
                    kept = next;
                    let _ = write!(reason, "; {label} → {}", count(kept.len()));
                    match kept.len() {
                        0 => return Decision::none(reason),
                        1 => return Decision::chosen(kept[0], reason, fallback.confidence()),
                        _ => {}
                    }
                }
            }
            applied.push(label);
        }
        if applied.is_empty() {
            reason.push_str("; ambiguous, no fallbacks");
        } else {
            let _ = write!(reason, "; ambiguous after fallbacks {}", applied.join(", "));
        }
        Decision::none(reason)
    }
}

impl Harmonia {
    fn primary_keeps(&self, primary: Primary, p: &Transaction, s: &Transaction) -> bool {
        match primary {
            Primary::AuthCode => match present(&p.auth_code) {
                Some(code) => same_code_same_utc_day(code, p, s),
                None => self.in_window(p, s),
            },
            Primary::AuthCodeOrNothing => match present(&p.auth_code) {
                Some(code) => same_code_same_utc_day(code, p, s),
                None => true,
            },
            Primary::TimeWindow => self.in_window(p, s),
            Primary::TimeWindowFirstSixLastFour => {
                self.in_window(p, s) && first_six_last_four(p, s)
            }
            Primary::FirstSixLastFourThenTimeWindow => {
                first_six_last_four_both_required(p, s) && self.in_window(p, s)
            }
            Primary::TimeWindowLastFour => self.in_window(p, s) && last_four(p, s),
            Primary::Unsupported => false,
        }
    }

    /// `W(t)`, also `T(t)`.
    fn in_window(&self, p: &Transaction, s: &Transaction) -> bool {
        let at = instant(&s.occurred_at);
        if p.time_known {
            let pt = instant(&p.occurred_at);
            let t = i128::from(self.window_seconds) * NANOS_PER_SECOND;
            pt - t <= at && at <= pt + t
        } else {
            let start = local_day_start(&p.occurred_at);
            start <= at && at <= start + DAY_NANOS
        }
    }

    fn window_label(&self, p: &Transaction) -> String {
        if p.time_known {
            format!("time-window({}s)", self.window_seconds)
        } else {
            "time-window(date-only)".to_string()
        }
    }

    fn primary_label(&self, primary: Primary, p: &Transaction) -> String {
        let has_code = present(&p.auth_code).is_some();
        let has_f6 = present(&p.card_first_six).is_some();
        let has_l4 = present(&p.card_last_four).is_some();
        let w = self.window_label(p);
        match primary {
            Primary::AuthCode if has_code => "auth-code".into(),
            Primary::AuthCode => format!("auth-code(no code: {w})"),
            Primary::AuthCodeOrNothing if has_code => "auth-code-or-nothing".into(),
            Primary::AuthCodeOrNothing => "auth-code-or-nothing(no code: no time condition)".into(),
            Primary::TimeWindow => w,
            Primary::TimeWindowFirstSixLastFour if has_f6 => format!("{w} + first-six-last-four"),
            Primary::TimeWindowFirstSixLastFour => {
                format!("{w} + first-six-last-four(n/a: no payment first six)")
            }
            Primary::FirstSixLastFourThenTimeWindow if has_f6 && has_l4 => {
                format!("first-six-last-four + {w}")
            }
            Primary::FirstSixLastFourThenTimeWindow => {
                format!("first-six-last-four(n/a: payment lacks first six or last four) + {w}")
            }
            Primary::TimeWindowLastFour if has_l4 => format!("{w} + last-four"),
            Primary::TimeWindowLastFour => format!("{w} + last-four(n/a: no payment last four)"),
            Primary::Unsupported => "unsupported".into(),
        }
    }

    fn fallback_label(&self, fallback: Fallback, p: &Transaction) -> String {
        match fallback {
            Fallback::TimeWindow => self.window_label(p),
            Fallback::UserFirstSixLastFour => "user-first-six-last-four".into(),
            Fallback::UserLastFour => "user-last-four".into(),
        }
    }

    /// The candidates of `kept` the fallback keeps, or why it cannot apply.
    fn fallback_keeps(
        &self,
        fallback: Fallback,
        group: &Group,
        kept: &[usize],
    ) -> Result<Vec<usize>, &'static str> {
        let candidates = &group.candidates;
        let filter = |keep: &dyn Fn(&Transaction) -> bool| {
            kept.iter()
                .copied()
                .filter(|&i| keep(&candidates[i]))
                .collect()
        };
        match fallback {
            Fallback::TimeWindow => Ok(filter(&|s| self.in_window(&group.payment, s))),
            Fallback::UserFirstSixLastFour => {
                let user = group.cardholder.as_ref().ok_or("no cardholder")?;
                let (Some(f6), Some(l4)) = (present(&user.first_six), present(&user.last_four))
                else {
                    return Err("cardholder lacks first six or last four");
                };
                Ok(filter(&|s| {
                    present(&s.card_first_six) == Some(f6) && present(&s.card_last_four) == Some(l4)
                }))
            }
            Fallback::UserLastFour => {
                let user = group.cardholder.as_ref().ok_or("no cardholder")?;
                let l4 = present(&user.last_four).ok_or("cardholder has no last four")?;
                Ok(filter(&|s| present(&s.card_last_four) == Some(l4)))
            }
        }
    }
}

impl Fallback {
    fn confidence(self) -> u8 {
        match self {
            Fallback::TimeWindow => CONFIDENCE_TIME_WINDOW,
            Fallback::UserFirstSixLastFour | Fallback::UserLastFour => CONFIDENCE_USER_CARD,
        }
    }
}

impl FallbackCondition {
    /// Why the fallbacks may not run for `p`, or `None` when they may.
    fn blocked_by(self, p: &Transaction) -> Option<&'static str> {
        match self {
            FallbackCondition::Always => None,
            FallbackCondition::PaymentFirstSixEmpty => present(&p.card_first_six)
                .is_some()
                .then_some("payment first six present"),
            FallbackCondition::PaymentLastFourEmpty => present(&p.card_last_four)
                .is_some()
                .then_some("payment last four present"),
        }
    }
}

/// The value, unless absent, empty or blank: the reference treats `""` and
/// NULL alike.
fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Nanoseconds since the epoch: instants compare regardless of the offset
/// they were recorded in.
fn instant(ts: &Timestamp) -> i128 {
    i128::from(ts.epoch_seconds) * NANOS_PER_SECOND + i128::from(ts.nanos)
}

/// `AC` with a code: same code, candidate within the payment's UTC day.
fn same_code_same_utc_day(code: &str, p: &Transaction, s: &Transaction) -> bool {
    if present(&s.auth_code) != Some(code) {
        return false;
    }
    let start = i128::from(p.occurred_at.epoch_seconds.div_euclid(SECONDS_PER_DAY)) * DAY_NANOS;
    let at = instant(&s.occurred_at);
    start <= at && at <= start + AUTH_CODE_DAY_LAST_NANOS
}

/// Midnight starting the payment's date as its source wrote it (in the offset
/// it was recorded in), as an instant.
fn local_day_start(ts: &Timestamp) -> i128 {
    let offset = i64::from(ts.utc_offset_seconds);
    let local_midnight = (ts.epoch_seconds + offset).div_euclid(SECONDS_PER_DAY) * SECONDS_PER_DAY;
    i128::from(local_midnight - offset) * NANOS_PER_SECOND
}

/// `F6L4(p)`: with a payment first six, both digit groups must be equal (an
/// absent payment last four requires an absent candidate last four).
fn first_six_last_four(p: &Transaction, s: &Transaction) -> bool {
    match present(&p.card_first_six) {
        Some(f6) => {
            present(&s.card_first_six) == Some(f6)
                && present(&s.card_last_four) == present(&p.card_last_four)
        }
        None => true,
    }
}

/// Iceland's `F6L4(p)`: applies only when the payment has both digit groups.
fn first_six_last_four_both_required(p: &Transaction, s: &Transaction) -> bool {
    match (present(&p.card_first_six), present(&p.card_last_four)) {
        (Some(f6), Some(l4)) => {
            present(&s.card_first_six) == Some(f6) && present(&s.card_last_four) == Some(l4)
        }
        _ => true,
    }
}

/// `L4(p)`.
fn last_four(p: &Transaction, s: &Transaction) -> bool {
    match present(&p.card_last_four) {
        Some(l4) => present(&s.card_last_four) == Some(l4),
        None => true,
    }
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 candidate".to_string()
    } else {
        format!("{n} candidates")
    }
}

accord_plugin_sdk::export_matcher!(Harmonia);

/// One test per rule of matching-rules.md §6–§7: every cell of the §7 table
/// (primary filter per merchant × provider, fallbacks in order, fallback
/// condition), every §6 primitive with its boundaries, refine's stopping
/// conditions, the §7.1 worked example, and the config.
#[cfg(test)]
mod tests {
    use super::*;
    use accord_plugin_sdk::testing::run_matcher;

    /// 2024-03-09T00:00:00Z.
    const DAY: i64 = 1_709_942_400;
    /// The payment's instant in most tests: 2024-03-09T18:42:10Z (§7.1).
    const P: i64 = DAY + 18 * 3600 + 42 * 60 + 10;
    const CODE: &str = "731904";
    /// The cardholder's card in the user-card fallbacks.
    const F6: &str = "454321";
    const L4: &str = "4821";

    /// `offset` seconds from the payment's instant, in UTC.
    fn at(offset: i64) -> Timestamp {
        Timestamp::new(P + offset, 0, 0)
    }

    fn payment(provider: &str) -> Transaction {
        let money = Money::new(2450, "GBP");
        let mut tx = Transaction::new("p", Side::Payment, Kind::Settlement, money, at(0));
        tx.provider = Some(provider.into());
        tx
    }

    fn scheme(when: Timestamp) -> Transaction {
        Transaction::new(
            "s",
            Side::Merchant,
            Kind::Sale,
            Money::new(2450, "GBP"),
            when,
        )
    }

    /// Builders for the fields the rules read; `""` leaves a field absent.
    trait With: Sized {
        fn auth(self, code: &str) -> Self;
        fn card(self, first_six: &str, last_four: &str) -> Self;
        fn when(self, ts: Timestamp) -> Self;
        fn date_only(self) -> Self;
    }

    impl With for Transaction {
        fn auth(mut self, code: &str) -> Self {
            self.auth_code = non_empty(code);
            self
        }
        fn card(mut self, first_six: &str, last_four: &str) -> Self {
            self.card_first_six = non_empty(first_six);
            self.card_last_four = non_empty(last_four);
            self
        }
        fn when(mut self, ts: Timestamp) -> Self {
            self.occurred_at = ts;
            self
        }
        fn date_only(mut self) -> Self {
            self.time_known = false;
            self
        }
    }

    fn holder(first_six: &str, last_four: &str) -> Option<Cardholder> {
        Some(Cardholder {
            card_token: "tok_1".into(),
            first_six: non_empty(first_six),
            last_four: non_empty(last_four),
            loyalty_id: Some("loyalty-1".into()),
        })
    }

    fn user() -> Option<Cardholder> {
        holder(F6, L4)
    }

    fn merchant(slug: &str) -> String {
        format!(r#"{{"merchant": "{slug}"}}"#)
    }

    fn decide_with(
        config: &str,
        payment: Transaction,
        cardholder: Option<Cardholder>,
        candidates: Vec<Transaction>,
    ) -> Decision {
        let group = Group {
            payment,
            cardholder,
            candidates,
        };
        run_matcher::<Harmonia>(config, &[group])
            .expect("config opens")
            .remove(0)
    }

    fn decide(
        slug: &str,
        payment: Transaction,
        cardholder: Option<Cardholder>,
        candidates: Vec<Transaction>,
    ) -> Decision {
        decide_with(&merchant(slug), payment, cardholder, candidates)
    }

    #[track_caller]
    fn assert_chosen(d: &Decision, index: u32, confidence: u8) {
        assert_eq!(
            (d.chosen, d.confidence),
            (Some(index), confidence),
            "reason: {}",
            d.reason
        );
    }

    #[track_caller]
    fn assert_none(d: &Decision) {
        assert_eq!((d.chosen, d.confidence), (None, 0), "reason: {}", d.reason);
    }

    #[track_caller]
    fn assert_config_error(config: &str, needle: &str) {
        let err = run_matcher::<Harmonia>(config, &[]).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidConfig, "{}", err.message);
        assert!(err.message.contains(needle), "{}", err.message);
    }

    // ---- beyond Harmonia: amount tolerance ----

    /// A candidate within the merchant's amount tolerance (the host selected
    /// it) can still be chosen by the rules, but with less confidence and
    /// the difference in the reason; an exact amount keeps full confidence.
    #[test]
    fn inexact_amount_lowers_confidence() {
        let mut off = scheme(at(0)).auth(CODE);
        off.amount = Money::new(2455, "GBP");
        let d = decide("wasabi-club", payment("visa").auth(CODE), None, vec![off]);
        assert_chosen(
            &d,
            0,
            CONFIDENCE_PRIMARY - CONFIDENCE_PENALTY_INEXACT_AMOUNT,
        );
        assert_eq!(
            d.reason,
            "visa: auth-code → 1 candidate; amount differs by 5 minor units (within tolerance)"
        );
        let d = decide(
            "wasabi-club",
            payment("visa").auth(CODE),
            None,
            vec![scheme(at(0)).auth(CODE)],
        );
        assert_chosen(&d, 0, CONFIDENCE_PRIMARY);
    }

    // ---- shared checks for the §7 cells ----

    /// `AC` with a code: the code and the payment's UTC day decide, not the
    /// time window.
    #[track_caller]
    fn assert_auth_code_path(slug: &str, provider: &str) {
        let d = decide(
            slug,
            payment(provider).auth(CODE),
            None,
            vec![
                scheme(at(-5 * 3600)).auth(CODE), // same day, 5 h before
                scheme(at(0)).auth("111111"),     // other code
                scheme(Timestamp::new(DAY + 86_400, 0, 0)).auth(CODE), // next day
            ],
        );
        assert_chosen(&d, 0, CONFIDENCE_PRIMARY);
        assert_eq!(d.reason, format!("{provider}: auth-code → 1 candidate"));
    }

    /// `AC` without a code: `W(t)`, inclusive, whatever the candidates' codes.
    #[track_caller]
    fn assert_auth_code_falls_back_to_window(slug: &str, provider: &str, t: i64) {
        let d = decide(
            slug,
            payment(provider),
            None,
            vec![
                scheme(at(-t)).auth("999999"),
                scheme(at(t + 1)),
                scheme(at(-5 * 3600)),
            ],
        );
        assert_chosen(&d, 0, CONFIDENCE_PRIMARY);
        assert_eq!(
            d.reason,
            format!("{provider}: auth-code(no code: time-window({t}s)) → 1 candidate")
        );
    }

    /// `AC0` without a code: no time condition at all.
    #[track_caller]
    fn assert_auth_code_or_nothing_without_code(slug: &str) {
        let d = decide(
            slug,
            payment("visa"),
            None,
            vec![scheme(at(-13 * 86_400)).auth("999999")],
        );
        assert_chosen(&d, 0, CONFIDENCE_PRIMARY);
        assert_eq!(
            d.reason,
            "visa: auth-code-or-nothing(no code: no time condition) → 1 candidate"
        );
    }

    /// `AC0` with a code behaves as `AC`.
    #[track_caller]
    fn assert_auth_code_or_nothing_with_code(slug: &str) {
        let d = decide(
            slug,
            payment("visa").auth(CODE),
            None,
            vec![
                scheme(Timestamp::new(DAY - 1, 0, 0)).auth(CODE), // previous day
                scheme(at(-5 * 3600)).auth(CODE),
                scheme(at(0)).auth("111111"),
            ],
        );
        assert_chosen(&d, 1, CONFIDENCE_PRIMARY);
        assert_eq!(d.reason, "visa: auth-code-or-nothing → 1 candidate");
    }

    /// `W(t) + F6L4(p)` for Amex with full card digits on the payment.
    #[track_caller]
    fn assert_window_and_first_six_last_four(slug: &str, t: i64) {
        let d = decide(
            slug,
            payment("amex").card(F6, L4),
            None,
            vec![
                scheme(at(t + 1)).card(F6, L4),
                scheme(at(0)).card(F6, "9999"),
                scheme(at(0)).card("999999", L4),
                scheme(at(-t)).card(F6, L4),
            ],
        );
        assert_chosen(&d, 3, CONFIDENCE_PRIMARY);
        assert_eq!(
            d.reason,
            format!("amex: time-window({t}s) + first-six-last-four → 1 candidate")
        );
    }

    /// Fallbacks `T(t)` then a user-card filter, in that order: `T` alone can
    /// decide (90), and the user filter decides among what `T` kept (80).
    #[track_caller]
    fn assert_time_window_then_user_card(slug: &str, provider: &str, t: i64, user_filter: &str) {
        // Order: the user filter first would keep candidate 1 instead.
        let d = decide(
            slug,
            payment(provider).auth(CODE),
            user(),
            vec![
                scheme(at(t)).auth(CODE).card("999999", "9999"),
                scheme(at(t + 1)).auth(CODE).card(F6, L4),
            ],
        );
        assert_chosen(&d, 0, CONFIDENCE_TIME_WINDOW);
        assert_eq!(
            d.reason,
            format!("{provider}: auth-code → 2 candidates; time-window({t}s) → 1 candidate")
        );

        let d = decide(
            slug,
            payment(provider).auth(CODE),
            user(),
            vec![
                scheme(at(t)).auth(CODE).card("999999", "9999"),
                scheme(at(-t)).auth(CODE).card(F6, L4),
                scheme(at(t + 1)).auth(CODE).card(F6, L4),
            ],
        );
        assert_chosen(&d, 1, CONFIDENCE_USER_CARD);
        assert_eq!(
            d.reason,
            format!(
                "{provider}: auth-code → 3 candidates; time-window({t}s) → 2 candidates; \
                 {user_filter} → 1 candidate"
            )
        );
    }

    /// Visa's only fallback is `UL4`: no time-window step before it (which
    /// would have kept candidate 1).
    #[track_caller]
    fn assert_visa_fallback_is_user_last_four_only(slug: &str) {
        let d = decide(
            slug,
            payment("visa").auth(CODE),
            user(),
            vec![
                scheme(at(-5 * 3600)).auth(CODE).card("", L4),
                scheme(at(0)).auth(CODE).card("", "9999"),
            ],
        );
        assert_chosen(&d, 0, CONFIDENCE_USER_CARD);
        assert_eq!(
            d.reason,
            "visa: auth-code-or-nothing → 2 candidates; user-last-four → 1 candidate"
        );
    }

    /// Amex's only fallback is the user-card filter `user_filter`.
    #[track_caller]
    fn assert_amex_fallback_is_user_card_only(slug: &str, t: i64, user_filter: &str) {
        let d = decide(
            slug,
            payment("amex"),
            user(),
            vec![
                scheme(at(0)).card("999999", "9999"),
                scheme(at(t)).card(F6, L4),
            ],
        );
        assert_chosen(&d, 1, CONFIDENCE_USER_CARD);
        assert!(
            d.reason
                .ends_with(&format!("→ 2 candidates; {user_filter} → 1 candidate")),
            "{}",
            d.reason
        );
    }

    /// Fallbacks are skipped when the payment has a first six; they run when
    /// it has none.
    #[track_caller]
    fn assert_fallbacks_need_empty_payment_first_six(slug: &str, provider: &str, p: Transaction) {
        let same_card = || scheme(at(0)).auth(CODE).card(F6, L4);
        let d = decide(
            slug,
            p.clone().card(F6, L4),
            user(),
            vec![same_card(), same_card()],
        );
        assert_none(&d);
        assert!(
            d.reason.ends_with(
                "→ 2 candidates; ambiguous, fallbacks not applied (payment first six present)"
            ),
            "{}",
            d.reason
        );
        assert!(
            d.reason.starts_with(&format!("{provider}: ")),
            "{}",
            d.reason
        );

        let d = decide(
            slug,
            p.card("", L4),
            user(),
            vec![same_card(), scheme(at(0)).auth(CODE).card("999999", "9999")],
        );
        assert_chosen(&d, 0, CONFIDENCE_USER_CARD);
    }

    // ---- §6 primitives ----

    #[test]
    fn time_window_lower_bound_is_inclusive() {
        let d = decide(
            "stonegate",
            payment("amex"),
            None,
            vec![scheme(at(-181)), scheme(at(-180))],
        );
        assert_chosen(&d, 1, CONFIDENCE_PRIMARY);
        assert_eq!(
            d.reason,
            "amex: time-window(180s) + last-four(n/a: no payment last four) → 1 candidate"
        );
    }

    #[test]
    fn time_window_upper_bound_is_inclusive() {
        let d = decide(
            "stonegate",
            payment("amex"),
            None,
            vec![scheme(at(181)), scheme(at(180))],
        );
        assert_chosen(&d, 1, CONFIDENCE_PRIMARY);
    }

    #[test]
    fn time_window_compares_to_the_nanosecond() {
        let p = payment("amex").when(Timestamp::new(P, 500, 0));
        let d = decide(
            "stonegate",
            p,
            None,
            vec![
                scheme(Timestamp::new(P + 180, 501, 0)),
                scheme(Timestamp::new(P + 180, 500, 0)),
                scheme(Timestamp::new(P - 180, 499, 0)),
            ],
        );
        assert_chosen(&d, 1, CONFIDENCE_PRIMARY);
    }

    #[test]
    fn time_window_compares_instants_not_wall_clocks() {
        // Same instant written at +01:00 is kept; same wall clock at +01:00
        // (an hour earlier as an instant) is not.
        let d = decide(
            "stonegate",
            payment("amex"),
            None,
            vec![
                scheme(Timestamp::new(P - 3600, 0, 3600)),
                scheme(Timestamp::new(P, 0, 3600)),
            ],
        );
        assert_chosen(&d, 1, CONFIDENCE_PRIMARY);
    }

    #[test]
    fn time_window_date_only_payment_keeps_its_date_through_next_midnight() {
        let p = || payment("amex").when(Timestamp::new(DAY, 0, 0)).date_only();
        let groups: Vec<Group> = [DAY, DAY + 86_400, DAY - 1, DAY + 86_401, DAY + 43_200]
            .into_iter()
            .map(|s| Group {
                payment: p(),
                cardholder: None,
                candidates: vec![scheme(Timestamp::new(s, 0, 0))],
            })
            .collect();
        let decisions = run_matcher::<Harmonia>(&merchant("stonegate"), &groups).unwrap();
        let chosen: Vec<_> = decisions.iter().map(|d| d.chosen).collect();
        assert_eq!(chosen, [Some(0), Some(0), None, None, Some(0)]);
        assert!(
            decisions[0]
                .reason
                .starts_with("amex: time-window(date-only)")
        );
    }

    #[test]
    fn time_window_date_only_payment_takes_its_date_in_its_own_offset() {
        // 2024-06-01 as written at +01:00 = 2024-05-31T23:00:00Z.
        let june_1 = 1_717_196_400;
        let p = || {
            payment("amex")
                .when(Timestamp::new(june_1, 0, 3600))
                .date_only()
        };
        let run = |s: i64| {
            decide(
                "stonegate",
                p(),
                None,
                vec![scheme(Timestamp::new(s, 0, 0))],
            )
        };
        assert_eq!(run(june_1 + 1800).chosen, Some(0)); // 23:30Z on May 31 = 00:30 local June 1
        assert_eq!(run(june_1 + 86_400).chosen, Some(0)); // next local midnight, inclusive
        assert_eq!(run(june_1 - 1).chosen, None); // 23:59:59 local May 31
    }

    #[test]
    fn auth_code_requires_an_equal_code() {
        let d = decide(
            "wasabi-club",
            payment("visa").auth(CODE),
            None,
            vec![
                scheme(at(0)).auth("731905"),
                scheme(at(0)),
                scheme(at(30)).auth(CODE),
            ],
        );
        assert_chosen(&d, 2, CONFIDENCE_PRIMARY);
    }

    #[test]
    fn auth_code_day_starts_at_utc_midnight_inclusive() {
        let d = decide(
            "wasabi-club",
            payment("visa").auth(CODE),
            None,
            vec![
                scheme(Timestamp::new(DAY - 1, 999_999_000, 0)).auth(CODE),
                scheme(Timestamp::new(DAY, 0, 0)).auth(CODE),
            ],
        );
        assert_chosen(&d, 1, CONFIDENCE_PRIMARY);
    }

    #[test]
    fn auth_code_day_ends_at_23_59_59_999999() {
        let last = Timestamp::new(DAY + 86_399, 999_999_000, 0);
        let run = |ts: Timestamp| {
            decide(
                "wasabi-club",
                payment("visa").auth(CODE),
                None,
                vec![scheme(ts).auth(CODE)],
            )
        };
        assert_eq!(run(last).chosen, Some(0));
        // Past the reference's microsecond bound, and the next day.
        assert_eq!(
            run(Timestamp::new(DAY + 86_399, 999_999_001, 0)).chosen,
            None
        );
        assert_eq!(run(Timestamp::new(DAY + 86_400, 0, 0)).chosen, None);
    }

    #[test]
    fn auth_code_day_is_the_utc_day_of_the_payment_instant() {
        // 2024-06-01T00:30+01:00 is 2024-05-31T23:30Z: its day is May 31 UTC.
        let may_31 = 1_717_113_600;
        let p = || {
            payment("visa")
                .auth(CODE)
                .when(Timestamp::new(may_31 + 84_600, 0, 3600))
        };
        let run = |s: i64| {
            decide(
                "wasabi-club",
                p(),
                None,
                vec![scheme(Timestamp::new(s, 0, 0)).auth(CODE)],
            )
        };
        assert_eq!(run(may_31 + 8 * 3600).chosen, Some(0)); // May 31 08:00Z
        assert_eq!(run(may_31 + 86_400 + 10 * 3600).chosen, None); // June 1 10:00Z
    }

    #[test]
    fn auth_code_without_code_uses_the_time_window() {
        assert_auth_code_falls_back_to_window("wasabi-club", "visa", 180);
    }

    #[test]
    fn auth_code_empty_or_blank_is_no_code() {
        for code in ["", "   "] {
            let mut p = payment("visa");
            p.auth_code = Some(code.into());
            let d = decide(
                "wasabi-club",
                p,
                None,
                vec![scheme(at(-5 * 3600)).auth(CODE), scheme(at(10))],
            );
            assert_chosen(&d, 1, CONFIDENCE_PRIMARY);
            assert_eq!(
                d.reason,
                "visa: auth-code(no code: time-window(180s)) → 1 candidate"
            );
        }
    }

    #[test]
    fn auth_code_or_nothing_with_code_is_the_auth_code_path() {
        assert_auth_code_or_nothing_with_code("itsu");
    }

    #[test]
    fn auth_code_or_nothing_without_code_has_no_time_condition() {
        assert_auth_code_or_nothing_without_code("itsu");
    }

    #[test]
    fn first_six_last_four_requires_both_digit_groups_equal() {
        assert_window_and_first_six_last_four("wasabi-club", 180);
    }

    #[test]
    fn first_six_last_four_without_payment_first_six_is_no_condition() {
        let d = decide(
            "wasabi-club",
            payment("amex").card("", L4),
            None,
            vec![
                scheme(at(0)).card("999999", "9999"),
                scheme(at(181)).card(F6, L4),
            ],
        );
        assert_chosen(&d, 0, CONFIDENCE_PRIMARY);
        assert_eq!(
            d.reason,
            "amex: time-window(180s) + first-six-last-four(n/a: no payment first six) → 1 candidate"
        );
    }

    #[test]
    fn first_six_last_four_with_first_six_only_requires_an_empty_candidate_last_four() {
        let mut blank = scheme(at(0)).card(F6, "");
        blank.card_last_four = Some(String::new()); // "" and absent are alike
        let d = decide(
            "wasabi-club",
            payment("amex").card(F6, ""),
            None,
            vec![scheme(at(0)).card(F6, L4), blank],
        );
        assert_chosen(&d, 1, CONFIDENCE_PRIMARY);
    }

    #[test]
    fn iceland_first_six_last_four_needs_both_payment_digit_groups() {
        for (f6, l4) in [(F6, ""), ("", L4)] {
            let d = decide(
                "iceland-bonus-card",
                payment("amex").card(f6, l4),
                None,
                vec![
                    scheme(at(61)).card(F6, L4),
                    scheme(at(0)).card("999999", "9999"),
                ],
            );
            assert_chosen(&d, 1, CONFIDENCE_PRIMARY);
            assert!(
                d.reason.contains("first-six-last-four(n/a: payment lacks"),
                "{}",
                d.reason
            );
        }
    }

    #[test]
    fn last_four_keeps_the_payment_last_four() {
        let d = decide(
            "stonegate",
            payment("amex").card("", L4),
            None,
            vec![
                scheme(at(0)).card(F6, "9999"),
                scheme(at(180)).card("999999", L4),
            ],
        );
        assert_chosen(&d, 1, CONFIDENCE_PRIMARY);
        assert_eq!(
            d.reason,
            "amex: time-window(180s) + last-four → 1 candidate"
        );
    }

    #[test]
    fn last_four_without_payment_last_four_is_no_condition() {
        let d = decide(
            "stonegate",
            payment("amex").card(F6, ""),
            None,
            vec![scheme(at(0)).card("999999", "9999")],
        );
        assert_chosen(&d, 0, CONFIDENCE_PRIMARY);
    }

    #[test]
    fn time_window_fallback_bounds_are_inclusive() {
        let d = decide(
            "wasabi-club",
            payment("visa").auth(CODE),
            None,
            vec![
                scheme(at(-180)).auth(CODE),
                scheme(at(181)).auth(CODE),
                scheme(at(180)).auth(CODE),
                scheme(at(-181)).auth(CODE),
            ],
        );
        assert_none(&d);
        assert!(
            d.reason.contains("; time-window(180s) → 2 candidates;"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn time_window_fallback_on_a_date_only_payment_keeps_its_date() {
        let p = payment("visa")
            .auth(CODE)
            .when(Timestamp::new(DAY, 0, 0))
            .date_only();
        let d = decide(
            "wasabi-club",
            p,
            user(),
            vec![
                scheme(at(0)).auth(CODE).card("999999", "9999"),
                scheme(at(-3600)).auth(CODE).card(F6, L4),
            ],
        );
        assert_chosen(&d, 1, CONFIDENCE_USER_CARD);
        assert!(
            d.reason.contains("time-window(date-only) → 2 candidates"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn user_first_six_last_four_needs_both_digit_groups_equal() {
        let d = decide(
            "wasabi-club",
            payment("amex"),
            user(),
            vec![
                scheme(at(0)).card(F6, "9999"),
                scheme(at(0)).card("999999", L4),
                scheme(at(0)).card(F6, L4),
            ],
        );
        assert_chosen(&d, 2, CONFIDENCE_USER_CARD);
    }

    #[test]
    fn user_first_six_last_four_without_cardholder_is_not_applicable() {
        let d = decide(
            "wasabi-club",
            payment("amex"),
            None,
            vec![
                scheme(at(0)).card("999999", "9999"),
                scheme(at(0)).card(F6, L4),
            ],
        );
        assert_none(&d);
        assert!(
            d.reason.ends_with(
                "→ 2 candidates; user-first-six-last-four → n/a (no cardholder); \
                 ambiguous after fallbacks user-first-six-last-four"
            ),
            "{}",
            d.reason
        );
    }

    #[test]
    fn user_first_six_last_four_with_incomplete_cardholder_is_not_applicable() {
        let d = decide(
            "wasabi-club",
            payment("amex"),
            holder("", L4),
            vec![
                scheme(at(0)).card("999999", "9999"),
                scheme(at(0)).card(F6, L4),
            ],
        );
        assert_none(&d);
        assert!(
            d.reason
                .contains("n/a (cardholder lacks first six or last four)"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn user_last_four_ignores_first_six() {
        let d = decide(
            "stonegate",
            payment("amex"),
            user(),
            vec![
                scheme(at(0)).card(F6, "9999"),
                scheme(at(0)).card("999999", L4),
            ],
        );
        assert_chosen(&d, 1, CONFIDENCE_USER_CARD);
    }

    #[test]
    fn user_last_four_without_cardholder_last_four_is_not_applicable() {
        for cardholder in [None, holder(F6, "")] {
            let d = decide(
                "stonegate",
                payment("amex"),
                cardholder,
                vec![scheme(at(0)).card(F6, L4), scheme(at(0)).card(F6, "9999")],
            );
            assert_none(&d);
            assert!(d.reason.contains("user-last-four → n/a ("), "{}", d.reason);
        }
    }

    #[test]
    fn refine_stops_at_exactly_one() {
        // The remaining candidate is not the user's card: the user filter
        // would have dropped it, but refine stops before it.
        let d = decide(
            "wasabi-club",
            payment("visa").auth(CODE),
            user(),
            vec![
                scheme(at(10)).auth(CODE).card("999999", "9999"),
                scheme(at(-900)).auth(CODE),
            ],
        );
        assert_chosen(&d, 0, CONFIDENCE_TIME_WINDOW);
        assert!(!d.reason.contains("user-"), "{}", d.reason);
    }

    #[test]
    fn refine_with_none_left_is_no_match() {
        let d = decide(
            "wasabi-club",
            payment("visa").auth(CODE),
            user(),
            vec![
                scheme(at(-900)).auth(CODE).card(F6, L4),
                scheme(at(900)).auth(CODE).card(F6, L4),
            ],
        );
        assert_none(&d);
        assert!(
            d.reason.ends_with("; time-window(180s) → 0 candidates"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn refine_with_more_than_one_after_the_last_fallback_is_no_match() {
        let same = || scheme(at(0)).auth(CODE).card(F6, L4);
        let d = decide(
            "wasabi-club",
            payment("visa").auth(CODE),
            user(),
            vec![same(), same()],
        );
        assert_none(&d);
        assert_eq!(
            d.reason,
            "visa: auth-code → 2 candidates; time-window(180s) → 2 candidates; \
             user-first-six-last-four → 2 candidates; \
             ambiguous after fallbacks time-window(180s), user-first-six-last-four"
        );
    }

    #[test]
    fn refine_skips_a_fallback_that_does_not_apply_and_goes_on() {
        let config = r#"{"merchant": "acme", "time_window_seconds": 60,
            "rules": {"visa": {"primary": "auth-code-or-nothing", "fallbacks": ["user-last-four", "time-window"]}}}"#;
        let d = decide_with(
            config,
            payment("visa"),
            None,
            vec![scheme(at(-3600)), scheme(at(60))],
        );
        assert_chosen(&d, 1, CONFIDENCE_TIME_WINDOW);
        assert!(
            d.reason
                .contains("user-last-four → n/a (no cardholder); time-window(60s) → 1 candidate")
        );
    }

    #[test]
    fn primary_with_no_candidates_left_is_no_match() {
        let d = decide("wasabi-club", payment("visa").auth(CODE), user(), vec![]);
        assert_none(&d);
        assert_eq!(d.reason, "visa: auth-code → 0 candidates");
        let d = decide(
            "wasabi-club",
            payment("visa").auth(CODE),
            user(),
            vec![scheme(at(0))],
        );
        assert_none(&d);
    }

    #[test]
    fn primary_ambiguous_without_the_fallback_condition_is_no_match() {
        let same = || scheme(at(0)).card(F6, L4);
        let d = decide(
            "wasabi-club",
            payment("amex").card(F6, L4),
            user(),
            vec![same(), same()],
        );
        assert_none(&d);
        assert_eq!(
            d.reason,
            "amex: time-window(180s) + first-six-last-four → 2 candidates; \
             ambiguous, fallbacks not applied (payment first six present)"
        );
    }

    // ---- §7: iceland-bonus-card (t = 60) ----

    #[test]
    fn iceland_visa_with_auth_code_uses_auth_code_path() {
        assert_auth_code_path("iceland-bonus-card", "visa");
    }

    #[test]
    fn iceland_visa_without_auth_code_uses_time_window_60s() {
        assert_auth_code_falls_back_to_window("iceland-bonus-card", "visa", 60);
    }

    #[test]
    fn iceland_mastercard_with_auth_code_uses_auth_code_path() {
        assert_auth_code_path("iceland-bonus-card", "mastercard");
    }

    #[test]
    fn iceland_mastercard_without_auth_code_uses_time_window_60s() {
        assert_auth_code_falls_back_to_window("iceland-bonus-card", "mastercard", 60);
    }

    #[test]
    fn iceland_amex_primary_is_first_six_last_four_then_time_window_60s() {
        let d = decide(
            "iceland-bonus-card",
            payment("amex").card(F6, L4),
            None,
            vec![
                scheme(at(61)).card(F6, L4),
                scheme(at(0)).card(F6, "9999"),
                scheme(at(-60)).card(F6, L4),
            ],
        );
        assert_chosen(&d, 2, CONFIDENCE_PRIMARY);
        assert_eq!(
            d.reason,
            "amex: first-six-last-four + time-window(60s) → 1 candidate"
        );
    }

    #[test]
    fn iceland_visa_fallbacks_are_time_window_60s_then_user_first_six_last_four() {
        assert_time_window_then_user_card(
            "iceland-bonus-card",
            "visa",
            60,
            "user-first-six-last-four",
        );
    }

    #[test]
    fn iceland_mastercard_fallbacks_are_time_window_60s_then_user_first_six_last_four() {
        assert_time_window_then_user_card(
            "iceland-bonus-card",
            "mastercard",
            60,
            "user-first-six-last-four",
        );
    }

    #[test]
    fn iceland_amex_fallbacks_are_time_window_60s_then_user_first_six_last_four() {
        // No payment digits: the primary is W(60) alone, T(60) keeps both,
        // the user's card decides.
        let d = decide(
            "iceland-bonus-card",
            payment("amex"),
            user(),
            vec![
                scheme(at(-60)).card("999999", "9999"),
                scheme(at(60)).card(F6, L4),
            ],
        );
        assert_chosen(&d, 1, CONFIDENCE_USER_CARD);
        assert!(
            d.reason.ends_with(
                "→ 2 candidates; time-window(60s) → 2 candidates; user-first-six-last-four → 1 candidate"
            ),
            "{}",
            d.reason
        );
    }

    #[test]
    fn iceland_fallback_condition_is_payment_first_six_empty_for_every_provider() {
        for provider in ["visa", "mastercard", "amex"] {
            let p = payment(provider).auth(CODE);
            assert_fallbacks_need_empty_payment_first_six("iceland-bonus-card", provider, p);
        }
    }

    // ---- §7: wasabi-club (t = 180) ----

    #[test]
    fn wasabi_visa_with_auth_code_uses_auth_code_path() {
        assert_auth_code_path("wasabi-club", "visa");
    }

    #[test]
    fn wasabi_visa_without_auth_code_uses_time_window_180s() {
        assert_auth_code_falls_back_to_window("wasabi-club", "visa", 180);
    }

    #[test]
    fn wasabi_mastercard_with_auth_code_uses_auth_code_path() {
        assert_auth_code_path("wasabi-club", "mastercard");
    }

    #[test]
    fn wasabi_mastercard_without_auth_code_uses_time_window_180s() {
        assert_auth_code_falls_back_to_window("wasabi-club", "mastercard", 180);
    }

    #[test]
    fn wasabi_amex_primary_is_time_window_180s_and_first_six_last_four() {
        assert_window_and_first_six_last_four("wasabi-club", 180);
    }

    #[test]
    fn wasabi_visa_fallbacks_are_time_window_180s_then_user_first_six_last_four() {
        assert_time_window_then_user_card("wasabi-club", "visa", 180, "user-first-six-last-four");
    }

    #[test]
    fn wasabi_mastercard_fallbacks_are_time_window_180s_then_user_first_six_last_four() {
        assert_time_window_then_user_card(
            "wasabi-club",
            "mastercard",
            180,
            "user-first-six-last-four",
        );
    }

    #[test]
    fn wasabi_amex_fallback_is_user_first_six_last_four_only() {
        assert_amex_fallback_is_user_card_only("wasabi-club", 180, "user-first-six-last-four");
    }

    #[test]
    fn wasabi_visa_and_mastercard_fallback_condition_is_always() {
        // Even a (hypothetical) payment first six does not stop them.
        for provider in ["visa", "mastercard"] {
            let same = || scheme(at(0)).auth(CODE).card("999999", "9999");
            let d = decide(
                "wasabi-club",
                payment(provider).auth(CODE).card(F6, L4),
                user(),
                vec![same(), scheme(at(0)).auth(CODE).card(F6, L4)],
            );
            assert_chosen(&d, 1, CONFIDENCE_USER_CARD);
        }
    }

    #[test]
    fn wasabi_amex_fallback_condition_is_payment_first_six_empty() {
        assert_fallbacks_need_empty_payment_first_six("wasabi-club", "amex", payment("amex"));
    }

    #[test]
    fn wasabi_worked_example_visa_matches_s1() {
        // matching-rules.md §7.1.
        let mut p = payment("visa").auth(CODE);
        p.merchant_ids.push(MerchantIdentifier {
            value: "WAS-EFT-31337".into(),
            kind: IdentifierKind::Primary,
        });
        let s1 = scheme(at(0)).auth(CODE).card(F6, L4);
        let s2 = scheme(at(110)).auth(CODE).card(F6, "9999");
        let d = decide("wasabi-club", p, user(), vec![s1, s2]);
        assert_chosen(&d, 0, CONFIDENCE_USER_CARD);
        assert_eq!(
            d.reason,
            "visa: auth-code → 2 candidates; time-window(180s) → 2 candidates; \
             user-first-six-last-four → 1 candidate"
        );
    }

    // ---- §7: costa (t = 60) ----

    #[test]
    fn costa_visa_with_auth_code_uses_auth_code_path() {
        assert_auth_code_path("costa", "visa");
    }

    #[test]
    fn costa_visa_without_auth_code_uses_time_window_60s() {
        assert_auth_code_falls_back_to_window("costa", "visa", 60);
    }

    #[test]
    fn costa_mastercard_with_auth_code_uses_auth_code_path() {
        assert_auth_code_path("costa", "mastercard");
    }

    #[test]
    fn costa_mastercard_without_auth_code_uses_time_window_60s() {
        assert_auth_code_falls_back_to_window("costa", "mastercard", 60);
    }

    #[test]
    fn costa_amex_primary_is_time_window_60s_and_first_six_last_four() {
        assert_window_and_first_six_last_four("costa", 60);
    }

    #[test]
    fn costa_visa_fallbacks_are_time_window_60s_then_user_first_six_last_four() {
        assert_time_window_then_user_card("costa", "visa", 60, "user-first-six-last-four");
    }

    #[test]
    fn costa_mastercard_fallbacks_are_time_window_60s_then_user_first_six_last_four() {
        assert_time_window_then_user_card("costa", "mastercard", 60, "user-first-six-last-four");
    }

    #[test]
    fn costa_amex_fallback_is_user_first_six_last_four_only() {
        assert_amex_fallback_is_user_card_only("costa", 60, "user-first-six-last-four");
    }

    #[test]
    fn costa_visa_and_mastercard_fallback_condition_is_always() {
        for provider in ["visa", "mastercard"] {
            let d = decide(
                "costa",
                payment(provider).auth(CODE).card(F6, L4),
                user(),
                vec![
                    scheme(at(0)).auth(CODE).card("999999", "9999"),
                    scheme(at(0)).auth(CODE).card(F6, L4),
                ],
            );
            assert_chosen(&d, 1, CONFIDENCE_USER_CARD);
        }
    }

    #[test]
    fn costa_amex_fallback_condition_is_payment_first_six_empty() {
        assert_fallbacks_need_empty_payment_first_six("costa", "amex", payment("amex"));
    }

    // ---- §7: itsu (t = 180) ----

    #[test]
    fn itsu_visa_with_auth_code_uses_auth_code_path() {
        assert_auth_code_or_nothing_with_code("itsu");
    }

    #[test]
    fn itsu_visa_without_auth_code_has_no_time_condition() {
        assert_auth_code_or_nothing_without_code("itsu");
    }

    #[test]
    fn itsu_mastercard_with_auth_code_uses_auth_code_path() {
        assert_auth_code_path("itsu", "mastercard");
    }

    #[test]
    fn itsu_mastercard_without_auth_code_uses_time_window_180s() {
        assert_auth_code_falls_back_to_window("itsu", "mastercard", 180);
    }

    #[test]
    fn itsu_amex_is_not_supported() {
        let d = decide(
            "itsu",
            payment("amex"),
            user(),
            vec![scheme(at(0)).card(F6, L4)],
        );
        assert_none(&d);
        assert_eq!(d.reason, "amex not supported for itsu");
    }

    #[test]
    fn itsu_visa_fallback_is_user_last_four_only() {
        assert_visa_fallback_is_user_last_four_only("itsu");
    }

    #[test]
    fn itsu_mastercard_fallbacks_are_time_window_180s_then_user_last_four() {
        assert_time_window_then_user_card("itsu", "mastercard", 180, "user-last-four");
    }

    #[test]
    fn itsu_fallback_condition_is_always() {
        for provider in ["visa", "mastercard"] {
            let d = decide(
                "itsu",
                payment(provider).auth(CODE).card(F6, L4),
                user(),
                vec![
                    scheme(at(0)).auth(CODE).card(F6, "9999"),
                    scheme(at(0)).auth(CODE).card(F6, L4),
                ],
            );
            assert_chosen(&d, 1, CONFIDENCE_USER_CARD);
        }
    }

    // ---- §7: stonegate (t = 180) ----

    #[test]
    fn stonegate_visa_with_auth_code_uses_auth_code_path() {
        assert_auth_code_or_nothing_with_code("stonegate");
    }

    #[test]
    fn stonegate_visa_without_auth_code_has_no_time_condition() {
        assert_auth_code_or_nothing_without_code("stonegate");
    }

    #[test]
    fn stonegate_mastercard_with_auth_code_uses_auth_code_path() {
        assert_auth_code_path("stonegate", "mastercard");
    }

    #[test]
    fn stonegate_mastercard_without_auth_code_uses_time_window_180s() {
        assert_auth_code_falls_back_to_window("stonegate", "mastercard", 180);
    }

    #[test]
    fn stonegate_amex_primary_is_time_window_180s_and_last_four() {
        let d = decide(
            "stonegate",
            payment("amex").card("", L4),
            None,
            vec![
                scheme(at(-181)).card("", L4),
                scheme(at(0)).card("", "9999"),
                scheme(at(180)).card("", L4),
            ],
        );
        assert_chosen(&d, 2, CONFIDENCE_PRIMARY);
        assert_eq!(
            d.reason,
            "amex: time-window(180s) + last-four → 1 candidate"
        );
    }

    #[test]
    fn stonegate_visa_fallback_is_user_last_four_only() {
        assert_visa_fallback_is_user_last_four_only("stonegate");
    }

    #[test]
    fn stonegate_mastercard_fallbacks_are_time_window_180s_then_user_last_four() {
        assert_time_window_then_user_card("stonegate", "mastercard", 180, "user-last-four");
    }

    #[test]
    fn stonegate_amex_fallback_is_user_last_four_only() {
        assert_amex_fallback_is_user_card_only("stonegate", 180, "user-last-four");
    }

    #[test]
    fn stonegate_amex_fallback_condition_is_payment_last_four_empty() {
        let same = || scheme(at(0)).card(F6, L4);
        let d = decide(
            "stonegate",
            payment("amex").card("", L4),
            user(),
            vec![same(), same()],
        );
        assert_none(&d);
        assert!(
            d.reason
                .ends_with("ambiguous, fallbacks not applied (payment last four present)"),
            "{}",
            d.reason
        );
        // A first six alone does not block them: the condition is on last four.
        let d = decide(
            "stonegate",
            payment("amex").card(F6, ""),
            user(),
            vec![scheme(at(0)).card(F6, "9999"), same()],
        );
        assert_chosen(&d, 1, CONFIDENCE_USER_CARD);
    }

    #[test]
    fn stonegate_visa_and_mastercard_fallback_condition_is_always() {
        for provider in ["visa", "mastercard"] {
            let d = decide(
                "stonegate",
                payment(provider).auth(CODE).card(F6, L4),
                user(),
                vec![
                    scheme(at(0)).auth(CODE).card(F6, "9999"),
                    scheme(at(0)).auth(CODE).card(F6, L4),
                ],
            );
            assert_chosen(&d, 1, CONFIDENCE_USER_CARD);
        }
    }

    // ---- §7: tgi-fridays (t = 180) ----

    #[test]
    fn tgi_fridays_visa_with_auth_code_uses_auth_code_path() {
        assert_auth_code_or_nothing_with_code("tgi-fridays");
    }

    #[test]
    fn tgi_fridays_visa_without_auth_code_has_no_time_condition() {
        assert_auth_code_or_nothing_without_code("tgi-fridays");
    }

    #[test]
    fn tgi_fridays_mastercard_with_auth_code_uses_auth_code_path() {
        assert_auth_code_path("tgi-fridays", "mastercard");
    }

    #[test]
    fn tgi_fridays_mastercard_without_auth_code_uses_time_window_180s() {
        assert_auth_code_falls_back_to_window("tgi-fridays", "mastercard", 180);
    }

    #[test]
    fn tgi_fridays_amex_primary_is_time_window_180s_and_first_six_last_four() {
        assert_window_and_first_six_last_four("tgi-fridays", 180);
    }

    #[test]
    fn tgi_fridays_visa_fallback_is_user_last_four_only() {
        assert_visa_fallback_is_user_last_four_only("tgi-fridays");
    }

    #[test]
    fn tgi_fridays_mastercard_fallbacks_are_time_window_180s_then_user_last_four() {
        assert_time_window_then_user_card("tgi-fridays", "mastercard", 180, "user-last-four");
    }

    #[test]
    fn tgi_fridays_amex_fallback_is_user_last_four_only() {
        assert_amex_fallback_is_user_card_only("tgi-fridays", 180, "user-last-four");
    }

    #[test]
    fn tgi_fridays_amex_fallback_condition_is_payment_first_six_empty() {
        assert_fallbacks_need_empty_payment_first_six("tgi-fridays", "amex", payment("amex"));
    }

    #[test]
    fn tgi_fridays_visa_and_mastercard_fallback_condition_is_always() {
        for provider in ["visa", "mastercard"] {
            let d = decide(
                "tgi-fridays",
                payment(provider).auth(CODE).card(F6, L4),
                user(),
                vec![
                    scheme(at(0)).auth(CODE).card(F6, "9999"),
                    scheme(at(0)).auth(CODE).card(F6, L4),
                ],
            );
            assert_chosen(&d, 1, CONFIDENCE_USER_CARD);
        }
    }

    // ---- provider ----

    #[test]
    fn provider_is_read_case_insensitively() {
        let d = decide(
            "wasabi-club",
            payment(" VISA ").auth(CODE),
            None,
            vec![scheme(at(0)).auth(CODE)],
        );
        assert_chosen(&d, 0, CONFIDENCE_PRIMARY);
        assert_eq!(d.reason, "visa: auth-code → 1 candidate");
    }

    #[test]
    fn payment_without_provider_is_no_match() {
        for provider in [None, Some(String::new())] {
            let mut p = payment("visa");
            p.provider = provider;
            let d = decide("wasabi-club", p, None, vec![scheme(at(0))]);
            assert_none(&d);
            assert_eq!(d.reason, "payment has no provider");
        }
    }

    #[test]
    fn provider_without_a_rule_is_no_match() {
        let d = decide(
            "wasabi-club",
            payment("discover"),
            None,
            vec![scheme(at(0))],
        );
        assert_none(&d);
        assert_eq!(
            d.reason,
            "discover: no rule for this provider at wasabi-club"
        );
    }

    #[test]
    fn many_groups_are_decided_in_order() {
        let groups = vec![
            Group {
                payment: payment("amex"),
                cardholder: None,
                candidates: vec![],
            },
            Group {
                payment: payment("amex"),
                cardholder: None,
                candidates: vec![scheme(at(1))],
            },
            Group {
                payment: payment("visa"),
                cardholder: None,
                candidates: vec![scheme(at(1)), scheme(at(2))],
            },
        ];
        let decisions = run_matcher::<Harmonia>(&merchant("itsu"), &groups).unwrap();
        let chosen: Vec<_> = decisions.iter().map(|d| d.chosen).collect();
        assert_eq!(chosen, [None, None, None]);
        assert_eq!(decisions[0].reason, "amex not supported for itsu");
        assert!(decisions[2].reason.ends_with(
            "user-last-four → n/a (no cardholder); ambiguous after fallbacks user-last-four"
        ));
    }

    // ---- config ----

    #[test]
    fn every_builtin_merchant_opens_with_its_window() {
        for (slug, t) in [
            ("iceland-bonus-card", 60),
            ("wasabi-club", 180),
            ("costa", 60),
            ("itsu", 180),
            ("stonegate", 180),
            ("tgi-fridays", 180),
        ] {
            let m = Harmonia::open(parse(&merchant(slug))).unwrap();
            assert_eq!(m.window_seconds, t, "{slug}");
            let providers: Vec<_> = m.rules.keys().map(String::as_str).collect();
            assert_eq!(providers, ["amex", "mastercard", "visa"], "{slug}");
        }
    }

    fn parse(config: &str) -> Config {
        accord_plugin_sdk::parse_config(config).unwrap()
    }

    #[test]
    fn time_window_seconds_overrides_the_builtin_window() {
        let config = r#"{"merchant": "wasabi-club", "time_window_seconds": 60}"#;
        let d = decide_with(
            config,
            payment("visa"),
            None,
            vec![scheme(at(61)), scheme(at(-60))],
        );
        assert_chosen(&d, 1, CONFIDENCE_PRIMARY);
        assert_eq!(
            d.reason,
            "visa: auth-code(no code: time-window(60s)) → 1 candidate"
        );
    }

    #[test]
    fn custom_rules_configure_another_merchant_without_code() {
        let config = r#"{
            "merchant": "acme-coffee",
            "time_window_seconds": 120,
            "rules": {
                "visa": {"primary": "time-window+last-four",
                         "fallbacks": ["time-window", "user-first-six-last-four"],
                         "fallback_condition": "payment-last-four-empty"},
                "mastercard": {"primary": "time-window+first-six-last-four"},
                "amex": {"primary": "unsupported"}
            }
        }"#;
        let d = decide_with(
            config,
            payment("visa"),
            user(),
            vec![
                scheme(at(120)).card("999999", L4),
                scheme(at(-120)).card(F6, L4),
                scheme(at(121)),
            ],
        );
        assert_chosen(&d, 1, CONFIDENCE_USER_CARD);
        assert_eq!(
            d.reason,
            "visa: time-window(120s) + last-four(n/a: no payment last four) → 2 candidates; \
             time-window(120s) → 2 candidates; user-first-six-last-four → 1 candidate"
        );
        let d = decide_with(config, payment("amex"), None, vec![scheme(at(0))]);
        assert_eq!(d.reason, "amex not supported for acme-coffee");
        // No fallbacks configured: ambiguity is no match.
        let d = decide_with(
            config,
            payment("mastercard"),
            None,
            vec![scheme(at(0)), scheme(at(1))],
        );
        assert_none(&d);
        assert!(
            d.reason
                .ends_with("→ 2 candidates; ambiguous, no fallbacks"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn custom_rules_replace_a_builtin_rule_per_provider() {
        let config = r#"{"merchant": "itsu",
            "rules": {"AMEX": {"primary": "time-window+first-six-last-four", "fallbacks": ["user-last-four"]}}}"#;
        let d = decide_with(
            config,
            payment("amex"),
            None,
            vec![scheme(at(180)), scheme(at(181))],
        );
        assert_chosen(&d, 0, CONFIDENCE_PRIMARY);
        assert!(
            d.reason.starts_with("amex: time-window(180s)"),
            "{}",
            d.reason
        );
        // Visa keeps itsu's built-in AC0.
        let d = decide_with(config, payment("visa"), None, vec![scheme(at(-86_400))]);
        assert_chosen(&d, 0, CONFIDENCE_PRIMARY);
    }

    #[test]
    fn custom_rule_fallback_condition_defaults_to_always() {
        let config = r#"{"merchant": "acme", "time_window_seconds": 60,
            "rules": {"amex": {"primary": "time-window", "fallbacks": ["user-last-four"]}}}"#;
        let d = decide_with(
            config,
            payment("amex").card(F6, L4),
            user(),
            vec![scheme(at(0)).card("", "9999"), scheme(at(0)).card("", L4)],
        );
        assert_chosen(&d, 1, CONFIDENCE_USER_CARD);
    }

    #[test]
    fn custom_rules_without_a_time_window_need_no_window() {
        let config = r#"{"merchant": "acme",
            "rules": {"visa": {"primary": "auth-code-or-nothing", "fallbacks": ["user-last-four"]}}}"#;
        let d = decide_with(config, payment("visa"), None, vec![scheme(at(-86_400))]);
        assert_chosen(&d, 0, CONFIDENCE_PRIMARY);
    }

    #[test]
    fn unknown_merchant_without_rules_is_invalid_config() {
        assert_config_error(r#"{"merchant": "acme"}"#, "unknown merchant `acme`");
        assert_config_error(
            r#"{"merchant": "acme", "rules": {}}"#,
            "unknown merchant `acme`",
        );
    }

    #[test]
    fn missing_or_empty_merchant_is_invalid_config() {
        assert_config_error("{}", "merchant");
        assert_config_error("", "merchant");
        assert_config_error(r#"{"merchant": " "}"#, "`merchant` is empty");
    }

    #[test]
    fn unknown_config_key_is_invalid_config() {
        assert_config_error(
            r#"{"merchant": "itsu", "window": 10}"#,
            "unknown field `window`",
        );
    }

    #[test]
    fn unknown_rule_names_are_invalid_config() {
        let rule = |r: &str| format!(r#"{{"merchant": "itsu", "rules": {{"visa": {r}}}}}"#);
        assert_config_error(&rule(r#"{"primary": "auth"}"#), "unknown variant `auth`");
        assert_config_error(
            &rule(r#"{"primary": "auth-code", "fallbacks": ["last-four"]}"#),
            "unknown variant `last-four`",
        );
        assert_config_error(
            &rule(r#"{"primary": "auth-code", "fallback_condition": "never"}"#),
            "unknown variant `never`",
        );
        assert_config_error(&rule(r#"{"fallbacks": []}"#), "missing field `primary`");
        assert_config_error(
            r#"{"merchant": "itsu", "rules": {"": {"primary": "auth-code"}}}"#,
            "empty provider name",
        );
    }

    #[test]
    fn custom_time_rules_without_a_window_are_invalid_config() {
        assert_config_error(
            r#"{"merchant": "acme", "rules": {"visa": {"primary": "auth-code"}}}"#,
            "`time_window_seconds` is required",
        );
        assert_config_error(
            r#"{"merchant": "acme", "rules": {"visa": {"primary": "auth-code-or-nothing", "fallbacks": ["time-window"]}}}"#,
            "`time_window_seconds` is required",
        );
    }

    #[test]
    fn negative_time_window_is_invalid_config() {
        assert_config_error(
            r#"{"merchant": "itsu", "time_window_seconds": -1}"#,
            "expected u32",
        );
    }
}
