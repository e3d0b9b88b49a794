// Portable Gaussian noise: the same numbers from a seed in the browser and in Python
// (tinycats.deploy.noise.portable_normal), so a seed draws the same cats in both.
// Each value comes from two 32-bit hashes of its index (Box-Muller), computed in doubles.

function lowbias32(x) {
  // Chris Wellons' lowbias32 integer hash (a bijection on 32-bit integers).
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

export function portableNormal(seed, count) {
  const key = lowbias32((seed ^ 0x9e3779b9) >>> 0);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    const a = lowbias32((lowbias32((2 * i) >>> 0) ^ key) >>> 0);
    const b = lowbias32((lowbias32((2 * i + 1) >>> 0) ^ key) >>> 0);
    const u1 = (a + 1) / 4294967296; // (0, 1]
    const u2 = b / 4294967296; // [0, 1)
    out[i] = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }
  return out;
}
