//! Region multipliers: GeoJSON polygons (a FeatureCollection of Polygon or
//! MultiPolygon features, each with a numeric `multiplier`) that raise or
//! lower the weight of the cells whose centres fall inside them.

use std::path::Path;

/// One polygon (outer ring and holes, as (lon, lat)) and its multiplier in
/// thousandths.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    pub rings: Vec<Vec<(f64, f64)>>,
    pub multiplier_milli: u64,
}

/// Reads a regions file; every feature must be a (Multi)Polygon with a
/// non-negative `multiplier`.
pub fn load(path: &Path) -> Result<Vec<Region>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    let features = doc["features"]
        .as_array()
        .ok_or("expected a GeoJSON FeatureCollection")?;
    let mut out = Vec::new();
    for (i, f) in features.iter().enumerate() {
        let m = f["properties"]["multiplier"]
            .as_f64()
            .filter(|m| *m >= 0.0 && m.is_finite())
            .ok_or_else(|| format!("feature {i}: no non-negative numeric `multiplier` property"))?;
        let milli = (m * 1000.0).round() as u64;
        let polygons: Vec<&serde_json::Value> = match f["geometry"]["type"].as_str() {
            Some("Polygon") => vec![&f["geometry"]["coordinates"]],
            Some("MultiPolygon") => f["geometry"]["coordinates"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
            other => {
                return Err(format!(
                    "feature {i}: geometry {other:?} is not a Polygon or MultiPolygon"
                ));
            }
        };
        for p in polygons {
            let rings = p
                .as_array()
                .ok_or_else(|| format!("feature {i}: bad coordinates"))?
                .iter()
                .map(|ring| {
                    ring.as_array()
                        .map(|pts| {
                            pts.iter()
                                .filter_map(|pt| Some((pt[0].as_f64()?, pt[1].as_f64()?)))
                                .collect::<Vec<_>>()
                        })
                        .filter(|r| r.len() >= 3)
                        .ok_or_else(|| format!("feature {i}: a ring needs three or more positions"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.push(Region {
                rings,
                multiplier_milli: milli,
            });
        }
    }
    Ok(out)
}

fn inside(ring: &[(f64, f64)], lon: f64, lat: f64) -> bool {
    let mut yes = false;
    let n = ring.len();
    for i in 0..n {
        let (a, b) = (ring[i], ring[(i + n - 1) % n]);
        if (a.1 > lat) != (b.1 > lat) && lon < (b.0 - a.0) * (lat - a.1) / (b.1 - a.1) + a.0 {
            yes = !yes;
        }
    }
    yes
}

/// The multiplier (thousandths) for a cell: the first region containing its
/// centre, else 1000.
pub fn multiplier_milli(regions: &[Region], cell: u64) -> u64 {
    let Ok(index) = h3o::CellIndex::try_from(cell) else {
        return 1000;
    };
    let ll = h3o::LatLng::from(index);
    regions
        .iter()
        .find(|r| {
            r.rings
                .first()
                .is_some_and(|outer| inside(outer, ll.lng(), ll.lat()))
                && !r.rings[1..]
                    .iter()
                    .any(|hole| inside(hole, ll.lng(), ll.lat()))
        })
        .map_or(1000, |r| r.multiplier_milli)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_inside_a_region_takes_its_multiplier() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("regions.geojson");
        std::fs::write(
            &path,
            r#"{"type":"FeatureCollection","features":[{"type":"Feature",
               "properties":{"multiplier":1.5},
               "geometry":{"type":"Polygon","coordinates":[[[24.9,60.1],[25.0,60.1],[25.0,60.2],[24.9,60.2],[24.9,60.1]]]}}]}"#,
        )
        .unwrap();
        let regions = load(&path).unwrap();
        let helsinki = u64::from(hexroad_wire::grid::cell_at(60.17, 24.94).unwrap());
        let tampere = u64::from(hexroad_wire::grid::cell_at(61.5, 23.76).unwrap());
        assert_eq!(multiplier_milli(&regions, helsinki), 1500);
        assert_eq!(multiplier_milli(&regions, tampere), 1000);
        std::fs::write(
            &path,
            r#"{"type":"FeatureCollection","features":[{"properties":{}}]}"#,
        )
        .unwrap();
        assert!(load(&path).unwrap_err().contains("multiplier"));
    }
}
