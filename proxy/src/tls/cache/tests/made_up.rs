//! Made-up names cannot push other clients' leaves out of the cache: names
//! no rule can allow go to the refused names' cache, and names made up
//! under an allowed wildcard displace only their own client's leaves once
//! it holds its fair share, while a client under its share takes the place
//! of the oldest leaf of the client holding the most
//! ([`super::super::shares`]).

use std::net::IpAddr;

use super::*;

fn client(n: u8) -> Client {
    Client::Address(IpAddr::from([10, 0, 0, n]))
}

/// Readies `name` for `client` as a listener does; true when it minted.
/// Moka's pending evictions are applied after, so that each step sees the
/// cache as the next connection would.
async fn ready(cache: &Arc<LeafCache>, name: &str, who: Client, refused: bool) -> bool {
    let minted = match cache.prepare(name, who, Duration::from_secs(60), || refused) {
        Some(minting) => {
            minting.await.unwrap_or_else(|e| panic!("{name}: {e}"));
            true
        }
        None => false,
    };
    cache.run_pending_tasks();
    minted
}

fn shared(capacity: u64) -> Arc<LeafCache> {
    Arc::new(cache(capacity).0)
}

#[tokio::test]
async fn names_no_rule_allows_take_no_place_in_the_main_cache() {
    let cache = shared(2);
    assert!(ready(&cache, "keep.test", client(2), false).await);
    for i in 0..(REFUSED_LEAVES + 10) {
        assert!(ready(&cache, &format!("denied{i}.test"), client(1), true).await);
    }
    assert!(
        !ready(&cache, "keep.test", client(2), false).await,
        "the allowed name's leaf is still cached: {:?}",
        cache.stats()
    );
    let stats = cache.stats();
    assert_eq!(stats.entries, 1, "{stats:?}");
    assert_eq!(stats.refused_mints, REFUSED_LEAVES + 10, "{stats:?}");
    assert_eq!(stats.refused_entries, REFUSED_LEAVES, "{stats:?}");

    // A refused name asked again is a hit of its own cache, and the
    // handshake's resolver finds the leaf there.
    let last = format!("denied{}.test", REFUSED_LEAVES + 9);
    assert!(!ready(&cache, &last, client(1), true).await, "cached apart");
    let leaf = cache.for_handshake(&last).expect("the refused name's leaf");
    let san = leaf.end_entity_cert().expect("a leaf");
    let text = String::from_utf8_lossy(san.as_ref());
    assert!(text.contains(&last), "the leaf names {last}");
    assert_eq!(cache.stats().mints, REFUSED_LEAVES + 11, "no mint there");
}

#[tokio::test]
async fn names_made_up_under_a_wildcard_displace_only_their_clients_leaves() {
    let cache = shared(4);
    for name in ["b1.test", "b2.test"] {
        assert!(ready(&cache, name, client(2), false).await);
    }
    for i in 0..20 {
        assert!(ready(&cache, &format!("r{i}.wild.test"), client(1), false).await);
    }
    for name in ["b1.test", "b2.test"] {
        assert!(
            !ready(&cache, name, client(2), false).await,
            "{name} is still cached: {:?}",
            cache.stats()
        );
    }
    let stats = cache.stats();
    assert_eq!(stats.entries, 4, "{stats:?}");
    // The flooder kept its share of 2: its 3rd to 20th names each took the
    // place of its own oldest.
    assert_eq!(stats.displaced, 18, "{stats:?}");
    assert!(
        !ready(&cache, "r19.wild.test", client(1), false).await,
        "its newest is cached"
    );
    assert!(
        ready(&cache, "r0.wild.test", client(1), false).await,
        "its oldest gave up its place"
    );
}

#[tokio::test]
async fn a_client_past_its_share_keeps_its_most_recent_leaves() {
    let cache = shared(4);
    for i in 1..=4 {
        assert!(ready(&cache, &format!("b{i}.test"), client(2), false).await);
    }
    // Client 1 is under its share (2 of 4) for its first two names, which
    // take the places of the oldest leaves of client 2, holding the most;
    // then it churns its own.
    for i in 0..10 {
        assert!(ready(&cache, &format!("r{i}.wild.test"), client(1), false).await);
    }
    for name in ["b3.test", "b4.test"] {
        assert!(!ready(&cache, name, client(2), false).await, "{name} kept");
    }
    assert_eq!(cache.stats().displaced, 10, "{:?}", cache.stats());
}

