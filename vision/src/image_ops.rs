//! Pixel work around the models: colour conversion, JPEG, perceptual hash,
//! and a quality score.

use image::RgbImage;

use crate::{Error, Result};

/// Converts one I420 (planar YUV 4:2:0, BT.601 limited range) picture to RGB.
pub fn i420_to_rgb(
    y_plane: &[u8],
    u_plane: &[u8],
    v_plane: &[u8],
    strides: [usize; 3],
    width: u32,
    height: u32,
) -> Result<RgbImage> {
    let (w, h) = (width as usize, height as usize);
    let need = |plane: &[u8], stride: usize, rows: usize, cols: usize| {
        rows == 0 || plane.len() >= (rows - 1) * stride + cols
    };
    if !need(y_plane, strides[0], h, w)
        || !need(u_plane, strides[1], h.div_ceil(2), w.div_ceil(2))
        || !need(v_plane, strides[2], h.div_ceil(2), w.div_ceil(2))
    {
        return Err(Error::Frame(
            "I420 planes are shorter than the frame".into(),
        ));
    }
    let mut out = vec![0u8; w * h * 3];
    for (row, line) in out.chunks_exact_mut(w * 3).enumerate() {
        let yr = &y_plane[row * strides[0]..];
        let ur = &u_plane[(row / 2) * strides[1]..];
        let vr = &v_plane[(row / 2) * strides[2]..];
        for (col, px) in line.chunks_exact_mut(3).enumerate() {
            let c = (i32::from(yr[col]) - 16) * 298;
            let d = i32::from(ur[col / 2]) - 128;
            let e = i32::from(vr[col / 2]) - 128;
            px[0] = ((c + 409 * e + 128) >> 8).clamp(0, 255) as u8;
            px[1] = ((c - 100 * d - 208 * e + 128) >> 8).clamp(0, 255) as u8;
            px[2] = ((c + 516 * d + 128) >> 8).clamp(0, 255) as u8;
        }
    }
    RgbImage::from_raw(width, height, out).ok_or_else(|| Error::Internal("rgb size".into()))
}

/// Encodes a baseline JPEG with no metadata at all (no EXIF, no GPS tags).
pub fn encode_jpeg(frame: &RgbImage, quality: u8) -> Result<Vec<u8>> {
    let (w, h) = frame.dimensions();
    let (w16, h16) = (
        u16::try_from(w).map_err(|_| Error::Frame(format!("{w} px is too wide for JPEG")))?,
        u16::try_from(h).map_err(|_| Error::Frame(format!("{h} px is too tall for JPEG")))?,
    );
    let mut out = Vec::with_capacity((w * h / 8) as usize);
    let encoder = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    encoder
        .encode(frame.as_raw(), w16, h16, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| Error::Frame(format!("JPEG encoding: {e}")))?;
    Ok(out)
}

/// Luma averaged into a `w`×`h` grid (area sampling; cheap and alias-free).
fn gray_grid(frame: &RgbImage, w: usize, h: usize) -> Vec<f32> {
    let (fw, fh) = (frame.width() as usize, frame.height() as usize);
    let mut sum = vec![0f32; w * h];
    let mut n = vec![0u32; w * h];
    let raw = frame.as_raw();
    // Every second pixel in each direction is plenty for a 32×32 summary.
    let step = if fw >= 4 * w && fh >= 4 * h { 2 } else { 1 };
    for y in (0..fh).step_by(step) {
        let gy = y * h / fh;
        for x in (0..fw).step_by(step) {
            let gx = x * w / fw;
            let p = &raw[(y * fw + x) * 3..];
            let l = 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]);
            sum[gy * w + gx] += l;
            n[gy * w + gx] += 1;
        }
    }
    sum.iter()
        .zip(&n)
        .map(|(s, &c)| if c == 0 { 0.0 } else { s / c as f32 })
        .collect()
}

/// 64-bit DCT perceptual hash (pHash): the 8×8 lowest frequencies of a 32×32
/// luma summary, each bit set when above their median.
pub fn phash(frame: &RgbImage) -> u64 {
    const N: usize = 32;
    let g = gray_grid(frame, N, N);
    let cos: Vec<f32> = (0..8 * N)
        .map(|i| {
            let (k, n) = (i / N, i % N);
            (std::f32::consts::PI / N as f32 * (n as f32 + 0.5) * k as f32).cos()
        })
        .collect();
    // Rows first, then columns, only for the 8 lowest frequencies.
    let mut rows = vec![0f32; N * 8];
    for y in 0..N {
        for k in 0..8 {
            rows[y * 8 + k] = (0..N).map(|x| g[y * N + x] * cos[k * N + x]).sum();
        }
    }
    let mut coeffs = [0f32; 64];
    for ky in 0..8 {
        for kx in 0..8 {
            coeffs[ky * 8 + kx] = (0..N).map(|y| rows[y * 8 + kx] * cos[ky * N + y]).sum();
        }
    }
    let mut sorted: Vec<f32> = coeffs[1..].to_vec();
    sorted.sort_by(f32::total_cmp);
    let median = sorted[sorted.len() / 2];
    coeffs
        .iter()
        .enumerate()
        .fold(0u64, |h, (i, &c)| if c > median { h | (1 << i) } else { h })
}

