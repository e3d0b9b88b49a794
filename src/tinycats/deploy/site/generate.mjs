// The generate page: cats of a chosen breed from a seed, drawn by the worker.
import { loadManifest, show } from './common.mjs';

const form = document.getElementById('form');
const progress = document.getElementById('progress');
const grid = document.getElementById('grid');

const manifest = await loadManifest();
const model = manifest.dit;
if (!model) {
  show('error', 'This site was exported without a generator (tinycats export web RUN --dit DIT_RUN).');
  throw new Error('no generator in models/manifest.json');
}
for (const [index, name] of model.classes.entries()) {
  form.breed.add(new Option(name.replaceAll('_', ' '), String(index)));
}
form.steps.value = model.generation.sample_steps;
form.cfg.value = model.generation.cfg_scale;
document.getElementById('model').textContent =
  `TinyDiT, ${model.image_shape[1]} px · run ${model.run_id}, step ${model.step} · ` +
  `predicts ${model.prediction === 'x' ? 'the clean image' : 'the velocity'} · ${model.generation.sampler}`;

const worker = new Worker(new URL('./dit-worker.mjs', import.meta.url), { type: 'module' });
let backend = '…';

function draw(images, n, [c, h, w]) {
  grid.replaceChildren();
  const plane = h * w;
  for (let k = 0; k < n; k++) {
    const canvas = document.createElement('canvas');
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext('2d');
    const pixels = ctx.createImageData(w, h);
    for (let i = 0; i < plane; i++) {
      for (let ch = 0; ch < 3; ch++) {
        pixels.data[4 * i + ch] = Math.round((images[k * c * plane + ch * plane + i] + 1) * 127.5);
      }
      pixels.data[4 * i + 3] = 255;
    }
    ctx.putImageData(pixels, 0, 0);
    grid.append(canvas);
  }
}

worker.onmessage = ({ data: message }) => {
  if (message.type === 'ready') {
    backend = message.backend;
    form.go.disabled = false;
    show('ready', `Ready (${backend}). Pick a breed and press Generate.`);
  } else if (message.type === 'progress') {
    progress.value = message.step / message.steps;
  } else if (message.type === 'done') {
    draw(message.images, message.n, message.shape);
    window.tinycatsLast = {
      images: Array.from(message.images), n: message.n, shape: message.shape, backend, ms: message.ms,
    };
    form.go.disabled = false;
    show('done', `${message.n} samples in ${(message.ms / 1000).toFixed(1)} s (${backend}).`);
  } else if (message.type === 'error') {
    form.go.disabled = false;
    show('error', `The generator failed: ${message.message}`);
  }
};
worker.postMessage({ type: 'init', url: new URL(`./models/${model.file}`, import.meta.url).href, meta: model });

form.addEventListener('submit', (event) => {
  event.preventDefault();
  const steps = Number(form.steps.value);
  const n = Number(form.n.value);
  const seed = Number(form.seed.value);
  const cfg = Number(form.cfg.value);
  if (!(steps >= 1 && steps <= 500 && n >= 1 && n <= 16 && seed >= 0 && Number.isInteger(seed) && cfg >= 0)) {
    show('error', 'Steps 1–500, samples 1–16, a whole seed ≥ 0 and guidance ≥ 0, please.');
    return;
  }
  form.go.disabled = true;
  progress.value = 0;
  show('busy', `Drawing ${n} × ${form.breed.selectedOptions[0].text} (${backend})…`);
  worker.postMessage({ type: 'generate', label: Number(form.breed.value), n, steps, cfg, seed });
});
