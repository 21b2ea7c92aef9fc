//! The SQL H3 functions against Uber's H3 library (the `h3` package from
//! PyPI) on thousands of random points at every resolution.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use hexroad_lake::arrow::array::{Array, AsArray, Float64Array, Int64Array, RecordBatch};
use hexroad_lake::arrow::datatypes::{
    DataType, Field, Float64Type, Int32Type, Int64Type, Schema, UInt64Type,
};
use hexroad_lake::datafusion::datasource::MemTable;
use hexroad_lake::datafusion::prelude::SessionContext;
use serde_json::Value;

fn python() -> PathBuf {
    std::env::var_os("HEXROAD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"))
}

/// Deterministic points: uniform on the sphere's lat/lng box, every resolution.
fn points(n: usize) -> Vec<(f64, f64, i64)> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|i| {
            (
                next() * 179.0 - 89.5,
                next() * 359.0 - 179.5,
                (i % 16) as i64,
            )
        })
        .collect()
}

#[tokio::test]
async fn every_function_matches_the_h3_reference_library() {
    let pts = points(3200);
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.json"), dir.path().join("out.json"));
    std::fs::write(&input, serde_json::to_vec(&pts).unwrap()).unwrap();
    let status = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/h3_reference.py"))
        .arg(&input)
        .arg(&output)
        .status()
        .expect("the test venv (scripts/setup --test)");
    assert!(status.success());
    let reference: Vec<Value> = serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();

    let ctx = SessionContext::new();
    hexroad_lake::h3sql::register(&ctx);
    let schema = Arc::new(Schema::new(vec![
        Field::new("i", DataType::Int64, false),
        Field::new("lat", DataType::Float64, false),
        Field::new("lng", DataType::Float64, false),
        Field::new("res", DataType::Int64, false),
        Field::new("ring_cell", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..pts.len() as i64)),
            Arc::new(Float64Array::from_iter_values(pts.iter().map(|p| p.0))),
            Arc::new(Float64Array::from_iter_values(pts.iter().map(|p| p.1))),
            Arc::new(Int64Array::from_iter_values(pts.iter().map(|p| p.2))),
            Arc::new(Int64Array::from_iter_values(
                reference
                    .iter()
                    .map(|r| r["ring_cell"].as_u64().unwrap() as i64),
            )),
        ],
    )
    .unwrap();
    ctx.register_table(
        "p",
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap()),
    )
    .unwrap();
    let batches = ctx
        .sql(
            "WITH c AS (SELECT i, res, lat, lng, CAST(ring_cell AS BIGINT UNSIGNED) AS ring, \
                        h3_latlng_to_cell(lat, lng, res) AS cell FROM p) \
             SELECT i, cell, h3_h3_to_string(cell), h3_cell_to_lat(cell), h3_cell_to_lng(cell), \
                    h3_get_resolution(cell), h3_cell_to_parent(cell, res - 1), \
                    h3_cell_to_children(cell, res + 1), h3_grid_disk(cell, 2), \
                    h3_cell_area(cell, 'km^2'), h3_cell_area(cell, 'm^2'), \
                    h3_cell_to_boundary_wkt(cell), h3_grid_distance(cell, ring), \
                    h3_is_valid_cell(cell), h3_string_to_h3(h3_h3_to_string(cell)), \
                    h3_latlng_to_cell_string(lat, lng, res), h3_cell_to_latlng(cell), \
                    h3_cell_to_parent_string(h3_h3_to_string(cell), res - 1) \
             FROM c ORDER BY i",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();

    let close = |a: f64, b: f64, what: &str, i: usize| {
        assert!(
            (a - b).abs() <= 1e-9 * b.abs().max(1.0),
            "row {i} {what}: {a} vs {b}"
        );
    };
    // h3o sums a cell's spherical triangles differently from the C library;
    // on the smallest cells (a few m²) rounding leaves up to 1e-7 relative.
    let close_area = |a: f64, b: f64, what: &str, i: usize| {
        assert!(
            (a - b).abs() <= 1e-6 * b.abs(),
            "row {i} {what}: {a} vs {b}"
        );
    };
    let mut checked = 0;
    for b in &batches {
        for r in 0..b.num_rows() {
            let i = b.column(0).as_primitive::<Int64Type>().value(r) as usize;
            let want = &reference[i];
            let cell = b.column(1).as_primitive::<UInt64Type>().value(r);
            assert_eq!(
                cell,
                want["cell"].as_u64().unwrap(),
                "row {i} cell of {:?}",
                pts[i]
            );
            assert_eq!(
                b.column(2).as_string::<i32>().value(r),
                want["string"].as_str().unwrap()
            );
            close(
                b.column(3).as_primitive::<Float64Type>().value(r),
                want["lat"].as_f64().unwrap(),
                "lat",
                i,
            );
            close(
                b.column(4).as_primitive::<Float64Type>().value(r),
                want["lng"].as_f64().unwrap(),
                "lng",
                i,
            );
            assert_eq!(
                i64::from(b.column(5).as_primitive::<Int32Type>().value(r)),
                want["res"].as_i64().unwrap()
            );
            let parent = b.column(6).as_primitive::<UInt64Type>();
            match want["parent"].as_u64() {
                Some(p) => assert_eq!(parent.value(r), p, "row {i} parent"),
                None => assert!(parent.is_null(r), "row {i}: no parent above resolution 0"),
            }
            let list = |col: usize| -> Option<Vec<u64>> {
                let l = b.column(col).as_list::<i32>();
                (!l.is_null(r)).then(|| {
                    let mut v: Vec<u64> = l.value(r).as_primitive::<UInt64Type>().values().to_vec();
                    v.sort_unstable();
                    v
                })
            };
            let json_list = |v: &Value| {
                v.as_array()
                    .map(|a| a.iter().map(|x| x.as_u64().unwrap()).collect::<Vec<_>>())
            };
            assert_eq!(list(7), json_list(&want["children"]), "row {i} children");
            assert_eq!(list(8), json_list(&want["disk"]), "row {i} grid_disk");
            close_area(
                b.column(9).as_primitive::<Float64Type>().value(r),
                want["area_km2"].as_f64().unwrap(),
                "km2",
                i,
            );
            close_area(
                b.column(10).as_primitive::<Float64Type>().value(r),
                want["area_m2"].as_f64().unwrap(),
                "m2",
                i,
            );
            // WKT: lng lat pairs, closed ring, same vertices as h3's (lat, lng) boundary.
            let wkt = b.column(11).as_string::<i32>().value(r);
            let inner = wkt.trim_start_matches("POLYGON ((").trim_end_matches("))");
            let verts: Vec<(f64, f64)> = inner
                .split(", ")
                .map(|p| {
                    let mut it = p.split(' ').map(|x| x.parse::<f64>().unwrap());
                    (it.next().unwrap(), it.next().unwrap())
                })
                .collect();
            let boundary = want["boundary"].as_array().unwrap();
            assert_eq!(verts.len(), boundary.len() + 1, "row {i} ring is closed");
            for (v, p) in verts.iter().zip(boundary) {
                close(v.1, p[0].as_f64().unwrap(), "boundary lat", i);
                close(v.0, p[1].as_f64().unwrap(), "boundary lng", i);
            }
            let distance = b.column(12).as_primitive::<Int64Type>();
            assert_eq!(
                (!distance.is_null(r)).then(|| distance.value(r)),
                want["ring_distance"].as_i64(),
                "row {i} grid_distance"
            );
            assert!(b.column(13).as_boolean().value(r));
            assert_eq!(b.column(14).as_primitive::<UInt64Type>().value(r), cell);
            assert_eq!(
                b.column(15).as_string::<i32>().value(r),
                want["string"].as_str().unwrap()
            );
            let ll = b.column(16).as_list::<i32>();
            let ll = ll.value(r);
            let ll = ll.as_primitive::<Float64Type>();
            close(ll.value(0), want["lat"].as_f64().unwrap(), "latlng[0]", i);
            close(ll.value(1), want["lng"].as_f64().unwrap(), "latlng[1]", i);
            checked += 1;
        }
    }
    assert_eq!(checked, pts.len());
}