/// Bits that differ between two hashes.
pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// A 0–1 score: sharp (variance of the Laplacian) and well exposed (mean
/// luma near mid-grey, little clipping). Blurred, dark or blown frames score
/// low. Returns (quality, sharpness), both 0–1.
pub fn quality(frame: &RgbImage) -> (f32, f32) {
    let (w, h) = (160usize, 90usize);
    let g = gray_grid(frame, w, h);
    let mut lap = Vec::with_capacity(w * h);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let c = g[y * w + x];
            lap.push(
                g[y * w + x - 1] + g[y * w + x + 1] + g[(y - 1) * w + x] + g[(y + 1) * w + x]
                    - 4.0 * c,
            );
        }
    }
    let mean_lap = lap.iter().sum::<f32>() / lap.len() as f32;
    let var = lap.iter().map(|v| (v - mean_lap).powi(2)).sum::<f32>() / lap.len() as f32;
    let sharpness = 1.0 - (-var / 150.0).exp();
    let mean = g.iter().sum::<f32>() / g.len() as f32;
    let clipped =
        g.iter().filter(|&&v| !(8.0..=247.0).contains(&v)).count() as f32 / g.len() as f32;
    let exposure = ((1.0 - (mean - 118.0).abs() / 118.0) * (1.0 - clipped)).clamp(0.0, 1.0);
    (
        (0.6 * sharpness + 0.4 * exposure).clamp(0.0, 1.0),
        sharpness,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scene(shift: u32) -> RgbImage {
        RgbImage::from_fn(320, 180, |x, y| {
            let (fx, fy) = ((x + shift) as f32, y as f32);
            let v = 128.0 + 90.0 * (fx / 37.0).sin() * (fy / 23.0).cos() + fx / 5.0 - fy / 3.0;
            let v = v.clamp(0.0, 255.0) as u8;
            image::Rgb([v, v / 2 + 40, 255 - v])
        })
    }

    #[test]
    fn phash_is_stable_under_recompression_and_differs_across_scenes() {
        let a = scene(0);
        let jpeg = encode_jpeg(&a, 60).unwrap();
        let b = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        let bits = hamming(phash(&a), phash(&b));
        assert!(bits <= 6, "{bits} bits apart after JPEG at quality 60");
        let other = RgbImage::from_fn(320, 180, |x, y| {
            image::Rgb([(x * y % 251) as u8, 90, (x % 200) as u8])
        });
        assert!(hamming(phash(&a), phash(&other)) > 16);
    }

    #[test]
    fn jpeg_has_no_metadata_segments() {
        let jpeg = encode_jpeg(&scene(0), 85).unwrap();
        assert_eq!(&jpeg[..2], &[0xff, 0xd8]);
        assert!(!jpeg.windows(4).any(|w| w == b"Exif"));
    }

    #[test]
    fn quality_prefers_sharp_well_exposed_frames() {
        let sharp = RgbImage::from_fn(320, 180, |x, y| {
            let v = if (x / 3 + y / 3) % 2 == 0 { 200 } else { 50 };
            image::Rgb([v, v, v])
        });
        let dark = RgbImage::from_pixel(320, 180, image::Rgb([3, 3, 3]));
        let flat = RgbImage::from_pixel(320, 180, image::Rgb([120, 120, 120]));
        assert!(quality(&sharp).0 > quality(&flat).0);
        assert!(quality(&flat).0 > quality(&dark).0);
        assert!(quality(&sharp).1 > quality(&flat).1);
    }

    #[test]
    fn i420_grey_converts_to_grey() {
        let (w, h) = (4u32, 2u32);
        let y = vec![126u8; 8];
        let u = vec![128u8; 2];
        let v = vec![128u8; 2];
        let rgb = i420_to_rgb(&y, &u, &v, [4, 2, 2], w, h).unwrap();
        assert!(
            rgb.pixels()
                .all(|p| p[0] == p[1] && p[1] == p[2] && p[0] == 128),
            "{:?}",
            rgb.get_pixel(0, 0)
        );
        assert!(i420_to_rgb(&y[..3], &u, &v, [4, 2, 2], w, h).is_err());
    }
}
