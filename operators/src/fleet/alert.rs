//! Alert rules over the fleet's collections. An alert is a record of the `alerts` collection:
//! it is raised when the record appears and cleared when it is retracted, once each, because a
//! rule's record stays the same while its condition holds (what changes while it holds, such as
//! a group's R, is left out of the record).

use serde::{Deserialize, Serialize};

use super::group::{GroupAgg, GroupBy, GroupKey};
use super::node::{NodeView, Status};
use super::{FleetConfig, Name};
use kaiabc_schemas::Reason;

/// How serious an alert is (the contract's `severity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look.
    Info,
    /// Needs attention.
    Warning,
    /// Something is broken.
    Error,
}

impl Severity {
    /// The name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertCode {
    /// No reading for `offline_after`, or the node's Last Will.
    NodeOffline,
    /// The node's latest reading made its clock's integration fail.
    OdeInstability,
    /// The node's latest reading made its Kalman filter diverge.
    FilterDivergence,
    /// More dead letters in the last hour than the threshold.
    DeadLetterRate,
    /// The node's recent period is outside its location group's band.
    PeriodDrift,
    /// A group's order parameter R fell below the threshold.
    Desynchronized,
}

impl AlertCode {
    /// Every code.
    pub const ALL: [AlertCode; 6] = [
        AlertCode::NodeOffline,
        AlertCode::OdeInstability,
        AlertCode::FilterDivergence,
        AlertCode::DeadLetterRate,
        AlertCode::PeriodDrift,
        AlertCode::Desynchronized,
    ];

    /// The code as the API, the lake and metrics write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NodeOffline => "NODE_OFFLINE",
            Self::OdeInstability => "ODE_INSTABILITY",
            Self::FilterDivergence => "FILTER_DIVERGENCE",
            Self::DeadLetterRate => "DEAD_LETTER_RATE",
            Self::PeriodDrift => "PERIOD_DRIFT",
            Self::Desynchronized => "DESYNCHRONIZED",
        }
    }

    /// How serious it is.
    pub fn severity(self) -> Severity {
        match self {
            Self::OdeInstability => Severity::Error,
            Self::PeriodDrift => Severity::Info,
            _ => Severity::Warning,
        }
    }
}

/// An active alert: a record of the `alerts` collection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Alert {
    /// What it is about.
    pub code: AlertCode,
    /// The node it is about, for node alerts.
    pub node: Option<Name>,
    /// The group it is about (the node's group for `PERIOD_DRIFT`).
    pub group: Option<GroupKey>,
    /// For `NODE_OFFLINE`: the node's last reading, µs since the epoch (`None`: its Last Will
    /// came before any reading).
    pub last_seen: Option<i64>,
    /// For `NODE_OFFLINE`: whether its Last Will said so.
    pub last_will: bool,
}

impl Alert {
    fn node(code: AlertCode, node: &Name) -> Self {
        Self {
            code,
            node: Some(node.clone()),
            group: None,
            last_seen: None,
            last_will: false,
        }
    }

    /// What it is about, in words.
    pub fn message(&self) -> String {
        let subject = match (&self.node, &self.group) {
            (Some(n), _) => format!("node {n}"),
            (None, Some(g)) => format!("{} {}", g.by.as_str(), g.value),
            (None, None) => "the fleet".into(),
        };
        let what = match self.code {
            AlertCode::NodeOffline if self.last_will => "went offline (its Last Will)",
            AlertCode::NodeOffline => "has sent no reading for the offline threshold",
            AlertCode::OdeInstability => "failed its clock's integration",
            AlertCode::FilterDivergence => "had its Kalman filter diverge",
            AlertCode::DeadLetterRate => "sent more dead letters in an hour than the threshold",
            AlertCode::PeriodDrift => "runs at a period outside its group's band",
            AlertCode::Desynchronized => "lost phase synchrony (R below the threshold)",
        };
        format!("{subject} {what}")
    }

    /// The node rules: offline, failing, dead-letter rate.
    pub fn of_node(node: &Name, view: &NodeView, cfg: &FleetConfig) -> Vec<Alert> {
        let mut out = Vec::new();
        // A registered node never heard from is offline but raises nothing: it may not be
        // installed yet.
        if view.status == Status::Offline && (view.last_seen.is_some() || view.last_will) {
            out.push(Self {
                last_seen: view.last_seen,
                last_will: view.last_will,
                ..Self::node(AlertCode::NodeOffline, node)
            });
        }
        match view.failing {
            Some(Reason::OdeInstability) => out.push(Self::node(AlertCode::OdeInstability, node)),
            Some(Reason::FilterDivergence) => {
                out.push(Self::node(AlertCode::FilterDivergence, node))
            }
            _ => {}
        }
        if u64::from(view.dead_last_hour) > cfg.dead_letters_per_hour_alert {
            out.push(Self::node(AlertCode::DeadLetterRate, node));
        }
        out
    }

    /// A node outside its location group's band.
    pub fn drift(node: &Name, group: &GroupKey) -> Option<Alert> {
        (group.by == GroupBy::Location).then(|| Self {
            group: Some(group.clone()),
            ..Self::node(AlertCode::PeriodDrift, node)
        })
    }

    /// A group whose clocks have drifted apart.
    pub fn desynchronized(group: &GroupKey, agg: &GroupAgg, cfg: &FleetConfig) -> Option<Alert> {
        let r = agg.phase.order_parameter()?;
        (agg.phase.n >= cfg.desync_min_nodes && r < cfg.desync_below).then(|| Self {
            code: AlertCode::Desynchronized,
            node: None,
            group: Some(group.clone()),
            last_seen: None,
            last_will: false,
        })
    }
}
