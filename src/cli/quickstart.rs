//! `ferry quickstart`: the whole journey on made-up data, in one command. It builds a demo
//! workspace with an embedded DuckDB warehouse, connects Stripe (your test account when
//! STRIPE_API_KEY holds an `sk_test_` key, else the built-in emulator), creates a model and a
//! sync, previews and runs it, changes a few rows, and runs again to show that only changes go out;
//! then syncs the plans the customers pay for as Stripe Products, keyed by their own ids, and
//! their prices, keyed by lookup key; and last, order lines as invoices, finalized and sent.

use super::{connections, models, syncs, CliError, CliResult, Format, GlobalArgs};
use clap::Args;
use ferry_core::Secret;
use ferry_state::{ConnectionKind, SecretInput, StateStore};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct QuickstartArgs {
    /// Where to build the demo (replaced if an earlier quickstart made it).
    #[arg(long, default_value = "ferry-demo")]
    pub dir: PathBuf,
    /// How many made-up customers the warehouse holds.
    #[arg(long, default_value_t = 1000)]
    pub customers: u32,
    /// Run the emulator without Stripe's rate limits (the run then takes a second, not ~40).
    #[arg(long)]
    pub no_rate_limits: bool,
}

const MARKER: &str = ".made-by-ferry-quickstart";

