//! The fleet's own metrics: whether this node reaches Redis, and what failed there.

use prometheus::{IntCounter, IntGauge};

use super::Registrar;
use crate::labels::BackplaneOp;

/// `backplane_up`, `backplane_errors_total{op}` and `backplane_nodes`.
pub(crate) struct BackplaneMetrics {
    /// 1 while this node is subscribed and Redis answers; always 0 on the memory backplane.
    pub(crate) up: IntGauge,
    /// Live nodes of the fleet as this node last saw them.
    pub(crate) nodes: IntGauge,
    errors: [IntCounter; BackplaneOp::ALL.len()],
}

impl BackplaneMetrics {
    pub(super) fn new(r: &Registrar) -> Self {
        let errors = r.counter_vec(
            "backplane_errors_total",
            "Backplane operations that failed, by operation: cross-node delivery, offline \
             queueing, presence, acks.",
            &["op"],
        );
        BackplaneMetrics {
            up: r.int_gauge(
                "backplane_up",
                "1 while this fleet node is connected to Redis and subscribed; 0 otherwise (and \
                 on the memory backplane).",
            ),
            nodes: r.int_gauge(
                "backplane_nodes",
                "Live nodes of the fleet (this one included) as last seen in Redis.",
            ),
            errors: BackplaneOp::ALL.map(|op| errors.with_label_values(&[op.as_str()])),
        }
    }

    pub(crate) fn error(&self, op: BackplaneOp) {
        self.errors[op.index()].inc();
    }
}
