// A photo → the classifier's input, exactly the steps of `tinycats predict`
// (tinycats.data.images.decode_image, then the evaluation's central crop):
//   1. the central square of the photo, resized to stored_size (PIL ImageOps.fit);
//   2. its central `crop` fraction (tinycats.data.dataset.central_box), resized to image_size;
//   3. RGB / 255, minus the ImageNet mean, over its std, as NCHW float32.
import { pyRound } from './common.mjs';

function canvas(size) {
  const c = new OffscreenCanvas(size, size);
  const ctx = c.getContext('2d', { willReadFrequently: true });
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  return [c, ctx];
}

export async function prepareImage(blob, pre) {
  // EXIF orientation is ignored, as PIL's decode in predict ignores it.
  const bitmap = await createImageBitmap(blob, { imageOrientation: 'none' });
  const { width, height } = bitmap;
  const side = Math.min(width, height);
  const [stored, storedCtx] = canvas(pre.stored_size);
  storedCtx.drawImage(
    bitmap, (width - side) / 2, (height - side) / 2, side, side, 0, 0, pre.stored_size, pre.stored_size,
  );
  bitmap.close();
  const cropSide = Math.max(1, pyRound(pre.stored_size * pre.crop));
  const offset = Math.floor((pre.stored_size - cropSide) / 2);
  const size = pre.image_size;
  const [, ctx] = canvas(size);
  ctx.drawImage(stored, offset, offset, cropSide, cropSide, 0, 0, size, size);
  const rgba = ctx.getImageData(0, 0, size, size).data;
  const plane = size * size;
  const input = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      input[c * plane + i] = (rgba[4 * i + c] / 255 - pre.mean[c]) / pre.std[c];
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