pub async fn quickstart(args: QuickstartArgs) -> CliResult {
    prepare_dir(&args.dir)?;
    let warehouse = args.dir.join("warehouse.duckdb");
    step(&format!(
        "Creating a DuckDB warehouse with {} made-up customers at {}",
        args.customers,
        warehouse.display()
    ));
    ferry_source::duckdb_execute(&warehouse, &demo_data_sql(args.customers))
        .map_err(CliError::failed)?;

    let global = GlobalArgs {
        workspace: args.dir.join("workspace"),
        state_url: None,
        verbose: 0,
        log_format: super::LogFormat::default(),
    };
    let store = super::open_workspace(&global).await?;
    let ws = global.workspace.display().to_string();

    let real_key = std::env::var("STRIPE_API_KEY")
        .ok()
        .filter(|k| k.starts_with("sk_test_"));
    let emulator = match &real_key {
        Some(_) => None,
        None => {
            let mut config = ferry_stripe_emulator::EmulatorConfig::default();
            config.rate_limits.enabled = !args.no_rate_limits;
            let emulator = ferry_stripe_emulator::Emulator::start(config)
                .await
                .map_err(|e| {
                    CliError::failed(anyhow::anyhow!("cannot start the Stripe emulator: {e}"))
                })?;
            step(&format!(
                "STRIPE_API_KEY holds no sk_test_ key, so ferry started its Stripe emulator at {}{}",
                emulator.url(),
                if args.no_rate_limits { " (rate limits off)" } else { " (with Stripe's test-mode rate limits: 25 requests/s)" }
            ));
            Some(emulator)
        }
    };
    let (api_base, key_args) = match (&emulator, &real_key) {
        (Some(emulator), _) => (
            emulator.url(),
            (Some(ferry_stripe_emulator::TEST_API_KEY.to_string()), None),
        ),
        (None, _) => (
            ferry_destinations::stripe::STRIPE_API_BASE.to_string(),
            (None, Some("STRIPE_API_KEY".to_string())),
        ),
    };
    command(
        &ws,
        &format!(
            "connect stripe demo-stripe {} --api-base {api_base}",
            if key_args.1.is_some() {
                "--api-key-env STRIPE_API_KEY"
            } else {
                "--api-key sk_test_…"
            }
        ),
    );
    let key = match key_args {
        (Some(key), _) => SecretInput::Value(Secret::new(key)),
        (None, variable) => SecretInput::EnvVar(variable.unwrap_or_default()),
    };
    connections::connect(
        &store,
        connections::ConnectCommand::new(
            ConnectionKind::Stripe,
            "demo-stripe",
            Some(key),
            &[("api_base", api_base.clone())],
        ),
    )
    .await?;
    command(
        &ws,
        &format!(
            "connect duckdb demo-warehouse --path {}",
            warehouse.display()
        ),
    );
    connections::connect(
        &store,
        connections::ConnectCommand::new(
            ConnectionKind::Duckdb,
            "demo-warehouse",
            None,
            &[("path", warehouse.display().to_string())],
        ),
    )
    .await?;
    command(
        &ws,
        "model create paying-customers --connection demo-warehouse --sql '…'",
    );
    models::model(
        &store,
        models::ModelCommand::Create(models::ModelCreateArgs {
            name: "paying-customers".into(),
            connection: "demo-warehouse".into(),
            sql: Some(MODEL_SQL.into()),
            file: None,
        }),
    )
    .await?;
    let mappings = [
        "full_name=name",
        "phone=phone",
        "address_line1=address.line1",
        "city=address.city",
        "postal_code=address.postal_code",
        "country=address.country",
        "plan=metadata.plan",
        "lifetime_value=metadata.lifetime_value",
        "signup_date=metadata.signup_date",
    ];
    command(&ws, &format!("sync create customers-to-stripe --model paying-customers --destination demo-stripe --behavior update-or-create --key email=email {}", mappings.iter().map(|m| format!("--map {m}")).collect::<Vec<_>>().join(" ")));
    syncs::sync(
        &store,
        syncs::SyncCommand::Create(Box::new(syncs::SyncCreateArgs {
            name: "customers-to-stripe".into(),
            model: "paying-customers".into(),
            destination: "demo-stripe".into(),
            object: syncs::ObjectArg(ferry_core::ObjectKind::Customer),
            behavior: syncs::BehaviorArg::UpdateOrCreate,
            key: "email=email".into(),
            mappings: mappings.iter().map(|m| m.to_string()).collect(),
            nulls: syncs::NullsArg::Skip,
            schedule: None,
            max_retire_percent: 10,
            delete_customers: false,
            cancel_now: false,
            void_open: false,
            line_key: None,
            finalize: None,
            reissue_finalized: false,
            alerts: Default::default(),
        })),
    )
    .await?;

    let first = preview_and_run(&store, &ws, "customers-to-stripe").await?;

    step("Changing the warehouse: 5 customers upgrade their plan, 2 change their phone, 3 sign up");
    ferry_source::duckdb_execute(&warehouse, &demo_changes_sql(args.customers))
        .map_err(CliError::failed)?;
    let second = preview_and_run(&store, &ws, "customers-to-stripe").await?;
    let products = sync_plans_as_products(&store, &ws, &warehouse).await?;
    let prices = sync_prices(&store, &ws, &warehouse).await?;
    let invoices = sync_invoices(&store, &ws, &warehouse).await?;

    println!();
    println!("Done. The customers' second run sent {} (lookups of the new rows included) for {} changed rows, and nothing for the {} rows that did not change.",
        super::output::plural(second.counts.requests, "request", "requests"),
        second.counts.created + second.counts.updated,
        second.counts.unchanged);
    println!("Where to look:");
    println!("  ferry --workspace {ws} runs                                  # the run history");
    println!(
        "  ferry --workspace {ws} run show {} --records rejected   # why rows were rejected",
        first.run_id
    );
    println!(
        "  ferry --workspace {ws} run show {}                      # every record of the last run",
        second.run_id
    );
    println!(
        "  ferry --workspace {ws} serve                                 # the same in the web UI, at http://127.0.0.1:8080"
    );
    match &emulator {
        Some(emulator) => {
            let customers = emulator.handle().customers();
            println!(
                "The emulator now holds {} customers. One of them, as Stripe would return it:",
                customers.len()
            );
            if let Some(customer) = customers
                .iter()
                .find(|c| c["metadata"]["plan"] == "enterprise")
            {
                println!(
                    "{}",
                    serde_json::to_string_pretty(customer).unwrap_or_default()
                );
            }
            println!(
                "It also holds {} products, made by {}: `free`, `starter`, `pro`, `enterprise` and `legacy-2019` (archived),",
                emulator.handle().products().len(),
                super::output::plural(products.counts.created, "create", "creates"),
            );
            println!(
                "and {} prices, made by {}: `starter_monthly`, `pro_yearly`, … (their lookup keys).",
                emulator.handle().prices().len(),
                super::output::plural(prices.counts.created, "create", "creates"),
            );
            println!(
                "and {} invoices from order lines, made by {}, finalized and sent: ORD-1001 (two lines) and ORD-1002.",
                emulator.handle().invoices().len(),
                super::output::plural(invoices.counts.requests, "request", "requests"),
            );
            println!("The emulator stops with this command. To keep one running: `ferry emulate stripe`, then connect it with --api-base.");
            println!("To sync into your own Stripe test account instead: STRIPE_API_KEY=sk_test_… cargo run --release -- quickstart");
        }
        None => {
            println!("Open your customers in Stripe: https://dashboard.stripe.com/test/customers");
            println!(
                "and the products with their prices: https://dashboard.stripe.com/test/products"
            );
            println!("and the invoices: https://dashboard.stripe.com/test/invoices");
        }
    }
    if let Some(emulator) = emulator {
        emulator.stop().await;
    }
    Ok(0)
}

