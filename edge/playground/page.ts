/**
 * The web playground's page (`GET /playground`): paste an API key, upload photos and train an adapter
 * (DreamBooth) or a text slider while its progress, loss curve and previews stream in, generate with adapters
 * and slider controls, render a slider grid (one seed at a row of scales), download images, see the balance.
 * Plain HTML; the script is `app_js.ts`, served from the same origin so the page runs under a strict
 * Content-Security-Policy (no inline script, no other origin).
 */

export const PLAYGROUND_CSP =
  "default-src 'self'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' blob: data:; " +
  "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

export const PLAYGROUND_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>personalize playground</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.45 system-ui,sans-serif;max-width:1080px;margin:1.5rem auto;padding:0 1rem;color:#222}
section{border:1px solid #ddd;border-radius:8px;margin:1rem 0;padding:.6rem 1rem}
h1{margin:.2rem 0} h2{font-size:1.1rem;margin:.3rem 0 .6rem} label{display:inline-block;margin:.2rem .8rem .2rem 0}
input[type=text],input[type=password],input[type=number],select{font:inherit;padding:.15rem .3rem}
input[type=number]{width:5rem} .wide{width:28rem;max-width:100%} button{font:inherit;padding:.2rem .8rem}
#status{min-height:1.4rem;color:#a00} .muted{color:#777} canvas{border:1px solid #eee;background:#fafafa}
.imgs img{image-rendering:pixelated;width:192px;height:192px;margin:.2rem;border:1px solid #ddd}
.grid figure{display:inline-block;margin:.2rem;text-align:center} .grid img{image-rendering:pixelated;width:128px;height:128px}
.slider{display:block} .slider output{display:inline-block;width:3rem;text-align:right}
progress{width:20rem} pre{background:#f6f6f6;max-height:8rem;overflow:auto;font-size:12px;padding:.3rem}
</style></head><body>
<h1>personalize playground</h1>
<p class="muted">Everything here goes through the public API with your key (<a href="/docs">API docs</a>).</p>
<div id="status" role="alert"></div>

<section><h2>1. API key</h2>
<label>Key <input id="key" type="password" class="wide" autocomplete="off" placeholder="pfd_..."></label>
<button id="connect">Connect</button>
<div>Tenant <b id="tenant">-</b>, balance <b id="balance">-</b> credits
<label>Base model <select id="model"></select></label></div>
</section>

<section><h2>2. Train</h2>
<label>Method <select id="method">
<option value="dreambooth">DreamBooth (photos of a subject)</option>
<option value="concept_slider">Concept Slider (text)</option></select></label>
<label>Name <input id="destination" type="text" value="my-subject"></label>
<label>Steps <input id="steps" type="number" min="1" value="200"></label>
<div id="dreambooth-fields">
<label>Photos <input id="images" type="file" accept="image/png,image/jpeg,image/webp" multiple></label>
<label>Token <input id="token" type="text" value="sks"></label>
<label>Class word <input id="class_word" type="text" value="dog"></label>
<label><input id="prior" type="checkbox" checked> prior preservation (class images first)</label>
</div>
<div id="slider-fields" hidden>
<label>Positive <input id="positive" type="text" class="wide" placeholder="a large {} background"></label>
<label>Negative <input id="negative" type="text" class="wide" placeholder="a small {} background"></label>
<label>Target <input id="target" type="text" class="wide" placeholder="a {} background"></label>
</div>
<button id="train">Upload and train</button>
<div><progress id="train-progress" max="1" value="0"></progress> <span id="train-status">idle</span>
<span id="train-eta" class="muted"></span></div>
<canvas id="loss" width="480" height="120" data-points="0" aria-label="loss curve"></canvas>
<img id="train-preview" alt="" hidden>
<pre id="train-log"></pre>
</section>

<section><h2>3. Generate</h2>
<label>Prompt <input id="prompt" type="text" class="wide" value="a photo of sks dog"></label>
<label>Seed <input id="seed" type="number" value="0"></label>
<label>Steps <input id="gen-steps" type="number" min="1" value="20"></label>
<label>Guidance <input id="guidance" type="number" step="0.5" value="3"></label>
<label>Images <input id="num" type="number" min="1" max="4" value="1"></label>
<div id="adapters"><span class="muted">no adapters yet</span></div>
<div id="sliders"></div>
<button id="generate">Generate</button> <span id="gen-status"></span>
<div class="imgs" id="outputs"></div>
<h2>Slider grid</h2>
<label>Slider <select id="grid-slider"></select></label>
<label>Scales <input id="grid-scales" type="text" value="-2,-1,0,1,2"></label>
<button id="grid">Render grid</button> <span id="grid-status"></span>
<div class="grid" id="grid-row"></div>
</section>
<script src="/playground/app.js"></script>
</body></html>`;
