// The sampling loop of tinycats.models.flow, in JavaScript: integrate dx/dt = v(x, t) from
// noise at t = 0 to an image at t = 1, with classifier-free guidance applied once per
// evaluation, on the velocities of one batched network call (conditional and null-class
// halves). Kept line for line beside flow.py (velocity_from_prediction, guided_velocity,
// integrate, sample_from_noise); the tests compare the two on the same noise.

// The network's output → the velocity it stands for (flow.velocity_from_prediction):
// "v" is the velocity; "x" is the clean image x̂, and v = (x̂ - x_t) / max(1 - t, clip).
export function toVelocity(prediction, kind, x, t, minOneMinusT) {
  if (kind === 'v') return prediction;
  if (kind !== 'x') throw new Error(`unknown prediction '${kind}'; this demo knows x and v`);
  const scale = Math.fround(Math.max(Math.fround(1 - t), minOneMinusT));
  const v = new Float32Array(prediction.length);
  for (let i = 0; i < v.length; i++) v[i] = (prediction[i] - x[i]) / scale;
  return v;
}

// torch.linspace(0, 1, steps + 1) in float32.
function times(steps) {
  return Float32Array.from({ length: steps + 1 }, (_, i) => i / steps);
}

export async function sample(network, options) {
  const { noise, labels, cfg, steps, sampler, onStep } = options;
  const { nullClass, prediction, noiseScale, minOneMinusT } = options;
  const both = labels.concat(labels.map(() => nullClass));

  async function velocity(x, t) {
    if (cfg === 1) {
      return toVelocity(await network(x, t, labels), prediction, x, t, minOneMinusT);
    }
    const doubled = new Float32Array(2 * x.length);
    doubled.set(x);
    doubled.set(x, x.length);
    const out = toVelocity(await network(doubled, t, both), prediction, doubled, t, minOneMinusT);
    const cond = out.subarray(0, x.length);
    const uncond = out.subarray(x.length);
    const v = new Float32Array(x.length);
    for (let i = 0; i < v.length; i++) v[i] = uncond[i] + cfg * (cond[i] - uncond[i]);
    return v;
  }

  const grid = times(steps);
  let x = noise.map((value) => noiseScale * value);
  for (let i = 0; i < steps; i++) {
    const dt = Math.fround(grid[i + 1] - grid[i]);
    const v = await velocity(x, grid[i]);
    if (sampler === 'euler' || i === steps - 1) {
      // Heun's last step is Euler too: its corrector would evaluate t = 1 (flow.integrate).
      x = x.map((value, j) => value + dt * v[j]);
    } else {
      const predicted = x.map((value, j) => value + dt * v[j]);
      const vNext = await velocity(predicted, grid[i + 1]);
      x = x.map((value, j) => value + dt * 0.5 * (v[j] + vNext[j]));
    }
    if (onStep) onStep(i + 1, steps);
  }
  return x.map((value) => Math.min(1, Math.max(-1, value)));
}
