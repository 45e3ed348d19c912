//! The daemon's life: restarts, locks, two daemons side by side, saved
//! generations, and applies that fail half way.
mod daemon_support;

use daemon_support::*;
use filter::{
    api::{
        client::ClientError, ApiError, ApplyParams, ApplyResult, ErrorCode, GetResult, Method,
        NoParams, RollbackParams, StatusResult,
    },
    daemon::{DaemonError, LockError, ServerConfig, Started, StateStore},
};

fn apply(document: String) -> ApplyParams {
    ApplyParams {
        document,
        dry_run: false,
        if_generation: None,
    }
}

#[tokio::test]
async fn restart_takes_over_the_running_generation() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let d = TestDaemon::start(Dirs::new(tmp.path()), MemoryEnforcer::new()).await?;
    assert_eq!(d.started, Started::Nothing);
    let mut c = d.client().await?;
    c.call(Method::Apply, apply(base())).await?;
    c.call(Method::Apply, apply(grown())).await?;
    drop(c);
    let (dirs, dataplane) = d.stop().await;
    // Enforcement stays after a graceful stop.
    assert_eq!(dataplane.dataplane().generation, Some(2));
    dataplane.dataplane().log.clear();

    // Same state dir, same (pinned) data plane: adopted as it is, nothing
    // rewritten, so tracked connections survive.
    let d = TestDaemon::start(dirs, dataplane).await?;
    assert_eq!(d.started, Started::Adopted(2));
    let log = d.enforcer.dataplane().log.clone();
    assert!(log.iter().all(|l| !l.starts_with("activate")), "{log:?}");
    assert!(log.contains(&"adopt 2".to_owned()), "{log:?}");
    let mut c = d.client().await?;
    let g: GetResult = c.call_as(Method::Get, NoParams {}).await?;
    assert_eq!((g.generation, g.document), (2, grown()));
    // And the next apply goes on from there.
    let r: ApplyResult = c.call_as(Method::Apply, apply(base())).await?;
    assert_eq!((r.generation, r.previous), (3, Some(2)));
    Ok(())
}

#[tokio::test]
async fn restart_on_an_empty_data_plane_restores_the_saved_document() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let d = TestDaemon::start(Dirs::new(tmp.path()), MemoryEnforcer::new()).await?;
    d.client().await?.call(Method::Apply, apply(base())).await?;
    let (dirs, _) = d.stop().await;

    // A reboot: the pins are gone.
    let d = TestDaemon::start(dirs, MemoryEnforcer::new()).await?;
    assert_eq!(
        d.started,
        Started::Restored {
            from: 1,
            generation: 2
        }
    );
    assert_eq!(d.enforcer.dataplane().generation, Some(2));
    let g: GetResult = d.client().await?.call_as(Method::Get, NoParams {}).await?;
    assert_eq!((g.generation, g.document), (2, base()));
    Ok(())
}

/// A daemon killed between saving a generation's record and switching to
/// it (or whose failed apply could not remove the record): the data plane
/// still runs the previous generation, and a restart keeps that one, drops
/// the record that was never enforced, and goes on from there.
#[tokio::test]
async fn a_record_saved_but_never_enforced_is_not_restored() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let d = TestDaemon::start(Dirs::new(tmp.path()), MemoryEnforcer::new()).await?;
    d.client().await?.call(Method::Apply, apply(base())).await?;
    let (dirs, dataplane) = d.stop().await;
    let store = StateStore::open(&dirs.state())?;
    let mut unenforced = store.load(1)?.ok_or("generation 1 is not saved")?;
    unenforced.generation = 2;
    unenforced.document = grown();
    store.save(&unenforced)?;

    let d = TestDaemon::start(dirs, dataplane).await?;
    assert_eq!(d.started, Started::Adopted(1));
    assert_eq!(d.daemon_generations()?, [1]);
    let mut c = d.client().await?;
    let g: GetResult = c.call_as(Method::Get, NoParams {}).await?;
    assert_eq!((g.generation, g.document), (1, base()));
    let r: ApplyResult = c.call_as(Method::Apply, apply(grown())).await?;
    assert_eq!((r.generation, r.previous), (2, Some(1)));
    Ok(())
}

#[tokio::test]
async fn a_detached_daemon_restores_nothing() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let d = TestDaemon::start(Dirs::new(tmp.path()), MemoryEnforcer::new()).await?;
    let mut c = d.client().await?;
    c.call(Method::Apply, apply(base())).await?;
    c.call(Method::Detach, NoParams {}).await?;
    drop(c);
    let (dirs, dataplane) = d.stop().await;
    let d = TestDaemon::start(dirs, dataplane).await?;
    assert_eq!(d.started, Started::Nothing);
    assert_eq!(d.enforcer.dataplane().generation, None);
    // Rollback brings the saved document back.
    let r: ApplyResult = d
        .client()
        .await?
        .call_as(Method::Rollback, RollbackParams::default())
        .await?;
    assert_eq!(r.rolled_back_to, Some(1));
    Ok(())
}