/// The catalogue: the plans of the demo's customers become Stripe Products whose ids are the
/// plans' codes, so that a product is found by the same code in the warehouse and in Stripe.
async fn sync_plans_as_products(
    store: &StateStore,
    ws: &str,
    warehouse: &Path,
) -> CliResult<ferry_engine::RunReport> {
    step(
        "Syncing the catalogue: the plans become Stripe Products, with the plan codes as their ids",
    );
    ferry_source::duckdb_execute(warehouse, PLANS_SQL).map_err(CliError::failed)?;
    command(
        ws,
        "model create plans --connection demo-warehouse --sql 'SELECT * FROM plans ORDER BY code'",
    );
    models::model(
        store,
        models::ModelCommand::Create(models::ModelCreateArgs {
            name: "plans".into(),
            connection: "demo-warehouse".into(),
            sql: Some("SELECT * FROM plans ORDER BY code".into()),
            file: None,
        }),
    )
    .await?;
    let mappings = [
        "name=name",
        "description=description",
        "available=active",
        "unit_label=unit_label",
        "'quickstart'=metadata.source",
    ];
    command(ws, &format!("sync create plans-to-stripe --model plans --destination demo-stripe --object product --key code=id {}", mappings.iter().map(|m| format!("--map \"{m}\"")).collect::<Vec<_>>().join(" ")));
    syncs::sync(
        store,
        syncs::SyncCommand::Create(Box::new(syncs::SyncCreateArgs {
            name: "plans-to-stripe".into(),
            model: "plans".into(),
            destination: "demo-stripe".into(),
            object: syncs::ObjectArg(ferry_core::ObjectKind::Product),
            behavior: syncs::BehaviorArg::UpdateOrCreate,
            key: "code=id".into(),
            mappings: mappings.iter().map(|m| m.to_string()).collect(),
            nulls: syncs::NullsArg::Skip,
            schedule: None,
            max_retire_percent: 10,
            delete_customers: false,
            cancel_now: false,
            void_open: false,
            line_key: None,
            finalize: None,
            reissue_finalized: false,
            alerts: Default::default(),
        })),
    )
    .await?;
    preview_and_run(store, ws, "plans-to-stripe").await
}