#[tokio::test]
async fn a_lone_client_evicts_in_lru_order() {
    let cache = shared(3);
    for name in ["a.test", "b.test", "c.test"] {
        assert!(ready(&cache, name, client(1), false).await);
    }
    assert!(!ready(&cache, "a.test", client(1), false).await); // b is now LRU
    assert!(ready(&cache, "d.test", client(1), false).await);
    assert!(!ready(&cache, "a.test", client(1), false).await, "a kept");
    assert!(ready(&cache, "b.test", client(1), false).await, "b evicted");
    assert_eq!(cache.stats().displaced, 0);
}

#[tokio::test]
async fn a_new_client_takes_the_place_of_the_flooders_leaf_not_the_lru_one() {
    let cache = shared(8);
    assert!(ready(&cache, "kept.test", client(2), false).await);
    for i in 0..30 {
        assert!(ready(&cache, &format!("r{i}.wild.test"), client(1), false).await);
    }
    // Client 1 holds 7 of 8, past its share of 4; kept.test is the least
    // recently used leaf.
    assert!(ready(&cache, "x.wild.test", client(3), false).await);
    assert!(
        !ready(&cache, "kept.test", client(2), false).await,
        "kept.test, within client 2's share, is still cached: {:?}",
        cache.stats()
    );
    assert!(
        !ready(&cache, "x.wild.test", client(3), false).await,
        "client 3's new leaf is cached"
    );
    assert!(
        ready(&cache, "r23.wild.test", client(1), false).await,
        "the flooder's oldest leaf gave up its place"
    );
}

#[tokio::test]
async fn a_client_under_its_share_displaces_the_client_holding_the_most() {
    let cache = shared(6);
    for name in ["b1.test", "b2.test"] {
        assert!(ready(&cache, name, client(2), false).await);
    }
    for i in 0..4 {
        assert!(ready(&cache, &format!("r{i}.wild.test"), client(1), false).await);
    }
    // Full: client 1 holds 4, client 2 holds 2 (shares of 3). b1 is the
    // least recently used leaf; client 2 is under its share.
    assert!(ready(&cache, "b3.test", client(2), false).await);
    assert!(
        ready(&cache, "r0.wild.test", client(1), false).await,
        "client 1's oldest gave up its place to b3: {:?}",
        cache.stats()
    );
    for name in ["b1.test", "b2.test", "b3.test"] {
        assert!(!ready(&cache, name, client(2), false).await, "{name} kept");
    }
}

#[test]
fn concurrent_mints_of_one_new_name_make_room_once() {
    let cache = Arc::new(cache(4).0);
    for name in ["a1.test", "a2.test"] {
        cache
            .mint_or_join(name.into(), Place::Main(client(1)))
            .expect("mint");
        cache.run_pending_tasks();
    }
    for name in ["b1.test", "b2.test"] {
        cache
            .mint_or_join(name.into(), Place::Main(client(2)))
            .expect("mint");
        cache.run_pending_tasks();
    }
    // Full, each client at its share of 2. Client 1's mint of new.test
    // makes room (its own a1) and is held in its mint.
    let (entered, minting) = std::sync::mpsc::channel();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = Mutex::new(held);
    cache.on_mint(Box::new(move |name| {
        if name == "new.test" {
            let _ = entered.send(());
            let _ = held.lock().expect("held").recv();
        }
    }));
    let first = {
        let cache = cache.clone();
        std::thread::spawn(move || cache.mint_or_join("new.test".into(), Place::Main(client(1))))
    };
    minting.recv().expect("client 1's mint started");
    // Meanwhile client 1 mints another name into the room left, filling
    // the cache again.
    cache
        .mint_or_join("c.test".into(), Place::Main(client(1)))
        .expect("mint");
    cache.run_pending_tasks();
    // Client 2 asks for new.test: it will join client 1's leaf, so it
    // takes no place and must give up none of its own.
    let room = cache.make_room(client(2), "new.test");
    assert_eq!(cache.stats().displaced, 1, "{:?}", cache.stats());
    assert_eq!(lock(&cache.shares).held_by(client(2)), 2, "b1, b2 kept");
    drop(room);
    release.send(()).expect("release");
    first.join().expect("client 1's thread").expect("new.test");
    cache
        .mint_or_join("new.test".into(), Place::Main(client(2)))
        .expect("joins the leaf");
    cache.run_pending_tasks();
    let stats = cache.stats();
    assert_eq!(
        (stats.mints, stats.entries, stats.displaced),
        (6, 4, 1),
        "{stats:?}"
    );
    // new.test went in over a full cache (c.test took the room made for
    // it): the least recently used leaf, a2, gave way.
    for name in ["b1.test", "b2.test", "c.test", "new.test"] {
        assert!(cache.cache.contains_key(name), "{name} is cached");
    }
}
