//! H3 functions for SQL, named and typed like DuckDB's H3 extension: cells are
//! `UBIGINT` (`UInt64`), `_string` variants take and give hex strings.
//! Invalid cells, resolutions or coordinates give NULL, never a panic.

use std::str::FromStr;
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder,
    ListBuilder, StringBuilder, UInt64Builder,
};
use deltalake::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, UInt64Type};
use deltalake::datafusion::common::{Result as DfResult, exec_err};
use deltalake::datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use deltalake::datafusion::prelude::SessionContext;
use h3o::{CellIndex, LatLng, Resolution};

/// What a function does; the argument and result types follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    LatLngToCell,
    CellToLat,
    CellToLng,
    CellToLatLng,
    CellToParent,
    CellToChildren,
    GetResolution,
    IsValidCell,
    GridDisk,
    GridDistance,
    CellToBoundaryWkt,
    CellArea,
    H3ToString,
    StringToH3,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct H3Fn {
    name: String,
    op: Op,
    /// Cells given and returned as hex strings.
    strings: bool,
    signature: Signature,
}

/// How a cell argument arrives: integers of any width, or hex text.
fn cell_types(strings: bool) -> Vec<DataType> {
    if strings {
        vec![DataType::Utf8]
    } else {
        vec![DataType::UInt64]
    }
}

impl H3Fn {
    fn new(name: &str, op: Op, strings: bool) -> Self {
        let cell = cell_types(strings).remove(0);
        let exact = |types: Vec<DataType>| TypeSignature::Exact(types);
        let sig = match op {
            Op::LatLngToCell => exact(vec![DataType::Float64, DataType::Float64, DataType::Int64]),
            Op::CellToParent | Op::CellToChildren | Op::GridDisk => {
                exact(vec![cell, DataType::Int64])
            }
            Op::GridDistance => exact(vec![cell.clone(), cell]),
            Op::CellArea => TypeSignature::OneOf(vec![
                exact(vec![cell.clone()]),
                exact(vec![cell, DataType::Utf8]),
            ]),
            Op::H3ToString => exact(vec![DataType::UInt64]),
            Op::StringToH3 => exact(vec![DataType::Utf8]),
            _ => exact(vec![cell]),
        };
        Self {
            name: name.to_owned(),
            op,
            strings,
            signature: Signature::new(sig, Volatility::Immutable),
        }
    }

    fn cell_out(&self) -> DataType {
        if self.strings {
            DataType::Utf8
        } else {
            DataType::UInt64
        }
    }
}

fn list_of(t: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", t, true)))
}

/// Reads argument `i` as cells (NULL where absent or invalid).
fn cells(arr: &ArrayRef) -> Vec<Option<CellIndex>> {
    match arr.data_type() {
        DataType::Utf8 => arr
            .as_string_opt::<i32>()
            .into_iter()
            .flatten()
            .map(|s| s.and_then(|s| CellIndex::from_str(s.trim()).ok()))
            .collect(),
        DataType::UInt64 => arr
            .as_primitive_opt::<UInt64Type>()
            .into_iter()
            .flatten()
            .map(|v| v.and_then(|v| CellIndex::try_from(v).ok()))
            .collect(),
        DataType::Int64 => arr
            .as_primitive_opt::<Int64Type>()
            .into_iter()
            .flatten()
            .map(|v| {
                v.and_then(|v| u64::try_from(v).ok())
                    .and_then(|v| CellIndex::try_from(v).ok())
            })
            .collect(),
        _ => vec![None; arr.len()],
    }
}

/// Reads an integer argument (NULL where it is not one).
fn ints(arr: &ArrayRef) -> Vec<Option<i64>> {
    match arr.as_primitive_opt::<Int64Type>() {
        Some(a) => a.iter().collect(),
        None => vec![None; arr.len()],
    }
}

/// Reads a float argument (NULL where it is not one).
fn floats(arr: &ArrayRef) -> Vec<Option<f64>> {
    match arr.as_primitive_opt::<Float64Type>() {
        Some(a) => a.iter().collect(),
        None => vec![None; arr.len()],
    }
}

fn res(v: Option<i64>) -> Option<Resolution> {
    v.and_then(|r| u8::try_from(r).ok())
        .and_then(|r| Resolution::try_from(r).ok())
}

fn wkt(cell: CellIndex) -> String {
    let boundary = cell.boundary();
    let mut pts: Vec<String> = boundary
        .iter()
        .map(|ll| format!("{} {}", ll.lng(), ll.lat()))
        .collect();
    if let Some(first) = pts.first().cloned() {
        pts.push(first);
    }
    format!("POLYGON (({}))", pts.join(", "))
}

