//! Reports of a run, whole or in progress: the statistics with their time integrals brought up
//! to now, the per-interval series point, and the parts only version-2 designs have.

use super::stats::{ComponentStats, Report, ReportV2, Series};
use super::{goodput, Simulation};
use crate::design::Kind;

impl Simulation {
    /// Statistics with the time-weighted integrals brought up to now.
    pub(super) fn current_stats(&self) -> Vec<ComponentStats> {
        let mut stats = self.stats.clone();
        for (c, s) in stats.iter_mut().enumerate() {
            if let Some(st) = &self.stations[c] {
                let capacity = f64::from(st.capacity_workers());
                s.integrate_to(self.now, f64::from(st.busy), st.waiting as f64, capacity);
            }
        }
        stats
    }

    /// Each component's statistics so far, in design order (after the warm-up, like the
    /// report): what telemetry of the modelled system would show (response-time histograms,
    /// attempts per call), for exporters and tests that rebuild it.
    pub fn component_stats(&self) -> Vec<ComponentStats> {
        self.current_stats()
    }

    /// A snapshot of the statistics so far (the final report once finished).
    pub fn report(&self) -> Report {
        let measured = (self.now - self.measuring_since).max(1e-12);
        Report::build(
            &self.design,
            &self.current_stats(),
            &self.end_to_end,
            &self.class_stats,
            measured,
            self.events_processed,
            self.now,
        )
        .with_timeline(self.dynamics.timeline.clone())
        .with_v2(self.v2_report(measured))
        .with_cost(&self.design)
    }

    /// One line of the per-interval series.
    pub fn series_point(&self) -> Series {
        Series::build(
            &self.design,
            &self.current_stats(),
            &self.end_to_end,
            self.now,
            self.measuring_since,
        )
    }

    fn v2_report(&self, measured: f64) -> ReportV2 {
        let mut out = ReportV2::default();
        if let Some(clients) = &self.clients {
            for (comp, report) in self.design.components.iter().zip(clients.reports(measured)) {
                if matches!(comp.kind, Kind::Source(_)) {
                    out.clients.insert(comp.id.clone(), report);
                }
            }
            out.goodput = clients.series.points(self.now);
            out.metastability = goodput::verdict(&self.design, &out.goodput, self.now);
        }
        for (comp, st) in self.design.components.iter().zip(&self.stations) {
            if let Some(cache) = st.as_ref().and_then(|st| st.cache.as_ref()) {
                out.caches.insert(comp.id.clone(), cache.report());
            }
        }
        out
    }
}
