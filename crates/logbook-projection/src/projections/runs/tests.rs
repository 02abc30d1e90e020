use proptest::prelude::*;

use super::*;
use crate::error::Error;
use crate::model::{
    RunCancelled, RunCheckpointed, RunCompleted, RunEvent, RunFailed, RunStatusChanged,
    WorkflowCancelled, WorkflowCompleted, WorkflowPhaseCompleted, WorkflowPhaseFailed,
    WorkflowPhaseStarted, WorkflowStarted,
};
use crate::projection::Order;
use crate::projections::test_support::Log;
use crate::projections::{
    ChildResult, CompletedPhase, PhaseStatus, PhaseToRelaunch, RelaunchReason,
};

fn started(
    kind: RunKind,
    agent: &str,
    parent: Option<&str>,
    workflow: Option<&str>,
) -> BuiltinEvent {
    RunStarted {
        kind,
        agent_id: agent.into(),
        parent_run_id: parent.map(str::to_owned),
        parent_thread_id: None,
        prompt_ref: None,
        worker_thread_id: None,
        task_board_ref: None,
        task_card_ref: None,
        workflow_id: workflow.map(str::to_owned),
    }
    .into()
}

fn background(agent: &str) -> BuiltinEvent {
    started(RunKind::BackgroundAgent, agent, None, None)
}

fn status(status: RunStatus) -> BuiltinEvent {
    RunStatusChanged {
        status,
        reason: Some("why".into()),
    }
    .into()
}

fn completed(result_ref: &str) -> BuiltinEvent {
    RunCompleted {
        summary: Some("ok".into()),
        result_ref: Some(result_ref.into()),
    }
    .into()
}

