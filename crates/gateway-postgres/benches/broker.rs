//! `PostgresBroker` on the test PostgreSQL (`GATEWAY_TEST_POSTGRES_URL`, e.g. from
//! `scripts/services/postgres.sh`), against what any such broker must at least do on the same
//! server in the same run:
//!
//! - `baseline/create_drop_role`: a bare `CREATE ROLE …; DROP ROLE …` (two round trips on one
//!   connection);
//! - `broker/grant_revoke_one_table`: a grant of one `select` scope (role with password, expiry,
//!   comment and settings; CONNECT, USAGE, SELECT; the privileges checked) and its revocation
//!   (NOLOGIN, sessions terminated, owned objects dropped, role dropped).
//!
//! Report the broker as a ratio to the baseline. Skips (prints a notice) without the URL.
//! `cargo bench -p gateway-postgres --bench broker`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use gateway_core::AccessBroker;
use gateway_core::conformance::broker::request;
use gateway_postgres::PostgresBroker;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let Ok(url) = std::env::var("GATEWAY_TEST_POSTGRES_URL") else {
        eprintln!("postgres broker bench skipped: GATEWAY_TEST_POSTGRES_URL not set");
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let schema = format!("bench_{:08x}", rand::random::<u32>());
    // One connection, like the broker's statements of one grant.
    let admin = rt.block_on(async {
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        sqlx::raw_sql(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (id int)"
        ))
        .execute(&admin)
        .await
        .unwrap();
        admin
    });
    let broker = rt.block_on(async {
        PostgresBroker::builder(url.clone())
            .instance(format!("bench-{schema}"))
            .build()
            .await
            .unwrap()
    });
    let scope = format!("pg:gateway_test:{schema}.t:select");

    let mut g = c.benchmark_group("postgres_broker");
    g.sample_size(30).measurement_time(Duration::from_secs(8));
    let role = format!("{schema}_r");
    g.bench_function("baseline/create_drop_role", |b| {
        b.to_async(&rt).iter(|| async {
            sqlx::raw_sql(&format!("CREATE ROLE {role}"))
                .execute(&admin)
                .await
                .unwrap();
            sqlx::raw_sql(&format!("DROP ROLE {role}"))
                .execute(&admin)
                .await
                .unwrap();
        });
    });
    g.bench_function("broker/grant_revoke_one_table", |b| {
        b.to_async(&rt).iter(|| async {
            let grant = broker
                .grant(&request(vec![scope.clone()], Duration::from_secs(60)))
                .await
                .unwrap();
            broker.revoke(&grant).await.unwrap();
        });
    });
    g.finish();
    rt.block_on(async {
        sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&admin)
            .await
            .unwrap();
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