/// The plans' prices, found again by their lookup keys; each names its product by the plan
/// code, which is the product's id.
async fn sync_prices(
    store: &StateStore,
    ws: &str,
    warehouse: &Path,
) -> CliResult<ferry_engine::RunReport> {
    step("Syncing the price list: a monthly and a yearly price per paid plan, found by lookup key");
    ferry_source::duckdb_execute(warehouse, PRICES_SQL).map_err(CliError::failed)?;
    let sql = "SELECT * FROM price_list ORDER BY lookup_key";
    command(
        ws,
        &format!("model create price-list --connection demo-warehouse --sql '{sql}'"),
    );
    models::model(
        store,
        models::ModelCommand::Create(models::ModelCreateArgs {
            name: "price-list".into(),
            connection: "demo-warehouse".into(),
            sql: Some(sql.into()),
            file: None,
        }),
    )
    .await?;
    let mappings = [
        "plan_code=product",
        "currency=currency",
        "amount_cents=unit_amount",
        "billing_period=recurring.interval",
        "label=nickname",
    ];
    command(ws, &format!("sync create prices-to-stripe --model price-list --destination demo-stripe --object price --key lookup_key=lookup_key {}", mappings.iter().map(|m| format!("--map {m}")).collect::<Vec<_>>().join(" ")));
    syncs::sync(
        store,
        syncs::SyncCommand::Create(Box::new(syncs::SyncCreateArgs {
            name: "prices-to-stripe".into(),
            model: "price-list".into(),
            destination: "demo-stripe".into(),
            object: syncs::ObjectArg(ferry_core::ObjectKind::Price),
            behavior: syncs::BehaviorArg::UpdateOrCreate,
            key: "lookup_key=lookup_key".into(),
            mappings: mappings.iter().map(|m| m.to_string()).collect(),
            nulls: syncs::NullsArg::Skip,
            schedule: None,
            max_retire_percent: 10,
            delete_customers: false,
            cancel_now: false,
            void_open: false,
            line_key: None,
            finalize: None,
            reissue_finalized: false,
            alerts: Default::default(),
        })),
    )
    .await?;
    preview_and_run(store, ws, "prices-to-stripe").await
}

/// Invoices from order lines: one model row per line, the rows of one order one invoice,
/// finalized and sent once its lines are on it. Its customers are found by email among those
/// the customer sync made.
async fn sync_invoices(
    store: &StateStore,
    ws: &str,
    warehouse: &Path,
) -> CliResult<ferry_engine::RunReport> {
    step("Syncing order lines as invoices: one invoice per order, one item per line, finalized and sent");
    ferry_source::duckdb_execute(warehouse, ORDER_LINES_SQL).map_err(CliError::failed)?;
    let sql = "SELECT * FROM order_lines ORDER BY order_id, line_id";
    command(
        ws,
        &format!("model create order-lines --connection demo-warehouse --sql '{sql}'"),
    );
    models::model(
        store,
        models::ModelCommand::Create(models::ModelCreateArgs {
            name: "order-lines".into(),
            connection: "demo-warehouse".into(),
            sql: Some(sql.into()),
            file: None,
        }),
    )
    .await?;
    let mappings = [
        "email=customer(email)",
        "'send_invoice'=collection_method",
        "'30'=days_until_due",
        "'usd'=currency",
        "item=lines.description",
        "amount_cents=lines.amount",
    ];
    command(ws, &format!("sync create invoices-to-stripe --model order-lines --destination demo-stripe --object invoice --key order_id=metadata.order_id --line-key line_id --finalize when-created {}", mappings.iter().map(|m| format!("--map \"{m}\"")).collect::<Vec<_>>().join(" ")));
    syncs::sync(
        store,
        syncs::SyncCommand::Create(Box::new(syncs::SyncCreateArgs {
            name: "invoices-to-stripe".into(),
            model: "order-lines".into(),
            destination: "demo-stripe".into(),
            object: syncs::ObjectArg(ferry_core::ObjectKind::Invoice),
            behavior: syncs::BehaviorArg::UpdateOrCreate,
            key: "order_id=metadata.order_id".into(),
            mappings: mappings.iter().map(|m| m.to_string()).collect(),
            nulls: syncs::NullsArg::Skip,
            schedule: None,
            max_retire_percent: 10,
            delete_customers: false,
            cancel_now: false,
            void_open: false,
            line_key: Some("line_id".into()),
            finalize: Some(ferry_core::Finalize::WhenCreated),
            reissue_finalized: false,
            alerts: Default::default(),
        })),
    )
    .await?;
    preview_and_run(store, ws, "invoices-to-stripe").await
}

