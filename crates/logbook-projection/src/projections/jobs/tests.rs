use proptest::prelude::*;

use super::*;
use crate::error::Error;
use crate::model::{
    JobCancelled, JobClaimed, JobFailed, JobHeartbeat, JobLeaseExpired, JobProgress, JobSucceeded,
};
use crate::projections::test_support::Log;
use crate::projections::{RunLedger, interrupted};

fn queued() -> BuiltinEvent {
    JobQueued {
        kind: "train".into(),
        input: "{}".into(),
    }
    .into()
}

fn claimed(worker: &str, until_ms: u64) -> BuiltinEvent {
    JobClaimed {
        worker: worker.into(),
        lease_expires_at_ms: until_ms,
    }
    .into()
}

fn heartbeat(worker: &str, until_ms: u64) -> BuiltinEvent {
    JobHeartbeat {
        worker: worker.into(),
        lease_expires_at_ms: until_ms,
    }
    .into()
}

fn progress(percent: u8) -> BuiltinEvent {
    JobProgress {
        stage: Some("train".into()),
        percent: Some(percent),
        ..Default::default()
    }
    .into()
}

fn rejected_reason(result: Result<()>) -> RejectReason {
    match result {
        Err(Error::Rejected { reason, .. }) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn a_job_is_queued_claimed_and_succeeds() {
    let mut log = Log::default();
    let mut jobs = Jobs::new();
    log.append(&mut jobs, "job/j", queued()).unwrap();
    log.append(&mut jobs, "job/j", claimed("w1", 100)).unwrap();
    log.append(&mut jobs, "job/j", progress(40)).unwrap();
    log.append(&mut jobs, "job/j", heartbeat("w1", 200))
        .unwrap();
    let job = jobs.job("j").unwrap();
    assert_eq!(job.status, JobStatus::Claimed);
    assert_eq!(job.attempts, 1);
    assert_eq!(job.claim.as_ref().unwrap().lease_expires_at_ms, 200);
    assert_eq!(job.progress.as_ref().unwrap().percent, Some(40));
    assert_eq!(jobs.live_claim("j", 199).unwrap().worker, "w1");
    assert_eq!(jobs.live_claim("j", 200), None);

    let interrupted_now = jobs.interrupted();
    assert_eq!(interrupted_now.len(), 1);
    assert_eq!(
        interrupted_now[0].progress.as_ref().unwrap().percent,
        Some(40)
    );

    log.append(
        &mut jobs,
        "job/j",
        JobSucceeded {
            result: Some("m".into()),
        }
        .into(),
    )
    .unwrap();
    let job = jobs.job("j").unwrap();
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.claim, None);
    assert_eq!(job.result.as_deref(), Some("m"));
    assert!(jobs.interrupted().is_empty());
    assert_eq!(
        rejected_reason(jobs.can_claim("j", 0)),
        RejectReason::AlreadyEnded
    );
    assert_eq!(
        rejected_reason(jobs.can_queue("j")),
        RejectReason::AlreadyExists
    );
}

#[test]
fn at_most_one_live_claim() {
    let mut log = Log::default();
    let mut jobs = Jobs::new();
    log.append(&mut jobs, "job/j", queued()).unwrap();
    log.append(&mut jobs, "job/j", claimed("w1", 10)).unwrap();
    // The log's clock is at 2: the lease of w1 is live until 10.
    let stolen = log.append(&mut jobs, "job/j", claimed("w2", 50));
    assert_eq!(
        rejected_reason(stolen),
        RejectReason::LeaseLive {
            worker: "w1".into(),
            lease_expires_at_ms: 10
        }
    );
    let early = log.append(
        &mut jobs,
        "job/j",
        JobLeaseExpired {
            worker: "w1".into(),
        }
        .into(),
    );
    assert!(matches!(
        rejected_reason(early),
        RejectReason::LeaseLive { .. }
    ));
    let stranger = log.append(&mut jobs, "job/j", heartbeat("w2", 50));
    assert!(matches!(
        rejected_reason(stranger),
        RejectReason::NotClaimedBy { .. }
    ));
    assert!(jobs.expired_leases(9).is_empty());
    assert_eq!(jobs.expired_leases(10), [("j", "w1")]);

    // Time passes: w1's heartbeat is too late, the lease expires, w2 claims.
    log.now_ms = 20;
    let late = log.append(&mut jobs, "job/j", heartbeat("w1", 99));
    assert!(matches!(
        rejected_reason(late),
        RejectReason::NotClaimedBy { .. }
    ));
    let wrong_worker = JobLeaseExpired {
        worker: "w2".into(),
    };
    assert!(log.append(&mut jobs, "job/j", wrong_worker.into()).is_err());
    log.append(
        &mut jobs,
        "job/j",
        JobLeaseExpired {
            worker: "w1".into(),
        }
        .into(),
    )
    .unwrap();
    let job = jobs.job("j").unwrap();
    assert_eq!(
        (job.status, job.lease_expirations, job.claim.is_none()),
        (JobStatus::Queued, 1, true)
    );
    assert!(jobs.interrupted().is_empty());
    log.append(&mut jobs, "job/j", claimed("w2", 90)).unwrap();
    assert_eq!(jobs.job("j").unwrap().attempts, 2);
    assert_eq!(jobs.live_claim("j", 30).unwrap().worker, "w2");
}

#[test]
fn endings_and_retries() {
    let mut log = Log::default();
    let mut jobs = Jobs::new();
    log.append(&mut jobs, "job/a", queued()).unwrap();
    let early = log.append(&mut jobs, "job/a", JobSucceeded::default().into());
    assert!(matches!(
        rejected_reason(early),
        RejectReason::InvalidTransition { from: "queued", .. }
    ));
    log.append(&mut jobs, "job/a", JobCancelled::default().into())
        .unwrap();
    assert_eq!(jobs.job("a").unwrap().status, JobStatus::Cancelled);

    log.append(&mut jobs, "job/b", queued()).unwrap();
    log.append(&mut jobs, "job/b", claimed("w", 100)).unwrap();
    log.append(&mut jobs, "job/b", progress(10)).unwrap();
    let failure = JobFailed {
        error: "oom".into(),
        retryable: true,
    };
    log.append(&mut jobs, "job/b", failure.into()).unwrap();
    log.append(&mut jobs, "job/b", queued()).unwrap();
    let job = jobs.job("b").unwrap();
    assert_eq!(
        (job.status, job.progress.is_none(), job.attempts),
        (JobStatus::Queued, true, 1)
    );

    log.append(&mut jobs, "job/c", queued()).unwrap();
    log.append(&mut jobs, "job/c", claimed("w", 100)).unwrap();
    let failure = JobFailed {
        error: "bad input".into(),
        retryable: false,
    };
    log.append(&mut jobs, "job/c", failure.into()).unwrap();
    assert_eq!(
        rejected_reason(log.append(&mut jobs, "job/c", queued())),
        RejectReason::AlreadyExists
    );
    assert_eq!(
        rejected_reason(jobs.can_claim("nope", 0)),
        RejectReason::NotFound
    );

    let page = jobs.list_jobs(Some(JobStatus::Queued), &PageRequest::default());
    assert_eq!(
        page.items
            .iter()
            .map(|job| job.job_id.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(jobs.list_jobs(None, &PageRequest::default()).items.len(), 3);
}

#[test]
fn interrupted_lists_claimed_jobs_with_progress() {
    let mut log = Log::default();
    let mut jobs = Jobs::new();
    log.append(&mut jobs, "job/a", queued()).unwrap();
    log.append(&mut jobs, "job/b", queued()).unwrap();
    log.append(&mut jobs, "job/b", claimed("w", 100)).unwrap();
    log.append(&mut jobs, "job/b", progress(70)).unwrap();
    let replayed: Jobs = log.replay();
    let all = interrupted(&RunLedger::new(), &replayed);
    assert!(all.runs.is_empty() && all.workflows.is_empty());
    assert_eq!(all.jobs.len(), 1);
    assert_eq!(all.jobs[0].job_id, "b");
    assert_eq!(all.jobs[0].claim.worker, "w");
    assert_eq!(all.jobs[0].progress.as_ref().unwrap().percent, Some(70));
}

fn arbitrary_command() -> impl Strategy<Value = (String, BuiltinEvent, u64)> {
    let stream = prop_oneof![Just("job/a"), Just("job/b")];
    let worker = prop_oneof![Just("w1"), Just("w2")];
    let event = prop_oneof![
        Just(queued()),
        (worker.clone(), 0u64..40).prop_map(|(worker, until)| claimed(worker, until)),
        (worker.clone(), 0u64..40).prop_map(|(worker, until)| heartbeat(worker, until)),
        worker.prop_map(|worker| JobLeaseExpired {
            worker: worker.into()
        }
        .into()),
        (0u8..=100).prop_map(progress),
        Just(JobSucceeded::default().into()),
        any::<bool>().prop_map(|retryable| JobFailed {
            error: "e".into(),
            retryable
        }
        .into()),
        Just(JobCancelled::default().into()),
    ];
    (stream, event, 0u64..3).prop_map(|(stream, event, pause)| (stream.to_owned(), event, pause))
}

proptest! {
    #[test]
    fn live_state_equals_replay_and_restore(
        commands in proptest::collection::vec((arbitrary_command(), any::<bool>()), 0..80)
    ) {
        let mut log = Log::default();
        let mut jobs = Jobs::new();
        for ((stream, event, pause), skip_validation) in commands {
            log.now_ms += pause;
            if skip_validation {
                log.force(&mut jobs, &stream, event);
            } else {
                let _ = log.append(&mut jobs, &stream, event);
            }
            // Validation keeps at most one live claim per job at every moment.
            for id in ["a", "b"] {
                if let Some(job) = jobs.job(id) {
                    prop_assert!(job.claim.is_none() || job.status == JobStatus::Claimed);
                }
            }
        }
        let replayed: Jobs = log.replay();
        prop_assert_eq!(&replayed, &jobs);
        let mut restored = Jobs::new();
        restored.restore(JOBS_STATE_VERSION, &jobs.snapshot().unwrap()).unwrap();
        prop_assert_eq!(&restored, &jobs);
    }
}
