//! Postgres as a user runs it on Shoal (issue 12, real applications): the image built from
//! Debian's postgresql-15 (`shoal_tests::app_image`), its superuser password a secret
//! (`POSTGRES_PASSWORD_FILE`), its cluster in a named volume. Rows written through a network
//! client with that password survive `service update --force` (a new container on the same
//! volume), and a wrong password is refused: the secret really is the database's password.

use std::time::Duration;

use anyhow::{ensure, Result};
use shoal_tests::app_image::{self, ServiceImage, POSTGRES_DATA};
use shoal_tests::stack_support::{ctl_with_ok, exec_in_task, unique_value};
use shoal_tests::testbed::{Cluster, Testbed};

/// How long postgres may take to come up (initdb on first start).
const START: Duration = Duration::from_secs(120);

/// `psql` over TCP inside the task, as a network client does (md5 with the secret's password).
fn psql(c: &Cluster, task: &str, password: &str, sql: &str) -> Result<String> {
    exec_in_task(
        c,
        task,
        &format!(
            "PGPASSWORD='{password}' psql -h 127.0.0.1 -U postgres -d postgres -tA -c \"{sql}\" 2>&1"
        ),
    )
}

/// The one running task of the service, once postgres answers a query in it.
fn wait_ready(c: &Cluster, service: &str, password: &str) -> Result<String> {
    let mut task = String::new();
    let mut last = String::new();
    Testbed::wait_for(START, &format!("{service} to answer queries"), || {
        let tasks = c.service_ps(service)?;
        let Some(t) = tasks.iter().find(|t| t.desired_running() && t.is_running()) else {
            return Ok(false);
        };
        task = t.id.clone();
        match psql(c, &task, password, "select 40+2") {
            Ok(out) => {
                last = out.clone();
                Ok(out.trim() == "42")
            }
            Err(e) => {
                last = format!("{e:#}");
                Ok(false)
            }
        }
    })
    .map_err(|e| e.context(format!("last answer: {last}")))?;
    Ok(task)
}

#[test]
fn postgres_keeps_its_rows_in_a_volume_with_its_password_from_a_secret() -> Result<()> {
    match ServiceImage::Postgres.prepare() {
        Ok(_) => {}
        Err(e) if app_image::is_unavailable(&e) => {
            eprintln!("skipping postgres_keeps_its_rows_in_a_volume_with_its_password_from_a_secret: {e:#}");
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    let c = Cluster::start(Testbed::new("pg")?, 0)?;
    let image = app_image::push_service_image_to(&c, ServiceImage::Postgres)?;
    let password = unique_value("pgpw");
    ctl_with_ok(
        &c,
        &[],
        &["secret", "create", "pg_pw", "-"],
        password.as_bytes(),
    )?;
    c.ctl_ok([
        "service",
        "create",
        "--detach",
        "--name",
        "pg",
        "--secret",
        "pg_pw",
        "--env",
        "POSTGRES_PASSWORD_FILE=/run/secrets/pg_pw",
        "--mount",
        &format!("type=volume,source=pgdata,target={POSTGRES_DATA}"),
        &image,
    ])?;
    let first = wait_ready(&c, "pg", &password)?;

    let wrong = psql(&c, &first, "not-the-password", "select 1");
    ensure!(
        wrong
            .as_ref()
            .is_err_and(|e| format!("{e:#}").contains("password authentication failed")),
        "a wrong password was not refused: {wrong:?}"
    );
    psql(
        &c,
        &first,
        &password,
        "create table orders (id int primary key, item text); \
         insert into orders values (1, 'tea'), (2, 'cake'), (3, 'jam')",
    )?;

    // A new container on the same volume: the cluster initdb made is found, not made again.
    c.ctl_ok(["service", "update", "--force", "--detach", "pg"])?;
    Testbed::wait_for(START, "pg's task to be replaced", || {
        Ok(c.service_ps("pg")?
            .iter()
            .any(|t| t.desired_running() && t.is_running() && t.id != first))
    })?;
    let second = wait_ready(&c, "pg", &password)?;
    ensure!(second != first, "the task was not replaced");
    let rows = psql(
        &c,
        &second,
        &password,
        "select string_agg(item, ',' order by id) from orders",
    )?;
    ensure!(
        rows.trim() == "tea,cake,jam",
        "after service update --force the table holds {rows:?}"
    );
    Ok(())
}
