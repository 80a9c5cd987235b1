//! The identify and match stages (matching-rules.md), after parse.
//!
//! - **Stage** ([`stage_pending`]): every parsed import is staged once,
//!   payment-side imports in import order and merchant-side imports in
//!   import order, the two kinds side by side: payment-side rows are
//!   identified through their MIDs and
//!   collapsed into one payment per purchase by settlement key; per the
//!   merchant's mode they wait for a partner (match), become SPOTTED, or are
//!   streamed (refunds always are); merchant-side rows become scheme records
//!   (store ids expanded to the location's MIDs) and flag the pending
//!   payments they may belong to. Both sides' new data are triggers.
//! - **Match** ([`match_pending`]): flagged payments are claimed in batches
//!   (row locks, `SKIP LOCKED`, so several workers or daemons share the
//!   work), their candidates selected by the store's indexes, and each
//!   merchant's matcher plugin decides many groups per call. A decision at or
//!   above the merchant's auto-confirm confidence becomes a match, one below
//!   it a review; the database's unique constraints make sure no transaction
//!   ends in two matches.
//! - **Sweep** ([`sweep_unmatched`]): old pending payments become UNMATCHED
//!   for merchants that ask for it.
//!
//! [`run_until_idle`] does all three until nothing is left; [`run_engine`]
//! is the daemon's loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Notify;
use tracing::Instrument as _;
use tracing::instrument::WithSubscriber as _;

use super::Context;
use crate::domain::MatchGroup;
use crate::plugins::Runtime;
use crate::store::matching::{BatchCounts, ClaimCursor, ClaimScope, MerchantWork, Stager, Verdict};
use crate::store::{Reidentified, StageCounts, StoreError};

/// Payments claimed per batch: one transaction, a few matcher calls.
pub const BATCH: i64 = 2000;
/// Groups per matcher call.
const GROUPS_PER_CALL: usize = 500;
/// Unmatched sweep: payments per statement.
const SWEEP_LIMIT: i64 = 10_000;
/// How often the daemon looks for new work.
const POLL: Duration = Duration::from_secs(1);
/// How often the daemon re-identifies, retries failed matchers and sweeps.
const FULL_PASS: Duration = Duration::from_secs(30);

/// What a run of the stages did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MatchStats {
    pub imports_staged: u64,
    pub staged: StageCounts,
    pub reidentified: Reidentified,
    pub batches: u64,
    pub claimed: u64,
    #[serde(flatten)]
    pub decided: BatchCounts,
    pub swept_unmatched: u64,
}

impl MatchStats {
    /// Add what matching batches did (batches, claimed, decided).
    fn add_batches(&mut self, o: &MatchStats) {
        self.batches += o.batches;
        self.claimed += o.claimed;
        self.decided += o.decided;
    }
}

/// Stage every parsed import that is not yet staged: payment-side imports
/// oldest first, and beside them merchant-side imports oldest first (see
/// [`Store::stage_next`](crate::store::Store::stage_next) for the locks).
pub async fn stage_pending(ctx: &Context, stats: &mut MatchStats) -> Result<(), StoreError> {
    stage_pending_signalling(ctx, stats, &Arc::new(Signals::default())).await
}

/// What staging tells matching while both run.
#[derive(Default)]
struct Signals {
    /// An import was staged, or a stager stopped.
    staged: Notify,
    /// Payment-side staging stopped (done or failed).
    payment_side_over: AtomicBool,
    /// Both stagers stopped.
    staging_over: AtomicBool,
}

/// A spawned task, aborted when dropped: a caller that stops waiting (a
/// timeout, a shutdown) leaves nothing running behind it. A panic in the
/// task is resumed in the caller.
///
/// The stages run as tasks of their own, not as futures joined in the
/// caller's task: sqlx decodes and encodes rows in the task that polls the
/// connection, so joined in one task the stagers' and workers' row work
/// all ran on one thread, and one of the two cores was idle for a third
/// of `bench match` (vmstat).
struct Task<T>(tokio::task::JoinHandle<T>);

impl<T: Send + 'static> Task<T> {
    fn spawn(future: impl std::future::Future<Output = T> + Send + 'static) -> Self {
        // With the caller's span and subscriber (`bench match` sets its own
        // on its thread).
        Task(tokio::spawn(
            future.in_current_span().with_current_subscriber(),
        ))
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::future::Future for Task<T> {
    type Output = T;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<T> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| match r {
            Ok(v) => v,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Aborted only by our own drop, which never polls again.
                Err(e) => unreachable!("stage task cancelled while awaited: {e}"),
            },
        })
    }
}

