//! Hiding detected regions in the full-resolution frame.
//!
//! The default follows deface: the box grown by `mask_scale` (1.3 grows each
//! side by 30 % of the box), a strong blur whose kernel is half the region, and
//! an elliptical mask. Here the blur is three box passes (close to a Gaussian),
//! which leaves nothing of a face's structure at any region size.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::detect::{Action, Detection};

/// How regions are hidden.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskConfig {
    /// Growth of each box before hiding it (deface's `--mask-scale`).
    pub mask_scale: f32,
    /// Hide an ellipse inside the box rather than the whole box.
    pub ellipse: bool,
    /// Mosaic cells across the region's longer side.
    pub mosaic_cells: u32,
}

impl Default for MaskConfig {
    fn default() -> Self {
        Self {
            mask_scale: 1.3,
            ellipse: true,
            mosaic_cells: 8,
        }
    }
}

/// The pixel rectangle a detection hides, after growing and clipping.
pub fn region(d: &Detection, config: &MaskConfig, width: u32, height: u32) -> Option<[u32; 4]> {
    let s = config.mask_scale - 1.0;
    let (w, h) = (d.x2 - d.x1, d.y2 - d.y1);
    if !(w > 0.0 && h > 0.0) {
        return None;
    }
    let x1 = (d.x1 - w * s).round().max(0.0) as u32;
    let y1 = (d.y1 - h * s).round().max(0.0) as u32;
    let x2 = ((d.x2 + w * s).round() as u32).min(width);
    let y2 = ((d.y2 + h * s).round() as u32).min(height);
    (x2 > x1 && y2 > y1).then_some([x1, y1, x2, y2])
}

/// Hides every detection whose action asks for it; returns how many were hidden.
pub fn apply(frame: &mut RgbImage, detections: &[Detection], config: &MaskConfig) -> usize {
    let (fw, fh) = frame.dimensions();
    let mut hidden = 0;
    for d in detections {
        if d.action == Action::Keep {
            continue;
        }
        let Some([x1, y1, x2, y2]) = region(d, config, fw, fh) else {
            continue;
        };
        let (w, h) = ((x2 - x1) as usize, (y2 - y1) as usize);
        let mut roi = crop(frame, x1, y1, w, h);
        match d.action {
            Action::Blur => {
                let (kx, ky) = ((w / 2).max(1), (h / 2).max(1));
                for _ in 0..3 {
                    box_blur(&mut roi, w, h, kx, ky);
                }
            }
            Action::Mosaic => mosaic(&mut roi, w, h, config.mosaic_cells.max(1) as usize),
            Action::Fill => roi.fill(0),
            Action::Keep => {}
        }
        paste(frame, &roi, x1, y1, w, h, config.ellipse);
        hidden += 1;
    }
    hidden
}

fn crop(frame: &RgbImage, x1: u32, y1: u32, w: usize, h: usize) -> Vec<u8> {
    let stride = frame.width() as usize * 3;
    let raw = frame.as_raw();
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let start = (y1 as usize + y) * stride + x1 as usize * 3;
        out.extend_from_slice(&raw[start..start + w * 3]);
    }
    out
}

fn paste(frame: &mut RgbImage, roi: &[u8], x1: u32, y1: u32, w: usize, h: usize, ellipse: bool) {
    let stride = frame.width() as usize * 3;
    let raw: &mut [u8] = frame;
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    for y in 0..h {
        let row = (y1 as usize + y) * stride + x1 as usize * 3;
        let (from, to) = if ellipse {
            // The ellipse inscribed in the region, row by row.
            let dy = (y as f32 + 0.5 - cy) / cy;
            let half = cx * (1.0 - dy * dy).max(0.0).sqrt();
            (
                ((cx - half).floor().max(0.0)) as usize,
                ((cx + half).ceil() as usize).min(w),
            )
        } else {
            (0, w)
        };
        if from < to {
            raw[row + from * 3..row + to * 3]
                .copy_from_slice(&roi[(y * w + from) * 3..(y * w + to) * 3]);
        }
    }
}

/// One pass of a box blur with a `kx`×`ky` window, edges replicated.
fn box_blur(px: &mut [u8], w: usize, h: usize, kx: usize, ky: usize) {
    let mut tmp = vec![0u8; px.len()];
    // Horizontal.
    let (l, r) = (kx / 2, kx - kx / 2 - 1);
    for y in 0..h {
        let row = &px[y * w * 3..(y + 1) * w * 3];
        let out = &mut tmp[y * w * 3..(y + 1) * w * 3];
        for c in 0..3 {
            let at = |x: isize| u32::from(row[x.clamp(0, w as isize - 1) as usize * 3 + c]);
            let mut sum: u32 = (-(l as isize)..=r as isize).map(at).sum();
            for x in 0..w {
                out[x * 3 + c] = (sum / kx as u32) as u8;
                sum += at(x as isize + r as isize + 1);
                sum -= at(x as isize - l as isize);
            }
        }
    }
    // Vertical.
    let (t, b) = (ky / 2, ky - ky / 2 - 1);
    for x in 0..w {
        for c in 0..3 {
            let at =
                |y: isize| u32::from(tmp[(y.clamp(0, h as isize - 1) as usize * w + x) * 3 + c]);
            let mut sum: u32 = (-(t as isize)..=b as isize).map(at).sum();
            for y in 0..h {
                px[(y * w + x) * 3 + c] = (sum / ky as u32) as u8;
                sum += at(y as isize + b as isize + 1);
                sum -= at(y as isize - t as isize);
            }
        }
    }
}

