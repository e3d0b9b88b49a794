// A photo → the classifier's input, exactly the steps of `tinycats predict`: its pixels
// (resample.mjs: the central square at stored_size, its central crop at image_size, with
// Python's own filters, to the pixel), then RGB / 255, minus the ImageNet mean, over its
// std, as NCHW float32. A JPEG is decoded at full size on both sides (predict does not
// use PIL's reduced-scale `draft` decoding, which a browser cannot repeat), and Chromium's
// full decode is PIL's to the pixel (tests/deploy/test_deploy_web.py).
import { predictPixels } from './resample.mjs';

// The decoded pixels, as they are in the file: no EXIF rotation and no colour profile
// (PIL applies neither), transparency composited onto white (tinycats.data.images.to_rgb).
async function decode(blob) {
  const bitmap = await createImageBitmap(blob, {
    imageOrientation: 'none',
    colorSpaceConversion: 'none',
    premultiplyAlpha: 'none',
  });
  const { width, height } = bitmap;
  const ctx = new OffscreenCanvas(width, height).getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = ctx.getImageData(0, 0, width, height).data;
  for (let i = 0; i < rgba.length; i += 4) {
    const alpha = rgba[i + 3];
    if (alpha === 255) continue;
    for (let c = 0; c < 3; c++) rgba[i + c] = (rgba[i + c] * alpha + 255 * (255 - alpha)) / 255;
    rgba[i + 3] = 255;
  }
  return { rgba, width, height };
}

export async function prepareImage(blob, pre) {
  const { rgba, width, height } = await decode(blob);
  const size = pre.image_size;
  const pixels = predictPixels(rgba, width, height, pre.stored_size, pre.crop, size);
  const plane = size * size;
  const input = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      input[c * plane + i] = (pixels[4 * i + c] / 255 - pre.mean[c]) / pre.std[c];
    }
  }
  return input;
}

// The same image mirrored left-right (for the runs that average logits with the mirror).
export function mirrored(input, size) {
  const out = new Float32Array(input.length);
  for (let row = 0; row < input.length / size; row++) {
    for (let col = 0; col < size; col++) {
      out[row * size + col] = input[row * size + (size - 1 - col)];
    }
  }
  return out;
}
