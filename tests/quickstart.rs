//! End-to-end: `ferry quickstart`, the README's first command, runs the whole demo (customers
//! twice, then the plans as products and their prices) into its own emulator; the workspace it leaves behind
//! holds the runs it printed.

use ferry_core::RunStatus;
use ferry_state::{StateStore, WorkspaceOptions};
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_syncs_customers_then_products_and_leaves_a_workspace_to_explore() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let quickstart = || {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["quickstart", "--customers", "60", "--no-rate-limits"])
            .env_remove("STRIPE_API_KEY")
            .env_remove("FERRY_HOME")
            .env_remove("FERRY_STATE_URL")
            .env_remove("FERRY_MASTER_KEY")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("ferry starts")
    };
    let output = quickstart();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("It also holds 5 products, made by 5 creates")
            && stdout.contains("and 6 prices, made by 6 creates")
            && stdout.contains("and 2 invoices from order lines"),
        "{stdout}"
    );

    let store = StateStore::open_existing(&WorkspaceOptions::in_dir(
        dir.path().join("ferry-demo/workspace"),
    ))
    .await
    .expect("the demo workspace opens");
    let customers = store
        .list_runs(Some("customers-to-stripe"), 10)
        .await
        .unwrap();
    assert_eq!(customers.len(), 2);
    assert!(customers.iter().all(|r| r.status == RunStatus::Completed));
    // Newest first: the second run sends only what changed (3 sign-ups, 7 changed rows at most).
    let (second, first) = (&customers[0].counts, &customers[1].counts);
    // Rejected: the invalid email, both copies of the duplicate, the phone too long.
    assert!(first.created > 0 && first.rejected == 4, "{first:?}");
    assert_eq!(second.created, 3, "{second:?}");
    assert!(second.updated <= 7 && second.unchanged > 0, "{second:?}");
    let products = store.list_runs(Some("plans-to-stripe"), 10).await.unwrap();
    assert_eq!(products.len(), 1);
    assert_eq!(
        (products[0].counts.created, products[0].counts.rejected),
        (5, 0)
    );
    let prices = store.list_runs(Some("prices-to-stripe"), 10).await.unwrap();
    assert_eq!(
        (prices[0].counts.created, prices[0].counts.rejected),
        (6, 0)
    );
    // Three order lines, two orders: two invoices, every row accounted for.
    let invoices = store
        .list_runs(Some("invoices-to-stripe"), 10)
        .await
        .unwrap();
    let counts = &invoices[0].counts;
    assert_eq!(
        (
            counts.rows,
            counts.created,
            counts.rejected,
            counts.not_attempted
        ),
        (3, 2, 0, 0),
        "{counts:?}"
    );
    drop(store);

    // Run again: the folder it made is replaced, not refused.
    assert!(quickstart().status.success());
}
