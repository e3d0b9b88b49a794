// The generator runs here, off the page's thread: the page stays responsive while the
// network is called 2 × steps times. Messages: init → ready, generate → progress… → done.
import { createSession, ort } from './common.mjs';
import { sample } from './flow.mjs';
import { portableNormal } from './noise.mjs';

let session;
let meta;

async function network(x, t, labels) {
  const batch = labels.length;
  const [c, h, w] = meta.image_shape;
  const feeds = {
    x: new ort.Tensor('float32', x, [batch, c, h, w]),
    t: new ort.Tensor('float32', new Float32Array(batch).fill(t), [batch]),
    y: new ort.Tensor('int64', BigInt64Array.from(labels, (v) => BigInt(v)), [batch]),
  };
  const output = await session.run(feeds);
  return output.prediction.data;
}

self.onmessage = async ({ data: message }) => {
  try {
    if (message.type === 'init') {
      meta = message.meta;
      const created = await createSession(message.url, { preferWebGpu: true });
      session = created.session;
      self.postMessage({ type: 'ready', backend: created.backend });
    } else if (message.type === 'generate') {
      const { label, n, steps, cfg, seed } = message;
      const [c, h, w] = meta.image_shape;
      const started = performance.now();
      const images = await sample(network, {
        noise: portableNormal(seed, n * c * h * w),
        labels: Array(n).fill(label),
        cfg,
        steps,
        sampler: meta.generation.sampler,
        nullClass: meta.null_class,
        prediction: meta.prediction,
        noiseScale: meta.noise_scale,
        minOneMinusT: meta.min_one_minus_t,
        onStep: (step) => self.postMessage({ type: 'progress', step, steps }),
      });
      const ms = performance.now() - started;
      self.postMessage({ type: 'done', images, n, shape: meta.image_shape, ms }, [images.buffer]);
    }
  } catch (err) {
    self.postMessage({ type: 'error', message: String((err && err.message) || err) });
  }
};
