// The two resizes of `tinycats predict`, to the pixel, on RGBA pixels: a canvas's
// smoothing is the browser's own filter, and on real photos it moved a weak model's
// probabilities enough to swap close breeds. Both are separable convolutions in fixed
// point, one pass per axis with a uint8 image in between:
//   - PIL's Image.resize (ImageOps.fit's bicubic, a = -0.5; Pillow's src/libImaging/Resample.c):
//     22-bit weights;
//   - torch's uint8 bilinear with antialias (aten/src/ATen/native/cpu/UpSampleKernel.cpp):
//     the same weights, in int16 at the largest precision the largest weight allows,
//     horizontal pass first.

const FILTERS = {
  bicubic: {
    support: 2.0,
    weight(x) {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
      if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
      return 0.0;
    },
  },
  bilinear: {
    support: 1.0,
    weight(x) {
      x = Math.abs(x);
      return x < 1.0 ? 1.0 - x : 0.0;
    },
  },
};

// Python's round(): halves go to the even neighbour (the crop box must match predict's).
export function pyRound(x) {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

// C's (int) cast: toward zero.
const trunc = Math.trunc;

// Per output index: the first input index, the count, and the normalised float weights
// (Resample.c precompute_coeffs; torch computes the same for align_corners=False).
function coefficients(inSize, in0, in1, outSize, filter) {
  const scale = (in1 - in0) / outSize;
  const filterScale = Math.max(scale, 1.0);
  const support = filter.support * filterScale;
  const taps = [];
  for (let i = 0; i < outSize; i++) {
    const center = in0 + (i + 0.5) * scale;
    const first = Math.max(trunc(center - support + 0.5), 0);
    const count = Math.min(trunc(center + support + 0.5), inSize) - first;
    const weights = new Float64Array(count);
    let total = 0;
    for (let j = 0; j < count; j++) {
      weights[j] = filter.weight((j + first - center + 0.5) / filterScale);
      total += weights[j];
    }
    if (total !== 0) for (let j = 0; j < count; j++) weights[j] /= total;
    taps.push({ first, count, weights });
  }
  return taps;
}

// Float weights → integers at `bits` of precision, rounded half away from zero.
function fixed(taps, bits) {
  const one = 2 ** bits;
  return taps.map(({ first, count, weights }) => ({
    first,
    count,
    weights: Int32Array.from(weights, (w) => (w < 0 ? trunc(-0.5 + w * one) : trunc(0.5 + w * one))),
  }));
}

// torch: the largest precision (< 15 bits) at which the largest weight still fits int16.
function torchBits(taps) {
  let largest = 0;
  for (const { weights } of taps) for (const w of weights) largest = Math.max(largest, w);
  let bits = 0;
  while (bits < 15 && trunc(0.5 + largest * 2 ** (bits + 1)) < 2 ** 15) bits += 1;
  return bits;
}

function clip8(sum, bits) {
  if (sum <= 0) return 0;
  const value = Math.floor(sum / 2 ** bits);
  return value > 255 ? 255 : value;
}

// One separable pass along x (horizontal) or y, RGBA in and out, rows [row0, row0 + rows).
// Along x: rows [offset, offset + count) of an RGBA image `width` wide, each resized to
// taps.length pixels.
function horizontalPass(src, width, taps, bits, offset, count) {
  const outWidth = taps.length;
  const out = new Uint8ClampedArray(outWidth * count * 4);
  const half = 2 ** (bits - 1);
  for (let y = 0; y < count; y++) {
    for (let x = 0; x < outWidth; x++) {
      const { first, count: n, weights } = taps[x];
      for (let c = 0; c < 4; c++) {
        let sum = half;
        for (let j = 0; j < n; j++) sum += src[((offset + y) * width + first + j) * 4 + c] * weights[j];
        out[(y * outWidth + x) * 4 + c] = clip8(sum, bits);
      }
    }
  }
  return out;
}

// Along y: columns [offset, offset + count) of an RGBA image `width` wide, each resized to
// taps.length pixels.
function verticalPass(src, width, taps, bits, offset, count) {
  const out = new Uint8ClampedArray(count * taps.length * 4);
  const half = 2 ** (bits - 1);
  for (let y = 0; y < taps.length; y++) {
    const { first, count: n, weights } = taps[y];
    for (let x = 0; x < count; x++) {
      for (let c = 0; c < 4; c++) {
        let sum = half;
        for (let j = 0; j < n; j++) sum += src[((first + j) * width + offset + x) * 4 + c] * weights[j];
        out[(y * count + x) * 4 + c] = clip8(sum, bits);
      }
    }
  }
  return out;
}

// The input span [first, last) that taps read, and the taps relative to its start.
function span(taps) {
  const first = taps[0].first;
  const last = taps[taps.length - 1].first + taps[taps.length - 1].count;
  return [first, last, taps.map((t) => ({ ...t, first: t.first - first }))];
}

// PIL's image.resize((out, out), BICUBIC, box=(x0, y0, x1, y1)) of an RGBA image: each
// pass reads only the span of the input that the other needs. Pillow 13 resizes
// vertically first when the height shrinks much more than the width
// (python-pillow/Pillow#9549; the condition below reproduced its output on 180 random
// sizes), horizontally first otherwise, as every earlier Pillow always does.
export function pilResize(src, width, height, box, outSize) {
  const [x0, y0, x1, y1] = box;
  const bits = 22;
  const horizontal = outSize !== width || x0 !== 0 || x1 !== outSize;
  const vertical = outSize !== height || y0 !== 0 || y1 !== outSize;
  const rowTaps = fixed(coefficients(height, y0, y1, outSize, FILTERS.bicubic), bits);
  const colTaps = fixed(coefficients(width, x0, x1, outSize, FILTERS.bicubic), bits);
  if (horizontal && vertical && outSize < height && height - outSize > 2 * (width - outSize)) {
    const [first, last, shifted] = span(colTaps);
    const columns = verticalPass(src, width, rowTaps, bits, first, last - first);
    return horizontalPass(columns, last - first, shifted, bits, 0, outSize);
  }
  if (!horizontal) return vertical ? verticalPass(src, width, rowTaps, bits, 0, width) : src.slice();
  const [first, last, shifted] = span(rowTaps);
  const rows = horizontalPass(src, width, colTaps, bits, first, last - first);
  return vertical ? verticalPass(rows, outSize, shifted, bits, 0, outSize) : rows;
}

// torch's F.interpolate(crop, (out, out), mode="bilinear", antialias=True) of a uint8
// crop (top, left, side) of an RGBA image `width` wide.
export function torchResize(src, width, top, left, side, outSize) {
  const crop = new Uint8ClampedArray(side * side * 4);
  for (let y = 0; y < side; y++) {
    const start = ((top + y) * width + left) * 4;
    crop.set(src.subarray(start, start + side * 4), y * side * 4);
  }
  if (side === outSize) return crop;
  const taps = coefficients(side, 0, side, outSize, FILTERS.bilinear);
  const bits = torchBits(taps);
  const weights = fixed(taps, bits);
  const rows = horizontalPass(crop, side, weights, bits, 0, side);
  return verticalPass(rows, outSize, weights, bits, 0, outSize);
}

// `tinycats predict`'s pixels (tinycats.data.images.decode_image, then the evaluation's
// central crop) from the decoded RGBA pixels: the central square resized to stored_size
// (ImageOps.fit: its box is fractional, as PIL computes it), then the central `crop`
// fraction of that (tinycats.data.dataset.central_box) resized to image_size.
export function predictPixels(rgba, width, height, storedSize, crop, imageSize) {
  const side = Math.min(width, height);
  const left = (width - side) / 2;
  const top = (height - side) / 2;
  const stored = pilResize(rgba, width, height, [left, top, left + side, top + side], storedSize);
  const cropSide = Math.max(1, pyRound(storedSize * crop));
  const offset = Math.floor((storedSize - cropSide) / 2);
  return torchResize(stored, storedSize, offset, offset, cropSide, imageSize);
}