#[tokio::test]
async fn invalid_input_gives_null_not_a_panic() {
    let ctx = SessionContext::new();
    hexroad_lake::h3sql::register(&ctx);
    let batches = ctx
        .sql(
            "SELECT h3_is_valid_cell(CAST(12345 AS BIGINT UNSIGNED)) AS valid, \
                    h3_cell_to_lat(CAST(12345 AS BIGINT UNSIGNED)) AS lat, \
                    h3_latlng_to_cell(60.0, 24.0, 16) AS bad_res, \
                    h3_latlng_to_cell(CAST('NaN' AS DOUBLE), 24.0, 5) AS bad_lat, \
                    h3_string_to_h3('not a cell') AS bad_string, \
                    h3_cell_to_parent(h3_latlng_to_cell(60.0, 24.0, 5), 7) AS finer_parent, \
                    h3_grid_distance(h3_latlng_to_cell(60.0, 24.0, 5), h3_latlng_to_cell(-60.0, -24.0, 5)) AS too_far",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let b = &batches[0];
    assert!(!b.column(0).as_boolean().value(0));
    for c in 1..b.num_columns() {
        assert!(
            b.column(c).is_null(0),
            "column {} is not NULL",
            b.schema().field(c).name()
        );
    }
    let err = ctx
        .sql("SELECT h3_cell_area(h3_latlng_to_cell(60.0, 24.0, 5), 'acres')")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("km^2"), "{err}");
}
