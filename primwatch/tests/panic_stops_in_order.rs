//! A panic in a spawned task is not a silently dead task: the panic hook reports it and
//! `supervise::fatal` resolves, which the daemon turns into an orderly stop. (Its own
//! process: the hook is process-wide.)

use std::time::Duration;

#[test]
fn a_panicking_task_asks_for_an_orderly_stop() {
    primwatch::sys::supervise::install_panic_hook();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let fatal = tokio::spawn(primwatch::sys::supervise::fatal());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let task = tokio::spawn(async {
            let values: Vec<u32> = Vec::new();
            values[3] // index out of bounds: a bug in a task
        });
        assert!(task.await.is_err(), "the task died");
        let reason = tokio::time::timeout(Duration::from_secs(2), fatal).await.expect("fatal resolves").unwrap();
        assert!(reason.contains("index out of bounds") && reason.contains("panic_stops_in_order.rs"), "{reason}");
    });
    // And a plain thread's panic is seen too.
    let _ = std::thread::Builder::new().name("worker".into()).spawn(|| panic!("thread bug")).unwrap().join();
    assert!(primwatch::sys::supervise::reason().is_some());
}