/// [`stage_pending`], telling `signals` each time an import is staged and
/// when payment-side staging stops.
async fn stage_pending_signalling(
    ctx: &Context,
    stats: &mut MatchStats,
    signals: &Arc<Signals>,
) -> Result<(), StoreError> {
    let payment_side = Task::spawn({
        let (ctx, signals) = (ctx.clone(), Arc::clone(signals));
        async move {
            let r = stage_all(&ctx, Stager::Payment, &signals.staged).await;
            signals.payment_side_over.store(true, Ordering::SeqCst);
            signals.staged.notify_one();
            r
        }
    });
    let merchant_side = Task::spawn({
        let (ctx, signals) = (ctx.clone(), Arc::clone(signals));
        async move { stage_all(&ctx, Stager::Merchant, &signals.staged).await }
    });
    let (payment, merchant) = tokio::join!(payment_side, merchant_side);
    // Both run to their end; what either staged is counted, and the first
    // error is reported.
    let mut first_error = None;
    for (imports, counts, error) in [payment, merchant] {
        stats.imports_staged += imports;
        stats.staged += counts;
        if let Some(e) = error {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// One stager's imports until none is left or one fails: how many were
/// staged, what they did, and the failure.
async fn stage_all(
    ctx: &Context,
    stager: Stager,
    staged: &Notify,
) -> (u64, StageCounts, Option<StoreError>) {
    let config = ctx.config.clone();
    let merchant_of = move |source: &str| config.source(source).and_then(|s| s.merchant.clone());
    let (mut imports, mut total) = (0, StageCounts::default());
    loop {
        match ctx
            .store
            .stage_next(stager, &merchant_of)
            .instrument(tracing::info_span!("stage", ?stager))
            .await
        {
            Ok(Some((import_id, counts))) => {
                tracing::info!(import_id, ?counts, "import staged");
                imports += 1;
                total += counts;
                staged.notify_one();
            }
            Ok(None) => return (imports, total, None),
            // Rolled back whole (a deadlock with the other stager): the
            // import is still unstaged; stage it again.
            Err(e) if e.is_concurrency_abort() => {
                tracing::info!(error = %e, ?stager, "staging rolled back by the database; staging again");
            }
            Err(e) => return (imports, total, Some(e)),
        }
    }
}

/// Stage and match side by side until neither has anything left: matching
/// takes what each staged import flagged while the next imports are staged
/// (each side's staging still one import at a time, in import order). On a
/// 2-core machine staging a large import leaves a core mostly idle, and
/// matching the imports staged before it uses it (`bench match`, two
/// consecutive runs: 85.0 s staging then matching, 73.8 s side by side).
///
/// While payment-side imports are still being staged, only payments they
/// cannot change are matched ([`ClaimScope::Settled`]): an authorisation
/// waits, since its settlement may be in the next import.
///
/// Matching's claims wait while merchant-side staging holds its lock (see
/// [`Store::claim_match_batch`](crate::store::Store::claim_match_batch)),
/// so a claim never misses records being staged. After staging stops (done
/// or failed) matching makes one more pass, so nothing staged waits for the
/// next call. The first error of either is returned, after both stopped.
pub async fn stage_and_match(ctx: &Context, stats: &mut MatchStats) -> Result<(), StoreError> {
    let signals = Arc::new(Signals::default());
    let mut staging_stats = MatchStats::default();
    let staging = async {
        let result = stage_pending_signalling(ctx, &mut staging_stats, &signals).await;
        signals.staging_over.store(true, Ordering::SeqCst);
        signals.staged.notify_one();
        result
    };
    let matching = async {
        let mut m = MatchStats::default();
        loop {
            // Read before the pass: a pass that started after staging
            // stopped saw everything it staged.
            let last = signals.staging_over.load(Ordering::SeqCst);
            let scope = if signals.payment_side_over.load(Ordering::SeqCst) {
                ClaimScope::All
            } else {
                ClaimScope::Settled
            };
            if let Err(e) = match_in(ctx, &mut m, ctx.config.match_workers, scope).await {
                return (m, Err(e));
            }
            if last {
                return (m, Ok(()));
            }
            // A permit is kept if the notice came during the pass.
            signals.staged.notified().await;
        }
    };
    let (staged_result, (matched, matched_result)) = tokio::join!(staging, matching);
    stats.imports_staged += staging_stats.imports_staged;
    stats.staged += staging_stats.staged;
    stats.add_batches(&matched);
    staged_result.and(matched_result)
}

/// Claim and decide flagged payments until none is left, with
/// `config.match_workers` batches under way at once.
pub async fn match_pending(ctx: &Context, stats: &mut MatchStats) -> Result<(), StoreError> {
    match_pending_with(ctx, stats, ctx.config.match_workers).await
}

/// [`match_pending`] with `workers` concurrent workers (at least one).
///
/// Each worker claims its own batch (row locks with `SKIP LOCKED`: the
/// batches never share a payment), decides it on a blocking thread and
/// commits it; while one batch is in the matcher plugin another is in
/// PostgreSQL. Workers may choose the same merchant record for two
/// payments: the unique constraints of `matches` give it to one, and the
/// other payment is retried (see [`MatchBatch::commit`]).
///
/// [`MatchBatch::commit`]: crate::store::matching::MatchBatch::commit
pub async fn match_pending_with(
    ctx: &Context,
    stats: &mut MatchStats,
    workers: usize,
) -> Result<(), StoreError> {
    match_in(ctx, stats, workers, ClaimScope::All).await
}

/// [`match_pending_with`] for the flagged payments in `scope`. Each worker
/// is a task of its own (see [`Task`]).
async fn match_in(
    ctx: &Context,
    stats: &mut MatchStats,
    workers: usize,
    scope: ClaimScope,
) -> Result<(), StoreError> {
    let shared = Arc::new(Pass {
        batches: AtomicU64::new(stats.batches),
        scope,
        cursor: std::sync::Mutex::new(None),
    });
    let worker = |until_backlog: bool| {
        let (ctx, shared) = (ctx.clone(), Arc::clone(&shared));
        Task::spawn(async move { match_worker(&ctx, &shared, until_backlog).await })
    };
    // One worker until a full batch shows a backlog: a few payments are
    // decided in one batch, as one transaction, whatever the setting.
    let (first, backlog) = worker(workers > 1).await?;
    stats.add_batches(&first);
    if !backlog {
        return Ok(());
    }
    let results = futures::future::join_all((0..workers).map(|_| worker(false))).await;
    let mut first_error = None;
    for result in results {
        match result {
            Ok((s, _)) => stats.add_batches(&s),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// What the workers of one matching pass share.
struct Pass {
    /// Batches claimed so far (numbers the batches' spans).
    batches: AtomicU64,
    scope: ClaimScope,
    /// Where the last claim ended: the next one starts after it, and goes
    /// back to the start when nothing is left after it (payments flagged
    /// again behind it: a lost race, an ambiguity resolved).
    cursor: std::sync::Mutex<Option<ClaimCursor>>,
}

impl Pass {
    fn cursor(&self) -> Option<ClaimCursor> {
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_cursor(&self, cursor: Option<ClaimCursor>) {
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = cursor;
    }
}

/// Claim, decide and commit batches until none is left or, with
/// `until_backlog`, until a full batch shows there is a backlog (then
/// `true`).
async fn match_worker(
    ctx: &Context,
    pass: &Pass,
    until_backlog: bool,
) -> Result<(MatchStats, bool), StoreError> {
    let mut stats = MatchStats::default();
    loop {
        let after = pass.cursor();
        let (s, full) = match_one(ctx, pass, after).await?;
        stats.add_batches(&s);
        if s.claimed == 0 && !full {
            if after.is_some() {
                // Nothing after the cursor: once more from the start.
                pass.set_cursor(None);
                continue;
            }
            return Ok((stats, false));
        }
        if full && until_backlog {
            return Ok((stats, true));
        }
    }
}

/// One batch: claimed, decided on a blocking thread, committed. Returns
/// what it did and whether the claim was full ([`BATCH`] payments). A
/// batch the database rolled back (deadlock with another worker) counts
/// nothing and reports itself full, so that it is claimed again.
async fn match_one(
    ctx: &Context,
    pass: &Pass,
    after: Option<ClaimCursor>,
) -> Result<(MatchStats, bool), StoreError> {
    let mut stats = MatchStats::default();
    let n = pass.batches.fetch_add(1, Ordering::Relaxed) + 1;
    let span = tracing::info_span!("match", batch = n);
    let Some(mut batch) = ctx
        .store
        .claim_match_batch_in(BATCH, pass.scope, after)
        .instrument(span.clone())
        .await?
    else {
        return Ok((stats, false));
    };
    pass.set_cursor(batch.cursor());
    let claimed = batch.len() as u64;
    let full = claimed >= BATCH as u64;
    let work = std::mem::take(&mut batch.work);
    let runtime = ctx.runtime.clone();
    let verdicts = {
        let span = tracing::info_span!(parent: &span, "decide");
        // The blocking thread gets this task's subscriber too: closing the
        // span there releases its parent through the thread's default
        // (`bench match` sets its own subscriber on its thread only).
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        tokio::task::spawn_blocking(move || {
            tracing::dispatcher::with_default(&dispatch, move || {
                span.in_scope(|| decide_all(&runtime, &work))
            })
        })
        .await
        .map_err(|e| StoreError::Conflict(format!("matcher task failed: {e}")))?
    };
    match batch.commit(verdicts).instrument(span.clone()).await {
        Ok(counts) => {
            span.in_scope(|| tracing::debug!(claimed, ?counts, "batch committed"));
            stats.batches = 1;
            stats.claimed = claimed;
            stats.decided = counts;
            Ok((stats, full))
        }
        // Rolled back whole: the payments are still flagged, and the next
        // claim (this worker's or another's) takes them again.
        Err(e) if e.is_concurrency_abort() => {
            span.in_scope(|| {
                tracing::info!(error = %e, claimed, "batch rolled back by the database; claiming again")
            });
            Ok((stats, true))
        }
        Err(e) => Err(e),
    }
}

/// Mark old pending payments UNMATCHED (merchants with `unmatched_after_days`).
pub async fn sweep_unmatched(ctx: &Context, now: DateTime<Utc>) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let n = ctx.store.sweep_unmatched(now, SWEEP_LIMIT).await?;
        total += n;
        if n < SWEEP_LIMIT as u64 {
            if total > 0 {
                tracing::info!(payments = total, "unmatched sweep");
            }
            return Ok(total);
        }
    }
}

/// Stage, re-identify, match and sweep until there is nothing left to do.
pub async fn run_until_idle(ctx: &Context) -> Result<MatchStats, StoreError> {
    let mut stats = MatchStats::default();
    loop {
        stage_and_match(ctx, &mut stats).await?;
        let r = ctx.store.reidentify().await?;
        stats.reidentified.payments_identified += r.payments_identified;
        stats.reidentified.cards_registered += r.cards_registered;
        stats.reidentified.scheme_assigned += r.scheme_assigned;
        stats.reidentified.retried += r.retried;
        if r != Reidentified::default() {
            match_pending(ctx, &mut stats).await?;
        }
        stats.swept_unmatched += sweep_unmatched(ctx, Utc::now()).await?;
        // Staging or a review decision may have raced the loop; go round
        // again only if something new is there.
        if !ctx.store.has_match_work().await? && !ctx.store.has_unstaged_imports().await? {
            return Ok(stats);
        }
    }
}

/// The daemon's matching loop. Every second it looks for new work (an
/// import to stage, a flagged payment) and does it; every 30 s it also
/// re-identifies (when MIDs or cards changed since the last time), retries
/// failed matchers and sweeps. Several daemons on one database share the
/// work through the store's row locks.
pub async fn run_engine(ctx: Arc<Context>) {
    let mut last_full: Option<std::time::Instant> = None;
    let mut reference_seen: Option<DateTime<Utc>> = None;
    loop {
        let due = last_full.is_none_or(|t| t.elapsed() >= FULL_PASS);
        let result = async {
            let mut stats = MatchStats::default();
            if due {
                let stamp = ctx.store.reference_changed_at().await?;
                if reference_seen.is_none() || stamp > reference_seen {
                    stats.reidentified = ctx.store.reidentify().await?;
                    reference_seen = stamp;
                } else {
                    stats.reidentified.retried = ctx.store.retry_due().await?;
                }
                stats.swept_unmatched = sweep_unmatched(&ctx, Utc::now()).await?;
            }
            while ctx.store.has_unstaged_imports().await? || ctx.store.has_match_work().await? {
                stage_and_match(&ctx, &mut stats).await?;
            }
            Ok::<_, StoreError>(stats)
        }
        .await;
        match result {
            Ok(stats) => {
                if due {
                    last_full = Some(std::time::Instant::now());
                }
                if stats != MatchStats::default() {
                    tracing::info!(?stats, "matching pass");
                }
            }
            Err(e) => tracing::warn!(error = %e, "matching pass stopped; retrying"),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Decide every claimed payment: one matcher session per merchant in the
/// batch, groups in chunks. Runs on a blocking thread (plugins are sync).
fn decide_all(runtime: &Runtime, work: &[MerchantWork]) -> Vec<(i64, Verdict)> {
    let mut verdicts = Vec::with_capacity(work.iter().map(|w| w.payments.len()).sum());
    for mw in work {
        let merchant = &mw.merchant;
        // Payments with nothing to choose from never reach the plugin.
        let mut to_decide = Vec::new();
        for (i, pw) in mw.payments.iter().enumerate() {
            if let Some(n) = pw.too_many {
                verdicts.push((
                    pw.payment_id,
                    Verdict::NoMatch {
                        reason: format!(
                            "{n} candidates (more than {}): too ambiguous to decide",
                            crate::store::matching::MAX_CANDIDATES
                        ),
                        candidates: n,
                        plugin: None,
                    },
                ));
            } else if pw.group.candidates.is_empty() {
                verdicts.push((
                    pw.payment_id,
                    Verdict::NoMatch {
                        reason:
                            "no candidates: no pending merchant record with this MID, provider, \
                                 currency and amount in the lookback window"
                                .into(),
                        candidates: 0,
                        plugin: None,
                    },
                ));
            } else {
                to_decide.push(i);
            }
        }
        if to_decide.is_empty() {
            continue;
        }
        let mut config = merchant.matcher_config.clone();
        if let Some(obj) = config.as_object_mut() {
            obj.entry("merchant")
                .or_insert_with(|| serde_json::Value::String(merchant.slug.clone()));
        }
        let mut session = None;
        for chunk in to_decide.chunks(GROUPS_PER_CALL) {
            if session.is_none() {
                match runtime.open_matcher(&merchant.matcher, Some(&config)) {
                    Ok(s) => session = Some(s),
                    Err(e) => {
                        let reason =
                            format!("matcher `{}` for {}: {e}", merchant.matcher, merchant.slug);
                        tracing::warn!(%reason, "matcher unavailable");
                        for &i in chunk {
                            verdicts.push((
                                mw.payments[i].payment_id,
                                Verdict::Error {
                                    reason: reason.clone(),
                                },
                            ));
                        }
                        continue;
                    }
                }
            }
            let s = session.as_mut().expect("opened above");
            let groups: Vec<&MatchGroup> = chunk.iter().map(|&i| &mw.payments[i].group).collect();
            match s.decide(&groups) {
                Ok(decisions) => {
                    let plugin = s.identity().clone();
                    for (&i, d) in chunk.iter().zip(decisions) {
                        let pw = &mw.payments[i];
                        let candidates = pw.candidate_ids.len();
                        let verdict = match d.chosen {
                            Some(c) if d.confidence >= merchant.auto_confirm_confidence => {
                                Verdict::Match {
                                    scheme_id: pw.candidate_ids[c],
                                    reason: d.reason,
                                    confidence: d.confidence,
                                    candidates,
                                    plugin: plugin.clone(),
                                }
                            }
                            Some(c) => Verdict::Review {
                                scheme_id: pw.candidate_ids[c],
                                reason: d.reason,
                                confidence: d.confidence,
                                candidates,
                                plugin: plugin.clone(),
                            },
                            None => Verdict::NoMatch {
                                reason: d.reason,
                                candidates,
                                plugin: Some(plugin.clone()),
                            },
                        };
                        verdicts.push((pw.payment_id, verdict));
                    }
                }
                Err(e) => {
                    let reason =
                        format!("matcher `{}` for {}: {e}", merchant.matcher, merchant.slug);
                    tracing::warn!(%reason, "matcher call failed");
                    for &i in chunk {
                        verdicts.push((
                            mw.payments[i].payment_id,
                            Verdict::Error {
                                reason: reason.clone(),
                            },
                        ));
                    }
                    // A failed instance is not reused.
                    session = None;
                }
            }
        }
    }
    verdicts
}
