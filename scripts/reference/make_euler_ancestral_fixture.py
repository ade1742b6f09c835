#!/usr/bin/python3
"""Euler ancestral step fixture: diffusers' own EulerAncestralDiscreteScheduler on Debian's torch (python3-torch
1.13, CPU, float32), with the same reference tools as `../shared/reference/` (tools/shim.py makes the diffusers
source import on torch 1.13, tools/st.py writes safetensors). diffusers is NOT part of this project: check out a
snapshot of huggingface/diffusers outside the tree and point DIFFUSERS_SRC at its src/ folder, e.g.

    mkdir -p /tmp/diffusers_src && git --git-dir=<mirror of huggingface/diffusers> archive HEAD src | tar -x -C /tmp/diffusers_src
    DIFFUSERS_SRC=/tmp/diffusers_src/src /usr/bin/python3 scripts/reference/make_euler_ancestral_fixture.py \
        gpu-worker/schedulers/fixtures/euler_ancestral

(REFERENCE_TOOLS overrides where shim.py and st.py are read from; default ../shared/reference/tools.) Besides
python3-torch, diffusers' utils import needs Debian's python3-packaging, python3-filelock and python3-tqdm
(apt-get install -y python3-packaging python3-filelock python3-tqdm python3-importlib-metadata).

The sampler draws fresh noise on every step; here the noise of each step is drawn beforehand from a seeded torch
generator and handed to diffusers' step (its `randn_tensor` replaced by one returning that tensor, shape checked),
and stored, so that our sampler can be fed the very same noise. Layout as `../shared/reference/schedulers/`
(`deno task parity` reads it): config.json keyed `euler_a.<prediction>` (SD 1.5's schedule; epsilon and
v_prediction); io.safetensors: `euler_a.<prediction>.timesteps` (int64, truncated as in the Euler fixture;
10 steps), `.init`, and per step i `.noise.i` (the step's noise), `.scaled_input.i` and `.prev.i` given
`model_output.i` [1, 4, 8, 8].
"""
import json, os, sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.environ.get('REFERENCE_TOOLS', os.path.join(ROOT, '..', 'shared', 'reference', 'tools'))
if not os.path.isfile(os.path.join(TOOLS, 'shim.py')):
    raise SystemExit(f'no shim.py in {TOOLS}: set REFERENCE_TOOLS to the reference tools/ folder')
sys.path.insert(0, TOOLS)
import shim  # noqa: F401,E402  (diffusers on torch 1.13; needs DIFFUSERS_SRC)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import st  # noqa: E402
import diffusers.schedulers.scheduling_euler_ancestral_discrete as ea  # noqa: E402

SD15 = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear', steps_offset=1)
STEPS = 10
SHAPE = (1, 4, 8, 8)


def main(out):
    gen = torch.Generator().manual_seed(2024)
    chain = [torch.randn(*SHAPE, generator=gen) for _ in range(STEPS)]
    io = {f'model_output.{i}': c.numpy() for i, c in enumerate(chain)}
    cfgs = {}
    queued = []

    def given_noise(shape, generator=None, device=None, dtype=None, layout=None):
        noise = queued.pop(0)
        assert tuple(shape) == tuple(noise.shape), (shape, noise.shape)
        return noise.to(dtype=dtype or noise.dtype)

    ea.randn_tensor = given_noise
    for k, pred in enumerate(['epsilon', 'v_prediction']):
        s = ea.EulerAncestralDiscreteScheduler(**SD15, prediction_type=pred)
        s.set_timesteps(STEPS)
        key = f'euler_a.{pred}'
        cfgs[key] = {n: (list(v) if isinstance(v, tuple) else v) for n, v in dict(s.config).items() if not n.startswith('_')}
        x = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(7)) * s.init_noise_sigma
        io[key + '.timesteps'] = s.timesteps.to(torch.int64).numpy()
        io[key + '.init'] = x.numpy()
        noise_gen = torch.Generator().manual_seed(100 + k)
        for i, t in enumerate(s.timesteps):
            noise = torch.randn(*SHAPE, generator=noise_gen)
            queued.append(noise)
            xin = s.scale_model_input(x, t)
            x = s.step(chain[i], t, x).prev_sample
            assert not queued, 'step did not draw its noise'
            io[f'{key}.noise.{i}'] = noise.numpy()
            io[f'{key}.scaled_input.{i}'] = xin.numpy()
            io[f'{key}.prev.{i}'] = x.numpy()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'config.json'), 'w') as f:
        json.dump(cfgs, f, indent=2, default=str)
        f.write('\n')
    st.save(os.path.join(out, 'io.safetensors'), {n: np.asarray(v) for n, v in io.items()})
    print(out, len(io), 'arrays')


if __name__ == '__main__':
    if len(sys.argv) != 2:
        raise SystemExit('usage: make_euler_ancestral_fixture.py OUTDIR')
    main(sys.argv[1])
