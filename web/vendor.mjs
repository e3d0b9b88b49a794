// Copy the onnxruntime-web files the tinycats demo loads into web/vendor/, with a manifest
// of their sizes and sha256, so `tinycats export web` can copy them into a site that needs
// no CDN. Run after `npm ci`: `npm run vendor`.
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const pkgDir = join(here, 'node_modules', 'onnxruntime-web');
const dist = join(pkgDir, 'dist');
const out = join(here, 'vendor');
// The package's default ES module build (WASM and WebGPU backends) and the WebAssembly
// binary it loads for both (JSEP: JavaScript execution provider for WebGPU kernels).
const FILES = ['ort.min.mjs', 'ort-wasm-simd-threaded.jsep.mjs', 'ort-wasm-simd-threaded.jsep.wasm'];

// The licence (MIT) is stated in each file's header and recorded in vendor.json.
const { version, license } = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const files = {};
for (const name of FILES) {
  copyFileSync(join(dist, name), join(out, name));
  const data = readFileSync(join(out, name));
  files[name] = { bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') };
}
writeFileSync(
  join(out, 'vendor.json'),
  JSON.stringify({ package: 'onnxruntime-web', version, license, files }, null, 2) + '\n',
);
console.log(`vendored onnxruntime-web ${version} into ${out}`);
