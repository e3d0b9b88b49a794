// What both pages (and the generator's worker) share: onnxruntime-web loaded from the
// site's own vendor/ folder (no CDN), the model manifest, and sessions on WebGPU where
// the browser has it, WebAssembly otherwise.
import * as ort from './vendor/ort.min.mjs';

export { ort };

ort.env.wasm.wasmPaths = new URL('./vendor/', import.meta.url).href;
// A static host sends no cross-origin isolation headers, so there is no SharedArrayBuffer
// for wasm threads: ask for one thread instead of letting ort warn and fall back.
ort.env.wasm.numThreads = 1;

// A page's state (data-state on <body>: loading, ready, busy, done, error), which the
// tests wait on, and the line the user reads.
export function show(state, message) {
  document.body.dataset.state = state;
  document.getElementById('status').textContent = message;
}

export async function loadManifest() {
  const response = await fetch(new URL('./models/manifest.json', import.meta.url));
  if (!response.ok) throw new Error(`models/manifest.json: HTTP ${response.status}`);
  return response.json();
}

export async function createSession(url, { preferWebGpu }) {
  if (preferWebGpu && typeof navigator !== 'undefined' && navigator.gpu) {
    const adapter = await navigator.gpu.requestAdapter().catch(() => null);
    if (adapter) {
      try {
        const session = await ort.InferenceSession.create(url, { executionProviders: ['webgpu'] });
        return { session, backend: 'webgpu' };
      } catch (err) {
        // An adapter without the features ort needs: WebAssembly works everywhere.
      }
    }
  }
  const session = await ort.InferenceSession.create(url, { executionProviders: ['wasm'] });
  return { session, backend: 'wasm' };
}

export function softmax(logits) {
  const max = Math.max(...logits);
  const exps = logits.map((v) => Math.exp(v - max));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / total);
}
