#!/usr/bin/python3
"""SeeCoder reference numbers, computed by the official Prompt-Free Diffusion modules on Debian's torch
(python3-torch 1.13, CPU, float32). The official code is NOT part of this project: check out a snapshot of
SHI-Labs/Prompt-Free-Diffusion somewhere outside the tree and point SEECODER_SRC at its root, e.g.

    git --git-dir=<mirror> archive HEAD lib configs | tar -x -C /work/tmp_seecoder_src
    SEECODER_SRC=/work/tmp_seecoder_src /usr/bin/python3 scripts/reference/make_seecoder_fixtures.py count
    SEECODER_SRC=/work/tmp_seecoder_src /usr/bin/python3 scripts/reference/make_seecoder_fixtures.py \
        fixtures gpu-worker/models/fixtures/seecoder-tiny

`count` instantiates the official configurations (configs/model/seecoder.yaml: seecoder and seecoder_pa, with
swin_large) and prints their parameter and state-dict counts and a digest of the sorted "name [shape]" lines.
`fixtures` writes one folder for a tiny configuration: config.json (the plain variant), weights.safetensors
(the checkpoint layout: `ctx.image.` + module paths; the PA variant's weights, buffers included; seeded random
values perturbed so that every parameter matters, rounded to and stored as F16), io.safetensors: `image`
[2, 3, 50, 42] -> `embeddings` (plain) and `embeddings_pa`, each image encoded alone as the official app does,
and `*_batched` (both at once: the official decoder then attends across the batch); `image2` [1, 3, 29, 61] ->
`image2_embeddings_pa`, and PyTorch's gradients of sum(out * image2_grad_output) for the tensors listed in
GRAD_CHECKED (`image2_grad.<name>`).

Only the registry of lib/model_zoo/common/get_model.py is replaced (it pulls in torchvision and the training
utilities); seecoder.py and swin.py are imported unchanged.
"""
import hashlib, importlib.util, json, os, struct, sys, types

import numpy as np
import torch

SRC = os.environ.get('SEECODER_SRC')
if not SRC or not os.path.isfile(os.path.join(SRC, 'lib', 'model_zoo', 'seecoder.py')):
    raise SystemExit('set SEECODER_SRC to the root of a Prompt-Free-Diffusion checkout (holding lib/model_zoo/)')

# --- registry shim: `register(name)` records a class, `get_model()(cfg)` builds {'type', 'args'} ---
REGISTRY = {}


def _register(name):
    def deco(cls):
        REGISTRY[name] = cls
        return cls
    return deco


def _get_model():
    return lambda cfg: REGISTRY[cfg['type']](**cfg['args'])


for pkg in ['lib', 'lib.model_zoo', 'lib.model_zoo.common']:
    m = types.ModuleType(pkg)
    m.__path__ = []
    sys.modules[pkg] = m
gm = types.ModuleType('lib.model_zoo.common.get_model')
gm.register, gm.get_model = _register, _get_model
sys.modules[gm.__name__] = gm


def _load(name):
    spec = importlib.util.spec_from_file_location(f'lib.model_zoo.{name}', os.path.join(SRC, 'lib', 'model_zoo', f'{name}.py'))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


swin = _load('swin')
seecoder = _load('seecoder')

# --- configurations (official values from configs/model/seecoder.yaml and swin.yaml) ---
SWIN_LARGE = dict(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12, ape=False,
                  drop_path_rate=0.3, patch_norm=True)
DECODER = dict(inchannels={'res3': 384, 'res4': 768, 'res5': 1536}, trans_input_tags=['res3', 'res4', 'res5'],
               trans_dim=768, trans_dropout=0.1, trans_nheads=8, trans_feedforward_dim=1024, trans_num_layers=6)
QT = dict(in_channels=768, hidden_dim=768, num_queries=[4, 144], nheads=8, num_layers=9, feedforward_dim=2048,
          pre_norm=False, num_feature_levels=3, enforce_input_project=False, with_fea2d_pos=False)

TINY_SWIN = dict(embed_dim=4, depths=[2, 2, 2, 2], num_heads=[1, 1, 2, 2], window_size=3, ape=False,
                 drop_path_rate=0.3, patch_norm=True)
# The decoder is 64 wide so that GroupNorm(32) has 2 channels per group (with 1, the biases before it cancel);
# the query transformer is 32 wide, which exercises its input projections.
TINY_DECODER = dict(inchannels={'res3': 8, 'res4': 16, 'res5': 32}, trans_input_tags=['res3', 'res4', 'res5'],
                    trans_dim=64, trans_dropout=0.1, trans_nheads=4, trans_feedforward_dim=32, trans_num_layers=2)
TINY_QT = dict(in_channels=64, hidden_dim=32, num_queries=[2, 5], nheads=4, num_layers=4, feedforward_dim=48,
               pre_norm=False, num_feature_levels=3, enforce_input_project=False, with_fea2d_pos=True)


# Parameters whose gradients the fixture holds (decoder and query transformer: what SeeCoder training updates).
GRAD_CHECKED = [
    'imdecoder.transformer.layers.1.self_attn.out_proj.weight', 'imdecoder.transformer.layers.0.linear1.weight',
    'imdecoder.lateral_layers.res4.weight', 'imdecoder.inproj_layers.res3.1.weight', 'imdecoder.level_embed',
    'qtransformer.input_proj.0.weight', 'qtransformer.transformer_crossatt_layers.1.multihead_attn.in_proj_weight',
    'qtransformer.transformer_selfatt_layers.3.norm.bias', 'qtransformer.pe_layer.mlp.0.weight',
    'qtransformer.init_query.weight', 'qtransformer.query_pos_embedding.weight', 'qtransformer.level_embed.weight',
]


