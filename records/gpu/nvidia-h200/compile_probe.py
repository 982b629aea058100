"""Probe: eager vs static-cache + torch.compile decode for shape:llama2-7b, batch 16, on one GPU."""
import json, sys, time, torch
from mgpu_lab.models import load_model
from mgpu_lab.prompts import default_prompts
from mgpu_lab.generate import padded_batch
from mgpu_lab.roofline import bandwidth_for, tokens_per_s_bound

model, tok = load_model("shape:llama2-7b", "cuda")
name = torch.cuda.get_device_name(0)
nbytes = model.num_parameters() * model.dtype.itemsize
out = {"device": name, "dtype": str(model.dtype)}
for batch in (16, 64):
    prompts = (default_prompts() * 7)[:batch]
    enc = padded_batch(tok, prompts, "cuda")
    for label, kw in (("eager", {}), ("static+compile", {"cache_implementation": "static"})):
        def go(n):
            torch.cuda.synchronize(); t = time.perf_counter()
            model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id, **kw)
            torch.cuda.synchronize(); return time.perf_counter() - t
        t0 = time.perf_counter(); go(8); go(8); warm = time.perf_counter() - t0
        short, long = go(16), go(80)
        step = (long - short) / 64  # per decode step, prefill cancels out
        tps = batch / step
        frac = tps / tokens_per_s_bound(bandwidth_for(name), nbytes, batch)
        out[f"{label}_b{batch}"] = {"warmup_s": round(warm, 1), "decode_step_ms": round(step * 1e3, 2),
                                     "decode_tokens_per_s": round(tps, 1), "roofline_fraction": round(frac, 3)}
        print(label, batch, out[f"{label}_b{batch}"], flush=True)
print(json.dumps(out))
