//! The rounds: every workload against every target in turn (A B C, A B C,
//! …) so that drift of the machine hits all targets alike, behind a progress
//! bar. A target that fails a run is dropped from the later ones, with a
//! note for the report.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::stats::RunRecord;
use crate::BoxError;

/// A target or a workload, as the progress bar and the notes name it.
pub(crate) trait Named {
    fn name(&self) -> &str;
}

/// Runs `rounds` rounds of `run(target, workload, round)`; `quiet` hides
/// the progress bar (smoke tests).
pub(crate) async fn alternate<T: Named, W: Named>(
    rounds: usize,
    quiet: bool,
    targets: &[T],
    workloads: &[W],
    notes: &mut Vec<String>,
    mut run: impl AsyncFnMut(&T, &W, usize) -> Result<RunRecord, BoxError>,
) -> Vec<RunRecord> {
    let total = (rounds * workloads.len() * targets.len()) as u64;
    let template = "{elapsed_precise} [{bar:30}] {pos}/{len} runs, eta {eta}: {msg}";
    let style = ProgressStyle::with_template(template).expect("static template");
    let progress = match quiet {
        true => ProgressBar::hidden(),
        false => ProgressBar::new(total).with_style(style.progress_chars("=> ")),
    };
    let mut failed = vec![false; targets.len()];
    let mut records = Vec::new();
    for round in 1..=rounds {
        for workload in workloads {
            for (i, target) in targets.iter().enumerate() {
                let (t, w) = (target.name(), workload.name());
                progress.set_message(format!("round {round}/{rounds}: {w} → {t}"));
                if !failed[i] {
                    match run(target, workload, round).await {
                        Ok(record) => records.push(record),
                        Err(e) => {
                            progress
                                .println(format!("{t}: {w}: failed, dropped from the bench: {e}"));
                            notes.push(format!("`{t}` failed on {w} in round {round}: {e}"));
                            failed[i] = true;
                        }
                    }
                    // Let closed sockets and freed buffers settle.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                progress.inc(1);
            }
        }
    }
    progress.finish_and_clear();
    records
}