#[tokio::test]
async fn the_lock_keeps_a_second_daemon_out() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let first = TestDaemon::start(Dirs::new(tmp.path()), MemoryEnforcer::new()).await?;
    let second = TestDaemon::start(Dirs::new(tmp.path()), MemoryEnforcer::new()).await;
    assert!(
        matches!(second, Err(DaemonError::Lock(LockError::Held { .. }))),
        "{:?}",
        second.err()
    );

    // Sharing only the pin directory is refused too.
    let other = tempfile::tempdir()?;
    let locks = filter::daemon::DirLocks::acquire(&other.path().join("state"), &first.dirs.pins());
    assert!(matches!(locks, Err(LockError::Held { .. })));

    // Once the first is gone, the directories are free.
    let (dirs, dataplane) = first.stop().await;
    let again = TestDaemon::start(dirs, dataplane).await?;
    again
        .client()
        .await?
        .call(Method::Version, NoParams {})
        .await?;
    Ok(())
}

#[tokio::test]
async fn two_daemons_side_by_side() -> TestResult {
    let (ta, tb) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = TestDaemon::start(Dirs::new(ta.path()), MemoryEnforcer::new()).await?;
    let b = TestDaemon::start(Dirs::new(tb.path()), MemoryEnforcer::new()).await?;
    let (mut ca, mut cb) = (a.client().await?, b.client().await?);
    ca.call(Method::Apply, apply(base())).await?;
    cb.call(Method::Apply, apply(grown())).await?;
    cb.call(Method::Apply, apply(base())).await?;
    let ga: GetResult = ca.call_as(Method::Get, NoParams {}).await?;
    let gb: GetResult = cb.call_as(Method::Get, NoParams {}).await?;
    assert_eq!((ga.generation, gb.generation), (1, 2));
    assert!(!a.enforcer.dataplane().attached.contains("tap-web2"));
    let sa: StatusResult = ca.call_as(Method::Status, NoParams {}).await?;
    let sb: StatusResult = cb.call_as(Method::Status, NoParams {}).await?;
    assert_ne!(sa.daemon.state_dir, sb.daemon.state_dir);
    Ok(())
}

#[tokio::test]
async fn the_last_ten_generations_are_kept() -> TestResult {
    let (_tmp, d) = TestDaemon::fresh().await?;
    let mut c = d.client().await?;
    for i in 0..12 {
        c.call(
            Method::Apply,
            apply(if i % 2 == 0 { base() } else { grown() }),
        )
        .await?;
    }
    assert_eq!(d.daemon_generations()?, (3..=12).collect::<Vec<_>>());
    let gone = c
        .call(Method::Rollback, RollbackParams { to: Some(2) })
        .await;
    assert!(matches!(
        gone,
        Err(ClientError::Api(ApiError {
            code: ErrorCode::NotFound,
            ..
        }))
    ));
    let r: ApplyResult = c
        .call_as(Method::Rollback, RollbackParams { to: Some(3) })
        .await?;
    assert_eq!((r.generation, r.rolled_back_to), (13, Some(3)));
    assert_eq!(d.daemon_generations()?, (4..=13).collect::<Vec<_>>());
    Ok(())
}

async fn expect_failure(
    c: &mut filter::api::client::Client,
    document: String,
) -> Result<ApiError, Box<dyn std::error::Error>> {
    match c.call(Method::Apply, apply(document)).await {
        Err(ClientError::Api(e)) => Ok(e),
        other => Err(format!("the apply should have failed: {other:?}").into()),
    }
}

#[tokio::test]
async fn a_failed_attach_rolls_everything_back() -> TestResult {
    let (_tmp, d) = TestDaemon::fresh().await?;
    let mut c = d.client().await?;
    c.call(Method::Apply, apply(base())).await?;
    d.enforcer.dataplane().fail_attach.insert("tap-web2".into());
    let e = expect_failure(&mut c, grown()).await?;
    assert_eq!(e.code, ErrorCode::EnforcementFailed);
    assert!(e.message.contains("tap-web2"), "{e:?}");

    let g: GetResult = c.call_as(Method::Get, NoParams {}).await?;
    assert_eq!((g.generation, g.document), (1, base()));
    assert_eq!(d.enforcer.dataplane().generation, Some(1));
    assert_eq!(d.daemon_generations()?, [1]);

    d.enforcer.dataplane().fail_attach.clear();
    let r: ApplyResult = c.call_as(Method::Apply, apply(grown())).await?;
    assert_eq!(r.generation, 2);
    Ok(())
}

