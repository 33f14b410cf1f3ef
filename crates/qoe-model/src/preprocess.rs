// SPDX-License-Identifier: MPL-2.0
//! Pixel preprocessing for model bundles, free of GStreamer types: Pillow's bicubic resize,
//! reproduced to the byte, and the normalisation into planar float tensors.
//!
//! The VQA² reference squashes every frame with `PIL.Image.resize((s, s), BICUBIC)` (spec
//! section 3). Pillow resizes in two separable passes (horizontal, then vertical) with a
//! bicubic kernel (a = −0.5) whose support widens by the scale factor when shrinking
//! (antialiasing), fixed-point coefficients with 22 fractional bits, and an 8-bit
//! intermediate image. This module follows `libImaging/Resample.c` step for step, so its output
//! equals Pillow's exactly (checked against `tests/fixtures/golden/pillow`).

/// An 8-bit RGB picture, rows of `width * 3` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

const PRECISION_BITS: u32 = 32 - 8 - 2;
const BICUBIC_SUPPORT: f64 = 2.0;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output pixel: the first input pixel, how many are used, and their fixed-point weights
/// (`ksize` slots each). Pillow's `precompute_coeffs` and `normalize_coeffs_8bpc`.
struct Coefficients {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

fn coefficients(in_size: usize, out_size: usize) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = BICUBIC_SUPPORT * filter_scale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filter_scale;
        // C's (int) truncates toward zero; negative starts are clamped to 0 anyway.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut total = 0.0;
        for (x, slot) in k.iter_mut().enumerate().take(xmax) {
            let w = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
            *slot = w;
            total += w;
        }
        for (x, w) in k.iter().enumerate().take(xmax) {
            let w = if total != 0.0 { w / total } else { *w };
            let fixed = w * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if w < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    Coefficients {
        ksize,
        bounds,
        weights,
    }
}

fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Pillow's `Image.resize((width, height), Image.BICUBIC)` of an RGB image.
pub fn resize_bicubic(src: &RgbImage, width: usize, height: usize) -> RgbImage {
    // The same loops compiled for AVX2 where the CPU has it: its 8-lane 32-bit multiply is
    // what the dot products need (the x86-64 baseline, SSE2, has none).
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { resize_bicubic_avx2(src, width, height) };
    }
    resize_bicubic_loops(src, width, height)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn resize_bicubic_avx2(src: &RgbImage, width: usize, height: usize) -> RgbImage {
    resize_bicubic_loops(src, width, height)
}

#[inline(always)]
fn resize_bicubic_loops(src: &RgbImage, width: usize, height: usize) -> RgbImage {
    assert!(width > 0 && height > 0, "resize to an empty picture");
    assert_eq!(
        src.data.len(),
        src.width * src.height * 3,
        "RGB buffer size"
    );
    let round = 1i32 << (PRECISION_BITS - 1);
    let horizontal = coefficients(src.width, width);
    let vertical = coefficients(src.height, height);
    let need_horizontal = width != src.width;
    let need_vertical = height != src.height;

    // Only the rows the vertical pass reads are resized horizontally.
    let (first_row, last_row) = if need_vertical {
        let (start, _) = vertical.bounds[0];
        let (last_start, last_len) = vertical.bounds[height - 1];
        (start, last_start + last_len)
    } else {
        (0, src.height)
    };
    // The sums are exact integers, so any order of adding gives Pillow's result. Each input
    // row is split into its three channel planes first, so that every output value is a dot
    // product of contiguous bytes and weights, which the compiler vectorises (the vertical
    // pass adds whole rows at a time for the same reason).
    let mut temp;
    let (mid, mid_rows_offset) = if need_horizontal {
        let rows = last_row - first_row;
        temp = vec![0u8; width * rows * 3];
        let mut planes = vec![0u8; src.width * 3];
        for (y, out) in temp.chunks_exact_mut(width * 3).enumerate() {
            let row = &src.data[(y + first_row) * src.width * 3..][..src.width * 3];
            let (r_plane, rest) = planes.split_at_mut(src.width);
            let (g_plane, b_plane) = rest.split_at_mut(src.width);
            for (((px, r), g), b) in row
                .chunks_exact(3)
                .zip(r_plane.iter_mut())
                .zip(g_plane.iter_mut())
                .zip(b_plane.iter_mut())
            {
                (*r, *g, *b) = (px[0], px[1], px[2]);
            }
            for ((&(xmin, xmax), k), pixel) in horizontal
                .bounds
                .iter()
                .zip(horizontal.weights.chunks_exact(horizontal.ksize))
                .zip(out.chunks_exact_mut(3))
            {
                let k = &k[..xmax];
                let dot = |plane: &[u8]| {
                    plane[xmin..xmin + xmax]
                        .iter()
                        .zip(k)
                        .fold(round, |sum, (&v, &w)| sum + v as i32 * w)
                };
                pixel.copy_from_slice(&[
                    clip8(dot(r_plane)),
                    clip8(dot(g_plane)),
                    clip8(dot(b_plane)),
                ]);
            }
        }
        (&temp[..], first_row)
    } else {
        (&src.data[..], 0)
    };
    if !need_vertical {
        return RgbImage {
            width,
            height,
            data: mid.to_vec(),
        };
    }
    let mut data = vec![0u8; width * height * 3];
    let mut sums = vec![0i32; width * 3];
    for ((&(ymin, ymax), k), out) in vertical
        .bounds
        .iter()
        .zip(vertical.weights.chunks_exact(vertical.ksize))
        .zip(data.chunks_exact_mut(width * 3))
    {
        sums.fill(round);
        let rows = mid[(ymin - mid_rows_offset) * width * 3..].chunks_exact(width * 3);
        for (row, &w) in rows.zip(&k[..ymax]) {
            for (sum, &v) in sums.iter_mut().zip(row) {
                *sum += v as i32 * w;
            }
        }
        for (value, &sum) in out.iter_mut().zip(&sums) {
            *value = clip8(sum);
        }
    }
    RgbImage {
        width,
        height,
        data,
    }
}

/// Planar float channels, `(x/255 − mean)/std`, appended to `out` as [3, h, w] (the NCHW
/// layout of one picture), in the same float32 arithmetic as the Python reference.
pub fn normalise_into(image: &RgbImage, mean: [f32; 3], std: [f32; 3], out: &mut Vec<f32>) {
    let plane = image.width * image.height;
    let start = out.len();
    out.resize(start + 3 * plane, 0.0);
    for (i, px) in image.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[start + c * plane + i] = (px[c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn matches_pillow_byte_for_byte() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden/pillow");
        let cases = std::fs::read_to_string(dir.join("cases.json")).unwrap();
        // cases.json: [{"source": "0.src.u8", "source_shape": [h, w, 3], "resized": …, "resized_shape": [h, w, 3]}]
        let mut checked = 0;
        for i in 0.. {
            let src_path = dir.join(format!("{i}.src.u8"));
            if !src_path.exists() {
                break;
            }
            let shape = |key: &str| -> (usize, usize) {
                let entry = cases.split("\"source\"").nth(i + 1).unwrap();
                let dims = entry.split(&format!("\"{key}\": [")).nth(1).unwrap();
                let nums: Vec<usize> = dims
                    .split(']')
                    .next()
                    .unwrap()
                    .split(',')
                    .map(|n| n.trim().parse().unwrap())
                    .collect();
                (nums[0], nums[1])
            };
            let (h, w) = shape("source_shape");
            let (th, tw) = shape("resized_shape");
            let src = RgbImage {
                width: w,
                height: h,
                data: std::fs::read(&src_path).unwrap(),
            };
            let want = std::fs::read(dir.join(format!("{i}.bicubic.u8"))).unwrap();
            let got = resize_bicubic(&src, tw, th);
            assert_eq!((got.width, got.height), (tw, th));
            let differing = got.data.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(
                differing, 0,
                "case {i}: {w}x{h} -> {tw}x{th}: {differing} bytes differ from Pillow"
            );
            checked += 1;
        }
        assert_eq!(checked, 4, "all golden cases present");
    }

    /// Pillow's loops as `libImaging/Resample.c` writes them (one channel and one output value
    /// at a time), the oracle for the faster loops above.
    fn resize_as_pillow_loops(src: &RgbImage, width: usize, height: usize) -> RgbImage {
        let round = 1i32 << (PRECISION_BITS - 1);
        let horizontal = coefficients(src.width, width);
        let mut mid = vec![0u8; width * src.height * 3];
        for y in 0..src.height {
            for (xx, &(xmin, xmax)) in horizontal.bounds.iter().enumerate() {
                for c in 0..3 {
                    let mut ss = round;
                    for x in 0..xmax {
                        ss += src.data[(y * src.width + x + xmin) * 3 + c] as i32
                            * horizontal.weights[xx * horizontal.ksize + x];
                    }
                    mid[(y * width + xx) * 3 + c] = clip8(ss);
                }
            }
        }
        if width == src.width {
            mid.copy_from_slice(&src.data);
        }
        let vertical = coefficients(src.height, height);
        let mut data = vec![0u8; width * height * 3];
        for (yy, &(ymin, ymax)) in vertical.bounds.iter().enumerate() {
            for i in 0..width * 3 {
                let mut ss = round;
                for y in 0..ymax {
                    ss += mid[(y + ymin) * width * 3 + i] as i32
                        * vertical.weights[yy * vertical.ksize + y];
                }
                data[yy * width * 3 + i] = clip8(ss);
            }
        }
        if height == src.height {
            data = mid;
        }
        RgbImage {
            width,
            height,
            data,
        }
    }

    /// The element's real sizes (720p and QCIF to the default bundle's 320×180 and 64×64, up and
    /// down, odd sizes) on noise, which exercises every weight and the clipping at 0 and 255.
    #[test]
    fn equals_pillows_loops_on_every_size_the_element_meets() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 56) as u8
                })
                .collect()
        };
        for ((w, h), (tw, th)) in [
            ((1280, 720), (64, 64)),
            ((1280, 720), (320, 180)),
            ((176, 144), (320, 180)),
            ((176, 144), (64, 64)),
            ((33, 17), (7, 40)),
            ((320, 180), (320, 90)),
            ((320, 180), (100, 180)),
        ] {
            let src = RgbImage {
                width: w,
                height: h,
                data: noise(w * h * 3),
            };
            assert!(
                resize_bicubic(&src, tw, th) == resize_as_pillow_loops(&src, tw, th),
                "{w}x{h} -> {tw}x{th}"
            );
        }
    }

    #[test]
    fn same_size_is_a_copy_and_flat_stays_flat() {
        let src = RgbImage {
            width: 5,
            height: 3,
            data: (0..45).map(|v| v as u8 * 5).collect(),
        };
        assert_eq!(resize_bicubic(&src, 5, 3), src);
        let flat = RgbImage {
            width: 40,
            height: 30,
            data: vec![77; 40 * 30 * 3],
        };
        assert!(
            resize_bicubic(&flat, 384, 384)
                .data
                .iter()
                .all(|v| *v == 77)
        );
        assert!(resize_bicubic(&flat, 7, 5).data.iter().all(|v| *v == 77));
    }

    #[test]
    fn normalisation_is_planar() {
        let img = RgbImage {
            width: 2,
            height: 1,
            data: vec![0, 255, 51, 255, 0, 102],
        };
        let mut out = Vec::new();
        normalise_into(&img, [0.5; 3], [0.5; 3], &mut out);
        assert_eq!(
            out,
            vec![
                -1.0,
                1.0,
                1.0,
                -1.0,
                (51.0f32 / 255.0 - 0.5) / 0.5,
                (102.0f32 / 255.0 - 0.5) / 0.5
            ]
        );
    }
}
