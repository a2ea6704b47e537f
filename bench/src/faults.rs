//! The fault-injection suite as figures: each fault of `platform_tests::fault_suite` runs under the
//! same mixed load as in the test suite (three server replicas, three sidecars, four clients),
//! and the table gives, per fault, the requests answered during it by outcome, the time until
//! every operation succeeded again, and every broken promise (there should be none).

use platform_tests::fault_suite::{self, Fault};
use platform_tests::load::Phase;

/// Runs every fault one after the other and prints each report and a summary table.
pub async fn run() -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for fault in Fault::ALL {
        let report = fault_suite::run(fault).await;
        report.print();
        rows.push(report);
    }
    println!(
        "\n| fault | answered during the fault | recovered after the heal | longest without a success | broken promises |"
    );
    println!("|---|---|---|---|---|");
    for report in &rows {
        let (recovery, outage) = match (report.recovery, report.outage) {
            (Some(recovery), Some((operation, outage))) => (
                format!("{:.2} s", recovery.as_secs_f64()),
                format!("{operation} {:.2} s", outage.as_secs_f64()),
            ),
            _ => ("n/a (lasting)".to_owned(), "n/a".to_owned()),
        };
        let broken = report.violations.len() + report.lost_registrations.len() + report.revived_tokens;
        println!(
            "| {} | {} | {recovery} | {outage} | {broken} |",
            report.fault.name(),
            report.summary(Phase::During)
        );
    }
    anyhow::ensure!(rows.iter().all(|report| report.kept()), "a promise was broken");
    Ok(())
}