impl ScalarUDFImpl for H3Fn {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(match self.op {
            Op::LatLngToCell | Op::CellToParent | Op::StringToH3 => {
                if self.op == Op::StringToH3 {
                    DataType::UInt64
                } else {
                    self.cell_out()
                }
            }
            Op::CellToLat | Op::CellToLng | Op::CellArea => DataType::Float64,
            Op::CellToLatLng => list_of(DataType::Float64),
            Op::CellToChildren | Op::GridDisk => list_of(self.cell_out()),
            Op::GetResolution => DataType::Int32,
            Op::IsValidCell => DataType::Boolean,
            Op::GridDistance => DataType::Int64,
            Op::CellToBoundaryWkt | Op::H3ToString => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let out: ArrayRef = match self.op {
            Op::LatLngToCell => self.lat_lng_to_cell(&arrays, n)?,
            Op::CellToLat | Op::CellToLng => {
                let mut b = Float64Builder::with_capacity(n);
                for c in cells(&arrays[0]) {
                    b.append_option(c.map(|c| {
                        let ll = LatLng::from(c);
                        if self.op == Op::CellToLat {
                            ll.lat()
                        } else {
                            ll.lng()
                        }
                    }));
                }
                Arc::new(b.finish())
            }
            Op::CellToLatLng => self.cell_to_lat_lng(&arrays)?,
            Op::CellToParent => {
                let r = ints(&arrays[1]);
                let found = cells(&arrays[0])
                    .into_iter()
                    .zip(r)
                    .map(|(c, r)| c?.parent(res(r)?));
                self.cell_array(found)
            }
            Op::CellToChildren | Op::GridDisk => self.expand(&arrays)?,
            Op::GetResolution => {
                let mut b = Int32Builder::with_capacity(n);
                for c in cells(&arrays[0]) {
                    b.append_option(c.map(|c| i32::from(u8::from(c.resolution()))));
                }
                Arc::new(b.finish())
            }
            Op::IsValidCell => self.is_valid_cell(&arrays, n)?,
            Op::GridDistance => {
                let mut b = Int64Builder::with_capacity(n);
                for (a, z) in cells(&arrays[0]).into_iter().zip(cells(&arrays[1])) {
                    b.append_option(
                        a.zip(z)
                            .and_then(|(a, z)| a.grid_distance(z).ok())
                            .map(i64::from),
                    );
                }
                Arc::new(b.finish())
            }
            Op::CellArea => self.cell_area(&arrays, n)?,
            Op::CellToBoundaryWkt => {
                let mut b = StringBuilder::new();
                for c in cells(&arrays[0]) {
                    b.append_option(c.map(wkt));
                }
                Arc::new(b.finish())
            }
            Op::H3ToString => {
                let mut b = StringBuilder::new();
                for c in cells(&arrays[0]) {
                    b.append_option(c.map(|c| c.to_string()));
                }
                Arc::new(b.finish())
            }
            Op::StringToH3 => {
                let mut b = UInt64Builder::with_capacity(n);
                for c in cells(&arrays[0]) {
                    b.append_option(c.map(u64::from));
                }
                Arc::new(b.finish())
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

impl H3Fn {
    fn lat_lng_to_cell(&self, arrays: &[ArrayRef], n: usize) -> DfResult<ArrayRef> {
        let (lat, lng, r) = (floats(&arrays[0]), floats(&arrays[1]), ints(&arrays[2]));
        let found = (0..n).map(|i| {
            let ll = LatLng::new(lat[i]?, lng[i]?).ok()?;
            Some(ll.to_cell(res(r[i])?))
        });
        Ok(self.cell_array(found))
    }

    fn cell_to_lat_lng(&self, arrays: &[ArrayRef]) -> DfResult<ArrayRef> {
        let mut b = ListBuilder::new(Float64Builder::new());
        for c in cells(&arrays[0]) {
            match c {
                Some(c) => {
                    let ll = LatLng::from(c);
                    b.values().append_value(ll.lat());
                    b.values().append_value(ll.lng());
                    b.append(true);
                }
                None => b.append(false),
            }
        }
        Ok(Arc::new(b.finish()))
    }

    fn expand(&self, arrays: &[ArrayRef]) -> DfResult<ArrayRef> {
        let k = ints(&arrays[1]);
        let lists = cells(&arrays[0]).into_iter().zip(k).map(|(c, k)| {
            let c = c?;
            match self.op {
                Op::CellToChildren => {
                    let r = res(k)?;
                    // Refuse absurd expansions rather than exhaust memory.
                    (r >= c.resolution() && c.children_count(r) <= 10_000_000)
                        .then(|| c.children(r).collect::<Vec<_>>())
                }
                _ => {
                    let k = u32::try_from(k?).ok().filter(|k| *k <= 1000)?;
                    Some(c.grid_disk::<Vec<_>>(k))
                }
            }
        });
        Ok(self.cell_lists(lists))
    }

    fn is_valid_cell(&self, arrays: &[ArrayRef], n: usize) -> DfResult<ArrayRef> {
        let mut b = BooleanBuilder::with_capacity(n);
        let valid = cells(&arrays[0]);
        for (i, c) in valid.into_iter().enumerate() {
            if arrays[0].is_null(i) {
                b.append_null();
            } else {
                b.append_value(c.is_some());
            }
        }
        Ok(Arc::new(b.finish()))
    }

    fn cell_area(&self, arrays: &[ArrayRef], n: usize) -> DfResult<ArrayRef> {
        let units: Vec<Option<String>> = match arrays.get(1) {
            Some(u) => match u.as_string_opt::<i32>() {
                Some(u) => u.iter().map(|s| s.map(str::to_owned)).collect(),
                None => return exec_err!("{}: the unit must be text", self.name),
            },
            None => vec![Some("km^2".to_owned()); n],
        };
        let mut b = Float64Builder::with_capacity(n);
        for (c, unit) in cells(&arrays[0]).into_iter().zip(units) {
            let area = match (c, unit.as_deref()) {
                (Some(c), Some("km^2")) => Some(c.area_km2()),
                (Some(c), Some("m^2")) => Some(c.area_m2()),
                (Some(_), Some(other)) => {
                    return exec_err!("{}: unit must be 'km^2' or 'm^2', not {other:?}", self.name);
                }
                _ => None,
            };
            b.append_option(area);
        }
        Ok(Arc::new(b.finish()))
    }

    fn cell_array(&self, cells: impl Iterator<Item = Option<CellIndex>>) -> ArrayRef {
        if self.strings {
            let mut b = StringBuilder::new();
            for c in cells {
                b.append_option(c.map(|c| c.to_string()));
            }
            Arc::new(b.finish())
        } else {
            let mut b = UInt64Builder::new();
            for c in cells {
                b.append_option(c.map(u64::from));
            }
            Arc::new(b.finish())
        }
    }

    fn cell_lists(&self, lists: impl Iterator<Item = Option<Vec<CellIndex>>>) -> ArrayRef {
        if self.strings {
            let mut b = ListBuilder::new(StringBuilder::new());
            for l in lists {
                match l {
                    Some(l) => {
                        for c in l {
                            b.values().append_value(c.to_string());
                        }
                        b.append(true);
                    }
                    None => b.append(false),
                }
            }
            Arc::new(b.finish())
        } else {
            let mut b = ListBuilder::new(UInt64Builder::new());
            for l in lists {
                match l {
                    Some(l) => {
                        for c in l {
                            b.values().append_value(u64::from(c));
                        }
                        b.append(true);
                    }
                    None => b.append(false),
                }
            }
            Arc::new(b.finish())
        }
    }
}

/// Every H3 function, as DuckDB's extension names them.
pub fn udfs() -> Vec<ScalarUDF> {
    let both = [
        ("h3_latlng_to_cell", Op::LatLngToCell),
        ("h3_cell_to_lat", Op::CellToLat),
        ("h3_cell_to_lng", Op::CellToLng),
        ("h3_cell_to_latlng", Op::CellToLatLng),
        ("h3_cell_to_parent", Op::CellToParent),
        ("h3_cell_to_children", Op::CellToChildren),
        ("h3_get_resolution", Op::GetResolution),
        ("h3_is_valid_cell", Op::IsValidCell),
        ("h3_grid_disk", Op::GridDisk),
        ("h3_grid_distance", Op::GridDistance),
        ("h3_cell_to_boundary_wkt", Op::CellToBoundaryWkt),
        ("h3_cell_area", Op::CellArea),
    ];
    let mut out = Vec::new();
    for (name, op) in both {
        out.push(ScalarUDF::from(H3Fn::new(name, op, false)));
        out.push(ScalarUDF::from(H3Fn::new(
            &format!("{name}_string"),
            op,
            true,
        )));
    }
    out.push(ScalarUDF::from(H3Fn::new(
        "h3_h3_to_string",
        Op::H3ToString,
        false,
    )));
    out.push(ScalarUDF::from(H3Fn::new(
        "h3_string_to_h3",
        Op::StringToH3,
        false,
    )));
    out
}

/// Registers every H3 function in `ctx`.
pub fn register(ctx: &SessionContext) {
    for f in udfs() {
        ctx.register_udf(f);
    }
}