fn mosaic(px: &mut [u8], w: usize, h: usize, cells: usize) {
    let cell = (w.max(h) / cells).max(2);
    for by in (0..h).step_by(cell) {
        for bx in (0..w).step_by(cell) {
            let (ey, ex) = ((by + cell).min(h), (bx + cell).min(w));
            let mut sum = [0u32; 3];
            let n = ((ey - by) * (ex - bx)) as u32;
            for y in by..ey {
                for x in bx..ex {
                    for c in 0..3 {
                        sum[c] += u32::from(px[(y * w + x) * 3 + c]);
                    }
                }
            }
            for y in by..ey {
                for x in bx..ex {
                    for c in 0..3 {
                        px[(y * w + x) * 3 + c] = (sum[c] / n) as u8;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkerboard(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = if (x / 2 + y / 2) % 2 == 0 { 255 } else { 0 };
            image::Rgb([v, v, v])
        })
    }

    fn face(x1: f32, y1: f32, x2: f32, y2: f32, action: Action) -> Detection {
        Detection {
            detector: "faces".into(),
            class: "face".into(),
            score: 0.9,
            x1,
            y1,
            x2,
            y2,
            action,
        }
    }

    /// Mean absolute difference between horizontal neighbours: the detail left.
    fn detail(img: &RgbImage, x1: u32, y1: u32, x2: u32, y2: u32) -> f64 {
        let mut sum = 0.0;
        let mut n = 0.0;
        for y in y1..y2 {
            for x in x1..x2 - 1 {
                sum += (f64::from(img.get_pixel(x, y)[0]) - f64::from(img.get_pixel(x + 1, y)[0]))
                    .abs();
                n += 1.0;
            }
        }
        sum / n
    }

    #[test]
    fn blur_removes_the_detail_inside_and_leaves_the_outside() {
        let mut img = checkerboard(200, 100);
        let before = detail(&img, 90, 40, 110, 60);
        let outside = detail(&img, 0, 0, 40, 10);
        let orig = img.clone();
        let n = apply(
            &mut img,
            &[face(80.0, 30.0, 120.0, 70.0, Action::Blur)],
            &MaskConfig::default(),
        );
        assert_eq!(n, 1);
        let after = detail(&img, 90, 40, 110, 60);
        assert!(after < before * 0.05, "detail {before} → {after}");
        assert_eq!(
            detail(&img, 0, 0, 40, 10),
            outside,
            "outside the grown box is untouched"
        );
        assert!(
            img.enumerate_pixels()
                .filter(|(x, y, p)| orig.get_pixel(*x, *y) != *p)
                .all(|(x, y, _)| (68..132).contains(&x) && (18..82).contains(&y)),
            "only the box grown by 1.3 changes"
        );
    }

    #[test]
    fn mask_scale_grows_each_side_like_deface() {
        let d = face(100.0, 100.0, 110.0, 120.0, Action::Blur);
        assert_eq!(
            region(&d, &MaskConfig::default(), 1000, 1000),
            Some([97, 94, 113, 126])
        );
        // Clipped at the frame's edge, and degenerate boxes are skipped.
        assert_eq!(
            region(&d, &MaskConfig::default(), 105, 110),
            Some([97, 94, 105, 110])
        );
        assert_eq!(
            region(
                &face(5.0, 5.0, 5.0, 9.0, Action::Blur),
                &MaskConfig::default(),
                10,
                10
            ),
            None
        );
    }

    #[test]
    fn mosaic_fill_and_keep() {
        let mut img = checkerboard(64, 64);
        let cfg = MaskConfig {
            ellipse: false,
            ..MaskConfig::default()
        };
        apply(
            &mut img,
            &[face(16.0, 16.0, 48.0, 48.0, Action::Fill)],
            &cfg,
        );
        assert_eq!(img.get_pixel(32, 32)[0], 0);
        assert_eq!(img.get_pixel(20, 20)[0], 0);
        let mut img = checkerboard(64, 64);
        let original = img.clone();
        assert_eq!(
            apply(
                &mut img,
                &[face(16.0, 16.0, 48.0, 48.0, Action::Keep)],
                &cfg
            ),
            0
        );
        assert_eq!(img, original);
        apply(
            &mut img,
            &[face(16.0, 16.0, 48.0, 48.0, Action::Mosaic)],
            &cfg,
        );
        assert!(detail(&img, 20, 20, 44, 44) < detail(&original, 20, 20, 44, 44) / 3.0);
    }
}
