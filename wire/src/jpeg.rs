//! The one thing hexroad reads from a JPEG before decoding it: the picture's
//! size, from its start-of-frame marker, so a decoder is never asked to
//! allocate for a picture larger than the limits.

/// Width and height from a JPEG's start-of-frame marker, checking structure.
pub fn dimensions(data: &[u8]) -> Result<(u16, u16), String> {
    if data.len() < 4 || data[0..2] != [0xFF, 0xD8] {
        return Err("not a JPEG (no start-of-image marker)".into());
    }
    let mut i = 2;
    while i + 4 <= data.len() {
        if data[i] != 0xFF {
            return Err(format!("corrupt JPEG: expected a marker at byte {i}"));
        }
        let marker = data[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]]));
        if len < 2 || i + 2 + len > data.len() {
            return Err("corrupt JPEG: a segment runs past the end (truncated?)".into());
        }
        // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
        if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
            if len < 7 {
                return Err("corrupt JPEG: short frame header".into());
            }
            let h = u16::from_be_bytes([data[i + 5], data[i + 6]]);
            let w = u16::from_be_bytes([data[i + 7], data[i + 8]]);
            if w == 0 || h == 0 {
                return Err("JPEG has zero width or height".into());
            }
            if !data.ends_with(&[0xFF, 0xD9]) {
                return Err("JPEG is truncated (no end-of-image marker)".into());
            }
            return Ok((w, h));
        }
        i += 2 + len;
    }
    Err("corrupt JPEG: no frame header".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_jpeg_is_refused() {
        assert!(dimensions(&[0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x40]).is_err());
        assert!(dimensions(b"GIF89a").is_err());
    }

    proptest::proptest! {
        /// No bytes make the JPEG header reader panic or read out of bounds.
        #[test]
        fn jpeg_header_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = dimensions(&bytes);
        }

        /// Even when the bytes start like a JPEG.
        #[test]
        fn jpeg_header_after_a_start_marker_never_panics(
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
        ) {
            let mut bytes = vec![0xFF, 0xD8, 0xFF];
            bytes.extend(tail);
            let _ = dimensions(&bytes);
        }
    }
}