fn telemetry(tokens_in: u64, tool: &str) -> BuiltinEvent {
    RunTelemetry {
        tokens_in,
        tokens_out: 1,
        cost_estimate_micros: 10,
        elapsed_ms: 5,
        tool_calls: [(tool.to_owned(), 1)].into(),
        model: Some("m".into()),
        provider: None,
        error: None,
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
fn a_run_lives_and_ends() {
    let mut log = Log::default();
    let mut ledger = RunLedger::new();
    log.append(&mut ledger, "run/r1", background("coder"))
        .unwrap();
    log.append(&mut ledger, "run/r1", status(RunStatus::Paused))
        .unwrap();
    let checkpoint = RunCheckpointed {
        reason: CheckpointReason::Paused,
        data: "s1".into(),
    };
    log.append(&mut ledger, "run/r1", checkpoint.into())
        .unwrap();
    log.append(&mut ledger, "run/r1", status(RunStatus::Running))
        .unwrap();
    for sequence in [1, 2] {
        let event = RunEvent {
            sequence,
            event_type: "tool_call".into(),
            payload: "{}".into(),
        };
        log.append(&mut ledger, "run/r1", event.into()).unwrap();
    }
    log.append(&mut ledger, "run/r1", telemetry(100, "grep"))
        .unwrap();
    log.append(&mut ledger, "run/r1", telemetry(50, "edit"))
        .unwrap();
    log.append(&mut ledger, "run/r1", completed("results/r1"))
        .unwrap();

    let run = ledger.run("r1").unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.kind, RunKind::BackgroundAgent);
    assert_eq!(run.agent_id, "coder");
    assert_eq!(run.result_ref.as_deref(), Some("results/r1"));
    assert_eq!(run.run_event_count, 2);
    assert_eq!(run.last_run_event_sequence, Some(2));
    assert_eq!(run.telemetry.tokens_in, 150);
    assert_eq!(run.telemetry.reports, 2);
    assert_eq!(run.telemetry.tool_calls.len(), 2);
    assert_eq!(run.checkpoint.as_ref().unwrap().data, "s1");
    assert_eq!(run.checkpoint.as_ref().unwrap().stream_version, 2);
    assert_eq!(run.stream_version, 8);
    assert_eq!(run.started_at_ms, 1);
    assert_eq!(run.ended_at_ms, Some(9));

    // Ended runs refuse everything but late telemetry.
    assert_eq!(
        rejected_reason(ledger.can_complete_run("r1")),
        RejectReason::AlreadyEnded
    );
    let again = log.append(&mut ledger, "run/r1", completed("x"));
    assert_eq!(rejected_reason(again), RejectReason::AlreadyEnded);
    let late = log.append(&mut ledger, "run/r1", status(RunStatus::Running));
    assert_eq!(rejected_reason(late), RejectReason::AlreadyEnded);
    log.append(&mut ledger, "run/r1", telemetry(1, "grep"))
        .unwrap();
    assert_eq!(ledger.run("r1").unwrap().telemetry.tokens_in, 151);
    assert!(ledger.interrupted_runs().is_empty());
}

#[test]
fn commands_on_unknown_or_duplicate_runs_are_refused() {
    let mut log = Log::default();
    let mut ledger = RunLedger::new();
    assert_eq!(
        rejected_reason(ledger.can_complete_run("nope")),
        RejectReason::NotFound
    );
    let failed = BuiltinEvent::from(RunFailed { error: "x".into() });
    assert_eq!(
        rejected_reason(log.append(&mut ledger, "run/r", failed)),
        RejectReason::NotFound
    );
    log.append(&mut ledger, "run/r", background("a")).unwrap();
    let twice = log.append(&mut ledger, "run/r", background("a"));
    assert_eq!(rejected_reason(twice), RejectReason::AlreadyExists);
    assert!(matches!(
        rejected_reason(ledger.can_change_run_status("r", RunStatus::Failed)),
        RejectReason::InvalidTransition {
            from: "running",
            to: "failed"
        }
    ));
    let cancel = RunCancelled {
        reason: Some("user".into()),
    };
    log.append(&mut ledger, "run/r", cancel.into()).unwrap();
    assert_eq!(ledger.run("r").unwrap().status, RunStatus::Cancelled);
    assert_eq!(
        ledger.run("r").unwrap().status_reason.as_deref(),
        Some("user")
    );
    // Wrong stream kinds are refused before the state is consulted.
    let error = log
        .append(&mut ledger, "workflow/r", background("a"))
        .unwrap_err();
    assert!(matches!(error, Error::StreamMismatch { .. }), "{error}");
    assert_eq!(log.events.len(), 2);
}

#[test]
fn lineage_filters_and_pages() {
    let mut log = Log::default();
    let mut ledger = RunLedger::new();
    log.append(&mut ledger, "run/root", background("lead"))
        .unwrap();
    for (index, agent) in ["a", "b", "a", "c"].into_iter().enumerate() {
        let kind = if index % 2 == 0 {
            RunKind::Subagent
        } else {
            RunKind::TeamMember
        };
        let event = started(kind, agent, Some("root"), None);
        log.append(&mut ledger, &format!("run/c{index}"), event)
            .unwrap();
    }
    log.append(&mut ledger, "run/c1", completed("r")).unwrap();
    log.append(
        &mut ledger,
        "run/g",
        started(RunKind::Subagent, "a", Some("c0"), None),
    )
    .unwrap();

    let children: Vec<&str> = ledger
        .children("root")
        .iter()
        .map(|r| r.run_id.as_str())
        .collect();
    assert_eq!(children, ["c0", "c1", "c2", "c3"]);
    assert_eq!(ledger.children("c0").len(), 1);
    assert!(ledger.children("g").is_empty());

    let ids = |page: Page<&AgentRun>| -> Vec<String> {
        page.items.iter().map(|run| run.run_id.clone()).collect()
    };
    let all = PageRequest::default();
    let by_agent = RunFilter {
        agent_id: Some("a".into()),
        ..RunFilter::default()
    };
    assert_eq!(ids(ledger.list_runs(&by_agent, &all)), ["c0", "c2", "g"]);
    let by_kind = RunFilter {
        kind: Some(RunKind::TeamMember),
        ..RunFilter::default()
    };
    assert_eq!(ids(ledger.list_runs(&by_kind, &all)), ["c1", "c3"]);
    let by_status = RunFilter {
        status: Some(RunStatus::Completed),
        ..RunFilter::default()
    };
    assert_eq!(ids(ledger.list_runs(&by_status, &all)), ["c1"]);
    let by_parent = RunFilter {
        parent_run_id: Some("c0".into()),
        ..RunFilter::default()
    };
    assert_eq!(ids(ledger.list_runs(&by_parent, &all)), ["g"]);

    let newest = PageRequest {
        limit: 4,
        order: Order::NewestFirst,
        after: None,
    };
    let first = ledger.list_runs(&RunFilter::default(), &newest);
    let next = first.next;
    assert_eq!(ids(first), ["g", "c3", "c2", "c1"]);
    let second = ledger.list_runs(
        &RunFilter::default(),
        &PageRequest {
            after: next,
            ..newest
        },
    );
    assert_eq!(second.next, None);
    assert_eq!(ids(second), ["c0", "root"]);
    assert_eq!(ledger.run_count(), 6);
}

fn workflow_with_children(log: &mut Log, ledger: &mut RunLedger) {
    let phases = vec!["plan".to_owned(), "build".to_owned(), "check".to_owned()];
    let start = WorkflowStarted {
        definition_id: "review".into(),
        parent_thread_id: None,
        input: "{}".into(),
        phases,
    };
    log.append(ledger, "workflow/w", start.into()).unwrap();
    let child = |agent| started(RunKind::WorkflowChild, agent, None, Some("w"));
    for id in ["r1", "r2", "r3"] {
        log.append(ledger, &format!("run/{id}"), child("coder"))
            .unwrap();
        log.append(ledger, &format!("run/{id}"), telemetry(10, "grep"))
            .unwrap();
    }
    let phase = |phase: &str, children: &[&str]| {
        let child_run_ids = children.iter().map(|id| (*id).to_owned()).collect();
        WorkflowPhaseStarted {
            phase: phase.into(),
            child_run_ids,
        }
    };
    log.append(ledger, "workflow/w", phase("plan", &["r1"]).into())
        .unwrap();
    log.append(ledger, "run/r1", completed("results/r1"))
        .unwrap();
    let plan_done = WorkflowPhaseCompleted {
        phase: "plan".into(),
        child_run_ids: vec![],
        result_ref: Some("results/plan".into()),
    };
    log.append(ledger, "workflow/w", plan_done.into()).unwrap();
    log.append(ledger, "workflow/w", phase("build", &["r2", "r3"]).into())
        .unwrap();
    log.append(ledger, "run/r3", completed("results/r3"))
        .unwrap();
    log.append(
        ledger,
        "run/r2",
        RunFailed {
            error: "crash".into(),
        }
        .into(),
    )
    .unwrap();
    let build_failed = WorkflowPhaseFailed {
        phase: "build".into(),
        child_run_ids: vec![],
        error: "r2 crashed".into(),
    };
    log.append(ledger, "workflow/w", build_failed.into())
        .unwrap();
}

#[test]
fn a_workflow_resume_plan_reuses_completed_work() {
    let mut log = Log::default();
    let mut ledger = RunLedger::new();
    workflow_with_children(&mut log, &mut ledger);

    let workflow = ledger.workflow("w").unwrap();
    assert_eq!(workflow.status, RunStatus::Running);
    assert_eq!(
        workflow.phase("plan").unwrap().status,
        PhaseStatus::Completed
    );
    assert_eq!(workflow.phase("build").unwrap().status, PhaseStatus::Failed);
    assert_eq!(
        workflow.phase("check").unwrap().status,
        PhaseStatus::Pending
    );

    let plan = ledger.resume_plan("w").unwrap();
    assert_eq!(
        plan.completed,
        [CompletedPhase {
            phase: "plan".into(),
            result_ref: Some("results/plan".into()),
            child_run_ids: vec!["r1".into()],
        }]
    );
    assert_eq!(
        plan.to_relaunch,
        [
            PhaseToRelaunch {
                phase: "build".into(),
                reason: RelaunchReason::Failed(Some("r2 crashed".into())),
                completed_children: vec![ChildResult {
                    run_id: "r3".into(),
                    result_ref: Some("results/r3".into()),
                }],
                children_to_relaunch: vec!["r2".into()],
            },
            PhaseToRelaunch {
                phase: "check".into(),
                reason: RelaunchReason::NotStarted,
                completed_children: vec![],
                children_to_relaunch: vec![],
            },
        ]
    );
    let interrupted = ledger.interrupted_workflows();
    assert_eq!(interrupted.len(), 1);
    assert_eq!(interrupted[0].plan, plan);

    // Telemetry of the three children, summed.
    let totals = ledger.workflow_telemetry("w").unwrap();
    assert_eq!((totals.reports, totals.tokens_in), (3, 30));
    assert_eq!(totals.tool_calls.get("grep"), Some(&3));
    assert_eq!(ledger.workflow_children("w").len(), 3);
    assert_eq!(ledger.workflow_telemetry("nope"), None);
    assert_eq!(ledger.telemetry_totals().tokens_in, 30);
    assert!(matches!(
        ledger.resume_plan("nope"),
        Err(Error::Rejected { .. })
    ));
}

#[test]
fn phase_transitions_are_validated() {
    let mut log = Log::default();
    let mut ledger = RunLedger::new();
    workflow_with_children(&mut log, &mut ledger);
    let restart_plan = WorkflowPhaseStarted {
        phase: "plan".into(),
        child_run_ids: vec![],
    };
    let error = log.append(&mut ledger, "workflow/w", restart_plan.into());
    assert!(matches!(
        rejected_reason(error),
        RejectReason::InvalidTransition {
            from: "completed",
            to: "running"
        }
    ));
    // A failed phase can start again; its completed children stay listed.
    let retry = WorkflowPhaseStarted {
        phase: "build".into(),
        child_run_ids: vec!["r4".into()],
    };
    log.append(&mut ledger, "workflow/w", retry.into()).unwrap();
    let build = ledger.workflow("w").unwrap().phase("build").unwrap();
    assert_eq!(build.status, PhaseStatus::Running);
    assert_eq!(build.child_run_ids, ["r2", "r3", "r4"]);
    assert_eq!(build.error, None);
    let plan = ledger.resume_plan("w").unwrap();
    assert_eq!(plan.to_relaunch[0].reason, RelaunchReason::Interrupted);
    assert_eq!(plan.to_relaunch[0].children_to_relaunch, ["r2", "r4"]);

    log.append(
        &mut ledger,
        "workflow/w",
        WorkflowCompleted::default().into(),
    )
    .unwrap();
    assert!(ledger.interrupted_workflows().is_empty());
    let late = log.append(
        &mut ledger,
        "workflow/w",
        WorkflowCancelled::default().into(),
    );
    assert_eq!(rejected_reason(late), RejectReason::AlreadyEnded);
    let unknown = log.append(
        &mut ledger,
        "workflow/x",
        WorkflowCancelled::default().into(),
    );
    assert_eq!(rejected_reason(unknown), RejectReason::NotFound);
    assert_eq!(
        ledger
            .list_workflows(Some(RunStatus::Completed), &PageRequest::default())
            .items
            .len(),
        1
    );
}

#[test]
fn interrupted_runs_keep_their_checkpoint() {
    let mut log = Log::default();
    let mut ledger = RunLedger::new();
    log.append(&mut ledger, "run/a", background("x")).unwrap();
    log.append(&mut ledger, "run/b", background("x")).unwrap();
    log.append(&mut ledger, "run/b", status(RunStatus::AwaitingUser))
        .unwrap();
    let checkpoint = RunCheckpointed {
        reason: CheckpointReason::AwaitingUser,
        data: "q".into(),
    };
    log.append(&mut ledger, "run/b", checkpoint.into()).unwrap();
    log.append(&mut ledger, "run/c", background("x")).unwrap();
    log.append(&mut ledger, "run/c", completed("r")).unwrap();

    let replayed: RunLedger = log.replay();
    let interrupted = replayed.interrupted_runs();
    let ids: Vec<&str> = interrupted.iter().map(|run| run.run_id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(interrupted[1].status, RunStatus::AwaitingUser);
    let checkpoint = interrupted[1].checkpoint.as_ref().unwrap();
    assert_eq!(
        (checkpoint.reason, checkpoint.data.as_str()),
        (CheckpointReason::AwaitingUser, "q")
    );
}

#[test]
fn ignored_events_replay_and_snapshots() {
    let mut log = Log::default();
    let mut ledger = RunLedger::new();
    log.force(&mut ledger, "run/a", completed("x"));
    log.append(&mut ledger, "run/a", background("x")).unwrap();
    log.force(&mut ledger, "run/a", background("y"));
    log.force(&mut ledger, "run/a", status(RunStatus::Pending));
    log.force(&mut ledger, "run/a", completed("r"));
    log.force(&mut ledger, "run/a", completed("again"));
    assert_eq!(ledger.ignored_events(), 3);
    assert_eq!(ledger.run("a").unwrap().result_ref.as_deref(), Some("r"));
    assert_eq!(log.replay::<RunLedger>(), ledger);

    let bytes = ledger.snapshot().unwrap();
    let mut restored = RunLedger::new();
    restored.restore(RUNS_STATE_VERSION, &bytes).unwrap();
    assert_eq!(restored, ledger);
    assert!(matches!(
        restored.restore(RUNS_STATE_VERSION + 1, &bytes),
        Err(Error::UnsupportedStateVersion { .. })
    ));
    assert!(
        restored
            .restore(RUNS_STATE_VERSION, &bytes[..bytes.len() - 1])
            .is_err()
    );
}

#[test]
fn tool_names_are_bounded() {
    let mut totals = TelemetryTotals::default();
    for index in 0..(LIST_ITEMS_MAX + 10) {
        let report = RunTelemetry {
            tool_calls: [(format!("tool{index}"), 1)].into(),
            ..RunTelemetry::default()
        };
        totals.add_report(&report);
    }
    assert_eq!(totals.tool_calls.len(), LIST_ITEMS_MAX + 1);
    assert_eq!(totals.tool_calls.get(OTHER_TOOLS), Some(&10));
}

/// A random command on a small id space, so commands collide and get refused.
fn arbitrary_command() -> impl Strategy<Value = (String, BuiltinEvent)> {
    let run = prop_oneof![Just("run/a"), Just("run/b"), Just("run/c")];
    let workflow = prop_oneof![Just("workflow/w"), Just("workflow/v")];
    let phase = prop_oneof![Just("p1"), Just("p2"), Just("p3")];
    let child = prop_oneof![Just("a"), Just("b"), Just("c")];
    let statuses = prop_oneof![
        Just(RunStatus::Pending),
        Just(RunStatus::Running),
        Just(RunStatus::Paused),
        Just(RunStatus::AwaitingUser)
    ];
    let run_event = prop_oneof![
        child
            .clone()
            .prop_map(|parent| started(RunKind::Subagent, "x", Some(parent), Some("w"))),
        statuses.prop_map(status),
        (0u64..5).prop_map(|tokens| telemetry(tokens, "t")),
        Just(
            RunCheckpointed {
                reason: CheckpointReason::Periodic,
                data: "d".into()
            }
            .into()
        ),
        Just(completed("r")),
        Just(RunFailed { error: "e".into() }.into()),
        Just(RunCancelled::default().into()),
    ];
    let workflow_event = prop_oneof![
        Just(
            WorkflowStarted {
                definition_id: "d".into(),
                parent_thread_id: None,
                input: String::new(),
                phases: vec!["p1".into(), "p2".into()],
            }
            .into()
        ),
        (phase.clone(), child.clone()).prop_map(|(phase, child)| {
            WorkflowPhaseStarted {
                phase: phase.into(),
                child_run_ids: vec![child.into()],
            }
            .into()
        }),
        phase.clone().prop_map(|phase| {
            let result_ref = Some("res".into());
            WorkflowPhaseCompleted {
                phase: phase.into(),
                child_run_ids: vec![],
                result_ref,
            }
            .into()
        }),
        phase.prop_map(|phase| {
            WorkflowPhaseFailed {
                phase: phase.into(),
                child_run_ids: vec![],
                error: "e".into(),
            }
            .into()
        }),
        Just(WorkflowCompleted::default().into()),
        Just(WorkflowCancelled::default().into()),
    ];
    prop_oneof![
        (run, run_event).prop_map(|(stream, event)| (stream.to_owned(), event)),
        (workflow, workflow_event).prop_map(|(stream, event)| (stream.to_owned(), event)),
    ]
}

proptest! {
    #[test]
    fn live_state_equals_replay_and_restore(
        commands in proptest::collection::vec((arbitrary_command(), any::<bool>()), 0..60)
    ) {
        let mut log = Log::default();
        let mut ledger = RunLedger::new();
        for ((stream, event), skip_validation) in commands {
            let before = ledger.clone();
            if skip_validation {
                log.force(&mut ledger, &stream, event);
            } else {
                let _ = log.append(&mut ledger, &stream, event);
            }
            // Whatever the history, nothing leaves a terminal status.
            for (id, run) in &before.runs {
                if run.status.is_terminal() {
                    prop_assert_eq!(ledger.runs[id].status, run.status);
                }
            }
            for (id, workflow) in &before.workflows {
                if workflow.status.is_terminal() {
                    prop_assert_eq!(&ledger.workflows[id], workflow);
                }
            }
        }
        let replayed: RunLedger = log.replay();
        prop_assert_eq!(&replayed, &ledger);
        let mut restored = RunLedger::new();
        restored.restore(RUNS_STATE_VERSION, &ledger.snapshot().unwrap()).unwrap();
        prop_assert_eq!(&restored, &ledger);
        // Every workflow has a plan.
        for workflow in ledger.workflows.keys() {
            prop_assert!(ledger.resume_plan(workflow).is_ok());
        }
    }
}
