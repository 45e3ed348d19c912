//! Many clients at once, more clients than allowed, and clients that stall:
//! none of them keeps the daemon from answering the others (SPEC §5).
mod daemon_support;

use std::time::{Duration, Instant};

use daemon_support::*;
use filter::{
    api::{client::Client, ApplyParams, ErrorCode, GetResult, Method, NoParams, StatusResult},
    daemon::ServerConfig,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
    time::timeout,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_clients() -> TestResult {
    let (_tmp, d) = TestDaemon::fresh().await?;
    d.client()
        .await?
        .call(
            Method::Apply,
            ApplyParams {
                document: base(),
                dry_run: false,
                if_generation: None,
            },
        )
        .await?;

    let socket = d.dirs.socket();
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let socket = socket.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&socket).await?;
            let s: StatusResult = c.call_as(Method::Status, NoParams {}).await?;
            let g: GetResult = c.call_as(Method::Get, NoParams {}).await?;
            // A few of them apply too, while the others read.
            if i % 50 == 0 {
                c.call(
                    Method::Apply,
                    ApplyParams {
                        document: grown(),
                        dry_run: i % 100 == 0,
                        if_generation: None,
                    },
                )
                .await?;
            }
            Ok::<_, filter::api::client::ClientError>((s.generation, g.generation))
        }));
    }
    let mut done = 0;
    for t in tasks {
        let (s, g) = timeout(Duration::from_secs(30), t).await???;
        assert!(s.is_some() && g >= 1);
        done += 1;
    }
    assert_eq!(done, 200);
    // Two of the applies were real: generations 2 and 3.
    let g: GetResult = d.client().await?.call_as(Method::Get, NoParams {}).await?;
    assert_eq!(g.generation, 3);
    Ok(())
}

#[tokio::test]
async fn clients_over_the_limit_are_told_to_come_back() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let server = ServerConfig {
        max_clients: 2,
        ..ServerConfig::default()
    };
    let d =
        TestDaemon::start_with(Dirs::new(tmp.path()), MemoryEnforcer::new(), server, None).await?;
    let (mut a, mut b) = (d.client().await?, d.client().await?);
    a.call(Method::Version, NoParams {}).await?;
    b.call(Method::Version, NoParams {}).await?;

    let mut third = d.client().await?;
    let r = third.read_response().await?;
    assert_eq!(r.error.map(|e| e.code), Some(ErrorCode::Busy));

    // The two still work; when one leaves, there is room again.
    a.call(Method::Status, NoParams {}).await?;
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = d.client().await?;
        match c.call(Method::Version, NoParams {}).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_client_idle_longest_makes_room_for_a_new_one() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let server = ServerConfig {
        max_clients: 2,
        evict_after: Duration::from_millis(100),
        ..ServerConfig::default()
    };
    let d =
        TestDaemon::start_with(Dirs::new(tmp.path()), MemoryEnforcer::new(), server, None).await?;
    // One idle client, and one stalled half way through a request.
    let mut idle = d.client().await?;
    idle.call(Method::Version, NoParams {}).await?;
    let mut half = UnixStream::connect(d.dirs.socket()).await?;
    half.write_all(br#"{"v":1,"id":1,"method":"sta"#).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Both slots are taken, yet a new client is served, twice over.
    let mut served = Vec::new();
    for _ in 0..2 {
        let mut fresh = d.client().await?;
        let s: StatusResult = timeout(
            Duration::from_secs(5),
            fresh.call_as(Method::Status, NoParams {}),
        )
        .await??;
        assert_eq!(s.generation, None);
        served.push(fresh);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Both made room: the one that waited longest first.
    let mut byte = [0u8; 1];
    let read = timeout(Duration::from_secs(5), half.read(&mut byte)).await??;
    assert_eq!(read, 0, "the half-open client was closed");
    assert!(idle.call(Method::Version, NoParams {}).await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_do_not_block_the_others() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let server = ServerConfig {
        write_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let d =
        TestDaemon::start_with(Dirs::new(tmp.path()), MemoryEnforcer::new(), server, None).await?;
    d.client()
        .await?
        .call(
            Method::Apply,
            ApplyParams {
                document: base(),
                dry_run: false,
                if_generation: None,
            },
        )
        .await?;

    // One client sends half a request and stops.
    let mut half = UnixStream::connect(d.dirs.socket()).await?;
    half.write_all(br#"{"v":1,"id":1,"method":"sta"#).await?;

    // Another asks for a lot and never reads the answers: its responses
    // fill the socket buffer and the daemon's write times out.
    let mut greedy = UnixStream::connect(d.dirs.socket()).await?;
    let get = br#"{"v":1,"id":1,"method":"get"}
"#;
    let flood: Vec<u8> = get.iter().copied().cycle().take(get.len() * 2000).collect();
    let writer = tokio::spawn(async move {
        // Ends when the daemon gives up on this client.
        let _ = greedy.write_all(&flood).await;
        greedy
    });

    // Meanwhile everyone else is served promptly.
    let mut c = d.client().await?;
    let started = Instant::now();
    for _ in 0..50 {
        let s: StatusResult = timeout(
            Duration::from_secs(2),
            c.call_as(Method::Status, NoParams {}),
        )
        .await??;
        assert_eq!(s.generation, Some(1));
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // The greedy client was dropped after its write timed out.
    let greedy = timeout(Duration::from_secs(10), writer).await??;
    drop(greedy);
    // The half-sent request did not stop a graceful shutdown either.
    timeout(Duration::from_secs(5), d.stop()).await?;
    drop(half);
    Ok(())
}
