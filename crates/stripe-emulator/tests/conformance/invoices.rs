//! Invoices and invoice items: create (a draft with its lines and totals worked out from its
//! items), the stored-state checks of create (customer, draft invoice of the same customer,
//! one-time price, currency, 250 items), the status machine (finalize, send, void, mark
//! uncollectible, pay: each transition allowed and refused), what an update may change in each
//! status, deleting drafts and items, lists and their filters, lines, search, events,
//! idempotency, restricted keys and reset.

use ferry_stripe_emulator::{Access, EmulatorConfig, RestrictedKey};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{send, start, start_with, test_config, Reply, TestServer};

fn ids(reply: &Reply) -> Vec<String> {
    reply.body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {:?}", reply.body))
        .iter()
        .map(|object| object["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A search query as a form value.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A customer, a product and its prices.
struct Fixture {
    customer: String,
    /// 10.00 USD, one-time.
    one_time: String,
    /// 2.5 USD cents, one-time, as a decimal.
    decimal: String,
    monthly: String,
    one_time_eur: String,
}

async fn fixture(server: &TestServer) -> Fixture {
    let customer = server.create_customer("email=a%40b.co").await;
    let product = server.create_product("name=Seat").await;
    let price = |extra: &str| format!("product={product}&{extra}");
    Fixture {
        customer,
        one_time: server
            .create_price(&price("currency=usd&unit_amount=1000"))
            .await,
        decimal: server
            .create_price(&price("currency=usd&unit_amount_decimal=2.5"))
            .await,
        monthly: server
            .create_price(&price(
                "currency=usd&unit_amount=1000&recurring[interval]=month",
            ))
            .await,
        one_time_eur: server
            .create_price(&price("currency=eur&unit_amount=700"))
            .await,
    }
}

async fn create(server: &TestServer, path: &str, body: &str) -> Value {
    let reply = server.post(path, body).await;
    assert_eq!(reply.status, 200, "{path} {body}: {:?}", reply.body);
    reply.body
}

async fn draft(server: &TestServer, customer: &str, extra: &str) -> String {
    let invoice = create(
        server,
        "/v1/invoices",
        &format!("customer={customer}{extra}"),
    )
    .await;
    invoice["id"].as_str().unwrap().to_owned()
}

async fn add_item(server: &TestServer, customer: &str, invoice: &str, extra: &str) -> Value {
    create(
        server,
        "/v1/invoiceitems",
        &format!("customer={customer}&invoice={invoice}&{extra}"),
    )
    .await
}

async fn check_refused(
    server: &TestServer,
    path: &str,
    body: &str,
    param: Option<&str>,
    message: &str,
) -> Reply {
    let reply = server.post(path, body).await;
    assert_eq!(reply.status, 400, "{path} {body}: {:?}", reply.body);
    assert_eq!(reply.error_type(), Some("invalid_request_error"), "{body}");
    assert_eq!(reply.error_param(), param, "{path} {body}");
    assert_eq!(reply.error_message(), message, "{path} {body}");
    reply
}

#[tokio::test]
async fn create_returns_a_stripe_shaped_draft_invoice() {
    let server = start().await;
    let f = fixture(&server).await;
    let before = now();
    let invoice = create(
        &server,
        "/v1/invoices",
        &format!(
            "customer={}&collection_method=send_invoice&days_until_due=30&description=March&footer=Thanks&metadata[external_id]=42",
            f.customer
        ),
    )
    .await;
    let id = invoice["id"].as_str().unwrap();
    assert!(id.starts_with("in_") && id.len() == 17, "{id}");
    assert_eq!(
        invoice.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![
            "id",
            "object",
            "amount_due",
            "amount_paid",
            "amount_remaining",
            "auto_advance",
            "collection_method",
            "created",
            "currency",
            "customer",
            "description",
            "due_date",
            "footer",
            "lines",
            "livemode",
            "metadata",
            "number",
            "paid",
            "paid_out_of_band",
            "period_end",
            "period_start",
            "status",
            "status_transitions",
            "subtotal",
            "total"
        ]
    );
    let created = invoice["created"].as_i64().unwrap();
    assert!(created >= before && created <= now());
    for (field, expected) in [
        ("object", json!("invoice")),
        ("amount_due", json!(0)),
        ("amount_paid", json!(0)),
        ("amount_remaining", json!(0)),
        ("auto_advance", json!(false)),
        ("collection_method", json!("send_invoice")),
        ("currency", json!("usd")),
        ("customer", json!(f.customer)),
        ("description", json!("March")),
        ("due_date", json!(created + 30 * 86_400)),
        ("footer", json!("Thanks")),
        ("livemode", json!(false)),
        ("metadata", json!({"external_id": "42"})),
        ("number", Value::Null),
        ("paid", json!(false)),
        ("status", json!("draft")),
        (
            "status_transitions",
            json!({"finalized_at": null, "marked_uncollectible_at": null, "paid_at": null, "voided_at": null}),
        ),
        ("subtotal", json!(0)),
        ("total", json!(0)),
        (
            "lines",
            json!({"object": "list", "data": [], "has_more": false, "total_count": 0, "url": format!("/v1/invoices/{id}/lines")}),
        ),
    ] {
        assert_eq!(invoice[field], expected, "{field}");
    }
    let retrieved = server.get(&format!("/v1/invoices/{id}")).await;
    assert_eq!(retrieved.status, 200);
    assert_eq!(retrieved.body, invoice);
    assert_eq!(server.handle.invoices(), vec![invoice.clone()]);
    assert_eq!(server.handle.invoice(id), Some(invoice.clone()));
    let missing = server.get("/v1/invoices/in_nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error_code(), Some("resource_missing"));
    assert_eq!(missing.error_message(), "No such invoice: 'in_nope'");
    assert_eq!(missing.error_param(), Some("id"));

    let eur = create(
        &server,
        "/v1/invoices",
        &format!(
            "customer={}&currency=EUR&collection_method=send_invoice&due_date=1900000000&auto_advance=true",
            f.customer
        ),
    )
    .await;
    assert_eq!(eur["currency"], "eur");
    assert_eq!(eur["due_date"], 1_900_000_000);
    assert_eq!(eur["auto_advance"], true);
    let charged = create(&server, "/v1/invoices", &format!("customer={}", f.customer)).await;
    assert_eq!(charged["collection_method"], "charge_automatically");
    assert_eq!(charged["due_date"], Value::Null);

    let unknown = check_refused(
        &server,
        "/v1/invoices",
        "customer=cus_nope",
        Some("customer"),
        "No such customer: 'cus_nope'",
    )
    .await;
    assert_eq!(unknown.error_code(), Some("resource_missing"));
    let missing_due = check_refused(
        &server,
        "/v1/invoices",
        &format!("customer={}&collection_method=send_invoice", f.customer),
        Some("days_until_due"),
        "Missing required param: days_until_due.",
    )
    .await;
    assert_eq!(missing_due.error_code(), Some("parameter_missing"));
    check_refused(
        &server,
        "/v1/invoices",
        &format!("customer={}&days_until_due=3", f.customer),
        Some("days_until_due"),
        "`days_until_due` can only be set when `collection_method=send_invoice`.",
    )
    .await;
    let unknown_param = server
        .post(
            "/v1/invoices",
            &format!("customer={}&subscription=sub_1", f.customer),
        )
        .await;
    assert_eq!(unknown_param.status, 400);
    assert_eq!(unknown_param.error_code(), Some("parameter_unknown"));
    assert_eq!(server.handle.invoices().len(), 3, "refusals store nothing");
}

#[tokio::test]
async fn invoice_items_make_the_lines_and_totals() {
    let server = start().await;
    let f = fixture(&server).await;
    let invoice = draft(&server, &f.customer, "").await;
    let seats = add_item(
        &server,
        &f.customer,
        &invoice,
        &format!("price={}&quantity=3&metadata[external_id]=7", f.one_time),
    )
    .await;
    let item_id = seats["id"].as_str().unwrap();
    assert!(
        item_id.starts_with("ii_") && item_id.len() == 17,
        "{item_id}"
    );
    assert_eq!(
        seats.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![
            "id",
            "object",
            "amount",
            "currency",
            "customer",
            "date",
            "description",
            "discountable",
            "invoice",
            "livemode",
            "metadata",
            "period",
            "price",
            "proration",
            "quantity",
            "unit_amount",
            "unit_amount_decimal"
        ]
    );
    let date = seats["date"].as_i64().unwrap();
    for (field, expected) in [
        ("object", json!("invoiceitem")),
        ("amount", json!(3000)),
        ("currency", json!("usd")),
        ("customer", json!(f.customer)),
        ("description", json!("Seat")),
        ("discountable", json!(true)),
        ("invoice", json!(invoice)),
        ("metadata", json!({"external_id": "7"})),
        ("period", json!({"end": date, "start": date})),
        ("proration", json!(false)),
        ("quantity", json!(3)),
        ("unit_amount", json!(1000)),
        ("unit_amount_decimal", json!("1000")),
    ] {
        assert_eq!(seats[field], expected, "{field}");
    }
    let price = server.get(&format!("/v1/prices/{}", f.one_time)).await;
    assert_eq!(
        seats["price"], price.body,
        "the full price, as GET shows it"
    );
    let credit = add_item(
        &server,
        &f.customer,
        &invoice,
        "amount=-500&description=Credit&period[start]=1700000000&period[end]=1700086400",
    )
    .await;
    assert_eq!(credit["amount"], -500);
    assert_eq!(credit["currency"], "usd", "the invoice's currency");
    assert_eq!(credit["discountable"], false, "negative items are not");
    assert_eq!(credit["price"], Value::Null);
    assert_eq!(credit["unit_amount_decimal"], "-500");
    assert_eq!(
        credit["period"],
        json!({"end": 1_700_086_400, "start": 1_700_000_000})
    );
    let fractional = add_item(
        &server,
        &f.customer,
        &invoice,
        &format!("price={}&quantity=3", f.decimal),
    )
    .await;
    assert_eq!(fractional["amount"], 8, "2.5 × 3 rounded");
    assert_eq!(fractional["unit_amount"], Value::Null);
    let decimal = add_item(
        &server,
        &f.customer,
        &invoice,
        "unit_amount_decimal=0.25&quantity=10",
    )
    .await;
    assert_eq!(decimal["amount"], 3, "0.25 × 10 rounded");

    let shown = server.get(&format!("/v1/invoices/{invoice}")).await.body;
    for (field, expected) in [
        ("subtotal", 2511),
        ("total", 2511),
        ("amount_due", 2511),
        ("amount_remaining", 2511),
        ("amount_paid", 0),
    ] {
        assert_eq!(shown[field], expected, "{field}");
    }
    let lines = &shown["lines"];
    assert_eq!(lines["total_count"], 4);
    assert_eq!(lines["has_more"], false);
    let line = &lines["data"][0];
    assert_eq!(
        line,
        &json!({
            "id": item_id,
            "object": "line_item",
            "amount": 3000,
            "currency": "usd",
            "description": "Seat",
            "discountable": true,
            "invoice_item": item_id,
            "livemode": false,
            "metadata": {"external_id": "7"},
            "period": {"end": date, "start": date},
            "price": price.body,
            "proration": false,
            "quantity": 3,
            "type": "invoiceitem",
        })
    );
    let line_ids: Vec<&str> = lines["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line["id"].as_str().unwrap())
        .collect();
    let item_ids: Vec<&str> = [&seats, &credit, &fractional, &decimal]
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect();
    assert_eq!(line_ids, item_ids, "lines in the order items were added");
    assert_eq!(
        server
            .get(&format!("/v1/invoiceitems/{item_id}"))
            .await
            .body,
        seats
    );

    // A pending item waits on the customer and joins an invoice created with `include`.
    let pending = create(
        &server,
        "/v1/invoiceitems",
        &format!("customer={}&price={}", f.customer, f.one_time),
    )
    .await;
    assert_eq!(pending["invoice"], Value::Null);
    let excluded = draft(&server, &f.customer, "").await;
    assert_eq!(
        server.get(&format!("/v1/invoices/{excluded}")).await.body["total"],
        0,
        "exclude is the default"
    );
    let included = create(
        &server,
        "/v1/invoices",
        &format!(
            "customer={}&pending_invoice_items_behavior=include",
            f.customer
        ),
    )
    .await;
    assert_eq!(included["total"], 1000);
    assert_eq!(included["lines"]["data"][0]["id"], pending["id"]);
    assert_eq!(
        server
            .get(&format!(
                "/v1/invoiceitems/{}",
                pending["id"].as_str().unwrap()
            ))
            .await
            .body["invoice"],
        included["id"]
    );
    check_refused(
        &server,
        "/v1/invoices",
        &format!(
            "customer={}&pending_invoice_items_behavior=include_and_require",
            f.customer
        ),
        None,
        "Nothing to invoice for customer",
    )
    .await;

    // What an item needs from stored state.
    let items = "/v1/invoiceitems";
    let other = server.create_customer("email=b%40b.co").await;
    let unknown_customer = check_refused(
        &server,
        items,
        &format!("customer=cus_nope&price={}", f.one_time),
        Some("customer"),
        "No such customer: 'cus_nope'",
    )
    .await;
    assert_eq!(unknown_customer.error_code(), Some("resource_missing"));
    check_refused(
        &server,
        items,
        &format!("customer={}&invoice=in_nope&amount=5", f.customer),
        Some("invoice"),
        "No such invoice: 'in_nope'",
    )
    .await;
    check_refused(
        &server,
        items,
        &format!("customer={other}&invoice={invoice}&amount=5"),
        Some("invoice"),
        &format!("The invoice '{invoice}' belongs to another customer: an invoice item can only be added to an invoice of its own customer."),
    )
    .await;
    check_refused(
        &server,
        items,
        &format!("customer={}&price=price_nope", f.customer),
        Some("price"),
        "No such price: 'price_nope'",
    )
    .await;
    check_refused(
        &server,
        items,
        &format!("customer={}&price={}", f.customer, f.monthly),
        Some("price"),
        "The price specified is set to `type=recurring` but this field only accepts prices with `type=one_time`.",
    )
    .await;
    check_refused(
        &server,
        items,
        &format!(
            "customer={}&invoice={invoice}&price={}",
            f.customer, f.one_time_eur
        ),
        Some("currency"),
        "The invoice item's currency must match the currency of the invoice it is added to.",
    )
    .await;
    server
        .post(&format!("/v1/prices/{}", f.one_time_eur), "active=false")
        .await;
    check_refused(
        &server,
        items,
        &format!("customer={}&price={}", f.customer, f.one_time_eur),
        Some("price"),
        "The price specified is inactive. This field only accepts active prices.",
    )
    .await;
    check_refused(
        &server,
        items,
        &format!("customer={}&amount=5", f.customer),
        Some("currency"),
        "Missing required param: currency.",
    )
    .await;
    check_refused(
        &server,
        items,
        &format!(
            "customer={}&invoice={invoice}&amount=5&quantity=2",
            f.customer
        ),
        Some("amount"),
        "You may only specify one of these parameters: amount, quantity.",
    )
    .await;
    check_refused(
        &server,
        items,
        &format!(
            "customer={}&invoice={invoice}&amount=5&price={}",
            f.customer, f.one_time
        ),
        Some("amount"),
        "You may only specify one of these parameters: amount, price.",
    )
    .await;
    let unknown = server.get("/v1/invoiceitems/ii_nope").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error_message(), "No such invoiceitem: 'ii_nope'");
}

#[tokio::test]
async fn an_invoice_holds_at_most_250_items_and_pages_its_lines() {
    let server = start().await;
    let f = fixture(&server).await;
    let invoice = draft(&server, &f.customer, "").await;
    let mut item_ids = Vec::new();
    for index in 0..250 {
        let item = add_item(&server, &f.customer, &invoice, &format!("amount={index}")).await;
        item_ids.push(item["id"].as_str().unwrap().to_owned());
    }
    check_refused(
        &server,
        "/v1/invoiceitems",
        &format!("customer={}&invoice={invoice}&amount=1", f.customer),
        Some("invoice"),
        "An invoice can have at most 250 invoice items. Create another invoice for the rest.",
    )
    .await;
    let shown = server.get(&format!("/v1/invoices/{invoice}")).await.body;
    assert_eq!(shown["lines"]["total_count"], 250);
    assert_eq!(shown["lines"]["has_more"], true);
    assert_eq!(shown["lines"]["data"].as_array().unwrap().len(), 10);
    assert_eq!(shown["total"], (0..250).sum::<i64>());
    let lines = format!("/v1/invoices/{invoice}/lines");
    let first = server.get(&format!("{lines}?limit=100")).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(ids(&first), item_ids[..100].to_vec());
    assert_eq!(first.body["has_more"], true);
    assert_eq!(first.body["total_count"], 250);
    assert_eq!(first.body["url"], lines);
    let last = server
        .get(&format!(
            "{lines}?limit=100&starting_after={}",
            item_ids[199]
        ))
        .await;
    assert_eq!(ids(&last), item_ids[200..].to_vec());
    assert_eq!(last.body["has_more"], false);
    let before = server
        .get(&format!("{lines}?limit=3&ending_before={}", item_ids[3]))
        .await;
    assert_eq!(ids(&before), item_ids[..3].to_vec());
    assert_eq!(before.body["has_more"], false);
    let default = server.get(&lines).await;
    assert_eq!(ids(&default).len(), 10);
    assert_eq!(server.get(&format!("{lines}?created=5")).await.status, 400);
    assert_eq!(
        server
            .get(&format!("{lines}?starting_after=ii_nope"))
            .await
            .status,
        404
    );
    assert_eq!(server.get("/v1/invoices/in_nope/lines").await.status, 404);
    // A deleted item makes room again.
    let path = format!("/v1/invoiceitems/{}", item_ids[0]);
    assert_eq!(server.delete(&path).await.status, 200);
    add_item(&server, &f.customer, &invoice, "amount=1").await;
}

#[tokio::test]
async fn the_status_machine_allows_each_transition_and_refuses_the_rest() {
    let server = start().await;
    let f = fixture(&server).await;
    let customer = server.get(&format!("/v1/customers/{}", f.customer)).await;
    let prefix = customer.body["invoice_prefix"].as_str().unwrap().to_owned();
    let action = |id: &str, verb: &str| format!("/v1/invoices/{id}/{verb}");
    let invoice = draft(
        &server,
        &f.customer,
        "&collection_method=send_invoice&days_until_due=7",
    )
    .await;
    add_item(
        &server,
        &f.customer,
        &invoice,
        &format!("price={}", f.one_time),
    )
    .await;

    // A draft: finalized or deleted, nothing else.
    for (verb, body, message) in [
        ("send", "", "You can't send a draft invoice: finalize it first."),
        ("void", "", "You can't void an invoice whose status is 'draft': only open or uncollectible invoices can be."),
        ("mark_uncollectible", "", "You can't mark uncollectible an invoice whose status is 'draft': only open invoices can be."),
        ("pay", "paid_out_of_band=true", "You can't pay an invoice whose status is 'draft': only open or uncollectible invoices can be."),
    ] {
        check_refused(&server, &action(&invoice, verb), body, None, message).await;
    }
    let before = now();
    let open = create(&server, &action(&invoice, "finalize"), "").await;
    assert_eq!(open["status"], "open");
    assert_eq!(open["number"], format!("{prefix}-0001"));
    let finalized_at = open["status_transitions"]["finalized_at"].as_i64().unwrap();
    assert!(finalized_at >= before && finalized_at <= now());
    assert_eq!(open["amount_due"], 1000);
    assert_eq!(
        server.get(&format!("/v1/invoices/{invoice}")).await.body,
        open
    );
    check_refused(
        &server,
        &action(&invoice, "finalize"),
        "",
        None,
        "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
    )
    .await;
    let sent = create(&server, &action(&invoice, "send"), "").await;
    assert_eq!(sent, open, "sending changes nothing");
    check_refused(
        &server,
        &action(&invoice, "pay"),
        "",
        None,
        "This customer has no attached payment source or default payment method. Pay the invoice with `paid_out_of_band=true`: the emulator has no payment methods.",
    )
    .await;
    let uncollectible = create(&server, &action(&invoice, "mark_uncollectible"), "").await;
    assert_eq!(uncollectible["status"], "uncollectible");
    assert!(uncollectible["status_transitions"]["marked_uncollectible_at"].is_i64());
    check_refused(
        &server,
        &action(&invoice, "mark_uncollectible"),
        "",
        None,
        "You can't mark uncollectible an invoice whose status is 'uncollectible': only open invoices can be.",
    )
    .await;
    check_refused(
        &server,
        &action(&invoice, "send"),
        "",
        None,
        "You can't send an invoice whose status is 'uncollectible': only open or paid invoices can be sent.",
    )
    .await;
    let paid = create(&server, &action(&invoice, "pay"), "paid_out_of_band=true").await;
    for (field, expected) in [
        ("status", json!("paid")),
        ("paid", json!(true)),
        ("paid_out_of_band", json!(true)),
        ("amount_paid", json!(1000)),
        ("amount_remaining", json!(0)),
        ("number", json!(format!("{prefix}-0001"))),
    ] {
        assert_eq!(paid[field], expected, "{field}");
    }
    assert!(paid["status_transitions"]["paid_at"].is_i64());
    check_refused(
        &server,
        &action(&invoice, "pay"),
        "paid_out_of_band=true",
        None,
        "Invoice is already paid",
    )
    .await;
    check_refused(
        &server,
        &action(&invoice, "void"),
        "",
        None,
        "You can't void an invoice whose status is 'paid': only open or uncollectible invoices can be.",
    )
    .await;
    assert_eq!(
        server.post(&action(&invoice, "send"), "").await.status,
        200,
        "a paid invoice can be sent again"
    );

    // Open → void; void is final. The customer's numbers go on.
    let second = draft(&server, &f.customer, "").await;
    add_item(&server, &f.customer, &second, "amount=250").await;
    let open = create(&server, &action(&second, "finalize"), "auto_advance=true").await;
    assert_eq!(open["number"], format!("{prefix}-0002"));
    assert_eq!(open["auto_advance"], true);
    check_refused(
        &server,
        &action(&second, "send"),
        "",
        None,
        "You can only manually send an invoice if its collection method is 'send_invoice'.",
    )
    .await;
    let void = create(&server, &action(&second, "void"), "").await;
    assert_eq!(void["status"], "void");
    assert!(void["status_transitions"]["voided_at"].is_i64());
    for (verb, body) in [
        ("void", ""),
        ("mark_uncollectible", ""),
        ("pay", "paid_out_of_band=true"),
        ("finalize", ""),
    ] {
        let reply = server.post(&action(&second, verb), body).await;
        assert_eq!(reply.status, 400, "{verb} a void invoice: {:?}", reply.body);
    }
    // Uncollectible → void.
    let third = draft(&server, &f.customer, "").await;
    add_item(&server, &f.customer, &third, "amount=100").await;
    create(&server, &action(&third, "finalize"), "").await;
    create(&server, &action(&third, "mark_uncollectible"), "").await;
    assert_eq!(
        create(&server, &action(&third, "void"), "").await["status"],
        "void"
    );

    // Nothing due: paid when finalized, as on Stripe.
    let empty = draft(&server, &f.customer, "").await;
    let settled = create(&server, &action(&empty, "finalize"), "").await;
    assert_eq!(settled["status"], "paid");
    assert_eq!(settled["paid_out_of_band"], false);
    assert!(settled["status_transitions"]["finalized_at"].is_i64());
    assert!(settled["status_transitions"]["paid_at"].is_i64());

    let unknown = server.post("/v1/invoices/in_nope/finalize", "").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error_message(), "No such invoice: 'in_nope'");
    let bad = server
        .post(&action(&empty, "pay"), "paid_out_of_band=maybe")
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.error_param(), Some("paid_out_of_band"));
    let unknown_param = server.post(&action(&empty, "void"), "reason=x").await;
    assert_eq!(unknown_param.error_code(), Some("parameter_unknown"));
    assert_eq!(
        server.get(&action(&empty, "finalize")).await.status,
        404,
        "actions are POST only"
    );
}

#[tokio::test]
async fn what_an_update_may_change_follows_the_status() {
    let server = start().await;
    let f = fixture(&server).await;
    let invoice = draft(&server, &f.customer, "&metadata[plan]=gold").await;
    let path = format!("/v1/invoices/{invoice}");
    let updated = create(
        &server,
        &path,
        "collection_method=send_invoice&days_until_due=10&description=Draft&footer=F&auto_advance=true&metadata[plan]=",
    )
    .await;
    let created = updated["created"].as_i64().unwrap();
    assert_eq!(updated["collection_method"], "send_invoice");
    assert_eq!(updated["due_date"], created + 10 * 86_400);
    assert_eq!(updated["description"], "Draft");
    assert_eq!(updated["footer"], "F");
    assert_eq!(updated["auto_advance"], true);
    assert_eq!(updated["metadata"], json!({}));
    let cleared = create(&server, &path, "description=&footer=").await;
    assert_eq!(cleared["description"], Value::Null);
    assert_eq!(cleared["footer"], Value::Null);
    let customer_change = server.post(&path, "customer=cus_other").await;
    assert_eq!(customer_change.status, 400);
    assert_eq!(customer_change.error_code(), Some("parameter_unknown"));
    let charged = create(&server, &path, "collection_method=charge_automatically").await;
    assert_eq!(charged["due_date"], Value::Null);
    check_refused(
        &server,
        &path,
        "due_date=1900000000",
        Some("due_date"),
        "`due_date` can only be set when `collection_method=send_invoice`.",
    )
    .await;
    create(
        &server,
        &path,
        "collection_method=send_invoice&due_date=1900000000",
    )
    .await;
    add_item(&server, &f.customer, &invoice, "amount=100").await;
    create(&server, &format!("{path}/finalize"), "").await;

    // Open: texts, metadata, due date and auto_advance.
    let open = create(
        &server,
        &path,
        "description=Open&footer=Bye&metadata[k]=v&days_until_due=3&auto_advance=false",
    )
    .await;
    assert_eq!(open["description"], "Open");
    assert_eq!(open["due_date"], created + 3 * 86_400);
    assert_eq!(open["metadata"], json!({"k": "v"}));
    for body in [
        "collection_method=send_invoice",
        "expand[0]=lines&collection_method=charge_automatically",
    ] {
        check_refused(
            &server,
            &path,
            body,
            Some("collection_method"),
            "Finalized invoices can't be updated in this way",
        )
        .await;
    }

    // Paid: texts and metadata only.
    create(&server, &format!("{path}/pay"), "paid_out_of_band=true").await;
    let paid = create(&server, &path, "metadata[k]=w&description=Paid&footer=").await;
    assert_eq!(paid["metadata"], json!({"k": "w"}));
    assert_eq!(paid["footer"], Value::Null);
    for (body, param) in [
        ("due_date=1900000001", "due_date"),
        ("days_until_due=1", "days_until_due"),
        ("auto_advance=true", "auto_advance"),
    ] {
        check_refused(
            &server,
            &path,
            body,
            Some(param),
            "Finalized invoices can't be updated in this way",
        )
        .await;
    }
    assert_eq!(
        server
            .post("/v1/invoices/in_nope", "metadata[k]=v")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn only_drafts_and_their_items_can_be_deleted_or_changed() {
    let server = start().await;
    let f = fixture(&server).await;
    let invoice = draft(&server, &f.customer, "").await;
    let item = add_item(
        &server,
        &f.customer,
        &invoice,
        &format!("price={}", f.one_time),
    )
    .await;
    let item_path = format!("/v1/invoiceitems/{}", item["id"].as_str().unwrap());
    let changed = create(
        &server,
        &item_path,
        "quantity=4&description=Four seats&metadata[k]=v&discountable=false",
    )
    .await;
    assert_eq!(changed["amount"], 4000);
    assert_eq!(changed["description"], "Four seats");
    assert_eq!(changed["discountable"], false);
    let shown = server.get(&format!("/v1/invoices/{invoice}")).await.body;
    assert_eq!(shown["total"], 4000, "the invoice follows its items");
    assert_eq!(shown["lines"]["data"][0]["quantity"], 4);
    let repriced = create(
        &server,
        &item_path,
        &format!("price={}&quantity=2", f.decimal),
    )
    .await;
    assert_eq!(repriced["amount"], 5);
    let by_amount = create(&server, &item_path, "amount=1234").await;
    assert_eq!(
        (
            by_amount["amount"].clone(),
            by_amount["quantity"].clone(),
            by_amount["price"].clone()
        ),
        (json!(1234), json!(1), Value::Null)
    );
    let moved = server.post(&item_path, "invoice=in_other").await;
    assert_eq!(moved.error_code(), Some("parameter_unknown"));
    check_refused(
        &server,
        &item_path,
        &format!("price={}", f.one_time_eur),
        Some("price"),
        "The price's currency must match the invoice item's currency.",
    )
    .await;
    let second_item = add_item(&server, &f.customer, &invoice, "amount=66").await;

    // Deleting a draft deletes its items.
    let deleted = server.delete(&format!("/v1/invoices/{invoice}")).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(
        deleted.body,
        json!({"id": invoice, "object": "invoice", "deleted": true})
    );
    assert_eq!(
        server.get(&format!("/v1/invoices/{invoice}")).await.status,
        404
    );
    assert_eq!(server.get(&item_path).await.status, 404);
    assert_eq!(
        server
            .get(&format!(
                "/v1/invoiceitems/{}",
                second_item["id"].as_str().unwrap()
            ))
            .await
            .status,
        404
    );
    assert_eq!(
        server
            .delete(&format!("/v1/invoices/{invoice}"))
            .await
            .status,
        404
    );

    // A finalized invoice and its items stay.
    let open = draft(&server, &f.customer, "").await;
    let kept = add_item(&server, &f.customer, &open, "amount=100").await;
    create(&server, &format!("/v1/invoices/{open}/finalize"), "").await;
    let refused = server.delete(&format!("/v1/invoices/{open}")).await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.error_message(),
        "You can only delete draft invoices. A finalized invoice can be voided instead."
    );
    let kept_path = format!("/v1/invoiceitems/{}", kept["id"].as_str().unwrap());
    let message = format!("This invoice item belongs to the finalized invoice '{open}': only invoice items that are pending or on a draft invoice can be updated.");
    check_refused(&server, &kept_path, "quantity=2", None, &message).await;
    let refused = server.delete(&kept_path).await;
    assert_eq!(refused.status, 400);
    assert!(
        refused.error_message().ends_with("can be deleted."),
        "{:?}",
        refused.body
    );
    check_refused(
        &server,
        "/v1/invoiceitems",
        &format!("customer={}&invoice={open}&amount=5", f.customer),
        Some("invoice"),
        "You can only add invoice items to draft invoices.",
    )
    .await;

    // A pending item changes and goes freely.
    let pending = create(
        &server,
        "/v1/invoiceitems",
        &format!("customer={}&amount=10&currency=usd", f.customer),
    )
    .await;
    let pending_path = format!("/v1/invoiceitems/{}", pending["id"].as_str().unwrap());
    assert_eq!(
        create(&server, &pending_path, "amount=20").await["amount"],
        20
    );
    let gone = server.delete(&pending_path).await;
    assert_eq!(
        gone.body,
        json!({"id": pending["id"], "object": "invoiceitem", "deleted": true})
    );
    assert_eq!(server.delete(&pending_path).await.status, 404);
}

#[tokio::test]
async fn lists_are_newest_first_with_filters_and_cursors() {
    let server = start().await;
    let f = fixture(&server).await;
    let other = server.create_customer("email=o%40b.co").await;
    let first = draft(&server, &f.customer, "").await;
    let second = draft(
        &server,
        &other,
        "&collection_method=send_invoice&days_until_due=5",
    )
    .await;
    let third = draft(&server, &f.customer, "").await;
    add_item(&server, &f.customer, &third, "amount=100").await;
    server
        .post(&format!("/v1/invoices/{third}/finalize"), "")
        .await;
    let check = |path: &str, query: &str, expected: Vec<&String>| {
        let url = format!("{path}?{query}");
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        let server = &server;
        async move {
            let reply = server.get(&url).await;
            assert_eq!(reply.status, 200, "{url}: {:?}", reply.body);
            assert_eq!(ids(&reply), expected, "{url}");
        }
    };
    let invoices = "/v1/invoices";
    check(invoices, "", vec![&third, &second, &first]).await;
    check(invoices, "status=draft", vec![&second, &first]).await;
    check(invoices, "status=open", vec![&third]).await;
    check(invoices, "status=paid", vec![]).await;
    check(
        invoices,
        &format!("customer={}", f.customer),
        vec![&third, &first],
    )
    .await;
    check(invoices, "collection_method=send_invoice", vec![&second]).await;
    check(invoices, "limit=1", vec![&third]).await;
    check(
        invoices,
        &format!("limit=1&starting_after={third}"),
        vec![&second],
    )
    .await;
    check(
        invoices,
        &format!("ending_before={first}"),
        vec![&third, &second],
    )
    .await;
    check(invoices, "created[lt]=1000", vec![]).await;
    let paged = server.get("/v1/invoices?limit=2").await;
    assert_eq!(paged.body["has_more"], true);
    assert_eq!(paged.body["url"], "/v1/invoices");
    let bad_status = server.get("/v1/invoices?status=finished").await;
    assert_eq!(bad_status.status, 400);
    assert_eq!(bad_status.error_param(), Some("status"));
    let unknown_filter = server.get("/v1/invoices?subscription=x").await;
    assert_eq!(unknown_filter.error_code(), Some("parameter_unknown"));
    let unknown_cursor = server.get("/v1/invoices?starting_after=in_nope").await;
    assert_eq!(unknown_cursor.status, 404);
    assert_eq!(unknown_cursor.error_message(), "No such invoice: 'in_nope'");

    let on_first = add_item(&server, &f.customer, &first, "amount=1").await;
    let pending = create(
        &server,
        "/v1/invoiceitems",
        &format!("customer={other}&amount=2&currency=usd"),
    )
    .await;
    let all_items = server.get("/v1/invoiceitems?limit=100").await;
    let id = |item: &Value| item["id"].as_str().unwrap().to_owned();
    let (on_first, pending) = (id(&on_first), id(&pending));
    assert_eq!(
        ids(&all_items)[..2].to_vec(),
        vec![pending.clone(), on_first.clone()]
    );
    assert_eq!(server.handle.invoice_items().len(), 3);
    let items = "/v1/invoiceitems";
    check(items, "pending=true", vec![&pending]).await;
    check(items, &format!("invoice={first}"), vec![&on_first]).await;
    check(items, &format!("customer={other}"), vec![&pending]).await;
    check(
        items,
        &format!("customer={}&pending=false&limit=1", f.customer),
        vec![&on_first],
    )
    .await;
    check(items, &format!("ending_before={on_first}"), vec![&pending]).await;
    assert_eq!(
        server.get("/v1/invoiceitems?pending=maybe").await.status,
        400
    );
    assert_eq!(
        server
            .get("/v1/invoiceitems?starting_after=ii_nope")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn writes_record_invoice_and_invoice_item_events() {
    let server = start().await;
    let f = fixture(&server).await;
    let created = server
        .post_idempotent(
            "/v1/invoices",
            &format!(
                "customer={}&collection_method=send_invoice&days_until_due=1",
                f.customer
            ),
            "in-create-1",
        )
        .await;
    assert_eq!(created.status, 200);
    let id = created.id();
    let event = server.newest_event().await;
    assert_eq!(event["type"], "invoice.created");
    assert_eq!(event["data"]["object"], created.body);
    assert_eq!(
        event["request"]["id"],
        created.header("request-id").unwrap()
    );
    assert_eq!(event["request"]["idempotency_key"], "in-create-1");
    let item = add_item(&server, &f.customer, &id, "amount=300").await;
    let event = server.newest_event().await;
    assert_eq!(event["type"], "invoiceitem.created");
    assert_eq!(event["data"]["object"], item);
    let item_path = format!("/v1/invoiceitems/{}", item["id"].as_str().unwrap());
    let changed = create(&server, &item_path, "metadata[k]=v").await;
    let event = server.newest_event().await;
    assert_eq!(event["type"], "invoiceitem.updated");
    assert_eq!(event["data"]["object"], changed);
    assert_eq!(
        event["data"]["previous_attributes"],
        json!({"metadata": {"k": null}})
    );
    let path = format!("/v1/invoices/{id}");
    let updated = create(&server, &path, "metadata[plan]=pro").await;
    let event = server.newest_event().await;
    assert_eq!(event["type"], "invoice.updated");
    assert_eq!(event["data"]["object"], updated);
    assert_eq!(
        event["data"]["previous_attributes"],
        json!({"metadata": {"plan": null}})
    );
    let count = server.handle.events().len();
    assert_eq!(server.post(&path, "metadata[plan]=pro").await.status, 200);
    assert_eq!(server.handle.events().len(), count, "no event for a no-op");
    let finalized = create(&server, &format!("{path}/finalize"), "").await;
    assert_eq!(server.newest_event().await["data"]["object"], finalized);
    create(&server, &format!("{path}/send"), "").await;
    create(&server, &format!("{path}/mark_uncollectible"), "").await;
    create(&server, &format!("{path}/pay"), "paid_out_of_band=true").await;
    let other = draft(&server, &f.customer, "").await;
    add_item(&server, &f.customer, &other, "amount=5").await;
    create(&server, &format!("/v1/invoices/{other}/finalize"), "").await;
    create(&server, &format!("/v1/invoices/{other}/void"), "").await;
    let doomed = draft(&server, &f.customer, "").await;
    add_item(&server, &f.customer, &doomed, "amount=5").await;
    let as_it_was = server.get(&format!("/v1/invoices/{doomed}")).await.body;
    server.delete(&format!("/v1/invoices/{doomed}")).await;
    let event = server.newest_event().await;
    assert_eq!(event["type"], "invoice.deleted");
    assert_eq!(event["data"]["object"], as_it_was);
    let pending = create(
        &server,
        "/v1/invoiceitems",
        &format!("customer={}&amount=1&currency=usd", f.customer),
    )
    .await;
    server
        .delete(&format!(
            "/v1/invoiceitems/{}",
            pending["id"].as_str().unwrap()
        ))
        .await;
    let all = server.get("/v1/events?type=invoice*&limit=100").await;
    let types: Vec<&str> = all.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "invoiceitem.deleted",
            "invoiceitem.created",
            "invoice.deleted",
            "invoiceitem.deleted",
            "invoiceitem.created",
            "invoice.created",
            "invoice.voided",
            "invoice.finalized",
            "invoiceitem.created",
            "invoice.created",
            "invoice.paid",
            "invoice.marked_uncollectible",
            "invoice.sent",
            "invoice.finalized",
            "invoice.updated",
            "invoiceitem.updated",
            "invoiceitem.created",
            "invoice.created",
        ]
    );
    let before = server.handle.events().len();
    assert_eq!(server.post(&format!("{path}/void"), "").await.status, 400);
    assert_eq!(
        server.handle.events().len(),
        before,
        "no event for a refusal"
    );
}

#[tokio::test]
async fn an_idempotent_create_replays_the_same_invoice_and_item() {
    let server = start().await;
    let f = fixture(&server).await;
    let body = format!("customer={}", f.customer);
    let first = server
        .post_idempotent("/v1/invoices", &body, "in-key")
        .await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let replay = server
        .post_idempotent("/v1/invoices", &body, "in-key")
        .await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, first.body);
    assert_eq!(server.handle.invoices().len(), 1, "one invoice stored");
    let other = server
        .post_idempotent("/v1/invoices", &format!("{body}&metadata[k]=v"), "in-key")
        .await;
    assert_eq!(other.status, 400);
    assert_eq!(other.error_type(), Some("idempotency_error"));
    let item_body = format!("customer={}&invoice={}&amount=5", f.customer, first.id());
    let item = server
        .post_idempotent("/v1/invoiceitems", &item_body, "ii-key")
        .await;
    let again = server
        .post_idempotent("/v1/invoiceitems", &item_body, "ii-key")
        .await;
    assert_eq!(again.body, item.body);
    assert_eq!(server.handle.invoice_items().len(), 1, "one item stored");
    assert_eq!(server.handle.invoice(&first.id()).unwrap()["total"], 5);
    let created_events = server.get("/v1/events?type=invoice.created").await;
    assert_eq!(created_events.body["data"].as_array().unwrap().len(), 1);
    let counters = server.handle.counters();
    assert_eq!(counters.count("POST /v1/invoices", "200"), 2);
    assert_eq!(counters.count("POST /v1/invoices/{id}/finalize", "200"), 0);
}

#[tokio::test]
async fn restricted_keys_need_invoice_permissions() {
    let server = start_with(EmulatorConfig {
        restricted_keys: vec![
            RestrictedKey {
                invoices: Access::Read,
                ..RestrictedKey::new("rk_test_invreader")
            },
            "rk_test_invwriter:invoices=write".parse().unwrap(),
            "rk_test_others:customers=write,products=write,prices=write,subscriptions=write"
                .parse()
                .unwrap(),
        ],
        ..test_config()
    })
    .await;
    let f = fixture(&server).await;
    let as_key = |key: &str, method: Method, path: &str| {
        server
            .client
            .request(method, format!("{}{path}", server.url))
            .bearer_auth(key)
            .header("content-type", "application/x-www-form-urlencoded")
    };
    let writer = "rk_test_invwriter";
    let created =
        send(as_key(writer, Method::POST, "/v1/invoices").body(format!("customer={}", f.customer)))
            .await;
    assert_eq!(created.status, 200, "{:?}", created.body);
    let id = created.id();
    let item = send(
        as_key(writer, Method::POST, "/v1/invoiceitems").body(format!(
            "customer={}&invoice={id}&price={}",
            f.customer, f.one_time
        )),
    )
    .await;
    assert_eq!(
        item.status, 200,
        "invoices=write covers items: {:?}",
        item.body
    );
    let finalized = send(as_key(
        writer,
        Method::POST,
        &format!("/v1/invoices/{id}/finalize"),
    ))
    .await;
    assert_eq!(finalized.status, 200);
    let reader = "rk_test_invreader";
    for path in [
        "/v1/invoices".to_owned(),
        format!("/v1/invoices/{id}"),
        format!("/v1/invoices/{id}/lines"),
        "/v1/invoiceitems".to_owned(),
        format!("/v1/invoiceitems/{}", item.id()),
        format!("/v1/invoices/search?query={}", encode("status:'open'")),
    ] {
        assert_eq!(
            send(as_key(reader, Method::GET, &path)).await.status,
            200,
            "{path}"
        );
    }
    for (method, path) in [
        (Method::POST, "/v1/invoices".to_owned()),
        (Method::POST, format!("/v1/invoices/{id}/void")),
        (Method::DELETE, format!("/v1/invoices/{id}")),
        (Method::POST, "/v1/invoiceitems".to_owned()),
    ] {
        let refused = send(as_key(reader, method, &path)).await;
        assert_eq!(refused.status, 403, "{path}");
        assert!(
            refused.error_message().contains("rak_invoice_write"),
            "{path}"
        );
    }
    let others = send(as_key("rk_test_others", Method::GET, "/v1/invoiceitems")).await;
    assert_eq!(others.status, 403);
    assert!(others.error_message().contains("rak_invoice_read"));
    assert!("rk_test_x:invoices=all".parse::<RestrictedKey>().is_err());
}

#[tokio::test]
async fn invoices_are_searched_late_by_their_own_fields_and_reset_forgets_them() {
    let server = start().await;
    let f = fixture(&server).await;
    let invoice = draft(
        &server,
        &f.customer,
        "&metadata[external_id]=42&currency=eur",
    )
    .await;
    add_item(&server, &f.customer, &invoice, "amount=1500").await;
    let search = |query: &str| {
        let url = format!("/v1/invoices/search?query={}", encode(query));
        let server = &server;
        async move {
            let reply = server.get(&url).await;
            assert_eq!(reply.status, 200, "{url}: {:?}", reply.body);
            ids(&reply)
        }
    };
    assert!(
        search("status:'draft'").await.is_empty(),
        "not searchable yet"
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    for query in [
        format!("customer:'{}'", f.customer),
        "status:'draft'".to_owned(),
        "currency:'EUR'".to_owned(),
        "metadata['external_id']:'42'".to_owned(),
        "total>1000 AND total<=1500".to_owned(),
        "total:1500".to_owned(),
        format!("created>={}", now() - 60),
    ] {
        assert_eq!(search(&query).await, vec![invoice.clone()], "{query}");
    }
    assert!(search("total<1500").await.is_empty());
    assert!(search("status:'open'").await.is_empty());
    for bad in ["total~'15'", "total:abc", "email:'a'"] {
        let reply = server
            .get(&format!("/v1/invoices/search?query={}", encode(bad)))
            .await;
        assert_eq!(reply.status, 400, "{bad}");
    }

    let (status, _) = server.control_post("/_emulator/reset", &json!({})).await;
    assert_eq!(status, 200);
    assert!(server.handle.invoices().is_empty());
    assert!(server.handle.invoice_items().is_empty());
    assert_eq!(
        server.control_get("/_emulator/invoices").await,
        json!({"data": []})
    );
    assert_eq!(
        server.get(&format!("/v1/invoices/{invoice}")).await.status,
        404
    );
}
