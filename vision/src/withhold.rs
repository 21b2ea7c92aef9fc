//! Frames that are never published, whatever they show: those near where
//! the drive began or ended (homes, workplaces) and those inside a privacy
//! zone of the upload's contributor. They are kept as rows without an
//! image, so a retry names the same frames and the reason is on record.

use hexroad_lake::PrivacyZone;
use hexroad_wire::grid::haversine_m;

/// What keeps one upload's frames private.
#[derive(Debug, Clone, Default)]
pub(crate) struct Withheld {
    /// The drive's first and last fix.
    pub ends: Vec<(f64, f64)>,
    /// Metres around each end.
    pub radius_m: f64,
    /// The contributor's active zones.
    pub zones: Vec<PrivacyZone>,
}

impl Withheld {
    /// Why a frame at `(lat, lon)` is not published, if it is not.
    pub fn reason(&self, lat: f64, lon: f64) -> Option<&'static str> {
        if self.radius_m > 0.0
            && self
                .ends
                .iter()
                .any(|&end| haversine_m(end, (lat, lon)) <= self.radius_m)
        {
            return Some("private: near the drive's start or end");
        }
        if self.zones.iter().any(|z| z.contains(lat, lon)) {
            return Some("private: inside the contributor's privacy zone");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_and_zones_withhold_and_the_rest_is_published() {
        let zone = PrivacyZone {
            zone_id: uuid::Uuid::nil(),
            contributor_id: "c".parse().unwrap(),
            device_id: hexroad_wire::DeviceId::from_public_key(&[1; 32]),
            lat: 60.2,
            lon: 24.9,
            radius_m: 100.0,
            active: true,
            changed_at: chrono::Utc::now(),
        };
        let w = Withheld {
            ends: vec![(60.0, 24.9), (60.1, 24.9)],
            radius_m: 500.0,
            zones: vec![zone],
        };
        let metre = 1.0 / 111_195.0;
        assert!(w.reason(60.0 + 499.0 * metre, 24.9).is_some());
        assert!(w.reason(60.0 + 501.0 * metre, 24.9).is_none());
        assert!(w.reason(60.1 - 10.0 * metre, 24.9).is_some());
        assert!(
            w.reason(60.2 + 99.0 * metre, 24.9)
                .unwrap()
                .contains("zone")
        );
        assert!(w.reason(60.2 + 101.0 * metre, 24.9).is_none());
        let open = Withheld {
            radius_m: 0.0,
            ..w.clone()
        };
        assert!(open.reason(60.0, 24.9).is_none());
    }
}
