//! Reward epochs end to end: the simulated fleet with a spoofer and a
//! duplicator, an epoch computed twice and again after late uploads, every
//! proof checked by an independent implementation of the Merkle rule.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::Value;

mod common;
use common::{hexroad, python, root, sim, sql, succeed, wait_processed};

/// `hexroad epoch run`: its stdout and the ledger's bytes.
fn epoch_run(data: &Path, epoch: &str, out: &Path) -> (String, Vec<u8>) {
    let run = succeed(&mut common::epoch_command(data, epoch, out));
    (String::from_utf8(run.stdout).unwrap(), common::ledger(out))
}

#[test]
fn an_epoch_pays_honest_drivers_not_spoofers_or_copiers_and_never_changes_once_closed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = common::serve(
        &data,
        "127.0.0.1:0",
        &[("HEXROAD__VISION__POLL_INTERVAL", "200ms")],
    );
    let start = Utc::now() - chrono::Duration::hours(2);
    let report = sim(
        &server.base,
        &[
            "--seed",
            "11",
            "--devices",
            "2",
            "--spoofers",
            "1",
            "--duplicators",
            "1",
        ],
    );
    wait_processed(&data, Duration::from_secs(240));
    let end = Utc::now() + chrono::Duration::seconds(1);
    std::thread::sleep(Duration::from_millis(1500));
    let epoch = common::epoch_interval(start, end);

    let (stdout, first) = epoch_run(&data, &epoch, &dir.path().join("a"));
    let (_, again) = epoch_run(&data, &epoch, &dir.path().join("b"));
    assert_eq!(first, again, "the same epoch twice gives the same bytes");

    let ledger: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(ledger["total"], ledger["budget"], "{ledger}");
    let paid: Vec<(&str, u64)> = ledger["rewards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["contributor_id"].as_str().unwrap(),
                r["amount"].as_u64().unwrap(),
            )
        })
        .collect();
    for device in report["devices"].as_array().unwrap() {
        let who = device["contributor_id"].as_str().unwrap();
        let id = device["device_id"].as_str().unwrap();
        let amount = paid.iter().find(|(c, _)| *c == who).map_or(0, |(_, a)| *a);
        match device["role"].as_str().unwrap() {
            "honest" => assert!(amount > 0, "honest {who} is paid: {stdout}"),
            "spoofer" => {
                assert_eq!(amount, 0, "the spoofer earns nothing");
                assert!(
                    stdout.contains(&format!("flag teleporting_gnss device {id}")),
                    "{stdout}"
                );
            }
            "duplicator" => {
                assert_eq!(amount, 0, "the duplicator earns nothing");
                assert!(
                    stdout.contains(&format!("flag copied_drive device {id}")),
                    "{stdout}"
                );
            }
            other => panic!("unexpected role {other}"),
        }
    }

    // The tables: each epoch's rows once, flags with their evidence.
    let sum = common::sql_u64(
        &data,
        &format!("SELECT sum(amount) AS n FROM rewards WHERE epoch = '{epoch}'"),
    );
    assert_eq!(
        sum,
        ledger["budget"].as_u64().unwrap(),
        "run twice, counted once"
    );
    let flagged = common::sql(
        &data,
        &format!(
            "SELECT rule, subject, detail FROM fraud_flags WHERE epoch = '{epoch}' AND subject_kind = 'device'"
        ),
    );
    for device in report["devices"].as_array().unwrap() {
        let rule = match device["role"].as_str().unwrap() {
            "spoofer" => "teleporting_gnss",
            "duplicator" => "copied_drive",
            _ => continue,
        };
        assert!(
            flagged
                .iter()
                .any(|f| f["rule"] == rule && f["subject"] == device["device_id"]),
            "{rule} for {}: {flagged:?}",
            device["device_id"]
        );
    }

    // Every proof, by an implementation that shares no code with hexroad.
    let ledger_path = std::fs::read_dir(dir.path().join("a"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    let checked = succeed(
        Command::new(python())
            .arg(root().join("cli/tests/support/merkle_check.py"))
            .arg(&ledger_path),
    );
    let checked: Value = serde_json::from_slice(&checked.stdout).unwrap();
    assert_eq!(checked["verified"].as_u64().unwrap() as usize, paid.len());
    let (who, amount) = paid[0];
    let ok =
        succeed(hexroad(&["epoch", "verify", "--contributor", who, "--ledger"]).arg(&ledger_path));
    assert!(String::from_utf8_lossy(&ok.stdout).contains(&amount.to_string()));
    let forged = dir.path().join("forged.json");
    std::fs::write(
        &forged,
        String::from_utf8(first.clone()).unwrap().replacen(
            &format!("\"amount\": {amount}"),
            &format!("\"amount\": {}", amount + 1),
            1,
        ),
    )
    .unwrap();
    let refused = hexroad(&["epoch", "verify", "--contributor", who, "--ledger"])
        .arg(&forged)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("does not lead to the root"));

    // explain shows the arithmetic that leads to the ledger's amount.
    let explained = succeed(
        hexroad(&[
            "epoch",
            "explain",
            "--epoch",
            &epoch,
            "--contributor",
            who,
            "--data",
        ])
        .arg(&data)
        .env("HEXROAD__REWARDS__GRACE", "0s")
        .env("HEXROAD__REWARDS__CONTRIBUTOR_CAP_PCT", "100"),
    );
    let explained = String::from_utf8_lossy(&explained.stdout);
    assert!(
        explained.contains("eligible frames") && explained.contains(&format!("= {amount} (cap")),
        "{explained}"
    );

    // Late drives for the same interval change nothing once it has closed.
    let late_start =
        (start + chrono::Duration::minutes(30)).to_rfc3339_opts(SecondsFormat::Secs, true);
    sim(
        &server.base,
        &["--seed", "12", "--devices", "1", "--start", &late_start],
    );
    wait_processed(&data, Duration::from_secs(240));
    let (_, late) = epoch_run(&data, &epoch, &dir.path().join("c"));
    assert_eq!(
        late, first,
        "uploads after the close do not change the ledger"
    );

    // Issue 15: the same interval spelled another way is the same epoch,
    // paid once; an overlapping one, or a rerun under other settings, is
    // refused.
    let spelled = format!(
        "{}/{}",
        start.to_rfc3339_opts(SecondsFormat::Secs, false),
        end.to_rfc3339_opts(SecondsFormat::Secs, false)
    );
    assert_ne!(spelled, epoch);
    let (_, same) = epoch_run(&data, &spelled, &dir.path().join("e"));
    assert_eq!(same, first, "an equivalent id is the same epoch");
    let refused = |epoch: &str, env: (&str, &str)| {
        let out = hexroad(&["epoch", "run", "--epoch", epoch, "--data"])
            .arg(&data)
            .arg("--out")
            .arg(dir.path().join("f"))
            .env("HEXROAD__REWARDS__GRACE", "0s")
            .env("HEXROAD__REWARDS__CONTRIBUTOR_CAP_PCT", "100")
            .env(env.0, env.1)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{epoch} was paid");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let overlapping = format!(
        "{}/{}",
        (start + chrono::Duration::minutes(1)).to_rfc3339_opts(SecondsFormat::Secs, true),
        end.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let why = refused(&overlapping, ("RUST_LOG", "warn"));
    assert!(why.contains("overlaps epoch"), "{why}");
    let why = refused(&epoch, ("HEXROAD__REWARDS__BUDGET", "12345"));
    assert!(why.contains("other reward settings"), "{why}");
    let rows = sql(&data, "SELECT count(DISTINCT epoch) AS n FROM rewards");
    assert_eq!(rows[0]["n"], 1, "one epoch paid");

    // An epoch that has not closed yet is refused with its closing time.
    let open = hexroad(&["epoch", "run", "--epoch", "2999-W01", "--out"])
        .arg(dir.path().join("d"))
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!open.status.success());
    assert!(String::from_utf8_lossy(&open.stderr).contains("closes at"));
}