async fn preview_and_run(
    store: &StateStore,
    ws: &str,
    sync: &str,
) -> CliResult<ferry_engine::RunReport> {
    command(ws, &format!("sync preview {sync}"));
    let setup = ferry_engine::load_sync_setup(store, sync).await?;
    let preview = ferry_engine::preview_sync(store, &setup).await?;
    syncs::print_preview(sync, &preview);
    command(ws, &format!("sync run {sync}"));
    let report = syncs::run(store, sync, syncs::RunFlags::default(), Format::Text).await?;
    if report.status != ferry_core::RunStatus::Completed {
        return Err(CliError::failed(anyhow::anyhow!(
            "the demo run did not complete: {}",
            report.error.unwrap_or_default()
        )));
    }
    Ok(report)
}

fn step(text: &str) {
    println!("\n==> {text}");
}

fn command(workspace: &str, args: &str) {
    println!("\n$ ferry --workspace {workspace} {args}");
}

fn prepare_dir(dir: &Path) -> CliResult<()> {
    if dir.exists() {
        if !dir.join(MARKER).exists() {
            return Err(CliError::config(anyhow::anyhow!(
                "{} exists and was not made by `ferry quickstart`; choose another place with --dir",
                dir.display()
            )));
        }
        std::fs::remove_dir_all(dir).map_err(|e| {
            CliError::failed(anyhow::anyhow!("cannot replace {}: {e}", dir.display()))
        })?;
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::failed(anyhow::anyhow!("cannot create {}: {e}", dir.display())))?;
    std::fs::write(
        dir.join(MARKER),
        "This folder was made by `ferry quickstart`, which replaces it when run again.\n",
    )
    .map_err(|e| CliError::failed(anyhow::anyhow!("cannot write in {}: {e}", dir.display())))?;
    Ok(())
}

/// The plans the demo's customers are on (`churned` is no plan), and one retired plan.
const PLANS_SQL: &str = "CREATE TABLE plans AS SELECT * FROM (VALUES
  ('free', 'Free', 'For trying things out', true, NULL),
  ('starter', 'Starter', 'For small teams', true, 'seat'),
  ('pro', 'Pro', 'For growing teams, with priority support', true, 'seat'),
  ('enterprise', 'Enterprise', 'For large organisations, with a dedicated manager', true, 'seat'),
  ('legacy-2019', 'Legacy (2019)', 'No longer sold', false, 'seat')
) AS t(code, name, description, available, unit_label)";

/// A monthly and a yearly price (two months free) for each paid plan, in US cents.
const PRICES_SQL: &str = "CREATE TABLE price_list AS
SELECT code || '_' || billing_period || 'ly' AS lookup_key, code AS plan_code, 'usd' AS currency,
       CASE billing_period WHEN 'month' THEN monthly ELSE monthly * 10 END AS amount_cents,
       billing_period, name || CASE billing_period WHEN 'month' THEN ', monthly' ELSE ', yearly' END AS label
FROM (VALUES ('starter', 'Starter', 900), ('pro', 'Pro', 2900), ('enterprise', 'Enterprise', 9900)) AS plans(code, name, monthly),
     (VALUES ('month'), ('year')) AS periods(billing_period)";

/// Two orders of customers who signed up in the demo's second round, one row per line.
const ORDER_LINES_SQL: &str = "CREATE TABLE order_lines AS SELECT * FROM (VALUES
  ('ORD-1001', 'L1', 'katherine.johnson@example.com', 'Onboarding workshop', 50000),
  ('ORD-1001', 'L2', 'katherine.johnson@example.com', 'Data migration', 25000),
  ('ORD-1002', 'L1', 'mary.jackson@example.com', 'Onboarding workshop', 50000)
) AS t(order_id, line_id, email, item, amount_cents)";

const MODEL_SQL: &str = "SELECT email, full_name, phone, address_line1, city, postal_code, country,
       plan, lifetime_value, signup_date
FROM customers
WHERE plan <> 'churned'
ORDER BY customer_id";

