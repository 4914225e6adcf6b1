//! Test 6: a partition. Three nodes in three network namespaces; the leader
//! is cut off the other two for 10 s under load (its clients still reach
//! it). The majority keeps saving; the cut-off node saves nothing, its
//! clients get `unavailable` or a 1001 close; healed, it catches up and all
//! three histories are the same.

use std::time::{Duration, Instant};

use super::{FORM_BOUND, applied, caught_up, leader_index, load, log_of, start_run_on};
use crate::support::netns::Netns;
use crate::support::{raw_get, wait_for};

const CUT: Duration = Duration::from_secs(10);
/// A `saved` for an entry committed just before the cut may still arrive.
const GRACE: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_saves_nothing_and_catches_up_when_healed() {
    let ns = match Netns::create(3) {
        Ok(ns) => ns,
        Err(why) => {
            println!(
                "SKIPPED a_cut_off_leader_saves_nothing_and_catches_up_when_healed: needs root and `ip netns` ({why})"
            );
            return;
        }
    };
    let root = tempfile::tempdir().unwrap();
    let first = ns.spawn_node(0, &root.path().join("n1"), &[]);
    let seed = [first.cluster];
    let mut nodes = vec![first];
    for i in 1..3 {
        nodes.push(ns.spawn_node(i, &root.path().join(format!("n{}", i + 1)), &seed));
    }
    let run = start_run_on(nodes, root).await;
    let cut = leader_index(&run.nodes).await;
    let term = log_of(&run.nodes[cut]).await["term"].as_u64().unwrap();

    ns.cut(cut, true);
    let t_cut = Instant::now();
    // The minority rule: cut off for a few seconds, it stops serving.
    let addr = run.nodes[cut].addr();
    let t = wait_for("the cut-off node stops serving", CUT, || async {
        raw_get(addr, "/readyz").await.0 == 503
    })
    .await;
    println!("partition: /readyz 503 on the cut-off node {t:?} after the cut");
    tokio::time::sleep(CUT.saturating_sub(t_cut.elapsed())).await;
    let t_heal = Instant::now();
    ns.cut(cut, false);

    let majority = load::saves_between(&run.load, t_cut, t_heal, |n| n != cut);
    let minority = load::saves_between(&run.load, t_cut + GRACE, t_heal, |n| n == cut);
    let pause = load::longest_pause(&run.load, t_cut);
    println!(
        "partition of {} for {CUT:?}: majority saved {majority}, the cut-off node {minority}; longest write pause {pause:?}",
        run.nodes[cut].name
    );
    assert!(
        majority > 0,
        "the majority saved nothing while {} was cut off",
        run.nodes[cut].name
    );
    assert_eq!(minority, 0, "the cut-off node saved messages");

    let n = &run.nodes[cut];
    let t = wait_for("the old leader follows again", FORM_BOUND, || async {
        let log = log_of(n).await;
        log["role"] != "leader" && log["term"].as_u64().unwrap() > term
    })
    .await;
    let other = (cut + 1) % 3;
    let t2 = caught_up(&run.nodes, cut, other).await;
    println!(
        "healed: {} follows {t:?} after, caught up {t2:?} later (applied {})",
        n.name,
        applied(&log_of(n).await)
    );
    load::saves_after(&run.load, Instant::now(), super::CLIENTS, FORM_BOUND).await;
    let reports = run.finish_and_check().await;
    // What its clients were told while it was cut off.
    let told = reports.iter().any(|r| {
        r.errors
            .iter()
            .any(|(i, c)| *i == cut && c == "unavailable")
            || r.closes.iter().any(|(i, c)| *i == cut && *c == Some(1001))
    });
    assert!(
        told,
        "no client of the cut-off node got `unavailable` or a 1001 close"
    );
    drop(ns);
}