#[tokio::test]
async fn a_failed_switch_detaches_what_the_apply_attached() -> TestResult {
    let (_tmp, d) = TestDaemon::fresh().await?;
    let mut c = d.client().await?;
    c.call(Method::Apply, apply(base())).await?;
    d.enforcer.dataplane().log.clear();
    d.enforcer.dataplane().fail_activate = true;
    let e = expect_failure(&mut c, grown()).await?;
    assert_eq!(e.code, ErrorCode::EnforcementFailed);
    // The interfaces already guarded are attached again (a no-op for them),
    // but only tap-web2, which this apply brought in, is detached.
    assert_eq!(
        d.enforcer.dataplane().log,
        [
            "attach tap-app1",
            "attach tap-web1",
            "attach tap-web2",
            "detach tap-web2"
        ]
    );
    assert!(!d.enforcer.dataplane().attached.contains("tap-web2"));
    assert_eq!(d.enforcer.dataplane().generation, Some(1));
    assert_eq!(d.daemon_generations()?, [1]);
    let g: GetResult = c.call_as(Method::Get, NoParams {}).await?;
    assert_eq!(g.generation, 1);
    Ok(())
}

#[tokio::test]
async fn a_compile_failure_touches_nothing() -> TestResult {
    let (_tmp, d) = TestDaemon::fresh().await?;
    let mut c = d.client().await?;
    d.enforcer.dataplane().fail_compile =
        Some("table sg-web needs more than 1048576 entries in FILTER_RULES".into());
    let e = expect_failure(&mut c, base()).await?;
    assert_eq!(e.code, ErrorCode::EnforcementFailed);
    assert!(e.message.contains("FILTER_RULES"), "{e:?}");
    assert!(d.enforcer.dataplane().log.is_empty());
    assert!(d.daemon_generations()?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_detach_failure_after_the_switch_is_reported() -> TestResult {
    let (_tmp, d) = TestDaemon::fresh().await?;
    let mut c = d.client().await?;
    c.call(Method::Apply, apply(grown())).await?;
    d.enforcer.dataplane().fail_detach.insert("tap-web2".into());
    let r: ApplyResult = c.call_as(Method::Apply, apply(base())).await?;
    assert_eq!(r.generation, 2);
    assert!(
        r.notices.iter().any(|n| n.contains("tap-web2")),
        "{:?}",
        r.notices
    );
    Ok(())
}

#[tokio::test]
async fn ruleset_at_start() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let d = TestDaemon::start_with(
        Dirs::new(tmp.path()),
        MemoryEnforcer::new(),
        ServerConfig::default(),
        Some(base()),
    )
    .await?;
    assert_eq!(d.started, Started::Applied(1));
    let (dirs, dataplane) = d.stop().await;

    // A rejected --ruleset stops the start with every error; the running
    // generation stays.
    let bad = TestDaemon::start_with(
        dirs,
        dataplane.clone(),
        ServerConfig::default(),
        Some(broken()),
    )
    .await;
    match bad {
        Err(DaemonError::Invalid(errors)) => assert_eq!(errors.len(), 3, "{errors:?}"),
        other => {
            return Err(format!("expected a rejection, got {:?}", other.map(|d| d.started)).into())
        }
    }
    assert_eq!(dataplane.dataplane().generation, Some(1));
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_connections_and_leaves_enforcement() -> TestResult {
    let (_tmp, d) = TestDaemon::fresh().await?;
    let mut c = d.client().await?;
    c.call(Method::Apply, apply(base())).await?;
    let socket = d.dirs.socket();
    let (_dirs, dataplane) =
        tokio::time::timeout(std::time::Duration::from_secs(5), d.stop()).await?;
    // The idle connection was closed, the socket file removed.
    assert!(matches!(
        c.call(Method::Version, NoParams {}).await,
        Err(ClientError::Closed | ClientError::Io(_))
    ));
    assert!(!socket.exists());
    assert_eq!(dataplane.dataplane().generation, Some(1));
    Ok(())
}

/// SPEC §4: a restore that fails leaves the pinned data plane enforcing
/// the previous daemon's generation, and `status` says so.
#[tokio::test]
async fn status_after_a_failed_restore_names_what_the_kernel_enforces() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let d = TestDaemon::start(Dirs::new(tmp.path()), MemoryEnforcer::new()).await?;
    let mut c = d.client().await?;
    c.call(Method::Apply, apply(base())).await?;
    c.call(Method::Apply, apply(grown())).await?;
    drop(c);
    let (dirs, dataplane) = d.stop().await;
    dataplane.dataplane().fail_compile = Some("injected".to_owned());

    let d = TestDaemon::start(dirs, dataplane).await?;
    assert!(
        matches!(d.started, Started::RestoreFailed(_)),
        "{:?}",
        d.started
    );
    let s: StatusResult = d
        .client()
        .await?
        .call_as(Method::Status, NoParams {})
        .await?;
    assert_eq!(
        (s.generation, s.kernel_generation, s.degraded),
        (None, Some(2), true)
    );
    assert!(s.restore_error.is_some());
    let text = filter::cli::render::status(&s);
    assert!(
        text.starts_with(
            "generation  none known to filterd; the data plane still enforces generation 2 (pinned)\n"
        ),
        "{text}"
    );
    Ok(())
}