/// Deterministic made-up customers, plus three rows a real warehouse would also have: an
/// invalid email, a duplicate in another case, and a phone number too long for Stripe.
fn demo_data_sql(count: u32) -> String {
    format!(
        "CREATE TABLE customers AS
SELECT i AS customer_id,
       lower(first_name) || '.' || lower(last_name) || i || '@example.com' AS email,
       first_name || ' ' || last_name AS full_name,
       '+1 555 ' || lpad(CAST((i * 7919) % 10000 AS VARCHAR), 4, '0') AS phone,
       CAST(100 + (i * 37) % 900 AS VARCHAR) || ' ' || street || ' Street' AS address_line1,
       city, postal_code, country,
       ['free', 'starter', 'pro', 'enterprise', 'churned'][1 + CAST(hash(i) % 5 AS INTEGER)] AS plan,
       CAST((hash(i * 3) % 500000) / 100.0 AS DECIMAL(10, 2)) AS lifetime_value,
       DATE '2021-01-01' + CAST(hash(i * 5) % 1400 AS INTEGER) AS signup_date
FROM (
  SELECT i,
         ['Ada', 'Alan', 'Grace', 'Edsger', 'Barbara', 'Donald', 'Frances', 'Ken', 'Radia', 'Tim', 'Margaret', 'Linus'][1 + i % 12] AS first_name,
         ['Lovelace', 'Turing', 'Hopper', 'Dijkstra', 'Liskov', 'Knuth', 'Allen', 'Thompson', 'Perlman', 'Berners-Lee', 'Hamilton', 'Torvalds', 'Ritchie'][1 + i % 13] AS last_name,
         ['Oak', 'Maple', 'Cedar', 'Pine', 'Elm', 'Birch'][1 + i % 6] AS street,
         ['Paris', 'London', 'Berlin', 'Lisbon', 'Austin', 'Toronto', 'Sydney'][1 + i % 7] AS city,
         ['FR', 'GB', 'DE', 'PT', 'US', 'CA', 'AU'][1 + i % 7] AS country,
         lpad(CAST((i * 131) % 100000 AS VARCHAR), 5, '0') AS postal_code
  FROM range(1, {count} + 1) AS t(i)
);
UPDATE customers SET plan = 'pro' WHERE customer_id <= 3;
UPDATE customers SET email = 'not-an-email' WHERE customer_id = {count} - 2;
UPDATE customers SET email = upper((SELECT email FROM customers WHERE customer_id = 1)) WHERE customer_id = {count} - 1;
UPDATE customers SET phone = '+1 555 0100 0100 0100 0100' WHERE customer_id = {count};
UPDATE customers SET plan = 'starter' WHERE customer_id >= {count} - 2;"
    )
}

fn demo_changes_sql(count: u32) -> String {
    format!(
        "UPDATE customers SET plan = 'enterprise' WHERE customer_id IN (SELECT customer_id FROM customers WHERE plan IN ('free', 'starter', 'pro') AND customer_id < {count} - 3 ORDER BY customer_id LIMIT 5);
UPDATE customers SET phone = '+44 20 7946 0' || customer_id WHERE customer_id IN (SELECT customer_id FROM customers WHERE plan <> 'churned' AND customer_id < {count} - 3 ORDER BY customer_id DESC LIMIT 2);
INSERT INTO customers VALUES
  ({count} + 1, 'katherine.johnson@example.com', 'Katherine Johnson', '+1 555 0101', '1 Launch Road', 'Hampton', '23666', 'US', 'pro', 1200.00, DATE '2026-11-01'),
  ({count} + 2, 'dorothy.vaughan@example.com', 'Dorothy Vaughan', '+1 555 0102', '2 Launch Road', 'Hampton', '23666', 'US', 'starter', 80.50, DATE '2026-11-02'),
  ({count} + 3, 'mary.jackson@example.com', 'Mary Jackson', '+1 555 0103', '3 Launch Road', 'Hampton', '23666', 'US', 'enterprise', 9800.00, DATE '2026-11-03');"
    )
}
