//! System templates: design documents shipped with sdsim (`config/designs/`), each validated by
//! the engine (a test checks every one), offered by `GET /api/templates` next to the user's own.

use serde::Serialize;

/// A template shipped with sdsim.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SystemTemplate {
    /// Stable id, e.g. `three-tier`.
    pub id: &'static str,
    /// The category shown in a picker.
    pub category: &'static str,
    /// The design document (JSON; its `name` and `description` describe it).
    #[serde(skip)]
    pub design: &'static str,
}

/// Every system template.
pub const SYSTEM: &[SystemTemplate] = &[
    SystemTemplate {
        id: "three-tier",
        category: "web",
        design: include_str!("../../../config/designs/three-tier.json"),
    },
    SystemTemplate {
        id: "url-shortener",
        category: "web",
        design: include_str!("../../../config/designs/url-shortener.json"),
    },
    SystemTemplate {
        id: "chat-notifications",
        category: "real-time",
        design: include_str!("../../../config/designs/chat-notifications.json"),
    },
    SystemTemplate {
        id: "read-heavy-cache",
        category: "data",
        design: include_str!("../../../config/designs/read-heavy-cache.json"),
    },
    SystemTemplate {
        id: "event-pipeline",
        category: "streaming",
        design: include_str!("../../../config/designs/event-pipeline.json"),
    },
    // Metastable failures (design schema version 2), each beside the same system with its fix.
    SystemTemplate {
        id: "retry-storm",
        category: "resilience",
        design: include_str!("../../../config/designs/retry-storm.json"),
    },
    SystemTemplate {
        id: "retry-storm-budget",
        category: "resilience",
        design: include_str!("../../../config/designs/retry-storm-budget.json"),
    },
    SystemTemplate {
        id: "cache-stampede",
        category: "resilience",
        design: include_str!("../../../config/designs/cache-stampede.json"),
    },
    SystemTemplate {
        id: "cache-stampede-fixed",
        category: "resilience",
        design: include_str!("../../../config/designs/cache-stampede-fixed.json"),
    },
    SystemTemplate {
        id: "slow-dependency",
        category: "resilience",
        design: include_str!("../../../config/designs/slow-dependency.json"),
    },
    SystemTemplate {
        id: "slow-dependency-codel",
        category: "resilience",
        design: include_str!("../../../config/designs/slow-dependency-codel.json"),
    },
];

/// The system template `id`.
pub fn system(id: &str) -> Option<&'static SystemTemplate> {
    SYSTEM.iter().find(|t| t.id == id)
}

/// The `name` and `description` of a design document (empty when absent).
pub fn title(design: &str) -> (String, String) {
    use sonic_rs::JsonValueTrait;
    let Ok(v) = sonic_rs::from_str::<sonic_rs::Value>(design) else {
        return (String::new(), String::new());
    };
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    (field("name"), field("description"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_system_template_validates_and_has_a_name() {
        for t in super::SYSTEM {
            if let Err(problems) = sdsim_engine::design::parse(t.design) {
                panic!("template {}: {problems:?}", t.id);
            }
            let (name, description) = super::title(t.design);
            assert!(!name.is_empty() && !description.is_empty(), "{}", t.id);
        }
    }
}