def build(sw, dec, qt):
    """The official SemanticContextEncoder inside pfd's `ctx` ModuleDict under 'image' (the checkpoint layout)."""
    enc = seecoder.SemanticContextEncoder(
        imencoder_cfg={'type': 'swin', 'args': sw},
        imdecoder_cfg={'type': 'seecoder_decoder', 'args': dec},
        qtransformer_cfg={'type': 'seecoder_query_transformer', 'args': qt})
    root = torch.nn.Module()
    root.ctx = torch.nn.ModuleDict({'image': enc})
    return root.eval(), enc


def count():
    for name, qt in [('seecoder', QT), ('seecoder_pa', dict(QT, with_fea2d_pos=True))]:
        root, _ = build(SWIN_LARGE, DECODER, qt)
        params = list(root.named_parameters())
        sd = root.state_dict()
        buffers = [k for k in sd if k not in dict(params)]
        print(f'{name}: {len(params)} parameters tensors, {sum(p.numel() for _, p in params)} parameters; '
              f'state_dict {len(sd)} keys ({len(buffers)} buffers: {sorted(set(b.split(".")[-1] for b in buffers))})')
        lines = sorted(f'{n} {list(p.shape)}' for n, p in params)
        digest = hashlib.sha256('\n'.join(lines).encode()).hexdigest()
        print(f'    sha256 of the sorted lines "name [shape]" joined by newlines: {digest}')
        for k in list(sd)[:3] + [k for k in sd if 'pe_layer' in k][:2] + list(sd)[-2:]:
            print('   ', k, list(sd[k].shape), sd[k].dtype)
        del root, sd, params


def save_st(path, tensors):
    """Minimal safetensors writer (sorted names, F32/I64)."""
    dt = {np.dtype('float32'): 'F32', np.dtype('float16'): 'F16', np.dtype('int64'): 'I64'}
    header, blobs, off = {}, [], 0
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k])
        b = a.tobytes()
        header[k] = {'dtype': dt[a.dtype], 'shape': list(a.shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))


def fixtures(out):
    torch.manual_seed(2024)
    np.random.seed(2024)
    root, enc = build(TINY_SWIN, TINY_DECODER, TINY_QT)
    with torch.no_grad():
        for name, p in root.named_parameters():
            # The PA MLP starts at zero output; a larger push makes the position embedding count clearly.
            p.add_(torch.randn_like(p) * (0.3 if '.pe_layer.' in name else 0.05))
            p.copy_(p.half().float())  # stored as F16 (half the bytes), exactly the values computed with
    # B=2, odd sizes: the patch embedding, every stage's window padding and the patch merging all pad.
    image = torch.rand(2, 3, 50, 42)
    image2 = torch.rand(1, 3, 29, 61)  # another size, for one graph serving both
    pe = enc.qtransformer.pe_layer
    res = {}
    with torch.no_grad():
        res['image2_embeddings_pa'] = enc(image2)
        for tag, layer in [('', None), ('_pa', pe)]:
            enc.qtransformer.pe_layer = layer  # the plain variant: what app.py does for SeeCoder
            res['embeddings' + tag] = torch.cat([enc(image[i:i + 1]) for i in range(image.shape[0])])
            res['embeddings' + tag + '_batched'] = enc(image)
    enc.qtransformer.pe_layer = pe
    for k in ['', '_pa']:
        d = (res['embeddings' + k] - res['embeddings' + k + '_batched']).norm() / res['embeddings' + k].norm()
        print(f'embeddings{k}: per-image vs batched differ by {d:.3e} (the decoder attends across the batch axis)')
    d = (res['embeddings'] - res['embeddings_pa']).norm() / res['embeddings'].norm()
    print(f'plain vs PA differ by {d:.3e}')
    # Gradients (PyTorch autograd) of sum(out * grad_output) for image2 through the PA model, with respect to a
    # few tensors of the parts one would train (the Swin stays frozen).
    y2 = enc(image2)
    go = torch.randn_like(y2)
    (y2 * go).sum().backward()
    res['image2_grad_output'] = go
    for n, p in root.named_parameters():
        if n.split('ctx.image.')[1] in GRAD_CHECKED:
            res['image2_grad.' + n] = p.grad
    os.makedirs(out, exist_ok=True)
    cfg = {'architectures': ['SeeCoder'], 'imencoder': TINY_SWIN, 'imdecoder': TINY_DECODER,
           'qtransformer': dict(TINY_QT, with_fea2d_pos=False)}
    with open(os.path.join(out, 'config.json'), 'w') as f:
        json.dump(cfg, f, indent=2)
        f.write('\n')
    sd = root.state_dict()
    save_st(os.path.join(out, 'weights.safetensors'),
            {k: v.numpy().astype(np.float16) if v.is_floating_point() else v.numpy() for k, v in sd.items()})
    save_st(os.path.join(out, 'io.safetensors'), {'image': image.numpy(), 'image2': image2.numpy(), **{k: v.numpy() for k, v in res.items()}})
    n = sum(p.numel() for p in root.parameters())
    print(f'{out}: {len(sd)} tensors, {n} parameters; output {list(res["embeddings"].shape)}')


if __name__ == '__main__':
    if sys.argv[1:2] == ['count']:
        count()
    elif sys.argv[1:2] == ['fixtures'] and len(sys.argv) == 3:
        fixtures(sys.argv[2])
    else:
        raise SystemExit('usage: make_seecoder_fixtures.py count | fixtures OUTDIR')
