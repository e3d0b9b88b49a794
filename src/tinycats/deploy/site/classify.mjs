// The classify page: a photo in (file picker or drag-and-drop), the top-3 breeds out.
import { createSession, loadManifest, ort, show, softmax } from './common.mjs';
import { mirrored, prepareImage } from './preprocess.mjs';

const results = document.getElementById('results');
const preview = document.getElementById('preview');
const picker = document.getElementById('picker');
const drop = document.getElementById('drop');

const manifest = await loadManifest();
const model = manifest.classifier;
const pre = model.preprocessing;
if (manifest.dit) document.getElementById('nav-generate').hidden = false;
document.getElementById('model').textContent =
  `${model.classes.length} breeds · run ${model.run_id}, step ${model.step} · ` +
  `${pre.image_size} px, central ${Math.round(pre.crop * 100)}%` +
  (pre.hflip_tta ? ', averaged with its mirror' : '');
const { session, backend } = await createSession(new URL(`./models/${model.file}`, import.meta.url).href, {
  preferWebGpu: false, // a single small batch: WebAssembly answers as fast, with no set-up
});
show('ready', `Ready (${backend}). Choose or drop a photo.`);

async function classify(file) {
  show('busy', `Reading ${file.name}…`);
  results.replaceChildren();
  let input;
  try {
    input = await prepareImage(file, pre);
  } catch (err) {
    show('error', `Cannot read ${file.name} as an image; choose a JPEG, PNG or WebP.`);
    return;
  }
  preview.src = URL.createObjectURL(file);
  const size = pre.image_size;
  const started = performance.now();
  const batch = pre.hflip_tta ? 2 : 1;
  const data = new Float32Array(batch * input.length);
  data.set(input);
  if (pre.hflip_tta) data.set(mirrored(input, size), input.length);
  const output = await session.run({ images: new ort.Tensor('float32', data, [batch, 3, size, size]) });
  const logits = Array.from(output.logits.data);
  const k = model.classes.length;
  const mean = logits.slice(0, k).map((v, i) => (batch === 2 ? (v + logits[k + i]) / 2 : v));
  const probabilities = softmax(mean);
  const ranked = probabilities
    .map((p, i) => ({ breed: model.classes[i], probability: p }))
    .sort((a, b) => b.probability - a.probability)
    .slice(0, 3);
  const ms = performance.now() - started;
  for (const { breed, probability } of ranked) {
    const item = document.createElement('li');
    const bar = document.createElement('span');
    bar.className = 'bar';
    bar.style.width = `${(100 * probability).toFixed(1)}%`;
    item.append(`${breed.replaceAll('_', ' ')} `, bar, ` ${(100 * probability).toFixed(1)}%`);
    results.append(item);
  }
  results.dataset.top = JSON.stringify(ranked);
  results.dataset.ms = ms.toFixed(2);
  show('done', `${file.name}: ${ranked[0].breed.replaceAll('_', ' ')} (${ms.toFixed(0)} ms, ${backend})`);
}

picker.addEventListener('change', () => picker.files[0] && classify(picker.files[0]));
for (const name of ['dragenter', 'dragover']) {
  drop.addEventListener(name, (event) => {
    event.preventDefault();
    drop.classList.add('over');
  });
}
for (const name of ['dragleave', 'drop']) drop.addEventListener(name, () => drop.classList.remove('over'));
drop.addEventListener('drop', (event) => {
  event.preventDefault();
  const file = event.dataTransfer.files[0];
  if (file) classify(file);
});
