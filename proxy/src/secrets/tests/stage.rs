//! Staged builds ([`Sources::stage`]): nothing happens to the sources before
//! the commit; the commit applies the `ttl`s, fetches new sources and re-reads
//! kept ones; staleness is measured from the first failed refresh or re-read.

use super::*;

/// An `aws_sm` source named `id` with `ttl` seconds (the backend is scripted).
fn sm(id: &str, ttl: u64) -> SecretSourceConfig {
    SecretSourceConfig::AwsSm {
        secret_id: id.into(),
        region: None,
        json_key: None,
        ttl: Duration::from_secs(ttl).into(),
    }
}

fn prefetching() -> Sources {
    Sources::new(SourcesOptions {
        prefetch: true,
        ..Default::default()
    })
}

/// A build refused after the policy was built (a listener address taken, say) and dropped
/// uncommitted has contacted no backend for the source it adds and left the `ttl` of the
/// source it shares with the config in force alone (before, building alone prefetched the
/// new source and retuned the kept one's refresh for a config that never took effect).
#[tokio::test(start_paused = true)]
async fn a_build_dropped_uncommitted_fetches_and_retunes_nothing() {
    let sources = prefetching();
    let kept = Scripted::new("kept-v1");
    let added = Scripted::new("added-v1");

    let staged = sources.stage();
    let running = staged
        .sources()
        .secret_from(&sm("kept", 60), || Box::new(kept.clone()));
    settle().await;
    assert_eq!(kept.calls(), 0, "nothing fetched before the commit");
    assert_eq!(
        staged.commit(),
        Committed {
            reread: 0,
            fetched: 1
        }
    );
    settle().await;
    assert_eq!(kept.calls(), 1, "fetched at the commit");

    let refused = sources.stage();
    let rebuilt = refused
        .sources()
        .secret_from(&sm("kept", 5), || Box::new(Scripted::new("unused")));
    let new = refused
        .sources()
        .secret_from(&sm("added", 0), || Box::new(added.clone()));
    settle().await;
    drop((refused, rebuilt, new));
    settle().await;
    assert_eq!(
        added.calls(),
        0,
        "the refused build's source was never fetched"
    );
    assert_eq!(
        running.cached.ttl(),
        Duration::from_secs(60),
        "the config in force keeps its ttl"
    );
    assert_eq!(kept.calls(), 1, "the kept source was not re-read either");
    tokio::time::sleep(Duration::from_secs(6)).await;
    settle().await;
    assert_eq!(kept.calls(), 1, "no refresh at the refused build's 5 s");
}

/// A committed build re-reads the sources it keeps that have a value, in the background: a
/// `ttl: 0` source rotated in its store is picked up by a reload (before, only a restart read
/// it again). A re-read that fails keeps the old value, warns naming the source (never the
/// value) and makes it stale; the next good one makes it fresh.
#[tokio::test(start_paused = true)]
async fn a_committed_build_rereads_the_sources_it_keeps() {
    let logs = TraceCapture::start();
    let sources = prefetching();
    let backend = Scripted::new("value-v1");
    let build = |cfgs: &[SecretSourceConfig]| {
        let staged = sources.stage();
        let secrets: Vec<Secret> = cfgs
            .iter()
            .map(|c| {
                staged
                    .sources()
                    .secret_from(c, || Box::new(backend.clone()))
            })
            .collect();
        (staged.commit(), secrets)
    };
    let (first, old) = build(&[sm("e2e/once", 0)]);
    assert_eq!(first.fetched, 1);
    settle().await;
    assert_eq!(old[0].get().await.expect("value").expose(), "value-v1");

    backend.set(Ok("value-v2".into()));
    let (second, new) = build(&[sm("e2e/once", 0), sm("e2e/once", 0)]);
    assert_eq!(
        second,
        Committed {
            reread: 1,
            fetched: 0
        },
        "one cache, one re-read"
    );
    assert_eq!(backend.calls(), 1, "the re-read runs in the background");
    settle().await;
    assert_eq!(backend.calls(), 2);
    assert_eq!(new[0].get().await.expect("value").expose(), "value-v2");
    drop(old);

    backend.set(Err(down()));
    let (_, failed) = build(&[sm("e2e/once", 0)]);
    settle().await;
    assert_eq!(
        failed[0].get().await.expect("the last good value").expose(),
        "value-v2"
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(failed[0].cached.stale_for(), Duration::from_secs(30));
    assert_eq!(
        sources.staleness(),
        vec![("aws_sm", "e2e/once".to_string(), Duration::from_secs(30))]
    );
    let text = logs.text();
    assert!(
        text.contains("re-reading the secret after the reload failed")
            && text.contains("e2e/once")
            && !text.contains("value-v2"),
        "{text}"
    );

    backend.set(Ok("value-v3".into()));
    let (_, fresh) = build(&[sm("e2e/once", 0)]);
    settle().await;
    assert_eq!(fresh[0].get().await.expect("value").expose(), "value-v3");
    assert_eq!(fresh[0].cached.stale_for(), Duration::ZERO, "fresh again");
}

/// A source whose refresh fails is stale from the first failed refresh (its `ttl` run out);
/// the gauge grows while it keeps failing, and is zero for a source that has never had a
/// value (its requests fail: the failures counter says so) and after a good refresh.
#[tokio::test(start_paused = true)]
async fn staleness_counts_from_the_first_failed_refresh() {
    let sources = prefetching();
    let backend = Scripted::new("good");
    let never = Scripted::default();
    let staged = sources.stage();
    let s = staged
        .sources()
        .secret_from(&sm("refreshed", 10), || Box::new(backend.clone()));
    let _never = staged
        .sources()
        .secret_from(&sm("never", 10), || Box::new(never.clone()));
    staged.commit();
    settle().await;
    assert_eq!(s.get().await.expect("value").expose(), "good");
    backend.set(Err(down()));
    tokio::time::sleep(Duration::from_secs(9)).await;
    settle().await;
    assert_eq!(s.cached.stale_for(), Duration::ZERO, "within its ttl");
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle().await;
    tokio::time::sleep(Duration::from_secs(100)).await;
    settle().await;
    assert_eq!(
        sources.staleness(),
        vec![
            ("aws_sm", "never".to_string(), Duration::ZERO),
            ("aws_sm", "refreshed".to_string(), Duration::from_secs(100)),
        ]
    );
    backend.set(Ok("good".into()));
    tokio::time::sleep(Duration::from_secs(11)).await;
    settle().await;
    assert_eq!(s.cached.stale_for(), Duration::ZERO);
}
